"""Sentinel-2 L1C and L2A: the SAFE writers, the readers, TOA/BOA reflectance, SCL masks, cloud fraction and
ingestion."""

import json
import logging
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from cropflow.grid import ProjectGrid
from cropflow.s2 import (BAND_IDS, L2A_NAMESPACE, boa_reflectance, cloud_fraction, ingest_l2a, l1c_toa_reflectance,
                         local_name, open_l1c, open_l2a, parse_product_name, qa_codes, scl_valid_mask, validate_l1c)
from cropflow.simulate.sentinel2 import l1c_name, l2a_name, write_l2a
from s2_products import GRID60, L1C_NAME, SENSING as SENSING60, make_l1c, toa

GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5349600.0, 320400.0, 5350000.0))  # 40 x 40 px
SENSING = datetime(2023, 5, 12, 2, 35, 51, tzinfo=timezone.utc)
INVALID = [0, 1, 3, 8, 9, 10, 11]
CLOUD = [3, 8, 9, 10]


def reflectance(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {b: rng.uniform(0.01, 0.6, GRID.shape) for b in ("B02", "B03", "B04", "B08")}
    out.update({b: rng.uniform(0.01, 0.6, (20, 20)) for b in ("B05", "B06", "B07", "B8A", "B11", "B12")})
    return out


def make(folder: Path, refl=None, scl=None, **kw) -> Path:
    args = dict(platform="S2A", sensing_time=SENSING, mgrs_tile="52UCU", relative_orbit=89, baseline="05.09",
                grid10=GRID, reflectance=refl if refl is not None else reflectance(),
                scl=scl if scl is not None else np.full((20, 20), 4, np.uint8))
    args.update(kw)
    return write_l2a(folder, **args)


def ingest(tmp_path: Path, product: Path, aoi=None, grid=GRID, bands=("B04", "B8A", "B11"), **kw):
    out_tif, out_json = tmp_path / "out" / "scene.tif", tmp_path / "out" / "scene.json"
    meta = ingest_l2a(product, grid, aoi, list(bands), INVALID, CLOUD, 0.08, out_tif, out_json, **kw)
    with rasterio.open(out_tif) as src:
        assert src.descriptions[-1] == "QA"
        data = src.read()[:-1]
    assert json.loads(out_json.read_text()) == meta
    return data, meta, out_tif


def test_writer_round_trips_dn_georeferencing_and_metadata(tmp_path):
    refl = reflectance()
    refl["B04"][0, 0] = np.nan
    scl = np.full((20, 20), 4, np.uint8)
    scl[:5] = 9  # a quarter cloudy
    path = make(tmp_path, refl, scl)
    name = l2a_name("S2A", SENSING, "05.09", 89, "52UCU", datetime(2023, 5, 12, 5, 35, 51))
    assert path == tmp_path / f"{name}.SAFE"
    assert name == "S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T053551"

    p = open_l2a(path)
    assert (p.name, p.platform, p.mgrs_tile, p.relative_orbit, p.baseline) == (name, "S2A", "52UCU", 89, "05.09")
    assert p.datetime == SENSING
    assert p.quantification == 10000 and set(p.offsets.values()) == {-1000.0} and len(p.offsets) == 13
    assert p.cloud_cover == pytest.approx(25.0)
    assert p.band_paths["B04"].endswith("IMG_DATA/R10m/T52UCU_20230512T023551_B04_10m.jp2")
    assert p.band_paths["B11"].endswith("IMG_DATA/R20m/T52UCU_20230512T023551_B11_20m.jp2")
    assert p.scl_path.endswith("IMG_DATA/R20m/T52UCU_20230512T023551_SCL_20m.jp2")

    with rasterio.open(p.band_paths["B04"]) as src:
        assert src.driver == "JP2OpenJPEG" and src.dtypes[0] == "uint16"
        assert src.crs == rasterio.crs.CRS.from_epsg(32652) and src.transform == GRID.transform
        dn = src.read(1)
    expected = np.clip(np.rint(np.nan_to_num(refl["B04"]) * 10000 + 1000), 1, 65535)
    expected[0, 0] = 0
    np.testing.assert_array_equal(dn, expected)  # lossless
    with rasterio.open(p.band_paths["B8A"]) as src:
        assert src.res == (20.0, 20.0) and src.bounds == rasterio.coords.BoundingBox(*GRID.bounds)
    with rasterio.open(p.scl_path) as src:
        np.testing.assert_array_equal(src.read(1), scl)

    root = ET.parse(path / "MTD_MSIL2A.xml").getroot()
    assert root.tag == f"{{{L2A_NAMESPACE}}}Level-2A_User_Product"
    offsets = {e.attrib["band_id"]: e.text for e in root.iter() if local_name(e.tag) == "BOA_ADD_OFFSET"}
    assert offsets == {str(i): "-1000" for i in range(13)}
    tile = ET.parse(next(path.glob("GRANULE/L2A_T52UCU_A*_20230512T023551/MTD_TL.xml"))).getroot()
    geo = {local_name(e.tag): e for e in tile.iter()}
    assert geo["HORIZONTAL_CS_CODE"].text == "EPSG:32652"
    pos = {e.attrib["resolution"]: e for e in tile.iter() if local_name(e.tag) == "Geoposition"}
    assert pos["10"].find("ULX").text == "320000" and pos["20"].find("ULY").text == "5350000"
    size = {e.attrib["resolution"]: e for e in tile.iter() if local_name(e.tag) == "Size"}
    assert (size["10"].find("NROWS").text, size["20"].find("NCOLS").text) == ("40", "20")
    assert not list(path.rglob("*.aux.xml"))


def test_boa_reflectance_applies_offset_and_quantification():
    dn = np.array([0, 1000, 1500, 11000], dtype=np.uint16)
    out = boa_reflectance(dn, -1000, 10000)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [0.0, 0.05, 1.0])
    np.testing.assert_allclose(boa_reflectance(np.array([500.0]), 0.0, 10000), [0.05])  # baseline < 04.00


def test_ingested_10m_band_equals_written_reflectance(tmp_path):
    refl = reflectance()
    data, meta, _ = ingest(tmp_path, make(tmp_path, refl))
    # without the -1000 offset every value would be 0.1 too high
    np.testing.assert_allclose(data[0], refl["B04"], atol=0.6e-4)
    assert meta["used"] is True and meta["reason"] is None
    assert meta["coverage"] == 1.0 and meta["valid_fraction"] == 1.0 and meta["cloud_fraction"] == 0.0


def test_20m_band_is_resampled_bilinear_onto_the_10m_grid(tmp_path):
    refl = reflectance()
    cols = np.arange(20)
    refl["B8A"] = np.tile(0.1 + 0.01 * cols, (20, 1))  # linear ramp in x at 20 m
    data, _, _ = ingest(tmp_path, make(tmp_path, refl), bands=["B8A"])
    # 10 m pixel centre j sits at 20 m pixel coordinate (j + 0.5) / 2 - 0.5: bilinear reproduces the ramp
    x20 = (np.arange(40) + 0.5) / 2 - 0.5
    expected = 0.1 + 0.01 * x20
    np.testing.assert_allclose(data[0, 5, 2:-2], expected[2:-2], atol=1e-4)
    assert np.all(np.diff(data[0, 5, 2:-2]) > 0.004)  # nearest would repeat each value twice


def test_invalid_scl_classes_become_nan(tmp_path):
    scl = np.full((20, 20), 4, np.uint8)
    scl[0:4, 0:4] = 3  # cloud shadow
    scl[10:12, 10:12] = 11  # snow
    scl[15:17, 15:17] = 6  # water: valid
    data, meta, _ = ingest(tmp_path, make(tmp_path, scl=scl))
    assert np.isnan(data[:, 0:8, 0:8]).all()
    assert np.isnan(data[:, 20:24, 20:24]).all()
    assert np.isfinite(data[:, 30:34, 30:34]).all()
    assert np.isfinite(data).sum() == 3 * (1600 - 64 - 16)
    assert meta["valid_fraction"] == pytest.approx((1600 - 80) / 1600)
    np.testing.assert_array_equal(scl_valid_mask(np.array([0, 3, 4, 6, 9]), INVALID), [False, False, True, True, False])


def test_cloud_fraction_counts_only_aoi_pixels_the_product_covers():
    scl = np.array([[9, 9, 4, 4], [0, 0, 4, 9]], dtype=np.uint8)
    right = np.array([[False, False, True, True]] * 2)
    assert cloud_fraction(scl, CLOUD, right) == pytest.approx(1 / 4)
    assert cloud_fraction(scl, CLOUD) == pytest.approx(3 / 6)  # SCL 0 is not covered
    assert math.isnan(cloud_fraction(np.zeros((2, 2), np.uint8), CLOUD))


def test_cloud_outside_the_aoi_does_not_count(tmp_path):
    scl = np.full((20, 20), 4, np.uint8)
    scl[:, :10] = 9  # the western half is cloudy
    product = make(tmp_path, scl=scl)
    east = shapely.box(320200, 5349600, 320400, 5350000)
    _, meta, _ = ingest(tmp_path, product, aoi=east)
    assert meta["cloud_fraction"] == 0.0 and meta["used"] is True
    _, meta_all, _ = ingest(tmp_path, product, aoi=shapely.box(*GRID.bounds))
    assert meta_all["cloud_fraction"] == pytest.approx(0.5) and meta_all["used"] is False


def test_fully_cloudy_product_is_written_but_not_used(tmp_path, caplog):
    product = make(tmp_path, scl=np.full((20, 20), 9, np.uint8))
    with caplog.at_level(logging.WARNING, logger="cropflow.s2"):
        data, meta, out_tif = ingest(tmp_path, product)
    assert meta["used"] is False
    assert meta["reason"] == "cloud fraction 1.00 > 0.08"
    assert meta["cloud_fraction"] == 1.0 and meta["valid_fraction"] == 0.0
    assert out_tif.exists() and np.isnan(data).all()
    assert any(product.name.removesuffix(".SAFE") in r.message and "1.000" in r.message for r in caplog.records)


def test_product_missing_the_grid_is_not_used(tmp_path):
    far = ProjectGrid("EPSG:32652", 10.0, (400000.0, 5349600.0, 400400.0, 5350000.0))
    data, meta, _ = ingest(tmp_path, make(tmp_path), grid=far)
    assert meta["used"] is False and meta["reason"] == "no overlap with the AOI"
    assert meta["coverage"] == 0.0 and np.isnan(data).all()


def test_output_raster_carries_band_names_and_tags(tmp_path):
    _, _, out_tif = ingest(tmp_path, make(tmp_path))
    with rasterio.open(out_tif) as src:
        assert src.descriptions == ("B04", "B8A", "B11", "QA")
        assert src.dtypes[0] == "float32" and src.transform == GRID.transform
        tags = src.tags()
    assert tags["SCENE"].startswith("S2A_MSIL2A_20230512T023551") and tags["MGRS_TILE"] == "52UCU"
    assert tags["DATETIME"] == SENSING.isoformat()


def test_windowed_ingest_equals_single_window(tmp_path):
    product = make(tmp_path, scl=np.where(np.arange(400).reshape(20, 20) % 7 == 0, 8, 4).astype(np.uint8))
    whole, meta_whole, _ = ingest(tmp_path, product, window_rows=512)
    small, meta_small, _ = ingest(tmp_path, product, window_rows=7)
    np.testing.assert_array_equal(whole, small)
    assert meta_whole == meta_small


def test_missing_band_file_is_named(tmp_path):
    product = make(tmp_path)
    b11 = next(product.rglob("*_B11_20m.jp2"))
    b11.unlink()
    with pytest.raises(FileNotFoundError) as err:
        ingest(tmp_path, product)
    msg = str(err.value)
    assert f"band B11 (R20m/{b11.name}) is missing" in msg
    assert "re-download the product or remove it from" in msg and str(tmp_path) in msg


def test_unknown_or_absent_band_is_rejected(tmp_path):
    p = open_l2a(make(tmp_path))
    with pytest.raises(ValueError, match="unknown Sentinel-2 L2A band 'B13'"):
        p.band_path("B13")
    with pytest.raises(ValueError, match="band B01 is not in this product"):
        p.band_path("B01")
    assert p.band_path("b4") == p.band_paths["B04"]


def test_zip_product_reads_like_the_folder(tmp_path):
    refl = reflectance(3)
    folder = make(tmp_path / "safe", refl)
    zipped = make(tmp_path / "zip", refl, zip=True)
    assert zipped.suffix == ".zip"
    p = open_l2a(zipped)
    assert p.name == folder.name.removesuffix(".SAFE")
    assert p.band_paths["B04"].startswith(f"/vsizip/{zipped.absolute()}/{p.name}.SAFE/GRANULE/")
    from_zip, meta_zip, _ = ingest(tmp_path / "a", zipped)
    from_dir, meta_dir, _ = ingest(tmp_path / "b", folder)
    np.testing.assert_array_equal(from_zip, from_dir)
    assert meta_zip == meta_dir


def test_missing_metadata_and_level_1c_are_reported(tmp_path):
    empty = tmp_path / "S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T053551.SAFE"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no <name>.SAFE/MTD_MSIL2A.xml"):
        open_l2a(empty)
    l1c = tmp_path / "S2A_MSIL1C_20230512T023551_N0509_R089_T52UCU_20230512T053551.SAFE"
    l1c.mkdir()
    (l1c / "MTD_MSIL1C.xml").write_text("<x/>")
    with pytest.raises(FileNotFoundError, match="Level-1C product.*Sen2Cor.*s2.sen2cor.*s2.prefer"):
        open_l2a(l1c)
    with pytest.raises(FileNotFoundError, match="no <name>.SAFE/MTD_MSIL1C.xml"):
        open_l1c(empty)


def test_writer_rejects_wrong_shapes(tmp_path):
    refl = reflectance()
    refl["B11"] = np.zeros((40, 40))
    with pytest.raises(ValueError, match=r"band B11 is shaped \(40, 40\); at 20 m on grid10 it must be \(20, 20\)"):
        make(tmp_path, refl)
    assert not list(tmp_path.iterdir())  # nothing half-written is left


# ------------------------------------------------------------------------------------------------ Level-1C


def test_product_names_of_both_levels_are_parsed():
    l1c = parse_product_name("S2B_MSIL1C_20190626T140101_N0207_R067_T21JTH_20190626T154048.SAFE")
    assert l1c is not None and (l1c["level"], l1c["platform"], l1c["baseline"], l1c["relative_orbit"],
                                l1c["mgrs_tile"]) == ("L1C", "S2B", "02.07", 67, "21JTH")
    l2a = parse_product_name("S2A_MSIL2A_20230512T023551_N9999_R089_T52UCU_20230512T053551.zip")
    assert l2a is not None and (l2a["level"], l2a["baseline"]) == ("L2A", "99.99")
    assert parse_product_name("S2A_OPER_PRD_MSIL1C_PDMC_20160101T000000_R089_V20160101T000000.SAFE") is None


def test_l1c_writer_round_trips_toa_offsets_and_all_13_bands(tmp_path):
    bands = toa()
    bands["B10"][0, 0] = np.nan
    path = make_l1c(tmp_path, bands=bands)
    assert path.name == f"{L1C_NAME}.SAFE"
    assert l1c_name("S2A", SENSING60, "05.09", 89, "52UCU", datetime(2023, 5, 12, 4, 35, 51)) == L1C_NAME
    p = validate_l1c(path)
    assert (p.name, p.platform, p.mgrs_tile, p.relative_orbit, p.baseline) == (L1C_NAME, "S2A", "52UCU", 89, "05.09")
    assert p.datetime == SENSING60 and p.cloud_cover == pytest.approx(12.5)
    assert p.quantification == 10000 and p.offsets == {b: -1000.0 for b in BAND_IDS}
    assert p.bands == BAND_IDS
    for band in BAND_IDS:
        src_path = p.band_path(band)
        assert src_path.endswith(f"IMG_DATA/T52UCU_20230512T023551_{band}.jp2")
        with rasterio.open(src_path) as src:
            res = {"B01": 60, "B09": 60, "B10": 60, "B02": 10, "B03": 10, "B04": 10, "B08": 10}.get(band, 20)
            assert src.res == (res, res) and src.bounds == rasterio.coords.BoundingBox(*GRID60.bounds)
            refl = l1c_toa_reflectance(src.read(1), p.offsets[band], p.quantification)
        expected = bands[band]
        np.testing.assert_allclose(refl, expected, atol=0.5e-4)  # DN steps of 1e-4, NaN where no data
        if band == "B10":
            assert np.isnan(refl[0, 0])


def test_l1c_toa_reflectance_applies_the_offset_and_no_data():
    out = l1c_toa_reflectance(np.array([0, 1000, 3500], np.uint16), -1000.0, 10000.0)
    assert np.isnan(out[0]) and out[1] == 0.0 and out[2] == pytest.approx(0.25)
    assert l1c_toa_reflectance(np.array([2500]), 0.0, 10000.0)[0] == pytest.approx(0.25)  # before PB 04.00


def test_metadata_footprint_is_read_in_lon_lat_order(tmp_path):
    p = open_l1c(make_l1c(tmp_path))
    footprint = shapely.from_wkt(p.footprint_wkt)
    lon, lat = footprint.centroid.x, footprint.centroid.y
    assert 125.0 < lon < 127.0 and 47.0 < lat < 49.0  # UTM 52N near Bei'an, not swapped
    import pyproj
    x, y = pyproj.Transformer.from_crs("EPSG:4326", GRID60.crs, always_xy=True).transform(lon, lat)
    assert GRID60.bounds[0] < x < GRID60.bounds[2] and GRID60.bounds[1] < y < GRID60.bounds[3]


@pytest.mark.parametrize("zipped", [False, True])
def test_l1c_missing_band_is_named(tmp_path, zipped):
    path = make_l1c(tmp_path, omit_bands=("B10",), zip=zipped)
    assert open_l1c(path).bands == BAND_IDS  # listed in the metadata, file absent
    with pytest.raises(FileNotFoundError, match=rf"{L1C_NAME}: band B10 \(IMG_DATA/T52UCU_20230512T023551_B10.jp2\)"
                                                r" is missing: re-download the product or remove it from"):
        validate_l1c(path)
    assert validate_l1c(path, required=("B02", "B11")).name == L1C_NAME


def test_l1c_folder_read_as_l2a_and_l2a_read_as_l1c_name_the_level(tmp_path):
    with pytest.raises(FileNotFoundError, match="Level-1C product.*s2.prefer"):
        open_l2a(make_l1c(tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="is a Level-2A product"):
        open_l1c(make(tmp_path / "b"))
def test_qa_band_codes_clear_cloud_other_nodata():
    scl = np.array([[0, 4, 5, 8], [9, 3, 11, 1]], np.uint8)
    valid = scl_valid_mask(scl, INVALID) & (scl != 0)
    qa = qa_codes(scl, valid, CLOUD)
    assert qa.tolist() == [[0, 1, 1, 2], [2, 2, 3, 3]]


def test_product_writers_name_a_missing_or_unknown_identity_keyword(tmp_path):
    """The identity keywords (``S2Identity``) are checked by name: a missing or misspelt one is reported."""
    base = dict(platform="S2A", sensing_time=SENSING60, relative_orbit=89, baseline="05.09", grid10=GRID60)
    with pytest.raises(TypeError, match=r"write_l2a: missing keyword\(s\) \['mgrs_tile'\]"):
        write_l2a(tmp_path, **base, reflectance={}, scl=np.zeros((18, 18), np.uint8))
    with pytest.raises(TypeError, match=r"write_l1c: unknown keyword\(s\) \['tile_id'\]"):
        make_l1c(tmp_path, tile_id="52UCU")
    assert not list(tmp_path.iterdir())
