"""Interferometric coherence with a window-size-independent boxcar, and the sample-coherence bias.

gamma = |sum_w s1 s2*| / sqrt(sum_w |s1|^2 sum_w |s2|^2)  (e.g. Touzi et al. 1999, Eq. 2), the sums over an
(azimuth x range) boxcar computed from cumulative sums (summed-area tables), so the cost per pixel does not
depend on the window size.

:func:`coherence` runs a single-pass numba kernel (float64 window sums, NaN-masked, blocks of rows split
between the numba threads); :func:`coherence_reference` is the plain-numpy summed-area implementation it is
tested against.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
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

    One pass of a numba kernel over blocks of rows, one block per thread (``numba.get_num_threads()``, so
    ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS`` of the caller apply): per output row, the column sums
    over the azimuth window are updated by the row entering and the row leaving it (:func:`_column_update`),
    then prefix sums along the row give the range boxcar as a difference (:func:`_prefix_sums`,
    :func:`_coherence_magnitude`); the serial prefix loop also prefetches the next row to be read. float64
    accumulators, cost O(1) per pixel for any window. Matches :func:`coherence_reference` within float32
    rounding."""
    s1, s2 = _check_inputs(s1, s2, flat_phase)
    wa, wr = (int(w) for w in window)
    if wa < 1 or wr < 1:
        raise ValueError(f"window must be positive, got {window}")
    if flat_phase is not None:
        s2 = _remove_phase(s2, flat_phase)
    # two compiled variants only: complex64 images stay as they are, anything else becomes complex128
    kind = np.complex64 if s1.dtype == np.complex64 and s2.dtype == np.complex64 else np.complex128
    real = np.float32 if kind == np.complex64 else np.float64
    a = np.ascontiguousarray(s1, dtype=kind)
    b = np.ascontiguousarray(s2, dtype=kind)
    h, w = a.shape
    if complex_output:
        out_abs, out_cplx = np.empty((0, 0), np.float32), np.empty((h, w), np.complex64)
    else:
        out_abs, out_cplx = np.empty((h, w), np.float32), np.empty((0, 0), np.complex64)
    if h and w:
        nan_row = np.full(2 * w, np.nan, dtype=real)
        blocks = min(h, numba.get_num_threads())
        _coherence_kernel(a.view(real), b.view(real), nan_row, wa, wr, complex_output, out_abs, out_cplx, blocks)
    return out_cplx if complex_output else out_abs


def _remove_phase(s2: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """s2 exp(-j phi) as complex128, the flat-earth/topographic phase compensation of :func:`coherence`."""
    b = np.ascontiguousarray(s2, dtype=np.complex128)
    out = np.empty_like(b)
    _rotate(b, np.ascontiguousarray(phase, dtype=np.float64), out)
    return out


_FASTMATH = {"contract"}  # fused multiply-add only: NaN/inf semantics and summation order are kept


@intrinsic
def _prefetch(typingctx, array, index):
    """Software prefetch of ``array[index]`` into all cache levels (``llvm.prefetch``: read, high locality);
    a hint that never faults and returns nothing."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _rotate(s2: np.ndarray, phase: np.ndarray, out: np.ndarray) -> None:
    """out = s2 (cos phi - j sin phi), rows split between threads."""
    for i in numba.prange(s2.shape[0]):
        for j in range(s2.shape[1]):
            c, s = math.cos(phase[i, j]), math.sin(phase[i, j])
            z = s2[i, j]
            out[i, j] = complex(z.real * c + z.imag * s, z.imag * c - z.real * s)


@numba.njit(parallel=True, cache=True)
def _coherence_kernel(x, y, nan_row, wa, wr, complex_output, out_abs, out_cplx, blocks):
    """Coherence of the images ``x``, ``y`` (complex rows viewed as interleaved re, im) over ``blocks``
    blocks of rows, one per thread; see :func:`_coherence_rows`."""
    h = x.shape[0]
    rows = (h + blocks - 1) // blocks
    for k in numba.prange(blocks):
        r0 = k * rows
        r1 = min(h, r0 + rows)
        if r0 < r1:
            _coherence_rows(x, y, nan_row, wa, wr, r0, r1, complex_output, out_abs, out_cplx)


@numba.njit(cache=True)
def _coherence_rows(x, y, nan_row, wa, wr, r0, r1, complex_output, out_abs, out_cplx):
    """Output rows r0..r1-1 of :func:`coherence`.

    ``col[c, k]`` holds the sum over the azimuth window of the products c = (Re x y*, Im x y*, |x|^2,
    |y|^2) in image column k - br - 1 (zero outside the image), ``cnt[k]`` the number of valid samples in
    it. Per output row the row entering the window is added and the row leaving it subtracted; then with
    the inclusive prefix sums P along the row the boxcar of column j is P[j + wr] - P[j] (as in
    :func:`box_sum`): a window whose columns hold no valid sample, or only zeros, sums to exactly zero."""
    h = x.shape[0]
    w = x.shape[1] // 2
    ba, br = wa // 2, wr // 2
    col = np.zeros((4, w + wr))
    cnt = np.zeros(w + wr, np.int32)
    inner = slice(br + 1, br + 1 + w)
    c0, c1, c2, c3, cn = col[0, inner], col[1, inner], col[2, inner], col[3, inner], cnt[inner]
    prefix = np.empty((4, w + wr))
    for r in range(max(0, r0 - ba), min(h, r0 - ba + wa)):
        _column_update(x[r], y[r], nan_row, nan_row, c0, c1, c2, c3, cn)
    for i in range(r0, r1):
        if i > r0:
            enter = i - ba + wa - 1
            leave = i - ba - 1
            xe, ye = (x[enter], y[enter]) if enter < h else (nan_row, nan_row)
            xl, yl = (x[leave], y[leave]) if leave >= 0 else (nan_row, nan_row)
            _column_update(xe, ye, xl, yl, c0, c1, c2, c3, cn)
        following = i - ba + wa  # the row entering the window at the next output row
        xf, yf = (x[following], y[following]) if following < h else (nan_row, nan_row)
        _prefix_sums(col[0], col[1], col[2], col[3], prefix[0], prefix[1], prefix[2], prefix[3], xf, yf)
        hi, lo = slice(wr, wr + w), slice(0, w)
        if complex_output:
            _complex_coherence(prefix[0, hi], prefix[1, hi], prefix[2, hi], prefix[3, hi],
                               prefix[0, lo], prefix[1, lo], prefix[2, lo], prefix[3, lo], out_cplx[i])
        else:
            _coherence_magnitude(prefix[0, hi], prefix[1, hi], prefix[2, hi], prefix[3, hi],
                                 prefix[0, lo], prefix[1, lo], prefix[2, lo], prefix[3, lo], out_abs[i])


@numba.njit(cache=True, fastmath=_FASTMATH)
def _column_update(xe, ye, xl, yl, c0, c1, c2, c3, cn) -> None:
    """c <- (c + p(xe, ye)) - p(xl, yl) per column, p = (Re x y*, Im x y*, |x|^2, |y|^2) in float64, and cn
    += the change of the valid count. A sample whose four components are not all finite contributes
    nothing; a column left without valid samples is reset to exactly zero (no rounding residue)."""
    for j in range(c0.shape[0]):
        ar, ai = np.float64(xe[2 * j]), np.float64(xe[2 * j + 1])
        br, bi = np.float64(ye[2 * j]), np.float64(ye[2 * j + 1])
        t = ar + ai + br + bi
        ok = t - t == 0.0
        cr, ci = np.float64(xl[2 * j]), np.float64(xl[2 * j + 1])
        dr, di = np.float64(yl[2 * j]), np.float64(yl[2 * j + 1])
        u = cr + ci + dr + di
        ok_l = u - u == 0.0
        n = cn[j] + np.int32(ok) - np.int32(ok_l)
        cn[j] = n
        v0 = (c0[j] + (ar * br + ai * bi if ok else 0.0)) - (cr * dr + ci * di if ok_l else 0.0)
        v1 = (c1[j] + (ai * br - ar * bi if ok else 0.0)) - (ci * dr - cr * di if ok_l else 0.0)
        v2 = (c2[j] + (ar * ar + ai * ai if ok else 0.0)) - (cr * cr + ci * ci if ok_l else 0.0)
        v3 = (c3[j] + (br * br + bi * bi if ok else 0.0)) - (dr * dr + di * di if ok_l else 0.0)
        c0[j] = v0 if n > 0 else 0.0
        c1[j] = v1 if n > 0 else 0.0
        c2[j] = v2 if n > 0 else 0.0
        c3[j] = v3 if n > 0 else 0.0


@numba.njit(cache=True)
def _prefix_sums(c0, c1, c2, c3, p0, p1, p2, p3, xf, yf) -> None:
    """Inclusive prefix sums along the row, P[k] = P[k-1] + c[k] (summed-area table in range).

    The loop is serial (latency of the four float64 chains), so it also prefetches, one 64-byte cache line
    at a time, the rows ``xf``, ``yf`` (interleaved re, im) that the next column update reads from memory."""
    s0 = s1 = s2 = s3 = 0.0
    last = xf.shape[0] - 1
    columns_per_line = 32 // xf.itemsize  # 8 for complex64, 4 for complex128 (a power of two)
    for k in range(c0.shape[0]):
        if k & (columns_per_line - 1) == 0:
            _prefetch(xf, min(2 * k, last))
            _prefetch(yf, min(2 * k, last))
        s0 += c0[k]
        s1 += c1[k]
        s2 += c2[k]
        s3 += c3[k]
        p0[k] = s0
        p1[k] = s1
        p2[k] = s2
        p3[k] = s3


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _coherence_magnitude(h0, h1, h2, h3, l0, l1, l2, l3, out) -> None:
    """|gamma| = sqrt((N_re^2 + N_im^2) / (P1 P2)) clipped to 1 from the window sums S = h - l (Eq. 2),
    NaN where P1 P2 is not positive (exactly zero for a window without valid samples)."""
    for j in range(out.shape[0]):
        n_re = h0[j] - l0[j]
        n_im = h1[j] - l1[j]
        pp = (h2[j] - l2[j]) * (h3[j] - l3[j])
        ok = pp > 0.0
        g = math.sqrt(np.float32((n_re * n_re + n_im * n_im) / pp if ok else 0.0))
        out[j] = min(g, np.float32(1.0)) if ok else np.float32(np.nan)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _complex_coherence(h0, h1, h2, h3, l0, l1, l2, l3, out) -> None:
    """gamma = (N_re + j N_im) / sqrt(P1 P2) from the window sums S = h - l (Eq. 2), NaN where P1 P2 is not
    positive (exactly zero for a window without valid samples)."""
    for j in range(out.shape[0]):
        pp = (h2[j] - l2[j]) * (h3[j] - l3[j])
        ok = pp > 0.0
        den = math.sqrt(pp) if ok else 1.0
        out[j] = complex((h0[j] - l0[j]) / den, (h1[j] - l1[j]) / den) if ok else complex(np.nan, 0.0)


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
