"""Benchmark: end-to-end tile inference (cropflow.inference.infer_tile) for a random forest and a TempCNN.

Setup (seeded, timed separately): a --size x --size tile of rectangular fields (25 x 25 px, a random legend
class each) whose classes follow distinct seasonal curves plus noise, written as the per-scene products the
workflow stacks: 13 S1 feature scenes (the 11 cropflow.polsar features, 12-day repeat), 12 coherence pairs
(coh_vv, coh_vh) and 20 S2 scenes (B04, B8A, B11; 30 % of each under NaN cloud blobs, JSON sidecar). The
cube is built from them with cropflow.stack.build_cube: chronological, 13 regular target dates, 16 bands,
gaps interpolated in time. Both models are trained with cropflow.training.train on --train-samples random
pixels of the cube (validation: a quarter as many): "rf" with 50 trees, "tempcnn" for 1 epoch.

Measured, per model, in one run:

- infer_tile wall time (class COG only, best of --repeat) and pixels/s;
- the shares of that time spent reading the cube (infer_tile's own cropflow.halo.read_block calls) and
  predicting (its cropflow.inference.predict_window calls), timed by wrapping both names during the run;
  the rest is model loading, COG writing and overhead. As a cross-check the reads are also timed alone:
  pixel_series on the same row windows, without a model;
- TempCNN only: model FLOPs per pixel counted from the layer shapes (multiply-adds of the Conv1D layers,
  2 k c_in c_out T each, and of the Dense layers, 2 in out each; batch norm, ReLU and softmax not counted),
  and the achieved FLOP/s (predicting and end to end) as a fraction of the sgemm rate of numpy's float32
  matmul of two 2048 x 2048 matrices measured in the same run (best of 3).

The cube was just written, so the reads hit the page cache (decompression and copies, not disk).

    PYTHONPATH=workflow .venv/bin/python bench/inference.py [--size 500] [--train-samples 4000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from cropflow import inference
from cropflow.cube import cube_inputs, open_cube, pixel_series
from cropflow.grid import ProjectGrid
from cropflow.inference import infer_tile
from cropflow.legend import Legend
from cropflow.models import load_trained
from cropflow.polsar import FEATURES
from cropflow.raster import row_windows, write_raster
from cropflow.sampleset import SampleSet
from cropflow.stack import (
    build_cube,
    coherence_layers,
    regular_dates,
    s1_layers,
    s2_layers,
)
from cropflow.training import train

LEGEND = Legend.load(str(Path(__file__).resolve().parents[1] / "resources" / "legend.yaml"))
BANDS = {"s1": list(FEATURES), "coh": ["coh_vv", "coh_vh"], "s2": ["B04", "B8A", "B11"]}
YEAR, FIELD = 2023, 25
NOISE = 2.5  # per-pixel noise (class signatures differ by about 1): the random forest reaches about 0.9 accuracy
MODELS = {"rf": {"n_estimators": 50}, "tempcnn": {"epochs": 1}}


# ------------------------------------------------------------------------------------------------ synthetic tile


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


def doy(day: np.datetime64) -> int:
    return int((day - np.datetime64(f"{YEAR}-01-01")).astype(int)) + 1


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


# ------------------------------------------------------------------------------------------------ measurements


def sgemm_rate(n: int = 2048, repeat: int = 3) -> float:
    """FLOP/s of numpy's float32 matmul of two n x n matrices (2 n^3 FLOPs), best of ``repeat``."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def keras_flops_per_pixel(model) -> int:
    """Multiply-add FLOPs of one sample through the Conv1D and Dense layers of a keras model."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            k, c_in, c_out = layer.kernel.shape
            t_out = layer.output.shape[1]
            total += 2 * k * c_in * c_out * t_out
        elif isinstance(layer, keras.layers.Dense):
            n_in, n_out = layer.kernel.shape
            total += 2 * n_in * n_out
    return int(total)


class Timed:
    """A wrapper adding up the wall time of every call of ``fn``."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds, self.result = fn, 0.0, []

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        self.result.append(out)
        return out


def time_infer(cube: Path, model_dir: Path, out: Path, window_rows: int, repeat: int) -> tuple[float, float, float, int]:
    """(wall s, read s, predict s, valid px) of the fastest of ``repeat`` infer_tile runs.

    Read and predict are the summed times of infer_tile's own read_block and predict_window calls,
    measured by wrapping the names it calls for the duration of the run.
    """
    best = (float("inf"), 0.0, 0.0, 0)
    for _ in range(repeat):
        read, predict = Timed(inference.read_block), Timed(inference.predict_window)
        inference.read_block, inference.predict_window = read, predict
        try:
            t = time.perf_counter()
            infer_tile(cube, model_dir, out, window_rows=window_rows, legend=LEGEND)
            wall = time.perf_counter() - t
        finally:
            inference.read_block, inference.predict_window = read.fn, predict.fn
        valid = sum(int(np.count_nonzero(classes != LEGEND.nodata)) for classes, _ in predict.result)
        best = min(best, (wall, read.seconds, predict.seconds, valid))
    return best


def time_reads(cube: Path, window_rows: int, repeat: int) -> float:
    """Seconds to read all of infer_tile's windows with pixel_series alone (best of ``repeat``)."""
    ds = open_cube(cube)
    da = cube_inputs(ds)["features"]
    windows = row_windows(_grid_of((ds.sizes["y"], ds.sizes["x"])), window_rows)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for win in windows:
            pixel_series(da, slice(win.row_off, win.row_off + win.height))
        best = min(best, time.perf_counter() - t)
    return best


def _grid_of(shape: tuple[int, int]) -> ProjectGrid:
    """A grid of ``shape`` (row_windows needs only its height and width)."""
    return ProjectGrid("EPSG:32652", 10.0, (0.0, 0.0, 10.0 * shape[1], 10.0 * shape[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500, help="tile side in pixels (default 500)")
    parser.add_argument("--train-samples", type=int, default=4000, help="training pixels (default 4000)")
    parser.add_argument("--window-rows", type=int, default=256, help="infer_tile window rows (default 256)")
    parser.add_argument("--repeat", type=int, default=2, help="infer_tile runs per model, best kept (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the products, cube and models here and keep them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = np.random.default_rng(args.seed)
    grid = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5340000.0 - 10.0 * args.size, 320000.0 + 10.0 * args.size,
                                            5340000.0))
    pixels = args.size * args.size

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t = time.perf_counter()
        classes = class_map(grid, rng)
        layers = write_products(root / "products", grid, classes, rng)
        t_products = time.perf_counter() - t
        targets = regular_dates(YEAR, "05-01", "09-30", 12)
        cube = root / "tile.zarr"
        t = time.perf_counter()
        build_cube(layers, BANDS, {s: targets for s in BANDS}, grid, "T", cube)
        t_cube = time.perf_counter() - t
        ds = open_cube(cube)
        shape = ds["features"].shape
        print(f"setup: {sum(len(v) for v in layers.values())} products in {t_products:.1f} s, cube {shape} "
              f"(time, band, y, x) built in {t_cube:.1f} s")
        train_set, val_set = sample_sets(cube, classes, args.train_samples, rng)

        rate = sgemm_rate()
        rows = []
        for name, params in MODELS.items():
            model_dir = root / f"model_{name}"
            t = time.perf_counter()
            train(name, train_set, val_set, params, args.seed, model_dir)
            t_train = time.perf_counter() - t
            t_infer, t_read, t_pred, valid = time_infer(cube, model_dir, root / f"{name}_class.tif",
                                                        args.window_rows, args.repeat)
            t_alone = time_reads(cube, args.window_rows, args.repeat)
            val_acc = json.loads((model_dir / "meta.json").read_text())["val_accuracy"]
            rows.append((name, t_train, val_acc, t_infer, t_read, t_alone, t_pred, valid, model_dir))

        print(f"tile {args.size} x {args.size} = {pixels:,d} px, {shape[0]} dates x {shape[1]} bands, "
              f"windows of {args.window_rows} rows, batch 4096, best of {args.repeat} infer_tile runs\n")
        print(f"{'model':<8} {'train s':>8} {'val acc':>8} {'infer s':>8} {'px/s':>9} {'read s':>7} {'read %':>7} "
              f"{'alone s':>8} {'predict s':>10} {'predict %':>10} {'other %':>8}")
        for name, t_train, val_acc, t_infer, t_read, t_alone, t_pred, valid, _ in rows:
            other = 1 - (t_read + t_pred) / t_infer
            print(f"{name:<8} {t_train:8.1f} {val_acc:8.3f} {t_infer:8.2f} {pixels / t_infer:9.0f} {t_read:7.2f} "
                  f"{t_read / t_infer:7.1%} {t_alone:8.2f} {t_pred:10.2f} {t_pred / t_infer:10.1%} {other:8.1%}")
        print("read / predict: time in infer_tile's own read_block / predict_window calls; alone: pixel_series on\n"
              "the same windows timed separately; other: model load, COG write, overhead. val acc after 50 trees /"
              " 1 epoch.")

        _, _, _, t_infer, _, _, t_pred, valid, model_dir = rows[[r[0] for r in rows].index("tempcnn")]
        flops_px = keras_flops_per_pixel(load_trained(model_dir).model)
        print(f"\nsgemm rate (numpy float32 2048 x 2048 matmul, best of 3)  {rate / 1e9:8.1f} GFLOP/s")
        print(f"TempCNN FLOPs per pixel (Conv1D + Dense multiply-adds)   {flops_px / 1e6:8.3f} MFLOP")
        print(f"TempCNN achieved, predict_window only                    {flops_px * valid / t_pred / 1e9:8.1f} "
              f"GFLOP/s = {flops_px * valid / t_pred / rate:6.1%} of sgemm")
        print(f"TempCNN achieved, infer_tile end to end                  {flops_px * valid / t_infer / 1e9:8.1f} "
              f"GFLOP/s = {flops_px * valid / t_infer / rate:6.1%} of sgemm")
        print(f"tempcnn / rf infer_tile time                             {t_infer / rows[0][3]:8.1f} x")


if __name__ == "__main__":
    main()
