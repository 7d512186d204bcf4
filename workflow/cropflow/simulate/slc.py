"""Simulated Sentinel-1 IW SLC products: SAFE zips in the real layout whose pixels carry the simulated signals.

Template: a real S1B IW SLC SAFE (``resources/s1/``, see its PROVENANCE.md): its manifest, product
annotations, calibration and noise XMLs give the structure and the instrument values (burst timing, pulse
and sampling rates, Doppler and FM-rate polynomials, calibration LUTs). A simulated product is that
acquisition moved over the AOI:

- geometry: the template orbit is rotated about the Earth's axis by ``rotation`` (longitude) and read
  ``orbit_shift`` seconds earlier or later along the orbit (latitude), so that the AOI centre is imaged by
  the template's mid burst at the incidence angle the acquisition plan gives for the track (kept inside
  IW1-IW2, the sub-swaths the template annotates). Every date of a track uses that same geometry (repeat
  orbits of zero perpendicular baseline, burst timing locked to the ascending node); times move to the date;
- extent: only the sub-swaths, bursts and samples that image the AOI plus a margin are written (a real
  slice holds 9-10 bursts x 21 000-25 000 samples per sub-swath); annotations, LUTs and the geolocation grid
  are cut and recomputed for that extent;
- pixels: for each SLC pixel the ground point is found by forward range-Doppler geocoding (range sphere,
  zero-Doppler plane and the DEM surface), and the signal model of ``cropflow.simulate.sentinel1`` at that
  map pixel gives the power of each scattering component (canopy, background, built-up) on that date.
  Each component is a circular complex Gaussian field with the component's VV-VH correlation; between
  consecutive dates of the track it is an AR(1) process, z_t = g z_{t-1} + sqrt(1 - g^2) w_t, with g the
  component's 12-day coherence, so the interferometric coherence of the sum is the model's power-weighted
  coherence. A noise floor is added independently per date. The complex value is scaled by the sigmaNought
  LUT (|DN|^2 / A^2 = sigma0), given the geometric phase exp(-j 4 pi R / lambda) and the TOPS azimuth ramp of
  its burst, zeroed outside the valid samples, rounded to complex int16 and written as the measurement TIFF.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.windows import Window
from scipy import ndimage

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid, snap_bounds
from cropflow.sar.geometry import (
    SPEED_OF_LIGHT,
    Orbit,
    OrbitInterpolator,
    orbit_from_annotation,
)
from cropflow.sar.slc import SwathAnnotation, read_annotation
from cropflow.sar.tops import burst_tops, deramp_phase
from cropflow.simulate.sentinel1 import (
    NOISE_FLOOR,
    RadarLandscape,
    RadarScene,
    _parcel_radar,
    datatake_id,
    pair_coherence_gammas,
    pixel_components,
    scene_name,
)

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parents[3] / "resources" / "s1" / (
    "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.zip")
_WGS84_A, _WGS84_B = 6378137.0, 6356752.314245
_ECEF_TO_LLA = pyproj.Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?$")
#: image numbers of the measurement files in a 1SDV IW product (manifest order: VH IW1-3, then VV IW1-3)
_IMAGE_NUMBER = {("iw1", "vh"): 1, ("iw2", "vh"): 2, ("iw3", "vh"): 3, ("iw1", "vv"): 4, ("iw2", "vv"): 5,
                 ("iw3", "vv"): 6}
#: how far beyond the AOI the written extent reaches (m): the engine's filter windows and geocoding margin
EXTENT_MARGIN_M = 800.0
#: the AOI is kept this far (degrees of incidence) inside the near edge of IW1 and the far edge of IW2
_INCIDENCE_MARGIN = 1.5
_LATTICE = (16, 32)  # forward-geocoding lattice step (lines, samples); bilinear in between


# ---------------------------------------------------------------------------------------------- template

@dataclass(frozen=True)
class SwathTemplate:
    swath: str                       # "iw1"
    annotation: Path                 # template annotation XML (one polarisation; both share the geometry)
    ann: SwathAnnotation
    calibration: Path
    noise: Path
    incidence: tuple[float, float]   # incidence range of the swath (deg)


@dataclass(frozen=True)
class Template:
    folder: Path                     # the extracted template SAFE
    name: str
    manifest: str
    orbit: Orbit
    swaths: dict[str, SwathTemplate]


def _geolocation(root: ET.Element) -> dict[str, np.ndarray]:
    points = root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
    keys = ("line", "pixel", "slantRangeTime", "latitude", "longitude", "incidenceAngle")
    return {k: np.array([float(p.findtext(k)) for p in points]) for k in keys}


def load_template(path: str | Path, workdir: str | Path) -> Template:
    """Extract the template SAFE zip under ``workdir`` and index its sub-swaths (any polarisation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sentinel-1 template product {path} does not exist (it ships in resources/s1/)")
    with zipfile.ZipFile(path) as z:
        z.extractall(workdir)
    safe = next(Path(workdir).glob("*.SAFE"))
    swaths: dict[str, SwathTemplate] = {}
    for ann_path in sorted((safe / "annotation").glob("s1?-iw?-slc-*.xml")):
        swath = ann_path.name.split("-")[1]
        if swath in swaths:
            continue
        geo = _geolocation(ET.parse(ann_path).getroot())
        cal = ann_path.parent / "calibration" / f"calibration-{ann_path.name}"
        swaths[swath] = SwathTemplate(swath, ann_path, read_annotation(ann_path), cal,
                                      ann_path.parent / "calibration" / f"noise-{ann_path.name}",
                                      (float(geo["incidenceAngle"].min()), float(geo["incidenceAngle"].max())))
    if not swaths:
        raise ValueError(f"{path}: no IW sub-swath annotation in the template product")
    first = next(iter(swaths.values()))
    return Template(safe, safe.name.removesuffix(".SAFE"), (safe / "manifest.safe").read_text(),
                    orbit_from_annotation(first.annotation), swaths)


# ---------------------------------------------------------------------------------------------- geometry

def range_doppler_point(position: np.ndarray, velocity: np.ndarray, slant_range: np.ndarray,
                        surface_height: np.ndarray, iterations: int = 12) -> np.ndarray:
    """ECEF ground points (n, 3) seen at zero Doppler and ``slant_range`` by a right-looking radar.

    Newton's method on the range-Doppler equations (Curlander & McDonough 1991, Sect. 8.2):
    |P - S|^2 = R^2, (P - S) . V = 0, x^2/(a+h)^2 + y^2/(a+h)^2 + z^2/(b+h)^2 = 1 (the ellipsoid raised by h).
    The start point looks 35 degrees off nadir to the right of the velocity.
    """
    s, v = np.asarray(position, float), np.asarray(velocity, float)
    r = np.asarray(slant_range, float)[:, None]
    up = s / np.linalg.norm(s, axis=1, keepdims=True)
    right = np.cross(v, up)
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    look = math.radians(35.0)
    p = s + r * (-math.cos(look) * up + math.sin(look) * right)
    ax = (_WGS84_A + surface_height)[:, None] ** 2
    bz = (_WGS84_B + surface_height) ** 2
    scale = np.concatenate([ax, ax, bz[:, None]], axis=1)
    for _ in range(iterations):
        d = p - s
        f = np.stack([np.einsum("ij,ij->i", d, d) - r[:, 0] ** 2, np.einsum("ij,ij->i", d, v),
                      np.einsum("ij,ij->i", p * p, 1.0 / scale) - 1.0], axis=1)
        jac = np.stack([2.0 * d, v, 2.0 * p / scale], axis=1)
        step = np.linalg.solve(jac, f[..., None])[..., 0]
        p = p - step
        if np.max(np.abs(step)) < 1e-4:
            break
    return p


def ground_points(interp: OrbitInterpolator, seconds: np.ndarray, slant_range: np.ndarray,
                  height: Callable[[np.ndarray, np.ndarray], np.ndarray], iterations: int = 5
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, ellipsoidal height, ECEF) of the ground imaged at (orbit seconds, slant range), on the terrain
    ``height(lon, lat)``: the raised ellipsoid is corrected until the point's geodetic height matches the DEM."""
    t = np.asarray(seconds, float).ravel()
    rng = np.broadcast_to(np.asarray(slant_range, float), np.shape(seconds)).ravel()
    s, v = interp.position(t), interp.velocity(t)
    raised = np.zeros(t.size)
    for _ in range(iterations):
        p = range_doppler_point(s, v, rng, raised)
        lon, lat, h = _ECEF_TO_LLA.transform(p[:, 0], p[:, 1], p[:, 2])
        target = height(lon, lat)
        raised += target - h
    shape = np.shape(seconds)
    return lon.reshape(shape), lat.reshape(shape), h.reshape(shape), p.reshape(*shape, 3)


def incidence_angle(ground: np.ndarray, lon: np.ndarray, lat: np.ndarray, satellite: np.ndarray) -> np.ndarray:
    """Angle (deg) between the ellipsoid normal at the ground point and the direction to the satellite."""
    lo, la = np.radians(lon), np.radians(lat)
    normal = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    los = satellite - ground
    los /= np.linalg.norm(los, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.einsum("...i,...i->...", normal, los), -1.0, 1.0)))


def rotated_orbit(orbit: Orbit, rotation: float, shift_s: float) -> Orbit:
    """The orbit turned by ``rotation`` rad about the z axis, its state vectors dated ``shift_s`` s earlier:
    O'(t) = Rz O(t + shift). A rotation about the Earth's axis maps ECEF orbits onto ECEF orbits."""
    c, s = math.cos(rotation), math.sin(rotation)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    dt = np.timedelta64(int(round(shift_s * 1e9)), "ns")
    return Orbit(orbit.time - dt, orbit.position @ rz.T, orbit.velocity @ rz.T, f"{orbit.source} (moved)")


@dataclass(frozen=True)
class SwathExtent:
    """The part of one template sub-swath a simulated product holds, and where its pixels look."""

    template: SwathTemplate
    bursts: tuple[int, int]          # first, last+1 template burst
    samples: tuple[int, int]         # first, last+1 template sample
    lattice_lines: np.ndarray        # product lines of the forward-geocoding lattice
    lattice_samples: np.ndarray
    lattice_xy: np.ndarray           # (2, nl, ns) map x, y of the lattice points
    lattice_lonlat: np.ndarray       # (2, nl, ns)
    lattice_height: np.ndarray
    lattice_incidence: np.ndarray

    @property
    def n_lines(self) -> int:
        return (self.bursts[1] - self.bursts[0]) * self.template.ann.lines_per_burst

    @property
    def n_samples(self) -> int:
        return self.samples[1] - self.samples[0]


@dataclass(frozen=True)
class TrackGeometry:
    """A relative orbit's simulated geometry, shared by all its dates (template clock)."""

    relative_orbit: int
    orbit: Orbit
    incidence: float
    swaths: dict[str, SwathExtent]


def _line_seconds(interp: OrbitInterpolator, ann: SwathAnnotation, lines: np.ndarray) -> np.ndarray:
    return interp.seconds(ann.line_azimuth_time(lines))


def _forward(interp: OrbitInterpolator, ann: SwathAnnotation, lines: np.ndarray, samples: np.ndarray,
             height: Callable, grid: ProjectGrid) -> tuple[np.ndarray, ...]:
    """Lattice of template (lines x samples) -> (map x, map y, lon, lat, height, incidence), each (nl, ns)."""
    tt, ss = np.meshgrid(_line_seconds(interp, ann, lines), samples, indexing="ij")
    rng = SPEED_OF_LIGHT / 2 * ann.pixel_slant_range_time(ss)
    lon, lat, h, p = ground_points(interp, tt, rng, height)
    inc = incidence_angle(p, lon, lat, interp.position(tt.ravel()).reshape(p.shape))
    x, y = pyproj.Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
    return np.asarray(x), np.asarray(y), lon, lat, h, inc


def place_track(template: Template, relative_orbit: int, incidence: float, lon: float, lat: float,
                grid: ProjectGrid, height: Callable, aoi_bounds: tuple[float, float, float, float],
                at_burst_edge: bool = False) -> TrackGeometry:
    """Move the template acquisition so that it images (lon, lat) at ``incidence`` (clamped to IW1-IW2) from
    its mid burst (its centre line, or with ``at_burst_edge`` its first line, so that a slice boundary
    between bursts can cross (lon, lat)), and find the bursts and samples of each sub-swath that see the AOI
    bounds (grid CRS)."""
    near = min(s.incidence[0] for s in template.swaths.values()) + _INCIDENCE_MARGIN
    far = max(s.incidence[1] for s in template.swaths.values()) - _INCIDENCE_MARGIN
    inc = min(max(incidence, near), far)
    if inc != incidence:
        logger.info("relative orbit %d: AOI placed at %.1f deg incidence (plan %.1f) inside the template's "
                    "sub-swaths", relative_orbit, inc, incidence)
    sw = next(s for s in sorted(template.swaths.values(), key=lambda s: s.swath) if inc <= s.incidence[1])
    geo = _geolocation(ET.parse(sw.annotation).getroot())
    first_row = geo["line"] == geo["line"].min()
    order = np.argsort(geo["incidenceAngle"][first_row])
    tau = np.interp(inc, geo["incidenceAngle"][first_row][order], geo["slantRangeTime"][first_row][order])
    slant = SPEED_OF_LIGHT / 2 * tau
    interp = OrbitInterpolator(template.orbit)
    mid_burst = len(sw.ann.bursts) // 2
    mid_line = sw.ann.bursts[mid_burst].first_line + (0 if at_burst_edge else sw.ann.lines_per_burst // 2)
    t_c = float(_line_seconds(interp, sw.ann, np.array([mid_line]))[0])
    lo, hi = interp.start + 1.0, interp.stop - 1.0

    def lat_at(t: float) -> tuple[float, float]:
        glon, glat, _, _ = ground_points(interp, np.array([t]), np.array([slant]), lambda x, y: height(lon, lat)
                                         * np.ones_like(x))
        return float(glon[0]), float(glat[0])

    descending = lat_at(lo)[1] > lat_at(hi)[1]
    for _ in range(60):  # bisection: the ground latitude is monotonic in time along a pass
        mid = 0.5 * (lo + hi)
        if (lat_at(mid)[1] > lat) == descending:
            lo = mid
        else:
            hi = mid
    t_o = 0.5 * (lo + hi)
    if min(abs(t_o - interp.start), abs(t_o - interp.stop)) < 2.0:
        raise ValueError(f"the template orbit does not reach latitude {lat:.2f}: it spans "
                         f"{template.orbit.time[0]} .. {template.orbit.time[-1]}")
    rotation = math.radians(lon - lat_at(t_o)[0])
    orbit = rotated_orbit(template.orbit, rotation, t_o - t_c)
    moved = OrbitInterpolator(orbit)
    x0, y0, x1, y1 = aoi_bounds
    box = (x0 - EXTENT_MARGIN_M, y0 - EXTENT_MARGIN_M, x1 + EXTENT_MARGIN_M, y1 + EXTENT_MARGIN_M)
    swaths: dict[str, SwathExtent] = {}
    for name, st in sorted(template.swaths.items()):
        ann = st.ann
        lines = np.arange(0, ann.number_of_lines, 50)
        samples = np.arange(0, ann.number_of_samples, 100)
        x, y, *_ = _forward(moved, ann, lines, samples, height, grid)
        inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
        if not inside.any():
            continue
        li, si = np.nonzero(inside)
        b0 = int(lines[li.min()] // ann.lines_per_burst)
        b1 = min(int(lines[li.max()] // ann.lines_per_burst) + 1, len(ann.bursts))
        s0 = max(int(samples[si.min()]) - 100, 0)
        s1 = min(int(samples[si.max()]) + 100, ann.number_of_samples)
        swaths[name] = swath_extent(st, (b0, b1), (s0, s1), moved, height, grid)
        logger.info("relative orbit %d %s: bursts %d-%d, samples %d-%d of the template", relative_orbit, name,
                    b0, b1 - 1, s0, s1 - 1)
    if not swaths:
        raise ValueError(f"relative orbit {relative_orbit}: the moved template does not image the AOI")
    return TrackGeometry(relative_orbit, orbit, inc, swaths)


def swath_extent(st: SwathTemplate, bursts: tuple[int, int], samples: tuple[int, int], interp: OrbitInterpolator,
                 height: Callable, grid: ProjectGrid) -> SwathExtent:
    """The extent with its forward-geocoded lattice (every _LATTICE lines and samples, and the last ones)."""
    ann = st.ann
    n_lines, n_samples = (bursts[1] - bursts[0]) * ann.lines_per_burst, samples[1] - samples[0]
    lines = np.unique(np.r_[np.arange(0, n_lines, _LATTICE[0]), n_lines - 1])
    cols = np.unique(np.r_[np.arange(0, n_samples, _LATTICE[1]), n_samples - 1])
    x, y, lon, lat, h, inc = _forward(interp, ann, lines + bursts[0] * ann.lines_per_burst, cols + samples[0],
                                      height, grid)
    return SwathExtent(st, bursts, samples, lines, cols, np.stack([x, y]), np.stack([lon, lat]), h, inc)


def map_index(ext: SwathExtent, lines: np.ndarray, grid: ProjectGrid) -> np.ndarray:
    """Flat index of the grid pixel under every product pixel of ``lines`` (all samples): the lattice's map
    coordinates interpolated bilinearly, then the nearest pixel (clipped to the grid's edge)."""
    li = np.interp(lines, ext.lattice_lines, np.arange(ext.lattice_lines.size))
    si = np.interp(np.arange(ext.n_samples), ext.lattice_samples, np.arange(ext.lattice_samples.size))
    coords = np.meshgrid(li, si, indexing="ij")
    x = ndimage.map_coordinates(ext.lattice_xy[0], coords, order=1)
    y = ndimage.map_coordinates(ext.lattice_xy[1], coords, order=1)
    x0, _, _, y1 = grid.bounds
    col = np.clip(np.floor((x - x0) / grid.resolution), 0, grid.width - 1).astype(np.int64)
    row = np.clip(np.floor((y1 - y) / grid.resolution), 0, grid.height - 1).astype(np.int64)
    return row * grid.width + col


# ---------------------------------------------------------------------------------------------- XML writers

def _iso(t: np.datetime64 | datetime) -> str:
    return str(np.datetime64(t, "us"))


def _shift_times(root: ET.Element, shift: np.timedelta64) -> None:
    """Move every ISO-8601 time in the tree by ``shift``."""
    for el in root.iter():
        if el.text and _ISO.match(el.text.strip()):
            el.text = _iso(np.datetime64(el.text.strip(), "ns") + shift)


def _set(root: ET.Element, path: str, value: object) -> None:
    node = root.find(path)
    if node is None:
        raise ValueError(f"template annotation has no {path}")
    node.text = value if isinstance(value, str) else f"{value}"


def _resample_vectors(vectors: list[ET.Element], luts: Sequence[str], line_offset: int, n_lines: int,
                      lines_per_burst: int, sample_offset: int, n_samples: int, step: int) -> list[ET.Element]:
    """Calibration/noise range vectors re-indexed to the product extent: lines shifted, pixels every ``step``
    (and the last sample), LUT values interpolated from the template vector at the same template samples."""
    pixels = np.unique(np.r_[np.arange(0, n_samples, step), n_samples - 1])
    out = []
    for vec in vectors:
        line = int(vec.findtext("line")) - line_offset
        if line < -lines_per_burst or line > n_lines + lines_per_burst:
            continue
        vec = copy.deepcopy(vec)
        vec.find("line").text = str(line)
        old = np.array(vec.findtext("pixel").split(), float)
        vec.find("pixel").text = " ".join(str(p) for p in pixels)
        vec.find("pixel").set("count", str(pixels.size))
        for lut in luts:
            values = np.interp(pixels + sample_offset, old, np.array(vec.findtext(lut).split(), float))
            vec.find(lut).text = " ".join(f"{v:.6e}" for v in values)
            vec.find(lut).set("count", str(pixels.size))
        out.append(vec)
    return out


def _replace_list(parent: ET.Element, items: list[ET.Element]) -> None:
    for child in list(parent):
        parent.remove(child)
    parent.extend(items)
    parent.set("count", str(len(items)))


@dataclass(frozen=True)
class ProductTiming:
    """One date of a track: the clock shift from the template and the product's identity."""

    shift: np.timedelta64            # product time = template time + shift
    absolute_orbit: int
    datatake: int
    stem: Callable[[str, str], str]  # (swath, pol) -> measurement file stem


def annotation_xml(ext: SwathExtent, pol: str, timing: ProductTiming, geometry: TrackGeometry) -> ET.Element:
    """The product annotation of one sub-swath and polarisation, cut to the extent and moved in time."""
    st = ext.template
    root = copy.deepcopy(ET.parse(st.annotation).getroot())
    ann = st.ann
    lpb, (b0, b1), (s0, s1) = ann.lines_per_burst, ext.bursts, ext.samples
    _shift_times(root, timing.shift)
    first = ann.bursts[b0].azimuth_time + timing.shift
    last = ann.bursts[b1 - 1].azimuth_time + timing.shift + np.timedelta64(
        int(round((lpb - 1) * ann.azimuth_time_interval * 1e9)), "ns")
    hdr = "adsHeader/"
    _set(root, hdr + "missionId", "S1A")
    _set(root, hdr + "polarisation", pol.upper())
    _set(root, hdr + "startTime", _iso(first))
    _set(root, hdr + "stopTime", _iso(last))
    _set(root, hdr + "absoluteOrbitNumber", timing.absolute_orbit)
    _set(root, hdr + "missionDataTakeId", timing.datatake)
    _set(root, hdr + "imageNumber", f"{_IMAGE_NUMBER[(st.swath, pol)]:03d}")
    img = "imageAnnotation/imageInformation/"
    _set(root, img + "productFirstLineUtcTime", _iso(first))
    _set(root, img + "productLastLineUtcTime", _iso(last))
    _set(root, img + "slantRangeTime", f"{ann.slant_range_time + s0 / ann.range_sampling_rate:.15e}")
    _set(root, img + "numberOfSamples", ext.n_samples)
    _set(root, img + "numberOfLines", ext.n_lines)
    # orbit: the moved template orbit on the product clock
    orbit_list = root.find("generalAnnotation/orbitList")
    vectors = []
    for t, p, v in zip(geometry.orbit.time + timing.shift, geometry.orbit.position, geometry.orbit.velocity):
        el = ET.Element("orbit")
        ET.SubElement(el, "time").text = _iso(t)
        ET.SubElement(el, "frame").text = "Earth Fixed"
        for tag, vec in (("position", p), ("velocity", v)):
            node = ET.SubElement(el, tag)
            for axis, value in zip("xyz", vec):
                ET.SubElement(node, axis).text = f"{value:.9e}"
        vectors.append(el)
    _replace_list(orbit_list, vectors)
    # bursts
    _set(root, "swathTiming/samplesPerBurst", ext.n_samples)
    burst_list = root.find("swathTiming/burstList")
    kept = []
    for k, node in enumerate(list(burst_list)[b0:b1]):
        fv = np.array(node.findtext("firstValidSample").split(), int)
        lv = np.array(node.findtext("lastValidSample").split(), int)
        valid = (fv >= 0) & (lv >= s0) & (fv < s1)
        fv = np.where(valid, np.clip(fv - s0, 0, ext.n_samples - 1), -1)
        lv = np.where(valid, np.clip(lv - s0, 0, ext.n_samples - 1), -1)
        node.find("firstValidSample").text = " ".join(map(str, fv))
        node.find("lastValidSample").text = " ".join(map(str, lv))
        node.find("byteOffset").text = str(k * lpb * ext.n_samples * 4)
        kept.append(node)
    _replace_list(burst_list, kept)
    # geolocation grid: burst edges x 21 columns
    grid_lines = np.r_[np.arange(b1 - b0) * lpb, ext.n_lines - 1]
    grid_samples = np.unique(np.linspace(0, ext.n_samples - 1, 21).round().astype(int))
    _replace_list(root.find("geolocationGrid/geolocationGridPointList"),
                  _geolocation_points(ext, grid_lines, grid_samples, timing))
    return root


def _lattice_at(ext: SwathExtent, values: np.ndarray, lines: np.ndarray, samples: np.ndarray) -> np.ndarray:
    li = np.interp(lines, ext.lattice_lines, np.arange(ext.lattice_lines.size))
    si = np.interp(samples, ext.lattice_samples, np.arange(ext.lattice_samples.size))
    return ndimage.map_coordinates(values, np.meshgrid(li, si, indexing="ij"), order=1)


def _geolocation_points(ext: SwathExtent, lines: np.ndarray, samples: np.ndarray, timing: ProductTiming
                        ) -> list[ET.Element]:
    ann = ext.template.ann
    off = ext.bursts[0] * ann.lines_per_burst
    lon = _lattice_at(ext, ext.lattice_lonlat[0], lines, samples)
    lat = _lattice_at(ext, ext.lattice_lonlat[1], lines, samples)
    h = _lattice_at(ext, ext.lattice_height, lines, samples)
    inc = _lattice_at(ext, ext.lattice_incidence, lines, samples)
    times = ann.line_azimuth_time(lines + off) + timing.shift
    tau = ann.pixel_slant_range_time(samples + ext.samples[0])
    points = []
    for i, line in enumerate(lines):
        for j, sample in enumerate(samples):
            el = ET.Element("geolocationGridPoint")
            for tag, value in (("azimuthTime", _iso(times[i])), ("slantRangeTime", f"{tau[j]:.15e}"),
                               ("line", str(int(line))), ("pixel", str(int(sample))),
                               ("latitude", f"{lat[i, j]:.15e}"), ("longitude", f"{lon[i, j]:.15e}"),
                               ("height", f"{h[i, j]:.15e}"), ("incidenceAngle", f"{inc[i, j]:.15e}"),
                               ("elevationAngle", f"{_elevation(inc[i, j]):.15e}")):
                ET.SubElement(el, tag).text = value
            points.append(el)
    return points


def _elevation(incidence: float, altitude_ratio: float = 6371.0 / (6371.0 + 693.0)) -> float:
    """Off-nadir look angle (deg) for an incidence angle on a sphere: sin(look) = sin(inc) R / (R + H)."""
    return math.degrees(math.asin(math.sin(math.radians(incidence)) * altitude_ratio))


def calibration_xml(ext: SwathExtent, pol: str, timing: ProductTiming, kind: str) -> ET.Element:
    """Calibration (``kind`` "calibration") or noise ("noise") annotation re-indexed to the extent."""
    st = ext.template
    root = copy.deepcopy(ET.parse(st.calibration if kind == "calibration" else st.noise).getroot())
    _shift_times(root, timing.shift)
    _set(root, "adsHeader/missionId", "S1A")
    _set(root, "adsHeader/polarisation", pol.upper())
    _set(root, "adsHeader/absoluteOrbitNumber", timing.absolute_orbit)
    _set(root, "adsHeader/missionDataTakeId", timing.datatake)
    _set(root, "adsHeader/imageNumber", f"{_IMAGE_NUMBER[(st.swath, pol)]:03d}")
    lpb = st.ann.lines_per_burst
    off = ext.bursts[0] * lpb
    if kind == "calibration":
        parent = root.find("calibrationVectorList")
        luts: tuple[str, ...] = ("sigmaNought", "betaNought", "gamma", "dn")
    else:
        parent = root.find("noiseRangeVectorList")
        luts = ("noiseRangeLut",)
        for vec in list(root.find("noiseAzimuthVectorList")):
            lines = np.array(vec.findtext("line").split(), int) - off
            keep = (lines >= 0) & (lines < ext.n_lines)
            values = np.array(vec.findtext("noiseAzimuthLut").split(), float)[keep]
            for tag, value in (("firstAzimuthLine", 0), ("lastAzimuthLine", ext.n_lines - 1),
                               ("firstRangeSample", 0), ("lastRangeSample", ext.n_samples - 1)):
                vec.find(tag).text = str(value)
            vec.find("line").text = " ".join(map(str, lines[keep]))
            vec.find("line").set("count", str(int(keep.sum())))
            vec.find("noiseAzimuthLut").text = " ".join(f"{v:.6e}" for v in values)
            vec.find("noiseAzimuthLut").set("count", str(int(keep.sum())))
    _replace_list(parent, _resample_vectors(list(parent), luts, off, ext.n_lines, lpb, ext.samples[0],
                                            ext.n_samples, 40))
    return root


def sigma_lut(calibration: ET.Element, lines: np.ndarray, n_samples: int) -> np.ndarray:
    """sigmaNought LUT (lines, samples) of a calibration annotation, bilinear in line and pixel."""
    vecs = calibration.findall("calibrationVectorList/calibrationVector")
    vl = np.array([int(v.findtext("line")) for v in vecs])
    rows = np.stack([np.interp(np.arange(n_samples), np.array(v.findtext("pixel").split(), float),
                               np.array(v.findtext("sigmaNought").split(), float)) for v in vecs])
    idx = np.interp(lines, vl, np.arange(vl.size))
    i0 = np.clip(np.floor(idx).astype(int), 0, vl.size - 1)
    i1 = np.minimum(i0 + 1, vl.size - 1)
    w = (idx - i0)[:, None]
    return ((1 - w) * rows[i0] + w * rows[i1]).astype(np.float32)


def manifest_text(template: Template, scene: RadarScene, timing: ProductTiming, footprint: np.ndarray,
                  stems: dict[str, str], anx: np.datetime64, slice_number: int | None = None) -> str:
    """The template manifest for the simulated product: times, orbit numbers, platform, footprint, file names,
    and ``slice_number`` (``s1sarl1:sliceNumber``; None keeps the template's)."""
    text = template.manifest
    if slice_number is not None:
        text = re.sub(r"(<s1sarl1:sliceNumber>)\d+", rf"\g<1>{slice_number}", text)
    stop = scene.stop
    text = re.sub(r"<safe:startTime>[^<]+", f"<safe:startTime>{scene.start:%Y-%m-%dT%H:%M:%S.%f}", text)
    text = re.sub(r"<safe:stopTime>[^<]+", f"<safe:stopTime>{stop:%Y-%m-%dT%H:%M:%S.%f}", text)
    text = re.sub(r'(<safe:orbitNumber type="(?:start|stop)">)\d+', rf"\g<1>{timing.absolute_orbit}", text)
    text = re.sub(r'(<safe:relativeOrbitNumber type="(?:start|stop)">)\d+', rf"\g<1>{scene.relative_orbit}", text)
    text = re.sub(r"<safe:number>B<", "<safe:number>A<", text)
    text = re.sub(r"(<s1sarl1:missionDataTakeID>)\d+", rf"\g<1>{timing.datatake}", text)
    text = re.sub(r"(<s1:ascendingNodeTime>)[^<]+", rf"\g<1>{_iso(anx)}", text)
    anx_ms = [(np.datetime64(t.replace(tzinfo=None), "ns") - anx) / np.timedelta64(1, "ms")
              for t in (scene.start, stop)]
    text = re.sub(r"(<s1:startTimeANX>)[^<]+", rf"\g<1>{anx_ms[0]:.6e}", text)
    text = re.sub(r"(<s1:stopTimeANX>)[^<]+", rf"\g<1>{anx_ms[1]:.6e}", text)
    coords = " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in footprint)
    text = re.sub(r"(<gml:coordinates>)[^<]+", rf"\g<1>{coords}", text)
    for old, new in stems.items():
        text = text.replace(old, new).replace(old.replace("-", ""), new.replace("-", ""))
    return text


def _template_stems(template: Template) -> dict[tuple[str, str], str]:
    """(swath, pol) -> file stem of every measurement the template manifest names."""
    stems = {}
    for m in re.finditer(r"(s1[ab]-(iw\d)-slc-(vv|vh)-\d{8}t\d{6}-\d{8}t\d{6}-\d{6}-[0-9a-f]{6}-\d{3})",
                         template.manifest):
        stems[(m[2], m[3])] = m[1]
    return stems


def _set_checksums(text: str, checksums: dict[str, str]) -> str:
    """Set the MD5 of each written file in its manifest dataObject."""
    def fix(m: re.Match) -> str:
        href = m[1].lstrip("./")
        return m[0] if href not in checksums else re.sub(r"(<checksum checksumName=\"MD5\">)[0-9a-f]+",
                                                         rf"\g<1>{checksums[href]}", m[0])
    return re.sub(r'<byteStream[^>]*>\s*<fileLocation locatorType="URL" href="([^"]+)"/>\s*<checksum[^<]+</checksum>',
                  fix, text)


# ---------------------------------------------------------------------------------------------- pixels

#: scattering components of the signal model, with the attribute names of their VV and VH powers
COMPONENTS = ("veg", "bg", "built")


def component_correlations(land: RadarLandscape, pr) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-parcel |rho| and phase of the VV-VH correlation of each component (as in ``pixel_components``)."""
    zero = np.zeros_like(land.radar.rho_veg)
    return {"veg": (land.radar.rho_veg, land.radar.phase_veg), "bg": (pr.background_rho, zero),
            "built": (land.radar.rho_built, land.radar.phase_built)}


#: AR(1) scattering fields of one burst: (component, "u" | "v") -> complex64 (lines, samples)
BurstState = dict[tuple[str, str], np.ndarray]


def simulate_burst(index: np.ndarray, land: RadarLandscape, scene: RadarScene, prev_scene: RadarScene | None,
                   state: BurstState | None, rng: np.random.Generator, incidence: float
                   ) -> tuple[np.ndarray, np.ndarray, BurstState]:
    """Complex VV and VH amplitudes (|.|^2 = sigma0) of one burst on one date, and the updated fields.

    VV = sum_k sqrt(P_k,VV) u_k + n_VV, VH = sum_k sqrt(P_k,VH) (conj(c_k) u_k + sqrt(1 - |c_k|^2) v_k) + n_VH
    with c_k = rho_k exp(j phi_k), so <VV VH*> = sum_k c_k sqrt(P_k,VV P_k,VH) (the model's C12); u_k, v_k are
    AR(1) in time with the component's coherence g_k between the previous date and this one.
    """
    parcel = land.parcel.ravel()[index]
    flat = {k: np.ravel(getattr(land, k)) for k in ("vigour", "texture")}
    pr = _parcel_radar(land, scene)
    comp = pixel_components(parcel, flat["vigour"][index], flat["texture"][index], pr, land.radar, incidence)
    if prev_scene is not None:
        pair = _Pair(prev_scene, scene)
        gammas = dict(zip(COMPONENTS, pair_coherence_gammas(land, pair, _parcel_radar(land, prev_scene), pr)))
    fields: dict[tuple[str, str], np.ndarray] = {}
    shape = index.shape
    vv = np.zeros(shape, np.complex64)
    vh = np.zeros(shape, np.complex64)
    corr = component_correlations(land, pr)
    for name in COMPONENTS:
        rho = corr[name][0].astype(np.float32)[parcel]
        phase = corr[name][1].astype(np.float32)[parcel]
        for part in ("u", "v"):
            w = _complex_normal(rng, shape)
            if state is None:
                z = w
            else:
                g = gammas[name].astype(np.float32)[parcel]
                z = g * state[(name, part)] + np.sqrt(1.0 - g * g) * w
            fields[(name, part)] = z.astype(np.complex64)
        p_vv = getattr(comp, f"{name}_vv")
        p_vh = getattr(comp, f"{name}_vh")
        c = rho * np.exp(-1j * phase)
        vv += np.sqrt(p_vv) * fields[(name, "u")]
        vh += np.sqrt(p_vh) * (c * fields[(name, "u")] + np.sqrt(1.0 - rho * rho) * fields[(name, "v")])
    noise = np.float32(math.sqrt(NOISE_FLOOR))
    vv += noise * _complex_normal(rng, shape)
    vh += noise * _complex_normal(rng, shape)
    return vv, vh, fields


@dataclass(frozen=True)
class _Pair:
    reference: RadarScene
    secondary: RadarScene


def _complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian samples of unit variance."""
    z = rng.standard_normal((2, *shape), dtype=np.float32)
    return ((z[0] + 1j * z[1]) * np.float32(math.sqrt(0.5))).astype(np.complex64)


def to_cint16(values: np.ndarray) -> np.ndarray:
    """Round complex values to the int16 range (as complex64 holding integers)."""
    re_ = np.clip(np.rint(values.real), -32767, 32767)
    im = np.clip(np.rint(values.imag), -32767, 32767)
    return (re_ + 1j * im).astype(np.complex64)


# ---------------------------------------------------------------------------------------------- products

@dataclass
class _Product:
    scene: RadarScene
    timing: ProductTiming
    staging: Path
    safe: Path
    annotations: dict[tuple[str, str], ET.Element]
    calibrations: dict[tuple[str, str], ET.Element]
    writers: dict[tuple[str, str], rasterio.io.DatasetWriter]
    files: list[Path]
    slice_number: int | None = None


def _gcps(ann: ET.Element) -> list[GroundControlPoint]:
    return [GroundControlPoint(row=float(p.findtext("line")), col=float(p.findtext("pixel")),
                               x=float(p.findtext("longitude")), y=float(p.findtext("latitude")),
                               z=float(p.findtext("height")))
            for p in ann.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")]


def _write_xml(root: ET.Element, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _open_product(folder: Path, template: Template, geometry: TrackGeometry, scene: RadarScene,
                  template_crossing: np.datetime64) -> _Product:
    """Stage the SAFE of one date: annotations, LUTs and open measurement TIFFs (pixels follow by burst)."""
    crossing = np.datetime64(scene.start.replace(tzinfo=None), "ns") + np.timedelta64(10, "s")
    shift = crossing - template_crossing
    first = min(e.template.ann.bursts[e.bursts[0]].azimuth_time for e in geometry.swaths.values()) + shift
    last = max(e.template.ann.bursts[e.bursts[1] - 1].azimuth_time + np.timedelta64(
        int(round((e.template.ann.lines_per_burst - 1) * e.template.ann.azimuth_time_interval * 1e9)), "ns")
        for e in geometry.swaths.values()) + shift
    start = datetime.fromisoformat(_iso(first)).replace(tzinfo=UTC)
    stop = datetime.fromisoformat(_iso(last)).replace(tzinfo=UTC)
    name = scene_name("S1A", start, scene.absolute_orbit, stop)
    scene = replace(scene, name=name, start=start, stop=stop, incidence=geometry.incidence)
    datatake = datatake_id(scene.absolute_orbit)

    def stem(swath: str, pol: str) -> str:
        ext = geometry.swaths[swath]
        ann = ext.template.ann
        t0 = datetime.fromisoformat(_iso(ann.bursts[ext.bursts[0]].azimuth_time + shift))
        t1 = datetime.fromisoformat(_iso(ann.bursts[ext.bursts[1] - 1].azimuth_time + shift)) + timedelta(
            seconds=(ann.lines_per_burst - 1) * ann.azimuth_time_interval)
        return (f"s1a-{swath}-slc-{pol}-{t0:%Y%m%dt%H%M%S}-{t1:%Y%m%dt%H%M%S}-{scene.absolute_orbit:06d}-"
                f"{datatake:06x}-{_IMAGE_NUMBER[(swath, pol)]:03d}")

    timing = ProductTiming(shift, scene.absolute_orbit, datatake, stem)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    safe = staging / f"{name}.SAFE"
    product = _Product(scene, timing, staging, safe, {}, {}, {}, [])
    for swath, ext in geometry.swaths.items():
        for pol in ("vv", "vh"):
            s = stem(swath, pol)
            ann = annotation_xml(ext, pol, timing, geometry)
            cal = calibration_xml(ext, pol, timing, "calibration")
            for root, rel in ((ann, f"annotation/{s}.xml"), (cal, f"annotation/calibration/calibration-{s}.xml"),
                              (calibration_xml(ext, pol, timing, "noise"),
                               f"annotation/calibration/noise-{s}.xml")):
                _write_xml(root, safe / rel)
                product.files.append(safe / rel)
            tiff = safe / "measurement" / f"{s}.tiff"
            tiff.parent.mkdir(parents=True, exist_ok=True)
            product.writers[(swath, pol)] = rasterio.open(
                tiff, "w", driver="GTiff", width=ext.n_samples, height=ext.n_lines, count=1, dtype="complex_int16",
                gcps=_gcps(ann), crs="EPSG:4326")
            product.files.append(tiff)
            product.annotations[(swath, pol)] = ann
            product.calibrations[(swath, pol)] = cal
    return product


def _finish_product(product: _Product, template: Template, geometry: TrackGeometry, out: Path) -> Path:
    """Close the TIFFs, write the manifest and zip the SAFE to ``out/<name>.zip`` atomically."""
    for writer in product.writers.values():
        writer.close()
    for aux in product.safe.glob("measurement/*.aux.xml"):
        aux.unlink()
    safe = product.safe
    footprint = _footprint(product)
    old_stems = _template_stems(template)
    stems = {old_stems[key]: product.timing.stem(*key) for key in product.writers if key in old_stems}
    anx = np.datetime64(template.swaths[next(iter(geometry.swaths))].ann.bursts[0].azimuth_time, "ns") \
        + product.timing.shift - np.timedelta64(int(round(
            template.swaths[next(iter(geometry.swaths))].ann.bursts[0].azimuth_anx_time * 1e9)), "ns")
    manifest = manifest_text(template, product.scene, product.timing, footprint, stems, anx, product.slice_number)
    checksums = {str(f.relative_to(safe)): hashlib.md5(f.read_bytes()).hexdigest() for f in product.files}
    (safe / "manifest.safe").write_text(_set_checksums(manifest, checksums))
    support = template.folder / "support"
    if support.is_dir():
        shutil.copytree(support, safe / "support")
    target = out / f"{product.scene.name}.zip"
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in sorted(safe.rglob("*")):
            z.write(f, f.relative_to(product.staging).as_posix())
    shutil.rmtree(product.staging)
    return target


def _footprint(product: _Product) -> np.ndarray:
    """(lon, lat) corners of the union of the sub-swaths' geolocation grids (near-first, far-first, far-last,
    near-last order of the real manifests)."""
    pts = []
    for ann in product.annotations.values():
        for p in ann.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint"):
            pts.append((float(p.findtext("longitude")), float(p.findtext("latitude")), int(p.findtext("line")),
                        int(p.findtext("pixel"))))
    a = np.array(pts)
    first, last = a[:, 2] == a[:, 2].min(), a[:, 2] == a[:, 2].max()

    def pick(sel: np.ndarray, far: bool) -> tuple[float, float]:
        cand = a[sel]
        lon = cand[:, 0]
        i = int(np.argmin(lon) if far else np.argmax(lon))  # descending right-looking: far range is west
        return float(cand[i, 0]), float(cand[i, 1])

    return np.array([pick(last, False), pick(last, True), pick(first, True), pick(first, False)])


def split_slices(geometry: TrackGeometry, height: Callable, grid: ProjectGrid, n: int = 2) -> list[TrackGeometry]:
    """The track's extent as ``n`` (1 or 2) consecutive slices of one datatake: the burst boundary of the first
    sub-swath nearest the grid's centre splits it, and the bursts of every sub-swath that start before that
    time go to the first slice, the others to the second, so the slice boundary is an across-track line at
    one azimuth time through the AOI (place the track ``at_burst_edge`` to put it through the centre)."""
    if n == 1:
        return [geometry]
    if n != 2:
        raise ValueError(f"s1_slices {n}: give 1 or 2")
    interp = OrbitInterpolator(geometry.orbit)
    first = geometry.swaths[sorted(geometry.swaths)[0]]
    if first.bursts[1] - first.bursts[0] < 2:
        raise ValueError(f"relative orbit {geometry.relative_orbit}: the AOI is seen by one burst; it cannot be "
                         f"split into two slices")
    lpb = first.template.ann.lines_per_burst
    cx, cy = 0.5 * (grid.bounds[0] + grid.bounds[2]), 0.5 * (grid.bounds[1] + grid.bounds[3])
    x_line, y_line = first.lattice_xy[0].mean(axis=1), first.lattice_xy[1].mean(axis=1)
    edges = list(range(first.bursts[0] + 1, first.bursts[1]))
    distance = [math.hypot(np.interp((k - first.bursts[0]) * lpb, first.lattice_lines, x_line) - cx,
                           np.interp((k - first.bursts[0]) * lpb, first.lattice_lines, y_line) - cy) for k in edges]
    b_mid = edges[int(np.argmin(distance))]
    t_split = first.template.ann.bursts[b_mid].azimuth_time
    parts: list[dict[str, SwathExtent]] = [{}, {}]
    for name, ext in sorted(geometry.swaths.items()):
        bursts = ext.template.ann.bursts
        cut = next((k for k in range(ext.bursts[0], ext.bursts[1]) if bursts[k].azimuth_time >= t_split - np.timedelta64(
            int(1e9), "ns")), ext.bursts[1])
        for i, span in enumerate(((ext.bursts[0], cut), (cut, ext.bursts[1]))):
            if span[1] > span[0]:
                parts[i][name] = swath_extent(ext.template, span, ext.samples, interp, height, grid)
    return [replace(geometry, swaths=p) for p in parts if p]


def write_track(out: str | Path, template: Template, geometry: TrackGeometry, scenes: Sequence[RadarScene],
                land: RadarLandscape, grid: ProjectGrid, seed_keys: Callable[[str, str, int], list[int]],
                slice_number: int | None = None) -> list[RadarScene]:
    """Write the SLC zips of one track's dates (in time order): burst by burst, the AR(1) fields carried
    from date to date. Returns the scenes with their product names, times and incidence. ``slice_number``
    is written into the manifests (one slice of a sliced pass; None keeps the template's)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref = next(iter(geometry.swaths.values())).template
    mid_burst = len(ref.ann.bursts) // 2
    crossing = ref.ann.line_azimuth_time(np.array([ref.ann.bursts[mid_burst].first_line
                                                   + ref.ann.lines_per_burst // 2]))[0]
    products = [replace(_open_product(out, template, geometry, s, crossing), slice_number=slice_number)
                for s in sorted(scenes, key=lambda s: s.start)]
    try:
        for swath, ext in geometry.swaths.items():
            lpb = ext.template.ann.lines_per_burst
            for k in range(ext.bursts[1] - ext.bursts[0]):
                lines = np.arange(k * lpb, (k + 1) * lpb)
                index = map_index(ext, lines, grid)
                carrier = _carrier(products[0], ext, swath, k, lines)
                state = None
                prev = None
                for product in products:
                    rng = np.random.default_rng(seed_keys(swath, product.scene.name, k))
                    vv, vh, state = simulate_burst(index, land, product.scene, prev, state, rng,
                                                   geometry.incidence)
                    prev = product.scene
                    mask = _valid(product.annotations[(swath, "vv")], k, ext.n_samples)
                    for pol, values in (("vv", vv), ("vh", vh)):
                        amp = sigma_lut(product.calibrations[(swath, pol)], lines, ext.n_samples)
                        dn = np.where(mask, to_cint16(values * amp * carrier), 0).astype(np.complex64)
                        product.writers[(swath, pol)].write(dn, 1, window=Window(0, k * lpb, ext.n_samples, lpb))
                logger.info("relative orbit %d %s burst %d/%d: %d dates", geometry.relative_orbit, swath, k + 1,
                            ext.bursts[1] - ext.bursts[0], len(products))
        for p in products:
            _finish_product(p, template, geometry, out)
        return [p.scene for p in products]
    finally:
        for p in products:
            if p.staging.exists():
                for writer in p.writers.values():
                    writer.close()
                shutil.rmtree(p.staging, ignore_errors=True)


def _valid(annotation: ET.Element, burst: int, n_samples: int) -> np.ndarray:
    node = annotation.findall("swathTiming/burstList/burst")[burst]
    fv = np.array(node.findtext("firstValidSample").split(), int)[:, None]
    lv = np.array(node.findtext("lastValidSample").split(), int)[:, None]
    s = np.arange(n_samples)[None, :]
    return (fv >= 0) & (s >= fv) & (s <= lv)


def _carrier(product: _Product, ext: SwathExtent, swath: str, burst: int, lines: np.ndarray) -> np.ndarray:
    """exp(-j 4 pi R / lambda) exp(-j phi_TOPS) of one burst (the same for every date of the track)."""
    path = product.safe / "annotation" / f"{product.timing.stem(swath, 'vv')}.xml"
    ann = read_annotation(path)
    pixels = np.arange(ext.n_samples)
    phi = deramp_phase(burst_tops(ann, burst), lines, pixels)
    r = SPEED_OF_LIGHT / 2 * ann.pixel_slant_range_time(pixels)
    return np.exp(-1j * (phi + (4 * np.pi / ann.wavelength * r)[None, :])).astype(np.complex64)


# ---------------------------------------------------------------------------------------------- DEM

def simulate_dem(bounds: tuple[float, float, float, float], crs: str, rng: np.random.Generator,
                 resolution: float = 30.0, base: float = 260.0, relief: float = 45.0
                 ) -> tuple[np.ndarray, ProjectGrid]:
    """Rolling terrain (ellipsoidal heights, m): ``base`` + ``relief`` x a smooth field of ~2 km correlation,
    on a ``resolution`` grid over ``bounds`` (grid CRS)."""
    from cropflow.simulate.scene import smooth_noise

    grid = ProjectGrid(crs, resolution, snap_bounds(bounds, resolution))
    heights = base + relief * smooth_noise(grid.shape, 2000.0 / resolution, rng)
    return heights.astype(np.float32), grid


def dem_sampler(heights: np.ndarray, grid: ProjectGrid) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """height(lon, lat): the DEM bilinearly interpolated (edge values beyond it)."""
    to_grid = pyproj.Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    x0, _, _, y1 = grid.bounds

    def height(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = to_grid.transform(np.asarray(lon, float), np.asarray(lat, float))
        col = (np.asarray(x) - x0) / grid.resolution - 0.5
        row = (y1 - np.asarray(y)) / grid.resolution - 0.5
        return ndimage.map_coordinates(heights.astype(float), [np.ravel(row), np.ravel(col)], order=1,
                                       mode="nearest").reshape(np.shape(lon))

    return height
