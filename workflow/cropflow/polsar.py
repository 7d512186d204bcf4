"""Dual-pol (VV+VH) polarimetric features from the C2 covariance matrix, vectorised over whole arrays.

``C2 = [[C11, C12], [conj(C12), C22]]`` with ``C11 = <|VV|^2>``, ``C22 = <|VH|^2>``, ``C12 = <VV VH*>``
(linear sigma0, speckle filtered). Every function takes the three C2 elements as arrays of any
(broadcastable) shape and returns float64 arrays of that shape; equation numbers are those of the
thesis summarised in SCIENCE.md, operator names those of SNAP.

No-data convention: a pixel is valid when C11 > 0, C22 > 0 and all three elements are finite. Every
feature of an invalid pixel is NaN (no warning, no inf), whatever the feature needs, so all bands of a
scene share one no-data mask.

:func:`compute_features` evaluates all requested features in one pass of a numba kernel over blocks of
pixels (float64 inside, SIMD loops with polynomial logarithm and arctangent); the vectorised numpy functions
below are the reference definitions it is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numpy.typing import ArrayLike, DTypeLike
from scipy.special import xlogy

__all__ = [
    "EigenC2", "MChi", "valid_c2", "eigen_c2", "sigma0_db", "vv_db", "vh_db", "cross_ratio",
    "h_a_alpha", "entropy", "anisotropy", "alpha", "stokes_cp", "m_chi", "mchi_s", "mchi_d", "mchi_v",
    "dprvi", "rvi", "quantize", "glcm_features", "FEATURES", "GLCM_FEATURES", "GLCM_OFFSETS",
    "GLCM_DB_RANGE", "check_feature_names", "compute_features", "compute_features_reference",
]

Feature = Callable[[ArrayLike, ArrayLike, ArrayLike], np.ndarray]


class EigenC2(NamedTuple):
    """Eigen-decomposition of a Hermitian 2x2 C2 per pixel.

    ``l1 >= l2 >= 0`` are the eigenvalues; ``v1``, ``v2`` the first components of the matching unit
    eigenvectors, normalised so that this component is real and non-negative (its phase is arbitrary and
    unused by every feature), i.e. ``|e1[0]|`` and ``|e2[0]|``; ``v1**2 + v2**2 == 1``.
    """

    l1: np.ndarray
    l2: np.ndarray
    v1: np.ndarray
    v2: np.ndarray


class MChi(NamedTuple):
    """The m-chi decomposition of one pixel set (see :func:`m_chi`)."""

    m: np.ndarray
    sin2chi: np.ndarray
    single: np.ndarray
    double: np.ndarray
    volume: np.ndarray


def _prepare(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """C2 elements as float64/complex128 arrays of one shape, invalid pixels replaced by the identity.

    Returns ``(a, b, c, valid)``. Replacing invalid pixels by a harmless matrix keeps every later
    operation free of warnings; callers set those pixels to NaN at the end with ``valid``.
    """
    a, b, c = np.broadcast_arrays(np.asarray(c11, dtype=np.float64), np.asarray(c22, dtype=np.float64),
                                  np.asarray(c12, dtype=np.complex128))
    valid = valid_c2(a, b, c)
    return np.where(valid, a, 1.0), np.where(valid, b, 1.0), np.where(valid, c, 0.0), valid


def _masked(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, values, np.nan)


def valid_c2(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Pixels holding data: C11 > 0, C22 > 0 and C11, C22, C12 finite (zero or NaN marks no data)."""
    c11, c22, c12 = np.asarray(c11), np.asarray(c22), np.asarray(c12)
    with np.errstate(invalid="ignore"):
        return np.isfinite(c11) & np.isfinite(c22) & np.isfinite(c12) & (c11 > 0) & (c22 > 0)


def _eigen(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``l1 >= l2 >= 0`` and eigenvector angle ``t`` of prepared C2 elements (see :func:`eigen_c2`)."""
    half_trace = 0.5 * (a + b)
    d = np.hypot(0.5 * (a - b), np.abs(c))
    t = 0.5 * np.arctan2(2.0 * np.abs(c), a - b)
    return half_trace + d, np.maximum(half_trace - d, 0.0), t


def eigen_c2(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> EigenC2:
    """Closed-form eigen-decomposition of the Hermitian 2x2 C2 (no per-pixel loop).

    With ``d = sqrt(((C11 - C22)/2)^2 + |C12|^2)``: ``l1,2 = (C11 + C22)/2 +- d``. Writing
    ``C11 - C22 = 2 d cos 2t`` and ``|C12| = d sin 2t`` (``t = atan2(2|C12|, C11 - C22)/2`` in [0, pi/2]),
    the unit eigenvectors are ``e1 = (cos t, sin t e^{-i arg C12})`` and ``e2 = (sin t, -cos t e^{-i arg C12})``,
    so ``|e1[0]| = cos t`` and ``|e2[0]| = sin t``. A degenerate matrix (``d = 0``) takes ``t = 0``.
    ``l2`` slightly below zero from rounding (or from a filtered matrix that is not positive
    semi-definite) is clamped to 0. Invalid pixels (:func:`valid_c2`) are NaN.
    """
    a, b, c, valid = _prepare(c11, c22, c12)
    l1, l2, t = _eigen(a, b, c)
    return EigenC2(_masked(l1, valid), _masked(l2, valid), _masked(np.cos(t), valid), _masked(np.sin(t), valid))


def sigma0_db(intensity: ArrayLike) -> np.ndarray:
    """Backscatter in dB, ``10 log10(sigma0)``; non-positive or non-finite intensities give NaN."""
    x = np.asarray(intensity, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (x > 0)
    return np.where(ok, 10.0 * np.log10(np.where(ok, x, 1.0)), np.nan)


def vv_db(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """sigma0 VV in dB, ``10 log10 C11`` (SCIENCE.md, Sentinel-1 processing; SNAP LinearToFromdB)."""
    a, _, _, valid = _prepare(c11, c22, c12)
    return _masked(10.0 * np.log10(a), valid)


def vh_db(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """sigma0 VH in dB, ``10 log10 C22`` (SCIENCE.md, Sentinel-1 processing; SNAP LinearToFromdB)."""
    _, b, _, valid = _prepare(c11, c22, c12)
    return _masked(10.0 * np.log10(b), valid)


def cross_ratio(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Cross-pol ratio in dB, ``VH dB - VV dB = 10 log10(C22 / C11)`` (SCIENCE.md, Sentinel-1 processing)."""
    a, b, _, valid = _prepare(c11, c22, c12)
    return _masked(10.0 * np.log10(b / a), valid)


def h_a_alpha(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dual-pol H/A/alpha decomposition (thesis Eq. 3-1, 3-2; SNAP ``H-Alpha Dual Pol``, HAlphaC2).

    ``p_i = l_i / (l1 + l2)``; entropy ``H = -sum p_i log2 p_i`` in [0, 1] with ``0 log 0 = 0``;
    anisotropy ``A = (p1 - p2) / (p1 + p2)`` in [0, 1]; ``alpha = sum p_i alpha_i`` with
    ``alpha_i = arccos |e_i[0]|`` in degrees [0, 90]. From :func:`eigen_c2`, ``alpha_1 = t`` and
    ``alpha_2 = 90 deg - t`` exactly; they are evaluated in that form, which keeps full precision
    where ``arccos`` of a value near 1 would not.
    """
    a, b, c, valid = _prepare(c11, c22, c12)
    l1, l2, t = _eigen(a, b, c)
    span = l1 + l2
    p1, p2 = l1 / span, l2 / span
    h = np.clip(-(xlogy(p1, p1) + xlogy(p2, p2)) / math.log(2.0), 0.0, 1.0)
    aniso = (p1 - p2) / (p1 + p2)
    alpha_deg = np.degrees(p1 * t + p2 * (0.5 * np.pi - t))
    return _masked(h, valid), _masked(aniso, valid), _masked(alpha_deg, valid)


def entropy(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Dual-pol entropy H = -sum p_i log2 p_i (thesis Eq. 3-1; SNAP H-Alpha Dual Pol)."""
    return h_a_alpha(c11, c22, c12)[0]


def anisotropy(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Dual-pol anisotropy A = (p1 - p2) / (p1 + p2) (SCIENCE.md H-alpha dual; SNAP H-Alpha Dual Pol)."""
    return h_a_alpha(c11, c22, c12)[1]


def alpha(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Mean alpha angle in degrees, sum p_i arccos|e_i[0]| (thesis Eq. 3-2; SNAP H-Alpha Dual Pol)."""
    return h_a_alpha(c11, c22, c12)[2]


def stokes_cp(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stokes-like vector of C2 in SNAP's compact-pol convention (thesis Eq. 3-3; SNAP CP Stokes parameters).

    ``g0 = C11 + C22``, ``g1 = C11 - C22``, ``g2 = 2 Re C12``, ``g3 = -2 Im C12`` (the sign SNAP's
    compact-pol Stokes vector uses). SCIENCE.md writes ``g3 = +2 Im C12`` together with
    ``sin 2chi = -g3 / (m g0)``; both give the same ``sin 2chi`` (see :func:`m_chi`).
    """
    a, b, c, valid = _prepare(c11, c22, c12)
    return (_masked(a + b, valid), _masked(a - b, valid), _masked(2.0 * c.real, valid), _masked(-2.0 * c.imag, valid))


def m_chi(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> MChi:
    """m-chi decomposition (thesis Eq. 3-3 to 3-7 and 4-5 to 4-9; SNAP ``M-Chi Decomposition``, CP_MChi).

    A compact-pol decomposition (right-circular transmit assumed) applied to linear VV/VH data, as the
    study does. With :func:`stokes_cp`: degree of polarisation ``m = sqrt(g1^2 + g2^2 + g3^2) / g0``
    in [0, 1]; ``sin 2chi = g3 / (m g0) = -2 Im C12 / (m g0)`` (SNAP's degree of circularity for the
    right-circular hybrid mode), 0 where ``m = 0``; then

    - single (odd) bounce ``mchi_s = sqrt(m g0 (1 - sin 2chi) / 2)`` (SNAP MChi_b, blue),
    - double (even) bounce ``mchi_d = sqrt(m g0 (1 + sin 2chi) / 2)`` (SNAP MChi_r, red),
    - volume ``mchi_v = sqrt(g0 (1 - m))`` (SNAP MChi_g, green).

    Sign convention: ``Im C12 > 0`` (with ``C12 = <VV VH*>``) gives ``sin 2chi < 0`` and more single than
    double bounce. ``mchi_s^2 + mchi_d^2 + mchi_v^2 = g0``.
    """
    a, b, c, valid = _prepare(c11, c22, c12)
    g0, g1, g2, g3 = a + b, a - b, 2.0 * c.real, -2.0 * c.imag
    pol = np.sqrt(g1 * g1 + g2 * g2 + g3 * g3)  # m g0
    m = np.clip(pol / g0, 0.0, 1.0)
    sin2chi = np.clip(np.divide(g3, pol, out=np.zeros_like(g3), where=pol > 0), -1.0, 1.0)
    single = np.sqrt(m * g0 * (1.0 - sin2chi) / 2.0)
    double = np.sqrt(m * g0 * (1.0 + sin2chi) / 2.0)
    volume = np.sqrt(g0 * (1.0 - m))
    return MChi(*(_masked(x, valid) for x in (m, sin2chi, single, double, volume)))


def mchi_s(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """m-chi single (odd) bounce sqrt(m g0 (1 - sin 2chi) / 2) (thesis Eq. 3-5; SNAP CP_MChi)."""
    return m_chi(c11, c22, c12).single


def mchi_d(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """m-chi double (even) bounce sqrt(m g0 (1 + sin 2chi) / 2) (thesis Eq. 3-6; SNAP CP_MChi)."""
    return m_chi(c11, c22, c12).double


def mchi_v(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """m-chi volume scattering sqrt(g0 (1 - m)) (thesis Eq. 3-7; SNAP CP_MChi)."""
    return m_chi(c11, c22, c12).volume


def dprvi(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Dual-pol radar vegetation index (thesis Eq. 3-8 to 3-11; SNAP ``Radar Vegetation Index`` DpRVI).

    ``m = sqrt(1 - 4 det(C2) / tr(C2)^2)`` (degree of polarisation), ``beta = l1 / (l1 + l2)``,
    ``DpRVI = 1 - m beta`` in [0, 1]. ``det`` and ``tr`` are taken from the clamped eigenvalues of
    :func:`eigen_c2` (``det = l1 l2``, ``tr = l1 + l2``), so a matrix made slightly non-positive by
    filtering still gives ``m`` in [0, 1].
    """
    a, b, c, valid = _prepare(c11, c22, c12)
    l1, l2, _ = _eigen(a, b, c)
    tr = l1 + l2
    m = np.sqrt(np.clip(1.0 - 4.0 * l1 * l2 / (tr * tr), 0.0, 1.0))
    beta = l1 / tr
    return _masked(1.0 - m * beta, valid)


def rvi(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike) -> np.ndarray:
    """Dual-pol radar vegetation index from backscatter, ``4 C22 / (C11 + C22)`` (SCIENCE.md; linear sigma0)."""
    a, b, _, valid = _prepare(c11, c22, c12)
    return _masked(4.0 * b / (a + b), valid)


#: Feature name (as in config ``s1.features``) -> function of (C11, C22, C12).
FEATURES: Mapping[str, Feature] = {
    "vv_db": vv_db,
    "vh_db": vh_db,
    "cross_ratio": cross_ratio,
    "entropy": entropy,
    "anisotropy": anisotropy,
    "alpha": alpha,
    "mchi_s": mchi_s,
    "mchi_d": mchi_d,
    "mchi_v": mchi_v,
    "dprvi": dprvi,
    "rvi": rvi,
}

#: Features that are one output of a joint decomposition: (decomposition, index of the output).
_DECOMPOSITION_PART: Mapping[str, tuple[Callable[..., tuple[np.ndarray, ...]], int]] = {
    "entropy": (h_a_alpha, 0), "anisotropy": (h_a_alpha, 1), "alpha": (h_a_alpha, 2),
    "mchi_s": (m_chi, MChi._fields.index("single")), "mchi_d": (m_chi, MChi._fields.index("double")),
    "mchi_v": (m_chi, MChi._fields.index("volume")),
}

#: GLCM texture features of VH dB; they need a moving window (see :func:`glcm_features`).
GLCM_FEATURES: tuple[str, ...] = ("glcm_mean", "glcm_variance", "glcm_correlation")

#: Pixel offsets (row, col) of the co-occurrence pairs: distance 1 at 0, 45, 90 and 135 degrees.
GLCM_OFFSETS: tuple[tuple[int, int], ...] = ((0, 1), (-1, 1), (-1, 0), (-1, -1))

#: Default quantisation range of VH sigma0 (dB) for the GLCM; values outside are clipped.
GLCM_DB_RANGE: tuple[float, float] = (-30.0, 0.0)


def check_feature_names(names: Sequence[str], *, allow_glcm: bool = True) -> None:
    """Raise ValueError naming unknown feature names and listing the valid ones."""
    valid = list(FEATURES) + (list(GLCM_FEATURES) if allow_glcm else [])
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown S1 feature(s) {unknown}: valid names are {valid}")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"S1 feature(s) {dupes} listed more than once")


def compute_features(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike, names: Sequence[str],
                     dtype: DTypeLike = np.float32) -> np.ndarray:
    """Stack the named per-pixel features of C2, shape ``(len(names), *shape)``, NaN where no data.

    ``names`` are keys of :data:`FEATURES`. GLCM names are rejected here because they need a window;
    compute them with :func:`glcm_features` on :func:`vh_db`.

    For float32 output all features come from one pass of a numba kernel (closed-form 2x2 eigen-decomposition,
    float64 arithmetic, same formulas and no-data rule as the per-feature functions, which
    :func:`compute_features_reference` stacks); other dtypes use that reference. The kernel reads C2 once per
    block of :data:`_BLOCK` pixels and evaluates each feature as one vectorised loop over the block (ln and
    atan2 by the polynomials :func:`_ln`, :func:`_atan2`, within 2 ulp of libm); blocks are split between
    the numba threads (``numba.get_num_threads()``).
    """
    glcm = [n for n in names if n in GLCM_FEATURES]
    if glcm:
        raise ValueError(f"{glcm} need a moving window: compute them with glcm_features(vh_db(...), window, levels)")
    check_feature_names(names, allow_glcm=False)
    if np.dtype(dtype) != np.float32:
        return compute_features_reference(c11, c22, c12, names, dtype)
    a, b, c = np.broadcast_arrays(np.asarray(c11), np.asarray(c22), np.asarray(c12))
    shape = a.shape
    # few compiled variants: float32 or float64 diagonal, complex64 or complex128 off-diagonal
    real = np.float32 if a.dtype == np.float32 and b.dtype == np.float32 else np.float64
    cplx = np.complex64 if c.dtype == np.complex64 else np.complex128
    a = np.ascontiguousarray(a, dtype=real).reshape(-1)
    b = np.ascontiguousarray(b, dtype=real).reshape(-1)
    c = np.ascontiguousarray(c, dtype=cplx).reshape(-1)
    codes = np.array([_FEATURE_CODE[n] for n in names], dtype=np.int64)
    out = np.empty((len(names), a.size), dtype=np.float32)
    if len(names) and a.size:
        _features_kernel(a, b, c, codes, out, numba.get_num_threads())
    return out.reshape((len(names), *shape))


def compute_features_reference(c11: ArrayLike, c22: ArrayLike, c12: ArrayLike, names: Sequence[str],
                               dtype: DTypeLike = np.float32) -> np.ndarray:
    """Numpy reference of :func:`compute_features`: each decomposition evaluated once by the vectorised
    per-feature functions (:data:`FEATURES`) and stacked."""
    check_feature_names(names, allow_glcm=False)
    shape = np.broadcast_shapes(np.shape(c11), np.shape(c22), np.shape(c12))
    out = np.empty((len(names), *shape), dtype=dtype)
    shared: dict[str, tuple[np.ndarray, ...]] = {}  # each decomposition computed once for its features
    for i, name in enumerate(names):
        if name in _DECOMPOSITION_PART:
            decomposition, part = _DECOMPOSITION_PART[name]
            if decomposition.__name__ not in shared:
                shared[decomposition.__name__] = tuple(decomposition(c11, c22, c12))
            out[i] = shared[decomposition.__name__][part]
        else:
            out[i] = FEATURES[name](c11, c22, c12)
    return out


#: Kernel code of each feature (its position in :data:`FEATURES`).
_FEATURE_CODE: Mapping[str, int] = {name: i for i, name in enumerate(FEATURES)}
(_VV_DB, _VH_DB, _CROSS_RATIO, _ENTROPY, _ANISOTROPY, _ALPHA, _MCHI_S, _MCHI_D, _MCHI_V, _DPRVI,
 _RVI) = range(len(FEATURES))

#: Pixels per block of the feature kernel: its per-block buffers stay in the L2 cache.
_BLOCK = 1024
_FASTMATH = {"contract"}  # fused multiply-add only: NaN/inf semantics and evaluation order are kept
_LN2 = math.log(2.0)
_DB = 10.0 / math.log(10.0)  # 10 log10 x = _DB ln x
_SQRT2 = math.sqrt(2.0)
_TAN_PI_8 = math.tan(math.pi / 8.0)


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE-754 bit pattern of a float64 as an int64 (a register reinterpretation, no memory)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, i):
    """The float64 whose IEEE-754 bit pattern is the int64 ``i``."""
    if i != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(inline="always", fastmath=_FASTMATH, error_model="numpy")
def _ln(x: float) -> float:
    """Natural logarithm of a finite x >= 0 in plain arithmetic, so that loops calling it vectorise.

    x = 2^e m with m in [1/sqrt 2, sqrt 2) read from the bits (subnormals scaled by 2^52 first);
    ln x = e ln 2 + 2 atanh s with s = (m - 1)/(m + 1), |s| <= 0.172, and atanh s = sum_k s^(2k+1)/(2k+1)
    summed to k = 10 (truncation below 1e-17 relative). Within 2 ulp of ``math.log``; x = 0 gives
    -1075 ln 2 (finite), for callers that mask it."""
    tiny = x < 2.2250738585072014e-308
    x = x * 4503599627370496.0 if tiny else x
    bits = _float_bits(x)
    e = (bits >> 52) - (1075 if tiny else 1023)
    m = _bits_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    high = m > _SQRT2
    m = 0.5 * m if high else m
    e = e + 1 if high else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    r = 1.0 / 21.0
    r = r * z + 1.0 / 19.0
    r = r * z + 1.0 / 17.0
    r = r * z + 1.0 / 15.0
    r = r * z + 1.0 / 13.0
    r = r * z + 1.0 / 11.0
    r = r * z + 1.0 / 9.0
    r = r * z + 1.0 / 7.0
    r = r * z + 1.0 / 5.0
    r = r * z + 1.0 / 3.0
    r = r * z + 1.0
    return e * _LN2 + 2.0 * s * r


@numba.njit(inline="always", fastmath=_FASTMATH, error_model="numpy")
def _atan2(y: float, x: float) -> float:
    """atan2(y, x) in [0, pi] for y >= 0 in plain arithmetic, so that loops calling it vectorise.

    z = min(|x|, y) / max(|x|, y) in [0, 1]; for z > tan(pi/8), atan z = pi/4 + atan u with
    u = (z - 1)/(z + 1); then |u| <= tan(pi/8) and atan u = sum_k (-1)^k u^(2k+1)/(2k+1) to k = 19
    (truncation below 1e-16). The octant is restored from y > |x| and the sign of x; atan2(0, 0) = 0.
    Within 2 ulp of ``math.atan2``."""
    ax = abs(x)
    lo = min(ax, y)
    hi = max(ax, y)
    reduced = lo > _TAN_PI_8 * hi
    num = lo - hi if reduced else lo
    den = lo + hi if reduced else (hi if hi > 0.0 else 1.0)
    u = num / den
    v = u * u
    r = -1.0 / 39.0
    r = r * v + 1.0 / 37.0
    r = r * v - 1.0 / 35.0
    r = r * v + 1.0 / 33.0
    r = r * v - 1.0 / 31.0
    r = r * v + 1.0 / 29.0
    r = r * v - 1.0 / 27.0
    r = r * v + 1.0 / 25.0
    r = r * v - 1.0 / 23.0
    r = r * v + 1.0 / 21.0
    r = r * v - 1.0 / 19.0
    r = r * v + 1.0 / 17.0
    r = r * v - 1.0 / 15.0
    r = r * v + 1.0 / 13.0
    r = r * v - 1.0 / 11.0
    r = r * v + 1.0 / 9.0
    r = r * v - 1.0 / 7.0
    r = r * v + 1.0 / 5.0
    r = r * v - 1.0 / 3.0
    r = r * v + 1.0
    a = u * r + (0.25 * math.pi if reduced else 0.0)
    a = 0.5 * math.pi - a if y > ax else a
    return math.pi - a if x < 0.0 else a


@numba.njit(parallel=True, cache=True)
def _features_kernel(c11, c22, c12, codes, out, threads):
    """The features ``codes`` (see :data:`_FEATURE_CODE`) of every pixel, with the formulas of the numpy
    functions. Pixels are processed in blocks of :data:`_BLOCK`, consecutive blocks split between
    ``threads`` threads; per block, :func:`_prepare_block` reads C2 once and each feature is one loop over
    the block's buffers."""
    n = c11.shape[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    chunks = min(nblocks, threads)
    per_chunk = (nblocks + chunks - 1) // chunks
    for k in numba.prange(chunks):
        buffers = np.empty((_N_BUFFERS, _BLOCK))
        for block in range(k * per_chunk, min(nblocks, (k + 1) * per_chunk)):
            p0 = block * _BLOCK
            p1 = min(n, p0 + _BLOCK)
            _features_block(c11, c22, c12, codes, buffers, out, p0, p1)


#: Per-block buffers: a, b, Re C12, Im C12 (invalid pixels replaced by the identity), NaN mask, l1, l2,
#: p1, p2, ln C11, ln C22, m and sin 2chi of the m-chi decomposition.
_N_BUFFERS = 13


@numba.njit(cache=True)
def _features_block(c11, c22, c12, codes, buf, out, start, stop):
    """Features ``codes`` of pixels start..stop-1 into ``out[k, start:stop]``, with the :data:`_N_BUFFERS`
    rows of ``buf`` as work space (1-D contiguous slices, so that every loop vectorises)."""
    n = stop - start
    a, b, cre, cim, nan = buf[0, :n], buf[1, :n], buf[2, :n], buf[3, :n], buf[4, :n]
    l1, l2, p1, p2 = buf[5, :n], buf[6, :n], buf[7, :n], buf[8, :n]
    lna, lnb, m, sin2chi = buf[9, :n], buf[10, :n], buf[11, :n], buf[12, :n]
    _prepare_block(c11[start:stop], c22[start:stop], c12[start:stop], a, b, cre, cim, nan, l1, l2, p1, p2)
    need_ln = need_mchi = False
    for k in range(codes.shape[0]):
        need_ln |= codes[k] == _VV_DB or codes[k] == _VH_DB or codes[k] == _CROSS_RATIO
        need_mchi |= codes[k] == _MCHI_S or codes[k] == _MCHI_D or codes[k] == _MCHI_V
    if need_ln:
        _ln_block(a, b, lna, lnb)
    if need_mchi:
        _mchi_block(a, b, cre, cim, m, sin2chi)
    for k in range(codes.shape[0]):
        code = codes[k]
        o = out[k, start:stop]
        if code == _VV_DB:
            _scaled_feature(lna, _DB, nan, o)
        elif code == _VH_DB:
            _scaled_feature(lnb, _DB, nan, o)
        elif code == _CROSS_RATIO:
            _cross_ratio_feature(lna, lnb, nan, o)
        elif code == _ENTROPY:
            _entropy_feature(p1, p2, nan, o)
        elif code == _ANISOTROPY:
            _anisotropy_feature(p1, p2, nan, o)
        elif code == _ALPHA:
            _alpha_feature(a, b, cre, cim, p1, p2, nan, o)
        elif code == _MCHI_S:
            _mchi_bounce_feature(a, b, m, sin2chi, -1.0, nan, o)
        elif code == _MCHI_D:
            _mchi_bounce_feature(a, b, m, sin2chi, 1.0, nan, o)
        elif code == _MCHI_V:
            _mchi_volume_feature(a, b, m, nan, o)
        elif code == _DPRVI:
            _dprvi_feature(l1, l2, p1, nan, o)
        else:
            _rvi_feature(a, b, nan, o)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _prepare_block(c11, c22, c12, a, b, cre, cim, nan, l1, l2, p1, p2) -> None:
    """C2 as float64 with invalid pixels (:func:`valid_c2`) replaced by the identity, ``nan`` = 0 or NaN
    (added to every feature), the clamped eigenvalues of :func:`eigen_c2` and p_i = l_i / (l1 + l2)."""
    for j in range(c11.shape[0]):
        x = np.float64(c11[j])
        y = np.float64(c22[j])
        zr = np.float64(c12[j].real)
        zi = np.float64(c12[j].imag)
        ok = (x > 0.0) & (y > 0.0) & math.isfinite(x) & math.isfinite(y) & math.isfinite(zr) & math.isfinite(zi)
        x = x if ok else 1.0
        y = y if ok else 1.0
        zr = zr if ok else 0.0
        zi = zi if ok else 0.0
        a[j] = x
        b[j] = y
        cre[j] = zr
        cim[j] = zi
        nan[j] = 0.0 if ok else np.nan
        half_trace = 0.5 * (x + y)
        d = math.sqrt(0.25 * (x - y) * (x - y) + (zr * zr + zi * zi))
        e1 = half_trace + d
        e2 = max(half_trace - d, 0.0)
        l1[j] = e1
        l2[j] = e2
        p1[j] = e1 / (e1 + e2)
        p2[j] = e2 / (e1 + e2)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _ln_block(a, b, lna, lnb) -> None:
    """ln C11 and ln C22 (:func:`_ln`)."""
    for j in range(a.shape[0]):
        lna[j] = _ln(a[j])
        lnb[j] = _ln(b[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _scaled_feature(x, scale, nan, out) -> None:
    """sigma0 in dB, 10 log10 C = _DB ln C (:func:`vv_db`, :func:`vh_db`)."""
    for j in range(x.shape[0]):
        out[j] = np.float32(scale * x[j] + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _cross_ratio_feature(lna, lnb, nan, out) -> None:
    """10 log10(C22 / C11) = _DB (ln C22 - ln C11) (:func:`cross_ratio`)."""
    for j in range(lna.shape[0]):
        out[j] = np.float32(_DB * (lnb[j] - lna[j]) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _entropy_feature(p1, p2, nan, out) -> None:
    """H = -(p1 log2 p1 + p2 log2 p2) clipped to [0, 1], 0 log 0 = 0 (:func:`h_a_alpha`, thesis Eq. 3-1)."""
    for j in range(p1.shape[0]):
        q1 = p1[j]
        q2 = p2[j]
        plogp = q1 * _ln(q1) + (q2 * _ln(q2) if q2 > 0.0 else 0.0)
        out[j] = np.float32(min(max(-plogp / _LN2, 0.0), 1.0) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _anisotropy_feature(p1, p2, nan, out) -> None:
    """A = (p1 - p2) / (p1 + p2) (:func:`h_a_alpha`)."""
    for j in range(p1.shape[0]):
        out[j] = np.float32((p1[j] - p2[j]) / (p1[j] + p2[j]) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _alpha_feature(a, b, cre, cim, p1, p2, nan, out) -> None:
    """alpha = p1 t + p2 (90 deg - t), t = atan2(2 |C12|, C11 - C22) / 2 (:func:`h_a_alpha`, thesis Eq. 3-2)."""
    for j in range(a.shape[0]):
        t = 0.5 * _atan2(2.0 * math.sqrt(cre[j] * cre[j] + cim[j] * cim[j]), a[j] - b[j])
        out[j] = np.float32(math.degrees(p1[j] * t + p2[j] * (0.5 * math.pi - t)) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _mchi_block(a, b, cre, cim, m, sin2chi) -> None:
    """Degree of polarisation m = |g1, g2, g3| / g0 and sin 2chi = g3 / (m g0) of :func:`m_chi` (Eq. 3-3, 3-4)."""
    for j in range(a.shape[0]):
        g0 = a[j] + b[j]
        g1 = a[j] - b[j]
        g2 = 2.0 * cre[j]
        g3 = -2.0 * cim[j]
        pol = math.sqrt(g1 * g1 + g2 * g2 + g3 * g3)
        m[j] = min(max(pol / g0, 0.0), 1.0)
        sin2chi[j] = min(max(g3 / pol, -1.0), 1.0) if pol > 0.0 else 0.0


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _mchi_bounce_feature(a, b, m, sin2chi, sign, nan, out) -> None:
    """sqrt(m g0 (1 + sign sin 2chi) / 2): single bounce for sign -1, double for +1 (:func:`m_chi`, Eq. 3-5, 3-6)."""
    for j in range(a.shape[0]):
        out[j] = np.float32(math.sqrt(m[j] * (a[j] + b[j]) * (1.0 + sign * sin2chi[j]) / 2.0) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _mchi_volume_feature(a, b, m, nan, out) -> None:
    """Volume scattering sqrt(g0 (1 - m)) (:func:`m_chi`, Eq. 3-7)."""
    for j in range(a.shape[0]):
        out[j] = np.float32(math.sqrt((a[j] + b[j]) * (1.0 - m[j])) + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _dprvi_feature(l1, l2, p1, nan, out) -> None:
    """DpRVI = 1 - m beta, m = sqrt(1 - 4 l1 l2 / (l1 + l2)^2), beta = p1 (:func:`dprvi`, Eq. 3-8 to 3-11)."""
    for j in range(l1.shape[0]):
        span = l1[j] + l2[j]
        dop = math.sqrt(min(max(1.0 - 4.0 * l1[j] * l2[j] / (span * span), 0.0), 1.0))
        out[j] = np.float32(1.0 - dop * p1[j] + nan[j])


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _rvi_feature(a, b, nan, out) -> None:
    """RVI = 4 C22 / (C11 + C22) (:func:`rvi`)."""
    for j in range(a.shape[0]):
        out[j] = np.float32(4.0 * b[j] / (a[j] + b[j]) + nan[j])


def quantize(image: ArrayLike, levels: int, vmin: float, vmax: float) -> np.ndarray:
    """Grey levels 0..levels-1 by equal-width bins over [vmin, vmax] (values outside are clipped), NaN kept.

    ``q = floor((x - vmin) / (vmax - vmin) * levels)`` clipped to [0, levels - 1]. A fixed range (rather
    than each image's min/max) makes the levels identical across windows, scenes and dates.
    """
    if levels < 2:
        raise ValueError(f"GLCM levels must be >= 2, got {levels}")
    if not vmax > vmin:
        raise ValueError(f"GLCM quantisation range needs vmin < vmax, got ({vmin}, {vmax})")
    x = np.asarray(image, dtype=np.float64)
    ok = np.isfinite(x)
    q = np.floor((np.where(ok, x, vmin) - vmin) / (vmax - vmin) * levels)
    return np.where(ok, np.clip(q, 0, levels - 1), np.nan)


def _box_sum(values: np.ndarray, r0: int, r1: int, c0: int, c1: int, pad: int) -> np.ndarray:
    """Exact sums of ``values`` (int64, zero-padded by ``pad``) over rows r+r0..r+r1, cols c+c0..c+c1 of each pixel."""
    height, width = values.shape[0] - 2 * pad, values.shape[1] - 2 * pad
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(values, axis=0, dtype=np.int64), axis=1, out=integral[1:, 1:])
    top, bottom = pad + r0, pad + r1 + 1
    left, right = pad + c0, pad + c1 + 1
    return (integral[bottom:bottom + height, right:right + width] - integral[top:top + height, right:right + width]
            - integral[bottom:bottom + height, left:left + width] + integral[top:top + height, left:left + width])


def glcm_features(image: ArrayLike, *, window: int, levels: int, vmin: float = GLCM_DB_RANGE[0],
                  vmax: float = GLCM_DB_RANGE[1], names: Sequence[str] = GLCM_FEATURES) -> np.ndarray:
    """GLCM texture (Haralick 1973; SNAP ``GLCM``) of an image in a moving ``window`` x ``window`` window.

    The image (VH sigma0 in dB in cropflow) is quantised to ``levels`` grey levels with :func:`quantize`.
    For each of the offsets :data:`GLCM_OFFSETS` (distance 1 at 0, 45, 90, 135 degrees) the symmetric,
    normalised co-occurrence matrix ``P`` of all pixel pairs lying inside the window gives

    - ``glcm_mean = sum_ij i P(i, j)``,
    - ``glcm_variance = sum_ij (i - mean)^2 P(i, j)``,
    - ``glcm_correlation = sum_ij (i - mean)(j - mean) P(i, j) / variance`` (1 where the variance is 0,
      the limit of a window whose pairs all hold equal levels),

    and each feature is the average over the offsets that have pairs. For a symmetric ``P`` these sums
    reduce to moments of the pairs: with ``N`` pairs (a, b), ``S1 = sum(a + b)``, ``S2 = sum(a^2 + b^2)``,
    ``S11 = sum(a b)``: ``mean = S1 / 2N``, ``variance = (2N S2 - S1^2) / (2N)^2`` and
    ``correlation = (4N S11 - S1^2) / (2N S2 - S1^2)``. The moments are exact integer box sums over the
    window (summed-area tables), so the result is vectorised, independent of how an image is split
    into row blocks, and exactly 0 variance for a constant window. Pixels outside the image or NaN
    (no data) take part in no pair; a pixel that is NaN itself, or whose window has no pair, is NaN.
    Output ``(len(names), *image.shape)`` float64; mean is in grey-level units.
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"GLCM window must be an odd size >= 3, got {window}")
    unknown = [n for n in names if n not in GLCM_FEATURES]
    if unknown:
        raise ValueError(f"unknown GLCM feature(s) {unknown}: valid names are {list(GLCM_FEATURES)}")
    q = quantize(image, levels, vmin, vmax)
    if q.ndim != 2:
        raise ValueError(f"GLCM needs a 2-D image, got shape {q.shape}")
    valid = np.isfinite(q)
    height, width = q.shape
    half = window // 2
    qi = np.pad(np.where(valid, q, 0).astype(np.int64), half + 1)
    vi = np.pad(valid, half + 1)
    sums = {n: np.zeros(q.shape) for n in GLCM_FEATURES}
    used = np.zeros(q.shape, dtype=np.int64)
    for dr, dc in GLCM_OFFSETS:
        # pair anchored at p = (r, c): pixels p and p + (dr, dc); arrays padded by `half` around the image
        inner = (slice(1, -1), slice(1, -1))
        shifted = (slice(1 + dr, qi.shape[0] - 1 + dr), slice(1 + dc, qi.shape[1] - 1 + dc))
        a, b = qi[inner], qi[shifted]
        pair = (vi[inner] & vi[shifted]).astype(np.int64)
        # anchors whose pair lies inside the window centred on (r, c)
        box = (-half + max(0, -dr), half - max(0, dr), -half + max(0, -dc), half - max(0, dc))
        n = _box_sum(pair, *box, pad=half)
        s1 = _box_sum(pair * (a + b), *box, pad=half)
        s2 = _box_sum(pair * (a * a + b * b), *box, pad=half)
        s11 = _box_sum(pair * a * b, *box, pad=half)
        has = n > 0
        nn = np.where(has, n, 1)
        var_num = 2 * nn * s2 - s1 * s1  # exact integers: (2N)^2 variance
        corr_num = 4 * nn * s11 - s1 * s1
        sums["glcm_mean"] += np.where(has, s1 / (2.0 * nn), 0.0)
        sums["glcm_variance"] += np.where(has, var_num / (2.0 * nn) ** 2, 0.0)
        corr = np.divide(corr_num, var_num, out=np.ones(q.shape), where=var_num > 0)
        sums["glcm_correlation"] += np.where(has, corr, 0.0)
        used += has
    keep = valid & (used > 0)
    denom = np.where(used > 0, used, 1)
    return np.stack([np.where(keep, sums[n] / denom, np.nan) for n in names]) if names else np.empty((0, height, width))
