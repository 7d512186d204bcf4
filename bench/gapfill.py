"""Benchmark: cropflow.gapfill.interpolate_time vs a per-pixel numpy.interp loop, and knn_fill throughput.

interpolate_time: for each T of --times, a (T, N) float32 series (seeded): a seasonal curve per pixel plus
noise, observed on irregular acquisition days (nominal 5-day revisit with jitter) and hidden by clouds that
come in runs: a two-state Markov chain per pixel in time, 40 % cloudy on average, mean cloudy run 2.5
acquisitions (so a few pixels are cloudy all season and stay NaN). The reference fills each pixel of a
random subset of --subset pixels with numpy.interp over its valid steps (numpy.interp's end values give
the same nearest-value extrapolation); its time is scaled linearly to all N pixels (reported as such) and
its output must equal ours on that subset: NaN masks and observed values identical, filled values within
one float32 ulp of the pixel's largest |value| (see compare). Both are compared with the memory-bandwidth bound: T * N
float32 read + T * N float32 written, divided by the copy bandwidth of a numpy copy of a large float32
array measured in the same run (best of 5).

knn_fill: one --knn-size x --knn-size layer with 10 % of its pixels under round cloud blobs (seeded), k = 4;
prints the time (best of 3) and pixels per second (whole layer, and filled pixels).

    PYTHONPATH=workflow .venv/bin/python bench/gapfill.py [-n 400000] [--times 13 40] [--subset 20000]
                                                          [--knn-size 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from cropflow.gapfill import interpolate_time, knn_fill

CLOUD_FRACTION = 0.4
MEAN_CLOUD_RUN = 2.5  # acquisitions


def acquisition_days(t: int, rng: np.random.Generator) -> np.ndarray:
    """T increasing days of year: a 5-day revisit from day 120 with +-1 day jitter."""
    return 120.0 + 5.0 * np.arange(t) + rng.integers(-1, 2, t)


def cloudy_series(t: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(days (T,), values (T, N) float32 with NaN runs) as described in the module docstring."""
    days = acquisition_days(t, rng)
    phase = rng.uniform(150.0, 220.0, n).astype(np.float32)  # peak day per pixel
    amp = rng.uniform(0.2, 0.8, n).astype(np.float32)
    values = 0.1 + amp * np.exp(-(((days[:, None] - phase) / 40.0) ** 2)).astype(np.float32)
    values += rng.normal(0.0, 0.02, (t, n)).astype(np.float32)
    clear_to_cloud = CLOUD_FRACTION / (1 - CLOUD_FRACTION) / MEAN_CLOUD_RUN  # stationary cloudy share 40 %
    cloud_to_clear = 1.0 / MEAN_CLOUD_RUN
    cloudy = np.empty((t, n), bool)
    cloudy[0] = rng.random(n) < CLOUD_FRACTION
    for i in range(1, t):
        u = rng.random(n)
        cloudy[i] = np.where(cloudy[i - 1], u >= cloud_to_clear, u < clear_to_cloud)
    values[cloudy] = np.nan
    return days, values


def with_layout(values: np.ndarray, layout: str, rng: np.random.Generator) -> np.ndarray:
    """Re-pattern the gaps: "independent" keeps each pixel's own cloud runs (the worst case: nearly every
    pixel has its own validity pattern), "coherent" gives every pixel one of 32 patterns (spatially coherent
    clouds, as over an S2 tile), "clear" removes every gap (S1 features)."""
    if layout == "independent":
        return values
    filled = np.nan_to_num(values, nan=0.2)
    if layout == "clear":
        return filled
    templates = np.isnan(values[:, rng.choice(values.shape[1], 32, replace=False)])
    return np.where(templates[:, rng.integers(0, 32, values.shape[1])], np.float32(np.nan), filled)


def reference_interp(values: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Per-pixel loop: numpy.interp over each pixel's valid steps; pixels without any stay NaN."""
    out = np.full(values.shape, np.nan, np.float32)
    for j in range(values.shape[1]):
        v = values[:, j]
        ok = np.isfinite(v)
        if ok.any():
            out[:, j] = np.interp(days, days[ok], v[ok])
    return out


def compare(got: np.ndarray, want: np.ndarray, values: np.ndarray) -> tuple[str, bool]:
    """Ours vs the reference: NaN masks and observed values identical, filled values within 2 float32 ulps.

    Both interpolate between the same two observations, but ours computes in float32 (a weighted sum of the
    two, or their difference) while numpy.interp works in float64, so a filled value may differ by up to two
    float32 ulps of the pixel's largest |value| (more ulps of a smaller interpolated value).
    """
    observed = np.isfinite(values)
    same_nan = np.array_equal(np.isnan(got), np.isnan(want))
    same_obs = np.array_equal(got[observed], want[observed])
    filled = ~observed & ~np.isnan(want)
    ulp = np.broadcast_to(np.spacing(np.nanmax(np.abs(values), axis=0, initial=0.0)), values.shape)
    ulps = np.abs(got[filled].astype(np.float64) - want[filled]) / ulp[filled]
    max_ulp = float(ulps.max()) if ulps.size else 0.0
    ok = same_nan and same_obs and max_ulp <= 2.0
    identical = float(np.mean(got[filled] == want[filled])) if ulps.size else 1.0
    text = f"{'equal' if same_nan else 'DIFFER':>5} {'equal' if same_obs else 'DIFFER':>6} {identical:7.1%} {max_ulp:4.1f}"
    return text, ok


def cloud_blobs(size: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) mask of round blobs (radius 5..40 px) added until ``fraction`` is covered."""
    mask = np.zeros((size, size), bool)
    yy, xx = np.ogrid[:size, :size]
    while mask.mean() < fraction:
        r = rng.uniform(5, 40)
        cy, cx = rng.uniform(0, size, 2)
        y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
        mask[y0:y1, x0:x1] |= (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= r * r
    return mask


def copy_bandwidth(mib: int = 512, repeat: int = 5) -> float:
    """Bytes/s read + written by numpy copying a large float32 array into a preallocated one (best of ``repeat``)."""
    src = np.ones(mib * 2**20 // 4, np.float32)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def best_time(fn, *args, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=400_000, help="pixels per series array (default 400000)")
    parser.add_argument("--times", type=int, nargs="+", default=[13, 40], help="time steps T (default 13 40)")
    parser.add_argument("--subset", type=int, default=20_000, help="pixels run through the reference loop")
    parser.add_argument("--knn-size", type=int, default=1000, help="side of the knn_fill layer (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of ours, best kept (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    bw = copy_bandwidth()
    subset = min(args.subset, args.n)

    print(f"interpolate_time on (T, N={args.n:,d}) float32, {CLOUD_FRACTION:.0%} cloudy in runs of "
          f"{MEAN_CLOUD_RUN} steps on average; reference = per-pixel numpy.interp on {subset:,d} random pixels, "
          f"time scaled x{args.n / subset:.0f} to N")
    print(f"copy bandwidth {bw / 1e9:.2f} GB/s (numpy copy of 512 MiB float32, read + write, best of 5)\n")
    print(f"{'layout':>11} {'T':>3} {'NaN':>6} {'ours s':>8} {'ref s (scaled)':>15} {'ref/ours':>9} {'bound s':>8} "
          f"{'ours BW':>8} {'ref BW':>7} {'ours Mpx/s':>11}  {'NaN':>5} {'obs':>6} {'filled=':>7} {'ulp':>4}")
    failed = False
    for layout, t in [(lay, t) for lay in ("independent", "coherent", "clear") for t in args.times]:
        days, values = cloudy_series(t, args.n, rng)
        values = with_layout(values, layout, rng)
        t_ours, got = best_time(interpolate_time, values, days, repeat=args.repeat)
        pick = np.sort(rng.choice(args.n, subset, replace=False))
        sub = np.ascontiguousarray(values[:, pick])
        t_ref_sub, want = best_time(reference_interp, sub, days, repeat=1)
        t_ref = t_ref_sub * args.n / subset
        status, ok = compare(got[:, pick], want, sub)
        failed |= not ok
        bound = 2 * values.nbytes / bw
        print(f"{layout:>11} {t:3d} {np.isnan(values).mean():6.1%} {t_ours:8.3f} {t_ref:15.3f} {t_ref / t_ours:9.1f} "
              f"{bound:8.4f} {bound / t_ours:8.1%} {bound / t_ref:7.2%} {args.n / t_ours / 1e6:11.2f}  {status}")
    print("BW: achieved fraction of memory bandwidth = bound / time, bound = 2 T N float32 / copy bandwidth.\n"
          "On the reference pixels: NaN masks and observed values (obs) must be identical, filled values within 2\n"
          "float32 ulps of the pixel's largest |value| (filled= : share bit-identical; ulp: largest difference).")

    size = args.knn_size
    layer = np.random.default_rng(args.seed + 1).normal(0.2, 0.05, (size, size)).astype(np.float32)
    clouds = cloud_blobs(size, 0.10, np.random.default_rng(args.seed + 2))
    layer[clouds] = np.nan
    t_knn, filled = best_time(knn_fill, layer, 4, repeat=3)
    assert np.isfinite(filled).all() and np.array_equal(filled[~clouds], layer[~clouds])
    print(f"\nknn_fill (k=4) on {size} x {size}, {clouds.mean():.1%} under cloud blobs: {t_knn:.3f} s (best of 3), "
          f"{size * size / t_knn / 1e6:.2f} Mpx/s of layer, {clouds.sum() / t_knn / 1e6:.3f} Mpx/s filled")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
