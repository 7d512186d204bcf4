"""Coherence kernel throughput: summed-area boxcar vs a direct NumPy windowed sum vs memory bandwidth.

The bound is the memory traffic the kernel cannot avoid: two complex64 images read and one float32
coherence written, 20 B/px, at the copy bandwidth measured in the same run (the larger of a numpy copy and
a copy split between the numba threads; read + write counted). % of bound = achieved Mpx/s / (bandwidth /
20 B).

Measured on the 2-core development VM (numba threads = 2, 2048 x 2048, windows 3x3 to 31x31, several runs):
750-870 Mpx/s, i.e. 36-42 % of the bound when the copy runs at its usual 41-46 GB/s; in one run the
2-thread copy reached 66 GB/s and the same kernel times were 23-25 % of that bound. The previous kernel
ran at 89-206 Mpx/s (4-10 %) on the same VM. The kernel is compute-bound: about 2.5 thread-ns per pixel where
the bound allows 0.95. Most of it is the column update (the products of the rows entering and leaving the
azimuth window, vectorised); the prefix sums along each row are serial (four float64 dependency chains) and
prefetch the next row meanwhile. The time does not depend on the window size (the table prints the spread).

Run: .venv/bin/python bench/sar_kernels.py [size]   (prints one table; all numbers from this run)
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import numba
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "workflow"))
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from measure import copy_bandwidth
from cropflow.sar.coherence import (
    _coherence_magnitude,
    _column_update,
    _prefix_sums,
    coherence,
)

WINDOWS = [(3, 3), (3, 10), (7, 7), (15, 15), (31, 31)]
BYTES_PER_PIXEL = 2 * 8 + 4  # read two complex64 images, write one float32 coherence


def best_time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@numba.njit(parallel=True)
def _stages(x, y, nan_row, wa, wr, out, blocks, stages):
    """The row loop of the coherence kernel (same blocks of rows per thread) running only its first
    ``stages`` stages: 1 column updates, 2 + prefix sums along the row (which also prefetch the next row),
    3 + coherence from the window sums."""
    h = x.shape[0]
    w = x.shape[1] // 2
    ba, br = wa // 2, wr // 2
    rows = (h + blocks - 1) // blocks
    for k in numba.prange(blocks):
        r0, r1 = k * rows, min(h, (k + 1) * rows)
        col = np.zeros((4, w + wr))
        cnt = np.zeros(w + wr, np.int32)
        inner = slice(br + 1, br + 1 + w)
        c0, c1, c2, c3, cn = col[0, inner], col[1, inner], col[2, inner], col[3, inner], cnt[inner]
        prefix = np.empty((4, w + wr))
        for i in range(r0, r1):
            enter, leave = i - ba + wa - 1, i - ba - 1
            xe, ye = (x[enter], y[enter]) if enter < h else (nan_row, nan_row)
            xl, yl = (x[leave], y[leave]) if leave >= 0 else (nan_row, nan_row)
            _column_update(xe, ye, xl, yl, c0, c1, c2, c3, cn)
            if stages >= 2:
                following = min(enter + 1, h - 1)
                _prefix_sums(col[0], col[1], col[2], col[3], prefix[0], prefix[1], prefix[2], prefix[3],
                             x[following], y[following])
            if stages >= 3:
                _coherence_magnitude(prefix[0, wr:], prefix[1, wr:], prefix[2, wr:], prefix[3, wr:],
                                     prefix[0, :w], prefix[1, :w], prefix[2, :w], prefix[3, :w], out[i])


def stage_times(s1: np.ndarray, s2: np.ndarray, window: tuple[int, int]) -> list[float]:
    """Seconds of the kernel's row loop cut after each of its three stages (see :func:`_stages`)."""
    x, y = s1.view(np.float32), s2.view(np.float32)
    nan_row = np.full(x.shape[1], np.nan, np.float32)
    out = np.empty(s1.shape, np.float32)
    blocks = min(s1.shape[0], numba.get_num_threads())
    _stages(x, y, nan_row, window[0], window[1], out, blocks, 3)
    return [best_time(lambda k=k: _stages(x, y, nan_row, window[0], window[1], out, blocks, k)) for k in (1, 2, 3)]


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
    load = os.getloadavg()[0]
    numpy_bw, threaded_bw = copy_bandwidth()
    bw = max(numpy_bw, threaded_bw)
    bound = bw / BYTES_PER_PIXEL / 1e6
    print(f"image {size}x{size} complex64 (reference {ref_size}x{ref_size}); numba threads "
          f"{numba.get_num_threads()} of {os.cpu_count()} cores; load average before the run {load:.2f}")
    print(f"copy bandwidth: numpy {numpy_bw / 1e9:.1f} GB/s, "
          f"{numba.get_num_threads()}-thread {threaded_bw / 1e9:.1f} GB/s "
          f"-> bound {bound:.0f} Mpx/s at {BYTES_PER_PIXEL} B/px (2 x complex64 in, float32 out)")
    print(f"{'window':>8} {'ours ms':>8} {'ours Mpx/s':>11} {'direct Mpx/s':>13} {'speed-up':>9} {'% of bound':>11}")
    times = []
    coherence(s1, s2, WINDOWS[0])  # compile / load the cached kernel outside the timing
    for w in WINDOWS:
        t_ours = best_time(lambda w=w: coherence(s1, s2, w))
        t_ref = best_time(lambda w=w: direct_coherence(r1, r2, w), repeat=1)
        times.append(t_ours)
        ours = size * size / t_ours / 1e6
        ref = ref_size * ref_size / t_ref / 1e6
        print(f"{w[0]:>3}x{w[1]:<4} {1e3 * t_ours:8.2f} {ours:>11.1f} {ref:>13.2f} {ours / ref:>9.1f} "
              f"{100 * ours / bound:>10.1f}%")
    best = size * size / min(times) / 1e6
    print(f"window independence: slowest / fastest window time = {max(times) / min(times):.2f}")
    t1, t2, t3 = stage_times(s1, s2, (3, 10))
    threads = numba.get_num_threads()
    per_px = 1e9 * threads / (size * size)  # thread-ns per pixel
    print(f"where the time goes (window 3x10, thread-ns per pixel, cumulative; the bound allows "
          f"{1e3 * threads / bound:.2f}, 40% of it {1e3 * threads / bound / 0.4:.2f}):")
    print(f"  column updates alone (vectorised products of the rows entering and leaving)  {t1 * per_px:6.2f}")
    print(f"  + prefix sums along each row (serial; they prefetch the next row read)       {t2 * per_px:6.2f}")
    print(f"  + coherence from the window sums (vectorised) = the kernel                   {t3 * per_px:6.2f}")
    print(f"reached {100 * size * size / max(times) / 1e6 / bound:.1f}-{100 * best / bound:.1f}% of the "
          f"memory-bandwidth bound (goal 40%); load average after the run {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
