"""Training samples: labelled pixel series (N, T, C) and optional patches (N, h, w, T, C) per split.

Each tile yields its samples for every split (the split comes from the parcel, so a parcel is never
split); the per-tile stores are then merged per split. Values stay raw: the min-max normalisation is
fitted on the train split by the training step and saved with the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pyogrio
import rasterio
import xarray as xr

from cropflow.cube import cube_grid, cube_inputs, open_cube
from cropflow.grid import ProjectGrid
from cropflow.halo import PlacedCube, extent, place, read_block, samples_at
from cropflow.sampleset import SampleSet, load_split, save_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def select_pixels(classes: np.ndarray, parcels: np.ndarray, split_of: Mapping[int, str],
                  per_parcel: int, seed: int) -> dict[str, np.ndarray]:
    """Flat indices of the labelled pixels of each split, at most ``per_parcel`` per parcel (0: all).

    A pixel is labelled when its class and parcel id are set and its parcel has a split (parcels that
    were dropped or not in the subsample have none). The draw within a parcel is uniform and seeded.
    """
    flat_parcel = parcels.ravel()
    flat_class = classes.ravel()
    candidates = np.flatnonzero((flat_class > 0) & (flat_parcel > 0))
    ids = flat_parcel[candidates]
    rng = np.random.default_rng(seed)
    keys = rng.random(candidates.size)
    order = np.lexsort((keys, ids))
    candidates, ids = candidates[order], ids[order]
    if per_parcel > 0 and ids.size:
        starts = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
        rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.r_[starts, ids.size]))
        keep = rank < per_parcel
        candidates, ids = candidates[keep], ids[keep]
    split = np.array([split_of.get(int(i), "") for i in ids], dtype=object)
    return {s: np.sort(candidates[split == s]) for s in SPLITS}


def _gather(cubes: Sequence[PlacedCube], shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray,
            block_rows: int, halo: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Series {input: (N, T, C)} and, with halo > 0, patches {input: (N, 2 halo + 1, 2 halo + 1, T, C)} of the
    pixels (rows, cols) of the tile ``cubes[0]``.

    The tile is read in row blocks with a halo from all ``cubes`` (``cropflow.halo.read_block``, in the grid of
    ``shape``, each into the one buffer of its input), so only one block plus halo is in memory and a patch holds
    what inference gives the model: the neighbours' pixels across a tile edge, edge values beyond the grid, NaN
    where the grid has no cube.
    """
    tile = cubes[0]
    series = {name: np.empty((rows.size, *da.shape[:2]), np.float32) for name, da in tile.inputs.items()}
    patches: dict[str, np.ndarray] = {}
    if halo:
        size = 2 * halo + 1
        patches = {name: np.empty((rows.size, size, size, *da.shape[:2]), np.float32)
                   for name, da in tile.inputs.items()}
    buffers = {name: np.empty((min(block_rows, tile.height) + 2 * halo) * (tile.width + 2 * halo)
                              * int(np.prod(da.shape[:2])), np.float32) for name, da in tile.inputs.items()}
    for r0 in range(0, tile.height, block_rows):
        sel = np.flatnonzero((rows >= r0) & (rows < r0 + block_rows))
        if sel.size == 0:
            continue
        r1 = min(r0 + block_rows, tile.height)
        for name in tile.inputs:
            block = read_block(cubes, name, (tile.row + r0 - halo, tile.row + r1 + halo),
                               (tile.col - halo, tile.col + tile.width + halo), shape, buffers[name])
            series[name][sel] = block[rows[sel] - r0 + halo, cols[sel] + halo]
            if halo:
                patches[name][sel] = samples_at({name: block}, halo, rows[sel] - r0, cols[sel])[name]
    return series, patches


def _open_inputs(path: str | os.PathLike, bands: Mapping[str, Sequence[str]] | None
                   ) -> tuple[dict[str, xr.DataArray], ProjectGrid]:
    """A cube's inputs (cut to a band selection) and its grid."""
    ds = open_cube(path)
    inputs = cube_inputs(ds)
    return (inputs if bands is None else select_cube_bands(inputs, bands, path)), cube_grid(ds)


def _input_meta(inputs: Mapping[str, xr.DataArray]) -> dict[str, dict[str, list[str]]]:
    return {name: {"bands": [str(b) for b in da["band"].values],
                   "times": [str(t)[:10] for t in da["time"].values]} for name, da in inputs.items()}


def tile_samples(
    cube_path: str | os.PathLike,
    class_path: str | os.PathLike,
    parcel_path: str | os.PathLike,
    parcels_gpkg: str | os.PathLike,
    tile: str,
    tiles: Sequence[str],
    class_ids: Sequence[int],
    class_names: Sequence[str],
    out_paths: Mapping[str, str | os.PathLike],
    *,
    pixels_per_parcel: int = 0,
    patch_size: int = 0,
    seed: int = 42,
    block_rows: int = 128,
    bands: Mapping[str, Sequence[str]] | None = None,
    neighbours: Sequence[str | os.PathLike] = (),
    grid: ProjectGrid | None = None,
) -> dict[str, int]:
    """Extract one tile's samples for every split and write one sample store per split.

    Patches (``patch_size`` > 0) are cut as inference cuts them: across a tile edge from the ``neighbours``
    cubes (the tiles around this one), beyond the project ``grid`` (default: the extent of the tile and its
    neighbours) padded with edge values, NaN inside the grid where no cube exists. Pixels whose series hold a
    NaN (no observation in the season for some band) are dropped and counted in the log. Returns the number of
    samples written per split.
    """
    table = pyogrio.read_dataframe(parcels_gpkg, columns=["parcel_id", "split", "subsample"], read_geometry=False)
    table = table[table["subsample"].astype(bool)]
    split_of = dict(zip(table["parcel_id"].astype(int), table["split"].astype(str)))
    with rasterio.open(class_path) as src:
        classes = src.read(1)
    with rasterio.open(parcel_path) as src:
        parcels = src.read(1)
    tile_index = list(tiles).index(tile)
    chosen = select_pixels(classes, parcels, split_of, pixels_per_parcel, seed + tile_index)
    inputs, own_grid = _open_inputs(cube_path, bands)
    meta = _input_meta(inputs)
    halo = patch_size // 2 if patch_size else 0
    others = [_open_inputs(p, bands) for p in neighbours] if halo else []
    for path, (other, _) in zip(neighbours, others):
        if _input_meta(other) != meta:
            raise ValueError(f"neighbour cube {path}: its inputs (bands/dates) differ from {cube_path}: rebuild the "
                             "cubes with one config")
    grid = grid or extent([own_grid, *(g for _, g in others)])
    cubes = [place(cube_path, inputs, own_grid, grid),
             *(place(p, i, g, grid) for p, (i, g) in zip(neighbours, others))]
    counts = {}
    for split in SPLITS:
        flat = chosen[split]
        rows, cols = np.unravel_index(flat, classes.shape)
        x, patches = _gather(cubes, grid.shape, rows, cols, block_rows, halo)
        valid = np.ones(flat.size, bool)
        for series in x.values():
            valid &= np.isfinite(series).all(axis=(1, 2))
        if (~valid).any():
            log.warning("tile %s %s: %d labelled pixels without observations dropped", tile, split, int((~valid).sum()))
        s = SampleSet(
            x={k: v[valid] for k, v in x.items()},
            patches={k: v[valid] for k, v in patches.items()},
            y=classes.ravel()[flat][valid].astype(np.int16),
            parcel_id=parcels.ravel()[flat][valid].astype(np.int64),
            tile_index=np.full(int(valid.sum()), tile_index, np.int16),
            inputs=meta, class_ids=[int(c) for c in class_ids], class_names=list(class_names),
            row=rows[valid].astype(np.int32), col=cols[valid].astype(np.int32), tiles=list(tiles),
        )
        save_split(out_paths[split], s)
        counts[split] = int(valid.sum())
    log.info("tile %s samples: %s", tile, counts)
    return counts


def select_cube_bands(inputs: Mapping[str, xr.DataArray], bands: Mapping[str, Sequence[str]],
                      cube_path: str | os.PathLike) -> dict[str, xr.DataArray]:
    """The cube inputs cut to a band selection {input: [bands]}; inputs without a selected band are left out.
    A selected band the cube does not have is an error naming it."""
    out = {}
    for name, da in inputs.items():
        keep = list(bands.get(name, []))
        missing = [b for b in keep if b not in set(map(str, da["band"].values))]
        if missing:
            raise ValueError(f"band selection: input '{name}' of cube {cube_path} has no bands {missing}; the "
                             "selection was made on other features: rerun cropflow select on these samples")
        if keep:
            out[name] = da.sel(band=keep)
    if not out:
        raise ValueError(f"band selection keeps no band of cube {cube_path}")
    return out


def merge_samples(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> int:
    """Concatenate per-tile sample stores of one split into one store; inputs must agree."""
    parts = [load_split(p) for p in paths]
    if not parts:
        raise ValueError("no per-tile sample store to merge")
    first = parts[0]
    for p, part in zip(paths, parts):
        if part.inputs != first.inputs:
            raise ValueError(f"{p}: its inputs (bands/dates) differ from {paths[0]}: rebuild the cubes with one config")
    merged = SampleSet(
        x={k: np.concatenate([p.x[k] for p in parts]) for k in first.x},
        patches={k: np.concatenate([p.patches[k] for p in parts]) for k in first.patches},
        y=np.concatenate([p.y for p in parts]),
        parcel_id=np.concatenate([p.parcel_id for p in parts]),
        tile_index=np.concatenate([p.tile_index for p in parts]),
        inputs=first.inputs, class_ids=first.class_ids, class_names=first.class_names,
        row=np.concatenate([p.row for p in parts]), col=np.concatenate([p.col for p in parts]),
        tiles=first.tiles,
    )
    save_split(out_path, merged)
    return int(merged.y.size)
