"""3D-2D CNN (Roy et al. 2019, "HybridSN: Exploring 3-D-2-D CNN Feature Hierarchy for Hyperspectral Image
Classification"; SCIENCE.md, Models, Patch: "3D-2D CNN (Roy 2019, HybridSN): 3D convs then 2D conv").

One branch per input patch (h, w, T, C): ``filters3d`` (8, 16, 32) x [Conv3D(k x k x k, padding="same") ->
BatchNorm -> ReLU] over (h, w, T) with the bands C as channels; the time and feature axes are then reshaped into
one channel axis (h, w, T * 32) and a Conv2D(``filters2d`` = 64, 3 x 3, padding="same") -> BatchNorm -> ReLU
mixes them spatially; the map is flattened. The branches are concatenated, followed by HybridSN's head
``dense`` (256, 128) x [Dense -> ReLU -> Dropout(0.4)] and a softmax Dense(n_classes) kept in float32: the class
probabilities of the patch's centre pixel.

HybridSN uses "valid" 3D convolutions with spectral depths 7, 5, 3; here the third axis is time (often only a few
steps) and patches may be small, so every convolution is k x k x k with "same" padding and the patch keeps its
size. Every weight initialiser and dropout layer gets its own seed derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.cnn3d import conv3d_block
from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults, units

FAMILY = "keras"
KIND = "patch"
DEFAULTS: dict[str, object] = {
    "filters3d": [8, 16, 32],
    "kernel_size": 3,
    "filters2d": 64,
    "dense": [256, 128],
    "dropout": 0.4,
    **training_defaults(batch_size=128),
}


def conv2d_unit(keras, h, filters: int, kernel: int, seeds: Seeds, name: str):
    """Conv2D(filters, k x k, padding="same") -> BatchNorm -> ReLU over a map (N, h, w, F), named
    f"{name}_conv2d", f"{name}_bn2d" and f"{name}_relu2d"."""
    h = keras.layers.Conv2D(filters, kernel, padding="same", kernel_initializer=seeds.glorot(),
                            name=f"{name}_conv2d")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn2d")(h)
    return keras.layers.Activation("relu", name=f"{name}_relu2d")(h)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) 3D-2D CNN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("cnn3d2d", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters3d, kernel, filters2d = units(p["filters3d"]), int(p["kernel_size"]), int(p["filters2d"])
    dense, rate = units(p["dense"]), float(p["dropout"])
    seeds = Seeds(seed)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        rows, cols, steps, _ = shape
        inp = keras.Input(shape=shape, name=name)
        h = conv3d_block(keras, inp, filters3d, kernel, seeds, name, tag="3d")
        h = keras.layers.Reshape((rows, cols, steps * filters3d[-1]), name=f"{name}_to2d")(h)
        h = conv2d_unit(keras, h, filters2d, kernel, seeds, name)
        branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, dense, rate, n_classes, seeds)
    return keras.Model(inputs=model_inputs, outputs=out, name="cnn3d2d")
