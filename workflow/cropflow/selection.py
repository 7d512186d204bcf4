"""Feature-band selection: Boruta relevance, then Spearman rank-correlation redundancy (SCIENCE.md, Partition:
"Feature selection: Boruta (random-forest wrapper) for relevance, then Spearman rank correlation between the
selected features for redundancy").

Relevance (:func:`boruta_relevance`): Boruta (Kursa & Rudnicki 2010) as implemented by ``BorutaPy`` of the
``boruta`` package, on the features the random forest baseline sees: every input flattened time-major with
:func:`cropflow.models.rf.flatten_inputs` (one feature per input, time step and band). Each iteration adds a
permuted copy ("shadow") of every feature, fits a random forest and counts a hit for a feature whose importance
beats the best shadow; a two-step test (FDR, then Bonferroni over iterations) confirms or rejects it. The
per-feature decisions are grouped per band: **a band is relevant (confirmed) when any of its time steps is
confirmed**, tentative when none is confirmed but one is tentative (BorutaPy's rough fix: median importance above
the median best shadow), rejected otherwise.

Redundancy (:func:`spearman_redundancy`): Spearman's rho between bands, each band's values pooled over samples
and time steps; bands are visited in order of Boruta importance and a band is dropped when |rho| with an already
kept band exceeds the threshold.

Bands are named ``"<input>/<band>"`` (the same band name may occur in several inputs, e.g. VV of two tracks).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from cropflow.atomic import atomic_path
from cropflow.models.rf import flatten_inputs
from cropflow.sampleset import SampleSet

log = logging.getLogger(__name__)

BandKey = tuple[str, str]
RELEVANCE_COLUMNS = ["input", "band", "decision", "rank", "mean_importance", "max_importance",
                     "confirmed_times", "tentative_times"]


def band_label(key: BandKey) -> str:
    """The ``"<input>/<band>"`` label of a band."""
    return f"{key[0]}/{key[1]}"


def band_names(samples: SampleSet, name: str) -> list[str]:
    """The band names of input ``name`` (``c0, c1, ...`` when the metadata has none)."""
    bands = samples.inputs.get(name, {}).get("bands")
    return [str(b) for b in bands] if bands else [f"c{i}" for i in range(samples.x[name].shape[2])]


def feature_index(samples: SampleSet) -> pd.DataFrame:
    """(input, band, time_index) of every column of ``flatten_inputs(samples.x)`` (sorted inputs, time-major)."""
    rows = []
    for name in sorted(samples.x):
        t, c = samples.x[name].shape[1:]
        bands = band_names(samples, name)
        rows += [(name, bands[j], i) for i in range(t) for j in range(c)]
    return pd.DataFrame(rows, columns=["input", "band", "time_index"])


def _resolve(samples: SampleSet, band: BandKey | str) -> BandKey:
    """An (input, band) pair from a pair, an ``"<input>/<band>"`` label or a band name unique over the inputs."""
    if isinstance(band, str):
        if "/" in band:
            name, _, b = band.partition("/")
            key = (name, b)
        else:
            hits = [(n, band) for n in sorted(samples.x) if band in band_names(samples, n)]
            if len(hits) != 1:
                raise ValueError(f"band '{band}' is in {len(hits)} inputs; name it as '<input>/<band>'")
            key = hits[0]
    else:
        key = (str(band[0]), str(band[1]))
    if key[0] not in samples.x or key[1] not in band_names(samples, key[0]):
        raise ValueError(f"band {band_label(key)} is not in the samples (inputs {sorted(samples.x)})")
    return key


# --------------------------------------------------------------------------------------------------- relevance


def boruta_features(samples: SampleSet, seed: int, max_iter: int = 50, n_estimators: int | str = "auto",
                    max_depth: int | None = 5, alpha: float = 0.05, n_jobs: int = -1) -> pd.DataFrame:
    """Boruta (BorutaPy) on the flattened (input, time, band) features; one row per feature.

    The wrapped model is a random forest with balanced class weights and ``max_depth`` (BorutaPy's advice;
    ``n_estimators="auto"`` sizes the forest from the number of features still undecided). Samples with a
    missing (non-finite) value are left out and counted in the log. Columns: input, band, time_index,
    decision (confirmed / tentative / rejected), rank (BorutaPy ranking, 1 = confirmed), mean_importance (mean
    impurity importance over the iterations in which the feature was still tested).
    """
    from boruta import BorutaPy
    from sklearn.ensemble import RandomForestClassifier

    features = flatten_inputs(samples.x).astype(np.float32)
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        log.warning("boruta: left out %d of %d samples with missing values", int((~finite).sum()), finite.size)
    features, y = features[finite], np.asarray(samples.y)[finite]
    if np.unique(y).size < 2:
        raise ValueError(f"boruta: need samples of at least 2 classes, got {np.unique(y).tolist()}")
    forest = RandomForestClassifier(max_depth=max_depth, class_weight="balanced", n_jobs=n_jobs)
    selector = BorutaPy(forest, n_estimators=n_estimators, alpha=alpha, max_iter=int(max_iter),
                        random_state=int(seed), verbose=0)
    selector.fit(features, y)
    decision = np.where(selector.support_, "confirmed", np.where(selector.support_weak_, "tentative", "rejected"))
    with np.errstate(all="ignore"):
        history = np.asarray(selector.importance_history_[1:], dtype=np.float64)  # row 0 is BorutaPy's zeros
        mean_imp = np.where(np.isfinite(history).any(axis=0), np.nanmean(history, axis=0), 0.0)
    out = feature_index(samples)
    out["decision"] = decision
    out["rank"] = np.asarray(selector.ranking_, dtype=int)
    out["mean_importance"] = mean_imp
    log.info("boruta: %d features, %d samples, %d iterations: %d confirmed, %d tentative", out.shape[0],
             y.size, history.shape[0], int(selector.support_.sum()), int(selector.support_weak_.sum()))
    return out


def group_bands(features: pd.DataFrame) -> pd.DataFrame:
    """Per-band relevance from per-feature Boruta decisions: confirmed when any time step is confirmed, else
    tentative when any is tentative, else rejected. ``rank`` is the best rank of the band's time steps,
    ``mean_importance`` the sum over time steps of the features' mean importances, ``max_importance`` that of its
    best time step; sorted by decision, then importance."""
    order = {"confirmed": 0, "tentative": 1, "rejected": 2}
    rows = []
    for (name, band), g in features.groupby(["input", "band"], sort=False):
        best = min(g["decision"], key=order.__getitem__)
        rows.append({
            "input": name, "band": band, "decision": best, "rank": int(g["rank"].min()),
            "mean_importance": float(g["mean_importance"].sum()), "max_importance": float(g["mean_importance"].max()),
            "confirmed_times": [int(t) for t in g.loc[g["decision"] == "confirmed", "time_index"]],
            "tentative_times": [int(t) for t in g.loc[g["decision"] == "tentative", "time_index"]],
        })
    out = pd.DataFrame(rows, columns=RELEVANCE_COLUMNS)
    out["_order"] = out["decision"].map(order)
    out = out.sort_values(["_order", "mean_importance"], ascending=[True, False], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def boruta_relevance(samples: SampleSet, seed: int, max_iter: int = 50, n_estimators: int | str = "auto",
                     **kwargs) -> pd.DataFrame:
    """Boruta relevance per band: :func:`boruta_features` grouped by :func:`group_bands`.

    One row per (input, band): decision (confirmed / tentative / rejected; a band is relevant when any of its
    time steps is confirmed), rank, mean_importance, max_importance and the confirmed / tentative time indices.
    ``kwargs`` go to :func:`boruta_features` (max_depth, alpha, n_jobs).
    """
    return group_bands(boruta_features(samples, seed, max_iter, n_estimators, **kwargs))


# --------------------------------------------------------------------------------------------------- redundancy


def _spearman_matrix(values: np.ndarray) -> np.ndarray:
    """Spearman's rho between the columns of ``values`` (M, B); pairwise-complete when values are missing."""
    if np.isfinite(values).all():
        ranks = rankdata(values, axis=0)
        with np.errstate(all="ignore"):
            rho = np.corrcoef(ranks, rowvar=False)
        return np.atleast_2d(rho)
    frame = pd.DataFrame(np.where(np.isfinite(values), values, np.nan))
    return frame.corr(method="spearman").to_numpy()


def band_correlation(samples: SampleSet, bands: Sequence[BandKey | str]) -> pd.DataFrame:
    """Spearman's rho between bands (DataFrame indexed by ``"<input>/<band>"`` labels).

    Bands of inputs with the same number of time steps are compared on their values pooled over samples and
    time steps (N*T pairs); bands of inputs with different time steps have no common time axis and are compared
    on the per-sample temporal means (N pairs). Missing values are left out pairwise; a constant band has an
    undefined (NaN) rho.
    """
    keys = [_resolve(samples, b) for b in bands]
    labels = [band_label(k) for k in keys]
    if len(set(labels)) != len(labels):
        raise ValueError(f"band_correlation: duplicate bands in {labels}")
    col = {k: band_names(samples, k[0]).index(k[1]) for k in keys}
    rho = np.full((len(keys), len(keys)), np.nan)
    steps = np.array([samples.x[k[0]].shape[1] for k in keys])
    if np.unique(steps).size > 1:  # cross-input pairs on per-sample temporal means
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series: mean NaN, left out pairwise
            means = np.stack([np.nanmean(samples.x[k[0]][:, :, col[k]], axis=1) for k in keys], axis=1)
        rho[:] = _spearman_matrix(means)
    for t in np.unique(steps):
        idx = np.flatnonzero(steps == t)
        pooled = np.stack([samples.x[keys[i][0]][:, :, col[keys[i]]].reshape(-1) for i in idx], axis=1)
        rho[np.ix_(idx, idx)] = _spearman_matrix(pooled.astype(np.float64))
    np.fill_diagonal(rho, 1.0)
    return pd.DataFrame(rho, index=labels, columns=labels)


def greedy_redundancy(corr: pd.DataFrame, order: Sequence[str], threshold: float = 0.9
                      ) -> tuple[list[str], dict[str, tuple[str, float]]]:
    """Greedy redundancy filter: visit ``order`` (most important first), keep a band unless |rho| with an
    already kept band exceeds ``threshold``. Returns (kept labels, {dropped label: (kept label, rho)}), the
    kept label being the first kept band it correlates with above the threshold."""
    kept: list[str] = []
    dropped: dict[str, tuple[str, float]] = {}
    for label in order:
        match = next((k for k in kept if np.isfinite(corr.at[label, k]) and abs(corr.at[label, k]) > threshold),
                     None)
        if match is None:
            kept.append(label)
        else:
            dropped[label] = (match, float(corr.at[label, match]))
    return kept, dropped


def spearman_redundancy(samples: SampleSet, bands: Sequence[BandKey | str], threshold: float = 0.9
                        ) -> tuple[list[BandKey], pd.DataFrame]:
    """Spearman redundancy filter over ``bands`` given in order of Boruta importance (most important first).

    ``bands`` are (input, band) pairs, ``"<input>/<band>"`` labels or band names unique over the inputs.
    Returns the kept (input, band) pairs in that order and the correlation matrix of :func:`band_correlation`.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"spearman_redundancy: threshold must be in [0, 1], got {threshold}")
    keys = [_resolve(samples, b) for b in bands]
    corr = band_correlation(samples, keys)
    kept, _ = greedy_redundancy(corr, [band_label(k) for k in keys], threshold)
    by_label = {band_label(k): k for k in keys}
    return [by_label[label] for label in kept], corr


# --------------------------------------------------------------------------------------------------- both steps


def select_bands(samples: SampleSet, seed: int, threshold: float = 0.9, max_iter: int = 50,
                 keep_tentative: bool = False, **kwargs) -> dict:
    """Boruta relevance then Spearman redundancy.

    Returns ``{"selected": {input: [bands]}, "relevance": [per-band records of boruta_relevance],
    "dropped": {"<input>/<band>": reason}, "correlation": {label: {label: rho}}}``. Bands rejected by Boruta
    (and tentative ones unless ``keep_tentative``) are dropped with the Boruta decision as reason; the
    relevant bands are filtered by :func:`greedy_redundancy` in order of decreasing summed importance, a
    dropped band's reason naming the kept band it duplicates. ``kwargs`` go to :func:`boruta_features`.
    """
    relevance = boruta_relevance(samples, seed, max_iter=max_iter, **kwargs)
    accepted = {"confirmed", "tentative"} if keep_tentative else {"confirmed"}
    dropped: dict[str, str] = {}
    candidates: list[BandKey] = []
    for row in relevance.itertuples(index=False):
        key = (row.input, row.band)
        if row.decision in accepted:
            candidates.append(key)
        else:
            dropped[band_label(key)] = f"Boruta: {row.decision} (no time step confirmed)"
    corr = band_correlation(samples, candidates) if candidates else pd.DataFrame()
    kept, redundant = greedy_redundancy(corr, [band_label(k) for k in candidates], threshold)
    for label, (match, rho) in redundant.items():
        dropped[label] = f"redundant with {match} (Spearman rho {rho:.3f}, |rho| > {threshold})"
    selected: dict[str, list[str]] = {name: [] for name in sorted(samples.x)}
    for label in kept:
        name, _, band = label.partition("/")
        selected[name].append(band)
    selected = {name: [b for b in band_names(samples, name) if b in kept_bands]  # the samples' band order
                for name, kept_bands in selected.items()}
    log.info("band selection: kept %s; dropped %s", kept, dropped)
    return {
        "selected": selected,
        "relevance": relevance.to_dict(orient="records"),
        "dropped": dropped,
        "correlation": {r: {c: (None if not np.isfinite(v) else float(v)) for c, v in row.items()}
                        for r, row in corr.to_dict(orient="index").items()},
    }


# --------------------------------------------------------------------------------------------------- figure


def plot_correlation(corr: pd.DataFrame, path: str | os.PathLike, title: str = "Spearman rho between bands") -> Path:
    """Heatmap of a band correlation matrix (labels on both axes, values printed when few bands), written
    atomically as PNG."""
    from matplotlib.figure import Figure

    n = corr.shape[0]
    size = min(2.0 + 0.45 * n, 20.0)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(corr.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), [str(c) for c in corr.columns], rotation=90, fontsize=8)
    ax.set_yticks(range(n), [str(i) for i in corr.index], fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                v = corr.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="rho")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


__all__ = ["band_correlation", "band_label", "boruta_features", "boruta_relevance", "feature_index",
           "greedy_redundancy", "group_bands", "plot_correlation", "select_bands", "spearman_redundancy"]


def write_selection(samples: SampleSet, seed: int, threshold: float, max_iter: int, out_json: str | os.PathLike,
                    out_csv: str | os.PathLike, out_png: str | os.PathLike) -> dict:
    """Run :func:`select_bands` and write the band list with the reasons (JSON; ``samples.bands`` reads its
    ``selected``), the relevance table (CSV) and the correlation heatmap (PNG), all atomically."""
    import json

    result = select_bands(samples, seed, threshold=threshold, max_iter=max_iter)
    corr = pd.DataFrame(result.pop("correlation"))
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps({"selected": result["selected"], "dropped": result["dropped"],
                                   "threshold": threshold, "seed": seed}, indent=2) + "\n")
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(result["relevance"]).to_csv(tmp, index=False)
    if corr.empty:
        corr = pd.DataFrame([[1.0]], index=["none"], columns=["none"])
    plot_correlation(corr, out_png)
    n = sum(len(v) for v in result["selected"].values())
    log.info("band selection: %d bands kept %s, %d dropped", n, result["selected"], len(result["dropped"]))
    return result


def load_selection(path: str | os.PathLike) -> dict[str, list[str]]:
    """The ``selected`` {input: [bands]} of a selection JSON written by :func:`write_selection`."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"band selection {path} (samples.bands) does not exist: run the select rule "
                                "(selection.enabled) and copy its results/selection/bands.json, or set samples.bands: ''")
    doc = json.loads(path.read_text())
    if "selected" not in doc or not isinstance(doc["selected"], dict):
        raise ValueError(f"{path}: not a band selection (no 'selected' mapping of input -> bands)")
    return {str(k): [str(b) for b in v] for k, v in doc["selected"].items()}
