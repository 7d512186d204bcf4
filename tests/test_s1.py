from datetime import UTC, datetime

import numpy as np
import pytest
import rasterio

from cropflow import polsar, s1
from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster

SCENE = "S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048404_05D2C4_3F1A"
SCENE2 = "S1A_IW_SLC__1SDV_20230520T094513_20230520T094540_048579_05D7F0_1B2C"
PROJECT = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 340000.0, 5350000.0))
SUB = ProjectGrid("EPSG:32652", 10.0, (321000.0, 5331000.0, 321230.0, 5331370.0))  # 37 rows x 23 cols


def c2_tags(scene: str = SCENE) -> dict:
    info = s1.parse_scene_id(scene)
    return {"SCENE": scene, "PLATFORM": info["platform"], "RELATIVE_ORBIT": info["relative_orbit"],
            "PASS": "DESCENDING", "START_TIME": info["start"].isoformat()}


def c2_array(grid: ProjectGrid, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = grid.shape
    c11 = rng.gamma(2.0, 0.05, size=(h, w))
    c22 = rng.gamma(2.0, 0.01, size=(h, w))
    rho = rng.uniform(0, 0.9, size=(h, w)) * np.exp(1j * rng.uniform(-np.pi, np.pi, size=(h, w)))
    c12 = rho * np.sqrt(c11 * c22)
    data = np.stack([c11, c22, c12.real, c12.imag]).astype(np.float32)
    data[:, :3, :] = np.nan  # outside the swath
    data[:, 10:12, 5:9] = np.nan
    data[0, 20, 3] = 0.0
    return data


def write_c2(path, grid=SUB, bands=s1.C2_BANDS, tags=None, dtype="float32"):
    data = c2_array(grid).astype(dtype)
    write_raster(path, data, grid, nodata=float("nan"), band_names=list(bands), tags=tags or c2_tags())
    return path


def write_coh(path, grid=SUB, values=None, tags=None):
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 1, size=(2, *grid.shape)).astype(np.float32) if values is None else values
    tags = tags or {"REFERENCE": SCENE, "SECONDARY": SCENE2, "RELATIVE_ORBIT": 32}
    write_raster(path, data, grid, nodata=float("nan"), band_names=list(s1.COHERENCE_BANDS), tags=tags)
    return path


# ---------------------------------------------------------------------------------------------- names

def test_parse_scene_id_real_names():
    info = s1.parse_scene_id("S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4")
    assert info["platform"] == "S1B"
    assert info["absolute_orbit"] == 26269
    assert info["relative_orbit"] == 168
    assert info["datatake"] == "032297"
    assert info["start"] == datetime(2021, 4, 1, 5, 26, 22, tzinfo=UTC)
    assert info["stop"] == datetime(2021, 4, 1, 5, 26, 50, tzinfo=UTC)
    a = s1.parse_scene_id("S1A_IW_SLC__1SDV_20221102T094454_20221102T094521_045056_0562C0_5D6A.SAFE")
    assert (a["platform"], a["absolute_orbit"], a["relative_orbit"]) == ("S1A", 45056, 9)
    assert a["scene"].endswith("_5D6A")
    assert s1.parse_scene_id(SCENE)["relative_orbit"] == 32


@pytest.mark.parametrize("bad", ["S1A_IW_SLC__1SDV_20230508T094512", "S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T060311",
                                 "S1A_IW_SLC__1SDV_20231308T094512_20231308T094539_048410_05D2C4_3F1A",
                                 "S1C_IW_SLC__1SDV_20250508T094512_20250508T094539_002410_05D2C4_3F1A"])
def test_parse_scene_id_rejects_bad_names(bad):
    with pytest.raises(ValueError, match=bad[:20]):
        s1.parse_scene_id(bad)


def test_pair_ids_round_trip():
    pid = s1.pair_id(SCENE, SCENE2)
    assert pid == "R032_20230508_20230520"
    info = s1.parse_pair_id(pid)
    assert info["relative_orbit"] == 32 and info["secondary"].day == 20
    with pytest.raises(ValueError, match="R32_2023"):
        s1.parse_pair_id("R32_20230508_20230520")


# ---------------------------------------------------------------------------------------------- validation

def test_validate_c2_accepts_a_seam_file_and_returns_tags(tmp_path):
    path = write_c2(tmp_path / f"{SCENE}_C2.tif")
    tags = s1.validate_c2(path, PROJECT)
    assert tags["SCENE"] == SCENE and tags["RELATIVE_ORBIT"] == "32" and tags["PASS"] == "DESCENDING"


def test_validate_c2_missing_band_names_file(tmp_path):
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", bands=["C11", "C22", "C12_real", "C12_im"])
    with pytest.raises(ValueError, match=rf"{SCENE}_C2.tif.*band C12_imag missing"):
        s1.validate_c2(path, PROJECT)


def test_validate_c2_wrong_resolution(tmp_path):
    grid20 = ProjectGrid("EPSG:32652", 20.0, (321000.0, 5331000.0, 321200.0, 5331600.0))
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", grid=grid20)
    with pytest.raises(ValueError, match=rf"{SCENE}_C2.tif.*on a 20 m grid, expected 10 m: reprocess"):
        s1.validate_c2(path, PROJECT)


def test_validate_c2_wrong_crs(tmp_path):
    other = ProjectGrid("EPSG:32651", 10.0, SUB.bounds)
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", grid=other)
    with pytest.raises(ValueError, match=rf"{SCENE}_C2.tif.*CRS EPSG:32651, expected EPSG:32652"):
        s1.validate_c2(path, PROJECT)


def test_validate_c2_off_lattice_and_dtype(tmp_path):
    shifted = ProjectGrid("EPSG:32652", 10.0, (321005.0, 5331000.0, 321235.0, 5331370.0))
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", grid=shifted, dtype="float64")
    with pytest.raises(ValueError, match=r"float64, expected float32.*off the project pixel lattice by \(5, 0\)"):
        s1.validate_c2(path, PROJECT)


def test_validate_c2_tags(tmp_path):
    tags = c2_tags() | {"RELATIVE_ORBIT": 105}
    del tags["PASS"]
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", tags=tags)
    with pytest.raises(ValueError, match=r"\['PASS'\] missing"):
        s1.validate_c2(path, PROJECT)
    path = write_c2(tmp_path / f"{SCENE}_C2.tif", tags=c2_tags() | {"RELATIVE_ORBIT": 105})
    with pytest.raises(ValueError, match="RELATIVE_ORBIT=105.*relative orbit 32"):
        s1.validate_c2(path, PROJECT)
    path = write_c2(tmp_path / f"{SCENE2}_C2.tif")
    with pytest.raises(ValueError, match="differs from the file name"):
        s1.validate_c2(path, PROJECT)


def test_validate_c2_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_C2.tif"):
        s1.validate_c2(tmp_path / "nothing_C2.tif", PROJECT)


def test_validate_coherence(tmp_path):
    good = write_coh(tmp_path / "R032_20230508_20230520_coh.tif")
    assert s1.validate_coherence(good, PROJECT)["REFERENCE"] == SCENE
    values = np.full((2, *SUB.shape), 0.5, dtype=np.float32)
    values[1, 4, 4] = 1.2
    values[0, 0, :] = np.nan
    bad = write_coh(tmp_path / "R032_20230508_20230520_coh.tif", values=values)
    with pytest.raises(ValueError, match=r"R032_20230508_20230520_coh.tif.*band coh_vh has values in \[0.5, 1.2\]"):
        s1.validate_coherence(bad, PROJECT)
    misnamed = write_coh(tmp_path / "R105_20230508_20230520_coh.tif")
    with pytest.raises(ValueError, match="R105_20230508_20230520_coh.tif.*differs from its tags"):
        s1.validate_coherence(misnamed, PROJECT)
    grid20 = ProjectGrid("EPSG:32652", 20.0, (321000.0, 5331000.0, 321200.0, 5331600.0))
    coarse = write_coh(tmp_path / "c" / "R032_20230508_20230520_coh.tif", grid=grid20)
    with pytest.raises(ValueError, match="on a 20 m grid, expected 10 m"):
        s1.validate_coherence(coarse, PROJECT)


def test_import_scene_and_pair_copy_validated_files(tmp_path):
    src = write_c2(tmp_path / "in" / f"{SCENE}_C2.tif")
    dst = tmp_path / "results" / "s1" / "scenes" / f"{SCENE}_C2.tif"
    tags = s1.import_scene(src, dst, PROJECT)
    assert tags["SCENE"] == SCENE
    assert dst.read_bytes() == src.read_bytes()
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temporary left behind
    coh = write_coh(tmp_path / "in" / "R032_20230508_20230520_coh.tif")
    pdst = tmp_path / "results" / "s1" / "pairs" / coh.name
    s1.import_pair(coh, pdst, PROJECT)
    assert pdst.read_bytes() == coh.read_bytes()
    bad = write_c2(tmp_path / "bad" / f"{SCENE}_C2.tif", bands=["C11", "C22", "C12_real", "C12_im"])
    out = tmp_path / "results" / "s1" / "scenes" / "bad_C2.tif"
    with pytest.raises(ValueError):
        s1.import_scene(bad, out, PROJECT)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- features

def read_c2(path):
    with rasterio.open(path) as src:
        c11, c22, re_, im_ = src.read()
    return c11, c22, re_.astype(np.float64) + 1j * im_.astype(np.float64)


def test_scene_features_match_compute_features(tmp_path):
    c2 = write_c2(tmp_path / f"{SCENE}_C2.tif")
    out = tmp_path / "features" / f"{SCENE}.tif"
    names = list(polsar.FEATURES)
    written = s1.scene_features(c2, out, names, window_rows=8)
    assert written == names
    c11, c22, c12 = read_c2(c2)
    expected = polsar.compute_features(c11, c22, c12, names)
    with rasterio.open(out) as dst:
        got = dst.read()
        assert list(dst.descriptions) == names
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        assert dst.crs.to_string() == SUB.crs and dst.transform == SUB.transform and dst.shape == SUB.shape
        assert dst.tags()["SCENE"] == SCENE and dst.tags()["PASS"] == "DESCENDING"
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[:, :3]).all() and np.isnan(got[:, 20, 3]).all()
    assert np.isfinite(got[:, 30]).all()


def test_scene_features_glcm_windowed_equals_one_shot(tmp_path):
    c2 = write_c2(tmp_path / f"{SCENE}_C2.tif")
    glcm = {"enabled": True, "window": 5, "levels": 16}
    names = ["vh_db", "mchi_s"]
    many = s1.scene_features(c2, tmp_path / "many.tif", names, window_rows=4, glcm=glcm)
    s1.scene_features(c2, tmp_path / "one.tif", names, window_rows=1000, glcm=glcm)
    assert many == names + list(polsar.GLCM_FEATURES)
    with rasterio.open(tmp_path / "many.tif") as a, rasterio.open(tmp_path / "one.tif") as b:
        windowed, whole = a.read(), b.read()
        assert list(a.descriptions) == many and a.tags()["GLCM_WINDOW"] == "5"
    np.testing.assert_array_equal(windowed, whole)
    c11, c22, c12 = read_c2(c2)
    texture = polsar.glcm_features(polsar.vh_db(c11, c22, c12), window=5, levels=16)
    np.testing.assert_allclose(windowed[2:], texture, rtol=1e-6)
    assert np.isfinite(windowed[2:, 30]).all() and np.isnan(windowed[2:, :3]).all()


def test_scene_features_glcm_disabled_and_bad_names(tmp_path):
    c2 = write_c2(tmp_path / f"{SCENE}_C2.tif")
    names = s1.scene_features(c2, tmp_path / "f.tif", ["rvi"], glcm={"enabled": False, "window": 7, "levels": 32})
    assert names == ["rvi"]
    with pytest.raises(ValueError, match="'ndvi'.*valid names"):
        s1.scene_features(c2, tmp_path / "g.tif", ["rvi", "ndvi"])
    with pytest.raises(ValueError, match="odd"):
        s1.scene_features(c2, tmp_path / "g.tif", ["rvi"], glcm={"window": 6, "levels": 32})
    assert not (tmp_path / "g.tif").exists()
