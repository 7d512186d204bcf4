"""Conv1D-RF (Yang et al. 2020; SCIENCE.md, Models: "Conv1D-RF (Yang 2020): the Conv1D trunk, its 512-unit dense
features fed to an RF").

Two stages, wrapped as one scikit-learn classifier so the random-forest training, bundle (joblib) and prediction
paths of cropflow apply unchanged:

1. the Conv1D-inception network of :mod:`cropflow.models.conv1d` (Zhong et al. 2019) is trained end to end with
   its softmax head (Adam, sparse cross-entropy, early stopping on a seeded, stratified validation fraction of the
   training samples, best-validation weights restored);
2. its Dense(``dense``, ReLU) layer ``"trunk_features"`` (512 units by default) becomes a fixed feature extractor
   f(x) in R^512, and a random forest (``n_estimators`` trees; 500 as in chapter 5, min_samples_split 4) is fitted
   on f(x) of every training sample. The class probabilities are the forest's,
   p(k | x) = (1 / B) sum_b p_b(k | f(x)).

The estimator takes the flattened feature matrix of :func:`cropflow.models.rf.flatten_inputs` (each (T, C) input
time-major, inputs in sorted name order) and un-flattens it with :func:`unflatten` for the network. Pickling
(joblib) stores the feature extractor as ``.keras`` bytes, because keras models do not pickle reliably.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from cropflow.models import conv1d, rf
from cropflow.models.common import check_inputs

FAMILY = "sklearn"
KIND = "pixel"
DEFAULTS: dict[str, object] = {
    # Conv1D trunk (cropflow.models.conv1d)
    **conv1d.architecture_defaults(),
    # trunk training
    "epochs": 50,
    "batch_size": 256,
    "learning_rate": 0.001,
    "patience": 8,
    "validation_fraction": 0.1,
    # random forest on the trunk features
    "n_estimators": 500,
    "min_samples_split": 4,
    "max_features": "sqrt",
    "n_jobs": -1,
    # imbalance handling during fitting (cropflow.training): "none", "class_weights" or "oversample"
    "imbalance": "none",
}
IMBALANCE = ("none", "class_weights", "oversample")
PREDICT_BATCH = 4096

log = logging.getLogger(__name__)


def unflatten(x: np.ndarray, shapes: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Inverse of :func:`cropflow.models.rf.flatten_inputs`: {name: (N, T, C)} from the (N, sum of T*C) matrix.

    Columns are read input by input in sorted name order, each block time-major (t0c0, t0c1, ..., t1c0, ...).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"conv1d_rf: expected a 2-D feature matrix, got shape {x.shape}")
    if not shapes:
        raise ValueError("conv1d_rf: no input shapes to un-flatten to")
    sizes = {name: int(np.prod(shapes[name])) for name in sorted(shapes)}
    if sum(sizes.values()) != x.shape[1]:
        raise ValueError(f"conv1d_rf: {x.shape[1]} feature columns do not match the input shapes "
                         f"{dict(shapes)} ({sum(sizes.values())} columns)")
    out, start = {}, 0
    for name, size in sizes.items():
        t, c = (int(s) for s in shapes[name])
        out[name] = x[:, start:start + size].reshape(x.shape[0], t, c)
        start += size
    return out


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: round(fraction * n_k) random samples of every class k go to
    validation, always leaving at least one per class for training. Seeded, sorted indices."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_val = min(round(float(fraction) * members.size), members.size - 1)
        if n_val > 0:
            val.append(rng.choice(members, n_val, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(y.size), val_idx)
    return train_idx, val_idx


def _keras_to_bytes(model) -> bytes:
    """The ``.keras`` archive of a keras model as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _keras_from_bytes(data: bytes):
    """A keras model from the bytes of its ``.keras`` archive."""
    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as fh:
            fh.write(data)
        return keras.saving.load_model(path)


class Conv1DRandomForest(ClassifierMixin, BaseEstimator):
    """Conv1D trunk features -> random forest (Yang et al. 2020) on flattened pixel time series.

    ``shapes`` maps each input name to its per-sample (T, C); ``fit``/``predict_proba`` take the matrix of
    :func:`cropflow.models.rf.flatten_inputs`. Fitted attributes: ``extractor_`` (keras model, inputs ->
    "trunk_features" activations), ``forest_`` (RandomForestClassifier), ``classes_``, ``trunk_history_`` (per-epoch
    trunk loss/accuracy) and ``trunk_best_epoch_`` (1-based epoch whose weights were kept).
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]] | None = None, n_classes: int = 2, filters: int = 32,
                 stem_kernel: int = 3, kernel_sizes: Sequence[int] | str = (1, 3, 5), modules: int = 2,
                 dense: int = 512, dropout: float = 0.3, epochs: int = 50, batch_size: int = 256,
                 learning_rate: float = 0.001, patience: int = 8, validation_fraction: float = 0.1,
                 n_estimators: int = 500, min_samples_split: int = 4, max_features: str | float | None = "sqrt",
                 n_jobs: int | None = -1, random_state: int = 0) -> None:
        self.shapes = shapes
        self.n_classes = n_classes
        self.filters = filters
        self.stem_kernel = stem_kernel
        self.kernel_sizes = kernel_sizes
        self.modules = modules
        self.dense = dense
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.n_estimators = n_estimators
        self.min_samples_split = min_samples_split
        self.max_features = max_features
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------------------------------- helpers

    def _shapes(self) -> dict[str, tuple[int, int]]:
        if not self.shapes:
            raise ValueError("conv1d_rf: the estimator needs the input shapes {name: (T, C)}")
        return {str(k): tuple(int(s) for s in self.shapes[k]) for k in sorted(self.shapes)}  # type: ignore[misc]

    def _trunk_params(self) -> dict[str, object]:
        return {"filters": self.filters, "stem_kernel": self.stem_kernel, "kernel_sizes": self.kernel_sizes,
                "modules": self.modules, "dense": self.dense, "dropout": self.dropout,
                "learning_rate": self.learning_rate, "imbalance": "none", "weight_decay": 0.0}

    def _forest(self):
        params = {"n_estimators": self.n_estimators, "min_samples_split": self.min_samples_split,
                  "max_features": self.max_features, "n_jobs": self.n_jobs}
        return rf.build(self._shapes(), max(2, int(self.n_classes)), params, int(self.random_state))

    def _fit_trunk(self, x: dict[str, np.ndarray], codes: np.ndarray, width: int,
                   sample_weight: np.ndarray | None):
        """Train the Conv1D network (softmax over ``width`` classes) with early stopping; best weights kept."""
        import keras
        import tensorflow as tf

        from cropflow.training import compile_model, make_dataset

        seed = int(self.random_state)
        keras.utils.set_random_seed(seed)
        if not tf.config.list_physical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
        shapes = self._shapes()
        params = self._trunk_params()
        model = conv1d.build(shapes, width, params, seed)
        compile_model(model, params)
        tr, va = stratified_split(codes, float(self.validation_fraction), seed)
        batch = int(self.batch_size)
        w = None if sample_weight is None else sample_weight[tr]
        ds_train = make_dataset({k: v[tr] for k, v in x.items()}, codes[tr], w, batch, shuffle=True, seed=seed)
        callbacks, ds_val = [], None
        if va.size:
            ds_val = make_dataset({k: v[va] for k, v in x.items()}, codes[va], None, batch, shuffle=False,
                                  seed=seed)
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(self.patience),
                                                           restore_best_weights=True))
        else:
            log.warning("conv1d_rf: no validation samples (validation_fraction %s, %d samples): the trunk trains "
                        "%d epochs without early stopping", self.validation_fraction, codes.size, self.epochs)
        fitted = model.fit(ds_train, validation_data=ds_val, epochs=int(self.epochs), callbacks=callbacks,
                           verbose=0, shuffle=False)  # the dataset reshuffles itself, seeded
        history = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
        monitor = history.get("val_loss") or history["loss"]
        self.trunk_history_ = history
        self.trunk_best_epoch_ = int(np.argmin(monitor)) + 1
        log.info("conv1d_rf: trunk trained on %d samples (%d for validation), %d epochs, best epoch %d",
                 tr.size, va.size, len(history["loss"]), self.trunk_best_epoch_)
        return model

    # ------------------------------------------------------------------------------------------- estimator API

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Conv1DRandomForest:
        """Train the trunk on the un-flattened ``X`` and labels ``y``, then the random forest on its features."""
        import keras

        x = unflatten(np.asarray(X, dtype=np.float32), self._shapes())
        y = np.asarray(y)
        if y.ndim != 1 or y.size != np.shape(X)[0]:
            raise ValueError(f"conv1d_rf: y must be 1-D with {np.shape(X)[0]} labels, got shape {y.shape}")
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        labels, codes = np.unique(y, return_inverse=True)
        trunk = self._fit_trunk(x, codes.astype(np.int32), max(2, int(self.n_classes), labels.size), weights)
        self.extractor_ = keras.Model(inputs=trunk.input, outputs=trunk.get_layer(conv1d.FEATURES_LAYER).output,
                                      name="conv1d_rf_features")
        features = self._features(x)
        self.forest_ = self._forest()
        self.forest_.fit(features, y, sample_weight=weights)
        return self

    def _features(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        out = self.extractor_.predict(dict(x), batch_size=PREDICT_BATCH, verbose=0)
        return np.asarray(out, dtype=np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, dense) trunk features ("trunk_features" layer activations) of the flattened inputs ``X``."""
        self._check_fitted()
        return self._features(unflatten(np.asarray(X, dtype=np.float32), self._shapes()))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, len(classes_)) class probabilities: the random forest's on the trunk features."""
        return self.forest_.predict_proba(self.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class label of every sample."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def classes_(self) -> np.ndarray:
        self._check_fitted()
        return self.forest_.classes_

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("conv1d_rf: call fit before predicting")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "forest_") and hasattr(self, "extractor_")

    # ------------------------------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        if "extractor_" in state:
            state["extractor_"] = _keras_to_bytes(state["extractor_"])
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state = dict(state)
        if isinstance(state.get("extractor_"), (bytes, bytearray)):
            state["extractor_"] = _keras_from_bytes(bytes(state["extractor_"]))  # type: ignore[arg-type]
        super().__setstate__(state)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object],
          seed: int) -> Conv1DRandomForest:
    """An unfitted :class:`Conv1DRandomForest` for ``inputs`` {name: (T, C)} (sorted names) and ``n_classes``.

    ``params`` keys as in ``DEFAULTS``; ``imbalance`` is applied by the caller before ``fit`` (sample weights
    or oversampled samples); ``random_state`` of the trunk and the forest is ``seed``.
    """
    shapes = check_inputs("conv1d_rf", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    if p["imbalance"] not in IMBALANCE:
        raise ValueError(f"conv1d_rf: imbalance must be one of {list(IMBALANCE)}, got {p['imbalance']!r}")
    fraction = float(p["validation_fraction"])
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"conv1d_rf: validation_fraction must be in [0, 1), got {fraction}")
    conv1d.kernel_list(p["kernel_sizes"])  # validates early
    return Conv1DRandomForest(
        shapes=shapes, n_classes=int(n_classes), filters=int(p["filters"]), stem_kernel=int(p["stem_kernel"]),
        kernel_sizes=p["kernel_sizes"], modules=int(p["modules"]),  # type: ignore[arg-type]
        dense=int(p["dense"]), dropout=float(p["dropout"]), epochs=int(p["epochs"]),
        batch_size=int(p["batch_size"]), learning_rate=float(p["learning_rate"]), patience=int(p["patience"]),
        validation_fraction=fraction, n_estimators=int(p["n_estimators"]),
        min_samples_split=int(p["min_samples_split"]), max_features=p["max_features"],  # type: ignore[arg-type]
        n_jobs=None if p["n_jobs"] is None else int(p["n_jobs"]), random_state=int(seed))
