"""Per-pixel uncertainty of a classification from its class probabilities: confidence, margin, entropy.

The per-tile uncertainty map (``{tile}_uncertainty.tif``) stores the three measures as uint8 bands
``confidence``, ``margin``, ``entropy``, each round(254 * x) for x in [0, 1], with 255 as nodata where the
class map is nodata.
"""

from __future__ import annotations

import numpy as np

#: band names of the uncertainty map, in band order
BANDS = ("confidence", "margin", "entropy")
#: value of a pixel without a class in every band
NODATA = 255
#: the uint8 value of x = 1
SCALE = 254


def confidence(proba: np.ndarray) -> np.ndarray:
    """Maximum class probability, c = max_k p_k, of (N, K) probabilities: (N,)."""
    return proba.max(axis=1) if proba.shape[1] else np.zeros(proba.shape[0], proba.dtype)


def margin(proba: np.ndarray) -> np.ndarray:
    """Best-versus-second-best margin, m = p_(1) - p_(2) (largest minus second largest probability): (N,).

    With a single class the second probability is taken as 0.
    """
    if proba.shape[1] < 2:
        return confidence(proba)
    top = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def normalised_entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by its maximum, H = -sum_k p_k ln p_k / ln K (0 ln 0 = 0), in [0, 1]: (N,).

    With a single class (ln K = 0) the entropy is 0.
    """
    k = proba.shape[1]
    if k < 2:
        return np.zeros(proba.shape[0], dtype=np.float32)
    p = np.clip(proba, 0.0, 1.0)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return (terms.sum(axis=1) / np.log(k)).astype(np.float32)


def uncertainty_bands(proba: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The uint8 uncertainty bands (3, N) of (N, K) probabilities: round(254 * x) per measure of
    :data:`BANDS`, clipped to [0, 254]; :data:`NODATA` where ``valid`` (N,) is False."""
    measures = np.stack([confidence(proba), margin(proba), normalised_entropy(proba)])
    out = np.rint(np.clip(measures, 0.0, 1.0) * SCALE).astype(np.uint8)
    out[:, ~np.asarray(valid, dtype=bool)] = NODATA
    return out
