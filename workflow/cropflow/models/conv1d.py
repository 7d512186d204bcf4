"""Conv1D with inception modules (Zhong et al. 2019, "Deep learning based multi-temporal crop classification";
SCIENCE.md, Models: "Conv1D (Zhong 2019): inception modules of parallel Conv1D + max-pool branches at several kernel
sizes, softmax").

One branch per input (T, C): a stem Conv1D(filters, stem_kernel, padding="same") -> BatchNorm -> ReLU, then
``modules`` inception modules. An inception module runs in parallel one Conv1D(filters, k, padding="same") ->
BatchNorm -> ReLU per k in ``kernel_sizes`` and a MaxPool1D(3, strides=1, padding="same") -> Conv1D(filters, 1)
-> BatchNorm -> ReLU branch, and concatenates the branch outputs on the channel axis ((len(kernel_sizes) + 1) *
filters channels). Batch normalisation and ReLU act channel by channel, so applying them to each branch is the
same function as applying them to the concatenation (Zhong's formulation); per branch, they fold into each
convolution at inference (cropflow.models.folding). The output is averaged over time (global average pooling);
the last module averages each branch before concatenating them, which is the same as averaging the
concatenation and avoids concatenating the full series. The per-input vectors are concatenated, followed by
Dense(dense, ReLU) named ``"trunk_features"`` (the 512-unit representation Conv1D-RF, Yang 2020, feeds to a random
forest), Dropout and a softmax Dense(n_classes) ``"proba"`` kept in float32 (stable under mixed precision).
Every weight initialiser and dropout layer gets its own seed derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, classifier_head, positive_ints, training_defaults

FAMILY = "keras"
KIND = "pixel"
FEATURES_LAYER = "trunk_features"


def architecture_defaults() -> dict[str, object]:
    """The network's keys, which the Conv1D-RF trunk (cropflow.models.conv1d_rf) shares."""
    return {
        "filters": 32,
        "stem_kernel": 3,
        "kernel_sizes": [1, 3, 5],
        "modules": 2,
        "dense": 512,
        "dropout": 0.3,
    }


DEFAULTS: dict[str, object] = {**architecture_defaults(), **training_defaults()}


def kernel_list(value: object) -> list[int]:
    """Kernel sizes from a list/tuple of ints or a comma-separated string ("1,3,5"); ValueError when empty or < 1."""
    return positive_ints("conv1d", "kernel_sizes", value)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) Conv1D-inception keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("conv1d", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters, stem_kernel, n_modules = int(p["filters"]), int(p["stem_kernel"]), int(p["modules"])
    kernels, dense, rate = kernel_list(p["kernel_sizes"]), int(p["dense"]), float(p["dropout"])
    if filters < 1 or stem_kernel < 1 or n_modules < 0 or dense < 1:
        raise ValueError(f"conv1d: filters, stem_kernel, dense must be >= 1 and modules >= 0, got {p}")
    seeds = Seeds(seed)

    def conv_bn_relu(h, width: int, kernel: int, name: str):
        h = keras.layers.Conv1D(width, kernel, padding="same", kernel_initializer=seeds.glorot(), name=name)(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
        return keras.layers.Activation("relu", name=f"{name}_relu")(h)

    def inception(h, prefix: str, last: bool):
        pooled = keras.layers.MaxPooling1D(3, strides=1, padding="same", name=f"{prefix}_pool")(h)
        sources = {f"{prefix}_k{k}": (h, k) for k in kernels} | {f"{prefix}_pool_proj": (pooled, 1)}
        branches = [conv_bn_relu(x, filters, k, name) for name, (x, k) in sources.items()]
        if last:  # mean over time of each branch, then concatenated: the mean of the concatenation
            branches = [keras.layers.GlobalAveragePooling1D(name=f"{name}_gap")(branch)
                        for name, branch in zip(sources, branches)]
        return keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")(branches)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = conv_bn_relu(inp, filters, stem_kernel, f"{name}_stem")
        for i in range(n_modules):
            h = inception(h, f"{name}_inception{i}", last=i == n_modules - 1)
        branches.append(h if n_modules else keras.layers.GlobalAveragePooling1D(name=f"{name}_gap")(h))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, [dense], rate, n_classes, seeds, names=[(FEATURES_LAYER, "dropout")])
    return keras.Model(inputs=model_inputs, outputs=out, name="conv1d")
