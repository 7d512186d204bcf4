"""Sentinel-1 SLC geometry: orbit state vectors, zero-Doppler backward geocoding of map pixels, radar -> map.

Conventions:
- times are UTC ``numpy.datetime64[ns]``; inside the solvers they are float seconds since an orbit epoch;
- positions are ECEF (WGS84, "Earth Fixed" frame of the annotation and of the EOF files), metres;
- radar coordinates are fractional (line, sample) of the full swath image of one sub-swath (bursts stacked
  as in the SLC measurement TIFF: burst ``k`` starts at line ``k * lines_per_burst``), pixel centres at
  integer positions.

Orbit interpolation is a piecewise cubic Hermite spline through the state vectors (positions and their
velocities; scipy ``CubicHermiteSpline``): local, so the same code serves the 17 annotation vectors and a
3-hour EOF file, and its velocity is the spline's derivative (consistent with the positions).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
from scipy.interpolate import CubicHermiteSpline

from cropflow.grid import ProjectGrid
from cropflow.raster import read_on_grid
from cropflow.sar.slc import parse_xml, read_annotation

log = logging.getLogger(__name__)

#: speed of light in vacuum, m/s
SPEED_OF_LIGHT = 299_792_458.0
_NS = np.timedelta64(1, "ns")
#: config keys named in error messages
DEM_KEY = "s1.native.dem"
FALLBACK_KEY = "s1.native.ellipsoid_height"


# --------------------------------------------------------------------------------------------------------
# orbit state vectors


@dataclass(frozen=True)
class Orbit:
    """Orbit state vectors: ``time`` (N,) datetime64[ns] UTC, ``position``/``velocity`` (N, 3) ECEF m, m/s."""

    time: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = len(self.time)
        if self.position.shape != (n, 3) or self.velocity.shape != (n, 3):
            raise ValueError(f"{self.source}: orbit arrays must be (N, 3) for N={n} state vectors")
        if n < 4:
            raise ValueError(f"{self.source}: {n} orbit state vectors, at least 4 are needed to interpolate")
        if np.any(np.diff(self.time) <= np.timedelta64(0, "ns")):
            raise ValueError(f"{self.source}: orbit state vector times are not strictly increasing")

    def select(self, index: np.ndarray) -> "Orbit":
        """The state vectors at ``index`` (integer or boolean array)."""
        return Orbit(self.time[index], self.position[index], self.velocity[index], self.source)

    def subset(self, start: np.datetime64, stop: np.datetime64, margin_s: float = 60.0) -> "Orbit":
        """The state vectors within [start - margin, stop + margin] (e.g. a scene's time span)."""
        margin = np.timedelta64(int(margin_s * 1e9), "ns")
        keep = (self.time >= np.datetime64(start, "ns") - margin) & (self.time <= np.datetime64(stop, "ns") + margin)
        if keep.sum() < 4:
            raise ValueError(
                f"{self.source}: the orbit covers {self.time[0]} .. {self.time[-1]}, fewer than 4 state vectors "
                f"within {margin_s} s of {start} .. {stop}; use the orbit file of this acquisition"
            )
        return self.select(keep)


def orbit_from_annotation(annotation: str | os.PathLike) -> Orbit:
    """The orbit state vectors of a product annotation XML (xarray-sentinel ``orbit`` group)."""
    from xarray_sentinel import sentinel1

    path = Path(annotation)
    if not path.exists():
        raise FileNotFoundError(f"Sentinel-1 annotation {path} does not exist")
    try:
        ds = sentinel1.open_orbit_dataset(str(path))
    except (IndexError, KeyError) as exc:
        ds = None
        reason = exc
    if ds is None or ds.sizes.get("azimuth_time", 0) < 4:
        found = reason if ds is None else "fewer than 4"
        raise ValueError(f"{path}: no orbit state vectors in the annotation ({found}); put the product's"
                         " POEORB/RESORB orbit file in s1.native.orbit_dir")
    frame = ds.attrs.get("reference_system")
    if frame not in (None, "Earth Fixed"):
        raise ValueError(f"{path}: orbit reference frame {frame!r}, expected 'Earth Fixed'")
    return Orbit(
        time=ds["azimuth_time"].values.astype("datetime64[ns]"),
        position=ds["position"].transpose("azimuth_time", "axis").values.astype(float),
        velocity=ds["velocity"].transpose("azimuth_time", "axis").values.astype(float),
        source=str(path),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _utc(text: str | None, path: Path) -> np.datetime64:
    if not text or not text.startswith("UTC="):
        raise ValueError(f"{path}: orbit time {text!r} is not of the form 'UTC=YYYY-MM-DDThh:mm:ss.ffffff'")
    return np.datetime64(text[4:], "ns")


def read_eof(path: str | os.PathLike) -> Orbit:
    """Read a Sentinel-1 precise/restituted orbit file (``*_AUX_POEORB_*``/``*_AUX_RESORB_*.EOF``).

    Uses ``Data_Block/List_of_OSVs/OSV`` with ``UTC``, ``X``/``Y``/``Z`` (m) and ``VX``/``VY``/``VZ`` (m/s) in
    the ``EARTH_FIXED`` frame (checked against ``Variable_Header/Ref_Frame``).
    """
    path = Path(path)
    root = parse_xml(path, "orbit file")
    frame = next((el.text for el in root.iter() if _local(el.tag) == "Ref_Frame"), None)
    if frame is not None and frame.strip() != "EARTH_FIXED":
        raise ValueError(f"{path}: orbit reference frame {frame!r}, expected EARTH_FIXED")
    times, pos, vel = [], [], []
    for osv in (el for el in root.iter() if _local(el.tag) == "OSV"):
        fields = {_local(child.tag): child.text for child in osv}
        try:
            times.append(_utc(fields.get("UTC"), path))
            pos.append([float(fields[k]) for k in ("X", "Y", "Z")])  # type: ignore[arg-type]
            vel.append([float(fields[k]) for k in ("VX", "VY", "VZ")])  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: an OSV lacks one of UTC, X, Y, Z, VX, VY, VZ") from exc
    if not times:
        raise ValueError(f"{path}: no OSV state vectors (is it a Sentinel-1 EOF orbit file?)")
    return Orbit(np.array(times, dtype="datetime64[ns]"), np.array(pos), np.array(vel), str(path))


class OrbitInterpolator:
    """Piecewise cubic Hermite interpolation of an orbit (positions with their velocities as derivatives).

    Between two state vectors 10 s apart the Hermite cubic's error is h^4/384 max|x''''| ~ 1 mm for a
    700 km orbit (x'''' ~ omega^4 r). Velocity and acceleration are the spline's derivatives. Times outside the
    state vectors' span are rejected (NaN), not extrapolated.
    """

    def __init__(self, orbit: Orbit) -> None:
        self.orbit = orbit
        self.epoch: np.datetime64 = orbit.time[0]
        t = self.seconds(orbit.time)
        self.start, self.stop = float(t[0]), float(t[-1])
        self._spline = CubicHermiteSpline(t, orbit.position, orbit.velocity, axis=0, extrapolate=False)
        self._velocity = self._spline.derivative(1)
        self._acceleration = self._spline.derivative(2)

    def seconds(self, time: np.ndarray | np.datetime64) -> np.ndarray:
        """Seconds since the orbit epoch of UTC datetime64 ``time``."""
        return (np.asarray(time, dtype="datetime64[ns]") - self.epoch) / _NS * 1e-9

    def datetime(self, seconds: np.ndarray) -> np.ndarray:
        """UTC datetime64[ns] of ``seconds`` since the orbit epoch (NaN -> NaT)."""
        s = np.asarray(seconds, dtype=float)
        ns = np.where(np.isfinite(s), np.round(s * 1e9), 0).astype(np.int64)
        out = self.epoch + ns.astype("timedelta64[ns]")
        return np.where(np.isfinite(s), out, np.datetime64("NaT", "ns"))

    def position(self, t: np.ndarray) -> np.ndarray:
        """ECEF position (..., 3) at ``t`` seconds since the epoch."""
        return self._spline(t)

    def velocity(self, t: np.ndarray) -> np.ndarray:
        """ECEF velocity (..., 3) at ``t`` seconds since the epoch."""
        return self._velocity(t)

    def acceleration(self, t: np.ndarray) -> np.ndarray:
        """ECEF acceleration (..., 3) at ``t`` seconds since the epoch."""
        return self._acceleration(t)


# --------------------------------------------------------------------------------------------------------
# zero-Doppler geocoding


def lla_to_ecef(lon: np.ndarray, lat: np.ndarray, height: np.ndarray) -> np.ndarray:
    """WGS84 geodetic (degrees, ellipsoidal height m) -> ECEF (..., 3) m (pyproj EPSG:4979 -> EPSG:4978)."""
    tr = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    x, y, z = tr.transform(np.asarray(lon, float), np.asarray(lat, float), np.asarray(height, float))
    return np.stack([x, y, z], axis=-1)


def grid_to_ecef(grid: ProjectGrid, heights: np.ndarray) -> np.ndarray:
    """ECEF (ny, nx, 3) of the grid's pixel centres at ellipsoidal ``heights`` (ny, nx)."""
    if heights.shape != grid.shape:
        raise ValueError(f"heights shape {heights.shape} does not match the grid shape {grid.shape}")
    x, y = grid.coords()
    xx, yy = np.meshgrid(x, y)
    lon, lat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    return lla_to_ecef(lon, lat, heights)


def zero_doppler(
    points: np.ndarray,
    interpolator: OrbitInterpolator,
    t_init: float | None = None,
    max_iter: int = 20,
    tol_s: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-Doppler azimuth time and slant range of ECEF ``points`` (..., 3).

    Solves f(t) = (P - S(t)) . V(t) = 0 by Newton iterations, f'(t) = -|V(t)|^2 + (P - S(t)) . A(t)
    (range-Doppler equation at zero Doppler, e.g. Small & Schubert 2008, Eq. 2), then R = |P - S(t)|.
    Returns (t seconds since the orbit epoch, R metres), NaN where no solution lies within the orbit span.
    """
    p = np.asarray(points, dtype=float)
    flat = p.reshape(-1, 3)
    t0 = 0.5 * (interpolator.start + interpolator.stop) if t_init is None else float(t_init)
    t = np.full(flat.shape[0], t0)
    active = np.all(np.isfinite(flat), axis=1)
    t[~active] = np.nan
    for _ in range(max_iter):
        if not active.any():
            break
        ta = t[active]
        d = flat[active] - interpolator.position(ta)
        v = interpolator.velocity(ta)
        f = np.einsum("ij,ij->i", d, v)
        df = -np.einsum("ij,ij->i", v, v) + np.einsum("ij,ij->i", d, interpolator.acceleration(ta))
        step = f / df
        tn = np.clip(ta - step, interpolator.start, interpolator.stop)
        t[active] = tn
        done = ~(np.abs(step) > tol_s)  # NaN steps stop too
        idx = np.flatnonzero(active)
        active[idx[done]] = False
    # a root at the clip bounds is not a zero-Doppler solution: the point is outside the orbit span
    s = interpolator.position(t)
    v = interpolator.velocity(t)
    d = flat - s
    residual = np.abs(np.einsum("ij,ij->i", d, v)) / np.maximum(np.linalg.norm(v, axis=1), 1e-9)
    bad = ~(residual < 0.01)  # along-track offset (P - S).V/|V| of the solution, metres
    t[bad] = np.nan
    r = np.linalg.norm(d, axis=1)
    r[bad] = np.nan
    return t.reshape(p.shape[:-1]), r.reshape(p.shape[:-1])


# --------------------------------------------------------------------------------------------------------
# swath timing and radar coordinates


@dataclass(frozen=True)
class SwathTiming:
    """Timing of one SLC sub-swath image (from its annotation).

    ``burst_times`` (nb,) are the first-line azimuth times of the bursts (empty for a non-burst image, whose
    line time is ``first_line_time + line * azimuth_time_interval``); ``burst_valid_lines`` (nb, 2) the first
    and last line within each burst holding valid samples.
    """

    first_line_time: np.datetime64
    azimuth_time_interval: float
    slant_range_time: float
    range_sampling_rate: float
    number_of_lines: int
    number_of_samples: int
    lines_per_burst: int
    burst_times: np.ndarray
    burst_valid_lines: np.ndarray
    radar_frequency: float
    source: str = ""

    @property
    def stop_time(self) -> np.datetime64:
        """Azimuth time of the last line of the image (of the last burst for TOPS)."""
        if len(self.burst_times):
            last = self.burst_times[-1]
            n = self.lines_per_burst - 1
        else:
            last, n = self.first_line_time, self.number_of_lines - 1
        return last + np.timedelta64(int(round(n * self.azimuth_time_interval * 1e9)), "ns")


def swath_timing_from_annotation(annotation: str | os.PathLike) -> SwathTiming:
    """The image timing of a Sentinel-1 SLC annotation XML (parsed by :func:`cropflow.sar.slc.read_annotation`)."""
    ann = read_annotation(annotation)
    valid = []
    for burst in ann.bursts:
        rows = np.flatnonzero(burst.first_valid_sample >= 0)
        valid.append((rows[0], rows[-1]) if rows.size else (0, -1))
    return SwathTiming(
        first_line_time=ann.product_first_line_time,
        azimuth_time_interval=ann.azimuth_time_interval,
        slant_range_time=ann.slant_range_time,
        range_sampling_rate=ann.range_sampling_rate,
        number_of_lines=ann.number_of_lines,
        number_of_samples=ann.number_of_samples,
        lines_per_burst=ann.lines_per_burst if ann.bursts else 0,
        burst_times=np.array([b.azimuth_time for b in ann.bursts], dtype="datetime64[ns]"),
        burst_valid_lines=np.array(valid, dtype=int).reshape(-1, 2),
        radar_frequency=ann.radar_frequency,
        source=str(ann.path),
    )


def select_burst(azimuth_time: np.ndarray, timing: SwathTiming) -> np.ndarray:
    """Burst index per azimuth time: the burst whose valid lines contain it, nearest its centre in overlaps.

    Splitting overlaps at the mid-point between burst centres is the usual TOPS deburst rule. -1 where no
    burst's valid lines contain the time (or the time is NaT).
    """
    at = np.asarray(azimuth_time, dtype="datetime64[ns]")
    nb = len(timing.burst_times)
    best = np.full(at.shape, -1, dtype=int)
    best_dist = np.full(at.shape, np.inf)
    ati = timing.azimuth_time_interval
    for k in range(nb):
        rel = (at - timing.burst_times[k]) / _NS * 1e-9 / ati  # line within burst k
        first, last = timing.burst_valid_lines[k]
        dist = np.abs(rel - 0.5 * (first + last))
        inside = (rel >= first - 0.5) & (rel <= last + 0.5) & (dist < best_dist)
        best[inside] = k
        best_dist[inside] = dist[inside]
    return best


def radar_coordinates(
    azimuth_time: np.ndarray,
    slant_range: np.ndarray,
    timing: SwathTiming,
    burst: int | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (line, sample) of zero-Doppler azimuth times and slant ranges in the swath image.

    line = k * lines_per_burst + (t - t_burst[k]) / azimuth_time_interval for burst k (TOPS SLC; for a
    non-burst image line = (t - t_first_line) / azimuth_time_interval);
    sample = (2 R / c - slant_range_time) * range_sampling_rate (S1 product spec, image annotation).
    ``burst`` None picks the burst per pixel with :func:`select_burst` (NaN line outside every burst's valid
    lines); an int or array forces the burst.
    """
    at = np.asarray(azimuth_time, dtype="datetime64[ns]")
    sample = (2.0 * np.asarray(slant_range, float) / SPEED_OF_LIGHT - timing.slant_range_time) \
        * timing.range_sampling_rate
    ati = timing.azimuth_time_interval
    if not len(timing.burst_times):
        line = (at - timing.first_line_time) / _NS * 1e-9 / ati
        return line.astype(float), sample
    k = select_burst(at, timing) if burst is None else np.broadcast_to(np.asarray(burst, dtype=int), at.shape)
    if np.any((k >= len(timing.burst_times)) | ((k < 0) & (burst is not None))):
        raise ValueError(f"burst index out of range 0..{len(timing.burst_times) - 1} for {timing.source}")
    kk = np.clip(k, 0, None)
    line = kk * timing.lines_per_burst + (at - timing.burst_times[kk]) / _NS * 1e-9 / ati
    line = np.where(k >= 0, line, np.nan).astype(float)
    return line, sample


@dataclass(frozen=True)
class RadarCoordinates:
    """Per map pixel: zero-Doppler azimuth time (datetime64[ns]), slant range (m), fractional line and sample."""

    azimuth_time: np.ndarray
    slant_range: np.ndarray
    line: np.ndarray
    sample: np.ndarray


def geocode_points(
    points: np.ndarray,
    orbit: Orbit,
    timing: SwathTiming,
    burst: int | np.ndarray | None = None,
) -> RadarCoordinates:
    """Backward geocoding of ECEF ``points`` (..., 3) into one sub-swath: zero-Doppler time, range, line, sample."""
    interp = OrbitInterpolator(orbit)
    mid = timing.first_line_time + (timing.stop_time - timing.first_line_time) / 2
    t, r = zero_doppler(points, interp, t_init=float(interp.seconds(mid)))
    at = interp.datetime(t)
    line, sample = radar_coordinates(at, r, timing, burst)
    return RadarCoordinates(at, r, line, sample)


def geocode_grid(
    grid: ProjectGrid,
    heights: np.ndarray,
    orbit: Orbit,
    timing: SwathTiming,
    burst: int | None = None,
    block_rows: int = 256,
) -> RadarCoordinates:
    """Backward geocoding of the grid's pixel centres at ellipsoidal ``heights`` (ny, nx), in row blocks."""
    ny, nx = grid.shape
    at = np.full((ny, nx), np.datetime64("NaT", "ns"))
    rng, line, sample = (np.full((ny, nx), np.nan) for _ in range(3))
    x, y = grid.coords()
    to_lonlat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    n_blocks = math.ceil(ny / block_rows)
    for b, r0 in enumerate(range(0, ny, block_rows)):
        r1 = min(ny, r0 + block_rows)
        xx, yy = np.meshgrid(x, y[r0:r1])
        lon, lat = to_lonlat.transform(xx, yy)
        rc = geocode_points(lla_to_ecef(lon, lat, heights[r0:r1]), orbit, timing, burst)
        at[r0:r1], rng[r0:r1], line[r0:r1], sample[r0:r1] = rc.azimuth_time, rc.slant_range, rc.line, rc.sample
        if n_blocks > 1:
            log.info("geocoded rows %d-%d of %d (block %d/%d)", r0, r1 - 1, ny, b + 1, n_blocks)
    return RadarCoordinates(at, rng, line, sample)


# --------------------------------------------------------------------------------------------------------
# heights on the grid


def grid_heights(
    grid: ProjectGrid,
    dem: str | os.PathLike | None,
    ellipsoid_height: float | None = None,
) -> np.ndarray:
    """Ellipsoidal heights (ny, nx) of the grid's pixel centres: the DEM bilinearly resampled onto the grid.

    The DEM must hold heights above the WGS84 ellipsoid (no geoid model is applied). Without a DEM
    (config ``s1.native.dem`` empty) the constant ``ellipsoid_height`` (``s1.native.ellipsoid_height``) is
    used with a WARNING. A DEM that leaves grid pixels uncovered (outside it or nodata) raises ValueError
    unless ``ellipsoid_height`` is set, which then fills those pixels (WARNING with the share).
    """
    if dem in (None, ""):
        if ellipsoid_height is None:
            raise ValueError(f"no DEM configured ({DEM_KEY}) and no ellipsoid-height fallback "
                             f"({FALLBACK_KEY}): set one of them")
        log.warning("no DEM configured (%s): geocoding on a constant ellipsoid height of %.1f m; expect "
                    "position errors of about dh / tan(incidence) in slant range where the terrain differs",
                    DEM_KEY, ellipsoid_height)
        return np.full(grid.shape, float(ellipsoid_height))
    path = Path(dem)
    if not path.exists():
        raise FileNotFoundError(f"DEM {path} ({DEM_KEY}) does not exist: fix the path or set {DEM_KEY}: '' and "
                                f"{FALLBACK_KEY} to geocode on the ellipsoid")
    heights = read_on_grid(path, grid, bands=[1], resampling="bilinear", dtype="float64")[0]
    uncovered = ~np.isfinite(heights)
    share = float(uncovered.mean())
    if share > 0:
        if ellipsoid_height is None:
            raise ValueError(
                f"DEM {path} ({DEM_KEY}) does not cover {share:.1%} of the grid {grid.bounds} ({grid.crs}): "
                f"use a DEM covering the whole AOI, or set {FALLBACK_KEY} to fill the gaps with a constant height")
        log.warning("DEM %s leaves %.1f%% of the grid uncovered: filled with the ellipsoid height %.1f m (%s)",
                    path, 100 * share, ellipsoid_height, FALLBACK_KEY)
        heights[uncovered] = float(ellipsoid_height)
    return heights


# --------------------------------------------------------------------------------------------------------
# radar -> map


def radar_to_grid(values_radar: np.ndarray, line: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a radar-geometry raster (..., lines, samples) at fractional (line, sample).

    v = (1-a)(1-b) v[l0,s0] + (1-a) b v[l0,s0+1] + a (1-b) v[l0+1,s0] + a b v[l0+1,s0+1], a = line - l0,
    b = sample - s0. NaN where (line, sample) is NaN or outside [0, lines-1] x [0, samples-1]. Works for real
    and complex rasters; the output has shape (..., *line.shape).
    """
    v = np.asarray(values_radar)
    nl, ns = v.shape[-2:]
    li, si = np.asarray(line, float), np.asarray(sample, float)
    inside = (li >= 0) & (li <= nl - 1) & (si >= 0) & (si <= ns - 1)
    lc, sc = np.where(inside, li, 0.0), np.where(inside, si, 0.0)
    l0 = np.clip(np.floor(lc).astype(np.intp), 0, max(nl - 2, 0))
    s0 = np.clip(np.floor(sc).astype(np.intp), 0, max(ns - 2, 0))
    l1, s1 = np.minimum(l0 + 1, nl - 1), np.minimum(s0 + 1, ns - 1)
    a, b = lc - l0, sc - s0
    out = ((1 - a) * (1 - b) * v[..., l0, s0] + (1 - a) * b * v[..., l0, s1]
           + a * (1 - b) * v[..., l1, s0] + a * b * v[..., l1, s1])
    dtype = np.result_type(v.dtype, np.float32)
    nan = np.array(np.nan, dtype=dtype)
    return np.where(inside, out, nan).astype(dtype)


def geocode_swath(
    grid: ProjectGrid,
    annotation: str | os.PathLike,
    *,
    orbit_file: str | os.PathLike | None = None,
    dem: str | os.PathLike | None = None,
    ellipsoid_height: float | None = None,
    burst: int | None = None,
) -> RadarCoordinates:
    """Radar coordinates of every grid pixel in one SLC sub-swath (its annotation XML).

    Orbit: the EOF file if given (cut to the scene time +- 60 s), else the annotation's state vectors.
    Heights: :func:`grid_heights` (DEM or ellipsoid fallback).
    """
    timing = swath_timing_from_annotation(annotation)
    orbit = read_eof(orbit_file).subset(timing.first_line_time, timing.stop_time) if orbit_file \
        else orbit_from_annotation(annotation)
    heights = grid_heights(grid, dem, ellipsoid_height)
    return geocode_grid(grid, heights, orbit, timing, burst)
