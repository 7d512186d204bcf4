"""Multilooking and the Refined Lee filter for dual-pol covariance (C2) images.

Refined Lee: J.-S. Lee, M. R. Grunes, G. de Grandi, "Polarimetric SAR speckle filtering and its implication
for classification", IEEE TGRS 37(5), 1999, Section III: in a 7x7 window, nine 3x3 sub-window means of the
span, four directional gradients on those means select the edge direction, the side closer to the centre
selects one of eight edge-aligned half windows; in it the local-statistics MMSE weight
b = var(x) / var(y), var(x) = (var(y) - mean(y)^2 sigma_v^2) / (1 + sigma_v^2), sigma_v^2 = 1 / L, gives
C_hat = mean(C) + b (C - mean(C)) for every element of C with the same b.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)


def multilook(x: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Block average over (az, rg) ``factors`` (boxcar + decimation); trailing lines/samples that do not fill
    a block are dropped; NaN samples are ignored, an all-NaN block is NaN."""
    fa, fr = (int(f) for f in factors)
    if fa < 1 or fr < 1:
        raise ValueError(f"multilook factors must be positive, got {factors}")
    h, w = x.shape[0] // fa, x.shape[1] // fr
    if h == 0 or w == 0:
        raise ValueError(f"image {x.shape} is smaller than the multilook factors {factors}")
    blocks = np.asarray(x)[: h * fa, : w * fr].reshape(h, fa, w, fr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def covariance_c2(s_vv: np.ndarray, s_vh: np.ndarray, factors: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, ...]:
    """Multilooked dual-pol covariance elements C11 = <|VV|^2>, C22 = <|VH|^2>, C12 = <VV VH*>."""
    return (
        multilook(np.abs(s_vv) ** 2, factors),
        multilook(np.abs(s_vh) ** 2, factors),
        multilook(s_vv * np.conj(s_vh), factors),
    )


def _directional_masks(size: int) -> np.ndarray:
    """Eight edge-aligned half windows of a size x size window (each includes the edge line through the
    centre): left/right (vertical edge), top/bottom (horizontal), two per diagonal. Order matches
    ``_side_means``: [left, right, upper-right, lower-left, top, bottom, upper-left, lower-right]."""
    i, j = np.mgrid[0:size, 0:size]
    c = size // 2
    return np.stack(
        [j <= c, j >= c, j >= i, j <= i, i <= c, i >= c, i + j <= 2 * c, i + j >= 2 * c]
    ).astype(np.float64)


def _sub_window_means(span: np.ndarray, size: int) -> np.ndarray:
    """The nine 3x3 sub-window means of the span in a size x size window, as (3, 3, H, W) (stride (size-3)/2)."""
    m3 = ndimage.uniform_filter(span, size=3, mode="reflect")
    step = (size - 3) // 2
    out = np.empty((3, 3) + span.shape)
    for a in range(3):
        for b in range(3):
            out[a, b] = ndimage.shift(m3, (-(a - 1) * step, -(b - 1) * step), order=0, mode="nearest")
    return out


def _choose_window(m: np.ndarray) -> np.ndarray:
    """Index (0..7) of the directional window per pixel from the 3x3 sub-window means (Lee 1999, Fig. 3)."""
    grad = np.stack(
        [
            np.abs(m[:, 2].sum(0) - m[:, 0].sum(0)),  # vertical edge (horizontal gradient)
            np.abs(m[0, 2] + m[0, 1] + m[1, 2] - m[2, 0] - m[1, 0] - m[2, 1]),  # edge along main diagonal
            np.abs(m[0].sum(0) - m[2].sum(0)),  # horizontal edge
            np.abs(m[0, 0] + m[0, 1] + m[1, 0] - m[2, 2] - m[1, 2] - m[2, 1]),  # edge along anti-diagonal
        ]
    )
    direction = np.argmax(grad, axis=0)
    centre = m[1, 1]
    sides = np.stack(
        [
            (m[1, 0], m[1, 2]),  # left, right
            (m[0, 2], m[2, 0]),  # upper-right, lower-left
            (m[0, 1], m[2, 1]),  # top, bottom
            (m[0, 0], m[2, 2]),  # upper-left, lower-right
        ]
    )
    d = np.abs(sides - centre)  # (4, 2, H, W)
    second = np.take_along_axis(d, direction[None, None], axis=0)[0]
    side = (second[1] < second[0]).astype(np.int64)
    return 2 * direction + side


def refined_lee(
    c11: np.ndarray, c22: np.ndarray, c12: np.ndarray, looks: float, window: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refined Lee filter of a C2 image (Lee et al. 1999), one weight per pixel for all elements.

    ``looks`` is the number of looks L of the input (sigma_v^2 = 1/L). NaN pixels are excluded from the
    window statistics and stay NaN. Vectorised: each directional mean is a normalised convolution."""
    if window < 5 or window % 2 == 0:
        raise ValueError(f"Refined Lee window must be odd and >= 5, got {window}")
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    c11 = np.asarray(c11, dtype=np.float64)
    c22 = np.asarray(c22, dtype=np.float64)
    c12 = np.asarray(c12, dtype=np.complex128)
    valid = np.isfinite(c11) & np.isfinite(c22) & np.isfinite(c12)
    span = np.where(valid, c11 + c22, 0.0)
    vf = valid.astype(np.float64)
    # sub-window means on a NaN-free span (invalid pixels filled by the mean of their valid neighbours)
    fill = ndimage.uniform_filter(span, 3) / np.maximum(ndimage.uniform_filter(vf, 3), 1e-12)
    choice = _choose_window(_sub_window_means(np.where(valid, span, fill), window))

    fields = {
        "y": span,
        "y2": span**2,
        "c11": np.where(valid, c11, 0.0),
        "c22": np.where(valid, c22, 0.0),
        "c12r": np.where(valid, c12.real, 0.0),
        "c12i": np.where(valid, c12.imag, 0.0),
    }
    means = {k: np.empty(span.shape) for k in fields}
    for k_mask, mask in enumerate(_directional_masks(window)):
        sel = choice == k_mask
        if not sel.any():
            continue
        n = ndimage.correlate(vf, mask, mode="constant")[sel]
        for k, f in fields.items():
            means[k][sel] = ndimage.correlate(f, mask, mode="constant")[sel] / np.maximum(n, 1e-12)
    var_y = np.maximum(means["y2"] - means["y"] ** 2, 0.0)
    sv2 = 1.0 / looks
    var_x = (var_y - means["y"] ** 2 * sv2) / (1.0 + sv2)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.clip(np.where(var_y > 0, var_x / var_y, 0.0), 0.0, 1.0)
    out11 = means["c11"] + b * (fields["c11"] - means["c11"])
    out22 = means["c22"] + b * (fields["c22"] - means["c22"])
    m12 = means["c12r"] + 1j * means["c12i"]
    out12 = m12 + b * (np.where(valid, c12, 0) - m12)
    out11[~valid] = np.nan
    out22[~valid] = np.nan
    out12[~valid] = np.nan
    return out11, out22, out12
