"""Benchmark: tile inference of every registered model, its FLOP/s against sgemm, the Bei'an projection and the
peak memory of a tile job.

Setup (seeded, timed separately): a --rows x --cols tile of rectangular fields (25 x 25 px, a random legend class
each) whose classes follow distinct seasonal curves plus noise, written as the per-scene products the workflow
stacks: 13 S1 feature scenes (the 11 cropflow.polsar features, 12-day repeat), 12 coherence pairs (coh_vv,
coh_vh) and 20 S2 scenes (B04, B8A, B11; 30 % of each under NaN cloud blobs, JSON sidecar). The cube is written
from them by cropflow.stack.build_cube: chronological, 26 regular target dates (6-day steps from 1 May, the
Bei'an series length), 16 bands, gaps interpolated in time. Model bundles: the scikit-learn models ("rf" with
its registry defaults, "conv1d_rf" with 1 trunk epoch) are trained with cropflow.training.train on
--train-samples random pixels of the cube; the keras models are built with their registry defaults and saved as
bundles untrained (the weights do not change the arithmetic), with the normalisation fitted on the same pixels.

Measured, per model, in one run:

- end to end: cropflow.inference.infer_tile on the cube (class and probability COGs, as the workflow's infer
  rule writes them), wall time and px/s; the time split by wrapping the names infer_tile calls: "load"
  (load_trained plus one call on one pixel, which traces the keras forward function), "read wait" (the
  time the window loop waits for cropflow.inference.read_ahead's next window), "predict"
  (cropflow.inference.predict_window: validity mask, normalisation, model, uncertainty) and "write" (opening
  and closing the COG writers: overviews, COG copy); "other" is the rest (the waits for the previous window's
  write among it). "read" (cropflow.halo.read_block, run ahead in a background thread) and "write-behind"
  (the windows' writes, in a background thread while the next window is predicted) overlap the others and
  are printed beside them. The steady px/s leaves the load out (it is paid once per tile). Patch models are
  timed predict only (one patch per pixel makes a whole tile take hours on 2 cores);
- predict only: TrainedModel.predict_proba_normalised on in-memory normalised inputs in batches of --batch
  (pixel models; --patch-batch patches of --patch x --patch for patch models), at most --predict-px samples
  (8 batches of patches) and --predict-tflop estimated TFLOP, best of 2 after a warm-up call;
- keras models: forward FLOPs per pixel counted from the layer shapes (bench/measure.py, the count of
  bench/models.py) and the achieved FLOP/s of both paths as a fraction of the sgemm rate (numpy float32
  2048 x 2048 matmul, best of 5) measured right before and right after the model; the ratios use the higher
  of the two, so load from other processes during the sgemm can only lower them. conv1d_rf: its trunk's
  FLOPs only (the forest is not counted); rf: no FLOPs;
- projections for Bei'an (71.5 Mpx at 10 m, 26 time steps, tiles of 1000 x 1000 px): on these 2 cores,
  pixels / steady end-to-end px/s + one load per tile; on a GPU, the printed assumption: an NVIDIA A100's FP32
  peak (19.5 TFLOP/s, no tensor cores) reached at the predict-only fraction of sgemm measured here, at most
  50 %, with the reading and writing kept off the critical path by the CPUs of the node.

--memory instead runs the real tile job, ``python -m cropflow infer`` (tempcnn by default, --memory-model),
as a subprocess on every tile of a 1-tile county and of a 4-tile county (cubes of --memory-size x
--memory-size px, --memory-rows rows if given, 26 dates x 16 bands, each built from its own products) and
reports each job's peak resident memory: the high-water mark of the job's own address space (VmHWM, read by
the job as it exits), equal within noise across counties and at most 4 GB. Not ru_maxrss: a child forked from
this process starts its count with this process's resident set (Linux carries the pre-exec high-water mark
over into the child's rusage), which here holds the cubes built for the run, so it would report this process's
size instead of the job's.

    PYTHONPATH=workflow .venv/bin/python bench/inference.py [--models tempcnn,conv1d] [--rows 256] [--cols 1000]
    PYTHONPATH=workflow .venv/bin/python bench/inference.py --memory [--memory-size 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cropflow.models as models_mod
from cropflow import inference
from cropflow import normalisation as norm_mod
from cropflow.cube import cube_inputs, open_cube, pixel_series
from cropflow.grid import ProjectGrid
from cropflow.inference import infer_tile
from cropflow.legend import Legend
from cropflow.models import MODEL_MODULES, TrainedModel, build, get_spec, load_trained
from cropflow.polsar import FEATURES
from cropflow.raster import cog_writer, write_raster
from cropflow.sampleset import SampleSet
from cropflow.stack import build_cube, coherence_layers, regular_dates, s1_layers, s2_layers
from cropflow.training import train
from measure import best_time, blas_info, model_flops, sgemm_rate

LEGEND_PATH = ROOT / "resources" / "legend.yaml"
LEGEND = Legend.load(str(LEGEND_PATH))
BANDS = {"s1": list(FEATURES), "coh": ["coh_vv", "coh_vh"], "s2": ["B04", "B8A", "B11"]}
YEAR, FIELD, STEP_DAYS = 2023, 25, 6  # 6-day steps from 1 May to 30 Sep: 26 dates
NOISE = 2.5  # per-pixel noise (class signatures differ by about 1)
SKLEARN_PARAMS = {"conv1d_rf": {"epochs": 1}}  # rf: registry defaults
BEIAN_PX, TILE_PX = 71.5e6, 1000 * 1000
GPU = ("NVIDIA A100", 19.5e12)  # FP32 peak without tensor cores
GPU_FRACTION = 0.5  # at most this fraction of the GPU's peak is assumed
MEMORY_LIMIT = 4 * 2**30


# ------------------------------------------------------------------------------------------------ synthetic tile


def tile_grid(rows: int, cols: int, row0: int = 0, col0: int = 0) -> ProjectGrid:
    """A rows x cols grid at 10 m in UTM 52N; (row0, col0) in tiles of that size shifts it (county layouts)."""
    x0, y1 = 320000.0 + 10.0 * cols * col0, 5340000.0 - 10.0 * rows * row0
    return ProjectGrid("EPSG:32652", 10.0, (x0, y1 - 10.0 * rows, x0 + 10.0 * cols, y1))


def class_map(grid: ProjectGrid, rng: np.random.Generator) -> np.ndarray:
    """Legend class id per pixel: FIELD x FIELD px fields, each of a random class."""
    fields = rng.choice(LEGEND.ids, size=(-(-grid.height // FIELD), -(-grid.width // FIELD)))
    return np.kron(fields, np.ones((FIELD, FIELD), np.int64))[: grid.height, : grid.width]


def layer_values(classes: np.ndarray, doy: int, n_bands: int, source: int, rng: np.random.Generator) -> np.ndarray:
    """(bands, y, x) float32: per class and band, base + amplitude * a seasonal bump peaking on its own day."""
    ids = np.asarray(LEGEND.ids)
    crng = np.random.default_rng(1000 + source)  # class signatures: fixed per source, not per scene
    base, amp = crng.normal(0, 1, (ids.size, n_bands)), crng.uniform(0.3, 1.5, (ids.size, n_bands))
    peak = crng.uniform(150, 240, (ids.size, n_bands))
    signature = base + amp * np.exp(-(((doy - peak) / 35.0) ** 2))  # (class, band)
    out = signature[np.searchsorted(ids, classes)].transpose(2, 0, 1)
    return (out + rng.normal(0, NOISE, out.shape)).astype(np.float32)


def cloud_mask(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(shape, bool)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    while mask.mean() < fraction:
        r, cy, cx = rng.uniform(10, 60), rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask


def doy(day: np.datetime64) -> int:
    return int((day - np.datetime64(f"{YEAR}-01-01")).astype(int)) + 1


def write_products(folder: Path, grid: ProjectGrid, classes: np.ndarray, rng: np.random.Generator) -> dict:
    """Per-scene S1 feature, coherence and S2 rasters as the s1/s2 stages write them; returns stack layers."""
    folder.mkdir(parents=True)
    start = np.datetime64(f"{YEAR}-05-01")
    s1, coh, s2 = [], [], []
    s1_days = [start + np.timedelta64(12 * i, "D") for i in range(13)]
    for day in s1_days:
        path = folder / f"S1A_{str(day).replace('-', '')}_features.tif"
        write_raster(path, layer_values(classes, doy(day), len(BANDS["s1"]), 0, rng), grid, nodata=np.nan,
                     band_names=BANDS["s1"], tags={"START_TIME": f"{day}T21:50:12Z"})
        s1.append(str(path))
    for ref, sec in pairwise(s1_days):
        path = folder / f"R069_{str(ref).replace('-', '')}_{str(sec).replace('-', '')}_coh.tif"
        write_raster(path, layer_values(classes, doy(sec), 2, 1, rng), grid, nodata=np.nan, band_names=BANDS["coh"])
        coh.append(str(path))
    for i in range(20):
        day = start + np.timedelta64(int(7.5 * i) + int(rng.integers(0, 3)), "D")
        values = layer_values(classes, doy(day), 3, 2, rng)
        values[:, cloud_mask(grid.shape, 0.3, rng)] = np.nan
        path = folder / f"S2B_{str(day).replace('-', '')}_{i:02d}_boa.tif"
        write_raster(path, values, grid, nodata=np.nan, band_names=BANDS["s2"])
        path.with_suffix(".json").write_text(json.dumps({"scene": path.stem, "datetime": f"{day}T02:35:51Z",
                                                         "used": True}))
        s2.append(str(path))
    return {"s1": s1_layers(s1, BANDS["s1"]), "coh": coherence_layers(coh, BANDS["coh"]),
            "s2": s2_layers(s2, BANDS["s2"])}


def make_cube(folder: Path, grid: ProjectGrid, tile: str, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """The tile's products and its 26-date cube (cropflow.stack.build_cube) in ``folder``; (cube, class map)."""
    classes = class_map(grid, rng)
    layers = write_products(folder / f"products_{tile}", grid, classes, rng)
    targets = regular_dates(YEAR, "05-01", "09-30", STEP_DAYS)
    cube = folder / f"{tile}.zarr"
    build_cube(layers, BANDS, {s: targets for s in BANDS}, grid, tile, cube)
    return cube, classes


def sample_sets(cube: Path, classes: np.ndarray, n: int, rng: np.random.Generator) -> tuple[SampleSet, SampleSet]:
    """Train and validation samples: n and n // 4 distinct random pixels of the cube."""
    da = cube_inputs(open_cube(cube))["features"]
    x = pixel_series(da, slice(None))
    pick = rng.choice(x.shape[0], n + n // 4, replace=False)
    times = [str(t) for t in np.datetime_as_string(da["time"].values, unit="D")]
    inputs = {"features": {"bands": [str(b) for b in da["band"].values], "times": times}}
    y = classes.ravel()

    def split(idx: np.ndarray) -> SampleSet:
        return SampleSet(x={"features": x[idx]}, y=y[idx].astype(np.int16), parcel_id=idx,
                         tile_index=np.zeros(idx.size, np.int16), inputs=inputs, class_ids=LEGEND.ids,
                         class_names=LEGEND.names)

    return split(pick[:n]), split(pick[n:])


def make_bundle(name: str, train_set: SampleSet, val_set: SampleSet, patch: int, folder: Path) -> Path:
    """A model bundle in ``folder``: trained (scikit-learn models) or built untrained (keras models)."""
    spec = get_spec(name)
    if spec.family == "sklearn":
        train(name, train_set, val_set, SKLEARN_PARAMS.get(name, {}), 0, folder)
        return folder
    series = {k: tuple(a.shape[1:]) for k, a in train_set.x.items()}
    shapes = series if spec.kind == "pixel" else {k: (patch, patch, *s) for k, s in series.items()}
    meta = {"name": name, "family": spec.family, "kind": spec.kind, "class_ids": LEGEND.ids,
            "class_names": LEGEND.names, "inputs": train_set.inputs, "shapes": shapes, "params": {}, "seed": 0}
    norm = norm_mod.fit_inputs(train_set.x, {k: v["bands"] for k, v in train_set.inputs.items()})
    TrainedModel(build(name, shapes, len(LEGEND.ids), None, 0), meta, norm).save(folder)
    return folder


# ------------------------------------------------------------------------------------------------ measurements


class Clock:
    """Seconds spent in the wrapped calls, by part."""

    def __init__(self) -> None:
        self.seconds = {"load": 0.0, "read": 0.0, "wait": 0.0, "predict": 0.0, "write": 0.0, "behind": 0.0}
        self._read_ahead = inference.read_ahead  # before it is patched

    def wrap(self, part: str, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - t

        return timed

    def load(self, path):
        """load_trained, then one prediction on one pixel (traces the keras forward function)."""
        trained = load_trained(path)
        trained.predict_proba({k: np.zeros((1, *s), np.float32) for k, s in trained.input_shapes.items()})
        return trained

    def read_ahead(self, read, items):
        """inference.read_ahead (called at once: it starts the first read) whose waits for the next window count
        as "wait" (the reads themselves, in the background thread, count as "read")."""
        return self._waits(self._read_ahead(read, items))

    def _waits(self, windows):
        while True:
            t = time.perf_counter()
            try:
                item = next(windows)
            except StopIteration:
                return
            finally:
                self.seconds["wait"] += time.perf_counter() - t
            yield item

    @contextlib.contextmanager
    def writer(self, *args, **kwargs):
        """cog_writer whose opening and closing (overviews, COG copy) count as "write", its window writes (in the
        write-behind thread) as "behind"."""
        t = time.perf_counter()
        with cog_writer(*args, **kwargs) as w:
            self.seconds["write"] += time.perf_counter() - t
            write = w.write
            w.write = self.wrap("behind", write)
            yield w
            t = time.perf_counter()
        self.seconds["write"] += time.perf_counter() - t


@contextlib.contextmanager
def patched(module, **replacements):
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def time_infer_tile(cube: Path, bundle: Path, out: Path, window_rows: int, batch: int) -> tuple[float, dict]:
    """(wall s, seconds by part) of one infer_tile run writing class, uncertainty and probability COGs."""
    clock = Clock()
    with (patched(models_mod, load_trained=clock.wrap("load", clock.load)),
          patched(inference, read_block=clock.wrap("read", inference.read_block), read_ahead=clock.read_ahead,
                  predict_window=clock.wrap("predict", inference.predict_window), cog_writer=clock.writer)):
        t = time.perf_counter()
        infer_tile(cube, bundle, out / "class.tif", out / "proba.tif", window_rows, batch, legend=LEGEND,
                   out_uncertainty=out / "uncertainty.tif")
        wall = time.perf_counter() - t
    return wall, clock.seconds


def predict_inputs(trained: TrainedModel, series: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    """n normalised samples of the model's shapes from cube pixel series (patches: a pixel's series repeated)."""
    pick = series[rng.choice(series.shape[0], n, replace=n > series.shape[0])]
    xn, _ = norm_mod.apply_inputs({"features": pick}, trained.normalisation)
    shape = trained.input_shapes["features"]
    if len(shape) == 4:
        xn = {k: np.ascontiguousarray(np.broadcast_to(v[:, None, None], (n, *shape))) for k, v in xn.items()}
    return xn


@dataclass
class Row:
    model: str
    kind: str
    flops: int | None  # forward FLOPs per pixel (keras; conv1d_rf: its trunk)
    sgemm: float  # the higher of the rates measured before and after
    predict_n: int
    predict_rate: float  # px/s
    pixels: int = 0  # infer_tile pixels (0: not run)
    wall: float = 0.0
    parts: dict | None = None

    @property
    def steady_rate(self) -> float:
        return self.pixels / (self.wall - self.parts["load"])


def bench_model(name: str, bundle: Path, cube: Path, series: np.ndarray, out: Path, args,
                rng: np.random.Generator) -> Row:
    spec = get_spec(name)
    before = sgemm_rate()
    trained = load_trained(bundle)
    flops = None
    if spec.family == "keras":
        flops = model_flops(trained.model)
    elif hasattr(trained.model, "extractor_"):
        flops = model_flops(trained.model.extractor_)
    batch = args.batch if spec.kind == "pixel" else args.patch_batch
    per_batch = (flops or 1) * batch
    most = args.predict_px if spec.kind == "pixel" else 8 * batch  # patches: about 200 kB each
    n = batch * max(1, min(most // batch, int(args.predict_tflop * 1e12 // per_batch)))
    xn = predict_inputs(trained, series, n, rng)
    trained.predict_proba_normalised({k: v[:batch] for k, v in xn.items()}, batch)  # warm-up: tracing
    predict_rate = n / best_time(lambda: trained.predict_proba_normalised(xn, batch), 2)
    del xn
    row = Row(name, spec.kind, flops, 0.0, n, predict_rate)
    if spec.kind == "pixel":
        out.mkdir()
        row.wall, row.parts = time_infer_tile(cube, bundle, out, args.window_rows, args.batch)
        row.pixels = args.rows * args.cols
    row.sgemm = max(before, sgemm_rate())
    return row


# ------------------------------------------------------------------------------------------------ report


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds / 60:,.1f} min"


def print_report(rows: list[Row], args) -> None:
    header = ["model", "kind", "MFLOP/px", "predict px/s", "predict %sgemm", "e2e px/s", "steady px/s",
              "e2e %sgemm", "load %", "read %", "write-behind %", "read wait %", "predict %", "write %", "other %",
              "sgemm GF/s"]
    table = []
    for r in rows:
        pct = (lambda rate: f"{r.flops * rate / r.sgemm:.1%}") if r.flops else (lambda rate: "-")
        cells = [r.model, r.kind, f"{r.flops / 1e6:.2f}" if r.flops else "-", f"{r.predict_rate:,.0f}",
                 pct(r.predict_rate)]
        if r.pixels:
            shares = [r.parts[p] / r.wall for p in ("load", "wait", "predict", "write")]
            cells += [f"{r.pixels / r.wall:,.0f}", f"{r.steady_rate:,.0f}", pct(r.steady_rate), f"{shares[0]:.0%}",
                      f"{r.parts['read'] / r.wall:.0%}", f"{r.parts['behind'] / r.wall:.0%}",
                      *(f"{s:.0%}" for s in shares[1:]), f"{1 - sum(shares):.0%}"]
        else:
            cells += ["-"] * 10
        table.append([*cells, f"{r.sgemm / 1e9:.1f}"])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    for line in [header, *table]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    print(f"predict: TrainedModel.predict_proba_normalised on in-memory inputs, batches of {args.batch} px "
          f"({args.patch_batch} patches of {args.patch} x {args.patch}), best of 2. e2e: infer_tile on the "
          f"{args.rows} x {args.cols} cube, windows of {args.window_rows} rows, class + probability COGs; steady: "
          "without the load. read: the windows' reads, ahead of the prediction in a background thread; read wait: "
          "the time the prediction waited for them; write-behind: the windows' writes, in a background thread "
          "while the next window is predicted. %sgemm: FLOPs/px x px/s over the sgemm rate measured around "
          "the model. Patch "
          "models: no infer_tile (pixel series only), their px/s is centre pixels, one patch each.")

    tiles = math.ceil(BEIAN_PX / TILE_PX)
    print(f"\nBei'an at 10 m: {BEIAN_PX / 1e6:.1f} Mpx, 26 time steps, {tiles} tiles of 1000 x 1000 px")
    print(f"GPU assumption: {GPU[0]}, FP32 peak {GPU[1] / 1e12:.1f} TFLOP/s (no tensor cores), reached at the "
          f"model's predict-only fraction of sgemm measured here, at most {GPU_FRACTION:.0%}; the node's CPUs read "
          "and write fast enough")
    for r in rows:
        if r.pixels:
            cpu = BEIAN_PX / r.steady_rate + tiles * r.parts["load"]
            cpu_text = f"{hours(cpu)} on these 2 cores (e2e)"
        else:
            cpu = BEIAN_PX / r.predict_rate
            cpu_text = f"{hours(cpu)} on these 2 cores (predict only, no tile path)"
        gpu_text = "no FLOP count: CPU only"
        if r.flops:
            fraction = min(r.flops * r.predict_rate / r.sgemm, GPU_FRACTION)
            px_per_gpu_hour = GPU[1] * fraction / r.flops * 3600
            gpu_text = (f"{px_per_gpu_hour / 1e6:,.0f} Mpx per GPU-hour, {BEIAN_PX / px_per_gpu_hour:.2g} "
                        "GPU-hours for Bei'an")
        print(f"  {r.model:<12} {cpu_text}; {gpu_text}")


# ------------------------------------------------------------------------------------------------ memory mode


#: runs ``python -m cropflow`` and prints the high-water mark of its resident memory as it exits
_HWM_SHIM = """
import atexit, runpy, sys

def _hwm():
    with open("/proc/self/status") as f:
        print(next(l for l in f if l.startswith("VmHWM")).strip(), file=sys.stderr, flush=True)

atexit.register(_hwm)
sys.argv[0] = "cropflow"
runpy.run_module("cropflow", run_name="__main__", alter_sys=True)
"""


def peak_rss(args: list[str], env: dict) -> tuple[float, float]:
    """(wall s, peak resident memory in bytes) of ``python -m cropflow *args`` in a subprocess, from its own VmHWM."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _HWM_SHIM, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"cropflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    (kib,) = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VmHWM:")][-1:]
    return wall, kib * 1024.0


def memory_mode(args, root: Path) -> None:
    size, rows, model = args.memory_size, args.memory_rows or args.memory_size, args.memory_model
    rng = np.random.default_rng(args.seed)
    counties = {"1-tile county": [(0, 0)], "4-tile county": [(0, 0), (0, 1), (1, 0), (1, 1)]}
    t = time.perf_counter()
    cubes = {}
    for county, tiles in counties.items():
        folder = root / county.replace(" ", "_")
        folder.mkdir()
        cubes[county] = [make_cube(folder, tile_grid(rows, size, *rc), f"T{rc[0]}{rc[1]}", rng) for rc in tiles]
    cube, classes = cubes["1-tile county"][0]
    print(f"setup: {sum(map(len, cubes.values()))} cubes of {rows} x {size} px, 26 dates x 16 bands, in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    bundle = make_bundle(model, *sample_sets(cube, classes, args.train_samples, rng), args.patch, root / "model")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    peaks = {}
    for county, tiles in cubes.items():
        for i, (tile_cube, _) in enumerate(tiles):
            out = tile_cube.with_suffix("")
            command = ["infer", "--cube", str(tile_cube), "--model-dir",
                       str(bundle), "--legend", str(LEGEND_PATH), "--window-rows", str(args.window_rows),
                       "--batch-size", str(args.batch), "--threads", "2", "--out-class", f"{out}_class.tif",
                       "--out-proba", f"{out}_proba.tif"]
            wall, rss = peak_rss(command, env)
            peaks.setdefault(county, []).append(rss)
            print(f"  {county}, tile {i + 1}/{len(tiles)}: {wall:.0f} s, peak RSS {rss / 2**30:.2f} GiB", flush=True)
    one, four = max(peaks["1-tile county"]), max(peaks["4-tile county"])
    spread = abs(four - one) / one
    print(f"\npeak RSS of a {model} tile job ({rows} x {size} px, windows of {args.window_rows} rows, class + "
          f"probability COGs): 1-tile county {one / 2**30:.2f} GiB, 4-tile county {four / 2**30:.2f} GiB "
          f"(max over its 4 jobs; difference {spread:.1%})")
    print(f"independent of county size (within 10 %): {'yes' if spread <= 0.10 else 'NO'}; "
          f"at most 4 GiB: {'yes' if max(one, four) <= MEMORY_LIMIT else 'NO'}")


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    parser.add_argument("--rows", type=int, default=1000, help="cube rows (default 1000, a tile's height)")
    parser.add_argument("--cols", type=int, default=1000, help="cube columns (default 1000, a tile's width)")
    parser.add_argument("--window-rows", type=int, default=256, help="infer_tile window rows (default 256)")
    parser.add_argument("--batch", type=int, default=4096, help="predict batch of pixel models (default 4096)")
    parser.add_argument("--patch", type=int, default=11, help="patch side of the patch models (default 11)")
    parser.add_argument("--patch-batch", type=int, default=128, help="predict batch of patch models (default 128)")
    parser.add_argument("--predict-px", type=int, default=65536, help="predict-only samples, at most (default 65536)")
    parser.add_argument("--predict-tflop", type=float, default=0.3,
                        help="predict-only estimated TFLOP, at most (default 0.3; at least one batch)")
    parser.add_argument("--train-samples", type=int, default=4000, help="training pixels (default 4000)")
    parser.add_argument("--memory", action="store_true", help="peak memory of tile jobs in 1- and 4-tile counties")
    parser.add_argument("--memory-size", type=int, default=1000, help="--memory tile side in px (default 1000)")
    parser.add_argument("--memory-rows", type=int, help="--memory tile rows (default: --memory-size)")
    parser.add_argument("--memory-model", default="tempcnn", help="--memory model (default tempcnn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the products, cubes and models here and keep them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    names = args.models.split(",") if args.models else list(MODEL_MODULES)
    for name in names:
        get_spec(name)  # ValueError listing the registered models

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if args.memory:
            memory_mode(args, root)
            return
        rng = np.random.default_rng(args.seed)
        load_before = os.getloadavg()
        t = time.perf_counter()
        cube, classes = make_cube(root, tile_grid(args.rows, args.cols), "T", rng)
        shape = open_cube(cube)["features"].shape
        print(f"setup: 45 products and cube {shape} (time, band, y, x) in {time.perf_counter() - t:.0f} s; "
              f"{os.cpu_count()} cores; numpy BLAS {blas_info()}", flush=True)
        train_set, val_set = sample_sets(cube, classes, args.train_samples, rng)
        series = pixel_series(cube_inputs(open_cube(cube))["features"], slice(0, min(args.rows, 64)))
        rows = []
        for name in names:
            t = time.perf_counter()
            bundle = make_bundle(name, train_set, val_set, args.patch, root / f"model_{name}")
            rows.append(bench_model(name, bundle, cube, series, root / f"maps_{name}", args, rng))
            print(f"  {name}: {time.perf_counter() - t:.0f} s (1-min load {os.getloadavg()[0]:.2f})", file=sys.stderr,
                  flush=True)
        print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; after "
              f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
        print_report(rows, args)


if __name__ == "__main__":
    main()
