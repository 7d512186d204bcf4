"""SNAP engine: graphs from the real SAFE metadata, sub-graph groups, gpt discovery, SNAP output -> seam."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cropflow import pyrosar_env, snap
from cropflow.grid import ProjectGrid
from cropflow.s1 import validate_c2, validate_coherence

DATA = Path(__file__).resolve().parents[1] / "resources" / "s1"
SAFE = DATA / "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.zip"
# UTM 32N grids over the product (IW1 bursts from the annotation's geolocation grid)
ONE_BURST = ProjectGrid("EPSG:32632", 10.0, (715400.0, 5137860.0, 717400.0, 5139860.0))  # IW1 burst 5
TWO_BURSTS = ProjectGrid("EPSG:32632", 10.0, (714840.0, 5153410.0, 744840.0, 5183410.0))  # IW1 bursts 3-4
TWO_SWATHS = ProjectGrid("EPSG:32632", 10.0, (660000.0, 5180000.0, 690000.0, 5210000.0))  # IW1 + IW2


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """pyroSAR writes ~/.pyrosar: keep it inside the test's folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def ref() -> snap.SceneInfo:
    return snap.scene_info(SAFE)


@pytest.fixture(scope="module")
def sec(ref) -> snap.SceneInfo:
    """The same real product taken as the 12-day secondary (only one real product is shipped)."""
    start = ref.start + timedelta(days=12)
    name = ref.scene.replace("20210401T052622_20210401T052650_026269", "20210413T052622_20210413T052650_026444")
    return dataclasses.replace(ref, scene=name, start=start, path=ref.path + ".secondary")


def params(graph: snap.Graph, node_id: str) -> dict:
    return graph.node(node_id).parameters.dict()


# ------------------------------------------------------------------------------------------- environment


def test_import_pyrosar_registers_pysqlite2_only_when_sqlite_cannot_load_extensions():
    module = pyrosar_env.import_pyrosar()
    assert module.__name__ == "pyroSAR" and hasattr(module, "identify")
    if pyrosar_env.sqlite_loads_extensions():
        assert "pysqlite2" not in sys.modules or sys.modules["pysqlite2"].__name__ != "pysqlite2"
    else:
        import pysqlite3.dbapi2

        assert sys.modules["pysqlite2.dbapi2"] is pysqlite3.dbapi2


def test_missing_gpt_on_path_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="install ESA SNAP.*s1.snap.gpt.*s1.engine: native"):
        pyrosar_env.find_gpt()
    with pytest.raises(FileNotFoundError, match="s1.snap.gpt = '/nowhere/gpt'"):
        pyrosar_env.find_gpt("/nowhere/gpt")


def _fake_snap(root: Path, version_txt: str | None, diag: str) -> Path:
    (root / "bin").mkdir(parents=True)
    gpt = root / "bin" / "gpt"
    gpt.write_text(f"#!/bin/sh\necho '{diag}'\n")
    gpt.chmod(gpt.stat().st_mode | stat.S_IXUSR)
    if version_txt is not None:
        (root / "VERSION.txt").write_text(version_txt)
    return gpt


def test_snap_version_from_install_or_gpt_diag(tmp_path, monkeypatch):
    installed = _fake_snap(tmp_path / "snap13", "SNAP 13.0.0\n", "unused")
    diag_only = _fake_snap(tmp_path / "snap12", None, "SNAP Release version 12.0.1\nSNAP home: /opt/snap")
    assert pyrosar_env.snap_version(installed) == "13.0.0"
    assert pyrosar_env.snap_version(diag_only) == "12.0.1"
    monkeypatch.setenv("PATH", str(diag_only.parent))
    assert pyrosar_env.find_gpt() == diag_only.resolve()
    assert pyrosar_env.find_gpt(installed) == installed.resolve()


# ------------------------------------------------------------------------------------------- metadata


def test_scene_info_from_real_safe_metadata(ref):
    assert ref.scene == "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4"
    assert (ref.platform, ref.relative_orbit, ref.orbit_pass) == ("S1B", 168, "DESCENDING")
    assert sorted(ref.polarizations) == ["VH", "VV"]
    assert ref.start.isoformat().startswith("2021-04-01T05:26:22")
    assert len(ref.bursts["IW1"]) == 9 and len(ref.bursts["IW2"]) == 10
    assert ref.bursts_in(snap.grid_aoi_lonlat(ONE_BURST)) == {"IW1": [5]}
    assert ref.bursts_in(snap.grid_aoi_lonlat(TWO_BURSTS)) == {"IW1": [3, 4]}
    assert set(ref.bursts_in(snap.grid_aoi_lonlat(TWO_SWATHS))) == {"IW1", "IW2"}


# ------------------------------------------------------------------------------------------- graphs


def test_coherence_graph_single_burst_has_no_esd_and_right_parameters(ref, sec, tmp_path):
    opts = snap.SnapOptions(coherence_window=(12, 4), dem="SRTM 1Sec HGT", orbit="Sentinel Restituted",
                            subtract_topographic_phase=True)
    g = snap.coherence_graph(ref, sec, ONE_BURST, tmp_path / "out.tif", opts)
    ops = [n.operator for n in g.workflow]
    assert ops == ["Read", "Read", "TOPSAR-Split", "TOPSAR-Split", "Apply-Orbit-File", "Apply-Orbit-File",
                   "Back-Geocoding", "Coherence", "TOPSAR-Deburst", "Terrain-Correction", "Subset", "Write"]
    assert params(g, "Read")["file"] == ref.path and params(g, "Read (2)")["file"] == sec.path
    assert g.node("TOPSAR-Split").source == "Read" and g.node("TOPSAR-Split (2)").source == "Read (2)"
    assert g.node("Apply-Orbit-File (2)").source == "TOPSAR-Split (2)"
    bg = g.node("Back-Geocoding")
    assert bg.source == ["Apply-Orbit-File", "Apply-Orbit-File (2)"]
    sources = {e.tag: e.attrib["refid"] for e in bg.element.find("sources")}
    assert sources == {"sourceProduct": "Apply-Orbit-File", "sourceProduct.1": "Apply-Orbit-File (2)"}
    assert params(g, "TOPSAR-Split")["subswath"] == "IW1"
    assert params(g, "TOPSAR-Split")["selectedPolarisations"] == "VH,VV"
    assert params(g, "Apply-Orbit-File")["orbitType"] == "Sentinel Restituted (Auto Download)"
    coh = params(g, "Coherence")
    assert (coh["cohWinRg"], coh["cohWinAz"], coh["squarePixel"]) == ("12", "4", "false")
    assert (coh["subtractFlatEarthPhase"], coh["subtractTopographicPhase"]) == ("true", "true")
    assert params(g, "Back-Geocoding")["demName"] == coh["demName"] == "SRTM 1Sec HGT"
    tc = params(g, "Terrain-Correction")
    assert tc["mapProjection"] == "EPSG:32632" and float(tc["pixelSpacingInMeter"]) == 10.0
    assert tc["alignToStandardGrid"] == "true" and tc["nodataValueAtSea"] == "false"
    assert (float(tc["standardGridOriginX"]), float(tc["standardGridOriginY"])) == (715400.0, 5139860.0)
    assert params(g, "Subset")["geoRegion"].startswith("POLYGON")
    w = params(g, "Write")
    assert w["formatName"] == "GeoTIFF-BigTIFF" and w["file"] == str(tmp_path / "out.tif")
    # every template parameter is written out: no element left without a value except optional ones
    assert all(v is not None for k, v in coh.items() if k != "externalDEMFile")


def test_coherence_graph_esd_only_with_several_bursts_and_merge_with_several_swaths(ref, sec, tmp_path):
    two = snap.coherence_graph(ref, sec, TWO_BURSTS, tmp_path / "a.tif")
    assert "Enhanced-Spectral-Diversity" in [n.operator for n in two.workflow]
    assert two.node("Enhanced-Spectral-Diversity").source == "Back-Geocoding"
    assert two.node("Coherence").source == "Enhanced-Spectral-Diversity"
    assert "TOPSAR-Merge" not in [n.operator for n in two.workflow]
    both = snap.coherence_graph(ref, sec, TWO_SWATHS, tmp_path / "b.tif")
    swaths = [params(both, n.id)["subswath"] for n in both.workflow if n.operator == "TOPSAR-Split"]
    assert swaths == ["IW1", "IW1", "IW2", "IW2"]
    assert both.node("TOPSAR-Merge").source == ["TOPSAR-Deburst", "TOPSAR-Deburst (2)"]
    assert both.node("Terrain-Correction").source == "TOPSAR-Merge"


def test_external_dem_and_unknown_values_are_rejected_clearly(ref, sec, tmp_path):
    dem = tmp_path / "dem.tif"
    dem.write_bytes(b"")
    g = snap.coherence_graph(ref, sec, ONE_BURST, tmp_path / "o.tif",
                             snap.SnapOptions(external_dem=str(dem), external_dem_nodata=-9999))
    for node in ("Back-Geocoding", "Coherence", "Terrain-Correction"):
        p = params(g, node)
        assert (p["demName"], p["externalDEMFile"]) == ("External DEM", str(dem.resolve()))
        assert float(p["externalDEMNoDataValue"]) == -9999
    with pytest.raises(FileNotFoundError, match="s1.snap.external_dem"):
        snap.SnapOptions(external_dem=str(tmp_path / "missing.tif")).dem_parameters()
    with pytest.raises(ValueError, match="s1.snap.orbit"):
        snap.SnapOptions(orbit="Precise").orbit_type()
    with pytest.raises(ValueError, match="one track"):
        snap.coherence_graph(sec, ref, ONE_BURST, tmp_path / "o.tif")
    with pytest.raises(ValueError, match="shipped versions"):
        snap.template_path("9.0")


def test_scene_graph_polarimetry_chain_and_parameters(ref, tmp_path):
    opts = snap.SnapOptions.from_config({"speckle_window": 9, "multilook": {"range": 3, "azimuth": 2},
                                         "orbit": "Sentinel Precise"})
    g = snap.scene_graph(ref, ONE_BURST, tmp_path / "c2.tif", opts)
    assert [n.operator for n in g.workflow] == [
        "Read", "TOPSAR-Split", "Apply-Orbit-File", "Calibration", "TOPSAR-Deburst", "Polarimetric-Matrices",
        "Multilook", "Polarimetric-Speckle-Filter", "Terrain-Correction", "Subset", "Write"]
    ids = g.ids
    assert all(g.node(b).source == a for a, b in zip(ids, ids[1:]))
    cal = params(g, "Calibration")
    assert (cal["outputImageInComplex"], cal["outputSigmaBand"], cal["selectedPolarisations"]) == ("true", "true", "VH,VV")
    assert params(g, "Polarimetric-Matrices")["matrix"] == "C2"
    ml = params(g, "Multilook")
    assert (ml["nRgLooks"], ml["nAzLooks"], ml["grSquarePixel"], ml["outputIntensity"]) == ("3", "2", "false", "false")
    spk = params(g, "Polarimetric-Speckle-Filter")
    assert (spk["filter"], spk["windowSize"], spk["numLooksStr"]) == ("Refined Lee Filter", "9x9", "4")
    assert params(g, "Apply-Orbit-File")["orbitType"] == "Sentinel Precise (Auto Download)"
    assert params(g, "Terrain-Correction")["demName"] == "SRTM 3Sec"


def test_scene_graph_with_snap_decompositions_merges_the_branches(ref, tmp_path):
    g = snap.scene_graph(ref, TWO_SWATHS, tmp_path / "c2.tif", snap.SnapOptions(decompositions=True))
    assert g.node("TOPSAR-Merge").source == ["TOPSAR-Deburst", "TOPSAR-Deburst (2)"]
    assert params(g, "Polarimetric-Decomposition")["decomposition"] == "H-Alpha Dual Pol Decomposition"
    assert params(g, "CP-Decomposition")["decomposition"] == "M-Chi Decomposition"
    for node in ("Polarimetric-Decomposition", "CP-Decomposition", "Radar-Vegetation-Index"):
        assert g.node(node).source == "Polarimetric-Speckle-Filter"
    assert g.node("BandMerge").source == ["Polarimetric-Speckle-Filter", "Polarimetric-Decomposition",
                                          "CP-Decomposition", "Radar-Vegetation-Index"]
    assert g.node("Terrain-Correction").source == "BandMerge"


def test_graph_xml_records_versions_and_splits_into_valid_groups(ref, sec, tmp_path):
    g = snap.coherence_graph(ref, sec, TWO_BURSTS, tmp_path / "out.tif")
    xml = snap.write_graph(g, tmp_path / "pair.graph.xml", "13.0.0")
    text = xml.read_text()
    assert "<snapVersion>13.0.0</snapVersion>" in text and "<templateVersion>13.0.0</templateVersion>" in text
    assert g.groups[0][-1] == "Enhanced-Spectral-Diversity" and g.groups[1][0] == "Coherence"
    assert sorted(sum(g.groups, [])) == sorted(g.ids)
    auxil = snap._auxil()
    assert auxil.is_consistent(auxil.Workflow(str(xml)))
    with snap.cropflow_nodes():
        subs = auxil.split(str(xml), [list(x) for x in g.groups], outdir=str(tmp_path / "sub"))
    assert len(subs) == 2
    first, second = (auxil.Workflow(s) for s in subs)
    assert auxil.is_consistent(first) and auxil.is_consistent(second)
    tmp_product = params_of(first, "Write")["file"]
    assert params_of(second, "Read")["file"] == tmp_product and tmp_product.endswith(".dim")
    assert second["Coherence"].source == "Read"


def params_of(workflow, node_id: str) -> dict:
    return workflow[node_id].parameters.dict()


def test_process_scene_writes_graph_then_fails_clearly_without_gpt(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    dst = tmp_path / "out" / "scene_C2.tif"
    with pytest.raises(FileNotFoundError, match="SNAP's gpt not found"):
        snap.process_scene(SAFE, dst, ONE_BURST, {"version": "13.0"})
    text = (tmp_path / "out" / "scene_C2.graph.xml").read_text()
    assert "<snapVersion>not found</snapVersion>" in text and "Polarimetric-Matrices" in text
    assert not dst.exists()


# ------------------------------------------------------------------------------------------- SNAP output -> seam


def _snap_tif(path: Path, names: list[str], data: np.ndarray, left: float, top: float) -> None:
    """A GeoTIFF shaped like SNAP's Terrain-Correction output: band names as descriptions, 0 outside the swath."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=len(names),
                       dtype="float32", crs="EPSG:32632", transform=from_origin(left, top, 10.0, 10.0)) as dst:
        dst.write(data.astype("float32"))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)


def test_snap_c2_output_becomes_the_seam_raster(ref, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(0.01, 0.5, (7, 30, 40)).astype("float32")
    data[:, :, :5] = 0.0  # outside the swath
    names = ["C11", "C12_real", "C12_imag", "C22", "Entropy", "Alpha", "DpRVI"]
    grid = ONE_BURST
    # the SNAP product starts 50 m inside the grid's top-left corner and runs beyond its right edge
    left, top = grid.bounds[2] - 300.0, grid.bounds[3] - 50.0
    src = tmp_path / "snap.tif"
    _snap_tif(src, names, data, left, top)
    dst = tmp_path / f"{ref.scene}_C2.tif"
    snap.snap_c2_to_seam(src, dst, grid, snap.scene_tags(ref), extras=tmp_path / "extras.tif")
    tags = validate_c2(dst, grid)
    assert tags["SCENE"] == ref.scene and tags["PASS"] == "DESCENDING" and tags["RELATIVE_ORBIT"] == "168"
    with rasterio.open(dst) as out:
        assert list(out.descriptions) == ["C11", "C22", "C12_real", "C12_imag"]
        assert (out.bounds.left, out.bounds.top, out.bounds.right) == (left, top, grid.bounds[2])
        c = out.read()
    assert np.isnan(c[:, :, :5]).all()
    np.testing.assert_allclose(c[0, :, 5:], data[0, :, 5:30])
    np.testing.assert_allclose(c[1, :, 5:], data[3, :, 5:30])  # C22 moved to band 2
    np.testing.assert_allclose(c[3, :, 5:], data[2, :, 5:30])
    with rasterio.open(tmp_path / "extras.tif") as ex:
        assert list(ex.descriptions) == ["Entropy", "Alpha", "DpRVI"]


def test_snap_coherence_output_merges_swaths_clips_and_tags(ref, sec, tmp_path):
    grid = ONE_BURST
    names = ["Intensity_IW1_VV", "coh_IW1_VH_01Apr2021_13Apr2021", "coh_IW1_VV_01Apr2021_13Apr2021",
             "coh_IW2_VH_01Apr2021_13Apr2021", "coh_IW2_VV_01Apr2021_13Apr2021"]
    data = np.zeros((5, 20, 20), dtype="float32")
    data[0] = 5.0
    data[1, :, :10], data[2, :, :10] = 0.3, 1.00001  # IW1 left half (one value just above 1)
    data[3, :, 10:], data[4, :, 10:] = 0.2, 0.6  # IW2 right half
    data[1:, :2, :] = 0.0  # no coherence in the two top rows
    src = tmp_path / "coh.tif"
    _snap_tif(src, names, data, grid.bounds[0] + 5.0, grid.bounds[3] - 5.0)  # off the lattice by 5 m
    dst = tmp_path / "R168_20210401_20210413_coh.tif"
    snap.snap_coherence_to_seam(src, dst, grid, snap.pair_tags(ref, sec))
    tags = validate_coherence(dst, grid)
    assert (tags["REFERENCE"], tags["SECONDARY"]) == (ref.scene, sec.scene)
    with rasterio.open(dst) as out:
        assert list(out.descriptions) == ["coh_vv", "coh_vh"]
        coh = out.read()
    assert np.nanmax(coh) <= 1.0
    assert np.isnan(coh[:, 0, :]).all()
    assert np.isclose(coh[0, 10, 3], 1.0) and np.isclose(coh[0, 10, 15], 0.6)
    assert np.isclose(coh[1, 10, 3], 0.3) and np.isclose(coh[1, 10, 15], 0.2)


def test_snap_output_without_expected_bands_is_rejected(tmp_path):
    src = tmp_path / "bad.tif"
    _snap_tif(src, ["Sigma0_VV", "Sigma0_VH"], np.ones((2, 5, 5)), ONE_BURST.bounds[0], ONE_BURST.bounds[3])
    with pytest.raises(ValueError, match=r"bad.tif: SNAP bands \['C11'"):
        snap.snap_c2_to_seam(src, tmp_path / "x_C2.tif", ONE_BURST, {})
    with pytest.raises(ValueError, match="no SNAP coherence band"):
        snap.snap_coherence_to_seam(src, tmp_path / "x_coh.tif", ONE_BURST, {})


# ------------------------------------------------------------------------------------------- with SNAP


@pytest.mark.skipif(shutil.which("gpt") is None, reason="SNAP's gpt is not on PATH")
def test_snap_runs_the_scene_graph(tmp_path):
    dst = tmp_path / f"{SAFE.name[:-4]}_C2.tif"
    snap.process_scene(SAFE, dst, ONE_BURST, {"version": "13.0"}, gpt_args=["-q", str(os.cpu_count() or 1)])
    validate_c2(dst, ONE_BURST)
    assert "<snapVersion>" in dst.with_name(f"{dst.stem}.graph.xml").read_text()
