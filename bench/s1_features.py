"""Benchmark: the 11 per-pixel S1 features of cropflow.polsar.compute_features vs batched numpy.linalg.eigh.

Synthesises an N x N speckle-filtered C2 tile (seeded): every pixel has its own covariance (VV about -10 dB,
VH about -17 dB, complex VV/VH correlation |rho| < 0.7 with a random phase) and C2 is the average of L complex
Gaussian looks, i.e. a scaled complex Wishart matrix, Hermitian and positive semi-definite. The left 1 % of
the columns is zero (swath edge, no data). Input is what cropflow.s1 reads: four float32 bands C11, C22,
C12_re, C12_im. Both sides start from those bands and return 11 float32 features per pixel:

- ours:      c12 = re + 1j im, then compute_features(c11, c22, c12, all 11 names) (as cropflow.s1 does),
- reference: the (N*N, 2, 2) complex128 matrices, numpy.linalg.eigh for H/A/alpha and DpRVI, and the
             textbook formulas for sigma0, cross ratio, RVI and m-chi.

Prints both times (best of --repeat), their ratio, the largest difference per feature (absolute and relative
to the feature's largest |value|; both must agree to 1e-5), and each side against the memory-bandwidth
bound: (4 + 11) float32 per pixel read + written, divided by the copy bandwidth of a numpy copy of a large
float32 array measured in the same run (best of 5).

    PYTHONPATH=workflow .venv/bin/python bench/s1_features.py [--size 2000] [--looks 10] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from cropflow.polsar import FEATURES, compute_features

NAMES = list(FEATURES)  # all 11 features
TOLERANCE = 1e-5  # max |ours - ref| / max |ref| per feature


def synthetic_c2(n: int, looks: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """C11, C22, C12_re, C12_im (float32, n x n): L-look averages of correlated complex Gaussian VV/VH pairs."""
    rng = np.random.default_rng(seed)
    shape = (n, n)
    s11 = (10 ** (rng.normal(-10.0, 3.0, shape) / 10)).astype(np.float32)  # VV power
    s22 = (10 ** (rng.normal(-17.0, 3.0, shape) / 10)).astype(np.float32)  # VH power
    rho = (rng.uniform(0.0, 0.7, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)
    # Cholesky factor of [[s11, r sqrt(s11 s22)], [conj, s22]]: k1 = sqrt(s11) z1, k2 = sqrt(s22) (conj(r) z1 + ...)
    f1, f2 = np.sqrt(s11), np.sqrt(s22)
    g = np.sqrt(1.0 - np.abs(rho) ** 2).astype(np.float32)
    c11, c22 = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    c12 = np.zeros(shape, np.complex64)
    scale = np.float32(np.sqrt(0.5))
    for _ in range(looks):
        z1 = (rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)) * scale
        z2 = (rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)) * scale
        k1 = f1 * z1
        k2 = f2 * (np.conj(rho) * z1 + g * z2)
        c11 += (k1 * np.conj(k1)).real
        c22 += (k2 * np.conj(k2)).real
        c12 += k1 * np.conj(k2)
    c11, c22, c12 = c11 / looks, c22 / looks, c12 / looks
    edge = max(1, n // 100)  # swath edge: no data
    c11[:, :edge] = c22[:, :edge] = 0.0
    c12[:, :edge] = 0.0
    return c11, c22, np.ascontiguousarray(c12.real), np.ascontiguousarray(c12.imag)


def ours(c11: np.ndarray, c22: np.ndarray, re: np.ndarray, im: np.ndarray) -> np.ndarray:
    c12 = re.astype(np.float64) + 1j * im.astype(np.float64)  # as cropflow.s1 builds C12
    return compute_features(c11, c22, c12, NAMES)


def reference(c11: np.ndarray, c22: np.ndarray, re: np.ndarray, im: np.ndarray) -> np.ndarray:
    """Plain numpy: batched eigh on (P, 2, 2) complex matrices for the eigen-based features."""
    a, b = c11.astype(np.float64).ravel(), c22.astype(np.float64).ravel()
    c = re.astype(np.float64).ravel() + 1j * im.astype(np.float64).ravel()
    valid = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & (a > 0) & (b > 0)
    a, b, c = np.where(valid, a, 1.0), np.where(valid, b, 1.0), np.where(valid, c, 0.0)
    mat = np.empty((a.size, 2, 2), np.complex128)
    mat[:, 0, 0], mat[:, 1, 1], mat[:, 0, 1], mat[:, 1, 0] = a, b, c, np.conj(c)
    w, v = np.linalg.eigh(mat)  # ascending eigenvalues, eigenvectors in columns
    del mat
    l1, l2 = w[:, 1], np.maximum(w[:, 0], 0.0)
    e1_0, e2_0 = np.abs(v[:, 0, 1]), np.abs(v[:, 0, 0])  # first components of the eigenvectors of l1, l2
    del v, w
    span = l1 + l2
    p1, p2 = l1 / span, l2 / span
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p1 > 0, p1 * np.log2(p1), 0.0) + np.where(p2 > 0, p2 * np.log2(p2), 0.0)
    h = np.clip(-plogp, 0.0, 1.0)
    aniso = (p1 - p2) / (p1 + p2)
    alpha = np.degrees(p1 * np.arccos(np.clip(e1_0, 0, 1)) + p2 * np.arccos(np.clip(e2_0, 0, 1)))
    dp_m = np.sqrt(np.clip(1.0 - 4.0 * l1 * l2 / (span * span), 0.0, 1.0))
    dprvi = 1.0 - dp_m * l1 / span
    g0, g1, g2, g3 = a + b, a - b, 2.0 * c.real, -2.0 * c.imag
    pol = np.sqrt(g1 ** 2 + g2 ** 2 + g3 ** 2)
    m = np.clip(pol / g0, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sin2chi = np.clip(np.where(pol > 0, g3 / pol, 0.0), -1.0, 1.0)
    feats = {
        "vv_db": 10 * np.log10(a), "vh_db": 10 * np.log10(b), "cross_ratio": 10 * np.log10(b / a),
        "entropy": h, "anisotropy": aniso, "alpha": alpha,
        "mchi_s": np.sqrt(m * g0 * (1 - sin2chi) / 2), "mchi_d": np.sqrt(m * g0 * (1 + sin2chi) / 2),
        "mchi_v": np.sqrt(g0 * (1 - m)), "dprvi": dprvi, "rvi": 4 * b / (a + b),
    }
    out = np.empty((len(NAMES), *c11.shape), np.float32)
    for i, name in enumerate(NAMES):
        out[i] = np.where(valid, feats[name], np.nan).reshape(c11.shape)
    return out


def best_time(fn, *args, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None  # free the previous result before the next run
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def copy_bandwidth(mib: int = 512, repeat: int = 5) -> float:
    """Bytes/s read + written by numpy copying a large float32 array into a preallocated one (best of ``repeat``)."""
    src = np.ones(mib * 2**20 // 4, np.float32)
    dst = np.zeros_like(src)
    best = min(_timed_copy(dst, src) for _ in range(repeat))
    return 2 * src.nbytes / best


def _timed_copy(dst: np.ndarray, src: np.ndarray) -> float:
    t = time.perf_counter()
    np.copyto(dst, src)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000, help="tile side N in pixels (default 2000)")
    parser.add_argument("--looks", type=int, default=10, help="looks averaged into each C2 (default 10)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per side, best kept (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t = time.perf_counter()
    bands = synthetic_c2(args.size, args.looks, args.seed)
    pixels = args.size * args.size
    print(f"synthesised a {args.size} x {args.size} C2 tile ({args.looks} looks) in {time.perf_counter() - t:.1f} s")
    bw = copy_bandwidth()
    t_ours, got = best_time(ours, *bands, repeat=args.repeat)
    t_ref, want = best_time(reference, *bands, repeat=args.repeat)

    print(f"\n{'feature':<12} {'max |diff|':>11} {'rel to max|ref|':>16} {'NaN masks':>10} {'bit-identical':>14}")
    worst = 0.0
    for i, name in enumerate(NAMES):
        same_mask = np.array_equal(np.isnan(got[i]), np.isnan(want[i]))
        diff = np.abs(got[i].astype(np.float64) - want[i])
        max_diff = float(np.nanmax(diff))
        rel = max_diff / float(np.nanmax(np.abs(want[i])))
        worst = max(worst, rel if same_mask else np.inf)
        ok = ~np.isnan(want[i])
        identical = float(np.mean(got[i][ok] == want[i][ok]))
        print(f"{name:<12} {max_diff:11.3e} {rel:16.3e} {'equal' if same_mask else 'DIFFER':>10} {identical:14.4%}")

    moved = pixels * (4 + len(NAMES)) * 4  # bytes: 4 float32 in, 11 float32 out per pixel
    bound = moved / bw
    print(f"\npixels                      {pixels:>12,d}")
    print(f"ours (compute_features)     {t_ours:9.3f} s   {pixels / t_ours / 1e6:7.2f} Mpx/s  (best of {args.repeat})")
    print(f"reference (batched eigh)    {t_ref:9.3f} s   {pixels / t_ref / 1e6:7.2f} Mpx/s  (best of {args.repeat})")
    print(f"reference / ours            {t_ref / t_ours:9.2f} x")
    print(f"copy bandwidth              {bw / 1e9:9.2f} GB/s (numpy copy of 512 MiB float32, read + write, best of 5)")
    print(f"bandwidth bound             {bound:9.3f} s   ({moved / 1e6:.0f} MB: 15 float32 per pixel)")
    print(f"achieved fraction of memory bandwidth: ours {bound / t_ours:6.1%}   reference {bound / t_ref:6.1%}")
    verdict = "PASS" if worst <= TOLERANCE else "FAIL"
    print(f"agreement                   {verdict}: worst relative difference {worst:.2e} (tolerance {TOLERANCE:.0e})")
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
