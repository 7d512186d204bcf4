"""Interferometric coherence with a window-size-independent boxcar, and the sample-coherence bias.

gamma = |sum_w s1 s2*| / sqrt(sum_w |s1|^2 sum_w |s2|^2)  (e.g. Touzi et al. 1999, Eq. 2), the sums over an
(azimuth x range) boxcar computed from cumulative sums (summed-area tables), so the cost per pixel does not
depend on the window size.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp


def box_sum(x: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Sum of ``x`` over a centred (az, rg) window at every pixel (zeros beyond the image), from a summed-area
    table S: box = S[i+a] - S[i] along each axis (the 2-D table factorises into two 1-D cumulative sums,
    which keeps the float64 round-off of large images small). Cost O(1) per pixel for any window."""
    wa, wr = (int(w) for w in window)
    if wa < 1 or wr < 1:
        raise ValueError(f"window must be positive, got {window}")
    acc = np.complex128 if np.iscomplexobj(x) else np.float64
    out = np.asarray(x)
    for axis, w in ((0, wa), (1, wr)):
        before = w // 2
        n = out.shape[axis]
        shape = list(out.shape)
        shape[axis] = n + w
        c = np.zeros(shape, dtype=acc)
        inner = [slice(None), slice(None)]
        inner[axis] = slice(before + 1, before + 1 + n)
        np.cumsum(out, axis=axis, dtype=acc, out=c[tuple(inner)])
        tail = [slice(None), slice(None)]
        tail[axis] = slice(before + 1 + n, None)
        last = [slice(None), slice(None)]
        last[axis] = slice(before + n, before + n + 1)
        c[tuple(tail)] = c[tuple(last)]
        hi = [slice(None), slice(None)]
        lo = [slice(None), slice(None)]
        hi[axis] = slice(w, w + n)
        lo[axis] = slice(0, n)
        out = c[tuple(hi)] - c[tuple(lo)]
    return out


def coherence(
    s1: np.ndarray,
    s2: np.ndarray,
    window: tuple[int, int] = (3, 10),
    *,
    flat_phase: np.ndarray | None = None,
    complex_output: bool = False,
) -> np.ndarray:
    """Sample coherence of two co-registered complex images over a boxcar ``window`` (az, rg).

    ``flat_phase`` (radians, same shape) is removed first: s2 <- s2 exp(-j phi) (flat-earth/topographic phase
    compensation). Non-finite samples in either image are excluded from all three sums; a window with no
    valid sample gives NaN. Returns |gamma| as float32, or the complex gamma (complex64) with
    ``complex_output``."""
    s1 = np.asarray(s1)
    s2 = np.asarray(s2)
    if s1.shape != s2.shape or s1.ndim != 2:
        raise ValueError(f"coherence needs two 2-D images of one shape, got {s1.shape} and {s2.shape}")
    if flat_phase is not None:
        if np.shape(flat_phase) != s1.shape:
            raise ValueError(f"flat_phase shape {np.shape(flat_phase)} differs from the images {s1.shape}")
        s2 = s2 * np.exp(-1j * np.asarray(flat_phase))
    valid = np.isfinite(s1) & np.isfinite(s2)
    a = np.where(valid, s1, 0)
    b = np.where(valid, s2, 0)
    num = box_sum(a * np.conj(b), window)
    p1 = box_sum(np.abs(a) ** 2, window)
    p2 = box_sum(np.abs(b) ** 2, window)
    count = box_sum(valid.astype(np.float64), window)
    den = np.sqrt(p1 * p2)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = num / den
    gamma[(count < 0.5) | ~(den > 0)] = np.nan
    if complex_output:
        return gamma.astype(np.complex64)
    return np.clip(np.abs(gamma), 0.0, 1.0).astype(np.float32)


def estimator_bias(gamma: float | np.ndarray, looks: float) -> np.ndarray:
    """Expected sample coherence E[|gamma_hat|] for true coherence ``gamma`` and ``looks`` independent
    samples (Touzi, Lopes, Bruniquel, Vachon 1999, IEEE TGRS 37(1), Eq. 10):

        E = Gamma(L) Gamma(3/2) / Gamma(L + 1/2) * 3F2(3/2, L, L; L + 1/2, 1; g^2) * (1 - g^2)^L

    The 3F2 series is summed in log space (all terms positive) until the terms are negligible."""
    g = np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    if np.any((g < 0) | (g > 1)) or looks < 1:
        raise ValueError(f"estimator_bias needs 0 <= gamma <= 1 and looks >= 1, got {gamma!r}, {looks!r}")
    L = float(looks)
    out = np.empty_like(g)
    log_pre = gammaln(L) + gammaln(1.5) - gammaln(L + 0.5)
    for i, gi in enumerate(g):
        if gi >= 1.0:
            out[i] = 1.0
            continue
        g2 = gi * gi
        n = int(200 + 40 * L * g2 / (1.0 - g2) + 40 * np.sqrt(L / (1.0 - g2)))
        k = np.arange(n, dtype=np.float64)
        log_terms = (
            gammaln(1.5 + k) - gammaln(1.5)
            + 2.0 * (gammaln(L + k) - gammaln(L))
            - (gammaln(L + 0.5 + k) - gammaln(L + 0.5))
            - 2.0 * gammaln(k + 1.0)
        )
        if g2 > 0:
            log_terms = log_terms + k * np.log(g2)
        else:
            log_terms = log_terms[:1]
        out[i] = np.exp(log_pre + logsumexp(log_terms) + L * np.log1p(-g2))
    return out if np.ndim(gamma) else out[0]
