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
from itertools import count

from cropflow.models.common import training_defaults

FAMILY = "keras"
KIND = "patch"
DEFAULTS: dict[str, object] = {
    "filters": [32, 32, 64],
    "kernel_size": 3,
    "dense": [256],
    "dropout": 0.4,
    **training_defaults(batch_size=128),
}


def units(value: object) -> list[int]:
    """A layer-width parameter as a list of ints (a single int is one layer)."""
    if isinstance(value, (int, float)):
        return [int(value)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [int(v) for v in value]
    raise ValueError(f"expected an int or a list of ints, got {value!r}")


def patch_shape(model: str, name: str, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``shape`` as a per-sample patch shape (h, w, T, C); ValueError naming ``model`` and ``name`` otherwise."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{model}: input '{name}' must have a per-sample patch shape (h, w, T, C), got {shape}")
    return shape  # type: ignore[return-value]


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) 3D-CNN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    if not inputs:
        raise ValueError("cnn3d: at least one input is needed")
    if n_classes < 2:
        raise ValueError(f"cnn3d: n_classes must be at least 2, got {n_classes}")
    p = {**DEFAULTS, **params}
    filters, kernel = units(p["filters"]), int(p["kernel_size"])
    dense, rate = units(p["dense"]), float(p["dropout"])
    seeds = count(int(seed) * 1000)

    def glorot():
        return keras.initializers.GlorotUniform(seed=next(seeds))

    model_inputs, branches = {}, []
    for name in sorted(inputs):
        inp = keras.Input(shape=patch_shape("cnn3d", name, inputs[name]), name=name)
        h = inp
        for i, f in enumerate(filters):
            h = keras.layers.Conv3D(f, kernel, padding="same", kernel_initializer=glorot(),
                                    name=f"{name}_conv{i}")(h)
            h = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(h)
            h = keras.layers.Activation("relu", name=f"{name}_relu{i}")(h)
        branches.append(keras.layers.GlobalAveragePooling3D(name=f"{name}_pool")(h))
        model_inputs[name] = inp
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    for i, u in enumerate(dense):
        h = keras.layers.Dense(u, activation="relu", kernel_initializer=glorot(), name=f"dense{i}")(h)
        h = keras.layers.Dropout(rate, seed=next(seeds), name=f"dense_dropout{i}")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_initializer=glorot(),
                             name="proba")(h)
    return keras.Model(inputs=model_inputs, outputs=out, name="cnn3d")
