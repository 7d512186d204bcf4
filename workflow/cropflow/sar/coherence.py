"""Interferometric coherence with a window-size-independent boxcar, and the sample-coherence bias.

gamma = |sum_w s1 s2*| / sqrt(sum_w |s1|^2 sum_w |s2|^2)  (e.g. Touzi et al. 1999, Eq. 2), the sums over an
(azimuth x range) boxcar computed from cumulative sums (summed-area tables), so the cost per pixel does not
depend on the window size.

:func:`coherence` runs a single-pass numba kernel (running window sums in float64, NaN-masked, rows split
between threads); :func:`coherence_reference` is the plain-numpy summed-area implementation it is tested
against.
"""

from __future__ import annotations

import math

import numba
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


def _check_inputs(s1, s2, flat_phase) -> tuple[np.ndarray, np.ndarray]:
    s1 = np.asarray(s1)
    s2 = np.asarray(s2)
    if s1.shape != s2.shape or s1.ndim != 2:
        raise ValueError(f"coherence needs two 2-D images of one shape, got {s1.shape} and {s2.shape}")
    if flat_phase is not None and np.shape(flat_phase) != s1.shape:
        raise ValueError(f"flat_phase shape {np.shape(flat_phase)} differs from the images {s1.shape}")
    return s1, s2


def coherence(
    s1: np.ndarray,
    s2: np.ndarray,
    window: tuple[int, int] = (3, 10),
    *,
    flat_phase: np.ndarray | None = None,
    complex_output: bool = False,
) -> np.ndarray:
    """Sample coherence of two co-registered complex images over a boxcar ``window`` (az, rg).

    gamma = sum_w s1 s2* / sqrt(sum_w |s1|^2 sum_w |s2|^2) (Touzi et al. 1999, Eq. 2). ``flat_phase``
    (radians, same shape) is removed first: s2 <- s2 exp(-j phi) (flat-earth/topographic phase
    compensation). Non-finite samples in either image are excluded from all three sums; a window with no
    valid sample gives NaN. Returns |gamma| as float32, or the complex gamma (complex64) with
    ``complex_output``.

    One pass of a numba kernel: per block of rows, running column sums over the azimuth window are updated
    by the row entering and the row leaving it, then a running sum along each row over the range window
    gives the boxcar; float64 accumulators, cost O(1) per pixel for any window. Matches
    :func:`coherence_reference` within float32 rounding."""
    s1, s2 = _check_inputs(s1, s2, flat_phase)
    wa, wr = (int(w) for w in window)
    if wa < 1 or wr < 1:
        raise ValueError(f"window must be positive, got {window}")
    # two compiled variants only: complex64 images stay as they are, anything else becomes complex128
    kind = np.complex64 if s1.dtype == np.complex64 and s2.dtype == np.complex64 else np.complex128
    a = np.ascontiguousarray(s1, dtype=kind)
    b = np.ascontiguousarray(s2, dtype=kind)
    use_phase = flat_phase is not None
    phase = (np.ascontiguousarray(flat_phase, dtype=np.float64) if use_phase else np.zeros((1, 1)))
    h, w = a.shape
    if complex_output:
        out_abs, out_cplx = np.empty((0, 0), np.float32), np.empty((h, w), np.complex64)
    else:
        out_abs, out_cplx = np.empty((h, w), np.float32), np.empty((0, 0), np.complex64)
    if h and w:
        nchunks = min(h, 4 * numba.get_num_threads())
        _coherence_kernel(a, b, phase, use_phase, wa, wr, complex_output, out_abs, out_cplx, nchunks)
    return out_cplx if complex_output else out_abs


@numba.njit(cache=True, inline="always")
def _products(s1, s2, phase, use_phase, r, j):
    """(Re a b*, Im a b*, |a|^2, |b|^2, valid) of pixel (r, j), all zero where either sample is not finite."""
    x = s1[r, j]
    y = s2[r, j]
    ar, ai = np.float64(x.real), np.float64(x.imag)
    br, bi = np.float64(y.real), np.float64(y.imag)
    if use_phase:
        cp, sp = math.cos(phase[r, j]), math.sin(phase[r, j])
        br, bi = br * cp + bi * sp, bi * cp - br * sp
    ok = (ar - ar == 0.0) & (ai - ai == 0.0) & (br - br == 0.0) & (bi - bi == 0.0)  # all finite
    ar = ar if ok else 0.0
    ai = ai if ok else 0.0
    br = br if ok else 0.0
    bi = bi if ok else 0.0
    return ar * br + ai * bi, ai * br - ar * bi, ar * ar + ai * ai, br * br + bi * bi, 1.0 if ok else 0.0


@numba.njit(cache=True, inline="always")
def _update_columns(s1, s2, phase, use_phase, enter, leave, sums):
    """Column sums over the azimuth window: add image row ``enter`` and subtract row ``leave`` (-1: none)."""
    for j in range(s1.shape[1]):
        if enter >= 0:
            p0, p1, p2, p3, p4 = _products(s1, s2, phase, use_phase, enter, j)
            sums[0, j] += p0
            sums[1, j] += p1
            sums[2, j] += p2
            sums[3, j] += p3
            sums[4, j] += p4
        if leave >= 0:
            p0, p1, p2, p3, p4 = _products(s1, s2, phase, use_phase, leave, j)
            sums[0, j] -= p0
            sums[1, j] -= p1
            sums[2, j] -= p2
            sums[3, j] -= p3
            sums[4, j] -= p4


@numba.njit(parallel=True, cache=True)
def _coherence_kernel(s1, s2, phase, use_phase, wa, wr, complex_output, out_abs, out_cplx, nchunks):
    h, w = s1.shape
    ba, br = wa // 2, wr // 2
    chunk = (h + nchunks - 1) // nchunks
    for k in numba.prange(nchunks):
        r0 = k * chunk
        r1 = min(h, r0 + chunk)
        if r0 >= r1:
            continue
        sums = np.zeros((5, w))  # column sums of the 5 products over the azimuth window
        cum = np.zeros((5, w + wr))  # their summed-area table along the row, padded as in box_sum
        for r in range(max(0, r0 - ba), min(h, r0 - ba + wa)):
            _update_columns(s1, s2, phase, use_phase, r, -1, sums)
        for i in range(r0, r1):
            if i > r0:
                enter = i - ba + wa - 1
                leave = i - ba - 1
                _update_columns(s1, s2, phase, use_phase, enter if enter < h else -1, leave, sums)
            a0 = a1 = a2 = a3 = a4 = 0.0  # five independent running sums, interleaved
            for j in range(w):
                a0 += sums[0, j]
                a1 += sums[1, j]
                a2 += sums[2, j]
                a3 += sums[3, j]
                a4 += sums[4, j]
                cum[0, br + 1 + j] = a0
                cum[1, br + 1 + j] = a1
                cum[2, br + 1 + j] = a2
                cum[3, br + 1 + j] = a3
                cum[4, br + 1 + j] = a4
            for j in range(br + 1 + w, w + wr):
                cum[0, j] = a0
                cum[1, j] = a1
                cum[2, j] = a2
                cum[3, j] = a3
                cum[4, j] = a4
            for j in range(w):
                nre = cum[0, j + wr] - cum[0, j]
                nim = cum[1, j + wr] - cum[1, j]
                pp = (cum[2, j + wr] - cum[2, j]) * (cum[3, j + wr] - cum[3, j])
                cnt = cum[4, j + wr] - cum[4, j]
                ok = (cnt > 0.5) & (pp > 0.0)
                if complex_output:
                    den = math.sqrt(pp) if ok else 1.0
                    out_cplx[i, j] = complex(nre / den, nim / den) if ok else complex(np.nan, 0.0)
                else:
                    g = math.sqrt((nre * nre + nim * nim) / pp) if ok else np.nan
                    out_abs[i, j] = min(g, 1.0) if ok else np.nan


def coherence_reference(s1: np.ndarray, s2: np.ndarray, window: tuple[int, int] = (3, 10), *,
                        flat_phase: np.ndarray | None = None, complex_output: bool = False) -> np.ndarray:
    """Sample coherence of two co-registered complex images over a boxcar ``window`` (az, rg).

    ``flat_phase`` (radians, same shape) is removed first: s2 <- s2 exp(-j phi) (flat-earth/topographic phase
    compensation). Non-finite samples in either image are excluded from all three sums; a window with no
    valid sample gives NaN. Returns |gamma| as float32, or the complex gamma (complex64) with
    ``complex_output``.

    Plain-numpy reference of :func:`coherence`: four :func:`box_sum` summed-area tables (complex128/float64).
    Same contract and results within float32 rounding; kept for tests and as the documented definition."""
    s1, s2 = _check_inputs(s1, s2, flat_phase)
    if flat_phase is not None:
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
