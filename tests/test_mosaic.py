"""Majority filter and county mosaic (cropflow.mosaic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from rio_cogeo.cogeo import cog_validate

from cropflow.mosaic import UNCERTAINTY_BANDS, majority_filter, mosaic, mosaic_uncertainty
from cropflow.raster import cog_writer, read_categories, row_windows, write_raster

LEGEND = Path(__file__).parents[1] / "resources" / "legend.yaml"


def reference_majority(classes: np.ndarray, nodata: int = 0, size: int = 3) -> np.ndarray:
    """Pixel-by-pixel mode of the valid pixels of each window (ties: centre, then lowest id)."""
    h, w = classes.shape
    r = size // 2
    out = classes.copy()
    for i in range(h):
        for j in range(w):
            c = classes[i, j]
            if c == nodata:
                continue
            win = classes[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].ravel()
            win = win[win != nodata]
            ids, counts = np.unique(win, return_counts=True)
            if counts[ids == c][0] < counts.max():
                out[i, j] = ids[np.argmax(counts)]
    return out


# ------------------------------------------------------------------------------------------ majority_filter


def test_isolated_pixel_is_removed():
    a = np.full((5, 5), 2, dtype=np.uint8)
    a[2, 2] = 1
    out = majority_filter(a)
    assert out.dtype == np.uint8
    assert (out == 2).all()


def test_tie_keeps_centre_class():
    # centre (1, 1) is class 2; its window holds 3 x class 1, 3 x class 2, 3 x nodata -> tie
    a = np.array([[1, 1, 2], [1, 2, 2], [0, 0, 0]], dtype=np.uint8)
    assert majority_filter(a)[1, 1] == 2
    # one more class-1 vote breaks the tie
    b = a.copy()
    b[2, 0] = 1
    assert majority_filter(b)[1, 1] == 1


def test_nodata_stays_nodata_and_does_not_vote():
    a = np.zeros((5, 5), dtype=np.uint8)
    a[1:4, 1:4] = 3
    a[2, 2] = 0  # a nodata hole surrounded by class 3
    a[0, 0] = 4  # a valid pixel whose window is mostly nodata: only itself and three 0s/3s vote
    out = majority_filter(a)
    assert out[2, 2] == 0
    assert (out[a == 0] == 0).all()
    # (0, 0) sees itself (4) and (1, 1) (3): a tie -> kept; nodata never wins
    assert out[0, 0] == 4


def test_edge_pixels_only_count_pixels_inside_the_array():
    a = np.array([[1, 2, 2], [2, 2, 2]], dtype=np.uint8)
    assert majority_filter(a)[0, 0] == 2  # corner window: 1 vote for 1, 3 for 2
    c = np.array([[1, 1, 2], [1, 2, 2]], dtype=np.uint8)
    # corner (0, 2): window holds 1 (x2) and 2 (x2) -> tie keeps 2; (0, 0): 1 x3, 2 x1 -> 1
    out = majority_filter(c)
    assert out[0, 2] == 2 and out[0, 0] == 1


@pytest.mark.parametrize("size", [3, 5])
def test_matches_pixelwise_reference_on_random_maps(size):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, size=(23, 31)).astype(np.uint8)
    np.testing.assert_array_equal(majority_filter(a, nodata=0, size=size), reference_majority(a, 0, size))


def test_custom_nodata_value():
    rng = np.random.default_rng(4)
    a = rng.integers(1, 5, size=(15, 17)).astype(np.uint8)
    a[rng.random(a.shape) < 0.2] = 255
    out = majority_filter(a, nodata=255)
    np.testing.assert_array_equal(out, reference_majority(a, 255, 3))
    assert (out[a == 255] == 255).all()


def test_even_size_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        majority_filter(np.ones((3, 3), np.uint8), size=4)


# ------------------------------------------------------------------------------------------ mosaic

TILE = 300  # pixels per tile side: the 2 x 2 mosaic is 600 x 600 (larger than one 512 COG block -> overviews)
RES = 10.0


def project() -> ProjectGrid:
    return ProjectGrid("EPSG:32652", RES, (320000.0, 5330000.0, 320000.0 + 2 * TILE * RES, 5330000.0 + 2 * TILE * RES))


def tile_grids(grid: ProjectGrid) -> list[ProjectGrid]:
    left, bottom, _, _ = grid.bounds
    side = TILE * RES
    return [grid.subgrid((left + i * side, bottom + j * side, left + (i + 1) * side, bottom + (j + 1) * side))
            for j in range(2) for i in range(2)]


def blobby_classes(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A class map of 4x4-pixel blocks with salt-and-pepper noise and nodata holes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(1, 8, size=(shape[0] // 4 + 1, shape[1] // 4 + 1))
    a = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:shape[0], :shape[1]].astype(np.uint8)
    noise = rng.random(shape) < 0.15
    a[noise] = rng.integers(1, 8, size=int(noise.sum()))
    a[rng.random(shape) < 0.05] = 0
    return a


def write_tiles(full: np.ndarray, grid: ProjectGrid, folder: Path, kind: str) -> list[Path]:
    paths = []
    for k, sub in enumerate(tile_grids(grid)):
        w = grid.window_of(sub)
        path = folder / f"tile{k}_{kind}.tif"
        write_raster(path, full[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width], sub, nodata=0)
        paths.append(path)
    return paths


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_mosaic_of_tiles_equals_majority_filter_of_the_whole_map(tmp_path):
    grid = project()
    full = blobby_classes(grid.shape, seed=1)
    tiles = write_tiles(full, grid, tmp_path, "class")
    out = tmp_path / "mosaic.tif"
    mosaic(tiles, grid, out, LEGEND, majority=True, cropland_tiles=None, window_rows=37)
    expected = majority_filter(full)
    assert not np.array_equal(expected, full)  # the filter does change this map
    np.testing.assert_array_equal(read(out), expected)


def test_mosaic_is_a_valid_cog_with_colour_table_and_overviews(tmp_path):
    grid = project()
    full = blobby_classes(grid.shape, seed=2)
    out = tmp_path / "mosaic.tif"
    mosaic(write_tiles(full, grid, tmp_path, "class"), grid, out, str(LEGEND), majority=False, cropland_tiles=None)
    legend = Legend.load(str(LEGEND))
    with rasterio.open(out) as src:
        assert src.driver == "GTiff"
        assert src.profile["tiled"]
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1), "a 600 x 600 COG must have overviews"
        assert src.tags(ns="IMAGE_STRUCTURE")["OVERVIEW_RESAMPLING"] == "MODE"
        assert src.crs.to_epsg() == 32652 and src.transform == grid.transform
        cmap = src.colormap(1)
        assert cmap[1] == legend.colormap()[1] and cmap[7] == legend.colormap()[7]
        assert src.tags()["MAJORITY_FILTER"] == "none"
        np.testing.assert_array_equal(src.read(1), full)
    assert not list(tmp_path.glob(".mosaic.*"))  # no temporary left behind


def test_cropland_mask_sets_non_cropland_to_nodata_before_filtering(tmp_path):
    grid = project()
    full = blobby_classes(grid.shape, seed=5)
    rng = np.random.default_rng(6)
    crop = np.kron(rng.random((grid.height // 10, grid.width // 10)) < 0.6, np.ones((10, 10))).astype(np.uint8)
    tiles = write_tiles(full, grid, tmp_path, "class")
    masks = write_tiles(crop, grid, tmp_path, "cropland")
    out = tmp_path / "masked.tif"
    mosaic(tiles, grid, out, LEGEND, majority=True, cropland_tiles=masks, window_rows=64)
    got = read(out)
    assert (got[crop == 0] == 0).all()
    np.testing.assert_array_equal(got, majority_filter(np.where(crop == 1, full, 0)))


def test_pixels_without_a_tile_are_nodata(tmp_path):
    grid = project()
    full = blobby_classes(grid.shape, seed=7)
    tiles = write_tiles(full, grid, tmp_path, "class")
    out = tmp_path / "partial.tif"
    mosaic(tiles[:3], grid, out, LEGEND, majority=False, cropland_tiles=None)
    got = read(out)
    w = grid.window_of(tile_grids(grid)[3])
    assert (got[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] == 0).all()
    w0 = grid.window_of(tile_grids(grid)[0])
    np.testing.assert_array_equal(got[w0.row_off:w0.row_off + w0.height, w0.col_off:w0.col_off + w0.width],
                                  full[w0.row_off:w0.row_off + w0.height, w0.col_off:w0.col_off + w0.width])


def test_tile_off_the_lattice_is_rejected_with_its_name(tmp_path):
    grid = project()
    shifted = ProjectGrid(grid.crs, RES, (320005.0, 5330000.0, 320105.0, 5330100.0))
    path = tmp_path / "shifted_class.tif"
    write_raster(path, np.ones(shifted.shape, np.uint8), shifted, nodata=0)
    with pytest.raises(ValueError, match="shifted_class.tif.*lattice"):
        mosaic([path], grid, tmp_path / "m.tif", LEGEND, majority=False, cropland_tiles=None)
    assert not (tmp_path / "m.tif").exists()


def test_class_mosaic_carries_the_legend_as_class_names(tmp_path):
    grid = project()
    out = tmp_path / "mosaic.tif"
    mosaic(write_tiles(blobby_classes(grid.shape, seed=8), grid, tmp_path, "class"), grid, out, LEGEND,
           majority=True, cropland_tiles=None)
    legend = Legend.load(str(LEGEND))
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    assert read_categories(out) == {c.id: c.name for c in legend.classes}
    with rasterio.open(out) as src:
        assert src.descriptions == ("class",)
        assert src.tags(1)["CLASS_2"] == "soybean"


def write_class_tile_like_infer(path: Path, classes: np.ndarray, grid: ProjectGrid, legend: Legend) -> None:
    """A tile class map written the way inference writes it: cog_writer, window by window."""
    with cog_writer(path, grid, count=1, dtype="uint8", nodata=legend.nodata, tags={"TILE": "t"},
                    colormap=legend.colormap(), categories=legend.categories(), resampling="MODE") as w:
        for win in row_windows(grid, 128):
            w.write(classes[np.newaxis, win.row_off:win.row_off + win.height], win)


def test_tile_class_map_is_a_valid_cog_with_overviews_colours_and_class_names(tmp_path):
    grid = project()
    legend = Legend.load(str(LEGEND))
    out = tmp_path / "tile_class.tif"
    write_class_tile_like_infer(out, blobby_classes(grid.shape, seed=9), grid, legend)
    valid, errors, warnings = cog_validate(str(out), strict=True)
    assert valid, (errors, warnings)
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.overviews(1) and src.block_shapes[0] == (512, 512)
        assert src.colormap(1)[3] == legend.colormap()[3] and src.colormap(1)[0] == (0, 0, 0, 0)
    assert read_categories(out) == legend.categories()


def write_uncertainty_tiles(values: np.ndarray, classes: np.ndarray, grid: ProjectGrid, folder: Path) -> list[Path]:
    """Tile uncertainty layers of the issue-6 contract: 3 uint8 bands, round(254 x), 255 where the class is 0."""
    paths = []
    for k, sub in enumerate(tile_grids(grid)):
        w = grid.window_of(sub)
        rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        block = np.where(classes[rows, cols] == 0, 255, values[:, rows, cols]).astype(np.uint8)
        path = folder / f"tile{k}_uncertainty.tif"
        write_raster(path, block, sub, nodata=255, band_names=list(UNCERTAINTY_BANDS), cog=True)
        paths.append(path)
    return paths


def test_uncertainty_mosaic_is_masked_like_the_class_mosaic(tmp_path):
    grid = project()
    full = blobby_classes(grid.shape, seed=10)
    rng = np.random.default_rng(11)
    values = np.rint(254 * rng.random((3, *grid.shape))).astype(np.uint8)
    crop = np.kron(rng.random((grid.height // 10, grid.width // 10)) < 0.6, np.ones((10, 10))).astype(np.uint8)
    class_mosaic = tmp_path / "mosaic.tif"
    mosaic(write_tiles(full, grid, tmp_path, "class"), grid, class_mosaic, LEGEND, majority=True,
           cropland_tiles=write_tiles(crop, grid, tmp_path, "cropland"))
    tiles = write_uncertainty_tiles(values, full, grid, tmp_path)
    out = tmp_path / "mosaic_uncertainty.tif"
    mosaic_uncertainty(tiles[:3], class_mosaic, grid, out, window_rows=41)

    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    classes = read(class_mosaic)
    w3 = grid.window_of(tile_grids(grid)[3])
    no_tile = np.zeros(grid.shape, bool)
    no_tile[w3.row_off:w3.row_off + w3.height, w3.col_off:w3.col_off + w3.width] = True
    expected = np.where((classes == 0) | no_tile, 255, values)
    assert (classes == 0).any() and (classes != 0).any()
    with rasterio.open(out) as src:
        assert src.count == 3 and src.descriptions == UNCERTAINTY_BANDS
        assert src.dtypes == ("uint8",) * 3 and src.nodata == 255 and src.overviews(1)
        got = src.read()
    np.testing.assert_array_equal(got, expected)


def test_uncertainty_mosaic_names_a_tile_with_other_bands(tmp_path):
    grid = project()
    sub = tile_grids(grid)[0]
    path = tmp_path / "old_uncertainty.tif"
    write_raster(path, np.zeros((2, *sub.shape), np.uint8), sub, nodata=255, band_names=["a", "b"])
    class_mosaic = tmp_path / "mosaic.tif"
    mosaic(write_tiles(blobby_classes(grid.shape, 12), grid, tmp_path, "class"), grid, class_mosaic, LEGEND,
           majority=False, cropland_tiles=None)
    with pytest.raises(ValueError, match="old_uncertainty.tif.*confidence"):
        mosaic_uncertainty([path], class_mosaic, grid, tmp_path / "u.tif")
    assert not (tmp_path / "u.tif").exists()


def test_mosaic_uncertainty_command(tmp_path):
    import json

    from cropflow.cli import main

    grid = project()
    full = blobby_classes(grid.shape, seed=13)
    values = np.full((3, *grid.shape), 200, np.uint8)
    class_mosaic = tmp_path / "mosaic.tif"
    mosaic(write_tiles(full, grid, tmp_path, "class"), grid, class_mosaic, LEGEND, majority=False, cropland_tiles=None)
    (tmp_path / "grid.json").write_text(json.dumps(grid.to_dict()))
    out = tmp_path / "mosaic_uncertainty.tif"
    assert main(["mosaic-uncertainty", "--layers", *map(str, write_uncertainty_tiles(values, full, grid, tmp_path)),
                 "--class-mosaic", str(class_mosaic), "--grid", str(tmp_path / "grid.json"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(read(out), np.where(full == 0, 255, 200))
