"""Tests of cropflow.sar.geometry on the real Sentinel-1A IW3 SLC of 2022-09-18 (Azores, tests/data/s1-slc-azores).

Geolocation tolerance (annotation geolocation grid points, GGPs): the zero-Doppler azimuth time we solve must
match each GGP's own ``azimuthTime`` within 0.005 lines (10 us, 7 cm along track) and its slant range within
0.01 samples (2 cm): both are pure functions of the orbit and the point, so only the annotation orbit's
rounding (cm) and the Newton tolerance remain. Against the GGP's integer ``line``, ESA's line numbering
carries a range-dependent azimuth shift that zero-Doppler geometry does not have (the bistatic delay, half the
two-way range time: (6.39 - 6.02) ms / 2 = 0.09 lines across IW3, plus a 0.04-line constant): measured
0.04-0.135 lines, so the tolerance is 0.2 lines (2.8 m) — a tenth of a 10 m map pixel, far below the
1-pixel budget of geocoding onto the project grid.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.errors
from rasterio.transform import from_origin
from xarray_sentinel import sentinel1

from cropflow.grid import ProjectGrid
from cropflow.sar import geometry as geo

DATA = Path(__file__).parent / "data" / "s1-slc-azores"
ANNOTATION = DATA / "s1a-iw3-slc-vv-20220918t074921-20220918t074946-045056-056232-006.xml"
EOF = DATA / "S1A_OPER_AUX_RESORB_OPOD_20220918T093241_V20220918T053155_20220918T084925.EOF"
CROP = DATA / "s1a-iw3-slc-vv_subset_hight9800_10400_width11000_11000.tiff"
CROP_LINE0, CROP_SAMPLE0 = 9800, 11000
AZIMUTH_SPACING, RANGE_SPACING = 13.89852, 2.329562  # metres, from the annotation
UTM = "EPSG:32626"


@pytest.fixture(scope="module")
def timing() -> geo.SwathTiming:
    return geo.swath_timing_from_annotation(ANNOTATION)


@pytest.fixture(scope="module")
def ann_orbit() -> geo.Orbit:
    return geo.orbit_from_annotation(ANNOTATION)


@pytest.fixture(scope="module")
def eof_orbit() -> geo.Orbit:
    return geo.read_eof(EOF)


@pytest.fixture(scope="module")
def ggp() -> dict[str, np.ndarray]:
    ds = sentinel1.open_gcp_dataset(str(ANNOTATION))
    lat = ds["latitude"].values
    text = ANNOTATION.read_text()
    times = re.findall(r"<geolocationGridPoint>\s*<azimuthTime>([^<]*)", text)
    return {
        "lat": lat, "lon": ds["longitude"].values, "height": ds["height"].values,
        "line": np.broadcast_to(ds["line"].values[:, None], lat.shape).astype(float),
        "pixel": np.broadcast_to(ds["pixel"].values[None, :], lat.shape).astype(float),
        "azimuth_time": np.array(times, dtype="datetime64[ns]").reshape(lat.shape),
        "slant_range_time": np.broadcast_to(ds["slant_range_time"].values[None, :], lat.shape),
    }


def test_swath_timing_read_from_annotation(timing):
    assert timing.lines_per_burst == 1514 and len(timing.burst_times) == 9
    assert timing.number_of_lines == 13626 and timing.number_of_samples == 24203
    assert timing.azimuth_time_interval == pytest.approx(2.0555563e-3)
    assert tuple(timing.burst_valid_lines[0]) == (26, 1489)


def test_geolocation_grid_points_geocode_back_to_their_line_and_pixel(ggp, timing, ann_orbit, eof_orbit, capsys):
    """Every GGP (lat, lon, h) -> ECEF -> zero-Doppler -> (line, sample) lands on its annotated line/pixel."""
    points = geo.lla_to_ecef(ggp["lon"], ggp["lat"], ggp["height"])
    # GGP rows sit on burst starts (line k*1514) and the last row on the last line of the last burst
    burst = np.minimum(ggp["line"].astype(int) // timing.lines_per_burst, len(timing.burst_times) - 1)
    rows = []
    for name, orbit in [("annotation", ann_orbit),
                        ("RESORB", eof_orbit.subset(timing.first_line_time, timing.stop_time))]:
        rc = geo.geocode_points(points, orbit, timing, burst)
        d_line, d_sample = rc.line - ggp["line"], rc.sample - ggp["pixel"]
        d_time = (rc.azimuth_time - ggp["azimuth_time"]) / np.timedelta64(1, "ns") * 1e-9
        d_range = rc.slant_range - ggp["slant_range_time"] * geo.SPEED_OF_LIGHT / 2
        rows.append((name, np.abs(d_line).max(), np.abs(d_line).max() * AZIMUTH_SPACING,
                     np.abs(d_sample).max(), np.abs(d_sample).max() * RANGE_SPACING,
                     np.abs(d_time).max() / timing.azimuth_time_interval, np.abs(d_range).max()))
        assert np.abs(d_line).max() < 0.2
        assert np.abs(d_sample).max() < 0.01
        assert np.abs(d_time).max() < 0.005 * timing.azimuth_time_interval
        assert np.abs(d_range).max() < 0.02
    with capsys.disabled():
        print(f"\n{len(points.reshape(-1, 3))} GGPs: orbit | max |d line| (m) | max |d sample| (m) | "
              f"max |d azimuth time| (lines) | max |d slant range| m")
        for r in rows:
            print(f"  {r[0]:10s} {r[1]:.3f} ({r[2]:.2f} m) | {r[3]:.4f} ({r[4]:.3f} m) | {r[5]:.4f} | {r[6]:.4f}")


def _held_out_error(orbit: geo.Orbit) -> tuple[float, float]:
    n = len(orbit.time)
    fit = orbit.select(np.arange(n) % 2 == 0)
    held = orbit.select(np.arange(1, n - 1, 2))
    interp = geo.OrbitInterpolator(fit)
    t = interp.seconds(held.time)
    dp = np.linalg.norm(interp.position(t) - held.position, axis=1).max()
    dv = np.linalg.norm(interp.velocity(t) - held.velocity, axis=1).max()
    return float(dp), float(dv)


def test_orbit_interpolation_reproduces_held_out_state_vectors(ann_orbit, eof_orbit, timing):
    """Fitted on every second vector (20 s apart), the Hermite spline predicts the others within 5 cm."""
    for orbit in (ann_orbit, eof_orbit.subset(timing.first_line_time, timing.stop_time, margin_s=120)):
        dp, dv = _held_out_error(orbit)
        assert dp < 0.05, f"{orbit.source}: held-out position error {dp:.4f} m"
        assert dv < 1e-3, f"{orbit.source}: held-out velocity error {dv:.2e} m/s"


def test_orbit_interpolation_rejects_times_outside_the_state_vectors(ann_orbit):
    interp = geo.OrbitInterpolator(ann_orbit)
    assert np.isnan(interp.position(np.array([interp.stop + 30.0]))).all()
    points = geo.lla_to_ecef(np.array([-27.2, 10.0]), np.array([38.7, 0.0]), np.zeros(2))
    t, r = geo.zero_doppler(points, interp)  # the second point is seen hours away from this orbit arc
    assert np.isfinite(t[0]) and np.isfinite(r[0]) and np.isnan(t[1]) and np.isnan(r[1])


def test_eof_orbit_parsed_and_consistent_with_annotation(eof_orbit, ann_orbit):
    assert len(eof_orbit.time) == 1186
    assert eof_orbit.time[0] == np.datetime64("2022-09-18T05:31:55.470319", "ns")
    np.testing.assert_allclose(eof_orbit.position[0], [-7017370.359270, -913614.605891, -40855.463295])
    np.testing.assert_allclose(eof_orbit.velocity[0], [-238.237193, 1566.344102, 7430.427935])
    interp = geo.OrbitInterpolator(eof_orbit)
    t = interp.seconds(ann_orbit.time)
    dp = np.linalg.norm(interp.position(t) - ann_orbit.position, axis=1)
    dv = np.linalg.norm(interp.velocity(t) - ann_orbit.velocity, axis=1)
    # the annotation carries the same restituted orbit, rounded: centimetres apart over the scene
    assert dp.max() < 0.1 and dv.max() < 1e-3


def test_eof_errors_name_the_file(tmp_path):
    bad = tmp_path / "S1A_OPER_AUX_POEORB_bad.EOF"
    bad.write_text("<Earth_Explorer_File><Data_Block><List_of_OSVs count='0'/></Data_Block></Earth_Explorer_File>")
    with pytest.raises(ValueError, match="S1A_OPER_AUX_POEORB_bad.EOF"):
        geo.read_eof(bad)
    with pytest.raises(FileNotFoundError, match="missing.EOF"):
        geo.read_eof(tmp_path / "missing.EOF")


def test_radar_to_grid_is_exact_for_a_bilinear_field_and_nan_outside():
    lines, samples = np.mgrid[0:5, 0:7].astype(float)
    values = 2.0 * lines + 3.0 * samples + 0.5 * lines * samples
    line = np.array([0.0, 1.25, 3.5, 4.0, -0.1, 2.0, np.nan])
    sample = np.array([0.0, 2.75, 6.0, 5.5, 1.0, 6.2, 1.0])
    out = geo.radar_to_grid(values, line, sample)
    expect = 2 * line + 3 * sample + 0.5 * line * sample
    np.testing.assert_allclose(out[:4], expect[:4])
    assert np.isnan(out[4:]).all()
    cplx = geo.radar_to_grid(np.stack([values, values]) * (1 + 1j), line[:4], sample[:4])
    assert cplx.shape == (2, 4)
    np.testing.assert_allclose(cplx[1], expect[:4] * (1 + 1j))


def _grid_around(lon: float, lat: float, half: float = 1500.0) -> tuple[ProjectGrid, float, float]:
    x, y = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(lon, lat)
    left, top = np.floor((x - half) / 10) * 10, np.floor((y + half) / 10) * 10
    return ProjectGrid(UTM, 10.0, (left, top - 2 * half, left + 2 * half, top)), x, y


def _write_dem(path: Path, grid: ProjectGrid, height: float, cover: float = 1.0) -> Path:
    """A constant-height GeoTIFF on the grid's lattice covering its left ``cover`` share."""
    w = int(round(grid.width * cover))
    with rasterio.open(path, "w", driver="GTiff", width=w, height=grid.height, count=1, dtype="float32",
                       crs=UTM, transform=from_origin(grid.bounds[0], grid.bounds[3], 10, 10), nodata=-9999) as d:
        d.write(np.full((1, grid.height, w), height, dtype="float32"))
    return path


def test_geocode_grid_places_the_crop_centre_on_its_map_position(tmp_path, ggp, timing):
    """A map grid around the crop's centre: its geocoded (line, sample) at the centre's map position matches."""
    line_c, sample_c = 10100.0, 11700.0
    # map position of the crop centre from the GGPs, interpolated bilinearly in (azimuth time, pixel): GGP
    # rows sit on burst starts and bursts overlap in time, so lines are not linear in time across GGP rows
    k = int(line_c) // timing.lines_per_burst
    t_c = timing.burst_times[k] + np.timedelta64(
        int(round((line_c - k * timing.lines_per_burst) * timing.azimuth_time_interval * 1e9)), "ns")
    row_t = (ggp["azimuth_time"][:, 0] - ggp["azimuth_time"][0, 0]) / np.timedelta64(1, "ns")
    fr = np.array(np.interp((t_c - ggp["azimuth_time"][0, 0]) / np.timedelta64(1, "ns"), row_t, np.arange(10.0)))
    fc = np.array(np.interp(sample_c, ggp["pixel"][0], np.arange(21.0)))
    lat, lon, h = (geo.radar_to_grid(ggp[v], fr, fc) for v in ("lat", "lon", "height"))
    grid, x, y = _grid_around(float(lon), float(lat))
    dem = _write_dem(tmp_path / "dem.tif", grid, float(h))
    rc = geo.geocode_swath(grid, ANNOTATION, orbit_file=EOF, dem=dem)
    col, row = (x - grid.bounds[0]) / 10 - 0.5, (grid.bounds[3] - y) / 10 - 0.5
    line = geo.radar_to_grid(rc.line, np.array(row), np.array(col))
    sample = geo.radar_to_grid(rc.sample, np.array(row), np.array(col))
    # budget: the GGP grid's linear interpolation of lat/lon over a 1514-line x 1211-sample cell
    print(f"crop centre: d line {float(line - line_c):+.3f}, d sample {float(sample - sample_c):+.3f}")
    assert abs(line - line_c) < 1.0 and abs(sample - sample_c) < 2.0
    # and the real crop pixels are placed: finite where the grid is inside the crop, NaN elsewhere
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # radar geometry, no CRS
        with rasterio.open(CROP) as src:
            amp = np.abs(src.read(1)).astype("float32")
    on_grid = geo.radar_to_grid(amp, rc.line - CROP_LINE0, rc.sample - CROP_SAMPLE0)
    inside = ((rc.line >= CROP_LINE0) & (rc.line <= CROP_LINE0 + 600)
              & (rc.sample >= CROP_SAMPLE0) & (rc.sample <= CROP_SAMPLE0 + 1400))
    assert inside.mean() > 0.5 and np.array_equal(np.isfinite(on_grid), inside)
    assert (rc.azimuth_time[inside] > timing.burst_times[6]).all()


def test_dem_not_covering_the_grid_is_a_clear_error(tmp_path, ann_orbit):
    grid, _, _ = _grid_around(-27.23, 38.70, half=500.0)
    dem = _write_dem(tmp_path / "half_dem.tif", grid, 100.0, cover=0.5)
    with pytest.raises(ValueError, match=r"half_dem\.tif.*s1\.native\.dem.*50\.0%"):
        geo.grid_heights(grid, dem)
    with pytest.raises(FileNotFoundError, match="s1.native.dem"):
        geo.grid_heights(grid, tmp_path / "nope.tif")


def test_dem_gaps_filled_with_the_configured_ellipsoid_height(tmp_path, caplog):
    grid, _, _ = _grid_around(-27.23, 38.70, half=500.0)
    dem = _write_dem(tmp_path / "half_dem.tif", grid, 100.0, cover=0.5)
    with caplog.at_level(logging.WARNING, logger="cropflow.sar.geometry"):
        heights = geo.grid_heights(grid, dem, ellipsoid_height=5.0)
    assert "50.0%" in caplog.text and "s1.native.ellipsoid_height" in caplog.text
    np.testing.assert_allclose(heights[:, : grid.width // 2], 100.0)
    np.testing.assert_allclose(heights[:, grid.width // 2:], 5.0)


def test_ellipsoid_fallback_warns_and_no_height_source_is_an_error(caplog):
    grid, _, _ = _grid_around(-27.23, 38.70, half=200.0)
    with caplog.at_level(logging.WARNING, logger="cropflow.sar.geometry"):
        heights = geo.grid_heights(grid, None, ellipsoid_height=0.0)
    assert (heights == 0.0).all()
    assert any(r.levelno == logging.WARNING and "no DEM configured" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="s1.native.dem.*s1.native.ellipsoid_height"):
        geo.grid_heights(grid, "", ellipsoid_height=None)


def test_ellipsoid_height_moves_range_as_expected(ann_orbit, timing):
    """Raising a point by dh along the vertical shortens slant range by about dh cos(incidence)."""
    lon, lat = -27.23, 38.70
    pts = geo.lla_to_ecef(np.array([lon, lon]), np.array([lat, lat]), np.array([0.0, 100.0]))
    rc = geo.geocode_points(pts, ann_orbit, timing)
    dr = rc.slant_range[0] - rc.slant_range[1]
    assert 100 * np.cos(np.radians(46.5)) - 3 < dr < 100 * np.cos(np.radians(43.5)) + 3


def test_no_orbit_information_is_a_clear_error(tmp_path):
    """An annotation without state vectors (and no orbit file) names the file and the orbit-file setting."""
    src = ANNOTATION
    stripped = tmp_path / src.name
    stripped.write_text(re.sub(r"<orbitList[^>]*>.*?</orbitList>", '<orbitList count="0"></orbitList>',
                               src.read_text(), flags=re.S))
    with pytest.raises(ValueError, match="orbit_dir") as err:
        geo.orbit_from_annotation(stripped)
    assert src.name in str(err.value)
