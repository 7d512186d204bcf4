"""Pixel counts per class of a class-map raster, for the whole map or per administrative unit, read in row
windows so memory is bounded by the window whatever the map size. Nodata (0) is not counted."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import rasterio
import rasterio.features
import rasterio.windows

log = logging.getLogger(__name__)


def pixel_area_ha(transform: rasterio.Affine) -> float:
    """Area of one pixel in hectares from the raster's transform (|determinant| in CRS units squared; the
    CRS must be projected in metres)."""
    return abs(transform.a * transform.e - transform.b * transform.d) / 10_000.0


def _windows(src: rasterio.io.DatasetReader, rows: int) -> list[rasterio.windows.Window]:
    if rows < 1:
        raise ValueError(f"window rows must be positive, got {rows}")
    return [rasterio.windows.Window(0, r, src.width, min(rows, src.height - r)) for r in range(0, src.height, rows)]


def _check_projected(path: str | os.PathLike, src: rasterio.io.DatasetReader) -> None:
    if src.crs is None or not src.crs.is_projected:
        raise ValueError(f"{path} is in {src.crs}, not a projected CRS in metres: its pixel areas are unknown; "
                         "use the project grid's class map")


def _class_index(ids: Sequence[int]) -> np.ndarray:
    """Lookup value -> position in ``ids`` (0..K-1), -1 for nodata and unknown values."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[np.asarray(ids, dtype=np.int64)] = np.arange(len(ids))
    return lut


def _check_values(path: str | os.PathLike, block: np.ndarray, lut: np.ndarray, nodata: int, context: str) -> None:
    unknown = np.unique(block[(lut[block] < 0) & (block != nodata)])
    if unknown.size:
        raise ValueError(f"{path} holds class values {unknown.tolist()} that are not classes of {context}: "
                         "was the map made with another legend? Rerun its 'infer' and 'mosaic' jobs")


def count_classes(path: str | os.PathLike, ids: Sequence[int], *, window_rows: int = 1024,
                  context: str = "the legend") -> tuple[np.ndarray, float]:
    """Pixels of each class ``ids`` (in that order) in a uint8 class map, and the pixel area in hectares.
    A value neither nodata nor in ``ids`` is an error naming the file and ``context``."""
    lut = _class_index(ids)
    counts = np.zeros(len(ids), dtype=np.int64)
    with rasterio.open(path) as src:
        _check_projected(path, src)
        nodata = int(src.nodata if src.nodata is not None else 0)
        for win in _windows(src, window_rows):
            block = src.read(1, window=win).astype(np.uint8, copy=False)
            _check_values(path, block, lut, nodata, context)
            idx = lut[block]
            counts += np.bincount(idx[idx >= 0], minlength=len(ids))
        return counts, pixel_area_ha(src.transform)


def count_classes_by_unit(path: str | os.PathLike, ids: Sequence[int], boundaries: str | os.PathLike,
                          unit_field: str, *, window_rows: int = 1024) -> dict[str, np.ndarray]:
    """Pixels of each class per administrative unit: the units of ``boundaries`` (any vector file with a
    CRS; features sharing a ``unit_field`` value are one unit) rasterised on each window of the class map
    (a pixel belongs to the unit holding its centre; where units overlap, the later feature). Units are
    returned in the order of first appearance; a unit missing the map has zero counts."""
    import geopandas as gpd

    units = gpd.read_file(boundaries)
    if unit_field not in units.columns:
        attributes = [c for c in units.columns if c != units.geometry.name]
        raise ValueError(f"{boundaries} has no attribute {unit_field!r} (it has {attributes}): set "
                         "areas.unit_field to the attribute naming the units")
    if units.crs is None:
        raise ValueError(f"{boundaries} has no CRS: define it (e.g. with ogr2ogr -a_srs) so the units can be placed")
    units = units[units.geometry.notna() & ~units.geometry.is_empty]
    if units.empty:
        raise ValueError(f"{boundaries} has no unit geometry")
    names = list(dict.fromkeys(str(v) for v in units[unit_field]))
    code = {name: i + 1 for i, name in enumerate(names)}
    lut = _class_index(ids)
    k = len(ids)
    joint = np.zeros((len(names) + 1) * k, dtype=np.int64)
    with rasterio.open(path) as src:
        _check_projected(path, src)
        nodata = int(src.nodata if src.nodata is not None else 0)
        units = units.to_crs(src.crs)
        shapes = list(zip(units.geometry, (code[str(v)] for v in units[unit_field]), strict=True))
        for win in _windows(src, window_rows):
            block = src.read(1, window=win).astype(np.uint8, copy=False)
            _check_values(path, block, lut, nodata, "the metrics")
            unit = rasterio.features.rasterize(shapes, out_shape=block.shape, fill=0, dtype="int32",
                                               transform=src.window_transform(win))
            idx = lut[block]
            ok = idx >= 0
            joint += np.bincount(unit[ok].astype(np.int64) * k + idx[ok], minlength=joint.size)
    joint = joint.reshape(len(names) + 1, k)
    outside = int(joint[0].sum())
    if outside:
        log.info("%d mapped pixels of %s lie outside every unit of %s", outside, path, boundaries)
    return {name: joint[code[name]] for name in names}
