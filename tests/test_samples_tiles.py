"""Training patches across tile edges: per tile with its neighbours' cubes they equal the merged cube's
patches and the patches inference gives the model for the same pixel."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from tilecubes import BANDS, DATES, GRID, NAN_PIXELS, TILE, cube, truth_map, write_layers

from cropflow import cli
from cropflow.cube import cube_inputs, open_cube
from cropflow.grid import ProjectGrid, make_tiles, neighbour_tiles, tile_grid
from cropflow.halo import place, read_block
from cropflow.inference import predict_window
from cropflow.raster import write_raster
from cropflow.samples import tile_samples
from cropflow.sampleset import load_split
from cropflow.stack import build_cube

PATCH = 5
H = PATCH // 2
CLASSES = [1, 2, 5]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """The 2 x 2 tile cubes, the merged cube, and labels: every pixel its own parcel, all in train."""
    folder = tmp_path_factory.mktemp("sample_tiles")
    layers = write_layers(folder)
    table = make_tiles(GRID, gpd.GeoDataFrame(geometry=[shapely.box(*GRID.bounds)], crs=GRID.crs), TILE)
    cubes = {t: cube(layers, tile_grid(GRID, table, t), t, folder / f"{t}.zarr") for t in table["tile_id"]}
    cubes["merged"] = cube(layers, GRID, "merged", folder / "merged.zarr")
    parcels = np.arange(1, GRID.height * GRID.width + 1, dtype=np.int32).reshape(GRID.shape)
    write_raster(folder / "class.tif", truth_map(), GRID, nodata=0)
    write_raster(folder / "parcel.tif", parcels, GRID, nodata=0)
    x, y = GRID.coords()
    points = [shapely.Point(x[c], y[r]) for r in range(GRID.height) for c in range(GRID.width)]
    gpd.GeoDataFrame({"parcel_id": parcels.ravel(), "split": "train", "subsample": True}, geometry=points,
                     crs=GRID.crs).to_file(folder / "parcels.gpkg", driver="GPKG")
    return table, cubes, folder


def labels_of(folder: Path, grid: ProjectGrid, name: str) -> tuple[Path, Path]:
    """The class and parcel rasters of the whole grid cut to ``grid``."""
    win = GRID.window_of(grid)
    rows, cols = slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width)
    out = []
    for kind in ("class", "parcel"):
        with rasterio.open(folder / f"{kind}.tif") as src:
            data = src.read(1)[rows, cols]
        out.append(folder / f"{name}_{kind}.tif")
        write_raster(out[-1], data, grid, nodata=0)
    return out[0], out[1]


def own_grid(table, tile: str) -> ProjectGrid:
    """The grid of a tile's cube ("merged": the whole GRID)."""
    return GRID if tile == "merged" else tile_grid(GRID, table, tile)


def train_patches(tiles, tile: str, neighbours: list[str]) -> dict[tuple[int, int], np.ndarray]:
    """{(grid row, grid col): patch} of the tile's training samples."""
    table, cubes, folder = tiles
    grid = own_grid(table, tile)
    classes, parcels = labels_of(folder, grid, tile)
    outs = {s: folder / f"{tile}_{len(neighbours)}_{s}.zarr" for s in ("train", "val", "test")}
    tile_samples(cubes[tile], classes, parcels, folder / "parcels.gpkg", tile, [tile], CLASSES,
                 ["a", "b", "c"], outs, patch_size=PATCH, block_rows=5,
                 neighbours=[cubes[n] for n in neighbours], grid=GRID)
    s = load_split(outs["train"])
    win = GRID.window_of(grid)
    assert len(s) > 0
    np.testing.assert_array_equal(s.patches["features"][:, H, H], s.x["features"])
    return {(int(r) + win.row_off, int(c) + win.col_off): p
            for r, c, p in zip(s.row, s.col, s.patches["features"])}


class Recording:
    """A stand-in model that records the patches inference gives it."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def predict_proba(self, x, batch_size, **kw):
        self.seen.append(x["features"])
        return np.full((len(x["features"]), len(CLASSES)), 1.0 / len(CLASSES), np.float32)


def inference_patches(tiles, tile: str, neighbours: list[str]) -> dict[tuple[int, int], np.ndarray]:
    """{(grid row, grid col): patch} inference gives the model for the tile, read as ``infer_tile`` reads it."""
    table, cubes, _ = tiles
    placed = [place(cubes[t], {"features": cube_inputs(open_cube(cubes[t]))["features"]},
                    own_grid(table, t), GRID) for t in (tile, *neighbours)]
    own = placed[0]
    block = read_block(placed, "features", (own.row - H, own.row + own.height + H),
                       (own.col - H, own.col + own.width + H), GRID.shape)
    model = Recording()
    _, _, valid = predict_window(model, {"features": block}, H, CLASSES, 17)
    rows, cols = np.divmod(np.flatnonzero(valid), own.width)
    return {(int(r) + own.row, int(c) + own.col): p for r, c, p in zip(rows, cols, np.concatenate(model.seen))}


def test_tile_patches_with_neighbours_equal_the_merged_cube_and_inference(tiles):
    table, _, _ = tiles
    merged = train_patches(tiles, "merged", [])
    assert len(merged) == GRID.height * GRID.width - len(NAN_PIXELS)
    per_tile = {}
    for t in table["tile_id"]:
        neighbours = neighbour_tiles(table, t)
        got, seen = train_patches(tiles, t, neighbours), inference_patches(tiles, t, neighbours)
        assert got.keys() == seen.keys()
        for key, patch in got.items():
            np.testing.assert_array_equal(patch, seen[key], err_msg=f"{t} {key}")
        per_tile.update(got)
    assert per_tile.keys() == merged.keys()
    for key, patch in merged.items():
        np.testing.assert_array_equal(per_tile[key], patch, err_msg=str(key))
    # a pixel next to the NaN pixel across a tile edge: its patch holds the neighbour's NaN, not a padded value
    assert np.isnan(per_tile[(12, 12)][H - 1, H - 1]).all()
    assert np.isfinite(per_tile[(12, 12)][H, H]).all()


def test_patches_are_padded_beyond_the_grid_and_nan_where_no_tile_is(tiles):
    table, cubes, _ = tiles
    first, *rest = table["tile_id"]  # the south-west tile; its neighbours without the tile east of it
    grid = tile_grid(GRID, table, first)
    east = next(t for t in rest if tile_grid(GRID, table, t).bounds[0] == grid.bounds[2]
                and tile_grid(GRID, table, t).bounds[1] == grid.bounds[1])
    neighbours = [t for t in rest if t != east]
    got, seen = train_patches(tiles, first, neighbours), inference_patches(tiles, first, neighbours)
    assert got.keys() == seen.keys()
    for key, p in got.items():
        np.testing.assert_array_equal(p, seen[key], err_msg=str(key))
    win = GRID.window_of(grid)
    r, c = win.row_off + win.height - 1, win.col_off + win.width - 1  # the grid's bottom edge, the missing tile east
    patch = got[(r, c)]
    assert np.isnan(patch[:H + 1, H + 1:]).all()  # east of the pixel, in the grid: no tile, no observation
    np.testing.assert_array_equal(patch[H + 1:], np.repeat(patch[H:H + 1], H, axis=0))  # below the grid: edge pad


def test_neighbours_with_other_inputs_are_rejected(tiles, tmp_path):
    table, cubes, folder = tiles
    t, other = table["tile_id"].iloc[:2]
    layers = write_layers(tmp_path)
    short = tmp_path / "short.zarr"
    build_cube({"s1": layers[:3]}, {"s1": BANDS}, {"s1": DATES[:3]}, tile_grid(GRID, table, other), other, short)
    classes, parcels = labels_of(folder, tile_grid(GRID, table, t), t)
    outs = {s: tmp_path / f"{s}.zarr" for s in ("train", "val", "test")}
    with pytest.raises(ValueError, match=r"neighbour cube .*short\.zarr: its inputs \(bands/dates\) differ"):
        tile_samples(cubes[t], classes, parcels, folder / "parcels.gpkg", t, [t], CLASSES, ["a", "b", "c"], outs,
                     patch_size=PATCH, neighbours=[short], grid=GRID)


def samples_command(tiles, tmp_path, inputs: dict, out: Path) -> int:
    table, _, folder = tiles
    table.to_file(tmp_path / "tiles.gpkg", driver="GPKG")
    (tmp_path / "grid.json").write_text(json.dumps(GRID.to_dict()))
    legend = Path(__file__).parents[1] / "resources" / "legend.yaml"
    return cli.main(["samples-tile", "--inputs", json.dumps(inputs), "--grid", str(tmp_path / "grid.json"),
                     "--parcels", str(folder / "parcels.gpkg"), "--tiles", str(tmp_path / "tiles.gpkg"),
                     "--legend", str(legend), "--patch-size", str(PATCH), "--out", str(out)])


def block_inputs(tiles, tmp_path) -> dict:
    """--inputs of the block of all four tiles: each tile's cube, its neighbours' cubes and its label rasters."""
    table, cubes, folder = tiles
    inputs = {}
    for t in table["tile_id"]:
        classes, parcels = labels_of(folder, own_grid(table, t), t)
        inputs[t] = {"cube": str(cubes[t]), "neighbours": [str(cubes[n]) for n in neighbour_tiles(table, t)],
                     "classes": str(classes), "parcel_ids": str(parcels)}
    return inputs


def test_samples_tile_command_samples_a_block_of_tiles_with_their_neighbours(tiles, tmp_path):
    """One job for a block of tiles: a folder with each tile's split stores, patches read across the tile
    edges from the neighbours' cubes as inference reads them."""
    table, _, _ = tiles
    out = tmp_path / "samples" / "block"
    assert samples_command(tiles, tmp_path, block_inputs(tiles, tmp_path), out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(table["tile_id"])
    for t in table["tile_id"]:
        assert sorted(p.name for p in (out / t).iterdir()) == ["test.zarr", "train.zarr", "val.zarr"]
        s = load_split(out / t / "train.zarr")
        win = GRID.window_of(own_grid(table, t))
        expected = inference_patches(tiles, t, neighbour_tiles(table, t))
        assert len(s) == len(expected)
        for r, c, p in zip(s.row, s.col, s.patches["features"]):
            np.testing.assert_array_equal(p, expected[(int(r) + win.row_off, int(c) + win.col_off)])


def test_samples_tile_command_with_a_failing_tile_leaves_no_block(tiles, tmp_path, caplog):
    """A tile whose cube is missing fails the job naming the cube; the tiles sampled before it are not left."""
    inputs = block_inputs(tiles, tmp_path)
    last = list(inputs)[-1]
    inputs[last] = {**inputs[last], "cube": str(tmp_path / "missing.zarr")}
    out = tmp_path / "samples" / "block"
    assert samples_command(tiles, tmp_path, inputs, out) != 0
    assert "missing.zarr" in caplog.text
    assert not out.exists() and list(out.parent.iterdir()) == []
    del inputs[last]["classes"]
    assert samples_command(tiles, tmp_path, inputs, out) != 0
    assert f"tile {last} lacks classes" in caplog.text and not out.exists()
