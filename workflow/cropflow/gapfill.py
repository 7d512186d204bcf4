"""Gap filling of feature time series: temporal linear interpolation and spatial k-nearest-neighbour imputation.

Gaps are clouds, cloud shadows, swath edges and the time steps at which a sensor did not acquire
(chronological stacking). They are filled, never set to zero; pixels with no observation at all
in the season stay NaN and are treated as no data downstream.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


#: above this many distinct validity patterns, gaps are filled elementwise instead of by pattern
MAX_PATTERNS = 256


def interpolation_weights(obs_days: np.ndarray, valid: np.ndarray, target_days: np.ndarray) -> np.ndarray:
    """The (T, D) matrix W with out = W @ obs for one pixel whose valid observations are ``valid`` (D,).

    For a target day t between valid observations at t0 <= t <= t1:
    v(t) = v(t0) + (v(t1) - v(t0)) (t - t0) / (t1 - t0), i.e. weights (t1 - t)/(t1 - t0) on t0 and
    (t - t0)/(t1 - t0) on t1 (a target on an observation day takes it with weight 1); beyond the first
    or last valid observation the nearest one gets weight 1. Without any valid observation every row is NaN.
    """
    obs_days = np.asarray(obs_days, dtype=np.float64)
    target_days = np.asarray(target_days, dtype=np.float64)
    weights = np.zeros((target_days.size, obs_days.size), dtype=np.float64)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return np.full_like(weights, np.nan)
    days = obs_days[idx]
    nxt = np.clip(np.searchsorted(days, target_days, side="left"), 0, idx.size - 1)
    prv = np.clip(np.searchsorted(days, target_days, side="right") - 1, 0, idx.size - 1)
    span = days[nxt] - days[prv]
    w_next = np.where(span > 0, (target_days - days[prv]) / np.where(span > 0, span, 1.0), 0.0)
    w_next = np.where(target_days <= days[0], 0.0, np.where(target_days >= days[-1], 1.0, w_next))
    rows = np.arange(target_days.size)
    np.add.at(weights, (rows, idx[prv]), 1.0 - w_next)
    np.add.at(weights, (rows, idx[nxt]), w_next)
    return weights


def _fill_dense(flat: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fill the NaNs of (T, N) series along T (same rule as :func:`interpolation_weights`), elementwise.

    Used when pixels share too few validity patterns for the grouped matrix products to pay off.
    """
    valid = np.isfinite(flat)
    steps = np.arange(flat.shape[0])[:, None]
    # index of the last valid step at or before t, and of the first valid step at or after t
    prev_idx = np.maximum.accumulate(np.where(valid, steps, -1), axis=0)
    next_idx = np.minimum.accumulate(np.where(valid, steps, flat.shape[0])[::-1], axis=0)[::-1]
    has_prev, has_next = prev_idx >= 0, next_idx < flat.shape[0]
    cols = np.broadcast_to(np.arange(flat.shape[1]), flat.shape)
    p = np.clip(prev_idx, 0, flat.shape[0] - 1)
    n = np.clip(next_idx, 0, flat.shape[0] - 1)
    v_prev, v_next = flat[p, cols], flat[n, cols]
    t_prev, t_next = t[p], t[n]
    span = np.where(t_next > t_prev, t_next - t_prev, 1.0)
    w = np.clip((t[:, None] - t_prev) / span, 0.0, 1.0)
    both = has_prev & has_next
    filled = np.where(both, v_prev + (v_next - v_prev) * w, np.where(has_prev, v_prev, v_next))
    filled = np.where(has_prev | has_next, filled, np.nan)
    return np.where(valid, flat, filled).astype(np.float32)


def interpolate_onto(values: np.ndarray, obs_days: np.ndarray, target_days: np.ndarray) -> np.ndarray:
    """Interpolate (D, ...) observations linearly in time onto ``target_days``: (T, ...), NaN = missing.

    Every pixel's series is mapped by the linear operator of :func:`interpolation_weights` for its own
    pattern of valid observations. Pixels are grouped by that pattern (clear-sky sources have one or a
    few), so the work is one small float32 matrix product per pattern over all of its pixels.
    """
    v = np.asarray(values, dtype=np.float32)
    obs_days = np.asarray(obs_days, dtype=np.float64)
    target_days = np.asarray(target_days, dtype=np.float64)
    if v.shape[0] != obs_days.size:
        raise ValueError(f"{v.shape[0]} time steps but {obs_days.size} dates")
    if np.any(np.diff(obs_days) <= 0):
        raise ValueError("observation dates must be strictly increasing")
    flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:], dtype=np.int64)))
    out = np.full((target_days.size, flat.shape[1]), np.nan, dtype=np.float32)
    if flat.shape[1] == 0 or flat.shape[0] == 0:
        return out.reshape(target_days.size, *v.shape[1:])
    valid = np.isfinite(flat)
    if valid.shape[0] <= 63:  # one integer code per pixel: a 1-D unique is much faster than unique rows
        codes = (valid.T.astype(np.uint64) << np.arange(valid.shape[0], dtype=np.uint64)).sum(axis=1)
        patterns, group = np.unique(codes, return_inverse=True)
    else:
        patterns, group = np.unique(np.packbits(valid, axis=0).T, axis=0, return_inverse=True)
    if len(patterns) > MAX_PATTERNS:
        axis = np.union1d(obs_days, target_days)
        full = np.full((axis.size, flat.shape[1]), np.nan, dtype=np.float32)
        full[np.searchsorted(axis, obs_days)] = flat
        return _fill_dense(full, axis)[np.searchsorted(axis, target_days)].reshape(target_days.size, *v.shape[1:])
    order = np.argsort(group.ravel(), kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(group.ravel(), minlength=len(patterns)))]
    for k in range(len(patterns)):
        cols = order[bounds[k]:bounds[k + 1]]
        mask = valid[:, cols[0]]
        if not mask.any():
            continue
        w = interpolation_weights(obs_days, mask, target_days).astype(np.float32)
        out[:, cols] = w[:, mask] @ flat[np.ix_(mask, cols)]
    return out.reshape(target_days.size, *v.shape[1:])


def interpolate_time(values: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Fill NaNs along axis 0 by linear interpolation in time, nearest value beyond the first/last observation.

    ``values`` is (T, ...) and ``days`` the (T,) acquisition times in days: the series interpolated onto
    its own dates (:func:`interpolate_onto`), so observed values are kept and gaps filled. Series without
    any observation stay NaN.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.shape[0] != np.asarray(days).shape[0]:
        raise ValueError(f"{v.shape[0]} time steps but {np.asarray(days).shape[0]} dates")
    return interpolate_onto(v, days, days)


def knn_fill(layer: np.ndarray, k: int = 4) -> np.ndarray:
    """Fill NaN pixels of a 2-D layer with the mean of the ``k`` nearest valid pixels (Euclidean, in pixels).

    The study imputed missing values with KNN (k = 4); here the neighbours are the nearest valid pixels
    of the same date and band. A layer with fewer than ``k`` valid pixels is returned unchanged (its
    gaps are then filled in time).
    """
    out = np.asarray(layer, dtype=np.float32).copy()
    missing = ~np.isfinite(out)
    n_valid = out.size - int(missing.sum())
    if not missing.any() or n_valid < k:
        return out
    valid_rc = np.argwhere(~missing)
    tree = cKDTree(valid_rc)
    _, idx = tree.query(np.argwhere(missing), k=k)
    idx = idx.reshape(-1, k)
    values = out[~missing][idx]
    out[missing] = values.mean(axis=1)
    return out
