"""Cloud masks: s2cloudless on simulated Level-1C products, its input stack, and the combination with SCL."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from cropflow import clouds
from cropflow.clouds import (S2CLOUDLESS_BANDS, combine_masks, detector_grid, disk_radius_px, s2cloudless_input,
                             s2cloudless_mask)
from cropflow.grid import ProjectGrid
from cropflow.raster import read_on_grid
from cropflow.s2 import open_l1c
from s2_products import GRID60, L1C_NAME, make_l1c, toa

LEGEND = str(Path(__file__).parents[1] / "resources" / "legend.yaml")
SMALL = (330000.0, 5340000.0, 333000.0, 5342000.0)
INVALID, CLOUD, KEEP = [0, 1, 3, 8, 9, 10, 11], [3, 8, 9, 10], [0, 1, 3, 11]


def test_input_stack_is_in_model_band_order_and_scaled(tmp_path):
    bands = toa()
    bands["B10"][0, 0] = np.nan                                   # DN 0 in one band: no data in the stack
    l1c = open_l1c(make_l1c(tmp_path, bands=bands))
    grid = ProjectGrid(GRID60.crs, 60.0, GRID60.bounds)
    stack = s2cloudless_input(l1c, grid)
    assert stack.shape == (6, 6, 10) and stack.dtype == np.float32
    for i, band in enumerate(S2CLOUDLESS_BANDS):
        factor = 60 // {"B01": 60, "B09": 60, "B10": 60, "B02": 10, "B04": 10, "B08": 10}.get(band, 20)
        h, w = bands[band].shape
        expected = np.mean(bands[band].reshape(h // factor, factor, w // factor, factor), axis=(1, 3))
        good = np.isfinite(stack[..., i])
        np.testing.assert_allclose(stack[..., i][good], expected[good], atol=1e-4)  # average onto 60 m, TOA
    assert np.isnan(stack[0, 0]).all() and np.isfinite(stack[1:, 1:]).all()


def test_radius_from_metres_and_the_detector_grid():
    assert (disk_radius_px(240, 60), disk_radius_px(120, 60), disk_radius_px(0, 60), disk_radius_px(30, 10)) == \
        (4, 2, 0, 3)
    with pytest.raises(ValueError, match="radius -1"):
        disk_radius_px(-1, 60)
    det = detector_grid(ProjectGrid("EPSG:32652", 10.0, (330010.0, 5340000.0, 333000.0, 5342030.0)), 60)
    assert det.bounds == (330000.0, 5340000.0, 333000.0, 5342040.0) and det.resolution == 60.0


def test_combine_masks_truth_table():
    scl = np.array([0, 1, 3, 4, 5, 8, 9, 10, 11, 4, 9], np.uint8)
    c = np.array([0, 0, 0, 0, 1, 0, 1, 0, 0, 255, 255], np.uint8)
    inv, cld = combine_masks(scl, None, "scl", INVALID, CLOUD, KEEP)
    assert inv.tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1] and cld.tolist() == [0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1]
    inv, cld = combine_masks(scl, c, "s2cloudless", INVALID, CLOUD, KEEP)
    # SCL clouds that s2cloudless calls clear become valid; its clouds become invalid; shadow and snow stay
    # invalid; where s2cloudless has no data (255) the SCL rule applies
    assert inv.tolist() == [1, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert cld.tolist() == [0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    inv, cld = combine_masks(scl, c, "both", INVALID, CLOUD, KEEP)
    assert inv.tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1] and cld.tolist() == [0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="s2.clouds.method 'fog'"):
        combine_masks(scl, c, "fog", INVALID, CLOUD, KEEP)
    with pytest.raises(ValueError, match="mask is missing"):
        combine_masks(scl, None, "both", INVALID, CLOUD, KEEP)


def test_missing_b10_is_named(tmp_path):
    l1c = make_l1c(tmp_path, omit_bands=("B10",))
    with pytest.raises(FileNotFoundError, match=f"{L1C_NAME}: band B10 .* is missing: re-download"):
        s2cloudless_mask(l1c, GRID60, None, {"resolution": 60}, tmp_path / "m.tif", tmp_path / "m.json")
    assert not (tmp_path / "m.tif").exists()


def test_missing_package_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_s2cloudless(name, *args, **kw):
        if name == "s2cloudless":
            raise ImportError("No module named 's2cloudless'")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_s2cloudless)
    with pytest.raises(RuntimeError, match="s2cloudless==1.7.3.*s2.clouds.method: scl"):
        clouds.cloud_probability(np.zeros((2, 2, 10), np.float32))


@pytest.fixture(scope="module")
def cloudy_acquisition(tmp_path_factory):
    """One simulated date, 30 % cloud over the AOI, written as L1C and L2A (the L2A's SCL is the truth)."""
    from cropflow.simulate import simulate

    out = tmp_path_factory.mktemp("clouds")
    gpd.GeoDataFrame(geometry=[shapely.box(*SMALL)], crs="EPSG:32652").to_file(out / "aoi.geojson")
    summary = simulate(str(out / "aoi.geojson"), out / "data", legend_path=LEGEND, s2_margin=300.0,
                       s1_format="seam", s1_orbits=(32,), s2_dates=1, season=("05-06", "06-10"), cloudy=[0.3],
                       s2_level="both")
    l2a, l1c = (out / "data" / "s2" / n for n in summary["s2_products"][0]["products"])
    return out, l2a, l1c


def test_detects_simulated_clouds(cloudy_acquisition):
    pytest.importorskip("s2cloudless")
    out, l2a, l1c = cloudy_acquisition
    grid = ProjectGrid("EPSG:32652", 10.0, SMALL)
    meta = s2cloudless_mask(l1c, grid, SMALL, {"threshold": 0.4, "average_over_m": 80, "dilation_m": 0,
                                               "resolution": 20}, out / "m.tif", out / "m.json")
    g20 = ProjectGrid(grid.crs, 20.0, SMALL)
    scl = read_on_grid(next(l2a.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")), g20, dtype="uint8", nodata=0)[0]
    mask = read_on_grid(out / "m.tif", g20, bands=[2], dtype="uint8", nodata=255)[0]
    truth, clear = np.isin(scl, (8, 9, 10)), np.isin(scl, (4, 5, 6))
    assert 0.15 < truth.mean() < 0.35
    iou = np.count_nonzero(truth & (mask == 1)) / np.count_nonzero(truth | (mask == 1))
    assert iou >= 0.7, iou
    assert (mask[clear] == 1).mean() < 0.08                      # few false alarms on clear land
    assert meta["cloud_fraction"] == pytest.approx((mask == 1).mean(), abs=1e-6)
    assert meta["average_px"] == 4 and meta["dilation_px"] == 0 and meta["s2cloudless_version"]
    with rasterio.open(out / "m.tif") as src:
        assert src.descriptions == ("probability", "cloud") and src.res == (20.0, 20.0)


def test_ingest_with_an_s2cloudless_mask_masks_and_counts_it(cloudy_acquisition, tmp_path):
    """method s2cloudless: the mask decides clouds (SCL shadow stays invalid); method both: the union."""
    pytest.importorskip("s2cloudless")
    from cropflow.s2 import ingest_l2a

    out, l2a, l1c = cloudy_acquisition
    grid = ProjectGrid("EPSG:32652", 10.0, SMALL)
    s2cloudless_mask(l1c, grid, SMALL, {"threshold": 0.4, "average_over_m": 120, "dilation_m": 60,
                                        "resolution": 60}, tmp_path / "m.tif", tmp_path / "m.json")
    results = {}
    for method in ("scl", "s2cloudless", "both"):
        meta = ingest_l2a(l2a, grid, None, ["B04"], INVALID, CLOUD, 0.08, tmp_path / f"{method}.tif",
                          tmp_path / f"{method}.json", cloud_mask=None if method == "scl" else tmp_path / "m.tif",
                          cloud_method=method, keep_scl=KEEP)
        with rasterio.open(tmp_path / f"{method}.tif") as src:
            results[method] = (np.isnan(src.read(1)), meta)
    mask = read_on_grid(tmp_path / "m.tif", grid, bands=[2], dtype="uint8", nodata=255)[0]
    scl = read_on_grid(next(l2a.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")), grid, dtype="uint8", nodata=0)[0]
    nan_s2c, meta_s2c = results["s2cloudless"]
    np.testing.assert_array_equal(nan_s2c, (mask == 1) | np.isin(scl, KEEP))
    nan_both, meta_both = results["both"]
    np.testing.assert_array_equal(nan_both, results["scl"][0] | (mask == 1))
    assert meta_both["cloud_fraction"] >= max(results["scl"][1]["cloud_fraction"], meta_s2c["cloud_fraction"])
    assert meta_s2c["cloud_method"] == "s2cloudless" and meta_s2c["level_in"] == "L2A"
    with pytest.raises(ValueError, match="s2.clouds.method both: give the s2cloudless mask"):
        ingest_l2a(l2a, grid, None, ["B04"], INVALID, CLOUD, 0.08, tmp_path / "x.tif", tmp_path / "x.json",
                   cloud_method="both")


def test_mask_in_row_bands_equals_the_mask_in_one_piece(cloudy_acquisition, tmp_path):
    """At 10 m with averaging and dilation, a mask computed in many small row bands (each with its halo) is the
    mask computed in one piece, pixel for pixel."""
    pytest.importorskip("s2cloudless")
    out, _, l1c = cloudy_acquisition
    grid = ProjectGrid("EPSG:32652", 10.0, SMALL)
    settings = {"threshold": 0.4, "average_over_m": 40, "dilation_m": 30, "resolution": 10}
    whole = s2cloudless_mask(l1c, grid, SMALL, settings, tmp_path / "whole.tif", tmp_path / "whole.json")
    banded = s2cloudless_mask(l1c, grid, SMALL, settings, tmp_path / "bands.tif", tmp_path / "bands.json",
                              window_px=grid.width * 23)
    assert whole["windows"] == 1 and banded["windows"] == -(-grid.height // 23)
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "bands.tif") as b:
        one, many = a.read(), b.read()
    assert 0.1 < (one[1] == 1).mean() < 0.5
    np.testing.assert_array_equal(many, one)
    assert banded["cloud_fraction"] == whole["cloud_fraction"]
