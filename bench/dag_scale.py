"""Benchmark: the DAG at province scale. Times ``snakemake -n`` and checks what one new Sentinel-1 scene reruns.

Writes a province (default 70 x 70 tiles of 10 km = 4,900 tiles, 700 x 700 km in UTM 52N) with placeholder
inputs that carry what the inventory reads when the DAG is built, and empty pixels otherwise:

- Sentinel-1 seam products (``s1.engine: preprocessed``): 2 tracks x 25 passes x 2 slices = 100 scenes
  ``<scene>_C2.tif`` with real names, the RELATIVE_ORBIT and PASS tags and their footprint as a coarse (10 km
  pixel) empty GeoTIFF, and one ``<pair>_coh.tif`` per consecutive same-platform pass pair of a track;
- Sentinel-2 L2A SAFE products (``write_l2a_placeholder``): 30 dates x every MGRS tile meeting the province,
  with real names and MTD_MSIL2A.xml, empty band files and a 2 x 2 pixel SCL that gives the footprint;
- an AOI, empty parcels and cropland-mask files, and a config with the defaults of config/config.yaml but
  ``grid.block_tiles`` (--block-tiles, default 3: one stack, labels_tile and samples_tile job per 3 x 3 tiles).

Then it times ``snakemake -n`` (wall time and the child's peak RSS from ``wait4``) on the whole province (with
the inventory cache cold, then warm) and on a smaller one in the same run, marks every output of the plan done
(empty files and folders, then ``snakemake --touch`` so Snakemake records them), adds one S1 scene (a new pass
of one track, one slice, with its coherence pair) and checks that the next dry run holds only that scene's jobs
and the ones it affects.

    .venv/bin/python bench/dag_scale.py [--tiles 70 70] [--small 22 22] [--block-tiles 3] [--keep DIR] [--no-rerun]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import yaml
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from cropflow.grid import ProjectGrid, block_id, tile_id  # noqa: E402
from cropflow.simulate.scene import s2_tiles_for  # noqa: E402
from cropflow.simulate.sentinel1 import scene_name  # noqa: E402
from cropflow.simulate.sentinel2 import write_l2a_placeholder  # noqa: E402

CRS = "EPSG:32652"
TILE = 10000.0
#: south-west corner of the province (UTM 52N metres)
ORIGIN = (150000.0, 4900000.0)
YEAR = 2021
#: two Sentinel-1 tracks (relative orbit, pass, hour of the pass): the west and the east half of the province
TRACKS = ((61, "ASCENDING", 9), (134, "DESCENDING", 21))
#: absolute -> relative orbit offsets (cropflow.inventory): relative = (absolute - offset) % 175 + 1
ORBIT_OFFSET = {"S1A": 73, "S1B": 27}
FIRST_PASS = datetime(YEAR, 5, 6, tzinfo=timezone.utc)
SLICE_S = 25


@dataclass(frozen=True)
class Province:
    """A generated province: its working directory, tile counts and the S1 passes (track -> pass times)."""

    workdir: Path
    tiles_x: int
    tiles_y: int
    passes: int
    slices: int
    block_tiles: int = 1

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return ORIGIN[0], ORIGIN[1], ORIGIN[0] + self.tiles_x * TILE, ORIGIN[1] + self.tiles_y * TILE

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def tile_ids(self) -> list[str]:
        return [tile_id(ORIGIN[0] + TILE * i, ORIGIN[1] + TILE * j) for i in range(self.tiles_x)
                for j in range(self.tiles_y)]


def _absolute_orbit(platform: str, relative: int, when: datetime) -> int:
    """An absolute orbit of ``platform`` that is relative orbit ``relative``, about right for the date."""
    cycles = int((when - datetime(2016, 1, 1, tzinfo=timezone.utc)).days // 12)
    return ORBIT_OFFSET[platform] + relative - 1 + 175 * cycles


def _write_placeholder_tif(path: Path, bounds: tuple[float, float, float, float], tags: dict[str, str]) -> None:
    """An empty (nodata) GeoTIFF of 10 km pixels over ``bounds`` with ``tags``: what the S1 inventory reads."""
    left, bottom, right, top = bounds
    width, height = max(1, round((right - left) / TILE)), max(1, round((top - bottom) / TILE))
    transform = Affine((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top)
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs=CRS, transform=transform, nodata=float("nan")) as dst:
        dst.update_tags(**tags)
    os.replace(tmp, path)


def track_extent(province: Province, track: int) -> tuple[float, float]:
    """West and east edge of a track's swath: each track covers half the province and 10 km beyond it."""
    left, _, right, _ = province.bounds
    middle = (left + right) / 2
    return (left - TILE, middle + TILE) if track == 0 else (middle - TILE, right + TILE)


def slice_extent(province: Province, track: int, index: int) -> tuple[float, float, float, float]:
    """Bounds of slice ``index`` (0 = southernmost) of a pass: the province's height cut in ``slices`` parts
    overlapping by 5 km, 10 km beyond the province's edges."""
    _, bottom, _, top = province.bounds
    west, east = track_extent(province, track)
    step = (top - bottom + 2 * TILE) / province.slices
    south = bottom - TILE + index * step
    return west, max(bottom - TILE, south - 2500.0), east, min(top + TILE, south + step + 2500.0)


def pass_time(track: int, k: int) -> tuple[str, datetime]:
    """(platform, start of the first slice) of pass ``k`` of a track: S1A and S1B alternate every 6 days."""
    _, _, hour = TRACKS[track]
    return ("S1A" if k % 2 == 0 else "S1B"), FIRST_PASS + timedelta(days=6 * k, hours=hour)


def write_s1_pass(province: Province, track: int, k: int, slices: list[int] | None = None) -> list[str]:
    """Write the slices of pass ``k`` of a track (default all) and the coherence pair with the same platform's
    previous pass; returns the scene ids written."""
    folder = province.workdir / "data" / "s1"
    folder.mkdir(parents=True, exist_ok=True)
    orbit, direction, _ = TRACKS[track]
    platform, start = pass_time(track, k)
    absolute = _absolute_orbit(platform, orbit, start)
    written = []
    for index in (range(province.slices) if slices is None else slices):
        t = start + timedelta(seconds=SLICE_S * index)
        name = scene_name(platform, t, absolute, t + timedelta(seconds=SLICE_S + 2))
        _write_placeholder_tif(folder / f"{name}_C2.tif", slice_extent(province, track, index),
                               {"SCENE": name, "PLATFORM": platform, "RELATIVE_ORBIT": str(orbit), "PASS": direction})
        written.append(name)
    if k >= 2:
        ref_platform, ref_start = pass_time(track, k - 2)
        ref = scene_name(ref_platform, ref_start, _absolute_orbit(ref_platform, orbit, ref_start),
                         ref_start + timedelta(seconds=SLICE_S + 2))
        pair = f"R{orbit:03d}_{ref_start:%Y%m%d}_{start:%Y%m%d}"
        extents = [slice_extent(province, track, i) for i in (range(province.slices) if slices is None else slices)]
        bounds = (extents[0][0], min(e[1] for e in extents), extents[0][2], max(e[3] for e in extents))
        _write_placeholder_tif(folder / f"{pair}_coh.tif", bounds,
                               {"REFERENCE": ref, "SECONDARY": written[0], "RELATIVE_ORBIT": str(orbit)})
    return written


def write_s2(province: Province, dates: int) -> int:
    """Write ``dates`` L2A dates (every 5 days from 8 May, alternating S2A/S2B) over every MGRS tile of the
    province; returns the number of products."""
    folder = province.workdir / "data" / "s2"
    folder.mkdir(parents=True, exist_ok=True)
    tiles = s2_tiles_for(ProjectGrid(CRS, 10.0, province.bounds))
    for d in range(dates):
        when = datetime(YEAR, 5, 8, 2, 35, 51, tzinfo=timezone.utc) + timedelta(days=5 * d)
        for mgrs, part in tiles:
            write_l2a_placeholder(folder, crs=CRS, bounds=part.bounds, platform="S2A" if d % 2 == 0 else "S2B",
                                  sensing_time=when, mgrs_tile=mgrs, relative_orbit=89, baseline="03.00")
    return dates * len(tiles)


def write_config(province: Province) -> None:
    """config/config.yaml of the province: config/config.yaml's defaults with the province's inputs."""
    with open(REPO / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config.update({
        "aoi": "aoi.geojson",
        "legend": str(REPO / "resources" / "legend.yaml"),
        "inputs": {"s1": "data/s1", "s2": "data/s2", "parcels": "data/parcels.gpkg", "label_field": "crop",
                   "cropland_mask": "data/cropland.tif", "cache": ".cropflow/inventory-cache.json"},
    })
    config["season"] = {"start": "04-01", "end": "10-31"}
    config["s1"]["engine"] = "preprocessed"
    config["grid"]["block_tiles"] = province.block_tiles
    (province.workdir / "config").mkdir(parents=True, exist_ok=True)
    with open(province.workdir / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def write_province(workdir: Path, tiles_x: int = 70, tiles_y: int = 70, passes: int = 25, slices: int = 2,
                   s2_dates: int = 30, block_tiles: int = 1) -> Province:
    """Write a province's AOI, placeholder inputs and config into ``workdir`` (see the module docstring)."""
    province = Province(Path(workdir), tiles_x, tiles_y, passes, slices, block_tiles)
    province.workdir.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame({"name": ["province"]}, geometry=[shapely.box(*province.bounds)], crs=CRS).to_file(
        province.workdir / "aoi.geojson", driver="GeoJSON")
    data = province.workdir / "data"
    data.mkdir(exist_ok=True)
    for name in ("parcels.gpkg", "cropland.tif"):
        (data / name).touch()
    for track in range(len(TRACKS)):
        for k in range(passes):
            write_s1_pass(province, track, k)
    write_s2(province, s2_dates)
    write_config(province)
    return province


def add_s1_scene(province: Province) -> tuple[str, tuple[float, float, float, float]]:
    """One new S1 scene: the next pass of the first track, its southern slice only, with its coherence pair.
    Returns (scene id, the slice's bounds)."""
    (scene,) = write_s1_pass(province, 0, province.passes, slices=[0])
    return scene, slice_extent(province, 0, 0)


def tiles_touched(province: Province, bounds: tuple[float, float, float, float], min_area: float = 100.0
                  ) -> list[str]:
    """The ids of the province's tiles that ``bounds`` overlaps by at least ``min_area`` (one 10 m pixel)."""
    left, bottom, _, _ = province.bounds
    x, y = np.meshgrid(left + TILE * np.arange(province.tiles_x), bottom + TILE * np.arange(province.tiles_y))
    x, y = x.ravel(), y.ravel()
    hit = shapely.area(shapely.intersection(shapely.box(x, y, x + TILE, y + TILE), shapely.box(*bounds))) >= min_area
    return [tile_id(a, b) for a, b in zip(x[hit], y[hit])]


# ---------------------------------------------------------------------------------------------- snakemake


@dataclass
class DryRun:
    """One ``snakemake -n``: rule -> job count, wall and CPU (user + system) seconds, the child's peak RSS (MiB),
    every planned output and the output text. On a shared machine the CPU time is the steadier figure."""

    jobs: dict[str, int]
    seconds: float
    cpu: float
    rss_mib: float
    outputs: list[str]
    stdout: str

    @property
    def total(self) -> int:
        return sum(self.jobs.values())


def run_snakemake(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run snakemake on the real Snakefile in ``workdir``; (process, wall seconds, CPU seconds, peak RSS in MiB),
    the CPU time and RSS of the child from ``wait4``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--workflow-profile", "none", *args]
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if done.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {workdir}:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-5000:]}")
    return done, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def dry_run(workdir: Path) -> DryRun:
    """``snakemake -n`` in ``workdir``: its job stats, time, peak RSS and planned outputs."""
    proc, seconds, cpu, rss = run_snakemake(workdir, "-n")
    jobs: dict[str, int] = {}
    outputs: list[str] = []
    in_stats = False
    for line in proc.stdout.splitlines():
        if line.startswith("Job stats:"):
            in_stats = True
            continue
        m = re.fullmatch(r"\s*([a-z0-9_]+)\s+(\d+)\s*", line)
        if in_stats and m and m.group(1) not in ("total", "job", "count"):
            jobs[m.group(1)] = int(m.group(2))
        elif line.startswith("    output: "):
            outputs += [p.strip() for p in line.removeprefix("    output: ").split(",")]
    return DryRun(jobs, seconds, cpu, rss, outputs, proc.stdout)


def _is_directory(path: str) -> bool:
    """Outputs declared as directory() in the rules: zarr stores and paths without a suffix (model bundles,
    the STAC catalog, Sen2Cor and interpretation folders)."""
    return path.endswith(".zarr") or "." not in Path(path).name


def mark_done(workdir: Path, outputs: list[str]) -> float:
    """Create every planned output (empty files, empty folders), then ``snakemake --touch`` so Snakemake
    records them as made by their jobs in order; returns the touch's seconds."""
    for rel in outputs:
        path = workdir / rel
        if _is_directory(rel):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    _, seconds, _, _ = run_snakemake(workdir, "--touch", "--quiet", "all")
    return seconds


def expected_rerun(tiles: Sequence[str], touched: Sequence[str], block_tiles: int, models: int) -> dict[str, int]:
    """The jobs one new single-slice S1 scene (with its coherence pair) causes once every output is there, in a
    province of ``tiles`` in blocks of ``block_tiles`` x ``block_tiles`` (one stack, labels_tile and
    samples_tile job each): its import and features, its pair's import, the stack and samples blocks holding the
    ``touched`` tiles (samples without patches read only their block's cubes), then everything fed by the merged
    samples (training, evaluation, every tile's map, mosaics, STAC, figures).

    After a real run the inventory tables (rules inventory and inventory_report) are redone as well, because
    the product list in their params changed; ``mark_done``'s ``snakemake --touch`` records no params, so that
    trigger cannot fire on a touched plan and they are not listed here."""
    blocks = {block_id(t, block_tiles, TILE) for t in touched}
    return {
        "s1_import_scene": 1, "s1_import_pair": 1, "s1_features": 1,
        "stack": len(blocks), "samples_tile": len(blocks), "samples_merge": 3, "profiles": 1,
        "train": models, "evaluate": models, "compare": 1, "infer": models * len(tiles), "mosaic": models,
        "mosaic_uncertainty": models, "quicklook": models, "uncertainty_quicklook": models, "stac": 1,
        "areas": models, "interpret": models, "all": 1,
    }


def rate(run: DryRun) -> str:
    per = f"  ({1e3 * run.cpu / run.total:.2f} CPU s per 1,000 jobs)" if run.total else ""
    return f"{run.total:6d} jobs {run.seconds:6.1f} s wall {run.cpu:6.1f} s CPU {run.rss_mib:6.0f} MiB peak RSS{per}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs=2, default=(70, 70), metavar=("X", "Y"),
                        help="tiles of 10 km west-east and south-north (default 70 70: 4,900 tiles)")
    parser.add_argument("--small", type=int, nargs=2, default=(22, 22), metavar=("X", "Y"),
                        help="the smaller province timed in the same run (default 22 22: 484 tiles)")
    parser.add_argument("--block-tiles", type=int, default=3,
                        help="config grid.block_tiles: tiles per stack, labels_tile and samples_tile job "
                             "along each side (default 3)")
    parser.add_argument("--keep", type=Path, help="write the provinces here and keep them")
    parser.add_argument("--no-rerun", action="store_true", help="skip the one-new-scene check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        runs = {}
        for label, (tx, ty) in (("small", args.small), ("province", args.tiles)):
            t = time.perf_counter()
            province = write_province(root / label, tx, ty, block_tiles=args.block_tiles)
            print(f"{label}: wrote {province.n_tiles} tiles' inputs in {time.perf_counter() - t:.1f} s", flush=True)
            run = dry_run(province.workdir)
            runs[label] = (province, run)
            print(f"  snakemake -n (inventory cache cold): {rate(run)}", flush=True)
            print("  jobs per rule: " + ", ".join(f"{k} {v}" for k, v in sorted(run.jobs.items())), flush=True)
        (small, s_run), (big, b_run) = runs["small"], runs["province"]
        print(f"tiles {big.n_tiles / small.n_tiles:.1f}x, jobs {b_run.total / s_run.total:.1f}x, "
              f"wall {b_run.seconds / s_run.seconds:.1f}x, CPU {b_run.cpu / s_run.cpu:.1f}x, "
              f"RSS {b_run.rss_mib / s_run.rss_mib:.1f}x")
        warm = dry_run(big.workdir)
        print(f"province, snakemake -n again (inventory cache warm): {rate(warm)}", flush=True)
        if args.no_rerun:
            return
        touch = mark_done(big.workdir, b_run.outputs)
        print(f"marked {len(b_run.outputs)} outputs done (snakemake --touch {touch:.1f} s)", flush=True)
        done = dry_run(big.workdir)
        print(f"snakemake -n with everything done (cache warm): {rate(done)}", flush=True)
        scene, bounds = add_s1_scene(big)
        after = dry_run(big.workdir)
        models = b_run.jobs.get("train", 0)
        expected = expected_rerun(big.tile_ids, tiles_touched(big, bounds), big.block_tiles, models)
        expected = {k: v for k, v in expected.items() if k in b_run.jobs}
        print(f"+1 scene {scene}: {rate(after)}")
        for rule in sorted(set(after.jobs) | set(expected)):
            print(f"  {rule:24s} {after.jobs.get(rule, 0):6d}  expected {expected.get(rule, 0):6d}")
        print("only that scene's jobs and the affected ones: " + ("yes" if after.jobs == expected else "NO"))


if __name__ == "__main__":
    main()
