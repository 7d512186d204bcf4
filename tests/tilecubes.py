"""A 2 x 2 set of small tile cubes and the merged cube of their area, built by the real cube writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster
from cropflow.stack import Layer, build_cube

TILE = 120.0  # 12 x 12 pixels
GRID = ProjectGrid("EPSG:32652", 10.0, (320040.0, 5339760.0, 320280.0, 5340000.0))  # 24 x 24: 2 x 2 tiles
DATES = [np.datetime64(d, "D") for d in ("2023-05-08", "2023-06-13", "2023-07-07", "2023-08-12")]
BANDS = ["vv_db", "coh_vv", "B8A"]
NAN_PIXELS = ((11, 11), (12, 3), (0, 23))  # no observation: at a tile corner, at a tile edge, at the grid corner


def truth_map() -> np.ndarray:
    """Three classes (1, 2, 5) in blocks that cross the tile edges (rows and columns 12)."""
    y = np.full(GRID.shape, 1, dtype=np.uint8)
    y[:, 9:16] = 2
    y[8:15, 17:] = 5
    y[18:, :6] = 5
    return y


def write_layers(folder: Path, seed: int = 0) -> list[Layer]:
    """One raster per date over the whole grid: class curves plus noise, NaN at NAN_PIXELS."""
    rng = np.random.default_rng(seed)
    truth = truth_map()
    s = np.linspace(0.0, np.pi, len(DATES))[:, None]
    k = np.arange(len(BANDS))[None, :]
    curves = {1: np.sin(s) * (1 + k), 2: np.cos(s) * (1 + k), 5: 0.5 + 0.0 * s + 0.3 * k}
    layers = []
    for t, day in enumerate(DATES):
        data = np.empty((len(BANDS), *GRID.shape), np.float32)
        for cid, curve in curves.items():
            data[:, truth == cid] = curve[t][:, None]
        data += rng.normal(0.0, 0.4, data.shape).astype(np.float32)
        for r, c in NAN_PIXELS:
            data[:, r, c] = np.nan
        path = folder / f"layer_{t}.tif"
        write_raster(path, data, GRID, nodata=float("nan"), band_names=BANDS)
        layers.append(Layer("s1", day, str(path), tuple(BANDS)))
    return layers


def cube(layers: list[Layer], grid: ProjectGrid, tile: str, path: Path) -> Path:
    """The cube of ``grid`` (a tile or the whole GRID) cut from the layers."""
    build_cube({"s1": layers}, {"s1": BANDS}, {"s1": DATES}, grid, tile, path)
    return path
