"""A tile's cube read with a halo from its neighbours' cubes, and the per-pixel patches of such a block.

Patch models classify a pixel from the h x w patch centred on it. To give at a tile edge the patch a single
raster of the whole project grid would give, a tile's rows are read together with ``halo`` rows and columns
around them from the cubes of the neighbouring tiles. Beyond the project grid the block is padded with the
edge values (``numpy.pad`` mode "edge", as the training patches are, ``cropflow.samples``); inside the grid
where no cube exists (a tile outside the AOI) the values are NaN, i.e. no observation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view

from cropflow.cube import StoredInput, stored_input
from cropflow.grid import ProjectGrid


@dataclass(frozen=True)
class PlacedCube:
    """The model inputs {name: (time, band, y, x)} of one cube, the arrays they are read from and the cube's
    window (row, col offset) in the grid."""

    path: str
    inputs: Mapping[str, xr.DataArray]
    row: int
    col: int
    height: int
    width: int
    stored: Mapping[str, StoredInput]


def place(path: str | os.PathLike, inputs: Mapping[str, xr.DataArray], cube: ProjectGrid,
          grid: ProjectGrid) -> PlacedCube:
    """A cube's inputs placed in ``grid``; ValueError naming the cube unless it lies inside the grid."""
    win = grid.window_of(cube)
    if win.col_off < 0 or win.row_off < 0 or win.col_off + win.width > grid.width \
            or win.row_off + win.height > grid.height:
        raise ValueError(f"cube {path} ({cube.bounds}) is not inside the project grid {grid.bounds}: "
                         "rebuild it with 'stack' for this project")
    return PlacedCube(str(path), inputs, int(win.row_off), int(win.col_off), int(win.height), int(win.width),
                      {name: stored_input(path, da) for name, da in inputs.items()})


def extent(grids: Sequence[ProjectGrid]) -> ProjectGrid:
    """The smallest grid holding all ``grids`` (same CRS and lattice): the default project grid of a tile and
    its neighbours."""
    b = np.array([g.bounds for g in grids])
    return ProjectGrid(grids[0].crs, grids[0].resolution,
                       (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))


def column_pieces(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    """Columns [start, stop) cut at the multiples of ``step`` (a cube's chunk width), as (start, stop) pieces:
    each piece lies in one column of chunks, so each chunk is decoded once."""
    edges = [start, *range((start // step + 1) * step, stop, step), stop]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if lo < hi]


def copy_pixel_major(part: np.ndarray, out: np.ndarray, pixels: int = 4096) -> None:
    """Copy a cube part (T, C, y, x) into ``out`` (y, x, T, C): ``out[...] = part.transpose(2, 3, 0, 1)``.

    The copy goes by runs of about ``pixels`` pixels (whole rows) and one time step at a time, so each piece
    (run x C values) is read and written while in cache. numpy's copy of the whole transposed view walks the
    part with a stride of one band plane per value instead; this is 4x faster (3.5 against 0.85 GB/s for a
    26 x 16 x 256 x 256 part, bench/inference.py's cube).
    """
    n_t, _, ny, nx = part.shape
    if out.shape != (ny, nx, n_t, part.shape[1]):
        raise ValueError(f"copy_pixel_major: part {part.shape} does not fit out {out.shape}")
    rows = max(1, pixels // max(nx, 1))
    for r in range(0, ny, rows):
        piece, target = part[:, :, r:r + rows], out[r:r + rows]
        for t in range(n_t):
            target[:, :, t, :] = piece[t].transpose(1, 2, 0)


def read_block(cubes: Sequence[PlacedCube], name: str, rows: tuple[int, int], cols: tuple[int, int],
               shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``rows`` x columns ``cols`` (start, stop; may reach beyond the grid of ``shape``) of input ``name``
    assembled from ``cubes`` as a (y, x, T, C) float32 array.

    Only the cubes' parts inside the block are read, one column of the cube's chunks at a time
    (:func:`column_pieces`), into a buffer the calling thread keeps (:func:`_scratch`), so the decoded copy
    beside the block is one chunk column, not the whole block, and no fresh memory is faulted in for it. Grid
    pixels no cube covers are NaN; the parts beyond the grid are padded with the edge values of the block.
    ``out``: a float32 buffer the block is assembled in (and returned as a view of) when it is large enough,
    so that a caller reading block after block reuses its memory.
    """
    (r0, r1), (c0, c1) = rows, cols
    ra, rb, ca, cb = max(r0, 0), min(r1, shape[0]), max(c0, 0), min(c1, shape[1])
    n_t, n_c = (int(s) for s in cubes[0].inputs[name].shape[:2])
    dims = (r1 - r0, c1 - c0, n_t, n_c)
    reuse = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.size >= np.prod(dims)
    padded = _view(out, dims) if reuse else np.empty(dims, np.float32)
    block = padded[ra - r0:rb - r0, ca - c0:cb - c0]  # the part inside the grid
    parts = []
    for cube in cubes:
        ya, yb = max(ra, cube.row), min(rb, cube.row + cube.height)
        xa, xb = max(ca, cube.col), min(cb, cube.col + cube.width)
        if ya < yb and xa < xb:
            parts.append((cube, ya, yb, xa, xb))
    if sum((yb - ya) * (xb - xa) for _, ya, yb, xa, xb in parts) < block.shape[0] * block.shape[1]:
        block.fill(np.nan)  # some grid pixels have no cube (cubes never overlap)
    for cube, ya, yb, xa, xb in parts:
        step = int(cube.stored[name].array.chunks[3])
        for lo, hi in column_pieces(xa - cube.col, xb - cube.col, step):
            part = _scratch((n_t, n_c, yb - ya, hi - lo))
            cube.stored[name].read_into(slice(ya - cube.row, yb - cube.row), slice(lo, hi), part)
            copy_pixel_major(part, block[ya - ra:yb - ra, lo + cube.col - ca:hi + cube.col - ca])
    pad_edges(padded, (ra - r0, r1 - rb), (ca - c0, c1 - cb))
    return padded


def pad_edges(a: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    """Fill the outer ``rows`` (top, bottom) and ``cols`` (left, right) of ``a`` (y, x, ...) in place with the
    edge values of its interior: ``numpy.pad(interior, (rows, cols, ...), mode="edge")`` without a new array."""
    (top, bottom), (left, right) = rows, cols
    ny, nx = a.shape[:2]
    if min(top, bottom, left, right) < 0 or top + bottom >= ny or left + right >= nx:
        raise ValueError(f"pad_edges: rows {rows} and cols {cols} leave no interior in {a.shape[:2]}")
    a[:top, left:nx - right] = a[top:top + 1, left:nx - right]
    a[ny - bottom:, left:nx - right] = a[ny - bottom - 1:ny - bottom, left:nx - right]
    a[:, :left] = a[:, left:left + 1]
    a[:, nx - right:] = a[:, nx - right - 1:nx - right]


def _view(buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first prod(shape) values of the flat C-contiguous float32 buffer ``buf`` as an array of ``shape``."""
    return buf.reshape(-1)[:int(np.prod(shape))].reshape(shape)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous float32 array of ``shape`` over a buffer this thread keeps and reuses (grown when too
    small; released with the thread): the landing place of each decoded part before its pixel-major copy."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < np.prod(shape):
        buf = _SCRATCH.buf = np.empty(int(np.prod(shape)), dtype=np.float32)
    return _view(buf, shape)


def centre_valid(blocks: Mapping[str, np.ndarray], halo: int) -> np.ndarray:
    """Pixels (rows, cols) of the block interior (without the halo) whose every input value is finite."""
    valid = None
    for block in blocks.values():
        ok = finite_series(block[halo:block.shape[0] - halo, halo:block.shape[1] - halo])
        valid = ok if valid is None else valid & ok
    return valid


def finite_series(a: np.ndarray) -> np.ndarray:
    """Whether every value of each (T, C) series of ``a`` (y, x, T, C) is finite, as a (y, x) boolean array.

    A series holding NaN or inf has a non-finite sum, so the sum over (T, C) settles every series whose sum is
    finite; only the others (a finite series can also sum past float32's range) are checked value by value.
    This is twice as fast as ``numpy.isfinite(a).all(axis=(2, 3))`` and allocates no (y, x, T, C) mask.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(a.sum(axis=(2, 3)))
    doubt = np.nonzero(~ok)
    ok[doubt] = np.isfinite(a[doubt]).all(axis=(1, 2))
    return ok


def patch_gaps(blocks: Mapping[str, np.ndarray], halo: int) -> np.ndarray:
    """Pixels (rows, cols) of the block interior whose (2 halo + 1)-square patch holds a non-finite value in some
    input: a part of the grid without a cube or a pixel never observed."""
    gap = None
    for block in blocks.values():
        g = ~np.isfinite(block).all(axis=(2, 3))
        gap = g if gap is None else gap | g
    size = 2 * halo + 1
    rows = sliding_window_view(gap, size, axis=0).any(axis=-1)
    return sliding_window_view(rows, size, axis=1).any(axis=-1)


def samples_at(blocks: Mapping[str, np.ndarray], halo: int, rows: np.ndarray,
               cols: np.ndarray) -> dict[str, np.ndarray]:
    """Model inputs of the interior pixels (rows, cols) of halo blocks: (N, T, C) series when ``halo`` is 0,
    else (N, 2 halo + 1, 2 halo + 1, T, C) patches centred on the pixels.

    Patches are gathered from a strided view of the block (``numpy.lib.stride_tricks.sliding_window_view``),
    so only the asked pixels' patches are copied.
    """
    if halo == 0:
        return {name: np.ascontiguousarray(b[rows, cols]) for name, b in blocks.items()}
    size = 2 * halo + 1
    out = {}
    for name, b in blocks.items():
        view = sliding_window_view(b, (size, size), axis=(0, 1))  # (y, x, T, C, size, size)
        out[name] = np.ascontiguousarray(view[rows, cols].transpose(0, 3, 4, 1, 2))
    return out
