"""Same-date layers: grouping products of one datatake, overlap rules, layer-level selection, sidecars."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely

from cropflow import layers
from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster

GRID = ProjectGrid("EPSG:32652", 10.0, (300000.0, 5340000.0, 300080.0, 5340040.0))  # 8 x 4 pixels
TILES = gpd.GeoDataFrame({"tile_id": ["E0300000N5340000", "E0300040N5340000"]},
                         geometry=[shapely.box(300000, 5340000, 300040, 5340040),
                                   shapely.box(300040, 5340000, 300080, 5340040)], crs="EPSG:32652")
BANDS = ["B04", "B8A"]
BOX = "POLYGON ((126 48, 127 48, 127 49, 126 49, 126 48))"


def s2_row(scene: str, tile: str = "52UCU", footprint: str = BOX) -> dict:
    platform, _, sensing, _, orbit = scene.split("_")[:5]
    return {"scene": scene, "platform": platform, "mgrs_tile": tile, "relative_orbit": int(orbit[1:]),
            "datetime": pd.Timestamp(sensing, tz="UTC").isoformat(), "footprint": footprint}


def s2_name(platform="S2A", sensing="20230512T023551", orbit="R089", tile="52UCU", baseline="N0509"):
    return f"{platform}_MSIL2A_{sensing}_{baseline}_{orbit}_T{tile}_20230512T060000"


def test_group_s2_layers_joins_adjacent_tiles_of_one_datatake_only():
    west = "POLYGON ((126 48, 126.5 48, 126.5 49, 126 49, 126 48))"
    east = "POLYGON ((126.4 48, 127 48, 127 49, 126.4 49, 126.4 48))"
    df = pd.DataFrame([
        s2_row(s2_name(tile="52UBU"), "52UBU", west), s2_row(s2_name(tile="52UCU"), "52UCU", east),
        s2_row(s2_name(orbit="R132", sensing="20230512T033551"), "52UCU"),         # other orbit
        s2_row(s2_name(sensing="20230522T023551"), "52UCU"),                     # other date
        s2_row(s2_name(platform="S2B", sensing="20230517T023551"), "52UCU"),     # other platform
    ])
    out = layers.group_s2_layers(df)
    assert list(out["layer"]) == ["S2A_20230512_R089", "S2A_20230512_R132", "S2B_20230517_R089", "S2A_20230522_R089"]
    first = out.iloc[0]
    assert json.loads(first["products"]) == [s2_name(tile="52UBU"), s2_name(tile="52UCU")]
    assert json.loads(first["mgrs_tiles"]) == ["52UBU", "52UCU"]
    assert shapely.from_wkt(first["footprint"]).bounds == (126.0, 48.0, 127.0, 49.0)
    assert all(len(json.loads(p)) == 1 for p in out["products"].iloc[1:])


def slc(start: str, stop: str, datatake: str = "05D2C4", orbit: int = 32, slice_number: int | None = None,
        footprint: str = BOX) -> dict:
    return {"scene": f"S1A_IW_SLC__1SDV_{start}_{stop}_048330_{datatake}_ABCD", "platform": "S1A",
            "relative_orbit": orbit, "pass": "DESCENDING", "start": pd.Timestamp(start, tz="UTC").isoformat(),
            "footprint": footprint, "slice_number": slice_number, "total_slices": 12}


def test_group_s1_acquisitions_joins_consecutive_slices_and_logs_a_missing_slice(caplog):
    df = pd.DataFrame([
        slc("20230512T093010", "20230512T093037", slice_number=7),
        slc("20230512T093035", "20230512T093102", slice_number=8),
        slc("20230524T093010", "20230524T093037", datatake="05D9F1", slice_number=7),
        slc("20230524T093100", "20230524T093127", datatake="05D9F1", slice_number=9),
    ])
    with caplog.at_level(logging.WARNING, logger="cropflow.layers"):
        out = layers.group_s1_acquisitions(df)
    assert list(out["acq"]) == ["S1A_20230512_R032_05D2C4", "S1A_20230524_R032_05D9F1"]
    assert json.loads(out["slices"].iloc[0]) == list(df["scene"].iloc[:2])
    assert json.loads(out["slices"].iloc[1]) == list(df["scene"].iloc[2:])
    warned = [r.getMessage() for r in caplog.records]
    assert any("S1A_20230524_R032_05D9F1" in m and "[8] missing" in m for m in warned), warned
    assert not any("05D2C4" in m for m in warned)


def test_valid_pixel_wins():
    values = np.array([[[[1.0, np.nan, 5.0]]], [[[2.0, 3.0, np.nan]]]], np.float32)  # (2, 1, 1, 3)
    valid = np.isfinite(values[:, 0])
    for rule in ("first", "mean"):
        out, source = layers.merge_valid(values, valid, [1, 0], rule)
        assert out[0, 0, 1] == 3.0 and out[0, 0, 2] == 5.0
        assert source[0, 1] == 1 and source[0, 2] == 0
    out, source = layers.merge_valid(values, np.zeros_like(valid), [0, 1], "first")
    assert np.isnan(out).all() and (source == layers.NO_SOURCE).all()


def test_overlap_least_cloudy_and_mean():
    values = np.array([[[[1.0]]], [[[3.0]]]], np.float32)
    valid = np.ones((2, 1, 1), bool)
    metas = [{"cloud_fraction": 0.2}, {"cloud_fraction": 0.05}]
    priority = layers.s2_priority(metas, ["a", "b"])
    assert priority == [1, 0]
    out, source = layers.merge_valid(values, valid, priority, "least_cloudy")
    assert out[0, 0, 0] == 3.0 and source[0, 0] == 1
    out, source = layers.merge_valid(values, valid, priority, "mean")
    assert out[0, 0, 0] == 2.0 and source[0, 0] == layers.SEVERAL


def test_tie_break_is_deterministic():
    names = [s2_name(tile="52UCU", baseline="N0400"), s2_name(tile="52UCU", baseline="N0509"),
             s2_name(tile="52UBU", baseline="N0509")]
    metas = [{"cloud_fraction": 0.1}] * 3
    # equal clouds: newest baseline first, then the name; unknown clouds last
    assert layers.s2_priority(metas, names) == [2, 1, 0]
    assert layers.s2_priority([{"cloud_fraction": None}, *metas[1:]], names) == [2, 1, 0]
    assert layers.s2_priority([{"cloud_fraction": 0.0}, *metas[1:]], names) == [0, 2, 1]


def write_product(folder, scene: str, values: np.ndarray, qa: np.ndarray, cloud: float | None) -> str:
    """An ingested S2 product (bands + QA) and its sidecar on GRID."""
    path = folder / f"{scene}.tif"
    write_raster(path, np.concatenate([values, qa[None]]).astype(np.float32), GRID, nodata=float("nan"),
                 band_names=[*BANDS, "QA"])
    (folder / f"{scene}.json").write_text(json.dumps({"scene": scene, "datetime": "2023-05-12T02:35:51+00:00",
                                                      "tile": scene.split("_")[5][1:], "cloud_fraction": cloud,
                                                      "coverage": 1.0}))
    return str(path)


@pytest.fixture
def two_tiles(tmp_path):
    """West product covers columns 0-5, east product columns 2-7; overlap columns 2-5."""
    h, w = GRID.shape
    west_qa, east_qa = np.zeros((h, w)), np.zeros((h, w))
    west_qa[:, :6], east_qa[:, 2:] = 1, 1
    west_qa[0, 0] = 2          # a cloud only the west product sees
    east_qa[:, 7] = 2          # cloud in the east-only column
    west_qa[1, 3] = 2          # cloudy in west, clear in east: the clear one wins
    west = np.where(west_qa > 0, 0.1, np.nan) * np.ones((2, 1, 1))
    east = np.where(east_qa > 0, 0.3, np.nan) * np.ones((2, 1, 1))
    paths = [write_product(tmp_path, s2_name(tile="52UBU"), west, west_qa, 0.3),
             write_product(tmp_path, s2_name(tile="52UCU"), east, east_qa, 0.01)]
    return tmp_path, paths


def merge(folder, paths, overlap="least_cloudy", max_cloud=0.5, min_valid=0.0, aoi=None, **kw):
    aoi = np.ones(GRID.shape, bool) if aoi is None else aoi
    out_tif, out_json = folder / "layer.tif", folder / "layer.json"
    meta = layers.merge_s2_layer(paths, GRID, aoi, TILES, BANDS, overlap, max_cloud, min_valid, out_tif, out_json,
                                 layer="S2A_20230512_R089", **kw)
    assert json.loads(out_json.read_text()) == meta
    with rasterio.open(out_tif) as src:
        assert src.descriptions == (*BANDS, "QA")
        assert src.tags()["LAYER"] == "S2A_20230512_R089"
        data = src.read()
    return meta, data


def test_layer_cloud_fraction_counts_each_aoi_pixel_once(two_tiles):
    folder, paths = two_tiles
    meta, data = merge(folder, paths)
    qa = data[-1]
    # layer cloud: (0, 0) seen only by the west product + the east-only cloudy column 7 (4 pixels)
    assert (qa == 2).sum() == 5 and meta["cloud_fraction"] == pytest.approx(5 / 32)
    assert meta["coverage"] == 1.0 and meta["valid_fraction"] == pytest.approx(27 / 32)
    assert meta["used"] is True and meta["reason"] is None
    # least cloudy: the east product (0.01) wins the overlap; the clear east pixel beats the cloudy west one
    assert np.all(data[0][:, 2:6][qa[:, 2:6] == 1] == np.float32(0.3))
    assert data[0][1, 3] == np.float32(0.3)
    assert np.all(data[0][1:, :2] == np.float32(0.1))
    meta, _ = merge(folder, paths, max_cloud=0.1)
    assert meta["used"] is False and meta["reason"].startswith("cloud fraction 0.16 > 0.1")


def test_mean_overlap_averages_the_valid_products(two_tiles):
    folder, paths = two_tiles
    meta, data = merge(folder, paths, overlap="mean")
    assert data[0][2, 4] == pytest.approx(0.2)
    assert data[0][1, 3] == pytest.approx(0.3)        # cloudy in the west: only the east value


def test_sidecar_lists_products_and_their_pixels(two_tiles):
    folder, paths = two_tiles
    meta, _ = merge(folder, paths)
    west, east = meta["products"]
    assert (west["mgrs_tile"], east["mgrs_tile"]) == ("52UBU", "52UCU")
    assert west["cloud_fraction"] == 0.3 and east["cloud_fraction"] == 0.01
    # west: columns 0-1 clear except (0, 0); east: columns 2-6 (column 7 is cloud)
    assert west["pixels"] == 7 and east["pixels"] == 20
    assert west["pixels_in_overlap"] == 15 and east["pixels_in_overlap"] == 15


def test_min_valid_fraction_per_tile_marks_only_that_tile(two_tiles):
    folder, paths = two_tiles
    meta, _ = merge(folder, paths, min_valid=0.85)
    west, east = meta["tiles"]["E0300000N5340000"], meta["tiles"]["E0300040N5340000"]
    assert west["valid_fraction"] == pytest.approx(15 / 16) and west["used"] is True
    assert east["valid_fraction"] == pytest.approx(12 / 16) and east["used"] is False
    assert "s2.min_valid_fraction 0.85" in east["reason"]
    assert meta["used"] is True


def test_windowed_merge_equals_whole(two_tiles):
    folder, paths = two_tiles
    meta_whole, whole = merge(folder, paths)
    meta_rows, rows = merge(folder, paths, window_rows=1)
    np.testing.assert_array_equal(whole, rows)
    assert meta_whole == meta_rows


def test_a_product_without_qa_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / f"{s2_name()}.tif"
    write_raster(path, np.ones((2, *GRID.shape), np.float32), GRID, band_names=BANDS)
    (tmp_path / f"{s2_name()}.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks band.*QA.*rerun its s2_ingest"):
        merge(tmp_path, [str(path)])


def test_s1_slices_merge_mean_and_first(tmp_path):
    h, w = GRID.shape
    a, b = np.full((2, h, w), np.nan, np.float32), np.full((2, h, w), np.nan, np.float32)
    a[:, :, :3], b[:, :, 2:] = 1.0, 3.0
    pa, pb = tmp_path / "a.tif", tmp_path / "b.tif"
    write_raster(pa, a, GRID, nodata=float("nan"), band_names=["C11", "C22"],
                 tags={"START_TIME": "2023-05-12T09:30:35", "SCENE": "a"})
    write_raster(pb, b, GRID, nodata=float("nan"), band_names=["C11", "C22"],
                 tags={"START_TIME": "2023-05-12T09:30:10", "SCENE": "b"})
    for rule, seam in (("mean", 2.0), ("first", 1.0)):
        out = tmp_path / f"{rule}.tif"
        tags = layers.merge_s1_rasters([str(pa), str(pb)], GRID, rule, out, tags={"ACQ": "x"})
        with rasterio.open(out) as src:
            data = src.read()
            assert src.descriptions == ("C11", "C22")
        assert np.all(data[:, :, :2] == 1.0) and np.all(data[:, :, 3:] == 3.0) and np.all(data[:, :, 2] == seam)
        assert tags["START_TIME"] == "2023-05-12T09:30:10" and tags["ACQ"] == "x"
        assert json.loads(tags["SLICES"]) == ["a.tif", "b.tif"]
    with pytest.raises(ValueError, match="s1.mosaic.overlap"):
        layers.merge_s1_rasters([str(pa)], GRID, "median", tmp_path / "x.tif")


def test_one_datatake_id_on_two_dates_is_two_acquisitions():
    """A copied product keeps its datatake id 12 days later: the passes must not be merged."""
    df = pd.DataFrame([slc("20210401T052622", "20210401T052650"), slc("20210413T052622", "20210413T052650")])
    out = layers.group_s1_acquisitions(df)
    assert list(out["acq"]) == ["S1A_20210401_R032_05D2C4", "S1A_20210413_R032_05D2C4"]
    assert [len(json.loads(s)) for s in out["slices"]] == [1, 1]
