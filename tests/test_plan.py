"""The DAG plan: grid and tiles from the AOI, seam inventories, which products feed which tile, target dates."""

import copy
from datetime import datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pytest
import shapely

from cropflow.grid import ProjectGrid
import json

import pandas as pd

from cropflow.plan import (OUTSIDE_AOI, acquisition_slices, aggregate_slice_pairs, as_days, build_plan, layer_products,
                           pair_slices, scene_path)
from cropflow.raster import write_raster
from cropflow.simulate.sentinel2 import write_l2a
from cropflow.stack import regular_dates

UTM52 = "EPSG:32652"
AOI = (320000.0, 5330000.0, 322000.0, 5332000.0)  # 2 x 2 km: four 1 km tiles
GRID = ProjectGrid(UTM52, 10.0, AOI)
TILES = ["E0320000N5330000", "E0320000N5331000", "E0321000N5330000", "E0321000N5331000"]
S2_TILE = "E0320000N5330000"


def s1a_relative_orbit(absolute: int) -> int:
    """Sentinel-1A: relative = (absolute - 73) % 175 + 1."""
    return (absolute - 73) % 175 + 1


def s1_scene(start: datetime, absolute: int, datatake: str, crc: str) -> str:
    stop = start.replace(second=start.second + 27)
    return f"S1A_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{absolute:06d}_{datatake}_{crc}"


T1 = datetime(2023, 5, 8, 9, 45, 12, tzinfo=timezone.utc)
T2 = datetime(2023, 5, 20, 9, 45, 13, tzinfo=timezone.utc)
ORBIT1 = 48404
ORBIT2 = ORBIT1 + 175  # one 12-day repeat cycle later: same relative orbit
SCENE1 = s1_scene(T1, ORBIT1, "05D2C4", "3F1A")
SCENE2 = s1_scene(T2, ORBIT2, "05D8F0", "1B2C")
REL = s1a_relative_orbit(ORBIT1)
PAIR = f"R{REL:03d}_20230508_20230520"
ACQ1, ACQ2 = f"S1A_20230508_R{REL:03d}_05D2C4", f"S1A_20230520_R{REL:03d}_05D8F0"
LAYER = "S2A_20230512_R089"


def write_s1_seam(folder):
    folder.mkdir()
    c2 = np.full((4, *GRID.shape), 0.02, np.float32)
    for scene, start in ((SCENE1, T1), (SCENE2, T2)):
        write_raster(folder / f"{scene}_C2.tif", c2, GRID, nodata=np.nan,
                     band_names=["C11", "C22", "C12_real", "C12_imag"],
                     tags={"SCENE": scene, "PLATFORM": "S1A", "RELATIVE_ORBIT": REL, "PASS": "ASCENDING",
                           "START_TIME": start.isoformat().replace("+00:00", "Z")})
    write_raster(folder / f"{PAIR}_coh.tif", np.full((2, *GRID.shape), 0.5, np.float32), GRID, nodata=np.nan,
                 band_names=["coh_vv", "coh_vh"],
                 tags={"REFERENCE": SCENE1, "SECONDARY": SCENE2, "RELATIVE_ORBIT": REL})


def write_s2(folder, when: datetime, grid10: ProjectGrid, tile: str = "52UCU"):
    h, w = grid10.shape
    return write_l2a(folder, platform="S2A", sensing_time=when, mgrs_tile=tile, relative_orbit=89,
                     baseline="05.09", grid10=grid10, reflectance={"B04": np.full((h, w), 0.1)},
                     scl=np.full((h // 2, w // 2), 4, np.uint8))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    gpd.GeoDataFrame({"name": ["aoi"]}, geometry=[shapely.box(*AOI)], crs=UTM52).to_file(
        root / "aoi.geojson", driver="GeoJSON")
    write_s1_seam(root / "s1")
    (root / "s2").mkdir()
    # inside one tile
    inside = ProjectGrid(UTM52, 10.0, (320200.0, 5330200.0, 320800.0, 5330800.0))
    may = write_s2(root / "s2", datetime(2023, 5, 12, 2, 35, 51, tzinfo=timezone.utc), inside)
    october = write_s2(root / "s2", datetime(2023, 10, 5, 2, 35, 51, tzinfo=timezone.utc), GRID)  # out of season
    # an MGRS tile 50 km from the AOI: in season, but its footprint misses the AOI
    away = write_s2(root / "s2", datetime(2023, 6, 1, 2, 35, 51, tzinfo=timezone.utc),
                    ProjectGrid(UTM52, 10.0, (370000.0, 5330000.0, 371200.0, 5331200.0)), tile="52UDU")
    config = {
        "aoi": str(root / "aoi.geojson"), "crs": "EPSG:32652", "resolution": 10,
        "season": {"start": "05-06", "end": "09-27"},
        "inputs": {"s1": str(root / "s1"), "s2": str(root / "s2"), "cache": str(root / "cache.json")},
        "grid": {"tile_size": 1000},
        "s1": {"engine": "preprocessed"},
        "stack": {"time_axis": "regular", "step_days": 12, "mode": "chronological"},
    }
    return {"config": config, "may": may, "october": october, "away": away}


@pytest.fixture
def config(setup):
    return copy.deepcopy(setup["config"])


def variant(config, **changes) -> dict:
    out = copy.deepcopy(config)
    for path, value in changes.items():
        section, _, key = path.rpartition("__")
        (out[section] if section else out)[key] = value
    return out


def test_grid_and_tiles(config):
    plan = build_plan(config)
    assert plan.grid == GRID
    assert plan.tile_ids == TILES
    assert build_plan(variant(config, crs="auto")).grid == GRID  # UTM zone of the AOI's centroid


def test_inventories_and_season_filtering(config, setup):
    plan = build_plan(config)
    assert plan.s1_scenes["scene"].tolist() == [SCENE1, SCENE2]
    assert plan.s1_scenes["relative_orbit"].tolist() == [32, 32]
    assert plan.s1_pairs["pair"].tolist() == ["R032_20230508_20230520"]
    may = setup["may"].name.removesuffix(".SAFE")
    assert setup["october"].exists()
    assert plan.s2_scenes["scene"].tolist() == [may]  # the October product is out of season
    assert scene_path(plan.s2_scenes, "scene", may) == str(setup["may"])
    with pytest.raises(KeyError, match="not in the inventory"):
        scene_path(plan.s2_scenes, "scene", "S2B_nothing")
    late = build_plan(variant(config, season__start="05-10"))
    assert late.s1_scenes["scene"].tolist() == [SCENE2]
    assert late.s1_pairs.empty  # its reference scene is out of season
    assert all(late.tile_inputs[t]["coh"] == [] for t in TILES)
    assert all(late.tile_inputs[t]["s1"] == [ACQ2] for t in TILES)
    assert late.s2_scenes["scene"].tolist() == [may]


def test_tile_inputs(config, setup):
    plan = build_plan(config)
    may = setup["may"].name.removesuffix(".SAFE")
    assert set(plan.tile_inputs) == set(TILES)
    for tile in TILES:
        assert plan.tile_inputs[tile]["s1"] == [ACQ1, ACQ2]  # the S1 rasters cover the whole AOI
        assert plan.tile_inputs[tile]["coh"] == [PAIR]
        # a layer covering one tile feeds only that tile
        assert plan.tile_inputs[tile]["s2"] == ([LAYER] if tile == S2_TILE else [])
    assert layer_products(plan, LAYER) == [may]
    assert acquisition_slices(plan, ACQ1) == [SCENE1]


def test_blocks_group_the_tiles_of_block_tiles_squares(config):
    """One block per tile by default (the block is the tile); with grid.block_tiles 2 each block holds the
    tiles of its 2 x 2 square of the lattice, every tile in exactly one block."""
    plan = build_plan(config)
    assert plan.blocks == {t: [t] for t in TILES} and plan.tile_block == {t: t for t in TILES}
    two = build_plan(variant(config, grid__block_tiles=2))
    assert sorted(t for tiles in two.blocks.values() for t in tiles) == sorted(TILES)
    assert len(two.blocks) < len(TILES)
    for block, tiles in two.blocks.items():
        assert block.endswith("x2") and all(two.tile_block[t] == block for t in tiles)


def test_regular_target_dates(config):
    plan = build_plan(config)
    expected = [str(d) for d in regular_dates(2023, "05-06", "09-27", 12)]
    assert len(expected) == 13 and expected[0] == "2023-05-06" and expected[-1] == "2023-09-27"
    assert plan.target_dates == {"s1": expected, "coh": expected, "s2": expected}
    six = build_plan(variant(config, stack__step_days=6))
    assert six.target_dates["s2"][:3] == ["2023-05-06", "2023-05-12", "2023-05-18"]
    np.testing.assert_array_equal(as_days(expected[:2]), np.array(["2023-05-06", "2023-05-18"], "datetime64[D]"))


def test_acquisition_target_dates_chronological_union(config):
    plan = build_plan(variant(config, stack__time_axis="acquisitions"))
    union = ["2023-05-08", "2023-05-12", "2023-05-20"]
    assert plan.target_dates == {"s1": union, "coh": union, "s2": union}


def test_acquisition_target_dates_separate_per_source(config):
    plan = build_plan(variant(config, stack__time_axis="acquisitions", stack__mode="separate"))
    assert plan.target_dates == {"s1": ["2023-05-08", "2023-05-20"], "coh": ["2023-05-20"],  # at the secondary
                                 "s2": ["2023-05-12"]}


def test_engine_that_does_not_match_the_s1_folder_is_an_error_naming_the_key(config):
    """Seam products with an SLC engine would otherwise yield no S1 data at all: the plan stops instead."""
    native = copy.deepcopy(config)
    native["s1"] = {"engine": "native", "pairs": {"max_gap_days": 12, "tolerance_hours": 1.0}}
    with pytest.raises(ValueError, match="s1.engine: preprocessed"):
        build_plan(native)


def test_l1c_is_planned_with_its_level_and_the_prefer_switch(tmp_path, config):
    """An L1C-only acquisition is planned (level L1C, routed through Sen2Cor by the rules) and feeds the tiles
    its footprint overlaps; with both levels of one acquisition, s2.prefer picks the planned one."""
    from s2_products import make_l1c, make_l2a

    s2 = tmp_path / "s2"
    grid60 = ProjectGrid(UTM52, 10.0, (320220.0, 5330220.0, 320760.0, 5330760.0))  # inside one tile
    when = datetime(2023, 6, 1, 2, 35, 51, tzinfo=timezone.utc)
    l1c = make_l1c(s2, grid=grid60, sensing_time=when).name.removesuffix(".SAFE")
    cfg = variant(config, inputs__s2=str(s2), inputs__cache=str(tmp_path / "cache.json"))
    plan = build_plan(cfg)
    assert plan.s2_scenes[["scene", "level"]].values.tolist() == [[l1c, "L1C"]]
    layer = plan.s2_scenes["layer"].iloc[0]
    assert layer_products(plan, layer) == [l1c]
    assert [t for t in TILES if plan.tile_inputs[t]["s2"] == [layer]] == [S2_TILE]
    l2a = make_l2a(s2, grid=grid60, sensing_time=when).name.removesuffix(".SAFE")
    assert build_plan(cfg).s2_scenes["scene"].tolist() == [l2a]
    by_l1c = build_plan(variant(cfg, s2={"prefer": "l1c"}))
    assert by_l1c.s2_scenes["scene"].tolist() == [l1c]
    assert by_l1c.skipped.set_index("scene").loc[l2a, "sensor"] == "S2"
def test_product_missing_the_aoi_gets_no_job_and_is_listed(config, setup):
    plan = build_plan(config)
    away = setup["away"].name.removesuffix(".SAFE")
    assert away not in set(plan.s2_scenes["scene"])
    assert all(away not in json.loads(p) for p in plan.s2_layers["products"])
    row = plan.skipped.set_index("scene").loc[away]
    assert (row["sensor"], row["stage"], row["reason"]) == ("S2", "inventory", OUTSIDE_AOI)
    assert row["path"] == str(setup["away"])


def test_out_of_season_products_are_listed_with_the_season(config, setup):
    plan = build_plan(variant(config, season__start="05-10"))
    skipped = plan.skipped.set_index("scene")["reason"]
    october = setup["october"].name.removesuffix(".SAFE")
    assert skipped[october] == "acquired 2023-10-05, outside the season 05-10..09-27"
    assert skipped[SCENE1] == "acquired 2023-05-08, outside the season 05-10..09-27"
    assert plan.skipped.set_index("scene").loc[SCENE1, "sensor"] == "S1"


def test_inventory_drops_recorded_by_scan_s2_are_listed(config, setup, monkeypatch):
    from cropflow import inventory

    scan = inventory.scan_s2

    def with_drops(folder, cache, **options):
        df = scan(folder, cache, **options)
        df.attrs["skipped"] = [{"product": "S2A_MSIL2A_20230512T023551_N0400_R089_T52UCU_20230512T040000",
                                "reason": "processing baseline 04.00 is older than 05.09"}]
        return df

    monkeypatch.setattr(inventory, "scan_s2", with_drops)
    plan = build_plan(config)
    row = plan.skipped.set_index("scene").loc["S2A_MSIL2A_20230512T023551_N0400_R089_T52UCU_20230512T040000"]
    assert row["reason"] == "processing baseline 04.00 is older than 05.09" and row["sensor"] == "S2"


def test_adjacent_mgrs_tiles_of_one_date_are_one_layer(tmp_path, config):
    """Two products of one datatake (52UBU west, 52UCU east of x 321 km) form one layer feeding every tile."""
    s2 = tmp_path / "s2"
    s2.mkdir()
    when = datetime(2023, 5, 12, 2, 35, 51, tzinfo=timezone.utc)
    west = write_s2(s2, when, ProjectGrid(UTM52, 10.0, (320000.0, 5330000.0, 321200.0, 5332000.0)), "52UBU")
    east = write_s2(s2, when, ProjectGrid(UTM52, 10.0, (320800.0, 5330000.0, 322000.0, 5332000.0)), "52UCU")
    cfg = variant(config, inputs__s2=str(s2), inputs__cache=str(tmp_path / "cache.json"))
    plan = build_plan(cfg)
    assert list(plan.s2_layers["layer"]) == [LAYER]
    assert layer_products(plan, LAYER) == sorted([west.name.removesuffix(".SAFE"), east.name.removesuffix(".SAFE")])
    assert json.loads(plan.s2_layers["mgrs_tiles"].iloc[0]) == ["52UBU", "52UCU"]
    assert all(plan.tile_inputs[t]["s2"] == [LAYER] for t in TILES)
    assert set(plan.s2_scenes["layer"]) == {LAYER}


def test_all_slice_pairs_of_a_pair_are_kept():
    box = "POLYGON ((126 48, 127 48, 127 49, 126 49, 126 48))"
    south = "POLYGON ((126 47, 127 47, 127 48.1, 126 48.1, 126 47))"
    scenes = pd.DataFrame({"scene": ["r1", "r2", "s1", "s2"], "footprint": [box, south, box, south]})
    pairs = pd.DataFrame({"pair": [PAIR, PAIR], "reference": ["r1", "r2"], "secondary": ["s1", "s2"],
                          "start_sec": ["2023-05-20T09:45:13", "2023-05-20T09:45:40"]})
    out = aggregate_slice_pairs(pairs, scenes)
    assert len(out) == 1
    assert json.loads(out["slice_pairs"].iloc[0]) == [["r1", "s1"], ["r2", "s2"]]
    assert shapely.from_wkt(out["footprint"].iloc[0]).bounds == (126.0, 47.0, 127.0, 49.0)
    assert out["datetime_sec"].iloc[0] == "2023-05-20T09:45:13"


def test_seam_pairs_have_one_slice_pair(config):
    plan = build_plan(config)
    assert pair_slices(plan, PAIR) == [(SCENE1, SCENE2)]


def test_missing_slice_in_a_pass_is_logged_and_the_acquisition_made_of_the_others(tmp_path, config, caplog):
    """Seam C2 of slices 1 and 3 of one datatake (slice 2 missing): one acquisition of two slices, a warning."""
    import logging

    s1 = tmp_path / "s1"
    s1.mkdir()
    c2 = np.full((4, *GRID.shape), 0.02, np.float32)
    first, third = T1, T1 + timedelta(seconds=54)
    names = []
    for start in (first, third):
        name = s1_scene(start, ORBIT1, "05D2C4", "3F1A")
        names.append(name)
        write_raster(s1 / f"{name}_C2.tif", c2, GRID, nodata=np.nan, band_names=["C11", "C22", "C12_real", "C12_imag"],
                     tags={"SCENE": name, "PLATFORM": "S1A", "RELATIVE_ORBIT": REL, "PASS": "ASCENDING",
                           "START_TIME": start.isoformat().replace("+00:00", "Z")})
    cfg = variant(config, inputs__s1=str(s1), inputs__cache=str(tmp_path / "cache.json"))
    with caplog.at_level(logging.WARNING, logger="cropflow.layers"):
        plan = build_plan(cfg)
    assert list(plan.s1_acquisitions["acq"]) == [ACQ1]
    assert acquisition_slices(plan, ACQ1) == names
    assert all(plan.tile_inputs[t]["s1"] == [ACQ1] for t in TILES)
    assert any(ACQ1 in r.getMessage() and "a slice is missing" in r.getMessage() for r in caplog.records)
