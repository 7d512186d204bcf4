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
from itertools import count

from cropflow.models.cnn3d import patch_shape, units
from cropflow.models.common import training_defaults

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


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) 3D-2D CNN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    if not inputs:
        raise ValueError("cnn3d2d: at least one input is needed")
    if n_classes < 2:
        raise ValueError(f"cnn3d2d: n_classes must be at least 2, got {n_classes}")
    p = {**DEFAULTS, **params}
    filters3d, kernel, filters2d = units(p["filters3d"]), int(p["kernel_size"]), int(p["filters2d"])
    dense, rate = units(p["dense"]), float(p["dropout"])
    seeds = count(int(seed) * 1000)

    def glorot():
        return keras.initializers.GlorotUniform(seed=next(seeds))

    model_inputs, branches = {}, []
    for name in sorted(inputs):
        rows, cols, steps, _ = shape = patch_shape("cnn3d2d", name, inputs[name])
        inp = keras.Input(shape=shape, name=name)
        h = inp
        for i, f in enumerate(filters3d):
            h = keras.layers.Conv3D(f, kernel, padding="same", kernel_initializer=glorot(),
                                    name=f"{name}_conv3d{i}")(h)
            h = keras.layers.BatchNormalization(name=f"{name}_bn3d{i}")(h)
            h = keras.layers.Activation("relu", name=f"{name}_relu3d{i}")(h)
        h = keras.layers.Reshape((rows, cols, steps * filters3d[-1]), name=f"{name}_to2d")(h)
        h = keras.layers.Conv2D(filters2d, kernel, padding="same", kernel_initializer=glorot(),
                                name=f"{name}_conv2d")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn2d")(h)
        h = keras.layers.Activation("relu", name=f"{name}_relu2d")(h)
        branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    for i, u in enumerate(dense):
        h = keras.layers.Dense(u, activation="relu", kernel_initializer=glorot(), name=f"dense{i}")(h)
        h = keras.layers.Dropout(rate, seed=next(seeds), name=f"dense_dropout{i}")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_initializer=glorot(),
                             name="proba")(h)
    return keras.Model(inputs=model_inputs, outputs=out, name="cnn3d2d")
