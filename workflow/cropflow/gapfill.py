"""Gap filling of feature time series: temporal linear interpolation and spatial k-nearest-neighbour imputation.

Gaps are clouds, cloud shadows, swath edges and the time steps at which a sensor did not acquire
(chronological stacking). They are filled, never set to zero; pixels with no observation at all
in the season stay NaN and are treated as no data downstream.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def interpolate_time(values: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Fill NaNs along axis 0 by linear interpolation in time, nearest value beyond the first/last observation.

    ``values`` is (T, ...) and ``days`` the (T,) acquisition times in days. For a gap at time t between
    observations at t0 < t < t1: v(t) = v(t0) + (v(t1) - v(t0)) (t - t0) / (t1 - t0). Series without any
    observation stay NaN. Vectorised over all trailing axes.
    """
    v = np.asarray(values, dtype=np.float32)
    t = np.asarray(days, dtype=np.float64)
    if v.shape[0] != t.shape[0]:
        raise ValueError(f"{v.shape[0]} time steps but {t.shape[0]} dates")
    if v.shape[0] == 0:
        return v.copy()
    flat = v.reshape(v.shape[0], -1)
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
    out = np.where(valid, flat, filled).astype(np.float32)
    return out.reshape(v.shape)


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
