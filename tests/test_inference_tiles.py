"""Seamless tiled inference: four tile cubes (with halos from their neighbours) against one merged cube."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from tilecubes import BANDS, DATES, GRID, NAN_PIXELS, TILE, cube, truth_map, write_layers

from cropflow.cube import cube_inputs, open_cube, stored_input
from cropflow.grid import make_tiles, neighbour_tiles, tile_grid
from cropflow.halo import (column_pieces, copy_pixel_major, finite_series, pad_edges, patch_gaps, place, read_block,
                          samples_at)
from cropflow.inference import infer_tile
from cropflow.legend import Legend
from cropflow.mosaic import mosaic
from cropflow.sampleset import SampleSet
from cropflow.threads import THREAD_VARS
from cropflow.training import train

LEGEND = Path(__file__).parents[1] / "resources" / "legend.yaml"
CLASSES = (1, 2, 5)
PATCH = 5


def samples(merged: Path, rows: slice) -> SampleSet:
    """Labelled series and 5 x 5 patches (edge-padded at the grid edge) of every valid pixel of some rows."""
    da = cube_inputs(open_cube(merged))
    placed = [place(merged, {"features": da["features"]}, GRID, GRID)]
    h = PATCH // 2
    block = read_block(placed, "features", (-h, GRID.height + h), (-h, GRID.width + h), GRID.shape)
    rr, cc = np.meshgrid(np.arange(GRID.height)[rows], np.arange(GRID.width), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    patches = samples_at({"f": block}, h, rr, cc)["f"]
    series = patches[:, h, h]
    ok = np.isfinite(series).all(axis=(1, 2))
    patches = patches[ok]
    y = truth_map()[rr[ok], cc[ok]].astype(np.int16)
    legend = Legend.load(str(LEGEND))
    inputs = {"features": {"bands": BANDS, "times": [str(d) for d in DATES]}}
    return SampleSet(x={"features": series[ok]}, patches={"features": patches}, y=y, parcel_id=np.arange(y.size),
                     tile_index=np.zeros(y.size, np.int16), inputs=inputs, class_ids=list(CLASSES),
                     class_names=[legend.names[legend.index_of(c)] for c in CLASSES])


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """The 2 x 2 tile cubes, the merged cube of the same area, a patch (cnn3d) and a pixel (rf) model."""
    folder = tmp_path_factory.mktemp("tiles")
    layers = write_layers(folder)
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(*GRID.bounds)], crs=GRID.crs)
    table = make_tiles(GRID, aoi, TILE)
    cubes = {t: cube(layers, tile_grid(GRID, table, t), t, folder / f"{t}.zarr") for t in table["tile_id"]}
    merged = cube(layers, GRID, "merged", folder / "merged.zarr")
    tr, va = samples(merged, slice(0, None, 2)), samples(merged, slice(1, None, 2))
    cnn = folder / "cnn3d"
    train("cnn3d", tr, va, {"filters": [4, 4, 8], "dense": [16], "dropout": 0.1, "epochs": 2, "batch_size": 64,
                            "patience": 2}, 3, cnn)
    rf = folder / "rf"
    train("rf", tr, va, {"n_estimators": 15, "n_jobs": 1}, 3, rf)
    return table, cubes, merged, {"cnn3d": cnn, "rf": rf}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def tiled_and_merged(tiles, model: str, out: Path, monkeypatch, window_rows: int = 5, batch_size: int = 37):
    """(mosaicked 4-tile maps, merged map) as {kind: array} for the class, uncertainty and probability COGs and
    the float probabilities ("float", (K, y, x)) the model returned."""
    import cropflow.inference as inference

    table, cubes, merged, models = tiles
    kinds = ("class", "uncertainty", "proba")
    k_classes = len(CLASSES)
    whole = {k: np.zeros((n, *GRID.shape), np.uint8) for k, n in zip(kinds, (1, 3, k_classes))}
    whole["float"] = np.zeros((k_classes, *GRID.shape), np.float32)
    returned = []
    real = inference.predict_window

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        returned.append(result[1])
        return result

    monkeypatch.setattr(inference, "predict_window", recording)
    for t, path in cubes.items():
        neighbours = [cubes[n] for n in neighbour_tiles(table, t)]
        outs = {k: out / f"{t}_{k}.tif" for k in kinds}
        returned.clear()
        infer_tile(path, models[model], outs["class"], outs["proba"], window_rows, batch_size, legend=LEGEND,
                   out_uncertainty=outs["uncertainty"], neighbours=neighbours, grid=GRID)
        win = GRID.window_of(tile_grid(GRID, table, t))
        rows, cols = slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width)
        for k in kinds:
            whole[k][:, rows, cols] = read(outs[k])
        whole["float"][:, rows, cols] = np.concatenate(returned).T.reshape(k_classes, win.height, win.width)
    ref = {k: out / f"merged_{k}.tif" for k in kinds}
    returned.clear()
    infer_tile(merged, models[model], ref["class"], ref["proba"], 7, 101, legend=LEGEND,
               out_uncertainty=ref["uncertainty"])
    one = {k: read(p) for k, p in ref.items()}
    one["float"] = np.concatenate(returned).T.reshape(k_classes, *GRID.shape)
    return whole, one


def test_neighbours_are_the_touching_tiles(tiles):
    table = tiles[0]
    assert len(table) == 4
    for t in table["tile_id"]:
        assert neighbour_tiles(table, t) == sorted(set(table["tile_id"]) - {t})


def test_patch_model_tiles_with_halos_equal_the_merged_cube(tiles, tmp_path, monkeypatch):
    tiled, merged = tiled_and_merged(tiles, "cnn3d", tmp_path, monkeypatch)
    np.testing.assert_array_equal(tiled["class"], merged["class"])
    np.testing.assert_allclose(tiled["float"], merged["float"], rtol=0, atol=1e-5)
    # probabilities and uncertainty agree to the uint8 quantisation step (float differences of batching)
    for kind in ("proba", "uncertainty"):
        diff = np.abs(tiled[kind].astype(int) - merged[kind].astype(int))
        assert diff.max() <= 1, kind
        assert np.mean(diff == 0) > 0.99, kind
    for r, c in NAN_PIXELS:
        assert tiled["class"][0, r, c] == 0 and (tiled["uncertainty"][:, r, c] == 255).all()
    # the map is not trivially constant: the seam test means something
    assert len(np.unique(merged["class"][merged["class"] > 0])) >= 2


def test_patch_model_without_neighbours_differs_at_tile_edges(tiles, tmp_path):
    """Without halos a tile is padded at its own edges: the maps differ from the merged one near the seams."""
    table, cubes, merged, models = tiles
    t = table["tile_id"].iloc[0]
    infer_tile(cubes[t], models["cnn3d"], tmp_path / "alone.tif", legend=LEGEND, out_uncertainty=tmp_path / "u.tif")
    infer_tile(merged, models["cnn3d"], tmp_path / "m.tif", legend=LEGEND, out_uncertainty=tmp_path / "mu.tif")
    win = GRID.window_of(tile_grid(GRID, table, t))
    ref = read(tmp_path / "mu.tif")[:, win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width]
    assert not np.array_equal(read(tmp_path / "u.tif"), ref)


def test_pixel_model_tiles_equal_the_merged_cube(tiles, tmp_path, monkeypatch):
    tiled, merged = tiled_and_merged(tiles, "rf", tmp_path, monkeypatch)
    for kind in ("class", "uncertainty", "proba", "float"):
        np.testing.assert_array_equal(tiled[kind], merged[kind])


def test_majority_filtered_mosaic_of_tile_maps_equals_the_merged_map(tiles, tmp_path):
    table, cubes, merged, models = tiles
    maps = []
    for t, path in cubes.items():
        maps.append(tmp_path / f"{t}_class.tif")
        infer_tile(path, models["cnn3d"], maps[-1], legend=LEGEND,
                   neighbours=[cubes[n] for n in neighbour_tiles(table, t)], grid=GRID)
    infer_tile(merged, models["cnn3d"], tmp_path / "merged_class.tif", legend=LEGEND)
    mosaic(maps, GRID, tmp_path / "tiles.tif", LEGEND, True, None, window_rows=5)
    mosaic([tmp_path / "merged_class.tif"], GRID, tmp_path / "one.tif", LEGEND, True, None, window_rows=9)
    np.testing.assert_array_equal(read(tmp_path / "tiles.tif"), read(tmp_path / "one.tif"))


def test_patches_are_gathered_one_batch_at_a_time(tiles, tmp_path, monkeypatch):
    """Per window only the window plus its halo is read, and the model sees at most one batch of patches."""
    import cropflow.inference as inference

    table, cubes, _, models = tiles
    t = table["tile_id"].iloc[0]
    reads, batches = [], []
    real_read, real_samples = inference.read_block, inference.samples_at

    def recording_read(cubes_, name, rows, cols, shape, buffer=None):
        out = real_read(cubes_, name, rows, cols, shape, buffer)
        reads.append(out.shape[:2])
        return out

    def recording_samples(blocks, h, rows, cols):
        out = real_samples(blocks, h, rows, cols)
        batches.append(next(iter(out.values())).shape)
        return out

    monkeypatch.setattr(inference, "read_block", recording_read)
    monkeypatch.setattr(inference, "samples_at", recording_samples)
    infer_tile(cubes[t], models["cnn3d"], tmp_path / "c.tif", window_rows=4, batch_size=10, legend=LEGEND,
               neighbours=[cubes[n] for n in neighbour_tiles(table, t)], grid=GRID)
    assert reads == [(4 + 4, 12 + 4)] * 3  # 3 windows of 4 rows, a halo of 2 on every side
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.tags()["HALO_TILES"] == ",".join(neighbour_tiles(table, t)) and src.tags()["PATCH_SIZE"] == "5"
    assert max(b[0] for b in batches) == 10 and all(b[1:3] == (PATCH, PATCH) for b in batches)
    win = GRID.window_of(tile_grid(GRID, table, t))
    inside = [(r, c) for r, c in NAN_PIXELS
              if win.row_off <= r < win.row_off + 12 and win.col_off <= c < win.col_off + 12]
    assert sum(b[0] for b in batches) == 12 * 12 - len(inside)


def test_infer_command_reads_the_neighbours_and_writes_the_uncertainty(tiles, tmp_path):
    from cropflow import cli

    table, cubes, _, models = tiles
    t = table["tile_id"].iloc[-1]
    (tmp_path / "grid.json").write_text(json.dumps(GRID.to_dict()))
    neighbours = [str(cubes[n]) for n in neighbour_tiles(table, t)]
    rc = cli.main(["infer", "--cube", str(cubes[t]), "--neighbours", *neighbours, "--grid", str(tmp_path / "grid.json"),
                   "--model-dir", str(models["cnn3d"]), "--legend", str(LEGEND), "--window-rows", "5",
                   "--threads", "1", "--out-class", str(tmp_path / "c.tif"),
                   "--out-uncertainty", str(tmp_path / "u.tif")])
    assert rc == 0
    infer_tile(cubes[t], models["cnn3d"], tmp_path / "ref.tif", legend=LEGEND, out_uncertainty=tmp_path / "ru.tif",
               neighbours=neighbours, grid=GRID)
    np.testing.assert_array_equal(read(tmp_path / "c.tif"), read(tmp_path / "ref.tif"))
    np.testing.assert_array_equal(read(tmp_path / "u.tif"), read(tmp_path / "ru.tif"))


def test_column_pieces_follow_the_chunk_columns():
    assert column_pieces(0, 12, 5) == [(0, 5), (5, 10), (10, 12)]
    assert column_pieces(3, 12, 5) == [(3, 5), (5, 10), (10, 12)]
    assert column_pieces(5, 10, 5) == [(5, 10)]
    assert column_pieces(2, 4, 256) == [(2, 4)]


@pytest.mark.parametrize("pixels", [1, 7, 4096])
def test_pixel_major_copy_equals_the_transposed_part(pixels):
    """Row runs of any length (one row, a run that splits the part unevenly, the whole part) copy every value
    into a strided target: a column range of a wider block, NaN included."""
    part = np.random.default_rng(3).random((4, 3, 10, 6), dtype=np.float32)
    part[1, 2, 4, 5] = np.nan
    block = np.full((10, 9, 4, 3), -1.0, np.float32)
    copy_pixel_major(part, block[:, 2:8], pixels)
    np.testing.assert_array_equal(block[:, 2:8], part.transpose(2, 3, 0, 1))
    assert (block[:, :2] == -1).all() and (block[:, 8:] == -1).all()
    with pytest.raises(ValueError, match="does not fit"):
        copy_pixel_major(part, block[:, 1:8], pixels)


def test_blocks_read_chunk_column_by_chunk_column_equal_the_cube(tiles, tmp_path):
    """A cube stored in chunks of 5 columns gives the same halo blocks as the one-chunk merged cube."""
    merged = tiles[2]
    rechunked = tmp_path / "rechunked.zarr"
    ds = open_cube(merged)
    ds.to_zarr(rechunked, encoding={"features": {"chunks": (len(DATES), len(BANDS), 7, 5)}}, consolidated=False)
    one, five = (cube_inputs(open_cube(p))["features"] for p in (merged, rechunked))
    assert five.encoding["preferred_chunks"]["x"] == 5
    for rows, cols in [((-2, 26), (-2, 26)), ((3, 9), (4, 17)), ((10, 14), (5, 10)), ((0, 24), (11, 12))]:
        a = read_block([place(merged, {"features": one}, GRID, GRID)], "features", rows, cols, GRID.shape)
        b = read_block([place(rechunked, {"features": five}, GRID, GRID)], "features", rows, cols, GRID.shape)
        np.testing.assert_array_equal(a, b)
        r0, c0 = max(rows[0], 0) - rows[0], max(cols[0], 0) - cols[0]
        inner = one.values.transpose(2, 3, 0, 1)[max(rows[0], 0):rows[1], max(cols[0], 0):cols[1]]
        np.testing.assert_array_equal(b[r0:r0 + inner.shape[0], c0:c0 + inner.shape[1]], inner)


def test_blocks_assembled_in_a_reused_buffer_equal_the_cube_edge_padded(tiles, tmp_path):
    """read_block into a caller's (dirty) buffer, with a band cut that is not a run of the stored bands, gives
    the cube's values, edge-padded beyond the grid as numpy.pad does, as a view of that buffer."""
    merged = tiles[2]
    one = cube_inputs(open_cube(merged))["features"]
    cut = one.isel(band=[2, 0]) if one.sizes["band"] > 2 else one.isel(band=[1, 0])
    placed = [place(merged, {"features": cut}, GRID, GRID)]
    assert not isinstance(placed[0].stored["features"].bands, slice)
    buffer = np.full(40 * 40 * cut.sizes["time"] * cut.sizes["band"], 7.0, np.float32)
    for rows, cols in [((-2, 26), (-3, 21)), ((3, 9), (4, 17)), ((0, 24), (11, 12)), ((20, 27), (0, 20))]:
        got = read_block(placed, "features", rows, cols, GRID.shape, buffer)
        assert np.shares_memory(got, buffer)
        values = cut.values.transpose(2, 3, 0, 1)[max(rows[0], 0):rows[1], max(cols[0], 0):cols[1]]
        pad = ((max(-rows[0], 0), max(rows[1] - GRID.height, 0)), (max(-cols[0], 0), max(cols[1] - GRID.width, 0)),
               (0, 0), (0, 0))
        np.testing.assert_array_equal(got, np.pad(values, pad, mode="edge"))
        np.testing.assert_array_equal(read_block(placed, "features", rows, cols, GRID.shape, buffer[:5]), got)
    # grid pixels without a cube are NaN whatever the buffer held: one tile of the 2 x 2 placed alone
    table, cubes = tiles[0], tiles[1]
    t = table["tile_id"].iloc[0]
    own = tile_grid(GRID, table, t)
    alone = [place(cubes[t], cube_inputs(open_cube(cubes[t])), own, GRID)]
    buffer[:] = 7.0
    got = read_block(alone, "features", (0, GRID.height), (0, GRID.width), GRID.shape, buffer)
    inside = np.zeros(GRID.shape, bool)
    inside[alone[0].row:alone[0].row + own.height, alone[0].col:alone[0].col + own.width] = True
    assert np.isnan(got[~inside]).all() and not np.isnan(got[inside]).all() and (got != 7.0).all()


def test_pad_edges_equals_numpy_pad_and_needs_an_interior():
    a = np.arange(7 * 6 * 2, dtype=np.float32).reshape(7, 6, 2)
    want = np.pad(a[2:6, 1:5], ((2, 1), (1, 1), (0, 0)), mode="edge")
    pad_edges(a, (2, 1), (1, 1))
    np.testing.assert_array_equal(a, want)
    with pytest.raises(ValueError, match="no interior"):
        pad_edges(a, (4, 3), (0, 0))


def test_an_input_not_stored_as_cropflow_writes_it_is_named(tiles, tmp_path):
    merged = tiles[2]
    da = cube_inputs(open_cube(merged))["features"]
    with pytest.raises(ValueError, match=r"has no bands \['nir9'\].*rebuild it with 'stack'"):
        stored_input(merged, da.assign_coords(band=["nir9", *map(str, da["band"].values[1:])]))
    with pytest.raises(ValueError, match=r"not as the \(time, band, y, x\).*rebuild it with 'stack'"):
        stored_input(merged, da.isel(time=slice(1, None)))


def test_patch_gaps_marks_the_pixels_whose_patch_holds_a_nan():
    block = np.ones((6, 7, 2, 1), np.float32)
    block[0, 6, 1, 0] = np.nan  # in the halo: only the interior corner pixel's patch reaches it
    block[4, 2] = np.inf
    gaps = patch_gaps({"a": block, "b": np.ones_like(block)}, 1)
    expected = np.zeros((4, 5), bool)
    expected[0, 4] = True
    expected[2:4, 0:3] = True
    np.testing.assert_array_equal(gaps, expected)
    np.testing.assert_array_equal(patch_gaps({"a": block}, 0), ~np.isfinite(block).all(axis=(2, 3)))


def test_patches_reaching_a_missing_tile_give_one_summary_line(tiles, tmp_path, caplog):
    """Patches that reach into the grid where no tile is (or a never-observed pixel) are counted once per tile
    job, not warned about per batch."""
    table, cubes, _, models = tiles
    t, missing = table["tile_id"].iloc[0], table["tile_id"].iloc[1]
    neighbours = [cubes[n] for n in neighbour_tiles(table, t) if n != missing]
    with caplog.at_level("DEBUG"):
        infer_tile(cubes[t], models["cnn3d"], tmp_path / "c.tif", window_rows=4, batch_size=10, legend=LEGEND,
                   neighbours=neighbours, grid=GRID)
    nan = np.zeros(GRID.shape, bool)
    for r, c in NAN_PIXELS:
        nan[r, c] = True
    gone = GRID.window_of(tile_grid(GRID, table, missing))
    nan[gone.row_off:gone.row_off + gone.height, gone.col_off:gone.col_off + gone.width] = True
    win, h = GRID.window_of(tile_grid(GRID, table, t)), PATCH // 2
    expected = sum(nan[max(r - h, 0):r + h + 1, max(c - h, 0):c + h + 1].any() and not nan[r, c]
                   for r in range(win.row_off, win.row_off + win.height)
                   for c in range(win.col_off, win.col_off + win.width))
    assert expected > 12
    summary = [r for r in caplog.records if "patches reaching pixels without observation" in r.getMessage()]
    assert len(summary) == 1 and summary[0].levelname == "WARNING"
    assert f"{expected} classified pixels" in summary[0].getMessage()
    per_batch = [r for r in caplog.records if "have missing values" in r.getMessage()]
    assert per_batch and all(r.levelname == "DEBUG" for r in per_batch)


def test_infer_command_with_a_pixel_model_caps_the_pools_without_loading_tensorflow(tiles, tmp_path):
    table, cubes, _, models = tiles
    t = table["tile_id"].iloc[0]
    code = ("import json, sys\nfrom cropflow import cli\nrc = cli.main(sys.argv[1:])\n"
            "from threadpoolctl import threadpool_info\n"
            "print(json.dumps({'rc': rc, 'tf': 'tensorflow' in sys.modules,"
            " 'pools': [p['num_threads'] for p in threadpool_info()]}))")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "workflow")
    proc = subprocess.run([sys.executable, "-c", code, "infer", "--cube", str(cubes[t]), "--model-dir", str(models["rf"]),
                           "--legend", str(LEGEND), "--threads", "1", "--out-class", str(tmp_path / "c.tif")],
                          capture_output=True, text=True, env=env, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and (tmp_path / "c.tif").exists()
    assert not out["tf"], "a random forest job must not load TensorFlow"
    assert out["pools"] and set(out["pools"]) == {1}


def test_finite_series_is_exact_for_nan_inf_and_sums_beyond_float32():
    a = np.ones((3, 4, 5, 2), np.float32)
    a[0, 1, 2, 1] = np.nan
    a[1, 2, 0, 0] = np.inf
    a[2, 3, :, :] = 3e38  # every value finite, their sum is not
    a[2, 0, 0, 0], a[2, 0, 1, 0] = np.inf, -np.inf
    np.testing.assert_array_equal(finite_series(a), np.isfinite(a).all(axis=(2, 3)))
    assert finite_series(a)[2, 3] and not finite_series(a)[2, 0]
