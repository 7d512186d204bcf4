"""County mosaics of tile maps on the project grid, as COGs: the class map (cropland-masked, majority-filtered)
and the uncertainty layers (masked where the class mosaic is nodata).

The study's post-classification step, a 3x3 majority filter on the map, raised crop recalls by 4-8 points
(SCIENCE.md, Metrics). The mosaic is built in full-width row windows that read a halo of ``size // 2`` rows
above and below, so the filter sees across tile edges exactly as on the whole county in one array, while
memory stays bounded by the window.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.windows
from rasterio.crs import CRS
from scipy import ndimage

from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.raster import cog_writer, row_windows

log = logging.getLogger(__name__)

#: bands of a tile's uncertainty layer ({tile}_uncertainty.tif), each round(254 x) of a value x in [0, 1]
UNCERTAINTY_BANDS = ("confidence", "margin", "entropy")
#: nodata of the uncertainty layers: where the class map is nodata
UNCERTAINTY_NODATA = 255

#: tolerance (in pixels) for a tile's origin to count as on the project lattice
_LATTICE_TOLERANCE = 1e-3


def majority_filter(classes: np.ndarray, nodata: int = 0, size: int = 3) -> np.ndarray:
    """Mode of each ``size`` x ``size`` window of a class map (post-classification majority filter).

    Implements the study's post-classification 3x3 majority filter (SCIENCE.md, Metrics). For every valid
    pixel the classes of the valid pixels of its window, centre included, are counted (per-class counts are
    correlations of one-hot layers with a box kernel); the pixel takes the most frequent class, except that
    it keeps its own class whenever that class is among the most frequent (ties keep the centre). Ties between
    other classes go to the lowest class id. Nodata pixels do not vote and stay nodata; outside the array
    counts as nodata, so edge pixels are decided by their in-array neighbours only.
    """
    if classes.ndim != 2:
        raise ValueError(f"majority_filter expects a 2-D class map, got shape {classes.shape}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"majority filter size must be a positive odd number, got {size}")
    ids = np.unique(classes)
    ids = ids[ids != nodata]
    if size == 1 or ids.size == 0:
        return classes.copy()
    count_dtype = np.uint8 if size * size <= np.iinfo(np.uint8).max else np.uint16
    kernel = np.ones((size, size), dtype=count_dtype)
    counts = np.empty((ids.size, *classes.shape), dtype=count_dtype)
    for k, class_id in enumerate(ids):
        ndimage.correlate((classes == class_id).astype(count_dtype), kernel, output=counts[k],
                          mode="constant", cval=0)
    best = np.argmax(counts, axis=0)
    best_count = np.take_along_axis(counts, best[np.newaxis], axis=0)[0]
    centre = np.clip(np.searchsorted(ids, classes), 0, ids.size - 1)
    centre_count = np.take_along_axis(counts, centre[np.newaxis], axis=0)[0]
    valid = classes != nodata
    out = np.where(valid & (centre_count < best_count), ids[best], classes)
    return out.astype(classes.dtype, copy=False)


@dataclass(frozen=True)
class _Placed:
    """An open tile raster and its window in the project grid."""

    path: str
    src: rasterio.io.DatasetReader
    window: rasterio.windows.Window


def _place(path: str | os.PathLike, src: rasterio.io.DatasetReader, grid: ProjectGrid) -> _Placed:
    """The window of a tile raster in ``grid``; ValueError unless it lies on the grid's lattice inside it."""
    t, r = src.transform, grid.resolution
    if src.crs is None or CRS.from_user_input(grid.crs) != src.crs:
        raise ValueError(f"{path} is in {src.crs}, not the project CRS {grid.crs}: rerun its 'infer'/'labels' job")
    if not (np.isclose(t.a, r) and np.isclose(t.e, -r) and t.b == 0 and t.d == 0):
        raise ValueError(f"{path} has pixel size ({t.a}, {t.e}), not the project resolution {r}: rerun its job")
    col, row = (t.c - grid.bounds[0]) / r, (grid.bounds[3] - t.f) / r
    if abs(col - round(col)) > _LATTICE_TOLERANCE or abs(row - round(row)) > _LATTICE_TOLERANCE:
        raise ValueError(f"{path} is not on the project pixel lattice (offset {col:.3f}, {row:.3f} px)")
    win = rasterio.windows.Window(int(round(col)), int(round(row)), src.width, src.height)
    inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= grid.width
              and win.row_off + win.height <= grid.height)
    if not inside:
        raise ValueError(f"{path} extends beyond the project grid {grid.bounds}: it is not a tile of this grid")
    return _Placed(str(path), src, win)


def _assemble(placed: Sequence[_Placed], row_start: int, row_stop: int, width: int, fill: int,
              count: int = 1) -> np.ndarray:
    """Rows ``row_start:row_stop`` of the project grid (``count``, rows, width) assembled from the first
    ``count`` bands of tile rasters; a tile's ``fill`` pixels leave what is already there, ``fill`` elsewhere."""
    out = np.full((count, row_stop - row_start, width), fill, dtype=np.uint8)
    bands = list(range(1, count + 1))
    for p in placed:
        w = p.window
        a, b = max(row_start, w.row_off), min(row_stop, w.row_off + w.height)
        if a >= b:
            continue
        data = p.src.read(bands, window=rasterio.windows.Window(0, a - w.row_off, w.width, b - a))
        target = out[:, a - row_start:b - row_start, w.col_off:w.col_off + w.width]
        np.copyto(target, data.astype(np.uint8, copy=False), where=data != fill)
    return out


def _open_on_grid(stack: contextlib.ExitStack, paths: Sequence[str | os.PathLike], grid: ProjectGrid) -> list[_Placed]:
    """Open every raster of ``paths`` (closed with ``stack``) and place it on ``grid``."""
    return [_place(p, stack.enter_context(rasterio.open(p)), grid) for p in paths]


def mosaic(
    tile_maps: Sequence[str | os.PathLike],
    grid: ProjectGrid,
    out_path: str | os.PathLike,
    legend: str | os.PathLike | Legend,
    majority: bool,
    cropland_tiles: Sequence[str | os.PathLike] | None,
    *,
    size: int = 3,
    window_rows: int = 512,
) -> None:
    """Mosaic tile class maps onto ``grid`` as a uint8 COG (legend colour table, nodata, overviews).

    With ``cropland_tiles`` (uint8 rasters, non-zero = cropland, on the same lattice) pixels outside the
    cropland, or not covered by any cropland tile, become nodata before filtering, so non-cropland pixels
    neither appear in the map nor vote in the filter. With ``majority`` the ``size`` x ``size`` majority
    filter (:func:`majority_filter`) is applied seamlessly across tile edges.
    """
    legend = legend if isinstance(legend, Legend) else Legend.load(str(legend))
    if not tile_maps:
        raise ValueError(f"no tile map given for the mosaic {out_path}: run 'infer' first")
    if window_rows < 1:
        raise ValueError(f"window_rows must be positive, got {window_rows}")
    nodata = legend.nodata
    halo = size // 2 if majority else 0
    tags = {"MAJORITY_FILTER": f"{size}x{size}" if majority else "none",
            "CROPLAND_MASK": "yes" if cropland_tiles else "no", "TILES": len(tile_maps)}
    with contextlib.ExitStack() as stack:
        maps = _open_on_grid(stack, tile_maps, grid)
        masks = _open_on_grid(stack, cropland_tiles or [], grid)
        windows = row_windows(grid, window_rows)
        with cog_writer(out_path, grid, count=1, dtype="uint8", nodata=nodata, band_names=["class"], tags=tags,
                        colormap=legend.colormap(), categories=legend.categories(), resampling="MODE") as writer:
            for i, win in enumerate(windows, start=1):
                start, stop = max(0, win.row_off - halo), min(grid.height, win.row_off + win.height + halo)
                block = _assemble(maps, start, stop, grid.width, nodata)[0]
                if cropland_tiles:
                    block[_assemble(masks, start, stop, grid.width, 0)[0] == 0] = nodata
                if majority:
                    block = majority_filter(block, nodata, size)
                inner = block[win.row_off - start:win.row_off - start + win.height]
                writer.write(inner[np.newaxis], win)
                log.info("mosaic %s: window %d/%d written", out_path, i, len(windows))
    log.info("mosaic of %d tiles written to %s", len(tile_maps), out_path)


def mosaic_uncertainty(
    tile_layers: Sequence[str | os.PathLike],
    class_mosaic: str | os.PathLike,
    grid: ProjectGrid,
    out_path: str | os.PathLike,
    *,
    window_rows: int = 512,
) -> None:
    """Mosaic the tiles' uncertainty layers onto ``grid`` as a uint8 COG, masked like the class mosaic.

    Each tile layer has the bands :data:`UNCERTAINTY_BANDS` (round(254 x), nodata
    :data:`UNCERTAINTY_NODATA`). The mosaic keeps them, window by window as the class mosaic is built, and
    sets every pixel that is nodata in ``class_mosaic`` (outside the cropland, no tile, no observation) to
    nodata, so both layers cover the same pixels. Values are the tile's: the majority filter changes classes,
    not the model's confidence in them.
    """
    if not tile_layers:
        raise ValueError(f"no tile uncertainty layer given for {out_path}: run 'infer' first")
    if window_rows < 1:
        raise ValueError(f"window_rows must be positive, got {window_rows}")
    count, fill = len(UNCERTAINTY_BANDS), UNCERTAINTY_NODATA
    with contextlib.ExitStack() as stack:
        layers = _open_on_grid(stack, tile_layers, grid)
        for p in layers:
            if tuple(p.src.descriptions) != UNCERTAINTY_BANDS or p.src.nodata != fill:
                raise ValueError(f"{p.path} has bands {p.src.descriptions} and nodata {p.src.nodata}, not "
                                 f"{UNCERTAINTY_BANDS} with nodata {fill}: rerun its 'infer' job")
        classes = _open_on_grid(stack, [class_mosaic], grid)[0]
        if classes.window != rasterio.windows.Window(0, 0, grid.width, grid.height):
            raise ValueError(f"{class_mosaic} does not cover the project grid: rerun its 'mosaic' job")
        windows = row_windows(grid, window_rows)
        tags = {"TILES": len(tile_layers), "SCALE": "value = round(254 x), x in [0, 1]",
                "MASK": os.path.basename(class_mosaic)}
        with cog_writer(out_path, grid, count=count, dtype="uint8", nodata=fill, band_names=list(UNCERTAINTY_BANDS),
                        tags=tags, resampling="AVERAGE") as writer:
            for i, win in enumerate(windows, start=1):
                block = _assemble(layers, win.row_off, win.row_off + win.height, grid.width, fill, count)
                block[:, classes.src.read(1, window=win) == classes.src.nodata] = fill
                writer.write(block, win)
                log.info("uncertainty mosaic %s: window %d/%d written", out_path, i, len(windows))
    log.info("uncertainty mosaic of %d tiles written to %s", len(tile_layers), out_path)
