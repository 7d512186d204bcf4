"""The stack command on a block of tiles (config grid.block_tiles): one folder of cubes, each tile's cube from
its own products, equal to the cube of that tile stacked alone."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from tilecubes import BANDS, DATES, GRID, TILE

from cropflow import cli
from cropflow.cube import cube_grid, open_cube
from cropflow.grid import make_tiles
from cropflow.raster import read_on_grid, write_raster


@pytest.fixture()
def block(tmp_path):
    """The 2 x 2 tiles of tilecubes.GRID, its grid and tiles files, and S1 feature rasters dated by START_TIME:
    one per date over the whole grid and one more (a fifth date) covering the first tile only."""
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(*GRID.bounds)], crs=GRID.crs)
    tiles = make_tiles(GRID, aoi, TILE)
    tiles.to_file(tmp_path / "tiles.gpkg")
    (tmp_path / "grid.json").write_text(json.dumps(GRID.to_dict()))
    rng = np.random.default_rng(3)
    paths = []
    for t, day in enumerate([*DATES, np.datetime64("2023-09-05", "D")]):
        data = rng.normal(0.0, 1.0, (len(BANDS), *GRID.shape)).astype(np.float32)
        path = tmp_path / f"S1A_{t}_features.tif"
        write_raster(path, data, GRID, nodata=float("nan"), band_names=BANDS, tags={"START_TIME": f"{day}T10:00:00"})
        paths.append(str(path))
    ids = list(tiles["tile_id"])
    inputs = {tile: {"s1": paths[:len(DATES)] + (paths[len(DATES):] if tile == ids[0] else [])} for tile in ids}
    return tmp_path, inputs


def stack(folder, inputs, out):
    dates = {"s1": [str(d) for d in DATES]}
    return cli.main(["stack", "--inputs", json.dumps(inputs), "--grid", str(folder / "grid.json"), "--tiles",
                     str(folder / "tiles.gpkg"), "--bands", json.dumps({"s1": BANDS, "coh": [], "s2": []}),
                     "--dates", json.dumps(dates), "--out", str(out)])


def test_a_block_holds_each_tile_cube_as_stacked_alone(block):
    folder, inputs = block
    out = folder / "cubes" / "block"
    assert stack(folder, inputs, out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.zarr" for t in inputs)
    assert [p.name for p in out.parent.iterdir()] == ["block"], "no temporary is left beside the block"
    for tile in inputs:
        alone = folder / "alone" / tile
        assert stack(folder, {tile: inputs[tile]}, alone) == 0
        a, b = open_cube(out / f"{tile}.zarr"), open_cube(alone / f"{tile}.zarr")
        xr.testing.assert_identical(a, b)
        assert a.attrs["tile"] == tile
    first = next(iter(inputs))
    # the fifth raster was listed for the first tile only: its cube alone records it
    recorded = {t: open_cube(out / f"{t}.zarr").attrs["products"]["s1"] for t in inputs}
    assert len(recorded[first]) == len(DATES) + 1 and all(len(v) == len(DATES) for t, v in recorded.items()
                                                           if t != first)
    # the cube's values are the rasters' values on the tile
    cube = open_cube(out / f"{first}.zarr")
    raster = read_on_grid(inputs[first]["s1"][0], cube_grid(cube))
    np.testing.assert_allclose(cube["features"].isel(time=0).values, raster, equal_nan=True)


def test_a_failing_tile_leaves_no_block(block, caplog):
    """A tile that fails (here: not in the tiles file) fails the job naming it; the cubes stacked before it
    are not left as a block."""
    folder, inputs = block
    bad = {**inputs, "E0000000N0000000": next(iter(inputs.values()))}
    out = folder / "cubes" / "block"
    assert stack(folder, bad, out) != 0
    assert "tile E0000000N0000000 is not in the tile grid" in caplog.text
    assert not out.exists() and list((folder / "cubes").iterdir()) == []
