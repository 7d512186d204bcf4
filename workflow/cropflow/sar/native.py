"""The native Sentinel-1 engine: SLC SAFE -> C2 on the project grid, SLC pair -> coherence on the project grid.

Both write the S1 seam (``cropflow.s1``) that the SNAP engine writes, so everything downstream is shared.

Scene (polarimetry): for each sub-swath, the project grid is geocoded into the swath's radar geometry
(zero-Doppler backward geocoding with the DEM, ``cropflow.sar.geometry``); only the radar window that the grid
needs is read; DN are calibrated to complex sigma0 with the product's LUT; C2 = [<|VV|^2>, <VV VH*>; <|VH|^2>]
is multilooked and Refined-Lee filtered in radar geometry and sampled bilinearly at each map pixel's
(line, sample). Sub-swaths fill the map in order (IW1 first in their overlap).

Pair (coherence): both dates are geocoded from the same map pixels, so the secondary is co-registered on the
reference geometrically (orbits + DEM, as SNAP's Back-Geocoding). Each burst is deramped (TOPS), each date is
interpolated at its own radar coordinates, and the geometric phase 4 pi R / lambda of each date is removed,
which removes the flat-earth and topographic phase; the coherence is then estimated over a boxcar of map
pixels. Spectral diversity (ESD) is not applied: with precise orbits the residual azimuth misregistration
mainly creates phase steps at burst edges, not a loss of coherence magnitude.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster
from cropflow.s1 import parse_scene_id
from cropflow.sar.coherence import coherence
from cropflow.sar.geometry import RadarCoordinates, geocode_swath, radar_to_grid
from cropflow.sar.slc import (
    calibration_lut,
    extract_safe,
    list_swath_polarisations,
    open_metadata,
    read_window,
    swath_annotation,
)
from cropflow.sar.speckle import multilook, refined_lee
from cropflow.sar.tops import burst_tops, deramp, deramp_phase

log = logging.getLogger(__name__)

C2_BANDS = ("C11", "C22", "C12_real", "C12_imag")
COHERENCE_BANDS = ("coh_vv", "coh_vh")
SPEED_OF_LIGHT = 299_792_458.0


@dataclass(frozen=True)
class NativeOptions:
    """Native-engine settings (config ``s1.native``)."""

    dem: str | None = None
    ellipsoid_height: float | None = None
    orbit_dir: str | None = None
    multilook: tuple[int, int] = (1, 4)
    speckle_window: int = 7
    coherence_window: tuple[int, int] = (5, 5)
    workdir: str = ".cropflow/safe"

    @classmethod
    def from_config(cls, cfg: dict) -> "NativeOptions":
        ml = cfg.get("multilook", {"azimuth": 1, "range": 4})
        cw = cfg.get("coherence_window", {"rows": 5, "cols": 5})
        height = cfg.get("ellipsoid_height")
        return cls(dem=cfg.get("dem") or None, ellipsoid_height=None if height is None else float(height),
                   orbit_dir=cfg.get("orbit_dir") or None, multilook=(int(ml["azimuth"]), int(ml["range"])),
                   speckle_window=int(cfg.get("speckle_window", 7)),
                   coherence_window=(int(cw["rows"]), int(cw["cols"])),
                   workdir=str(cfg.get("workdir", ".cropflow/safe")))


def orbit_file_for(scene: str, orbit_dir: str | None) -> Path | None:
    """The precise (else restituted) orbit file in ``orbit_dir`` valid over the scene, or None (annotation orbit)."""
    if not orbit_dir:
        return None
    info = parse_scene_id(scene)
    start, stop = info["start"].strftime("%Y%m%dT%H%M%S"), info["stop"].strftime("%Y%m%dT%H%M%S")
    for kind in ("POEORB", "RESORB"):
        for path in sorted(Path(orbit_dir).glob(f"{info['platform']}_OPER_AUX_{kind}_*.EOF")):
            validity = path.stem.split("_V")[-1].split("_")
            if len(validity) == 2 and validity[0] <= start and stop <= validity[1]:
                return path
    log.warning("%s: no orbit file in %s covers the scene; the annotation's orbit is used", scene, orbit_dir)
    return None


def _swaths(safe: Path, polarisations: tuple[str, ...]) -> list[str]:
    """Sub-swaths holding every polarisation needed; a product lacking one everywhere is an error."""
    have = list_swath_polarisations(safe)
    swaths = sorted({s for s, _ in have})
    usable = [s for s in swaths if all((s, p) in have for p in polarisations)]
    if not usable:
        listed = ", ".join(f"{s}/{p}" for s, p in have) or "none"
        raise ValueError(f"{safe.name}: needs polarisation(s) {'+'.join(polarisations)} in a sub-swath, has {listed}: "
                         "use a dual-pol (1SDV) product")
    return usable


def _radar_window(rc: RadarCoordinates, n_lines: int, n_samples: int, margin: int
                  ) -> tuple[slice, slice, np.ndarray] | None:
    """The (lines, samples) slices of the radar image that the map pixels need, and which map pixels are inside."""
    inside = np.isfinite(rc.line) & np.isfinite(rc.sample) & (rc.sample >= 0) & (rc.sample <= n_samples - 1) \
        & (rc.line >= 0) & (rc.line <= n_lines - 1)
    if not inside.any():
        return None
    l0 = max(int(np.floor(rc.line[inside].min())) - margin, 0)
    l1 = min(int(np.ceil(rc.line[inside].max())) + margin + 1, n_lines)
    s0 = max(int(np.floor(rc.sample[inside].min())) - margin, 0)
    s1 = min(int(np.ceil(rc.sample[inside].max())) + margin + 1, n_samples)
    return slice(l0, l1), slice(s0, s1), inside


def _valid_samples(safe: Path, swath: str, pol: str, lines: slice, samples: slice) -> np.ndarray:
    """True where a window sample lies inside its burst's firstValidSample..lastValidSample."""
    ann = swath_annotation(safe, swath, pol)
    mask = np.zeros((lines.stop - lines.start, samples.stop - samples.start), bool)
    for burst in ann.bursts:
        b0, b1 = max(burst.first_line, lines.start), min(burst.first_line + burst.lines, lines.stop)
        if b0 >= b1:
            continue
        valid = burst.valid_mask(ann.number_of_samples)[b0 - burst.first_line:b1 - burst.first_line, samples]
        mask[b0 - lines.start:b1 - lines.start] = valid
    return mask


def _read_sigma0(safe: Path, swath: str, pol: str, lines: slice, samples: slice) -> np.ndarray:
    """Complex sigma0 amplitude of a radar window; samples outside the bursts' valid limits are NaN."""
    dn = read_window(safe, swath, pol, lines, samples)
    lut = calibration_lut(open_metadata(safe, swath, pol, "calibration"), np.arange(lines.start, lines.stop),
                          np.arange(samples.start, samples.stop)).values
    cal = (dn / lut).astype(np.complex64)  # sigma0 amplitude DN / A_sigma (ESA-EOPG-CSCOP-TN-0002 Eq. 1)
    return np.where(_valid_samples(safe, swath, pol, lines, samples), cal, np.complex64(np.nan + 1j * np.nan))


def _at_multilooked(values: np.ndarray, line: np.ndarray, sample: np.ndarray, window: tuple[slice, slice],
                    factors: tuple[int, int]) -> np.ndarray:
    """Sample a multilooked radar-window raster at full-resolution (line, sample): cell k spans lines
    k*f .. (k+1)*f - 1, so its centre is k*f + (f - 1)/2."""
    (az, rg), (lines, samples) = factors, window
    return radar_to_grid(values, (line - lines.start - (az - 1) / 2) / az, (sample - samples.start - (rg - 1) / 2) / rg)


def _scene_tags(safe: Path, scene: str) -> dict[str, str]:
    info = parse_scene_id(scene)
    ann = swath_annotation(safe, *list_swath_polarisations(safe)[0])
    return {"SCENE": scene, "PLATFORM": info["platform"], "RELATIVE_ORBIT": str(info["relative_orbit"]),
            "PASS": ann.pass_direction.upper(), "START_TIME": info["start"].isoformat(), "ENGINE": "cropflow native"}


def scene_c2(product: str | os.PathLike, grid: ProjectGrid, out_path: str | os.PathLike, options: NativeOptions
             ) -> Path:
    """C2 (C11, C22, C12 real/imag; linear sigma0, multilooked, Refined Lee) of one SLC product on ``grid``."""
    scene = Path(product).name.removesuffix(".zip").removesuffix(".SAFE")
    safe = extract_safe(product, options.workdir)
    orbit = orbit_file_for(scene, options.orbit_dir)
    out = np.full((4, *grid.shape), np.nan, np.float32)
    az, rg = options.multilook
    margin = (options.speckle_window // 2 + 1) * max(az, rg)
    for swath in _swaths(safe, ("VV", "VH")):
        ann = swath_annotation(safe, swath, "VV")
        rc = geocode_swath(grid, ann.path, orbit_file=orbit, dem=options.dem, ellipsoid_height=options.ellipsoid_height)
        window = _radar_window(rc, ann.number_of_lines, ann.number_of_samples, margin)
        if window is None:
            log.info("%s %s: does not cover the grid", scene, swath)
            continue
        lines, samples, inside = window
        log.info("%s %s: %d map pixels from radar lines %d-%d, samples %d-%d", scene, swath, int(inside.sum()),
                 lines.start, lines.stop, samples.start, samples.stop)
        vv = _read_sigma0(safe, swath, "VV", lines, samples)
        vh = _read_sigma0(safe, swath, "VH", lines, samples)
        c11 = multilook(np.abs(vv) ** 2, (az, rg))
        c22 = multilook(np.abs(vh) ** 2, (az, rg))
        c12 = multilook(vv * np.conj(vh), (az, rg))
        c11, c22, c12 = refined_lee(c11, c22, c12, looks=az * rg, window=options.speckle_window)
        layers = np.stack([c11, c22, c12.real, c12.imag]).astype(np.float32)
        sampled = _at_multilooked(layers, rc.line, rc.sample, (lines, samples), (az, rg))
        take = inside & np.isnan(out[0]) & np.isfinite(sampled).all(axis=0)
        out[:, take] = sampled[:, take]
    if not np.isfinite(out[0]).any():
        raise ValueError(f"{scene} does not cover the project grid: remove it from the S1 input folder")
    write_raster(out_path, out, grid, nodata=float("nan"), band_names=C2_BANDS, tags=_scene_tags(safe, scene))
    return Path(out_path)


def _deramped_on_grid(safe: Path, swath: str, pol: str, rc: RadarCoordinates, window: tuple[slice, slice],
                      wavelength: float) -> np.ndarray:
    """One date's deramped SLC interpolated at the map pixels, with its geometric phase 4 pi R / lambda removed."""
    lines, samples = window
    dn = read_window(safe, swath, pol, lines, samples)
    slc = np.where(_valid_samples(safe, swath, pol, lines, samples), dn.astype(np.complex64), np.nan)
    ann = swath_annotation(safe, swath, pol)
    line_idx = np.arange(lines.start, lines.stop)
    pixels = np.arange(samples.start, samples.stop)
    for k, burst in enumerate(ann.bursts):
        rows = (line_idx >= burst.first_line) & (line_idx < burst.first_line + burst.lines)
        if rows.any():
            slc[rows] = deramp(slc[rows], deramp_phase(burst_tops(ann, k), line_idx[rows], pixels))
    on_grid = radar_to_grid(slc, rc.line - lines.start, rc.sample - samples.start)
    return on_grid * np.exp(1j * 4 * np.pi * rc.slant_range / wavelength).astype(np.complex64)


def pair_coherence(reference: str | os.PathLike, secondary: str | os.PathLike, grid: ProjectGrid,
                   out_path: str | os.PathLike, options: NativeOptions, pair: str) -> Path:
    """Coherence VV and VH (Eq. 5-1) of a consecutive same-track pair on ``grid``."""
    names = [Path(p).name.removesuffix(".zip").removesuffix(".SAFE") for p in (reference, secondary)]
    info = [parse_scene_id(n) for n in names]
    if info[0]["relative_orbit"] != info[1]["relative_orbit"]:
        raise ValueError(f"{names[0]} (relative orbit {info[0]['relative_orbit']}) and {names[1]} (relative orbit "
                         f"{info[1]['relative_orbit']}) are not on the same track: they do not form a pair")
    safes = [extract_safe(p, options.workdir) for p in (reference, secondary)]
    orbits = [orbit_file_for(n, options.orbit_dir) for n in names]
    out = np.full((2, *grid.shape), np.nan, np.float32)
    swaths = sorted(set(_swaths(safes[0], ("VV", "VH"))) & set(_swaths(safes[1], ("VV", "VH"))))
    for swath in swaths:
        coords, windows = [], []
        for safe, orbit in zip(safes, orbits):
            ann = swath_annotation(safe, swath, "VV")
            rc = geocode_swath(grid, ann.path, orbit_file=orbit, dem=options.dem,
                               ellipsoid_height=options.ellipsoid_height)
            coords.append(rc)
            windows.append(_radar_window(rc, ann.number_of_lines, ann.number_of_samples, 2))
        if any(w is None for w in windows):
            log.info("%s %s: the grid is not covered by both dates", pair, swath)
            continue
        inside = windows[0][2] & windows[1][2]
        wavelength = swath_annotation(safes[0], swath, "VV").wavelength
        for band, pol in enumerate(("VV", "VH")):
            s = [_deramped_on_grid(safe, swath, pol, rc, w[:2], wavelength)
                 for safe, rc, w in zip(safes, coords, windows)]
            gamma = coherence(np.where(inside, s[0], np.nan), np.where(inside, s[1], np.nan),
                              options.coherence_window)
            take = inside & np.isnan(out[band]) & np.isfinite(gamma)
            out[band, take] = gamma[take]
    if not np.isfinite(out).any():
        raise ValueError(f"pair {pair}: the two products share no coverage of the project grid")
    tags = {"REFERENCE": names[0], "SECONDARY": names[1], "RELATIVE_ORBIT": str(info[0]["relative_orbit"]),
            "ENGINE": "cropflow native"}
    write_raster(out_path, np.clip(out, 0.0, 1.0), grid, nodata=float("nan"), band_names=COHERENCE_BANDS, tags=tags)
    return Path(out_path)
