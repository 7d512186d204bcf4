"""cropflow's models on plain arrays, without the workflow.

    from cropflow.classifier import Classifier

    clf = Classifier("transformer", params={"epochs": 30}, seed=0)
    clf.fit(x_train, y_train, x_val, y_val)          # (N, T, C) or (N, h, w, T, C), or {input: array}
    proba = clf.predict_proba(x_test)                 # (N, K), columns in clf.classes_ order
    clf.save("my_model"); clf = Classifier.load("my_model")

Labels are any integers (e.g. legend ids); ``classes_`` lists them in output order. Inputs are raw values:
the min-max normalisation is fitted on the training array. Pixel models take (N, T, C) series, patch models
(N, h, w, T, C) patches (label at the centre pixel). Training is :func:`cropflow.training.fit`: early stopping on
the validation arrays, the model's imbalance strategy, seeded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from cropflow.models import TrainedModel, get_spec, load_trained
from cropflow.sampleset import SampleSet
from cropflow.training import fit

Arrays = np.ndarray | Mapping[str, np.ndarray]


def _as_inputs(x: Arrays) -> dict[str, np.ndarray]:
    return {"x": np.asarray(x, np.float32)} if isinstance(x, np.ndarray) else \
        {k: np.asarray(v, np.float32) for k, v in x.items()}


def _sample_set(x: Arrays, y: np.ndarray, kind: str, classes: list[int], what: str) -> SampleSet:
    """A SampleSet of in-memory arrays: pixel models read ``x``, patch models its patches (the centre pixel's
    series stands for the pixel inputs, on which the normalisation is fitted)."""
    inputs = _as_inputs(x)
    y = np.asarray(y)
    rank = 3 if kind == "pixel" else 5
    for name, a in inputs.items():
        if a.ndim != rank or a.shape[0] != y.shape[0]:
            raise ValueError(f"{what}: input '{name}' must be ({'N, T, C' if rank == 3 else 'N, h, w, T, C'}) with "
                             f"N = {y.shape[0]} labels, got {a.shape}")
    n = y.shape[0]
    meta = {k: {"bands": [f"c{i}" for i in range(a.shape[-1])], "times": [str(t) for t in range(a.shape[-2])]}
            for k, a in inputs.items()}
    if kind == "pixel":
        series, patches = inputs, {}
    else:
        series = {k: a[:, a.shape[1] // 2, a.shape[2] // 2] for k, a in inputs.items()}
        patches = inputs
    return SampleSet(x=series, y=y.astype(np.int64), parcel_id=np.arange(n), tile_index=np.zeros(n, np.int16),
                     inputs=meta, class_ids=classes, patches=patches)


class Classifier:
    """Build, fit and predict any registered cropflow model on in-memory arrays."""

    def __init__(self, model: str, params: Mapping[str, object] | None = None, seed: int = 0) -> None:
        self.spec = get_spec(model)
        self.params = dict(params or {})
        self.seed = int(seed)
        self.trained: TrainedModel | None = None

    @property
    def classes_(self) -> list[int]:
        return self._fitted().class_ids

    def _fitted(self) -> TrainedModel:
        if self.trained is None:
            raise ValueError(f"{self.spec.name}: call fit first")
        return self.trained

    def fit(self, x: Arrays, y: np.ndarray, x_val: Arrays, y_val: np.ndarray) -> Classifier:
        """Train on (x, y) with early stopping on (x_val, y_val)."""
        classes = sorted(int(c) for c in np.unique(np.concatenate([np.asarray(y), np.asarray(y_val)])))
        if len(classes) < 2:
            raise ValueError(f"{self.spec.name}: the labels hold {len(classes)} class; at least 2 are needed")
        kind = self.spec.kind
        self.trained = fit(self.spec.name, _sample_set(x, y, kind, classes, "x"),
                           _sample_set(x_val, y_val, kind, classes, "x_val"), self.params, self.seed,
                           class_names=[str(c) for c in classes])
        return self

    def predict_proba(self, x: Arrays) -> np.ndarray:
        """(N, K) float32 probabilities, columns in ``classes_`` order (NaN rows for samples without values)."""
        return self._fitted().predict_proba(_as_inputs(x))

    def predict(self, x: Arrays) -> np.ndarray:
        """The most probable label per sample (-1 for samples without any finite value)."""
        return self._fitted().predict(_as_inputs(x), nodata=-1)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model bundle folder (the workflow's format)."""
        self._fitted().save(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Classifier:
        trained = load_trained(path)
        clf = cls(trained.name, trained.meta.get("params"), int(trained.meta.get("seed", 0)))
        clf.trained = trained
        return clf
