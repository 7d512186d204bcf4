"""Simulated Sentinel-1 IW SLC products: real layout, geometry, calibration, and the native engine reading them.

The oracle is the simulator's signal model on the project grid (``expected_components``): the native engine,
geocoding the simulated SLC bursts back onto the grid, must find each parcel's backscatter where the parcel
is, at the model's level, and the model's coherence between consecutive dates.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from cropflow.grid import project_grid, read_aoi
from cropflow.inventory import footprints_in_crs
from cropflow.layers import group_s1_acquisitions
from cropflow.pyrosar_env import import_pyrosar
from cropflow.s1slc import scan_s1_slc, slc_pairs
from cropflow.sar.geometry import (
    OrbitInterpolator,
    geocode_points,
    lla_to_ecef,
    orbit_from_annotation,
    swath_timing_from_annotation,
    zero_doppler,
)
from cropflow.sar.native import NativeOptions, pair_coherence, scene_c2
from cropflow.sar.slc import extract_safe, read_annotation
from cropflow.simulate import simulate
from cropflow.simulate.parcels import LandscapeParams
from cropflow.simulate.scene import (
    build_world,
    product_rng,
    radar_landscape,
    s2_grid_for,
    simulate_weather,
)
from cropflow.simulate.sentinel1 import (
    RadarPair,
    RadarScene,
    _parcel_radar,
    coherence_terms,
    expected_components,
    pair_coherence_gammas,
    plan_acquisitions,
)
from cropflow.simulate.slc import (
    TEMPLATE,
    load_template,
    place_track,
    range_doppler_point,
    rotated_orbit,
    split_slices,
)
from scipy import ndimage

LEGEND = str(Path(__file__).parents[1] / "resources" / "legend.yaml")
#: 1.5 x 1.5 km in UTM 52N, inside the demo AOI
BOUNDS = (330000.0, 5340000.0, 331500.0, 5341500.0)
SEED = 7


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> tuple[Path, dict]:
    """Two dates of relative orbit 105 (12 days apart) over a small AOI."""
    out = tmp_path_factory.mktemp("slc")
    gpd.GeoDataFrame(geometry=[shapely.box(*BOUNDS)], crs="EPSG:32652").to_file(out / "aoi.geojson")
    summary = simulate(out / "aoi.geojson", out, legend_path=LEGEND, season=("05-06", "05-25"), s1_orbits=[105],
                       s2_dates=1, cloudy=[0.0], s2_margin=200.0, seed=SEED, s1_format="slc")
    return out, summary


@pytest.fixture(scope="module")
def land(sim):
    out = sim[0]
    aoi = read_aoi(str(out / "aoi.geojson"))
    grid = project_grid(aoi, "EPSG:32652", 10.0)
    world = build_world(aoi, grid, s2_grid_for(aoi, 200.0)[0], SEED, LandscapeParams())
    return grid, radar_landscape(world, simulate_weather(2023, product_rng(SEED, "weather", "2023")), SEED)


def _scene(name: str, incidence: float) -> RadarScene:
    t = datetime.strptime(name.split("_")[5], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return RadarScene(name, "S1A", int(name.split("_")[7]), 105, "DESCENDING", t, t, incidence)


def test_range_doppler_forward_geocoding_inverts_the_engines_backward_geocoding(tmp_path):
    orbit = rotated_orbit(load_template(TEMPLATE, tmp_path).orbit, np.radians(115.0), -17.0)
    interp = OrbitInterpolator(orbit)
    rng = np.random.default_rng(0)
    t = rng.uniform(interp.start + 20, interp.stop - 20, 50)
    r = rng.uniform(800e3, 950e3, 50)
    h = rng.uniform(-50, 3000, 50)
    p = range_doppler_point(interp.position(t), interp.velocity(t), r, h)
    t_back, r_back = zero_doppler(p, interp)
    np.testing.assert_allclose(t_back, t, atol=1e-6)
    np.testing.assert_allclose(r_back, r, atol=1e-3)
    # the point is to the right of the velocity (Sentinel-1 looks right)
    s, v = interp.position(t), interp.velocity(t)
    assert (np.einsum("ij,ij->i", np.cross(v, s), p - s) > 0).all()


def test_products_have_the_real_safe_layout_and_are_identified(sim, tmp_path):
    out, summary = sim
    zips = sorted((out / "s1").glob("*.zip"))
    assert [z.name.removesuffix(".zip") for z in zips] == summary["s1_scenes"] and len(zips) == 2
    with zipfile.ZipFile(zips[0]) as z:
        names = z.namelist()
        safe = zips[0].name.replace(".zip", ".SAFE")
        assert f"{safe}/manifest.safe" in names
        for pol, number in (("vv", "004"), ("vh", "001")):
            members = [n for n in names if re.search(rf"s1a-iw1-slc-{pol}-.*-{number}\.(xml|tiff)$", n)]
            kinds = sorted(n.split("/")[-2] + "/" + n.split("/")[-1].split("-")[0] for n in members)
            assert kinds == ["annotation/s1a", "calibration/calibration", "calibration/noise", "measurement/s1a"]
        manifest = z.read(f"{safe}/manifest.safe").decode()
        for href, md5 in re.findall(r'href="\./([^"]+)"/>\s*<checksum checksumName="MD5">([0-9a-f]+)', manifest):
            if f"{safe}/{href}" in names:
                assert hashlib.md5(z.read(f"{safe}/{href}")).hexdigest() == md5, href
        assert "<safe:number>A</safe:number>" in manifest
        assert '<safe:relativeOrbitNumber type="start">105<' in manifest
    scenes, skipped = scan_s1_slc(out / "s1", tmp_path / "cache.json")
    assert skipped.empty and len(scenes) == 2
    row = scenes.iloc[0]
    assert row["platform"] == "S1A" and row["relative_orbit"] == 105 and row["pass"] == "DESCENDING"
    footprint = shapely.from_wkt(row["footprint"])
    aoi = gpd.read_file(out / "aoi.geojson").to_crs(4326).union_all()
    assert footprint.contains(aoi)


def test_annotation_extent_timing_and_geolocation_grid_are_consistent(sim, tmp_path):
    out, _ = sim
    safe = extract_safe(min((out / "s1").glob("*.zip")), tmp_path)
    ann_path = next((safe / "annotation").glob("s1a-iw1-slc-vv-*.xml"))
    ann = read_annotation(ann_path)
    with rasterio.open(next((safe / "measurement").glob("s1a-iw1-slc-vv-*.tiff"))) as src:
        assert (src.height, src.width) == (ann.number_of_lines, ann.number_of_samples)
        assert src.dtypes[0] == "complex_int16"
    assert ann.number_of_lines == len(ann.bursts) * ann.lines_per_burst
    # the geolocation grid (forward geocoding) and the engine's backward geocoding agree
    timing = swath_timing_from_annotation(ann_path)
    orbit = orbit_from_annotation(ann_path)
    pts = re.findall(r"<line>(\d+)</line>\s*<pixel>(\d+)</pixel>\s*<latitude>([^<]+)</latitude>\s*"
                     r"<longitude>([^<]+)</longitude>\s*<height>([^<]+)</height>", ann_path.read_text())
    line, pixel, lat, lon, h = (np.array(c, float) for c in zip(*pts))
    burst = np.minimum(line // ann.lines_per_burst, len(ann.bursts) - 1).astype(int)
    rc = geocode_points(lla_to_ecef(lon, lat, h), orbit, timing, burst)
    # tolerance: the grid interpolates a 16 x 32 forward lattice bilinearly (< 0.05 pixel on this terrain)
    np.testing.assert_allclose(rc.line, line, atol=0.05)
    np.testing.assert_allclose(rc.sample, pixel, atol=0.05)


def _c2_match(c2: np.ndarray, expected: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Correlation of 5 x 5-smoothed dB images at zero shift, and the shift that maximises it."""
    e = ndimage.uniform_filter(10 * np.log10(expected), 5)[8:-8, 8:-8]
    o = ndimage.uniform_filter(10 * np.log10(c2), 5)
    scores = {}
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            scores[(dy, dx)] = np.corrcoef(e.ravel(), np.roll(o, (dy, dx), (0, 1))[8:-8, 8:-8].ravel())[0, 1]
    return scores[(0, 0)], max(scores, key=scores.get)


def test_native_engine_finds_the_simulated_backscatter_where_the_parcels_are(sim, land, tmp_path):
    out, summary = sim
    grid, radar = land
    name = summary["s1_scenes"][0]
    scene = _scene(name, summary["s1_incidence"]["105"])
    expected = expected_components(radar, scene)
    options = NativeOptions(dem=str(out / "dem.tif"), workdir=str(tmp_path / "safe"))
    with rasterio.open(scene_c2(out / "s1" / f"{name}.zip", grid, tmp_path / "c2.tif", options)) as src:
        c2 = src.read()
    for band, exp in ((0, expected.c11), (1, expected.c22)):
        corr, shift = _c2_match(c2[band], exp)
        assert shift == (0, 0) and corr > 0.9, (band, corr, shift)
        # calibration: the speckle-averaged sigma0 equals the model's within 0.3 dB
        assert abs(10 * np.log10(np.nanmean(c2[band]) / exp.mean())) < 0.3
    # geocoding without the terrain (ellipsoid height 0 m instead of ~260 m) misplaces the signal by tens of
    # pixels: the features no longer match the parcels
    flat = NativeOptions(ellipsoid_height=0.0, workdir=str(tmp_path / "safe"))
    with rasterio.open(scene_c2(out / "s1" / f"{name}.zip", grid, tmp_path / "flat.tif", flat)) as src:
        assert _c2_match(src.read(1), expected.c11)[0] < 0.5


def _box(x: np.ndarray) -> np.ndarray:
    """Mean over the engine's 5 x 5 coherence window."""
    return ndimage.uniform_filter(x, 5)


def test_native_engine_recovers_the_simulated_coherence(sim, land, tmp_path):
    out, summary = sim
    grid, radar = land
    incidence = summary["s1_incidence"]["105"]
    s0, s1 = (_scene(n, incidence) for n in summary["s1_scenes"])
    pair = RadarPair(summary["s1_pairs"][0], s0, s1)
    options = NativeOptions(dem=str(out / "dem.tif"), workdir=str(tmp_path / "safe"), coherence_window=(5, 5))
    path = pair_coherence(out / "s1" / f"{s0.name}.zip", out / "s1" / f"{s1.name}.zip", grid, tmp_path / "coh.tif",
                          options, pair.pair)
    with rasterio.open(path) as src:
        coh = src.read()
    gammas = pair_coherence_gammas(radar, pair, _parcel_radar(radar, s0), _parcel_radar(radar, s1))
    p = radar.parcel
    c0, c1 = expected_components(radar, s0), expected_components(radar, s1)
    for band, pol in enumerate(("vv", "vh")):
        num, a, b = coherence_terms(c0, c1, pol, *(g[p] for g in gammas))
        true = _box(num) / np.sqrt(_box(a) * _box(b))
        ok = np.isfinite(coh[band])
        assert ok.mean() > 0.99
        assert np.corrcoef(true[ok], coh[band][ok])[0, 1] > 0.6
        # the sample coherence over ~25 map pixels is biased up at low coherence, unbiased at high coherence
        high = ok & (true > 0.6)
        low = ok & (true < 0.2)
        if high.sum() > 200:
            assert abs(coh[band][high].mean() - true[high].mean()) < 0.05
        if low.sum() > 200:
            assert 0.0 < coh[band][low].mean() - true[low].mean() < 0.25


#: 1 x 24 km (along the track) in UTM 52N: the AOI spans more than one burst, so a pass can be split in two
SLICED = (330000.0, 5330000.0, 331000.0, 5354000.0)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory) -> tuple[Path, dict]:
    """Two passes of relative orbit 105, each written as two consecutive slices of one datatake."""
    out = tmp_path_factory.mktemp("slc_sliced")
    gpd.GeoDataFrame(geometry=[shapely.box(*SLICED)], crs="EPSG:32652").to_file(out / "aoi.geojson")
    summary = simulate(out / "aoi.geojson", out, legend_path=LEGEND, season=("05-06", "05-25"), s1_orbits=[105],
                       s2_dates=1, cloudy=[0.0], s2_margin=120.0, seed=SEED, s1_format="slc", s1_slices=2)
    return out, summary


def test_slices_share_the_datatake_and_have_consecutive_slice_numbers(sliced, tmp_path):
    out, summary = sliced
    zips = sorted((out / "s1").glob("S1A_*.zip"))
    assert len(zips) == 4 and len(summary["s1_scenes"]) == 4 and len(summary["s1_pairs"]) == 1
    pyrosar = import_pyrosar()
    metas = [pyrosar.identify(str(z)).meta for z in zips]
    by_date: dict[str, list[dict]] = {}
    for z, meta in zip(zips, metas):
        by_date.setdefault(z.name.split("_")[5][:8], []).append({"name": z.stem, **meta})
    for day, slices in by_date.items():
        first, second = sorted(slices, key=lambda m: m["acquisition_time"]["start"])
        assert first["name"].split("_")[7] == second["name"].split("_")[7]            # one datatake
        assert (first["sliceNumber"], second["sliceNumber"]) == (7, 8) and first["totalSlices"] == 12
        gap = (datetime.fromisoformat(second["acquisition_time"]["start"])
               - datetime.fromisoformat(first["acquisition_time"]["stop"])).total_seconds()
        assert -3.0 < gap < 3.0, gap                                                   # consecutive
    scenes, skipped = scan_s1_slc(out / "s1", tmp_path / "cache.json")
    assert skipped.empty and sorted(scenes["slice_number"]) == [7, 7, 8, 8]
    acquisitions = group_s1_acquisitions(scenes)
    assert len(acquisitions) == 2 and all(len(json.loads(s)) == 2 for s in acquisitions["slices"])
    pairs = slc_pairs(scenes)
    assert len(pairs) == 2 and pairs["pair"].nunique() == 1                          # one pair of 2 slice pairs
    # the slice boundary crosses the AOI: each slice images a part of it
    aoi = shapely.box(*SLICED)
    footprints = [shapely.from_wkt(f) for f in scenes["footprint"]]
    areas = shapely.area(shapely.intersection(footprints_in_crs([f.wkt for f in footprints], "EPSG:32652"), aoi))
    assert (areas > 0.1 * aoi.area).all()


def test_demo_aoi_straddles_a_slice_boundary_on_both_tracks(tmp_path):
    """Planning only (no pixels): on the demo AOI each demo track splits into two slices that each image a
    large part of the AOI."""
    aoi = read_aoi(str(Path(__file__).parents[1] / "resources" / "demo" / "aoi.geojson"))
    grid = project_grid(aoi, "EPSG:32652", 10.0)
    template = load_template(TEMPLATE, tmp_path)
    centre = aoi.to_crs("EPSG:4326").union_all().centroid
    scenes = plan_acquisitions((32, 105), datetime(2023, 5, 6, tzinfo=UTC), datetime(2023, 5, 30, tzinfo=UTC),
                               centre.x, centre.y)
    box = shapely.box(*grid.bounds)
    for track in (32, 105):
        incidence = next(s.incidence for s in scenes if s.relative_orbit == track)
        geometry = place_track(template, track, incidence, centre.x, centre.y, grid, lambda lon, lat: 250.0 + 0 * lon,
                               grid.bounds, at_burst_edge=True)
        parts = split_slices(geometry, lambda lon, lat: 250.0 + 0 * lon, grid, 2)
        assert len(parts) == 2
        for part in parts:
            xy = np.concatenate([e.lattice_xy.reshape(2, -1) for e in part.swaths.values()], axis=1)
            hull = shapely.MultiPoint(xy.T).convex_hull
            assert hull.intersection(box).area > 0.2 * box.area, (track, hull.intersection(box).area / box.area)
