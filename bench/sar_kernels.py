"""Coherence kernel throughput: summed-area boxcar vs a direct NumPy windowed sum vs memory bandwidth.

Run: .venv/bin/python bench/sar_kernels.py [size]   (prints one table; all numbers from this run)
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "workflow"))
from cropflow.sar.coherence import coherence  # noqa: E402

WINDOWS = [(3, 3), (7, 7), (15, 15), (31, 31)]
BYTES_PER_PIXEL = 2 * 8 + 4  # read two complex64 images, write one float32 coherence


def best_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def copy_bandwidth(n_bytes: int = 512 * 2**20) -> float:
    """Bytes/s of np.copyto (read + write counted) on a buffer larger than the caches."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / best_time(lambda: np.copyto(dst, src))


def direct_coherence(s1: np.ndarray, s2: np.ndarray, w: tuple[int, int]) -> np.ndarray:
    """Reference: windowed sums by sliding_window_view (cost grows with the window area)."""
    pa, pr = w[0] // 2, w[1] // 2
    pad = ((pa, w[0] - 1 - pa), (pr, w[1] - 1 - pr))

    def box(x):
        return sliding_window_view(np.pad(x, pad), w).sum(axis=(-2, -1))

    return np.abs(box(s1 * s2.conj())) / np.sqrt(box(np.abs(s1) ** 2) * box(np.abs(s2) ** 2))


def main(size: int = 2048, ref_size: int = 256) -> None:
    rng = np.random.default_rng(0)
    s1 = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))).astype(np.complex64)
    s2 = (0.8 * s1 + 0.6 * (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size)))).astype(
        np.complex64
    )
    r1, r2 = s1[:ref_size, :ref_size], s2[:ref_size, :ref_size]
    bw = copy_bandwidth()
    bound = bw / BYTES_PER_PIXEL / 1e6
    print(f"image {size}x{size} (reference {ref_size}x{ref_size}); copy bandwidth {bw / 1e9:.1f} GB/s "
          f"-> bound {bound:.0f} Mpx/s at {BYTES_PER_PIXEL} B/px")
    print(f"{'window':>8} {'SAT Mpx/s':>10} {'direct Mpx/s':>13} {'speed-up':>9} {'% of bound':>11}")
    for w in WINDOWS:
        t_sat = best_time(lambda: coherence(s1, s2, w))
        t_ref = best_time(lambda: direct_coherence(r1, r2, w), repeat=1)
        sat = size * size / t_sat / 1e6
        ref = ref_size * ref_size / t_ref / 1e6
        print(f"{w[0]:>3}x{w[1]:<4} {sat:>10.1f} {ref:>13.2f} {sat / ref:>9.1f} {100 * sat / bound:>10.1f}%")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
