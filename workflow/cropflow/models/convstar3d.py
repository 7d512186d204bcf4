"""3D-ConvSTAR (chapter 4's proposal; SCIENCE.md, Models, Patch: "3D-ConvSTAR: 3 layers of 3x3x3 Conv3D (32, 32,
64 filters, same padding, stride 1) -> 3-layer bidirectional ConvSTAR (3x3, 64 kernels) -> one 2D conv (64, 3x3)
-> dense 256 -> dropout 0.4 -> dense 128 -> dropout 0.4 -> softmax; no pooling. Adam 1e-3, weight decay 1e-4,
batch 128").

One branch per input patch (h, w, T, C): ``filters3d`` (32, 32, 64) x [Conv3D(3 x 3 x 3, padding="same",
stride 1) -> BatchNorm -> ReLU] over (h, w, T) with the bands C as channels, which keeps the patch size and the
time steps; the time axis is moved first and ``layers`` (3) stacked bidirectional ConvSTAR layers
(:class:`cropflow.models.convstar.ConvSTAR2D`, Turkoglu et al. 2021, Eq. 4-2 to 4-4; ``filters`` = 64 kernels of
3 x 3 per direction, forward and backward states concatenated) end in the final state map (h, w, 2 * 64); one
Conv2D(``filters2d`` = 64, 3 x 3, padding="same") -> BatchNorm -> ReLU. There is no pooling: with ``readout`` =
"flatten" (default) the whole map is flattened, so the head sees every pixel's features at its position in the
patch (the centre pixel and its neighbours, which pooling would mix); ``readout`` = "centre" keeps only the centre
pixel's 64 features (far fewer dense weights). The branches are concatenated, followed by ``dense`` (256, 128) x
[Dense -> ReLU -> Dropout(0.4)] and a softmax Dense(n_classes) kept in float32: the class probabilities of the
patch's centre pixel. Every weight initialiser and dropout layer gets its own seed derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import count

import keras

from cropflow.models.cnn3d import patch_shape, units
from cropflow.models.common import training_defaults
from cropflow.models.convstar import centre_pixel, star_stack, time_first

FAMILY = "keras"
KIND = "patch"
READOUTS = ("flatten", "centre")
DEFAULTS: dict[str, object] = {
    "filters3d": [32, 32, 64],
    "kernel_size": 3,
    "filters": 64,
    "layers": 3,
    "filters2d": 64,
    "readout": "flatten",
    "dense": [256, 128],
    "dropout": 0.4,
    **training_defaults(batch_size=128, weight_decay=1e-4),
}


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object],
          seed: int) -> keras.Model:
    """The (uncompiled) 3D-ConvSTAR keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    if not inputs:
        raise ValueError("convstar3d: at least one input is needed")
    if n_classes < 2:
        raise ValueError(f"convstar3d: n_classes must be at least 2, got {n_classes}")
    p = {**DEFAULTS, **params}
    filters3d, kernel = units(p["filters3d"]), int(p["kernel_size"])
    filters, n_layers, filters2d = int(p["filters"]), int(p["layers"]), int(p["filters2d"])
    readout, dense, rate = str(p["readout"]), units(p["dense"]), float(p["dropout"])
    if readout not in READOUTS:
        raise ValueError(f"convstar3d: readout must be one of {READOUTS}, got {readout!r}")
    seeds = count(int(seed) * 1000)

    def glorot():
        return keras.initializers.GlorotUniform(seed=next(seeds))

    model_inputs, branches = {}, []
    for name in sorted(inputs):
        inp = keras.Input(shape=patch_shape("convstar3d", name, inputs[name]), name=name)
        h = inp
        for i, f in enumerate(filters3d):
            h = keras.layers.Conv3D(f, kernel, strides=1, padding="same", kernel_initializer=glorot(),
                                    name=f"{name}_conv3d{i}")(h)
            h = keras.layers.BatchNormalization(name=f"{name}_bn3d{i}")(h)
            h = keras.layers.Activation("relu", name=f"{name}_relu3d{i}")(h)
        h = star_stack(time_first(h, name), n_layers, filters, kernel, True, name, seeds)
        h = keras.layers.Conv2D(filters2d, kernel, padding="same", kernel_initializer=glorot(),
                                name=f"{name}_conv2d")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn2d")(h)
        h = keras.layers.Activation("relu", name=f"{name}_relu2d")(h)
        if readout == "centre":
            branches.append(centre_pixel(h, name))
        else:
            branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    for i, u in enumerate(dense):
        h = keras.layers.Dense(u, activation="relu", kernel_initializer=glorot(), name=f"dense{i}")(h)
        h = keras.layers.Dropout(rate, seed=next(seeds), name=f"dense_dropout{i}")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_initializer=glorot(),
                             name="proba")(h)
    return keras.Model(inputs=model_inputs, outputs=out, name="convstar3d")
