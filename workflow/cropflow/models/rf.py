"""Random forest baseline on flattened pixel time series (SCIENCE.md, Models: "RF baseline: 200 trees,
min_samples_split 4 (chapter 3) ... Input flattened T*C").

Every input (T, C) is flattened to T*C features (time-major: t0c0, t0c1, ..., t1c0, ...) and the inputs are
concatenated in sorted name order, so one random forest sees every time step of every source.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from cropflow.models.common import check_inputs

FAMILY = "sklearn"
DEFAULTS: dict[str, object] = {
    "n_estimators": 200,
    "min_samples_split": 4,
    "max_features": "sqrt",
    "n_jobs": -1,
    # imbalance handling during fitting (cropflow.training): "none", "class_weights" or "oversample"
    "imbalance": "none",
}


def flatten_inputs(x: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, sum of T*C) feature matrix: each (N, T, C) input reshaped to (N, T*C), inputs in sorted name order."""
    if not x:
        raise ValueError("flatten_inputs: no inputs")
    return np.concatenate([np.asarray(x[k]).reshape(np.shape(x[k])[0], -1) for k in sorted(x)], axis=1)


def build(
    inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int
) -> RandomForestClassifier:
    """An unfitted RandomForestClassifier for the given inputs (the features are the flattened inputs).

    ``params`` keys: n_estimators, min_samples_split, max_features, n_jobs (defaults in ``DEFAULTS``);
    ``random_state`` is ``seed``.
    """
    check_inputs("rf", inputs, n_classes, "pixel")
    p = {**DEFAULTS, **params}
    max_features = p["max_features"]
    if isinstance(max_features, str) and max_features.lower() in ("none", "all"):
        max_features = None
    return RandomForestClassifier(
        n_estimators=int(p["n_estimators"]),
        min_samples_split=int(p["min_samples_split"]),
        max_features=max_features,
        n_jobs=None if p["n_jobs"] is None else int(p["n_jobs"]),
        random_state=int(seed),
    )
