"""Raster I/O on the project grid: atomic GeoTIFF/COG writing and windowed reads resampled onto a grid."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import rasterio
import rasterio.crs
import rasterio.shutil
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid

_RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "cubic": Resampling.cubic,
               "average": Resampling.average, "mode": Resampling.mode}


def _profile(grid: ProjectGrid, count: int, dtype: str, nodata: float | int | None) -> dict:
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2, "BIGTIFF": "IF_SAFER",
    }


def write_raster(
    path: str | os.PathLike,
    data: np.ndarray,
    grid: ProjectGrid,
    *,
    nodata: float | int | None = None,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    cog: bool = False,
) -> None:
    """Write ``data`` (bands, y, x) or (y, x) on ``grid`` atomically, as a tiled GeoTIFF or a COG with overviews.

    COG overviews use MODE for integer rasters (class maps) and AVERAGE for floats.
    """
    arr = data[np.newaxis] if data.ndim == 2 else data
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"array shape {arr.shape[1:]} does not match the grid {grid.shape} for {path}")
    window = rasterio.windows.Window(0, 0, grid.width, grid.height)
    kwargs = dict(count=arr.shape[0], dtype=str(arr.dtype), nodata=nodata, band_names=band_names, tags=tags)
    if cog:
        with cog_writer(path, grid, colormap=colormap, resampling="AVERAGE" if arr.dtype.kind == "f" else "MODE",
                        **kwargs) as w:
            w.write(arr, window)
        return
    with RasterWriter(path, grid, colormap=colormap, **kwargs) as w:
        w.write(arr, window)


class RasterWriter:
    """A GeoTIFF on ``grid`` written window by window, renamed onto ``path`` only when the block exits cleanly.

    >>> with RasterWriter(path, grid, count=3, dtype="float32", nodata=float("nan")) as w:
    ...     w.write(block, window)
    """

    def __init__(self, path: str | os.PathLike, grid: ProjectGrid, *, count: int, dtype: str,
                 nodata: float | int | None = None, band_names: Sequence[str] | None = None,
                 tags: Mapping[str, object] | None = None,
                 colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
                 categories: Mapping[int, str] | None = None):
        self.path, self.grid, self.count, self.dtype, self.nodata = path, grid, count, dtype, nodata
        self.band_names, self.tags, self.colormap, self.categories = band_names, tags, colormap, categories

    def __enter__(self) -> "RasterWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._dst = rasterio.open(tmp, "w", **_profile(self.grid, self.count, self.dtype, self.nodata))
        for i, name in enumerate(self.band_names or [], start=1):
            self._dst.set_band_description(i, name)
        if self.tags:
            self._dst.update_tags(**{k: str(v) for k, v in self.tags.items()})
        if self.categories:
            self._dst.update_tags(1, **category_tags(self.categories))
        if self.colormap:
            # before any block is written: GDAL cannot change the photometric tag of a TIFF being written
            self._dst.write_colormap(1, dict(self.colormap))
        return self

    def write(self, data: np.ndarray, window: rasterio.windows.Window) -> None:
        self._dst.write(data.astype(self.dtype, copy=False), window=window)

    def __exit__(self, *exc) -> None:
        self._dst.close()
        self._atomic.__exit__(*exc)


@contextlib.contextmanager
def cog_writer(
    path: str | os.PathLike,
    grid: ProjectGrid,
    *,
    count: int,
    dtype: str,
    nodata: int | float | None,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    categories: Mapping[int, str] | None = None,
    resampling: str = "NEAREST",
) -> Iterator[RasterWriter]:
    """A :class:`~cropflow.raster.RasterWriter` whose GeoTIFF becomes a COG (with overviews) on ``path``.

    Windows are written to a tiled GeoTIFF next to the output; on a clean exit GDAL's COG driver copies it
    to ``path`` atomically (``resampling`` builds the overviews). Band descriptions, tags, the colour table
    of band 1 and ``categories`` (class id -> name, as band 1 metadata, see :func:`category_tags`) are
    carried into the COG's GDAL metadata, which gdalinfo and QGIS show. On error nothing is left at ``path``.
    """
    with atomic_path(path) as tmp:
        plain = tmp.with_name("plain.tif")
        with RasterWriter(plain, grid, count=count, dtype=dtype, nodata=nodata, band_names=band_names,
                          tags=tags, colormap=colormap, categories=categories) as writer:
            yield writer
        rasterio.shutil.copy(plain, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=512,
                             OVERVIEWS="AUTO", RESAMPLING=resampling, BIGTIFF="IF_SAFER")
        plain.unlink()


def category_tags(categories: Mapping[int, str]) -> dict[str, str]:
    """Band metadata naming the classes of a class band: ``CLASS_<id>`` = name for every class id.

    GeoTIFF has no in-file category table (GDAL keeps category names and attribute tables in a ``.aux.xml``
    sidecar), so the names travel as band metadata in the file itself, listed by ``gdalinfo`` and QGIS.
    """
    return {f"CLASS_{class_id}": name for class_id, name in sorted(categories.items())}


def read_categories(path: str | os.PathLike) -> dict[int, str]:
    """Class id -> name of band 1 of a class raster, from its :func:`category_tags` metadata."""
    with rasterio.open(path) as src:
        tags = src.tags(1)
    return {int(k.removeprefix("CLASS_")): v for k, v in tags.items() if k.startswith("CLASS_")
            and k.removeprefix("CLASS_").isdigit()}


def row_windows(grid: ProjectGrid, rows: int) -> list[rasterio.windows.Window]:
    """Full-width windows of at most ``rows`` rows covering the grid, top to bottom."""
    return [rasterio.windows.Window(0, r, grid.width, min(rows, grid.height - r)) for r in range(0, grid.height, rows)]


def read_on_grid(
    path: str | os.PathLike,
    grid: ProjectGrid,
    *,
    bands: Sequence[int] | None = None,
    resampling: str = "nearest",
    nodata: float | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Read bands of any georeferenced raster resampled onto ``grid`` (bands, y, x).

    Pixels outside the source are ``nodata`` (NaN for floats by default). The reprojection reads
    only the source blocks the grid needs, so memory scales with the grid, not with the source. A source
    already on the grid's lattice (same CRS and pixel size, origin on the lattice) is read directly
    through a window, which gives the same pixels as the nearest-neighbour warp without its cost.
    """
    fill = np.nan if nodata is None and np.dtype(dtype).kind == "f" else (nodata if nodata is not None else 0)
    with rasterio.open(path) as src:
        idx = list(bands) if bands else list(range(1, src.count + 1))
        if src.crs is None:
            raise ValueError(f"{path} has no CRS: it cannot be placed on the project grid")
        window = _lattice_window(src, grid)
        if window is not None:
            return _read_window(src, idx, window, grid, dtype, fill)
        src_nodata = src.nodata
        # a source without nodata: the warp marks pixels outside it with ``fill`` (else they would read as 0)
        dst = {"nodata": src_nodata} if src_nodata is not None else {"nodata": fill, "dtype": dtype}
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=_RESAMPLING[resampling], src_nodata=src_nodata, **dst) as vrt:
            out = vrt.read(idx, out_dtype=dtype, masked=True)
    return np.ma.filled(out.astype(dtype), fill)


def _lattice_window(src: rasterio.io.DatasetReader, grid: ProjectGrid) -> rasterio.windows.Window | None:
    """The grid's window in ``src`` when ``src`` lies on the grid's pixel lattice, else None."""
    t, g = src.transform, grid.transform
    if t.b or t.d or not np.isclose(t.a, g.a) or not np.isclose(t.e, g.e) or src.crs != rasterio.crs.CRS.from_user_input(grid.crs):
        return None
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return rasterio.windows.Window(round(col), round(row), grid.width, grid.height)


def _read_window(src: rasterio.io.DatasetReader, idx: list[int], window: rasterio.windows.Window, grid: ProjectGrid,
                 dtype: str, fill: float | int) -> np.ndarray:
    """Read ``window`` of ``src`` (which may extend beyond it) into a ``fill``-initialised grid array."""
    out = np.full((len(idx), grid.height, grid.width), fill, dtype=dtype)
    inside = window.intersection(rasterio.windows.Window(0, 0, src.width, src.height)) if (
        window.col_off < src.width and window.row_off < src.height and window.col_off + window.width > 0
        and window.row_off + window.height > 0) else None
    if inside is None:
        return out
    data = src.read(idx, window=inside, masked=True)
    r0, c0 = int(inside.row_off - window.row_off), int(inside.col_off - window.col_off)
    out[:, r0:r0 + int(inside.height), c0:c0 + int(inside.width)] = np.ma.filled(data.astype(dtype), fill)
    return out


def band_names(path: str | os.PathLike) -> list[str]:
    """Band descriptions of a raster, in band order."""
    with rasterio.open(path) as src:
        return [d or f"band{i}" for i, d in enumerate(src.descriptions, start=1)]


def raster_tags(path: str | os.PathLike) -> dict[str, str]:
    with rasterio.open(path) as src:
        return dict(src.tags())
