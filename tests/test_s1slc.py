"""Sentinel-1 IW SLC inventory on a real SAFE zip: identify, cache, skips, pairs, burst matching, AOI coverage.

The one real product (resources/s1/, see its PROVENANCE.md) is S1B, relative orbit 168,
descending, 2021-04-01. Pair tests need more acquisitions, so ``derive`` writes copies of that zip in which
only what identifies an acquisition is rewritten: the SAFE folder name (start/stop time and absolute orbit)
and, in manifest.safe, startTime/stopTime, orbitNumber, relativeOrbitNumber (and, for the IPF >= 3.40 case,
the IPF version). Every other member (annotations, calibration, measurement) is the original's bytes, so a
derived product is the same real metadata "acquired again" on another date or track, not a new real product.
Where a test needs IPF >= 3.40 burst ids, ``burstId`` elements (the annotation element of IPF 3.40+,
``<burstId absolute="...">relative id</burstId>``) with made-up ids are inserted into the annotations.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
import shapely
from conftest import counting
from cropflow import s1slc
from cropflow.s1slc import (
    COVERAGE_COLUMNS,
    SKIPPED_COLUMNS,
    SLC_COLUMNS,
    SLC_PAIR_COLUMNS,
    aoi_coverage,
    common_bursts,
    scan_s1_slc,
    slc_pair,
    slc_pairs,
)

DATA = Path(__file__).resolve().parents[1] / "resources" / "s1"
NAME = "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4"
ZIP = DATA / f"{NAME}.zip"
T_START = datetime(2021, 4, 1, 5, 26, 22)
T_STOP = datetime(2021, 4, 1, 5, 26, 50)


def derive(folder: Path, *, shift: timedelta, orbit: int, relative_orbit: int, burst_ids: int | None = None) -> Path:
    """A copy of the real zip as another acquisition: name, manifest times and orbit numbers rewritten.

    ``burst_ids``: when given, the manifest says IPF 003.40 and each annotation burst gets
    ``<burstId absolute="...">burst_ids + k</burstId>`` (k = burst index)."""
    fmt = "%Y%m%dT%H%M%S"
    name = (f"S1B_IW_SLC__1SDV_{(T_START + shift):{fmt}}_{(T_STOP + shift):{fmt}}_{orbit:06d}_032297_EFA4")
    out = folder / f"{name}.zip"
    folder.mkdir(parents=True, exist_ok=True)

    def retime(m: re.Match) -> str:
        t = datetime.fromisoformat(m[2]) + shift
        return f"{m[1]}{t.isoformat(timespec='microseconds')}{m[3]}"

    with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            member = info.filename.replace(NAME, name)
            if member.endswith("manifest.safe"):
                text = data.decode()
                text = re.sub(r"(<safe:(?:startTime|stopTime)>)([^<]+)(</safe:)", retime, text)
                text = re.sub(r'(<safe:orbitNumber type="(?:start|stop)">)\d+', rf"\g<1>{orbit}", text)
                text = re.sub(r'(<safe:relativeOrbitNumber type="(?:start|stop)">)\d+', rf"\g<1>{relative_orbit}",
                              text)
                if burst_ids is not None:
                    text = text.replace('version="003.31"', 'version="003.40"')
                data = text.encode()
            elif burst_ids is not None and re.search(r"annotation/s1b-iw\d-slc-.*\.xml$", member):
                counter = iter(range(10_000))
                data = re.sub(rb"(<azimuthAnxTime>[^<]+</azimuthAnxTime>)",
                              lambda m: m[1] + b'<burstId absolute="%d">%d</burstId>' % (
                                  (k := next(counter)) + 9_000_000, burst_ids + k), data)
            dst.writestr(member, data)
    return out


@pytest.fixture
def folder(tmp_path) -> Path:
    """The real product, the same track 12 days later, and another track (relative orbit 169) that day."""
    s1 = tmp_path / "slc"
    s1.mkdir()
    shutil.copy(ZIP, s1 / ZIP.name)
    derive(s1, shift=timedelta(days=12), orbit=26269 + 175, relative_orbit=168)
    derive(s1, shift=timedelta(days=12, minutes=99), orbit=26269 + 176, relative_orbit=169)
    return s1


@pytest.fixture
def counted(monkeypatch):
    """Count the product reads of scan_s1_slc (the real reader still runs)."""
    return counting(monkeypatch, s1slc, "_read_slc_record")


def test_identify_real_product(tmp_path):
    s1 = tmp_path / "slc"
    s1.mkdir()
    shutil.copy(ZIP, s1 / ZIP.name)
    scenes, skipped = scan_s1_slc(s1, tmp_path / "cache.json")
    assert list(scenes.columns) == SLC_COLUMNS and skipped.empty
    row = scenes.iloc[0]
    assert (row.scene, row.platform, row.relative_orbit, row["pass"]) == (NAME, "S1B", 168, "DESCENDING")
    assert row.polarisations == "VV+VH"
    assert row.start.startswith("2021-04-01T05:26:22") and row.stop.startswith("2021-04-01T05:26:50")
    assert row.ipf_version == pytest.approx(3.31)
    with zipfile.ZipFile(ZIP) as zf:
        manifest = zf.read(f"{NAME}.SAFE/manifest.safe")
    assert row.checksum == hashlib.sha256(manifest).hexdigest()
    assert row["size"] == ZIP.stat().st_size
    footprint = shapely.from_wkt(row.footprint)
    assert footprint.contains(shapely.Point(10.6, 46.55))  # the manifest's quadrilateral over the Alps
    assert (row.west, row.south, row.east, row.north) == pytest.approx((8.766076, 45.526531, 12.466462, 47.59214))
    ids = json.loads(row.burst_ids)
    assert sorted(ids) == ["IW1", "IW2"] and len(ids["IW1"]) == 9  # IPF 3.31: azimuth-ANX times
    assert ids["IW1"][0] == pytest.approx(2188.572167)


def test_scan_identifies_unpacked_safe_folder(tmp_path):
    s1 = tmp_path / "slc"
    s1.mkdir()
    with zipfile.ZipFile(ZIP) as zf:
        zf.extractall(s1)
    scenes, skipped = scan_s1_slc(s1, tmp_path / "cache.json")
    assert scenes["scene"].tolist() == [NAME] and skipped.empty
    assert scenes.loc[0, "path"] == str(s1 / f"{NAME}.SAFE")


def test_corrupt_and_truncated_zips_are_skipped_with_reason(folder, tmp_path):
    bad = "S1B_IW_SLC__1SDV_20210425T052622_20210425T052650_026619_032297_EFA4.zip"
    (folder / bad).write_bytes(ZIP.read_bytes()[: ZIP.stat().st_size // 3])
    garbage = "S1B_IW_SLC__1SDV_20210507T052622_20210507T052650_026794_032297_EFA4.zip"
    (folder / garbage).write_bytes(b"PK\x03\x04" + bytes(5000))
    liar = derive(folder, shift=timedelta(days=48), orbit=26269 + 700, relative_orbit=100)
    scenes, skipped = scan_s1_slc(folder, tmp_path / "cache.json")
    assert len(scenes) == 3  # the readable products still processed
    assert list(skipped.columns) == SKIPPED_COLUMNS
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert sorted(reasons) == sorted([str(folder / bad), str(folder / garbage), str(liar)])
    assert "truncated or corrupt" in reasons[str(folder / bad)]
    assert "truncated or corrupt" in reasons[str(folder / garbage)]
    assert "relative orbit 100 disagrees" in reasons[str(liar)]  # manifest and name inconsistent


def test_second_scan_uses_cache(folder, tmp_path, counted):
    cache = tmp_path / "cache.json"
    (folder / "S1B_IW_SLC__1SDV_20210425T052622_20210425T052650_026619_032297_EFA4.zip").write_bytes(b"junk")
    first = scan_s1_slc(folder, cache)
    assert len(counted) == 4
    counted.clear()
    second = scan_s1_slc(folder, cache)
    assert counted == []  # nothing read again, skipped product included
    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])
    derive(folder, shift=timedelta(days=24), orbit=26269 + 350, relative_orbit=168)
    third, _ = scan_s1_slc(folder, cache)
    assert len(counted) == 1 and len(third) == 4


def test_pairs_same_track_and_cross_track_error(folder, tmp_path):
    scenes, _ = scan_s1_slc(folder, tmp_path / "cache.json")
    assert sorted(scenes["relative_orbit"]) == [168, 168, 169]
    pairs = slc_pairs(scenes)
    assert list(pairs.columns) == SLC_PAIR_COLUMNS
    assert pairs["pair"].tolist() == ["R168_20210401_20210413"]
    pair = pairs.iloc[0]
    assert pair.reference == NAME and pair.secondary.startswith("S1B_IW_SLC__1SDV_20210413T052622")
    assert pair.days == pytest.approx(12.0)
    bursts = json.loads(pair.bursts)
    assert [m[1:] for m in bursts["IW1"]] == [[i, i] for i in range(9)]  # same bursts on both dates
    by_scene = scenes.set_index("scene", drop=False)
    other = scenes[scenes["relative_orbit"] == 169].iloc[0]
    with pytest.raises(ValueError, match="different tracks") as err:
        slc_pair(by_scene.loc[NAME], other)
    assert NAME in str(err.value) and other.scene in str(err.value)
    with pytest.raises(ValueError, match=other.scene):
        common_bursts(other, by_scene.loc[NAME])


def test_gap_rules(folder, tmp_path):
    derive(folder, shift=timedelta(days=36), orbit=26269 + 525, relative_orbit=168)
    scenes, _ = scan_s1_slc(folder, tmp_path / "cache.json")
    assert slc_pairs(scenes)["pair"].tolist() == ["R168_20210401_20210413"]  # 24 days > max_gap_days
    assert slc_pairs(scenes, max_gap_days=24)["pair"].tolist() == ["R168_20210401_20210413",
                                                                    "R168_20210413_20210507"]
    shifted = scenes.copy()
    shifted.loc[shifted["start"].str.startswith("2021-04-13"), "start"] = "2021-04-13T08:26:22.396+00:00"
    assert slc_pairs(shifted).empty  # 12 d + 3 h is no repeat pass at 1 h tolerance
    assert slc_pairs(shifted, tolerance_hours=4)["pair"].tolist() == ["R168_20210401_20210413"]


def test_burst_ids_matched_by_id_from_ipf_340(tmp_path):
    s1 = tmp_path / "slc"
    derive(s1, shift=timedelta(0), orbit=26269, relative_orbit=168, burst_ids=500)
    derive(s1, shift=timedelta(days=12), orbit=26269 + 175, relative_orbit=168, burst_ids=502)
    scenes, skipped = scan_s1_slc(s1, tmp_path / "cache.json")
    assert skipped.empty and scenes["ipf_version"].tolist() == [3.4, 3.4]
    assert json.loads(scenes.loc[0, "burst_ids"])["IW1"] == list(range(500, 509))
    matches = common_bursts(scenes.iloc[0], scenes.iloc[1])
    assert [tuple(m) for m in matches["IW1"]] == [(500 + k, k, k - 2) for k in range(2, 9)]


def test_aoi_coverage_far_aoi_and_partial_tile(folder, tmp_path):
    scenes, _ = scan_s1_slc(folder, tmp_path / "cache.json")
    one = scenes[scenes["scene"] == NAME]
    far = shapely.box(126.0, 47.5, 126.5, 48.0)  # Heilongjiang
    coverage, skipped = aoi_coverage(one, far, _tiles())
    assert coverage.empty and list(coverage.columns) == COVERAGE_COLUMNS
    assert skipped.to_dict("records") == [{"scene": NAME, "path": one.iloc[0]["path"],
                                           "reason": "does not touch the AOI"}]
    tiles = _tiles()
    aoi = shapely.box(*tiles.to_crs("EPSG:4326").total_bounds)
    coverage, skipped = aoi_coverage(one, aoi, tiles)
    assert skipped.empty
    got = dict(zip(coverage["tile"], coverage["coverage"]))
    assert got["inside"] == pytest.approx(1.0)
    assert 0.3 < got["edge"] < 0.7  # centred on the footprint's eastern edge


def _tiles() -> gpd.GeoDataFrame:
    """A 10 km tile well inside the footprint and one centred on its eastern edge (UTM 32N)."""
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    edge = to_utm.transform((11.986685 + 12.466462) / 2, (45.526531 + 47.199459) / 2)
    inside = to_utm.transform(10.6, 46.55)
    boxes = [shapely.box(x - 5000, y - 5000, x + 5000, y + 5000) for x, y in (inside, edge)]
    return gpd.GeoDataFrame({"tile_id": ["inside", "edge"]}, geometry=boxes, crs="EPSG:32632")
