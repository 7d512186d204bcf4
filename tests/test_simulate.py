"""Tests of the demo-data simulator (cropflow.simulate) on small AOIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from cropflow.grid import ProjectGrid
from cropflow.inventory import scan_s1_seam
from cropflow.layers import group_s1_acquisitions, merge_s1_rasters
from cropflow.legend import Legend
from cropflow.raster import read_on_grid
from cropflow.s1 import (
    C2_BANDS,
    COHERENCE_BANDS,
    parse_pair_id,
    parse_scene_id,
    validate_c2,
    validate_coherence,
)
from cropflow.simulate import simulate
from cropflow.simulate.parcels import generate_landscape
from cropflow.simulate.scene import cloud_scene, mgrs_tile, s2_grid_for, s2_tile_extent, s2_tiles_for, smooth_noise
from cropflow.simulate.sentinel1 import (
    estimated_coherence,
    multilook_covariance,
    plan_acquisitions,
)

LEGEND = str(Path(__file__).parents[1] / "resources" / "legend.yaml")
#: 3 x 2 km in UTM 52N, inside the demo AOI
SMALL = (330000.0, 5340000.0, 333000.0, 5342000.0)
GRID = ProjectGrid("EPSG:32652", 10.0, SMALL)
CLOUD_THRESHOLD = 0.08
#: a narrow S2 margin keeps the products (and the test) small
OPTIONS = {"legend_path": LEGEND, "s2_margin": 300.0, "s1_format": "seam"}


def _aoi(path: Path, bounds: tuple[float, float, float, float]) -> str:
    gpd.GeoDataFrame(geometry=[shapely.box(*bounds)], crs="EPSG:32652").to_file(path, driver="GeoJSON")
    return str(path)


@pytest.fixture(scope="module")
def aoi_path(tmp_path_factory) -> str:
    return _aoi(tmp_path_factory.mktemp("aoi") / "aoi.geojson", SMALL)


@pytest.fixture(scope="module")
def run(tmp_path_factory, aoi_path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim_a")
    return out, simulate(aoi_path, out, **OPTIONS, seed=42)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _rasters(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.suffix in (".tif", ".jp2")}


def _band(safe: Path, band: str) -> Path:
    return next(safe.glob(f"GRANULE/*/IMG_DATA/R*m/*_{band}_*m.jp2"))


def _reflectance(path: Path, grid: ProjectGrid, resampling: str = "nearest") -> np.ndarray:
    return (read_on_grid(path, grid, resampling=resampling)[0] - 1000.0) / 10000.0


# ---------------------------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_products_and_another_seed_differs(run, aoi_path, tmp_path):
    out_a, _ = run
    out_b = tmp_path / "b"
    simulate(aoi_path, out_b, **OPTIONS, seed=42)
    files_a, files_b = _rasters(out_a), _rasters(out_b)
    assert files_a.keys() == files_b.keys() and len(files_a) > 60
    for name in files_a:
        assert np.array_equal(_read(files_a[name]), _read(files_b[name]), equal_nan=True), name
    pa, pb = gpd.read_file(out_a / "parcels.gpkg"), gpd.read_file(out_b / "parcels.gpkg")
    assert pa["crop"].tolist() == pb["crop"].tolist()
    assert shapely.equals_exact(pa.geometry.values, pb.geometry.values, tolerance=0).all()

    out_c = tmp_path / "c"
    simulate(aoi_path, out_c, **OPTIONS, seed=7, s1_orbits=(32,), s2_dates=1, season=("05-06", "06-10"))
    assert not np.array_equal(_read(out_a / "truth.tif"), _read(out_c / "truth.tif"))
    scene = sorted((out_c / "s1").glob("*_C2.tif"))[0]
    assert not np.array_equal(_read(scene), _read(out_a / "s1" / scene.name))


def test_products_are_seeded_per_product(run, aoi_path, tmp_path):
    """A run with fewer tracks and dates writes the shared products byte-for-byte the same."""
    out_a, _ = run
    out = tmp_path / "fewer"
    simulate(aoi_path, out, **OPTIONS, seed=42, s1_orbits=(32,), s2_dates=2, season=("05-06", "06-30"))
    shared = sorted((out / "s1").glob("*.tif"))
    assert len(shared) == 4 + 3
    for path in shared:
        assert (out_a / "s1" / path.name).read_bytes() == path.read_bytes()
    assert np.array_equal(_read(out / "truth.tif"), _read(out_a / "truth.tif"))


# ---------------------------------------------------------------------------------------------- landscape

def test_landscape_field_sizes_strips_and_crop_shares():
    bounds = (330000.0, 5340000.0, 335000.0, 5345000.0)
    parcels = generate_landscape(bounds, bounds, "EPSG:32652", np.random.default_rng(3))
    area_ha = parcels.geometry.area / 1e4
    crops = parcels["class_name"].isin(["maize", "soybean", "wheat", "other_crops"])
    assert 1.0 <= area_ha[crops].mean() <= 1.8
    assert (area_ha[crops & (parcels["kind"] == "field")] >= 4.0).any()   # some large blocks
    strips = parcels.loc[parcels["kind"] == "strip"].geometry
    rect = shapely.oriented_envelope(strips.values)
    sides = np.array([sorted(np.hypot(*np.diff(np.asarray(r.exterior.coords)[:3], axis=0).T)) for r in rect])
    assert np.median(sides[:, 0]) < 45 and np.median(sides[:, 1] / sides[:, 0]) > 8   # long narrow strips
    share = area_ha[crops].groupby(parcels.loc[crops, "class_name"]).sum()
    assert share["soybean"] > share["maize"] > share["wheat"] > 0
    assert {"forest", "water", "residential"} <= set(parcels["class_name"])
    assert not shapely.union_all(parcels.geometry.values).is_empty
    assert parcels.geometry.area.sum() == pytest.approx(shapely.union_all(parcels.geometry.values).area, rel=1e-6)


def test_parcels_file_truth_and_cropland(run):
    out, summary = run
    parcels = gpd.read_file(out / "parcels.gpkg", layer="parcels")
    assert parcels.crs.to_epsg() == 4326
    assert list(parcels.columns) == ["parcel_id", "crop", "geometry"]
    assert parcels["parcel_id"].is_unique
    lookup = Legend.load(LEGEND).lookup()
    assert all(text.strip().lower() in lookup for text in parcels["crop"])
    assert set(parcels["crop"]) - set(Legend.load(LEGEND).names)          # aliases too
    assert any(text != text.lower() for text in parcels["crop"])          # mixed case, as surveys write them
    truth = _read(out / "truth.tif")[0]
    cropland = _read(out / "cropland.tif")[0]
    crop_ids = Legend.load(LEGEND).cropland_ids
    assert truth.shape == cropland.shape == GRID.shape
    # the survey misses parcels: crop pixels exist that no labelled parcel covers
    labelled = rasterio.features.rasterize(parcels.to_crs(GRID.crs).geometry, out_shape=GRID.shape,
                                           transform=GRID.transform)
    assert (np.isin(truth, crop_ids) & (labelled == 0)).mean() > 0.1
    assert summary["n_labelled_parcels"] == len(parcels) < summary["n_parcels"]
    # the cropland mask is a coarser land-cover product that agrees with the truth on most pixels
    agreement = (cropland == np.isin(truth, crop_ids)).mean()
    assert 0.85 < agreement < 1.0
    shares = summary["crop_pixel_share"]
    assert shares["soybean"] > shares["maize"] > shares["wheat"]
    assert json.loads((out / "truth.json").read_text()) == summary


# ---------------------------------------------------------------------------------------------- Sentinel-1

def test_s1_seam_files_follow_the_spec(run):
    out, summary = run
    scenes = sorted((out / "s1").glob("*_C2.tif"))
    pairs = sorted((out / "s1").glob("*_coh.tif"))
    assert len(scenes) == 24 and len(pairs) == 22
    for path in scenes:
        tags = validate_c2(path, GRID)
        meta = parse_scene_id(tags["SCENE"])
        assert meta["relative_orbit"] in (32, 105) and tags["PASS"] == "DESCENDING"
        assert tags["START_TIME"].startswith(meta["start"].strftime("%Y-%m-%dT%H:%M:%S"))
        with rasterio.open(path) as src:
            assert src.descriptions == C2_BANDS and src.dtypes == ("float32",) * 4
            assert src.transform == GRID.transform and src.shape == GRID.shape
            c2 = src.read()
        assert (c2[0] > 0).all() and (c2[1] > 0).all()
        assert (c2[2] ** 2 + c2[3] ** 2 <= c2[0] * c2[1] * (1 + 1e-3)).all()   # positive semi-definite
    by_track: dict[int, list[datetime]] = {}
    for path in scenes:
        meta = parse_scene_id(path.name[:-len("_C2.tif")])
        by_track.setdefault(meta["relative_orbit"], []).append(meta["start"])
    for path in pairs:
        tags = validate_coherence(path, GRID)
        pair = parse_pair_id(path.name[:-len("_coh.tif")])
        assert pair["secondary"] - pair["reference"] == timedelta(days=12)
        ref, sec = parse_scene_id(tags["REFERENCE"]), parse_scene_id(tags["SECONDARY"])
        starts = sorted(by_track[pair["relative_orbit"]])
        assert starts.index(sec["start"]) == starts.index(ref["start"]) + 1      # consecutive acquisitions
        with rasterio.open(path) as src:
            assert src.descriptions == COHERENCE_BANDS
    assert sorted(summary["s1_scenes"]) == sorted(p.name[:-len("_C2.tif")] for p in scenes)


def test_s1_plan_reproduces_a_real_orbit_and_the_study_tracks():
    # S1A absolute orbit 45056 (relative 9), IW SLC over the Azores starting 2022-09-18T07:49:21
    azores = plan_acquisitions([9], datetime(2022, 9, 18, tzinfo=UTC), datetime(2022, 9, 18, 23, tzinfo=UTC),
                               -27.2, 38.7)
    assert azores[0].absolute_orbit == 45056 and azores[0].orbit_pass == "DESCENDING"
    assert abs((azores[0].start - datetime(2022, 9, 18, 7, 49, 21, tzinfo=UTC)).total_seconds()) < 2
    beian = plan_acquisitions([32, 105], datetime(2023, 5, 6, tzinfo=UTC), datetime(2023, 9, 27, 23, tzinfo=UTC),
                              126.6, 48.2)
    assert len(beian) == 24
    for scene in beian:
        assert (scene.absolute_orbit - 73) % 175 + 1 == scene.relative_orbit
        assert scene.orbit_pass == "DESCENDING" and 21 <= scene.start.hour <= 22
        assert 29.1 <= scene.incidence <= 46.0


def test_speckle_is_wishart_with_the_requested_looks():
    rng = np.random.default_rng(0)
    n, looks = 200_000, 5
    c11, c22 = np.full(n, 0.1, np.float32), np.full(n, 0.02, np.float32)
    c12r, c12i = np.full(n, 0.01, np.float32), np.full(n, 0.005, np.float32)
    s11, s22, s12r, s12i = multilook_covariance(c11, c22, c12r, c12i, looks, rng)
    for sample, expected in ((s11, 0.1), (s22, 0.02), (s12r, 0.01), (s12i, 0.005)):
        assert sample.mean() == pytest.approx(expected, rel=0.02)
    assert s11.mean() ** 2 / s11.var() == pytest.approx(looks, rel=0.05)   # equivalent number of looks
    zero = estimated_coherence(np.zeros(n, np.float32), 20, rng)
    assert zero.mean() == pytest.approx(np.sqrt(np.pi / (4 * 20)), rel=0.05)  # estimator bias at gamma 0
    high = estimated_coherence(np.full(n, 0.9, np.float32), 20, rng)
    assert high.mean() == pytest.approx(0.9, abs=0.02) and high.max() <= 1.0


# ---------------------------------------------------------------------------------------------- Sentinel-2

def test_s2_products_and_cloud_cover(run):
    out, summary = run
    safes = sorted((out / "s2").glob("*.SAFE"), key=lambda p: p.name.split("_")[2])
    assert len(safes) == 6 and all("_T52UCU_" in p.name for p in safes)
    fractions = []
    for safe in safes:
        assert (safe / "MTD_MSIL2A.xml").exists()
        for band in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"):
            with rasterio.open(_band(safe, band)) as src:
                assert src.crs.to_epsg() == 32652
                assert src.res == ((10.0, 10.0) if band in ("B02", "B03", "B04", "B08") else (20.0, 20.0))
                assert src.bounds.left % 60 == 0 and src.bounds.top % 60 == 0
                assert src.bounds.left < SMALL[0] and src.bounds.top > SMALL[3]   # AOI plus a margin
        with rasterio.open(_band(safe, "SCL")) as src:
            scl = src.read(1, window=rasterio.windows.from_bounds(*SMALL, transform=src.transform))
        fractions.append(float(np.isin(scl, (3, 8, 9, 10)).mean()))
    assert sum(f > CLOUD_THRESHOLD for f in fractions) == 1
    assert sum(f == 0.0 for f in fractions) == 1
    assert [p["cloud_fraction_aoi"] for p in summary["s2_products"]] == pytest.approx(fractions, abs=1e-4)

    cloudy = safes[int(np.argmax(fractions))]
    with rasterio.open(_band(cloudy, "SCL")) as src:
        scl = src.read(1)
        grid20 = ProjectGrid("EPSG:32652", 20.0, tuple(src.bounds))
    assert {3, 8, 9, 10} <= set(np.unique(scl))
    b02, b12 = (_reflectance(_band(cloudy, b), grid20, "average") for b in ("B02", "B12"))
    thick = scl == 9
    assert b02[thick].mean() > 0.3 and 0.5 < b12[thick].mean() / b02[thick].mean() < 1.1   # bright and flat
    clear = np.isin(scl, (4, 5))
    assert b02[scl == 3].mean() < b02[clear].mean()                                      # shadows darker


def test_cloud_scene_hits_the_requested_cover():
    rng = np.random.default_rng(1)
    field = smooth_noise((300, 400), 50.0, rng)
    aoi = np.zeros(field.shape, bool)
    aoi[50:250, 50:350] = True
    for cover in (0.02, 0.3):
        codes, opacity, shadow = cloud_scene(field, aoi, cover, (30, -40))
        assert np.isin(codes, (3, 8, 9, 10))[aoi].mean() == pytest.approx(cover, abs=0.002)
        assert (opacity[codes == 9] > 0.8).all() and (opacity[shadow] == 0).all()


def test_mgrs_tile_ids():
    assert mgrs_tile(126.6, 48.2) == "52UCU"
    assert mgrs_tile(126.38, 48.18) == "52UCU" and mgrs_tile(126.25, 48.18) == "52UBU"
    assert s2_tile_extent(3, 53) == (300000.0, 5290200.0, 409800.0, 5400000.0)   # 52UCU: overlaps 52UBU by 9.8 km
    assert s2_tile_extent(2, 53)[2] == 309800.0
    assert mgrs_tile(1.44, 43.6) == "31TCJ"     # Toulouse
    assert mgrs_tile(2.35, 48.85) == "31UDQ"    # Paris


# ---------------------------------------------------------------------------------------------- signals

def _features(out: Path, summary: dict) -> np.ndarray:
    feats = []
    for path in sorted((out / "s1").glob("*_C2.tif")):
        c2 = _read(path)
        feats += [10 * np.log10(c2[0]), 10 * np.log10(c2[1])]
    for path in sorted((out / "s1").glob("*_coh.tif")):
        feats += list(_read(path))
    for product in summary["s2_products"]:
        if product["cloud_fraction_aoi"] <= CLOUD_THRESHOLD:
            safe = out / "s2" / product["product"]
            feats += [_reflectance(_band(safe, b), GRID, "bilinear") for b in ("B04", "B8A", "B11")]
    return np.stack(feats, axis=-1)


def test_signals_follow_the_classes(run):
    out, summary = run
    truth = _read(out / "truth.tif")[0]
    ids = {name: i for i, name in zip(Legend.load(LEGEND).ids, Legend.load(LEGEND).names)}
    july = next(out / "s2" / p["product"] for p in summary["s2_products"] if p["sensing_time"].startswith("2023-07-01"))
    red, nir = _reflectance(_band(july, "B04"), GRID), _reflectance(_band(july, "B08"), GRID)
    ndvi = (nir - red) / (nir + red)
    maize, water = ndvi[truth == ids["maize"]], ndvi[truth == ids["water"]]
    assert maize.mean() > 0.6 > 0.0 > water.mean()
    assert maize.std() > 0.02                                      # within-class variability
    may = next(out / "s2" / p["product"] for p in summary["s2_products"] if p["sensing_time"].startswith("2023-06-06"))
    r0, n0 = _reflectance(_band(may, "B04"), GRID), _reflectance(_band(may, "B08"), GRID)
    ndvi0 = (n0 - r0) / (n0 + r0)
    assert ndvi0[truth == ids["wheat"]].mean() > ndvi0[truth == ids["soybean"]].mean() + 0.2   # wheat early
    august = next(p for p in sorted((out / "s1").glob("*_C2.tif")) if "_20230809T" in p.name)
    vh = 10 * np.log10(_read(august)[1])
    assert vh[truth == ids["maize"]].mean() > vh[truth == ids["water"]].mean() + 6
    coh = _read(next((out / "s1").glob("R105_20230510_*_coh.tif")))[0]
    assert coh[truth == ids["residential"]].mean() > 0.6 > coh[truth == ids["water"]].mean()
    assert coh[truth == ids["soybean"]].mean() > coh[truth == ids["water"]].mean() + 0.1   # bare soil in May


def test_random_forest_separates_the_classes_but_not_perfectly(run):
    from sklearn.ensemble import RandomForestClassifier

    out, summary = run
    x = _features(out, summary)
    parcels = gpd.read_file(out / "parcels.gpkg").to_crs(GRID.crs)
    lookup = Legend.load(LEGEND).lookup()
    classes = dict(zip(parcels["parcel_id"], (lookup[t.strip().lower()] for t in parcels["crop"])))
    pid = rasterio.features.rasterize(zip(parcels.geometry, parcels["parcel_id"]), out_shape=GRID.shape,
                                      transform=GRID.transform, dtype="int64")
    rng = np.random.default_rng(0)
    train_ids = set(rng.permutation(parcels["parcel_id"].to_numpy())[: len(parcels) // 2])
    mask = pid > 0
    y = np.array([classes[i] for i in pid[mask]])
    train = np.array([i in train_ids for i in pid[mask]])
    sample = rng.choice(np.flatnonzero(train), min(8000, int(train.sum())), replace=False)
    rf = RandomForestClassifier(40, min_samples_split=4, n_jobs=2, random_state=0).fit(x[mask][sample], y[sample])
    test = ~train
    oa = float((rf.predict(x[mask][test]) == y[test]).mean())
    chance = np.bincount(y[test]).max() / test.sum()
    assert chance + 0.2 < oa < 0.99


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_are_named(aoi_path, tmp_path):
    bad_legend = tmp_path / "legend.yaml"
    bad_legend.write_text("classes:\n  - {id: 1, name: maize, color: '#ffffff'}\n")
    with pytest.raises(ValueError, match="soybean"):
        simulate(aoi_path, tmp_path / "x", legend_path=str(bad_legend))
    with pytest.raises(ValueError, match="cloudy"):
        simulate(aoi_path, tmp_path / "x", legend_path=LEGEND, cloudy=[0.1, 0.2])
    with pytest.raises(ValueError, match="MM-DD"):
        simulate(aoi_path, tmp_path / "x", legend_path=LEGEND, season=("May 6", "09-27"))
    with pytest.raises(ValueError, match="s2_dates"):
        simulate(aoi_path, tmp_path / "x", legend_path=LEGEND, s2_dates=100)
    with pytest.raises(ValueError, match="s2_level 'l1b'"):
        simulate(aoi_path, tmp_path / "x", legend_path=LEGEND, s2_level="l1b")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- Level-1C

def test_l1c_products_follow_the_layout(run, aoi_path, tmp_path):
    """s2_level both: per date an L2A identical to the default run's and an L1C of the same acquisition with all
    13 TOA bands; the cirrus band B10 is bright under the simulated cloud and dark elsewhere."""
    from cropflow.s2 import BAND_IDS, l1c_toa_reflectance, open_l1c, validate_l1c

    out_a, summary_a = run
    out = tmp_path / "both"
    summary = simulate(aoi_path, out, **OPTIONS, seed=42, s2_level="both")
    product = summary["s2_products"][3]                    # the ~30 % cloudy date of the default pattern
    l2a_name, l1c_name = product["products"]
    assert l2a_name == summary_a["s2_products"][3]["product"]
    l2a = out / "s2" / l2a_name
    assert _read(_band(l2a, "B04")).tobytes() == _read(_band(out_a / "s2" / l2a_name, "B04")).tobytes()
    l1c = validate_l1c(out / "s2" / l1c_name)
    assert l1c.name == l2a_name.replace("MSIL2A", "MSIL1C").replace("T053551", "T043551").removesuffix(".SAFE")
    assert l1c.bands == BAND_IDS and l1c.cloud_cover > 5.0

    def toa(band):
        with rasterio.open(l1c.band_path(band)) as src:
            return l1c_toa_reflectance(src.read(1), l1c.offsets[band], l1c.quantification)

    with rasterio.open(_band(l2a, "SCL")) as src:
        scl = src.read(1)
    cloud60 = (np.isin(scl, (8, 9)).reshape(scl.shape[0] // 3, 3, scl.shape[1] // 3, 3).mean(axis=(1, 3)) == 1)
    clear60 = (np.isin(scl, (4, 5, 6)).reshape(scl.shape[0] // 3, 3, scl.shape[1] // 3, 3).mean(axis=(1, 3)) == 1)
    b10 = toa("B10")
    assert cloud60.any() and clear60.any()
    assert np.median(b10[cloud60]) > 0.1 and np.median(b10[clear60]) < 0.01
    assert np.nanmean(toa("B02")) > np.nanmean(_reflectance(_band(l2a, "B02"), GRID))  # path radiance in the blue

    only = tmp_path / "l1c"
    s1c = simulate(aoi_path, only, **OPTIONS, seed=42, s1_orbits=(32,), s2_dates=1, season=("05-06", "06-10"),
                   s2_level="l1c")
    assert [p.name for p in (only / "s2").iterdir()] == [s1c["s2_products"][0]["product"]]
    assert "_MSIL1C_" in s1c["s2_products"][0]["product"]
    assert open_l1c(only / "s2" / s1c["s2_products"][0]["product"]).relative_orbit == 89
DEMO_AOI = Path(__file__).parents[1] / "resources" / "demo" / "aoi.geojson"


def test_demo_aoi_straddles_two_mgrs_tiles():
    """The demo AOI crosses the 52UBU/52UCU edge: each tile covers a part of it the other does not."""
    from cropflow.grid import read_aoi

    aoi = read_aoi(str(DEMO_AOI))
    left, bottom, right, top = aoi.to_crs("EPSG:32652").total_bounds
    assert (right - left, top - bottom) == (20000.0, 20000.0)
    tiles = dict(s2_tiles_for(s2_grid_for(aoi, 1000.0)[0]))
    assert sorted(tiles) == ["52UBU", "52UCU"]
    # each tile's part lies on the 60 m lattice inside the tile (52UBU ends at x 309 800 m)
    assert tiles["52UBU"].bounds[2] == 309780.0 and tiles["52UCU"].bounds[0] == 300000.0
    assert tiles["52UBU"].bounds[0] < left < 300000.0 and 309800.0 < right < tiles["52UCU"].bounds[2]


#: 14 x 1 km across the 52UBU/52UCU edge (x 300 km) and the end of 52UBU (x 309.8 km)
EDGE = (298000.0, 5340000.0, 312000.0, 5341000.0)


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim_edge")
    aoi = _aoi(out / "aoi.geojson", EDGE)
    return out, simulate(aoi, out / "data", **{**OPTIONS, "s2_margin": 120.0}, seed=3, s2_dates=2, cloudy=[0.0, 0.05],
                         s1_orbits=(32,), s2_level="both")


def test_adjacent_tile_products_are_identical_in_their_overlap(edge_run):
    from cropflow.s2 import validate_l1c

    out, summary = edge_run
    products = summary["s2_products"]
    assert len(products) == 4 and [p["mgrs_tile"] for p in products] == ["52UBU", "52UCU"] * 2
    assert summary["s2_tiles"] == ["52UBU", "52UCU"]
    for west, east in (products[:2], products[2:]):
        assert west["sensing_time"] == east["sensing_time"]
        wsafe, esafe = out / "data" / "s2" / west["product"], out / "data" / "s2" / east["product"]
        assert west["product"].split("_")[:5] == east["product"].split("_")[:5]   # one datatake: time, orbit
        with rasterio.open(_band(wsafe, "B04")) as w, rasterio.open(_band(esafe, "B04")) as e:
            assert w.bounds.right == 309780.0 and e.bounds.left == 300000.0  # on the 60 m lattice
            assert w.bounds.left < EDGE[0] and e.bounds.right > EDGE[2]
            overlap = (300000.0, max(w.bounds.bottom, e.bounds.bottom), 309780.0, min(w.bounds.top, e.bounds.top))
            a = w.read(1, window=rasterio.windows.from_bounds(*overlap, transform=w.transform))
            b = e.read(1, window=rasterio.windows.from_bounds(*overlap, transform=e.transform))
        assert a.shape == b.shape and a.size > 0 and (a == b).all()
        for product in (west, east):  # and an L1C of each tile's part (every band on its native grid)
            assert validate_l1c(out / "data" / "s2" / product["products"][1]).mgrs_tile == product["mgrs_tile"]


def test_seam_passes_cut_into_slices_assemble_into_whole_acquisitions(aoi_path, tmp_path):
    """s1_slices 2 with seam products: per pass, two C2 slices of one datatake over overlapping bands of grid
    rows; the inventory groups them into one acquisition, the pairs validate, and the assembled C2 covers the
    grid without a gap."""
    out = tmp_path / "sliced"
    simulate(aoi_path, out, **OPTIONS, seed=5, s1_orbits=(32,), s2_dates=1, season=("05-06", "05-31"), s1_slices=2)
    scenes, pairs = scan_s1_seam(out / "s1", tmp_path / "cache.json")
    acqs = group_s1_acquisitions(scenes)
    assert len(scenes) == 2 * len(acqs) == 4 and len(pairs) == 1
    for slices in acqs["slices"]:
        first, second = json.loads(slices)
        assert parse_scene_id(first)["stop"] == parse_scene_id(second)["start"]
        bands = []
        for scene in (first, second):
            with rasterio.open(out / "s1" / f"{scene}_C2.tif") as src:
                window = GRID.window_of(ProjectGrid(GRID.crs, 10.0, tuple(src.bounds)))
                assert src.width == GRID.width and 0 < src.height < GRID.height
                bands.append((window.row_off, window.row_off + window.height))
        # descending: the first slice is the northern one (row 0); the two overlap and cover every row
        assert bands[0][0] == 0 and bands[1][1] == GRID.height and bands[1][0] < bands[0][1]
    assert json.loads(acqs.loc[0, "slices"])[0] == pairs.loc[0, "reference"]
    merged = tmp_path / "acq_C2.tif"
    merge_s1_rasters([str(out / "s1" / f"{s}_C2.tif") for s in json.loads(acqs.loc[0, "slices"])], GRID, "mean",
                     merged)
    with rasterio.open(merged) as src:
        assert np.isfinite(src.read()).all()
