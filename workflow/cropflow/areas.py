"""Error-adjusted class areas with 95 % confidence intervals, from a class map and its test error matrix.

The stratified estimator of Olofsson et al. (2014, Remote Sensing of Environment 148:42-57, section 4 and
the numerical example of section 5), with the map classes as strata. In their notation, with ``i`` the map
class (row, stratum), ``j`` the reference class (column), ``n_ij`` sample counts, ``n_i.`` the samples of map
class ``i`` and ``W_i`` its share of the mapped area:

- Eq. 4: estimated error-matrix proportions ``p_ij = W_i n_ij / n_i.``;
- Eq. 1-3: overall accuracy ``O = sum_j p_jj``, user's accuracy ``U_i = p_ii / p_i.``, producer's accuracy
  ``P_j = p_jj / p_.j``;
- Eq. 5-7: their variances ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)``, ``V(U_i) = U_i (1 - U_i) /
  (n_i. - 1)`` and ``V(P_j) = [N_j.^2 (1 - P_j)^2 U_j (1 - U_j) / (n_j. - 1) + P_j^2 sum_{i != j} N_i.^2
  (n_ij / n_i.) (1 - n_ij / n_i.) / (n_i. - 1)] / N_.j^2`` with ``N_i.`` the mapped area of class ``i`` and
  ``N_.j = sum_i N_i. n_ij / n_i.`` the estimated reference area of class ``j``;
- Eq. 9-11: the class's area proportion ``p_.j = sum_i W_i n_ij / n_i.``, its standard error ``S(p_.j) =
  sqrt(sum_i W_i^2 (n_ij / n_i.) (1 - n_ij / n_i.) / (n_i. - 1))``, the error-adjusted area ``A_j = A p_.j``
  and ``S(A_j) = A S(p_.j)`` with ``A`` the mapped area; a 95 % interval is ``+- 1.96 S``.

Degradation, never a crash: a map class with mapped area but fewer than 2 test samples (``n_i. <= 1``) has no
variance estimate. With no sample its pixels are taken as correctly mapped (its row is the identity); its
user's accuracy is then NaN. Either way the intervals that depend on that stratum are NaN: its user's
accuracy, the overall accuracy, and the area and producer's intervals of its own class and of the reference
classes its one sample belongs to; the other classes' intervals leave the stratum out. A class without mapped
area has NaN user's accuracy (0/0) and contributes nothing to the areas; a class without estimated area has NaN
producer's accuracy. Each case is logged.

Per administrative unit the county error matrix is applied to the unit's mapped areas (the units' own weights
``W_i``): this assumes the classifier errs in each unit as in the whole test split.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cropflow.atomic import atomic_path
from cropflow.pixelcount import count_classes, count_classes_by_unit

log = logging.getLogger(__name__)

#: two-sided 95 % normal quantile
Z95 = 1.96
#: square metres per hectare
M2_PER_HA = 10_000.0
#: the unit name of the whole map
WHOLE_MAP = "aoi"


@dataclass(frozen=True)
class AreaEstimate:
    """Per class (in the order of the error matrix): mapped and error-adjusted areas (units of the mapped
    areas), the adjusted area's 95 % half-width, user's and producer's accuracy with their 95 % half-widths,
    the test samples of each map class; the overall accuracy and its 95 % half-width."""

    mapped: np.ndarray
    adjusted: np.ndarray
    ci95: np.ndarray
    users: np.ndarray
    users_ci95: np.ndarray
    producers: np.ndarray
    producers_ci95: np.ndarray
    samples: np.ndarray
    overall: float
    overall_ci95: float


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def row_shares(counts: np.ndarray) -> np.ndarray:
    """``n_ij / n_i.``: the reference-class shares within each map class (rows = map class). A map class
    without samples gets the identity row (its pixels are taken as correctly mapped)."""
    n = np.asarray(counts, dtype=np.float64)
    shares = _ratio(n, n.sum(axis=1, keepdims=True))
    empty = n.sum(axis=1) == 0
    shares[empty] = np.eye(len(n))[empty]
    return shares


def proportions(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Olofsson et al. (2014) Eq. 4: estimated area proportions ``p_ij = W_i n_ij / n_i.`` (rows = map class)."""
    return np.asarray(weights, dtype=np.float64)[:, None] * row_shares(counts)


def _stratum_variance(counts: np.ndarray) -> np.ndarray:
    """``s_ij = (n_ij / n_i.)(1 - n_ij / n_i.) / (n_i. - 1)``: the sampling variance of each cell's share
    within its stratum, NaN where the stratum has fewer than 2 samples."""
    n = np.asarray(counts, dtype=np.float64)
    rows = n.sum(axis=1, keepdims=True)
    q = row_shares(n)
    return np.where(rows > 1, q * (1.0 - q) / np.maximum(rows - 1.0, 1.0), np.nan)


def _without_empty_strata(variance: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Stratum variances with the unestimable ones (``n_i. <= 1``) set to 0 for the cells that cannot hold
    the class (no sample of it, not the stratum's own class) and NaN elsewhere: so an unreliable stratum
    makes NaN only the intervals of the classes it concerns. Strata without mapped area are 0."""
    out = variance.copy()
    bad = np.isnan(variance)
    concerned = (np.asarray(counts) > 0) | np.eye(len(counts), dtype=bool)
    out[bad & ~concerned] = 0.0
    out[np.asarray(weights) == 0] = 0.0
    return out


def estimate(counts: np.ndarray, mapped: np.ndarray) -> AreaEstimate:
    """Stratified estimates of Olofsson et al. (2014) from sample counts ``counts[i, j]`` (rows = map class
    ``i``, columns = reference class ``j``, same classes in the same order) and the mapped area of each class
    (any unit; the areas come back in it). Equations in the module docstring."""
    n = np.asarray(counts, dtype=np.float64)
    area = np.asarray(mapped, dtype=np.float64)
    k = len(area)
    if n.shape != (k, k):
        raise ValueError(f"error matrix of shape {n.shape} for {k} mapped classes")
    if (n < 0).any() or (area < 0).any():
        raise ValueError("sample counts and mapped areas must not be negative")
    total = area.sum()
    nan = np.full(k, np.nan)
    if total == 0:
        return AreaEstimate(area, np.zeros(k), nan, nan, nan, nan, nan, n.sum(axis=1), np.nan, np.nan)
    w = area / total
    samples = n.sum(axis=1)
    p = proportions(n, w)
    diag = np.diag(p)
    p_ref = p.sum(axis=0)                                              # Eq. 9
    variance = _without_empty_strata(_stratum_variance(n), n, w)
    se_p = np.sqrt((w[:, None] ** 2 * variance).sum(axis=0))          # Eq. 10
    users = _ratio(diag, p.sum(axis=1))                                # Eq. 2
    users[samples == 0] = np.nan
    producers = _ratio(diag, p_ref)                                    # Eq. 3
    overall = float(diag.sum())                                        # Eq. 1
    few = samples <= 1
    var_users = np.where(few, np.nan, users * (1.0 - users) / np.maximum(samples - 1.0, 1.0))  # Eq. 6
    var_overall = float(np.sum(np.where(w > 0, w ** 2 * var_users, 0.0)))                      # Eq. 5
    var_producers = _producers_variance(n, area, users, producers, variance)                  # Eq. 7
    return AreaEstimate(
        mapped=area,
        adjusted=total * p_ref,                                        # Eq. 11
        ci95=Z95 * total * se_p,
        users=users,
        users_ci95=Z95 * np.sqrt(var_users),
        producers=producers,
        producers_ci95=Z95 * np.sqrt(var_producers),
        samples=samples,
        overall=overall,
        overall_ci95=Z95 * float(np.sqrt(var_overall)),
    )


def _producers_variance(n: np.ndarray, area: np.ndarray, users: np.ndarray, producers: np.ndarray,
                        variance: np.ndarray) -> np.ndarray:
    """Olofsson et al. (2014) Eq. 7, with ``N_i.`` the mapped areas and ``variance`` the stratum variances
    ``s_ij`` (whose diagonal is ``U_j (1 - U_j) / (n_j. - 1)``)."""
    n_ref = (area[:, None] * row_shares(n)).sum(axis=0)               # N_.j
    own = area ** 2 * (1.0 - producers) ** 2 * np.diag(variance)
    off = variance * (area ** 2)[:, None]
    np.fill_diagonal(off, 0.0)
    own = np.where(area > 0, own, 0.0)
    return _ratio(own + producers ** 2 * off.sum(axis=0), n_ref ** 2)


def log_degradation(counts: np.ndarray, mapped: np.ndarray, names: Sequence[str], unit: str) -> None:
    """Log the classes whose estimates degrade (see the module docstring)."""
    samples = np.asarray(counts).sum(axis=1)
    for name, n_i, a in zip(names, samples, mapped, strict=True):
        if a > 0 and n_i == 0:
            log.warning("%s: class %s is mapped but has no test sample: its pixels are taken as correctly "
                        "mapped, its user's accuracy and the intervals depending on it are NaN", unit, name)
        elif a > 0 and n_i == 1:
            log.warning("%s: class %s is mapped but has 1 test sample: no variance estimate, the intervals "
                        "depending on it are NaN", unit, name)
        elif a == 0:
            log.info("%s: class %s is not mapped: no user's accuracy, no area of its own stratum", unit, name)


def estimate_table(counts: np.ndarray, mapped_px: dict[str, np.ndarray], names: Sequence[str],
                   pixel_ha: float) -> pd.DataFrame:
    """The areas table: one row per unit and class (units in the order of ``mapped_px``, the mapped pixel
    counts of each unit in the classes' order), areas in hectares."""
    frames = []
    for unit, pixels in mapped_px.items():
        log_degradation(counts, pixels, names, unit)
        est = estimate(counts, np.asarray(pixels, dtype=np.float64) * pixel_ha)
        frames.append(pd.DataFrame({
            "unit": unit, "class": list(names), "mapped_ha": est.mapped, "adjusted_ha": est.adjusted,
            "ci95_ha": est.ci95, "users_accuracy": est.users, "users_ci95": est.users_ci95,
            "producers_accuracy": est.producers, "producers_ci95": est.producers_ci95,
            "test_samples": est.samples.astype(int), "overall_accuracy": est.overall,
            "overall_ci95": est.overall_ci95,
        }))
    return pd.concat(frames, ignore_index=True)


def load_error_matrix(metrics_json: str | os.PathLike) -> tuple[np.ndarray, list[int], list[str]]:
    """Sample counts with rows = map (predicted) class and columns = reference class, the class ids and
    names, from a metrics JSON of ``cropflow evaluate`` (whose ``confusion`` has rows = reference)."""
    doc = json.loads(Path(metrics_json).read_text())
    try:
        confusion = np.asarray(doc["confusion"], dtype=np.float64)
        ids, names = [int(c) for c in doc["class_ids"]], [str(c) for c in doc["class_names"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{metrics_json} has no confusion matrix with class_ids and class_names ({err}): "
                         "rerun its 'evaluate' job") from err
    if confusion.shape != (len(ids), len(ids)):
        raise ValueError(f"{metrics_json}: confusion matrix of shape {confusion.shape} for {len(ids)} classes; "
                         "rerun its 'evaluate' job")
    return confusion.T, ids, names


def write_areas(table: pd.DataFrame, out_csv: str | os.PathLike) -> Path:
    """Write the areas table as CSV atomically (areas to 0.01 ha, accuracies to 4 decimals)."""
    rounded = table.round({c: 2 for c in ("mapped_ha", "adjusted_ha", "ci95_ha")}).round(4)
    with atomic_path(out_csv) as tmp:
        rounded.to_csv(tmp, index=False)
    return Path(out_csv)


def area_report(metrics_json: str | os.PathLike, class_map: str | os.PathLike, out_csv: str | os.PathLike, *,
                boundaries: str | os.PathLike | None = None, unit_field: str | None = None,
                window_rows: int = 1024) -> pd.DataFrame:
    """The areas table of a class map: the whole map (unit ``aoi``) and, with ``boundaries``, every unit
    named by ``unit_field``; written to ``out_csv``."""
    counts, ids, names = load_error_matrix(metrics_json)
    whole, pixel_ha = count_classes(class_map, ids, window_rows=window_rows, context=str(metrics_json))
    mapped = {WHOLE_MAP: whole}
    if boundaries:
        units = count_classes_by_unit(class_map, ids, boundaries, unit_field, window_rows=window_rows)
        if WHOLE_MAP in units:
            raise ValueError(f"{boundaries}: a unit is named {WHOLE_MAP!r}, the name of the whole map; rename it")
        mapped |= units
    table = estimate_table(counts, mapped, names, pixel_ha)
    write_areas(table, out_csv)
    whole_map = table[table["unit"] == WHOLE_MAP]
    for name, mapped_ha, adjusted_ha, ci95_ha in zip(whole_map["class"], whole_map["mapped_ha"],
                                                      whole_map["adjusted_ha"], whole_map["ci95_ha"], strict=True):
        log.info("%s: mapped %.1f ha, adjusted %.1f +- %.1f ha", name, mapped_ha, adjusted_ha, ci95_ha)
    log.info("areas of %d unit(s) written to %s", len(mapped), out_csv)
    return table
