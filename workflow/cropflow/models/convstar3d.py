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

import keras

from cropflow.models.cnn3d import conv3d_block
from cropflow.models.cnn3d2d import conv2d_unit
from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults, units
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
    shapes = check_inputs("convstar3d", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters3d, kernel = units(p["filters3d"]), int(p["kernel_size"])
    filters, n_layers, filters2d = int(p["filters"]), int(p["layers"]), int(p["filters2d"])
    readout, dense, rate = str(p["readout"]), units(p["dense"]), float(p["dropout"])
    if readout not in READOUTS:
        raise ValueError(f"convstar3d: readout must be one of {READOUTS}, got {readout!r}")
    seeds = Seeds(seed)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = conv3d_block(keras, inp, filters3d, kernel, seeds, name, tag="3d")  # stride 1: the patch keeps its size
        h = star_stack(time_first(h, name), n_layers, filters, kernel, True, name, seeds)
        h = conv2d_unit(keras, h, filters2d, kernel, seeds, name)
        if readout == "centre":
            branches.append(centre_pixel(h, name))
        else:
            branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, dense, rate, n_classes, seeds)
    return keras.Model(inputs=model_inputs, outputs=out, name="convstar3d")
