"""Raster I/O: atomic GeoTIFF/COG writing, the windowed writer, reads resampled onto the project grid."""

import numpy as np
import pytest
import rasterio
import rasterio.enums
import rasterio.vrt

from cropflow.grid import ProjectGrid
from cropflow.raster import RasterWriter, band_names, cog_writer, raster_tags, read_on_grid, row_windows, write_raster

UTM52 = "EPSG:32652"
GRID = ProjectGrid(UTM52, 10.0, (320000.0, 5349800.0, 320300.0, 5350000.0))  # 20 rows x 30 cols
NAN = float("nan")


def ramp(shape, bands=1) -> np.ndarray:
    return np.stack([np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1000 * b for b in range(bands)])


def test_write_raster_geotiff(tmp_path):
    data = ramp(GRID.shape, 2)
    data[1, 3, 4] = np.nan
    path = tmp_path / "out" / "feat.tif"
    write_raster(path, data, GRID, nodata=NAN, band_names=["vv_db", "vh_db"], tags={"SCENE": "S1A_x", "N": 3})
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.count == 2 and src.dtypes == ("float32", "float32")
        assert src.crs.to_string() == UTM52
        assert src.transform == GRID.transform and (src.height, src.width) == GRID.shape
        assert np.isnan(src.nodata)
        assert src.profile["tiled"] and src.compression.value == "DEFLATE"
        np.testing.assert_array_equal(src.read(), data)
    assert band_names(path) == ["vv_db", "vh_db"]
    assert raster_tags(path)["SCENE"] == "S1A_x" and raster_tags(path)["N"] == "3"
    # a 2-D array is a single band
    write_raster(tmp_path / "one.tif", data[0], GRID)
    with rasterio.open(tmp_path / "one.tif") as src:
        assert src.count == 1 and src.nodata is None
        np.testing.assert_array_equal(src.read(1), data[0])
    assert band_names(tmp_path / "one.tif") == ["band1"]


def test_write_raster_cog_layout_overviews_colours_and_metadata(tmp_path, capfd):
    grid = ProjectGrid(UTM52, 10.0, (320000.0, 5339760.0, 330240.0, 5350000.0))  # 1024 x 1024: one overview
    classes = np.ones(grid.shape, np.uint8)
    classes[::2, ::2] = 7  # every 2 x 2 block: three 1s and one 7 (mean 2.5, mode 1)
    classes[:4, :4] = 0
    cmap = {0: (0, 0, 0, 0), 1: (244, 194, 13, 255), 7: (140, 140, 140, 255)}
    path = tmp_path / "map.tif"
    write_raster(path, classes, grid, nodata=0, band_names=["class"], tags={"MODEL": "rf"}, colormap=cmap, cog=True)
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE")["OVERVIEW_RESAMPLING"] == "MODE"
        assert src.block_shapes == [(512, 512)]
        assert src.overviews(1) == [2]
        assert src.nodata == 0
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
        assert all(src.colormap(1)[k] == v for k, v in cmap.items())
        assert src.descriptions == ("class",)
        assert src.tags()["MODEL"] == "rf"
        np.testing.assert_array_equal(src.read(1), classes)
    with rasterio.open(path, overview_level=0) as ovr:
        half = ovr.read(1)
    assert half.shape == (512, 512)
    assert set(np.unique(half[2:, 2:])) == {1}  # the majority class, never an average of class ids
    assert "ERROR" not in capfd.readouterr().err  # the colour table is set without a GDAL error


def test_write_raster_cog_float_overviews_average(tmp_path):
    grid = ProjectGrid(UTM52, 10.0, (320000.0, 5339760.0, 330240.0, 5350000.0))
    data = np.zeros(grid.shape, np.float32)
    data[::2, ::2] = 4.0
    write_raster(tmp_path / "f.tif", data, grid, nodata=NAN, cog=True)
    with rasterio.open(tmp_path / "f.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["OVERVIEW_RESAMPLING"] == "AVERAGE"
    with rasterio.open(tmp_path / "f.tif", overview_level=0) as ovr:
        np.testing.assert_allclose(ovr.read(1), 1.0)


def test_shape_mismatch_names_the_path(tmp_path):
    path = tmp_path / "bad.tif"
    with pytest.raises(ValueError, match=r"\(19, 30\).*\(20, 30\).*bad\.tif"):
        write_raster(path, np.zeros((19, 30), np.float32), GRID)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_raster_writer_windowed_equals_one_shot(tmp_path):
    data = ramp(GRID.shape, 3)
    write_raster(tmp_path / "once.tif", data, GRID, nodata=NAN, band_names=["a", "b", "c"], tags={"K": "v"})
    windows = row_windows(GRID, 7)
    assert [(w.row_off, w.height) for w in windows] == [(0, 7), (7, 7), (14, 6)]
    with RasterWriter(tmp_path / "windows.tif", GRID, count=3, dtype="float32", nodata=NAN,
                      band_names=["a", "b", "c"], tags={"K": "v"}) as w:
        for win in reversed(windows):  # any order
            w.write(data[:, win.row_off:win.row_off + win.height], win)
    with rasterio.open(tmp_path / "once.tif") as a, rasterio.open(tmp_path / "windows.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        pa, pb = dict(a.profile), dict(b.profile)
        assert np.isnan(pa.pop("nodata")) and np.isnan(pb.pop("nodata")) and pa == pb
        assert a.descriptions == b.descriptions and a.tags() == b.tags()


def test_raster_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "part.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with RasterWriter(path, GRID, count=1, dtype="float32", nodata=NAN) as w:
            w.write(np.zeros((1, 5, 30), np.float32), row_windows(GRID, 5)[0])
            assert not path.exists()  # nothing at the final path while writing
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_raster(tmp_path):
    path = tmp_path / "map.tif"
    write_raster(path, np.full(GRID.shape, 5, np.uint8), GRID, nodata=0)
    with pytest.raises(RuntimeError):
        with cog_writer(path, GRID, count=1, dtype="uint8", nodata=0) as w:
            w.write(np.full((1, *GRID.shape), 9, np.uint8), row_windows(GRID, 100)[0])
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with RasterWriter(path, GRID, count=1, dtype="uint8", nodata=0) as w:
            w.write(np.full((1, *GRID.shape), 9, np.uint8), row_windows(GRID, 100)[0])
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]
    with rasterio.open(path) as src:
        assert (src.read(1) == 5).all()


def test_read_on_grid_sub_grid(tmp_path):
    data = ramp(GRID.shape, 2)
    write_raster(tmp_path / "src.tif", data, GRID, nodata=NAN)
    sub = GRID.subgrid((320050.0, 5349850.0, 320120.0, 5349930.0))
    win = GRID.window_of(sub)
    out = read_on_grid(tmp_path / "src.tif", sub)
    assert out.dtype == np.float32 and out.shape == (2, 8, 7)
    np.testing.assert_array_equal(out, data[:, win.row_off:win.row_off + 8, win.col_off:win.col_off + 7])
    second = read_on_grid(tmp_path / "src.tif", sub, bands=[2])
    np.testing.assert_array_equal(second[0], out[1])


def test_read_on_grid_20m_bilinear_onto_10m(tmp_path):
    grid20 = ProjectGrid(UTM52, 20.0, (320000.0, 5349800.0, 320400.0, 5350000.0))  # 10 x 20
    rows, cols = np.mgrid[0:10, 0:20].astype(np.float32)
    plane = 3.0 * cols + 50.0 * rows  # a plane: bilinear interpolation reproduces it exactly
    write_raster(tmp_path / "b11.tif", plane, grid20, nodata=NAN)
    grid10 = ProjectGrid(UTM52, 10.0, grid20.bounds)
    out = read_on_grid(tmp_path / "b11.tif", grid10, resampling="bilinear")[0]
    assert out.shape == (20, 40)
    # 10 m pixel (i, j) has its centre at 20 m pixel coordinates ((i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5)
    r10, c10 = np.mgrid[0:20, 0:40]
    expected = 3.0 * ((c10 + 0.5) / 2 - 0.5) + 50.0 * ((r10 + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(out[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-3)
    nearest = read_on_grid(tmp_path / "b11.tif", grid10, resampling="nearest")[0]
    np.testing.assert_array_equal(nearest, np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1))


@pytest.mark.parametrize("nodata", [NAN, None])
def test_read_on_grid_outside_the_source_is_nan(tmp_path, nodata):
    small = ProjectGrid(UTM52, 10.0, (320100.0, 5349900.0, 320200.0, 5349950.0))  # 5 x 10
    data = ramp(small.shape)[0] + 1.0
    write_raster(tmp_path / "small.tif", data, small, nodata=nodata)
    out = read_on_grid(tmp_path / "small.tif", GRID)[0]
    win = GRID.window_of(small)
    inside = np.zeros(GRID.shape, bool)
    inside[win.row_off:win.row_off + 5, win.col_off:win.col_off + 10] = True
    np.testing.assert_array_equal(out[inside].reshape(5, 10), data)
    assert np.isnan(out[~inside]).all()


@pytest.mark.parametrize("nodata", [0, None])
def test_read_on_grid_integer_read_fills_outside_with_nodata(tmp_path, nodata):
    small = ProjectGrid(UTM52, 10.0, (320100.0, 5349900.0, 320200.0, 5349950.0))
    scl = np.full(small.shape, 4, np.uint8)
    scl[0, 0] = 9
    write_raster(tmp_path / "scl.tif", scl, small, nodata=nodata)
    out = read_on_grid(tmp_path / "scl.tif", GRID, dtype="uint8", nodata=0)[0]
    win = GRID.window_of(small)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[win.row_off:win.row_off + 5, win.col_off:win.col_off + 10], scl)
    assert out.sum() == scl.sum()  # zero outside


def test_read_on_grid_keeps_source_nodata_as_nan(tmp_path):
    data = ramp(GRID.shape)[0]
    data[2:4, 5:9] = np.nan
    write_raster(tmp_path / "holes.tif", data, GRID, nodata=NAN)
    out = read_on_grid(tmp_path / "holes.tif", GRID)[0]
    np.testing.assert_array_equal(out, data)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_read_on_grid_without_crs_raises_naming_the_file(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32") as dst:
        dst.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="nocrs.tif has no CRS"):
        read_on_grid(path, GRID)


@pytest.mark.parametrize("bounds", [(100.0, 50.0, 300.0, 150.0), (-50.0, -30.0, 120.0, 90.0), (500.0, 0.0, 600.0, 100.0)])
def test_read_on_grid_lattice_window_equals_the_nearest_warp(tmp_path, bounds):
    """On-lattice sources take a direct window read: it must give exactly the nearest-neighbour warp's pixels."""
    src_grid = ProjectGrid("EPSG:32652", 10.0, (0.0, 0.0, 400.0, 200.0))
    data = np.random.default_rng(3).normal(size=(2, *src_grid.shape)).astype(np.float32)
    data[:, :3, :4] = np.nan
    path = tmp_path / "src.tif"
    write_raster(path, data, src_grid, nodata=float("nan"))
    target = ProjectGrid("EPSG:32652", 10.0, bounds)
    got = read_on_grid(path, target)
    with rasterio.open(path) as src, rasterio.vrt.WarpedVRT(
            src, crs=target.crs, transform=target.transform, width=target.width, height=target.height,
            resampling=rasterio.enums.Resampling.nearest, nodata=float("nan")) as vrt:
        expected = vrt.read(out_dtype="float32")
    np.testing.assert_array_equal(got, expected)
