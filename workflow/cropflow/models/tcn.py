"""Temporal convolutional network (Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic Convolutional and
Recurrent Networks for Sequence Modeling"; SCIENCE.md, Models: "TCN (temporal convolutional network): causal
dilated Conv1D stack, dilation 2^l; receptive field 1 + (k-1)(2^L - 1)").

One branch per input (T, C): ``levels`` residual blocks l = 0 .. L-1. Block l is two causal dilated convolutions
Conv1D(filters, kernel_size, dilation_rate=2^l, padding="causal"), each followed by BatchNorm -> ReLU -> Dropout
(batch normalisation in place of the paper's weight normalisation); the block input is added to the block output,
through a 1x1 Conv1D when the channel counts differ (only the first block, unless C == filters), then ReLU.
The features of the last time step (which, the convolutions being causal, sees the whole receptive field that ends
at T) are taken per input; the inputs are concatenated, followed by Dense(dense, ReLU) -> Dropout and a softmax
Dense(n_classes) ``"proba"`` kept in float32 (stable under mixed precision).

Receptive field implemented (:func:`receptive_field`): each causal convolution with kernel k and dilation d widens
the field by (k - 1) d; block l has two of them with d = 2^l, so

    R(k, L) = 1 + sum_{l=0}^{L-1} 2 (k - 1) 2^l = 1 + 2 (k - 1) (2^L - 1).

SCIENCE.md's 1 + (k-1)(2^L - 1) counts one convolution per level; the residual blocks here have two (as in Bai et
al.), which doubles the dilated part. With the defaults (k = 3, L = 3) R = 29 time steps, covering the 22-23 Sentinel-1
acquisitions of a season. Every weight initialiser and dropout layer gets its own seed derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults

FAMILY = "keras"
KIND = "pixel"
#: XLA fuses the batch norms, ReLUs and residual additions of the small dilated convolutions: 1.7x the
#: predictions per second of the plain graph on 2 cores (TempCNN's larger convolutions gain nothing)
JIT_PREDICT = True
DEFAULTS: dict[str, object] = {
    "filters": 64,
    "kernel_size": 3,
    "levels": 3,
    "dense": 128,
    "dropout": 0.2,
    **training_defaults(),
}


def receptive_field(kernel_size: int, levels: int) -> int:
    """Time steps seen by the last output step: 1 + 2 (k - 1)(2^L - 1) (two causal convs per level, dilation 2^l)."""
    if kernel_size < 1 or levels < 0:
        raise ValueError(f"tcn: kernel_size must be >= 1 and levels >= 0, got {kernel_size}, {levels}")
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) TCN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("tcn", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters, kernel, levels = int(p["filters"]), int(p["kernel_size"]), int(p["levels"])
    dense, rate = int(p["dense"]), float(p["dropout"])
    if filters < 1 or kernel < 1 or levels < 1 or dense < 1:
        raise ValueError(f"tcn: filters, kernel_size, levels and dense must be >= 1, got {p}")
    seeds = Seeds(seed)

    def causal_unit(h, dilation: int, prefix: str):
        h = keras.layers.Conv1D(filters, kernel, padding="causal", dilation_rate=dilation,
                                kernel_initializer=seeds.glorot(), name=f"{prefix}_conv")(h)
        h = keras.layers.BatchNormalization(name=f"{prefix}_bn")(h)
        h = keras.layers.Activation("relu", name=f"{prefix}_relu")(h)
        return keras.layers.Dropout(rate, seed=next(seeds), name=f"{prefix}_dropout")(h)

    def residual_block(x, level: int, prefix: str):
        h = causal_unit(x, 2**level, f"{prefix}_a")
        h = causal_unit(h, 2**level, f"{prefix}_b")
        if x.shape[-1] != filters:
            x = keras.layers.Conv1D(filters, 1, kernel_initializer=seeds.glorot(), name=f"{prefix}_proj")(x)
        h = keras.layers.Add(name=f"{prefix}_add")([x, h])
        return keras.layers.Activation("relu", name=f"{prefix}_relu")(h)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = inp
        for level in range(levels):
            h = residual_block(h, level, f"{name}_block{level}")
        h = keras.layers.Cropping1D((shape[0] - 1, 0), name=f"{name}_last_step")(h)
        branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, [dense], rate, n_classes, seeds, names=[("dense", "dense_dropout")])
    return keras.Model(inputs=model_inputs, outputs=out, name="tcn")
