"""The feature cube of a tile: a Zarr store of (time, band, y, x) arrays on the tile's grid."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import xarray as xr
import zarr
from affine import Affine
from zarr.buffer.cpu import NDBuffer

from cropflow.grid import ProjectGrid

#: cube variables holding model inputs, by stacking mode
INPUTS = {"chronological": ("features",), "separate": ("s1", "coh", "s2")}


def open_cube(path: str | os.PathLike) -> xr.Dataset:
    """Open a tile cube lazily (dask-free: zarr reads only the slices asked for)."""
    return xr.open_zarr(path, chunks=None, consolidated=False)


def cube_inputs(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """The model inputs of a cube, each with dims renamed to (time, band, y, x)."""
    out = {}
    for name in (*INPUTS["chronological"], *INPUTS["separate"]):
        if name not in ds:
            continue
        da = ds[name]
        rename = {d: d.split("_")[0] for d in da.dims if d.startswith(("time_", "band_"))}
        out[name] = da.rename(rename).transpose("time", "band", "y", "x")
    if not out:
        raise ValueError(f"cube {ds.encoding.get('source', '')} holds no input variable: rebuild it with 'stack'")
    return out


def cube_grid(ds: xr.Dataset) -> ProjectGrid:
    """The tile grid a cube was written on (from its crs and transform attributes)."""
    t = Affine(*ds.attrs["transform"][:6])
    height, width = ds.sizes["y"], ds.sizes["x"]
    return ProjectGrid(ds.attrs["crs"], float(t.a), (t.c, t.f + t.e * height, t.c + t.a * width, t.f))


def pixel_series(da: xr.DataArray, rows: slice, cols: slice | None = None) -> np.ndarray:
    """Pixels of a (time, band, y, x) input as (N, T, C) float32, row-major over the window."""
    block = da.isel(y=rows, x=cols if cols is not None else slice(None)).values
    t, c, h, w = block.shape
    return np.ascontiguousarray(block.transpose(2, 3, 0, 1).reshape(h * w, t, c), dtype=np.float32)


@dataclass(frozen=True)
class StoredInput:
    """A cube input as stored: its zarr array (time, band, y, x) and the band positions an input DataArray takes
    of it (a slice when they run in order), for reads into a caller's buffer.

    Reading through xarray allocates a new array for every part read, and zarr a new one for every chunk it
    decodes; on Linux each such allocation (tens of MB) is fresh memory that faults in page by page. Reading
    into a buffer the reader keeps took a 26 x 16 x 256 x 1000 px window from 1.7-2.2 to 0.55 s of CPU
    (bench/inference.py's cube).
    """

    array: zarr.Array
    bands: slice | np.ndarray

    def read_into(self, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Write rows x cols of every time step and band into ``out`` (T, C, rows, cols), C-contiguous float32."""
        self.array.get_orthogonal_selection((slice(None), self.bands, rows, cols), out=NDBuffer.from_numpy_array(out))


def stored_input(path: str | os.PathLike, da: xr.DataArray) -> StoredInput:
    """The stored array behind input ``da`` (from :func:`cube_inputs`, possibly cut to some bands) of the cube
    at ``path``."""
    group = zarr.open_group(str(path), mode="r")
    array = group[str(da.name)]
    dims = tuple(array.metadata.dimension_names or ())
    if len(dims) != 4 or dims[2:] != ("y", "x") or array.shape[0] != da.sizes["time"]:
        raise ValueError(f"cube {path}: variable {da.name} is stored as {dims} {array.shape}, not as the "
                         f"(time, band, y, x) {tuple(da.shape)} cropflow writes: rebuild it with 'stack'")
    stored = [str(b) for b in np.asarray(group[dims[1]][:])]
    missing = [str(b) for b in da["band"].values if str(b) not in stored]
    if missing:
        raise ValueError(f"cube {path}: variable {da.name} has no bands {missing}: rebuild it with 'stack'")
    pos = np.array([stored.index(str(b)) for b in da["band"].values], dtype=np.intp)
    contiguous = pos.size and (np.diff(pos) == 1).all()
    return StoredInput(array, slice(int(pos[0]), int(pos[-1]) + 1) if contiguous else pos)
