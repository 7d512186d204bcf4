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

from cropflow.cube import cube_inputs, open_cube
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


def _gather(data, rows: np.ndarray, cols: np.ndarray, block_rows: int, halo: int) -> tuple[np.ndarray, np.ndarray]:
    """Series (N, T, C) and, with halo > 0, patches (N, 2 halo + 1, 2 halo + 1, T, C) at (rows, cols).

    ``data`` is a (time, band, y, x) DataArray; reads proceed in row blocks so only one block (plus
    halo) is in memory. Patches at the tile edge are padded with the edge values.
    """
    n_t, n_c, height, width = data.shape
    series = np.empty((rows.size, n_t, n_c), np.float32)
    size = 2 * halo + 1
    patches = np.empty((rows.size, size, size, n_t, n_c), np.float32) if halo else np.empty((0,), np.float32)
    for r0 in range(0, height, block_rows):
        sel = np.flatnonzero((rows >= r0) & (rows < r0 + block_rows))
        if sel.size == 0:
            continue
        lo, hi = max(r0 - halo, 0), min(r0 + block_rows + halo, height)
        block = data.isel(y=slice(lo, hi)).values.transpose(2, 3, 0, 1)  # (y, x, T, C)
        series[sel] = block[rows[sel] - lo, cols[sel]]
        if halo:
            pad_top, pad_bottom = halo - (r0 - lo), halo - (hi - min(r0 + block_rows, height))
            padded = np.pad(block, ((pad_top, pad_bottom), (halo, halo), (0, 0), (0, 0)), mode="edge")
            for i in sel:
                r, c = rows[i] - r0 + halo, cols[i] + halo
                patches[i] = padded[r - halo:r + halo + 1, c - halo:c + halo + 1]
    return series, patches


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
) -> dict[str, int]:
    """Extract one tile's samples for every split and write one sample store per split.

    Pixels whose series hold a NaN (no observation in the season for some band) are dropped and
    counted in the log. Returns the number of samples written per split.
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
    inputs = cube_inputs(open_cube(cube_path))
    if bands is not None:
        inputs = select_cube_bands(inputs, bands, cube_path)
    meta = {name: {"bands": [str(b) for b in da["band"].values],
                   "times": [str(t)[:10] for t in da["time"].values]} for name, da in inputs.items()}
    halo = patch_size // 2 if patch_size else 0
    counts = {}
    for split in SPLITS:
        flat = chosen[split]
        rows, cols = np.unravel_index(flat, classes.shape)
        x: dict[str, np.ndarray] = {}
        patches: dict[str, np.ndarray] = {}
        valid = np.ones(flat.size, bool)
        for name, da in inputs.items():
            series, patch = _gather(da, rows, cols, block_rows, halo)
            x[name] = series
            if halo:
                patches[name] = patch
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
