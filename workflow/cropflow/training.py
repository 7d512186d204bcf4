"""Model training: normalisation fitted on the training split, seeded fitting, and the model bundle.

SCIENCE.md (Models): Adam (learning rate 1e-3), cross-entropy, early stopping and a best-validation
checkpoint for the deep models; the random forest is fitted on the flattened series. Class ids are mapped to
output indices 0..K-1 in the order of ``train.class_ids`` (legend order). Pixel models read each split's
(N, T, C) series, patch models its (N, h, w, T, C) patches (normalised with the ranges fitted on the pixel
series of the same bands).

Imbalance handling (SCIENCE.md, chapter 4; parameter ``imbalance`` of every model):
- "class_weights": each training sample weighted by N / (K_present * n_class) (inverse frequency);
- "oversample": samples of every class drawn with replacement up to the largest class's count; duplicated
  patches are rotated by 0, 90 or 180 degrees and flipped horizontally at random (pixel series are duplicated);
- "mixup" (keras models): each batch mixed with a shuffled copy of itself, x = l x_i + (1 - l) x_j and
  y = l y_i + (1 - l) y_j (one-hot), l ~ Beta(0.2, 0.2) (Zhang et al. 2018).

Missing values: the normalisation is fitted on finite training values only. A sample with no finite value at
all carries no observation and is dropped (logged); gaps in an otherwise observed sample are set to 0 after
normalisation (logged), exactly as :meth:`cropflow.models.TrainedModel.predict_proba` does at prediction time.

Devices: the same code runs on CPU and GPU. Keras models are built under a ``tf.distribute`` strategy
(MirroredStrategy when more than one GPU is visible, else the default strategy; ``batch_size`` is the global
batch); the "mixed_float16" policy is used only when ``mixed_precision`` is true and a GPU is visible. On CPU,
TensorFlow op determinism is enabled so that one seed gives one model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss
from sklearn.utils.class_weight import compute_class_weight

import cropflow
from cropflow import normalisation as norm_mod
from cropflow.atomic import atomic_path
from cropflow.models import MODEL_FILES, TrainedModel, build, get_spec, resolve_params
from cropflow.models.rf import flatten_inputs
from cropflow.sampleset import PATCH_SUFFIX, SampleSet, StoredSplit

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


# --------------------------------------------------------------------------------------------------- pure parts


def encode_labels(y_ids: np.ndarray, class_ids: Sequence[int], split: str = "samples") -> np.ndarray:
    """Output indices (int32) of legend ids: index i of ``class_ids``. ValueError for ids not in ``class_ids``."""
    order = np.asarray(class_ids, dtype=np.int64)
    y = np.asarray(y_ids, dtype=np.int64)
    sorter = np.argsort(order)
    pos = np.clip(np.searchsorted(order, y, sorter=sorter), 0, max(order.size - 1, 0))
    idx = sorter[pos] if order.size else pos
    bad = (order[idx] != y) if order.size else np.ones(y.shape, bool)
    if bad.any():
        raise ValueError(f"{split}: class ids {np.unique(y[bad]).tolist()} are not among the model classes "
                         f"{list(class_ids)}; check the legend and the samples stage")
    return idx.astype(np.int32)


def inverse_frequency_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights N / (K_present * n_k) (scikit-learn "balanced"); 0 for classes absent from ``y``."""
    present = np.unique(y)
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights


def missing_rows(missing: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(any, all): per sample, whether some / every input value was missing (masks from apply_inputs)."""
    masks = [m.reshape(m.shape[0], -1) for m in missing.values()]
    any_ = np.logical_or.reduce([m.any(axis=1) for m in masks])
    all_ = np.logical_and.reduce([m.all(axis=1) for m in masks])
    return any_, all_


# --------------------------------------------------------------------------------------------------- preparation


def _check_pair(train: SampleSet, val: SampleSet) -> None:
    if len(train) == 0:
        raise ValueError("training split is empty: check the partition and samples stages")
    if len(val) == 0:
        raise ValueError("validation split is empty (needed for early stopping): check partition.fractions")
    if train.shapes != val.shapes:
        raise ValueError(f"train and val inputs differ: {train.shapes} vs {val.shapes}; rebuild the samples")
    for name in train.x:
        tb, vb = train.inputs[name].get("bands"), val.inputs[name].get("bands")
        if tb is not None and vb is not None and list(tb) != list(vb):
            raise ValueError(f"input '{name}': train bands {list(tb)} differ from val bands {list(vb)}")


def model_inputs(samples: SampleSet, kind: str, name: str = "model") -> dict[str, np.ndarray]:
    """The arrays a model of ``kind`` reads: the pixel series, or the patches (ValueError naming the fix)."""
    if kind == "pixel":
        return samples.x
    missing = sorted(set(samples.x) - set(samples.patches))
    if missing:
        raise ValueError(f"{name} is a patch model but the samples have no patches for inputs {missing}: set "
                         "samples.patches: true in the config")
    return {k: samples.patches[k] for k in samples.x}


def _prepare(split: str, samples: SampleSet, norm: Mapping[str, norm_mod.MinMax], class_ids: Sequence[int],
             log: logging.Logger, kind: str = "pixel") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Normalised inputs and output indices of a split; samples without any observation are dropped (logged)."""
    xn, missing = norm_mod.apply_inputs(model_inputs(samples, kind), norm)
    y = encode_labels(samples.y, class_ids, split)
    any_, all_ = missing_rows(missing)
    partial = int((any_ & ~all_).sum())
    if partial:
        log.warning("%s: %d of %d samples have missing values, set to 0 after normalisation",
                    split, partial, len(samples))
    if all_.any():
        log.warning("%s: dropped %d of %d samples without any finite value", split, int(all_.sum()), len(samples))
        keep = ~all_
        xn = {k: v[keep] for k, v in xn.items()}
        y = y[keep]
        if y.size == 0:
            raise ValueError(f"{split}: no sample has a finite value; check the feature cubes")
    return xn, y


# --------------------------------------------------------------------------------------------------- keras


def compile_model(model, params: Mapping[str, object]) -> None:
    """Compile a keras model: Adam(learning_rate) (AdamW when ``weight_decay`` > 0), cross-entropy (on one-hot
    targets with mixup, else sparse), accuracy."""
    import keras

    lr = float(params.get("learning_rate", 1e-3))
    decay = float(params.get("weight_decay", 0.0) or 0.0)
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay) if decay > 0 \
        else keras.optimizers.Adam(learning_rate=lr)
    loss = "categorical_crossentropy" if params.get("imbalance") == "mixup" else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def oversample(x: Mapping[str, np.ndarray], y: np.ndarray, seed: int, kind: str = "pixel"
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every class resampled with replacement up to the largest class's count (originals kept once each);
    duplicated patches rotated by 0/90/180 degrees and flipped horizontally at random."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    extra = [rng.choice(np.flatnonzero(y == c), int(counts.max() - n), replace=True)
             for c, n in enumerate(counts) if 0 < n < counts.max()]
    if not extra:
        return dict(x), y
    dup = np.concatenate(extra)
    out = {}
    for name, a in x.items():
        add = a[dup].copy()
        if kind == "patch":
            turns = rng.integers(0, 3, dup.size)
            flips = rng.random(dup.size) < 0.5
            for i in range(dup.size):
                p = np.rot90(add[i], k=int(turns[i]), axes=(0, 1))
                add[i] = p[:, ::-1] if flips[i] else p
        out[name] = np.concatenate([a, add])
    return out, np.concatenate([y, y[dup]])


def make_dataset(x: Mapping[str, np.ndarray], y: np.ndarray, weights: np.ndarray | None, batch_size: int,
                 shuffle: bool, seed: int, mixup: float = 0.0, n_classes: int = 0):
    """A batched tf.data.Dataset of ({input: x}, y[, sample weight]), reshuffled every epoch when ``shuffle``.

    ``n_classes`` > 0 gives one-hot targets; ``mixup`` > 0 mixes each batch with a permutation of itself with
    weights l ~ Beta(mixup, mixup) drawn from stateless seeds (batch index, ``seed``)."""
    import tensorflow as tf

    labels = np.eye(n_classes, dtype=np.float32)[y] if n_classes else y
    items = (dict(x), labels) if weights is None else (dict(x), labels, weights.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(items)
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if mixup > 0:
        ds = ds.enumerate().map(lambda i, b: _mix_batch(i, b, mixup, seed))
    return ds.prefetch(tf.data.AUTOTUNE)


def _mix_batch(index, batch, alpha: float, seed: int):
    """Mixup of one batch (inputs and one-hot targets) with a permutation of itself."""
    import tensorflow as tf

    x, y = batch[0], batch[1]
    n = tf.shape(y)[0]
    seeds = tf.stack([tf.cast(index, tf.int32), tf.constant(seed, tf.int32)])
    g1 = tf.random.stateless_gamma([n], seed=seeds, alpha=alpha)
    g2 = tf.random.stateless_gamma([n], seed=seeds + 1, alpha=alpha)
    lam = g1 / (g1 + g2)
    perm = tf.argsort(tf.random.stateless_uniform([n], seed=seeds + 2))

    def mix(a):
        shape = tf.concat([[n], tf.ones([tf.rank(a) - 1], tf.int32)], axis=0)
        w = tf.cast(tf.reshape(lam, shape), a.dtype)
        return w * a + (1 - w) * tf.gather(a, perm)

    return ({k: mix(v) for k, v in x.items()}, mix(y), *batch[2:])


@dataclass
class BlockStream:
    """Training batches read from a stored split block by block (storage chunks), normalised on the fly: only
    ``mix`` blocks of inputs are in memory at a time. With ``shuffle`` the block order and the samples within
    each group of ``mix`` blocks are permuted anew every epoch (seeded by the epoch). Missing values are set to 0 after normalisation,
    as in memory (the samples stage stores no sample without observations)."""

    split: StoredSplit
    keys: dict[str, str]                  # model input -> store array
    norm: Mapping[str, norm_mod.MinMax]
    y: np.ndarray                         # output indices (N,)
    weights: np.ndarray | None = None

    mix: int = 8                          # blocks shuffled together (stores are ordered by tile and class)

    def groups(self, shuffle: bool, rng: np.random.Generator) -> list[np.ndarray]:
        """Block start offsets, in groups of ``mix`` blocks read and shuffled together."""
        starts = np.arange(0, len(self.split), self.split.block)
        if shuffle:
            starts = rng.permutation(starts)
        return [starts[i:i + self.mix] for i in range(0, starts.size, self.mix)]

    def batches(self, batch: int, shuffle: bool, seed: int, epoch: int, n_classes: int = 0):
        """Full batches across group boundaries (a group's remainder opens the next group's first batch), so an
        epoch has ceil(N / batch) batches whatever the order."""
        rng = np.random.default_rng([seed, epoch])
        n, block = len(self.split), self.split.block
        rows_left = np.empty(0, np.int64)
        x_left: dict[str, np.ndarray] = {}
        for group in self.groups(shuffle, rng):
            rows = np.concatenate([np.arange(s, min(s + block, n)) for s in group])
            raw = {name: np.concatenate([self.split.read(key, int(s), min(int(s) + block, n)) for s in group])
                   for name, key in self.keys.items()}
            xn, _ = norm_mod.apply_inputs(raw, self.norm)
            order = rng.permutation(rows.size) if shuffle else np.arange(rows.size)
            rows = np.concatenate([rows_left, rows[order]])
            xn = {k: np.concatenate([x_left[k], v[order]]) if x_left else v[order] for k, v in xn.items()}
            full = rows.size - rows.size % batch
            for b in range(0, full, batch):
                yield self._item(xn, rows, slice(b, b + batch), n_classes)
            rows_left, x_left = rows[full:], {k: v[full:] for k, v in xn.items()}
        if rows_left.size:
            yield self._item(x_left, rows_left, slice(0, rows_left.size), n_classes)

    def _item(self, xn: Mapping[str, np.ndarray], rows: np.ndarray, sel: slice, n_classes: int) -> tuple:
        y = self.y[rows[sel]]
        item = ({k: v[sel] for k, v in xn.items()}, np.eye(n_classes, dtype=np.float32)[y] if n_classes else y)
        return item if self.weights is None else (*item, self.weights[rows[sel]].astype(np.float32))

    def dataset(self, batch: int, shuffle: bool, seed: int, n_classes: int = 0, mixup: float = 0.0):
        """A tf.data.Dataset over :meth:`batches`, a new epoch (and order) each time it is iterated."""
        import itertools

        import tensorflow as tf

        epochs = itertools.count()
        spec_x = {k: tf.TensorSpec((None, *self.split.shape(key)), tf.float32) for k, key in self.keys.items()}
        spec_y = tf.TensorSpec((None, n_classes), tf.float32) if n_classes else tf.TensorSpec((None,), tf.int32)
        signature = (spec_x, spec_y) if self.weights is None else (spec_x, spec_y, tf.TensorSpec((None,), tf.float32))
        ds = tf.data.Dataset.from_generator(
            lambda: self.batches(batch, shuffle, seed, next(epochs), n_classes), output_signature=signature)
        steps = -(-len(self.split) // batch)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
        if mixup > 0:
            ds = ds.enumerate().map(lambda i, b: _mix_batch(i, b, mixup, seed))
        return ds.prefetch(tf.data.AUTOTUNE)


def fit_normalisation_blocks(split: StoredSplit, bands: Mapping[str, Sequence[str]]) -> dict[str, norm_mod.MinMax]:
    """Per-input min-max ranges of a stored split's pixel series, read one block at a time."""
    out = {}
    for name in sorted(split.inputs):
        lo = hi = None
        for s in range(0, len(split), split.block):
            mn, mx = norm_mod.fit_minmax(split.read(name, s, min(s + split.block, len(split))))
            lo, hi = (mn, mx) if lo is None else (np.fmin(lo, mn), np.fmax(hi, mx))
        out[name] = norm_mod.MinMax(tuple(bands[name]), lo, hi)
    return out


def recalibrate_batch_norm(model, x: Mapping[str, np.ndarray], batch: int = 512) -> None:
    """Precise BatchNorm (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"): every BatchNormalization
    layer's moving mean and variance become the average of its batch statistics over ``x`` (training-mode
    forward passes, momentum i / (i + 1) at batch i); no other weight changes. Without it the moving averages
    (momentum 0.99) can lag far behind the weights after the few hundred steps of a small training set, and the
    model is judged and kept with statistics it was not trained with."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    saved = [layer.momentum for layer in layers]
    n = len(next(iter(x.values())))
    try:
        for i, start in enumerate(range(0, n, batch)):
            for layer in layers:
                layer.momentum = i / (i + 1)
            model({k: v[start:start + batch] for k, v in x.items()}, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def _calibration_inputs(xtr, seed: int, n: int = 4096) -> dict[str, np.ndarray]:
    """Up to ``n`` normalised training inputs for :func:`recalibrate_batch_norm` (a seeded random subset; from
    the first blocks of a stream)."""
    if isinstance(xtr, BlockStream):
        split, size = xtr.split, min(n, len(xtr.split))
        raw = {name: np.concatenate([split.read(key, s, min(s + split.block, size))
                                     for s in range(0, size, split.block)]) for name, key in xtr.keys.items()}
        return norm_mod.apply_inputs(raw, xtr.norm)[0]
    total = len(next(iter(xtr.values())))
    pick = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    return {k: v[pick] for k, v in xtr.items()}


def _fit_keras(name: str, shapes: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object],
               seed: int, data: tuple, checkpoint: Path, log: logging.Logger, backup_dir: Path | None = None):
    import keras
    import tensorflow as tf

    (xtr, ytr, wtr), (xva, yva) = data
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        tf.config.experimental.enable_op_determinism()
    policy = "mixed_float16" if params["mixed_precision"] and gpus else "float32"
    if params["mixed_precision"] and not gpus:
        log.info("%s: mixed precision requested but no GPU is visible: training in float32", name)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("%s: %d GPU(s) visible, strategy %s (%d replica(s)), dtype policy %s", name, len(gpus),
             type(strategy).__name__, strategy.num_replicas_in_sync, policy)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        with strategy.scope():
            model = build(name, shapes, n_classes, params, seed)
            compile_model(model, params)
        batch = int(params["batch_size"])
        mixup = params.get("imbalance") == "mixup"
        onehot = n_classes if mixup else 0
        if isinstance(xtr, BlockStream):
            ds_train = xtr.dataset(batch, True, seed, onehot, 0.2 if mixup else 0.0)
            ds_val = xva.dataset(batch, False, seed, onehot)
        else:
            ds_train = make_dataset(xtr, ytr, wtr, batch, shuffle=True, seed=seed, mixup=0.2 if mixup else 0.0,
                                    n_classes=onehot)
            ds_val = make_dataset(xva, yva, None, batch, shuffle=False, seed=seed, n_classes=onehot)
        epochs = int(params["epochs"])

        def log_epoch(epoch: int, logs: Mapping[str, float] | None) -> None:
            logs = logs or {}
            log.info("%s: epoch %d/%d loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f", name, epoch + 1,
                     epochs, logs.get("loss", np.nan), logs.get("accuracy", np.nan), logs.get("val_loss", np.nan),
                     logs.get("val_accuracy", np.nan))

        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(params["patience"]),
                                          restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
            keras.callbacks.LambdaCallback(on_epoch_end=log_epoch),
        ]
        calibration = _calibration_inputs(xtr, seed)

        class PreciseBatchNorm(keras.callbacks.Callback):
            """Moving BN statistics recomputed before each validation, so early stopping and the checkpoint
            see the model as it will predict."""

            def on_test_begin(self, logs=None):
                recalibrate_batch_norm(self.model, calibration)

        callbacks.insert(0, PreciseBatchNorm())
        if backup_dir is not None:  # resumable: an interrupted job restarts from its last finished epoch
            callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
        fitted = model.fit(ds_train, validation_data=ds_val, epochs=epochs, callbacks=callbacks, verbose=0,
                           shuffle=False)  # the dataset reshuffles itself, seeded
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    hist = fitted.history
    n = len(hist["loss"])
    history = pd.DataFrame({"epoch": np.arange(1, n + 1),
                            **{k: hist.get(k, [np.nan] * n) for k in HISTORY_COLUMNS[1:]}})
    info = {"dtype_policy": policy, "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
            "gpus": len(gpus), "versions": {"keras": keras.__version__, "tensorflow": tf.__version__}}
    return model, history[HISTORY_COLUMNS], info


# --------------------------------------------------------------------------------------------------- sklearn


def _fit_sklearn(name: str, shapes: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object],
                 seed: int, data: tuple, log: logging.Logger):
    import sklearn

    (xtr, ytr, wtr), _ = data
    model = build(name, shapes, n_classes, params, seed)
    features = flatten_inputs(xtr)
    log.info("%s: fitting on %d samples x %d features", name, *features.shape)
    model.fit(features, ytr, sample_weight=wtr)
    return model, {"versions": {"scikit-learn": sklearn.__version__}}


def _scores(trained: TrainedModel, x: Mapping[str, np.ndarray], y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy, accuracy) of normalised inputs against output indices."""
    p = trained.predict_proba_normalised(x, batch_size=4096).astype(np.float64)
    p = np.clip(p, 1e-7, 1.0)
    p /= p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    return float(log_loss(y, p, labels=np.arange(k))), float(accuracy_score(y, p.argmax(axis=1)))


# --------------------------------------------------------------------------------------------------- entry points


def fit(name: str, train: SampleSet, val: SampleSet, params: Mapping[str, object] | None, seed: int,
        log: logging.Logger = logger, class_names: Sequence[str] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, backup_dir: str | os.PathLike | None = None
        ) -> TrainedModel:
    """Train model ``name`` in memory and return it as a :class:`TrainedModel` (see :func:`train`).

    ``checkpoint_dir`` receives the keras best-validation checkpoint (default: a temporary folder);
    ``backup_dir`` (keras models) keeps the state of the last finished epoch so an interrupted training resumes
    there (removed when training ends).
    """
    spec = get_spec(name)
    p = resolve_params(name, params)
    streaming = isinstance(train, StoredSplit)
    if streaming and (spec.family != "keras" or p.get("imbalance") == "oversample"):
        log.info("%s: reading the %.0f MB of samples into memory (%s)", name, train.nbytes / 2**20,
                 "scikit-learn fits in memory" if spec.family != "keras" else "oversampling")
        train, val, streaming = train.load(), val.load(), False
    if not streaming:
        _check_pair(train, val)
    class_ids = list(train.class_ids)
    if list(val.class_ids) != class_ids:
        log.warning("%s: val class_ids %s differ from train class_ids %s; using the train order",
                    name, val.class_ids, class_ids)
    if class_names is None:
        class_names = train.class_names
    if class_names is None:
        log.warning("%s: no class names given; using the class ids as names", name)
        class_names = [str(c) for c in class_ids]
    if len(class_names) != len(class_ids):
        raise ValueError(f"{name}: {len(class_names)} class names for {len(class_ids)} class ids")

    if streaming:
        xtr, ytr, xva, yva, norm = _streams(name, spec.kind, train, val, class_ids, log)
    else:
        bands = {k: list(v.get("bands", [])) or [f"c{i}" for i in range(train.x[k].shape[2])]
                 for k, v in train.inputs.items() if k in train.x}
        norm = norm_mod.fit_inputs(train.x, bands)
        xtr, ytr = _prepare("train", train, norm, class_ids, log, spec.kind)
        xva, yva = _prepare("val", val, norm, class_ids, log, spec.kind)
    k = len(class_ids)
    counts = np.bincount(ytr, minlength=k)
    absent = [c for c, n in zip(class_ids, counts) if n == 0]
    if absent:
        log.warning("%s: classes %s have no training sample; the model will rarely predict them", name, absent)
    wtr = None
    imbalance = p.get("imbalance", "none")
    if imbalance == "class_weights":
        cw = inverse_frequency_weights(ytr, k)
        log.info("%s: inverse-frequency class weights %s", name,
                 {c: round(float(w), 4) for c, w in zip(class_ids, cw)})
        wtr = cw[ytr]
        if streaming:
            xtr.weights, wtr = wtr, None
    elif imbalance == "oversample":
        xtr, ytr = oversample(xtr, ytr, seed, spec.kind)
        log.info("%s: oversampled the training split to %d samples (%d per class)", name, ytr.size,
                 int(np.bincount(ytr).max()))
    elif imbalance == "mixup" and spec.family != "keras":
        raise ValueError(f"{name}: imbalance 'mixup' needs a neural network; use class_weights or oversample")
    shapes = ({n: train.shape(key) for n, key in xtr.keys.items()} if streaming
              else {n: tuple(a.shape[1:]) for n, a in xtr.items()})
    data = ((xtr, ytr, wtr), (xva, yva))
    log.info("%s: training on %d samples, validating on %d, %d classes, inputs %s, seed %d",
             name, ytr.size, yva.size, k, shapes, seed)

    started = time.perf_counter()
    if spec.family == "keras":
        folder_ctx = tempfile.TemporaryDirectory() if checkpoint_dir is None else contextlib.nullcontext(checkpoint_dir)
        with folder_ctx as folder:
            model, history, info = _fit_keras(name, shapes, k, p, seed, data,
                                              Path(folder) / MODEL_FILES["keras"], log,
                                              None if backup_dir is None else Path(backup_dir))
    else:
        model, info = _fit_sklearn(name, shapes, k, p, seed, data, log)
        history = None
    seconds = time.perf_counter() - started

    meta = {
        "name": name, "family": spec.family, "kind": spec.kind, "class_ids": class_ids, "class_names": list(class_names),
        "inputs": {n: dict(train.inputs[n]) for n in sorted(shapes)}, "shapes": shapes, "params": p,
        "seed": int(seed), "n_train": int(ytr.size), "n_val": int(yva.size),
        "train_class_counts": {str(c): int(n) for c, n in zip(class_ids, counts)},
        "train_seconds": round(seconds, 3),
        "cropflow_version": cropflow.__version__, **info,
    }
    trained = TrainedModel(model, meta, norm, None)
    if streaming:
        trained.meta["streamed"] = True
    if history is None:  # random forest: one row with train and validation scores
        loss, acc = _scores(trained, xtr, ytr)
        val_loss, val_acc = _scores(trained, xva, yva)
        history = pd.DataFrame([{"epoch": 1, "loss": loss, "accuracy": acc, "val_loss": val_loss,
                                 "val_accuracy": val_acc}])[HISTORY_COLUMNS]
    best = int(history["val_loss"].idxmin()) if history["val_loss"].notna().any() else len(history) - 1
    trained.meta.update(best_epoch=int(history["epoch"].iloc[best]), epochs_run=int(len(history)),
                        val_loss=float(history["val_loss"].iloc[best]),
                        val_accuracy=float(history["val_accuracy"].iloc[best]))
    trained.history = history
    log.info("%s: best epoch %d of %d, val_loss %.4f, val_accuracy %.4f", name, trained.meta["best_epoch"],
             len(history), trained.meta["val_loss"], trained.meta["val_accuracy"])
    return trained


def _streams(name: str, kind: str, train: StoredSplit, val: StoredSplit, class_ids: Sequence[int],
             log: logging.Logger) -> tuple:
    """(train stream, train labels, val stream, val labels, normalisation) of stored splits."""
    keys = {n: n if kind == "pixel" else n + PATCH_SUFFIX for n in sorted(train.inputs)}
    for split_name, split in (("train", train), ("val", val)):
        absent = [key for key in keys.values() if key not in split.arrays]
        if absent:
            raise ValueError(f"{name}: the {split_name} samples lack {absent}" + (
                "; set samples.patches: true" if kind == "patch" else "; rebuild the samples"))
    if any(train.shape(key) != val.shape(key) for key in keys.values()):
        raise ValueError(f"train and val inputs differ in shape; rebuild the samples ({train.path}, {val.path})")
    bands = {n: list(m.get("bands", [])) or [f"c{i}" for i in range(train.shape(n)[-1])]
             for n, m in train.inputs.items()}
    norm = fit_normalisation_blocks(train, bands)
    ytr, yva = encode_labels(train.y, class_ids, "train"), encode_labels(val.y, class_ids, "val")
    log.info("%s: streaming %.0f MB of training samples from %s in blocks of %d", name, train.nbytes / 2**20,
             train.path, train.block)
    return BlockStream(train, keys, norm, ytr), ytr, BlockStream(val, keys, norm, yva), yva, norm


def train(name: str, train: SampleSet, val: SampleSet, params: Mapping[str, object] | None, seed: int,
          out_dir: str | os.PathLike, log: logging.Logger = logger,
          class_names: Sequence[str] | None = None, backup_dir: str | os.PathLike | None = None) -> Path:
    """Train model ``name`` on ``train`` (early stopping on ``val``) and write its bundle folder atomically.

    The bundle (``out_dir``) holds model.keras or model.joblib, normalisation.json (fitted on ``train``),
    meta.json (name, family, class_ids, class_names, inputs, params, seed, best_epoch, ...) and history.csv
    (epoch, loss, accuracy, val_loss, val_accuracy). Keras models checkpoint their best-validation state into
    the bundle while training. ``class_names`` defaults to ``train.class_names``. Returns ``out_dir``.
    """
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.mkdir()
        trained = fit(name, train, val, params, seed, log=log, class_names=class_names, checkpoint_dir=tmp,
                      backup_dir=backup_dir)
        trained.write_into(tmp)
    log.info("%s: wrote model bundle %s", name, out_dir)
    return Path(out_dir)

