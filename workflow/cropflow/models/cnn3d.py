"""3D-CNN (Ji et al. 2018, "3D Convolutional Neural Networks for Crop Classification with Multi-Temporal Remote
Sensing Images"; SCIENCE.md, Models, Patch: "3D-CNN (Ji 2018): three 3x3x3 conv layers").

One branch per input patch (h, w, T, C): the patch is already in Conv3D's channels-last layout, the three
convolved axes being (h, w, T) and the bands C the channels. ``filters`` (32, 32, 64) x [Conv3D(k x k x k,
padding="same") -> BatchNorm -> ReLU], then global average pooling over (h, w, T). The branches are concatenated,
followed by ``dense`` x [Dense -> ReLU -> Dropout] and a softmax Dense(n_classes) kept in float32, which gives the
class probabilities of the patch's centre pixel.
Every weight initialiser and dropout layer gets its own seed derived from ``seed``, so a build is reproducible
without touching global random state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults, units

FAMILY = "keras"
KIND = "patch"
DEFAULTS: dict[str, object] = {
    "filters": [32, 32, 64],
    "kernel_size": 3,
    "dense": [256],
    "dropout": 0.4,
    **training_defaults(batch_size=128),
}


def conv3d_block(keras, h, filters: Sequence[int], kernel: int, seeds: Seeds, name: str, tag: str = ""):
    """``filters`` x [Conv3D(k x k x k, padding="same") -> BatchNorm -> ReLU] over (h, w, T) of ``h``; layer i is
    named f"{name}_conv{tag}{i}", f"{name}_bn{tag}{i}" and f"{name}_relu{tag}{i}"."""
    for i, f in enumerate(filters):
        h = keras.layers.Conv3D(f, kernel, padding="same", kernel_initializer=seeds.glorot(),
                                name=f"{name}_conv{tag}{i}")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn{tag}{i}")(h)
        h = keras.layers.Activation("relu", name=f"{name}_relu{tag}{i}")(h)
    return h


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) 3D-CNN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("cnn3d", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters, kernel = units(p["filters"]), int(p["kernel_size"])
    dense, rate = units(p["dense"]), float(p["dropout"])
    seeds = Seeds(seed)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = conv3d_block(keras, inp, filters, kernel, seeds, name)
        branches.append(keras.layers.GlobalAveragePooling3D(name=f"{name}_pool")(h))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, dense, rate, n_classes, seeds)
    return keras.Model(inputs=model_inputs, outputs=out, name="cnn3d")
