"""Scene inventories: S2 product scan (both levels) with its cache, baseline dedup, the level switch, the skipped
products, the S1 seam scan and pair checks."""

import hashlib
import json
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import counting
from cropflow import inventory
from cropflow.grid import ProjectGrid
from cropflow.inventory import (
    S1_PAIR_COLUMNS,
    S1_SCENE_COLUMNS,
    S2_COLUMNS,
    expected_pairs,
    footprints_in_crs,
    in_season,
    scan_s1_seam,
    scan_s2,
    scenes_for_tile,
    scenes_for_tiles,
    write_inventory,
)
from cropflow.raster import write_raster
from cropflow.simulate.sentinel2 import write_l2a
from pyproj import Transformer
from s2_products import GRID60, make_l1c, make_l2a

GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5349800.0, 320200.0, 5350000.0))  # 20 x 20 px
T0 = datetime(2023, 5, 12, 2, 35, 51, tzinfo=timezone.utc)


def product(folder: Path, day: int = 0, baseline: str = "05.09", cloudy_rows: int = 0, **kw) -> Path:
    scl = np.full((10, 10), 4, np.uint8)
    scl[:cloudy_rows] = 9
    args = dict(platform="S2A", sensing_time=T0 + timedelta(days=day), mgrs_tile="52UCU", relative_orbit=89,
                baseline=baseline, grid10=GRID, reflectance={"B04": np.full((20, 20), 0.1)}, scl=scl)
    args.update(kw)
    return write_l2a(folder, **args)


@pytest.fixture
def counted(monkeypatch):
    """Count the product-metadata reads of scan_s2 (the real reader still runs)."""
    return counting(monkeypatch, inventory, "_read_s2_record")


def test_scan_finds_products_and_ignores_other_entries(tmp_path):
    s2 = tmp_path / "s2"
    a = product(s2, day=0)
    b = product(s2, day=10, zip=True, platform="S2B")
    (s2 / "README.txt").write_text("notes")
    (s2 / "scratch").mkdir()
    df = scan_s2(s2, tmp_path / "cache.json")
    assert list(df.columns) == S2_COLUMNS
    assert df["scene"].tolist() == [a.name.removesuffix(".SAFE"), b.name.removesuffix(".zip")]
    assert df["platform"].tolist() == ["S2A", "S2B"]
    assert df["datetime"].tolist() == ["2023-05-12T02:35:51.000+00:00", "2023-05-22T02:35:51.000+00:00"]
    assert df["path"].tolist() == [str(a), str(b)]
    assert df.loc[0, "checksum"] == hashlib.sha256((a / "MTD_MSIL2A.xml").read_bytes()).hexdigest()
    assert df.loc[1, "size"] == b.stat().st_size
    assert df.loc[0, "size"] == sum(p.stat().st_size for p in a.rglob("*") if p.is_file())
    lon, lat = Transformer.from_crs(GRID.crs, "EPSG:4326", always_xy=True).transform(320100, 5349900)
    row = df.iloc[0]
    assert row.west < lon < row.east and row.south < lat < row.north
    assert row.east - row.west < 0.01  # the 200 m product, not the world


def test_second_scan_reads_no_product_and_a_new_one_is_read_alone(tmp_path, counted):
    s2, cache = tmp_path / "s2", tmp_path / "cache" / "inventory.json"
    product(s2, day=0)
    product(s2, day=5, zip=True)
    first = scan_s2(s2, cache)
    assert len(counted) == 2 and json.loads(cache.read_text())["version"] == inventory._CACHE_VERSION
    counted.clear()
    second = scan_s2(s2, cache)
    assert counted == []
    pd.testing.assert_frame_equal(first, second)
    new = product(s2, day=10)
    third = scan_s2(s2, cache)
    assert counted == [new.name] and len(third) == 3


def test_changed_product_is_read_again(tmp_path, counted):
    s2, cache = tmp_path / "s2", tmp_path / "cache.json"
    zipped = product(s2, zip=True)
    before = scan_s2(s2, cache)
    counted.clear()
    product(s2, zip=True, cloudy_rows=5)  # same name, new content
    st = zipped.stat()
    os.utime(zipped, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # make sure the stamp moves
    after = scan_s2(s2, cache)
    assert counted == [zipped.name]
    assert after.loc[0, "checksum"] != before.loc[0, "checksum"]
    counted.clear()
    folder = product(s2, day=3)
    scan_s2(s2, cache)
    counted.clear()
    mtd = folder / "MTD_MSIL2A.xml"
    mtd.write_bytes(mtd.read_bytes() + b"\n")
    scan_s2(s2, cache)
    assert counted == [folder.name]


def test_same_acquisition_keeps_the_newest_baseline(tmp_path, caplog):
    s2 = tmp_path / "s2"
    old = product(s2, baseline="04.00")
    new = product(s2, baseline="05.09")
    other = product(s2, day=5, baseline="04.00")
    with caplog.at_level(logging.WARNING, logger="cropflow.inventory"):
        df = scan_s2(s2, tmp_path / "cache.json")
    assert df["scene"].tolist() == [new.name.removesuffix(".SAFE"), other.name.removesuffix(".SAFE")]
    assert df["baseline"].tolist() == ["05.09", "04.00"]
    assert any(old.name.removesuffix(".SAFE") in r.message for r in caplog.records)
    assert df.attrs["skipped"] == [{"product": old.name.removesuffix(".SAFE"),
                                    "reason": f"processing baseline 04.00 is older than 05.09 of "
                                              f"{new.name.removesuffix('.SAFE')}"}]
    # the table the other stages read keeps the record through the season filter
    assert in_season(df, "05-01", "09-30").attrs["skipped"] == df.attrs["skipped"]


def test_l1c_same_acquisition_keeps_the_newest_baseline(tmp_path, caplog):
    s2 = tmp_path / "s2"
    old = make_l1c(s2, baseline="04.00")
    new = make_l1c(s2, baseline="05.09", zip=True)
    with caplog.at_level(logging.WARNING, logger="cropflow.inventory"):
        df = scan_s2(s2, tmp_path / "cache.json", prefer="l1c")
    assert df["scene"].tolist() == [new.name.removesuffix(".zip")] and df["level"].tolist() == ["L1C"]
    (skip,) = df.attrs["skipped"]
    assert skip["product"] == old.name.removesuffix(".SAFE")
    assert skip["reason"].startswith("processing baseline 04.00 is older than 05.09 of S2A_MSIL1C_")
    assert any("04.00 is older" in r.message and r.levelno == logging.WARNING for r in caplog.records)


def test_local_sen2cor_baseline_never_replaces_an_official_one(tmp_path):
    s2 = tmp_path / "s2"
    esa = product(s2, baseline="05.09")
    local = product(s2, baseline="99.99", generation_time=T0 + timedelta(days=900))
    df = scan_s2(s2, tmp_path / "cache.json")
    assert df["scene"].tolist() == [esa.name.removesuffix(".SAFE")]
    assert df.attrs["skipped"][0]["product"] == local.name.removesuffix(".SAFE")
    assert "99.99 is older than 05.09" in df.attrs["skipped"][0]["reason"]


def test_scan_lists_l1c_and_l2a_with_their_level(tmp_path):
    s2 = tmp_path / "s2"
    l1c = make_l1c(s2)                                   # an L1C-only acquisition is kept, never skipped
    l2a = make_l2a(s2, sensing_time=T0 + timedelta(days=5))
    df = scan_s2(s2, tmp_path / "cache.json")
    assert df["scene"].tolist() == [l1c.name.removesuffix(".SAFE"), l2a.name.removesuffix(".SAFE")]
    assert df["level"].tolist() == ["L1C", "L2A"]
    assert df["cloud_l1c"].tolist() == [str(l1c), ""]
    assert df.loc[0, "checksum"] == hashlib.sha256((l1c / "MTD_MSIL1C.xml").read_bytes()).hexdigest()
    footprint = shapely.from_wkt(df.loc[0, "footprint"])
    x, y = Transformer.from_crs("EPSG:4326", GRID60.crs, always_xy=True).transform(footprint.centroid.x,
                                                                                  footprint.centroid.y)
    assert GRID60.bounds[0] < x < GRID60.bounds[2] and GRID60.bounds[1] < y < GRID60.bounds[3]
    assert df.attrs["skipped"] == []


def test_prefer_switch_picks_the_level_and_lists_the_other(tmp_path):
    s2 = tmp_path / "s2"
    l1c, l2a = make_l1c(s2), make_l2a(s2)
    l1c_id, l2a_id = l1c.name.removesuffix(".SAFE"), l2a.name.removesuffix(".SAFE")
    by_l2a = scan_s2(s2, tmp_path / "cache.json")
    assert by_l2a["scene"].tolist() == [l2a_id] and by_l2a["cloud_l1c"].tolist() == [""]
    assert by_l2a.attrs["skipped"] == [{"product": l1c_id, "reason": f"its Level-2A {l2a_id} is used "
                                                                      f"(s2.prefer: l2a)"}]
    by_l1c = scan_s2(s2, tmp_path / "cache.json", prefer="l1c")
    assert by_l1c["scene"].tolist() == [l1c_id] and by_l1c["level"].tolist() == ["L1C"]
    assert by_l1c.attrs["skipped"] == [{"product": l2a_id, "reason": f"its Level-1C {l1c_id} is corrected with "
                                                                      f"Sen2Cor instead (s2.prefer: l1c)"}]
    masks = scan_s2(s2, tmp_path / "cache.json", clouds_need_l1c=True)  # s2cloudless reads the L1C twin
    assert masks["scene"].tolist() == [l2a_id] and masks["cloud_l1c"].tolist() == [str(l1c)]
    assert masks.attrs["skipped"] == []
    with pytest.raises(ValueError, match="s2.prefer 'l3'"):
        scan_s2(s2, tmp_path / "cache.json", prefer="l3")


def test_old_long_names_are_skipped_with_a_reason(tmp_path):
    s2 = tmp_path / "s2"
    product(s2)
    (s2 / "S2A_OPER_PRD_MSIL1C_PDMC_20160603T040142_R089_V20160602T023552_20160602T023552.SAFE").mkdir()
    (s2 / "notes.zip").write_bytes(b"")
    df = scan_s2(s2, tmp_path / "cache.json")
    assert len(df) == 1
    (skip,) = df.attrs["skipped"]
    assert skip["product"].startswith("S2A_OPER_PRD_MSIL1C") and "compact naming" in skip["reason"]


def test_cache_stamp_uses_the_level_metadata_file(tmp_path, counted):
    s2, cache = tmp_path / "s2", tmp_path / "cache.json"
    l1c = make_l1c(s2)
    scan_s2(s2, cache)
    counted.clear()
    scan_s2(s2, cache)
    assert counted == []
    mtd = l1c / "MTD_MSIL1C.xml"
    mtd.write_bytes(mtd.read_bytes() + b"\n")
    scan_s2(s2, cache)
    assert counted == [l1c.name]


def test_unreadable_product_raises_naming_it(tmp_path):
    s2 = tmp_path / "s2"
    product(s2)
    broken = s2 / "S2B_MSIL2A_20230601T023551_N0509_R089_T52UCU_20230601T053551.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=broken.name):
        scan_s2(s2, tmp_path / "cache.json")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="inputs.s2"):
        scan_s2(tmp_path / "nowhere", tmp_path / "cache.json")


# ----------------------------------------------------------------------------------------------- S1 seam

S1_T0 = datetime(2023, 5, 8, 9, 45, 12, tzinfo=timezone.utc)
S1_ORBIT0 = 48404  # S1A relative orbit (48404 - 73) % 175 + 1 = 32


def s1_scene(k: int, platform: str = "S1A", slice_: int = 0) -> str:
    """The ``slice_``-th 27 s slice of the ``k``-th pass (12 days apart) of relative orbit 32."""
    start = S1_T0 + timedelta(days=12 * k, seconds=27 * slice_)
    stop = start + timedelta(seconds=27)
    return (f"{platform}_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{S1_ORBIT0 + 175 * k:06d}"
            f"_05D2C4_3F1A")


def write_s1(folder: Path, scenes: list[str], pairs: list[tuple[str, str, str]]) -> None:
    c2 = np.ones((4, GRID.height, GRID.width), np.float32)
    for scene in scenes:
        write_raster(folder / f"{scene}_C2.tif", c2, GRID, nodata=float("nan"),
                     band_names=["C11", "C22", "C12_real", "C12_imag"],
                     tags={"SCENE": scene, "PLATFORM": scene[:3], "RELATIVE_ORBIT": 32, "PASS": "DESCENDING",
                           "START_TIME": scene[17:32]})
    for pair, ref, sec in pairs:
        write_raster(folder / f"{pair}_coh.tif", c2[:2] * 0.5, GRID, nodata=float("nan"),
                     band_names=["coh_vv", "coh_vh"], tags={"REFERENCE": ref, "SECONDARY": sec, "RELATIVE_ORBIT": 32})


def test_s1_seam_scan_parses_scenes_and_pairs(tmp_path):
    folder = tmp_path / "s1"
    scenes = [s1_scene(k) for k in range(3)]
    write_s1(folder, scenes, [("R032_20230508_20230520", scenes[0], scenes[1]),
                              ("R032_20230520_20230601", scenes[1], scenes[2])])
    (folder / "notes.txt").write_text("x")
    sc, pr = scan_s1_seam(folder, tmp_path / "cache.json")
    assert list(sc.columns) == S1_SCENE_COLUMNS and list(pr.columns) == S1_PAIR_COLUMNS
    assert sc["scene"].tolist() == scenes
    assert sc["relative_orbit"].tolist() == [32, 32, 32] and set(sc["pass"]) == {"DESCENDING"}
    assert sc.loc[0, "datetime"] == "2023-05-08T09:45:12.000+00:00"
    assert pr["pair"].tolist() == ["R032_20230508_20230520", "R032_20230520_20230601"]
    assert pr.loc[0, "reference"] == scenes[0] and pr.loc[0, "datetime_sec"] == sc.loc[1, "datetime"]
    small = folder / f"{scenes[0]}_C2.tif"
    assert sc.loc[0, "checksum"] == hashlib.sha256(small.read_bytes()).hexdigest()
    assert (sc["west"] < sc["east"]).all()
    # the expected pairs of these scenes are exactly the pairs on disk
    assert expected_pairs(sc)["pair"].tolist() == pr["pair"].tolist()


def test_non_consecutive_pair_is_rejected(tmp_path):
    folder = tmp_path / "s1"
    scenes = [s1_scene(k) for k in range(3)]
    write_s1(folder, scenes, [("R032_20230508_20230601", scenes[0], scenes[2])])
    with pytest.raises(ValueError, match="R032_20230508_20230601_coh.tif.*not consecutive"):
        scan_s1_seam(folder, tmp_path / "cache.json")


def test_passes_cut_into_slices_pair_as_one_acquisition(tmp_path):
    """Two slices per pass: the pass is one acquisition; a pair's tags may name any slice of the two passes,
    and a pair joining passes that are not consecutive is still refused."""
    folder = tmp_path / "s1"
    passes = [[s1_scene(k, slice_=n) for n in range(2)] for k in range(3)]
    write_s1(folder, [s for slices in passes for s in slices],
             [("R032_20230508_20230520", passes[0][0], passes[1][0]),
              ("R032_20230520_20230601", passes[1][1], passes[2][1])])
    sc, pr = scan_s1_seam(folder, tmp_path / "cache.json")
    assert len(sc) == 6
    assert pr["pair"].tolist() == ["R032_20230508_20230520", "R032_20230520_20230601"]
    assert pr.loc[1, "reference"] == passes[1][1] and pr.loc[1, "datetime_sec"] == sc.loc[5, "datetime"]
    expected = expected_pairs(sc)
    assert expected[["pair", "reference", "secondary"]].values.tolist() == [
        ["R032_20230508_20230520", passes[0][0], passes[1][0]], ["R032_20230520_20230601", passes[1][0], passes[2][0]]]
    write_s1(folder, [], [("R032_20230508_20230601", passes[0][1], passes[2][0])])
    with pytest.raises(ValueError, match="R032_20230508_20230601_coh.tif.*not consecutive"):
        scan_s1_seam(folder, tmp_path / "cache.json")


def test_pair_of_an_absent_scene_is_rejected(tmp_path):
    folder = tmp_path / "s1"
    scenes = [s1_scene(k) for k in range(2)]
    write_s1(folder, scenes[:1], [("R032_20230508_20230520", scenes[0], scenes[1])])
    with pytest.raises(ValueError, match=f"secondary scene {scenes[1]} has no"):
        scan_s1_seam(folder, tmp_path / "cache.json")


def test_s1_tag_contradicting_the_name_is_rejected(tmp_path):
    folder = tmp_path / "s1"
    scene = s1_scene(0)
    write_raster(folder / f"{scene}_C2.tif", np.ones((1, 20, 20), np.float32), GRID,
                 tags={"RELATIVE_ORBIT": 33, "PASS": "DESCENDING"})
    with pytest.raises(ValueError, match="RELATIVE_ORBIT=33.*relative orbit 32"):
        scan_s1_seam(folder, tmp_path / "cache.json")


def test_expected_pairs_keep_platforms_and_tracks_apart():
    t = pd.Timestamp("2023-05-08T09:45:12Z")
    rows = [("a1", "S1A", 32, t), ("a2", "S1A", 32, t + pd.Timedelta(days=12)),
            ("a3", "S1A", 32, t + pd.Timedelta(days=36)),  # a gap: consecutive but 24 days
            ("b1", "S1B", 32, t + pd.Timedelta(days=6)), ("c1", "S1A", 134, t + pd.Timedelta(days=1)),
            ("c2", "S1A", 134, t + pd.Timedelta(days=13))]
    scenes = pd.DataFrame([{"scene": s, "platform": p, "relative_orbit": o, "datetime": d.isoformat()}
                           for s, p, o, d in rows])
    pairs = expected_pairs(scenes)
    assert pairs[["pair", "reference", "secondary"]].values.tolist() == [
        ["R032_20230508_20230520", "a1", "a2"], ["R134_20230509_20230521", "c1", "c2"]]
    assert len(expected_pairs(scenes, max_days=30)) == 3


def test_in_season_scenes_for_tile_and_csv(tmp_path):
    df = pd.DataFrame({"scene": ["x", "y", "z"],
                       "datetime": ["2023-05-05T02:00:00+00:00", "2023-05-06T23:00:00+00:00",
                                    "2024-09-27T01:00:00+00:00"],
                       "west": [126.0, 127.0, 128.0], "south": [48.0, 48.0, 48.0],
                       "east": [126.5, 127.5, 128.5], "north": [48.5, 48.5, 48.5]})
    assert in_season(df, "05-06", "09-27")["scene"].tolist() == ["y", "z"]
    assert in_season(df, "09-01", "05-05")["scene"].tolist() == ["x", "z"]  # over the new year
    with pytest.raises(ValueError, match="season.start"):
        in_season(df, "5-6", "09-27")
    df["footprint"] = [inventory.footprint_wkt("EPSG:4326", (w, s, e, n))
                       for w, s, e, n in df[["west", "south", "east", "north"]].to_numpy()]
    tile = shapely.box(127.2, 48.1, 128.2, 48.2)
    assert scenes_for_tile(df, tile, "EPSG:4326", 1e-6) == ["y", "z"]
    assert scenes_for_tile(df, shapely.box(126.5, 48.1, 127.0, 48.2), "EPSG:4326", 1e-6) == []  # edges touch
    out = tmp_path / "inv" / "scenes.csv"
    write_inventory(df, out)
    pd.testing.assert_frame_equal(pd.read_csv(out), df)


def test_product_exactly_on_a_tile_feeds_only_that_tile():
    """A UTM rectangle's lon/lat bounding box is larger than the rectangle: the footprint must not be."""
    utm = (320000.0, 5330000.0, 330000.0, 5340000.0)
    df = pd.DataFrame({"scene": ["p"], "footprint": [inventory.footprint_wkt("EPSG:32652", utm)]})
    assert scenes_for_tile(df, shapely.box(*utm), "EPSG:32652", 100.0) == ["p"]
    for neighbour in ((330000.0, 5330000.0, 340000.0, 5340000.0), (330000.0, 5340000.0, 340000.0, 5350000.0),
                      (310000.0, 5330000.0, 320000.0, 5340000.0)):
        assert scenes_for_tile(df, shapely.box(*neighbour), "EPSG:32652", 100.0) == []


def test_scenes_for_tiles_equals_a_per_tile_intersection():
    """The STRtree pass gives every tile the footprints a brute-force intersection gives it: tiles inside a
    footprint, on its edge, touching it only along an edge (not counted) and outside it."""
    import numpy as np
    import pyproj

    to_4326 = pyproj.Transformer.from_crs("EPSG:32652", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(12):
        x0, y0 = rng.uniform(300000, 360000), rng.uniform(5300000, 5360000)
        boxes.append(shapely.box(x0, y0, x0 + rng.uniform(5000, 40000), y0 + rng.uniform(5000, 40000)))
    boxes.append(shapely.box(320000, 5320000, 330000, 5330000))  # exactly one tile: its neighbours only touch
    wkts = [shapely.to_wkt(shapely.transform(b.segmentize(500.0), lambda xy: np.column_stack(
        to_4326.transform(xy[:, 0], xy[:, 1])))) for b in boxes]
    df = pd.DataFrame({"scene": [f"s{i:02d}" for i in range(len(boxes))], "footprint": wkts})
    tiles = [shapely.box(x, y, x + 10000, y + 10000)
             for x in range(290000, 410000, 10000) for y in range(5290000, 5410000, 10000)]
    got = scenes_for_tiles(df, tiles, "EPSG:32652", 100.0)
    projected = footprints_in_crs(df["footprint"], "EPSG:32652")
    for tile, ids in zip(tiles, got):
        expected = sorted(df.loc[shapely.area(shapely.intersection(projected, tile)) >= 100.0, "scene"])
        assert ids == expected
    assert sum(len(ids) for ids in got) > len(boxes), "footprints span several tiles"
    assert got[tiles.index(shapely.box(320000, 5320000, 330000, 5330000))].count("s12") == 1
    assert "s12" not in got[tiles.index(shapely.box(330000, 5320000, 340000, 5330000))]
