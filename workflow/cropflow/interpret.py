"""Model interpretation (SCIENCE.md, Models: "Interpretation: gradients of class scores w.r.t. inputs (saliency),
attention weights over time, RF importances").

- :func:`saliency`: input-gradient saliency (Simonyan et al. 2014) of a keras model: for every sample of class k,
  |d score_k / d x| with x the *normalised* input (the model's own input space, the bundle's min-max ranges) and
  score_k the softmax probability of class k (or its logarithm), averaged over the samples of class k.
- :func:`attention_weights`: the mean attention over time steps per class, read from the layers named
  ``f"{input}_attention"`` (output (N, T)) of the attention models.
- :func:`rf_importances`: the random forest's impurity importances, un-flattened to (input, time, band) in the
  order of :func:`cropflow.models.rf.flatten_inputs` (inputs sorted by name, each time-major).

The plots draw on :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state) and are written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cropflow import normalisation as norm_mod
from cropflow.atomic import atomic_path
from cropflow.models import TrainedModel

log = logging.getLogger(__name__)

Score = Literal["proba", "log_proba"]
IMPORTANCE_COLUMNS = ["input", "band", "time", "time_index", "importance"]


# --------------------------------------------------------------------------------------------------- helpers


def _require(trained: TrainedModel, family: str, what: str) -> None:
    if trained.family != family:
        raise ValueError(f"{what} needs a {family} model; '{trained.name}' is a {trained.family} model")


def input_names(trained: TrainedModel) -> list[str]:
    """The model's input names in sorted order (the order of the keras inputs and of the RF features)."""
    return sorted(trained.meta["inputs"])


def input_bands(trained: TrainedModel, name: str) -> list[str]:
    """Band names of a model input (metadata, else the normalisation, else c0, c1, ...)."""
    bands = trained.meta["inputs"].get(name, {}).get("bands")
    if not bands and name in trained.normalisation:
        bands = trained.normalisation[name].bands
    return [str(b) for b in bands] if bands else [f"c{i}" for i in range(trained.input_shapes[name][-1])]


def input_times(trained: TrainedModel, name: str) -> list[str]:
    """Time labels of a model input (ISO dates from the metadata, else t0, t1, ...)."""
    times = trained.meta["inputs"].get(name, {}).get("times")
    return [str(t) for t in times] if times else [f"t{i}" for i in range(trained.input_shapes[name][-2])]


def class_indices(y_ids: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Output indices (position in ``class_ids``) of legend class ids; ValueError for unknown ids."""
    lookup = {int(c): i for i, c in enumerate(class_ids)}
    y = np.asarray(y_ids).reshape(-1)
    unknown = sorted({int(v) for v in np.unique(y)} - set(lookup))
    if unknown:
        raise ValueError(f"class ids {unknown} are not among the model classes {list(class_ids)}")
    return np.array([lookup[int(v)] for v in y], dtype=np.int64)


def normalised_inputs(trained: TrainedModel, x_raw: Mapping[str, np.ndarray], y_ids: np.ndarray
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model's inputs normalised with the bundle's ranges (``normalisation.apply_inputs``, gaps set to 0)
    and the output index of each sample; samples without any finite value are left out (logged)."""
    names = input_names(trained)
    missing_inputs = sorted(set(names) - set(x_raw))
    if missing_inputs:
        raise ValueError(f"model '{trained.name}' needs inputs {names}; missing {missing_inputs}")
    x = {n: np.asarray(x_raw[n]) for n in names}
    y = class_indices(y_ids, trained.class_ids)
    for n, a in x.items():
        if a.shape[0] != y.size or a.ndim not in (3, 5):
            raise ValueError(f"input '{n}' must be (N={y.size}, T, C) or (N, h, w, T, C), got {a.shape}")
        if a.shape[-1] != len(trained.normalisation[n].bands):
            raise ValueError(f"input '{n}' has {a.shape[-1]} bands, the model {len(trained.normalisation[n].bands)}")
    xn, missing = norm_mod.apply_inputs(x, trained.normalisation)
    observed = np.logical_or.reduce([~m.reshape(y.size, -1).all(axis=1) for m in missing.values()])
    if not observed.all():
        log.warning("model '%s': left out %d of %d samples without any finite value", trained.name,
                    int((~observed).sum()), y.size)
        xn = {n: a[observed] for n, a in xn.items()}
        y = y[observed]
    return xn, y


def _class_means(sums: np.ndarray, counts: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Per-class sums (K, ...) divided by per-class counts; NaN (logged) for classes without samples."""
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        log.warning("interpretation: no sample of classes %s; their values are NaN", empty)
    shape = (-1,) + (1,) * (sums.ndim - 1)
    with np.errstate(all="ignore"):
        return np.where(counts.reshape(shape) > 0, sums / counts.reshape(shape), np.nan).astype(np.float32)


# --------------------------------------------------------------------------------------------------- saliency


def saliency(trained: TrainedModel, x_raw: Mapping[str, np.ndarray], y_ids: np.ndarray, batch_size: int = 256,
             score: Score = "proba") -> dict[str, np.ndarray]:
    """Per-class input-gradient saliency: mean over the samples of class k of |d score_k / d x|.

    ``x_raw`` {input: (N, T, C) or (N, h, w, T, C)} raw values, normalised with the bundle's ranges;
    ``y_ids`` (N,) legend class ids. score_k is the softmax probability of class k (``score="proba"``) or its
    natural logarithm (``"log_proba"``, which does not saturate on confident samples). Gradients are taken
    with ``tf.GradientTape`` in inference mode (dropout off, batch-norm statistics frozen). Returns
    {input: (K, T, C)} or (K, h, w, T, C) float32, rows in ``class_ids`` order (NaN for absent classes).
    """
    _require(trained, "keras", "saliency")
    if score not in ("proba", "log_proba"):
        raise ValueError(f"saliency: score must be 'proba' or 'log_proba', got {score!r}")
    import tensorflow as tf

    xn, y = normalised_inputs(trained, x_raw, y_ids)
    k = len(trained.class_ids)
    sums = {n: np.zeros((k, *a.shape[1:]), dtype=np.float64) for n, a in xn.items()}
    for start in range(0, y.size, batch_size):
        stop = min(start + batch_size, y.size)
        xb = {n: tf.convert_to_tensor(a[start:stop], dtype=tf.float32) for n, a in xn.items()}
        yb = y[start:stop]
        with tf.GradientTape() as tape:
            tape.watch(list(xb.values()))
            proba = tf.cast(trained.model(xb, training=False), tf.float32)
            chosen = tf.gather(proba, tf.constant(yb[:, None]), batch_dims=1)
            if score == "log_proba":
                chosen = tf.math.log(tf.maximum(chosen, 1e-30))
            total = tf.reduce_sum(chosen)  # samples are independent in inference mode: per-sample gradients
        grads = tape.gradient(total, xb)
        for n, g in grads.items():
            g = np.abs(np.asarray(g, dtype=np.float64))
            for c in np.unique(yb):
                sums[n][c] += g[yb == c].sum(axis=0)
    counts = np.bincount(y, minlength=k)
    return {n: _class_means(s, counts, trained.class_names) for n, s in sums.items()}


# --------------------------------------------------------------------------------------------------- attention


def attention_layers(trained: TrainedModel) -> dict[str, object]:
    """The top-level keras layers named ``f"{input}_attention"``, by input (empty when the model has none)."""
    names = {layer.name for layer in trained.model.layers}
    return {n: trained.model.get_layer(f"{n}_attention") for n in input_names(trained) if f"{n}_attention" in names}


def attention_weights(trained: TrainedModel, x_raw: Mapping[str, np.ndarray], y_ids: np.ndarray,
                      batch_size: int = 256) -> dict[str, np.ndarray]:
    """Mean attention over time steps per class: {input: (K, T)} from the layers ``f"{input}_attention"``.

    The layers' outputs (N, T) (a trailing axis of length 1 is dropped) on the normalised inputs are averaged
    over the samples of each class (NaN for absent classes). Returns an empty dict when the model has no
    such layer (and for the random forest).
    """
    if trained.family != "keras":
        return {}
    layers = attention_layers(trained)
    if not layers:
        return {}
    import keras

    xn, y = normalised_inputs(trained, x_raw, y_ids)
    probe = keras.Model(inputs=trained.model.input, outputs={n: layer.output for n, layer in layers.items()})
    out = probe.predict(xn, batch_size=batch_size, verbose=0)
    k = len(trained.class_ids)
    counts = np.bincount(y, minlength=k)
    result = {}
    for n, a in out.items():
        a = np.asarray(a, dtype=np.float64)
        while a.ndim > 2 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ValueError(f"layer '{n}_attention' must output (N, T) weights, got shape {a.shape}")
        sums = np.zeros((k, a.shape[1]))
        np.add.at(sums, y, a)
        result[n] = _class_means(sums, counts, trained.class_names)
    return result


# --------------------------------------------------------------------------------------------------- random forest


def rf_importances(trained: TrainedModel) -> pd.DataFrame:
    """Impurity importances of the random forest per (input, time, band).

    ``feature_importances_`` follows :func:`cropflow.models.rf.flatten_inputs`: inputs in sorted name order,
    each (T, C) input time-major (t0c0, t0c1, ..., t1c0, ...). Columns: input, band, time (label), time_index,
    importance; rows in feature order.
    """
    _require(trained, "sklearn", "rf_importances")
    importances = np.asarray(trained.model.feature_importances_, dtype=np.float64)
    frames, offset = [], 0
    for n in input_names(trained):
        shape = trained.input_shapes[n]
        if len(shape) != 2:
            raise ValueError(f"rf_importances: input '{n}' has per-sample shape {shape}, expected (T, C)")
        t, c = shape
        block = importances[offset:offset + t * c]
        if block.size != t * c:
            break
        bands, times = input_bands(trained, n), input_times(trained, n)
        ti, ci = np.divmod(np.arange(t * c), c)
        frames.append(pd.DataFrame({"input": n, "band": [bands[j] for j in ci], "time": [times[i] for i in ti],
                                    "time_index": ti, "importance": block}))
        offset += t * c
    if offset != importances.size:
        expected = sum(int(np.prod(s)) for s in trained.input_shapes.values())
        raise ValueError(f"rf_importances: the forest has {importances.size} features, the inputs "
                         f"{dict(trained.input_shapes)} give {expected}")
    return pd.concat(frames, ignore_index=True)[IMPORTANCE_COLUMNS]


# --------------------------------------------------------------------------------------------------- plots


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def _time_ticks(ax, times: Sequence[str], axis: str = "x") -> None:
    step = max(1, len(times) // 12)
    pos = list(range(0, len(times), step))
    labels = [str(times[i])[:10] for i in pos]
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=90, fontsize=7)
    else:
        ax.set_yticks(pos, labels, fontsize=7)


def plot_saliency(sal: Mapping[str, np.ndarray], trained: TrainedModel, path: str | os.PathLike) -> Path:
    """Per-class saliency heatmaps (band x time), one row per class and one column per input, written as PNG.

    Patch saliency (K, h, w, T, C) is averaged over the patch pixels. Each input has one colour scale shared by
    its classes, so the rows compare.
    """
    from matplotlib.figure import Figure

    names = [n for n in input_names(trained) if n in sal]
    if not names:
        raise ValueError("plot_saliency: no saliency for the model's inputs")
    maps = {n: np.asarray(sal[n], dtype=np.float64) for n in names}
    maps = {n: (a.mean(axis=(1, 2)) if a.ndim == 5 else a) for n, a in maps.items()}
    classes = trained.class_names
    fig = Figure(figsize=(3.2 + 3.6 * len(names), 0.6 + 1.9 * len(classes)), layout="constrained")
    axes = fig.subplots(len(classes), len(names), squeeze=False)
    for j, n in enumerate(names):
        vmax = np.nanmax(maps[n]) if np.isfinite(maps[n]).any() else 1.0
        bands = input_bands(trained, n)
        for i, cls in enumerate(classes):
            ax = axes[i, j]
            im = ax.imshow(maps[n][i].T, aspect="auto", cmap="magma", vmin=0, vmax=vmax or 1.0)
            ax.set_yticks(range(len(bands)), bands, fontsize=7)
            _time_ticks(ax, input_times(trained, n))
            ax.set_title(f"{cls} - {n}", fontsize=9)
        fig.colorbar(im, ax=axes[:, j], shrink=0.6, label="|d score / d x|")
    return _save(fig, path)


def plot_attention(att: Mapping[str, np.ndarray], trained: TrainedModel, path: str | os.PathLike) -> Path:
    """Mean attention weight per time step, one line per class and one panel per input, written as PNG."""
    from matplotlib.figure import Figure

    names = [n for n in input_names(trained) if n in att]
    if not names:
        raise ValueError("plot_attention: no attention weights for the model's inputs (model without attention?)")
    fig = Figure(figsize=(1.5 + 4.5 * len(names), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, n in zip(axes, names):
        a = np.asarray(att[n], dtype=np.float64)
        for i, cls in enumerate(trained.class_names):
            ax.plot(np.arange(a.shape[1]), a[i], marker="o", ms=3, label=cls)
        _time_ticks(ax, input_times(trained, n))
        ax.set_ylabel("mean attention weight")
        ax.set_title(n)
    axes[-1].legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_importances(df: pd.DataFrame, path: str | os.PathLike, top: int = 20) -> Path:
    """Random-forest importances: the ``top`` features (input/band at a time) and the sum per band, as PNG."""
    from matplotlib.figure import Figure

    if df.empty:
        raise ValueError("plot_importances: no importances")
    best = df.nlargest(min(top, len(df)), "importance").iloc[::-1]
    labels = [f"{r.input}/{r.band} {str(r.time)[:10]}" for r in best.itertuples()]
    per_band = df.groupby(["input", "band"], sort=False)["importance"].sum().sort_values()
    fig = Figure(figsize=(11, 1.5 + 0.25 * max(len(best), len(per_band))), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.barh(range(len(best)), best["importance"].to_numpy(), color="tab:green")
    ax1.set_yticks(range(len(best)), labels, fontsize=7)
    ax1.set_xlabel("impurity importance")
    ax1.set_title(f"top {len(best)} features")
    ax2.barh(range(len(per_band)), per_band.to_numpy(), color="tab:blue")
    ax2.set_yticks(range(len(per_band)), [f"{i}/{b}" for i, b in per_band.index], fontsize=7)
    ax2.set_xlabel("summed importance over time")
    ax2.set_title("per band")
    return _save(fig, path)


__all__ = ["attention_layers", "attention_weights", "class_indices", "normalised_inputs", "plot_attention",
           "plot_importances", "plot_saliency", "rf_importances", "saliency"]


def interpret_model(bundle: str | os.PathLike, samples, out_dir: str | os.PathLike, max_samples: int = 2000,
                    seed: int = 0) -> list[Path]:
    """The interpretation figures of one model bundle on (at most ``max_samples`` of) a split, written into
    ``out_dir`` atomically: ``importances.png`` for the random forest, ``saliency.png`` for neural networks and
    ``attention.png`` for those with temporal attention. Other scikit-learn models get none (logged)."""
    from cropflow.atomic import atomic_path
    from cropflow.models import load_trained
    from cropflow.training import model_inputs

    trained = load_trained(bundle)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(samples), min(len(samples), int(max_samples)), replace=False))
    sub = samples.subset(keep)
    x = model_inputs(sub, trained.kind, trained.name)
    written = []
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.mkdir()
        if trained.family == "keras":
            written.append(plot_saliency(saliency(trained, x, sub.y), trained, tmp / "saliency.png"))
            att = attention_weights(trained, x, sub.y)
            if att:
                written.append(plot_attention(att, trained, tmp / "attention.png"))
        elif trained.name == "rf":
            written.append(plot_importances(rf_importances(trained), tmp / "importances.png"))
        else:
            log.info("%s: no interpretation figure for this model family", trained.name)
    log.info("%s: interpretation figures %s", trained.name, [p.name for p in written])
    return [Path(out_dir) / p.name for p in written]
