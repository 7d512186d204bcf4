"""Benchmark: Sentinel-2 inventory scan of N products, cold (metadata read) vs cached (stat only).

Writes N tiny but real L2A SAFE products (20 x 20 px B04 + SCL, half of them zipped) with
cropflow.simulate.sentinel2.write_l2a into a temporary folder, then times scan_s2 with an empty cache,
again with the cache, and after one new product is added. Prints the times and their ratio.

    .venv/bin/python bench/inventory_scan.py [-n 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from cropflow.grid import ProjectGrid  # noqa: E402
from cropflow.inventory import scan_s2  # noqa: E402
from cropflow.simulate.sentinel2 import write_l2a  # noqa: E402

GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5349800.0, 320200.0, 5350000.0))
T0 = datetime(2023, 5, 6, 2, 35, 51, tzinfo=timezone.utc)
TILES = ["52UCU", "52UCV", "52UDU", "52UDV"]


def write_products(folder: Path, n: int) -> None:
    refl = {"B04": np.full(GRID.shape, 0.1)}
    scl = np.full((10, 10), 4, np.uint8)
    for i in range(n):
        write_l2a(folder, platform="S2A" if i % 2 else "S2B", sensing_time=T0 + timedelta(hours=6 * i),
                  mgrs_tile=TILES[i % len(TILES)], relative_orbit=1 + i % 143, baseline="05.09", grid10=GRID,
                  reflectance=refl, scl=scl, zip=bool(i % 2))
        if (i + 1) % 500 == 0:
            print(f"  wrote {i + 1}/{n} products", flush=True)


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="number of products (default 2000)")
    parser.add_argument("--keep", type=Path, help="write the products here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        folder, cache = root / "s2", root / "inventory-cache.json"
        t_write, _ = timed(write_products, folder, args.n)
        print(f"wrote {args.n} products in {t_write:.1f} s")
        cold, df = timed(scan_s2, folder, cache)
        cached = min(timed(scan_s2, folder, cache)[0] for _ in range(3))
        write_l2a(folder, platform="S2A", sensing_time=T0 - timedelta(days=1), mgrs_tile="52UCU", relative_orbit=1,
                  baseline="05.09", grid10=GRID, reflectance={"B04": np.full(GRID.shape, 0.1)},
                  scl=np.full((10, 10), 4, np.uint8))
        one_new, df_new = timed(scan_s2, folder, cache)
        assert len(df) == args.n and len(df_new) == args.n + 1
        print(f"products            {args.n}")
        print(f"cold scan           {cold:8.3f} s  ({1e3 * cold / args.n:.2f} ms/product)")
        print(f"cached scan         {cached:8.3f} s  (best of 3)")
        print(f"cached + 1 new      {one_new:8.3f} s")
        print(f"cold / cached       {cold / cached:8.1f} x")


if __name__ == "__main__":
    main()
