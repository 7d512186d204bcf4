"""What the model modules share: the training keys of the keras models (cropflow.training reads them), the checks
of every builder's arguments, the parsing of layer-size parameters, and for the keras models the per-build seed
source and the classifier head.

Keras is imported only inside the functions that make layers or initialisers, so importing this module does not
load TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import count
from typing import Literal

SHAPE_NAMES = {"pixel": "a per-sample shape (T, C)", "patch": "a per-sample patch shape (h, w, T, C)"}


def training_defaults(batch_size: int = 256, weight_decay: float = 0.0) -> dict[str, object]:
    """Training keys of a keras model (SCIENCE.md: Adam 1e-3, early stopping): epochs, batch_size, learning_rate,
    patience, imbalance (none | class_weights | oversample | mixup), mixed_precision, weight_decay (AdamW)."""
    return {"epochs": 50, "batch_size": batch_size, "learning_rate": 0.001, "patience": 8, "imbalance": "none",
            "mixed_precision": False, "weight_decay": weight_decay}


def check_inputs(model: str, inputs: Mapping[str, Sequence[int]], n_classes: int,
                 kind: Literal["pixel", "patch"]) -> dict[str, tuple[int, ...]]:
    """The per-sample shapes of ``inputs`` as int tuples, in sorted input order.

    ValueError naming ``model`` when there is no input, when ``n_classes`` < 2, or when a shape is not (T, C)
    (``kind`` "pixel") or (h, w, T, C) (``kind`` "patch") with every size >= 1.
    """
    if not inputs:
        raise ValueError(f"{model}: at least one input is needed")
    if n_classes < 2:
        raise ValueError(f"{model}: n_classes must be at least 2, got {n_classes}")
    rank = 2 if kind == "pixel" else 4
    shapes = {}
    for name in sorted(inputs):
        shape = tuple(int(s) for s in inputs[name])
        if len(shape) != rank or min(shape) < 1:
            raise ValueError(f"{model}: input '{name}' must have {SHAPE_NAMES[kind]}, got {shape}")
        shapes[name] = shape
    return shapes


def positive_ints(model: str, key: str, value: object) -> list[int]:
    """Positive ints from a list/tuple or a comma-separated string ("3,3,5"); ValueError naming ``model`` and
    ``key`` when empty or < 1."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"{model}: {key} must be a non-empty list of positive ints, got {value!r}")
    out = [int(v) for v in items]
    if min(out) < 1:
        raise ValueError(f"{model}: {key} must be positive, got {out}")
    return out


def units(value: object) -> list[int]:
    """A layer-width parameter as a list of ints (a single int is one layer)."""
    if isinstance(value, (int, float)):
        return [int(value)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [int(v) for v in value]
    raise ValueError(f"expected an int or a list of ints, got {value!r}")


class Seeds:
    """The seeds of one build: seed * 1000, seed * 1000 + 1, ... Every weight initialiser and dropout layer draws
    the next one, so a build is reproducible without touching global random state."""

    def __init__(self, seed: int) -> None:
        self._count = count(int(seed) * 1000)

    def __iter__(self) -> Seeds:
        return self

    def __next__(self) -> int:
        return next(self._count)

    def glorot(self):
        """A GlorotUniform initialiser with the next seed."""
        import keras

        return keras.initializers.GlorotUniform(seed=next(self))

    def orthogonal(self):
        """An Orthogonal initialiser (recurrent kernels) with the next seed."""
        import keras

        return keras.initializers.Orthogonal(seed=next(self))


def classifier_head(keras, branches: list, dense: Sequence[int], rate: float, n_classes: int, seeds: Seeds,
                    names: Sequence[tuple[str, str]] | None = None):
    """The branches concatenated (layer "concat" when there are several), ``dense`` x [Dense(ReLU) -> Dropout(rate)]
    and the softmax Dense(n_classes) "proba", kept in float32 so the output is stable under mixed precision.

    ``names``: the (dense, dropout) layer names of every hidden layer; by default "dense{i}" and "dense_dropout{i}".
    """
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    for i, width in enumerate(dense):
        dense_name, dropout_name = names[i] if names is not None else (f"dense{i}", f"dense_dropout{i}")
        h = keras.layers.Dense(width, activation="relu", kernel_initializer=seeds.glorot(), name=dense_name)(h)
        h = keras.layers.Dropout(rate, seed=next(seeds), name=dropout_name)(h)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_initializer=seeds.glorot(),
                              name="proba")(h)
