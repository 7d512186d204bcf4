"""The feature cube of a tile: a Zarr store of (time, band, y, x) arrays on the tile's grid."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr
from affine import Affine

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
