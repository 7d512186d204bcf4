"""Attention 3D U-Net: the 3D U-Net of Cicek et al. 2016 ("3D U-Net: Learning Dense Volumetric Segmentation from
Sparse Annotation") with the additive attention gates of Oktay et al. 2018 ("Attention U-Net: Learning Where to
Look for the Pancreas") on its skip connections; SCIENCE.md, Models: "Attention 3D U-Net (chapter 5): 3D U-Net
(Cicek 2016) on 128 x 128 patches, attention gates on the skip connections (Eq. 5-2, 1x1x1 convs), one encoder per
source, decoder features fused by addition per level".

Per input (h, w, T, C), one encoder (the bands C are the channels of a (h, w, T) volume):

* h and w are zero-padded symmetrically up to a multiple of 2**levels (the study's 128 x 128 patches need none,
  the workflow's 11 x 11 patches become 16 x 16); the map is cropped back before the softmax;
* ``levels`` blocks of [Conv3D(k x k x k, same) -> BatchNorm -> ReLU] x 2 with ``filters * 2**l`` filters, each
  followed by MaxPooling3D((2, 2, 1)): h and w are halved, T is kept (it is short and differs between sources),
  then a bottleneck block with ``filters * 2**levels`` filters.

The decoder is shared and works in (h, w). Every source's feature volume (h_l, w_l, T_s, F_l) is reduced over its
own time axis before fusion (``time_reduction``): "conv" (default) is a Conv3D with kernel (1, 1, T_s) ->
BatchNorm -> ReLU, a learned weighting of the time steps per output feature that keeps *when* a feature occurs
(crop types differ mostly by the timing of their phenology, which a plain mean over time would discard); "mean"
is a parameter-free AveragePooling3D((1, 1, T_s)). Decoder level l (from the deepest up):

* gating signal g = decoder features of level l + 1 (the sum of the reduced bottlenecks at the deepest level);
* per source, the attention gate of Eq. 5-2 on the skip features x (before time reduction, so it weighs pixels
  *and* time steps): alpha = sigmoid(psi(ReLU(W_x x + W_g g + b))), W_x, W_g and psi 1x1x1 convolutions
  (W_g g is computed at g's resolution and repeated 2 x 2 x T_s to x's), x multiplied by alpha; the layer
  ``f"{input}_gate{l}"`` outputs alpha, (N, h_l, w_l, T_s, 1) on the padded grid, for interpretation;
* the gated skips are reduced over time and summed over the sources (fusion by addition);
* Conv2DTranspose(2 x 2, stride 2) of g (Cicek's up-convolution), concatenated with the fused skip, then
  [Conv2D(k x k) -> BatchNorm -> ReLU] x 2 with ``filters * 2**l`` filters.

A 1x1 convolution gives K class scores per pixel; cropped back to (h, w) and softmaxed they form the layer
"proba_map" (N, h, w, K); the model output "proba" (N, K) is its centre pixel (h // 2, w // 2), taken with a
Cropping2D + Reshape (plain serialisable layers; no custom layer, no Lambda). The head is float32 under a
mixed-precision policy, and so are the 3D poolings (TensorFlow has no float16 MaxPool3D / AvgPool3D kernel on
CPU; on a GPU the cast costs little). Every weight initialiser gets its own seed derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, training_defaults

FAMILY = "keras"
KIND = "patch"
TIME_REDUCTIONS = ("conv", "mean")
DEFAULTS: dict[str, object] = {
    "levels": 3,
    "filters": 16,
    "kernel_size": 3,
    "time_reduction": "conv",
    **training_defaults(batch_size=32),
}


def _check_inputs(inputs: Mapping[str, tuple[int, ...]], n_classes: int) -> tuple[dict[str, tuple[int, ...]],
                                                                                   int, int]:
    """Per-sample shapes (h, w, T, C) by name and the common (h, w); ValueError naming the model otherwise."""
    shapes = check_inputs("unet3d", inputs, n_classes, KIND)
    sizes = {shape[:2] for shape in shapes.values()}
    if len(sizes) != 1:
        raise ValueError(f"unet3d: all inputs must have the same patch size (h, w), got "
                         f"{ {name: shape[:2] for name, shape in shapes.items()} }")
    h, w = sizes.pop()
    return shapes, h, w


def _padding(size: int, multiple: int) -> tuple[int, int]:
    """(before, after) zeros that pad ``size`` up to a multiple of ``multiple``, split symmetrically."""
    total = -size % multiple
    return total // 2, total - total // 2


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) Attention 3D U-Net keras.Model with one named ``keras.Input`` per input key (sorted order).

    ``inputs`` maps name -> (h, w, T, C); every input needs the same (h, w), T and C may differ.
    """
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes, h, w = _check_inputs(inputs, n_classes)
    p = {**DEFAULTS, **params}
    levels, filters, kernel = int(p["levels"]), int(p["filters"]), int(p["kernel_size"])
    reduction = str(p["time_reduction"])
    if levels < 1 or filters < 1 or kernel < 1:
        raise ValueError(f"unet3d: levels, filters and kernel_size must be positive, got {levels}, {filters}, "
                         f"{kernel}")
    if reduction not in TIME_REDUCTIONS:
        raise ValueError(f"unet3d: time_reduction must be one of {TIME_REDUCTIONS}, got {reduction!r}")
    seeds = Seeds(seed)
    layers = keras.layers

    def conv_block(x, n_filters: int, prefix: str, conv, first_padding: str = "same"):
        for i in range(2):
            x = conv(n_filters, kernel, padding=first_padding if i == 0 else "same", use_bias=False,
                     kernel_initializer=seeds.glorot(), name=f"{prefix}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{prefix}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{prefix}_relu{i}")(x)
        return x

    def reduce_time(x, t: int, n_filters: int, prefix: str):
        """(h_l, w_l, T, F) -> (h_l, w_l, F): learned weighting of the time steps, or their mean."""
        if reduction == "conv":
            x = layers.Conv3D(n_filters, (1, 1, t), padding="valid", use_bias=False,
                              kernel_initializer=seeds.glorot(), name=f"{prefix}_time")(x)
            x = layers.BatchNormalization(name=f"{prefix}_time_bn")(x)
            x = layers.Activation("relu", name=f"{prefix}_time_relu")(x)
        else:
            x = layers.AveragePooling3D((1, 1, t), dtype="float32", name=f"{prefix}_time")(x)
        return layers.Reshape((x.shape[1], x.shape[2], n_filters), name=f"{prefix}_time_squeeze")(x)

    def attention_gate(x, g, t: int, prefix: str):
        """Eq. 5-2: x * sigmoid(psi(ReLU(W_x x + W_g g + b))); g has half x's h and w and no time axis."""
        n_int = max(int(x.shape[-1]) // 2, 1)
        theta = layers.Conv3D(n_int, 1, use_bias=False, kernel_initializer=seeds.glorot(), name=f"{prefix}_wx")(x)
        phi = layers.Conv2D(n_int, 1, kernel_initializer=seeds.glorot(), name=f"{prefix}_wg")(g)
        phi = layers.Reshape((g.shape[1], g.shape[2], 1, n_int), name=f"{prefix}_wg_volume")(phi)
        phi = layers.UpSampling3D((2, 2, t), name=f"{prefix}_wg_up")(phi)
        q = layers.Activation("relu", name=f"{prefix}_relu")(layers.Add(name=f"{prefix}_add")([theta, phi]))
        alpha = layers.Conv3D(1, 1, activation="sigmoid", kernel_initializer=seeds.glorot(), name=prefix)(q)
        return layers.Multiply(name=f"{prefix}_apply")([x, alpha])

    def fuse(tensors: list, name: str):
        return tensors[0] if len(tensors) == 1 else layers.Add(name=name)(tensors)

    pad_h, pad_w = _padding(h, 2 ** levels), _padding(w, 2 ** levels)
    # The patch padding and the first convolution's own "same" padding are one explicit ZeroPadding3D followed by
    # a "valid" Conv3D: the same arithmetic, and the pattern oneDNN's Pad + Conv3D graph fusion handles correctly
    # (TensorFlow 2.21 on CPU fuses a Pad into a following "same" Conv3D as if it were "valid", which changes
    # the output shape in graph mode).
    same = ((kernel - 1) // 2, kernel // 2)
    first_pad = ((pad_h[0] + same[0], pad_h[1] + same[1]), (pad_w[0] + same[0], pad_w[1] + same[1]), same)
    model_inputs, skips, bottlenecks = {}, {}, []
    for name, (_, _, t, _) in shapes.items():
        inp = keras.Input(shape=shapes[name], name=name)
        model_inputs[name] = inp
        x = layers.ZeroPadding3D(first_pad, name=f"{name}_pad")(inp)
        skips[name] = []
        for level in range(levels):
            x = conv_block(x, filters * 2 ** level, f"{name}_enc{level}", layers.Conv3D,
                           "valid" if level == 0 else "same")
            skips[name].append(x)
            x = layers.MaxPooling3D((2, 2, 1), dtype="float32", name=f"{name}_pool{level}")(x)
        x = conv_block(x, filters * 2 ** levels, f"{name}_bottleneck", layers.Conv3D)
        bottlenecks.append(reduce_time(x, t, filters * 2 ** levels, f"{name}_bottleneck"))

    d = fuse(bottlenecks, "bottleneck_fusion")
    for level in reversed(range(levels)):
        n_filters = filters * 2 ** level
        gated = []
        for name, (_, _, t, _) in shapes.items():
            x = attention_gate(skips[name][level], d, t, f"{name}_gate{level}")
            gated.append(reduce_time(x, t, n_filters, f"{name}_skip{level}"))
        skip = fuse(gated, f"skip{level}_fusion")
        up = layers.Conv2DTranspose(n_filters, 2, strides=2, kernel_initializer=seeds.glorot(),
                                    name=f"dec{level}_up")(d)
        d = layers.Concatenate(name=f"dec{level}_concat")([up, skip])
        d = conv_block(d, n_filters, f"dec{level}", layers.Conv2D)

    scores = layers.Conv2D(n_classes, 1, kernel_initializer=seeds.glorot(), dtype="float32", name="head")(d)
    scores = layers.Cropping2D((pad_h, pad_w), dtype="float32", name="crop")(scores)
    proba_map = layers.Activation("softmax", dtype="float32", name="proba_map")(scores)
    centre = layers.Cropping2D(((h // 2, h - h // 2 - 1), (w // 2, w - w // 2 - 1)), dtype="float32",
                               name="centre")(proba_map)
    out = layers.Reshape((n_classes,), dtype="float32", name="proba")(centre)
    return keras.Model(inputs=model_inputs, outputs=out, name="unet3d")
