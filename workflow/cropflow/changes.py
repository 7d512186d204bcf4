"""Comparison of two class maps on the project grid (two models, or two years): a change map, the transition
matrix and the changed share.

The change map is a uint8 COG: 0 nodata (either map has no class there), 1 same class, 2 changed class. The
from/to classes of a changed pixel are the two inputs' values there; the transitions table counts every
(from, to) pair over the pixels both maps classify, in pixels and hectares, with the legend's class names.
Both maps are read in the same row windows, so memory is bounded by the window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.pixelcount import pixel_area_ha
from cropflow.raster import cog_writer, row_windows

log = logging.getLogger(__name__)

NODATA, SAME, CHANGED = 0, 1, 2
#: colour table of the change map: nodata transparent, same grey, changed red
CHANGE_COLOURS = {NODATA: (0, 0, 0, 0), SAME: (200, 200, 200, 255), CHANGED: (215, 48, 39, 255)}


@dataclass(frozen=True)
class Comparison:
    """The transition counts ``counts[from, to]`` over the legend's classes, pixels classified by one map
    only, and the pixel area in hectares."""

    counts: np.ndarray
    only_a: int
    only_b: int
    pixel_ha: float

    @property
    def compared(self) -> int:
        return int(self.counts.sum())

    @property
    def changed(self) -> int:
        return self.compared - int(np.trace(self.counts))

    @property
    def changed_share(self) -> float:
        return self.changed / self.compared if self.compared else float("nan")


def change_codes(a: np.ndarray, b: np.ndarray, nodata: int = 0) -> np.ndarray:
    """The change map of two class arrays: 0 where either is nodata, 1 where equal, 2 where they differ."""
    out = np.where(a == b, SAME, CHANGED).astype(np.uint8)
    out[(a == nodata) | (b == nodata)] = NODATA
    return out


def transitions(a: np.ndarray, b: np.ndarray, ids: list[int], nodata: int = 0) -> np.ndarray:
    """Pixel counts ``[from, to]`` of the (a, b) class pairs over ``ids`` where both are classified."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    ia, ib = lut[a], lut[b]
    ok = (ia >= 0) & (ib >= 0)
    k = len(ids)
    return np.bincount(ia[ok] * k + ib[ok], minlength=k * k).reshape(k, k)


def _check_on_grid(path: str | os.PathLike, src: rasterio.io.DatasetReader, grid: ProjectGrid) -> None:
    """ValueError naming ``path`` and the fix unless the raster is exactly the project grid."""
    same = (src.crs is not None and src.crs == CRS.from_user_input(grid.crs)
            and (src.height, src.width) == grid.shape and src.transform.almost_equals(grid.transform))
    if not same:
        left, bottom, right, top = grid.bounds
        raise ValueError(
            f"{path} is not on the project grid ({src.crs}, {src.width} x {src.height} px, origin "
            f"{src.transform.c}, {src.transform.f}, pixel {src.transform.a}; the grid is {grid.crs}, "
            f"{grid.width} x {grid.height} px, bounds {grid.bounds}, pixel {grid.resolution}): resample it with "
            f"gdalwarp -t_srs {grid.crs} -te {left} {bottom} {right} {top} -tr {grid.resolution} {grid.resolution} "
            f"-r near {path} <out.tif>")


def _check_classes(path: str | os.PathLike, block: np.ndarray, legend: Legend) -> None:
    unknown = np.setdiff1d(np.unique(block), [legend.nodata, *legend.ids])
    if unknown.size:
        raise ValueError(f"{path} holds values {unknown.tolist()} that are not classes of the legend: "
                         "compare class maps made with the same legend")


def compare_maps(map_a: str | os.PathLike, map_b: str | os.PathLike, grid: ProjectGrid, legend: Legend,
                 out_tif: str | os.PathLike, *, window_rows: int = 1024) -> Comparison:
    """Write the change map of ``map_a`` -> ``map_b`` (both class maps on ``grid``) and return the comparison."""
    ids, nodata = legend.ids, legend.nodata
    k = len(ids)
    counts = np.zeros((k, k), dtype=np.int64)
    only_a = only_b = 0
    with contextlib.ExitStack() as stack:
        src_a = stack.enter_context(rasterio.open(map_a))
        src_b = stack.enter_context(rasterio.open(map_b))
        for path, src in ((map_a, src_a), (map_b, src_b)):
            _check_on_grid(path, src, grid)
        tags = {"MAP_A": Path(map_a).name, "MAP_B": Path(map_b).name, "VALUES": "0 nodata, 1 same, 2 changed"}
        with cog_writer(out_tif, grid, count=1, dtype="uint8", nodata=NODATA, tags=tags, colormap=CHANGE_COLOURS,
                        resampling="MODE") as writer:
            for win in row_windows(grid, window_rows):
                a = src_a.read(1, window=win).astype(np.uint8, copy=False)
                b = src_b.read(1, window=win).astype(np.uint8, copy=False)
                _check_classes(map_a, a, legend)
                _check_classes(map_b, b, legend)
                counts += transitions(a, b, ids, nodata)
                only_a += int(((a != nodata) & (b == nodata)).sum())
                only_b += int(((a == nodata) & (b != nodata)).sum())
                writer.write(change_codes(a, b, nodata)[np.newaxis], win)
        pixel_ha = pixel_area_ha(src_a.transform)
    return Comparison(counts, only_a, only_b, pixel_ha)


def transition_table(comparison: Comparison, legend: Legend) -> pd.DataFrame:
    """One row per (from, to) class pair (all pairs of the legend): pixels, hectares, and each pair's share of
    the compared pixels."""
    names = legend.names
    k = len(names)
    counts = comparison.counts.ravel()
    total = comparison.compared
    return pd.DataFrame({
        "from_class": np.repeat(names, k), "to_class": np.tile(names, k), "pixels": counts,
        "hectares": counts * comparison.pixel_ha,
        "share": counts / total if total else np.full(k * k, np.nan),
        "changed": np.repeat(np.arange(k), k) != np.tile(np.arange(k), k),
    })


def write_comparison(comparison: Comparison, legend: Legend, out_csv: str | os.PathLike,
                     out_json: str | os.PathLike, labels: tuple[str, str]) -> None:
    """Write the transitions CSV and a JSON summary (maps, pixels compared, changed, changed share, pixels
    classified in one map only, pixel area) atomically."""
    table = transition_table(comparison, legend).round({"hectares": 2, "share": 6})
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    summary = {
        "a": labels[0], "b": labels[1], "compared_pixels": comparison.compared, "changed_pixels": comparison.changed,
        "changed_share": None if comparison.compared == 0 else round(comparison.changed_share, 6),
        "changed_ha": round(comparison.changed * comparison.pixel_ha, 2),
        "only_a_pixels": comparison.only_a, "only_b_pixels": comparison.only_b, "pixel_ha": comparison.pixel_ha,
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s vs %s: %d of %d pixels changed (%.2f%%)", labels[0], labels[1], comparison.changed,
             comparison.compared, 100 * comparison.changed_share if comparison.compared else float("nan"))
