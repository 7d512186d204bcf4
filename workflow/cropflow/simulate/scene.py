"""``cropflow simulate``: a deterministic demo data set in the workflow's input formats.

One call writes, into ``out_dir``: ``parcels.gpkg`` (surveyed parcels, EPSG:4326, text labels),
``cropland.tif`` (a 30 m-style land-cover cropland mask on the project grid), ``truth.tif`` / ``truth.json``
(the simulated class of every pixel and a summary), ``s1/`` (per-scene C2 and per-pair coherence rasters at
the Sentinel-1 seam) and ``s2/`` (Sentinel-2 L2A SAFE products of one MGRS tile, some partly cloudy).

Every product draws its random numbers from its own generator, seeded by (seed, product key) — the landscape,
the weather, each S2 date, each S1 scene and pair, and each row block of them — so the same inputs give the
same bytes (file timestamps aside), and adding dates leaves the other products unchanged.

Clouds (S2): smooth random fields (cubic-zoomed coarse noise) thresholded so that the share of cloud, cirrus
and shadow pixels over the AOI hits the requested cover: thin cirrus (SCL 10) at the fringe, medium (8) and
high (9) probability cores, shadows (3) displaced north-west (morning sun in the south-east) by 0.8-1.4 km.
Under clouds the reflectance blends towards a bright, spectrally flat cloud spectrum; shadows darken it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import rasterio.features
import rasterio.warp
import rasterio.windows
import shapely
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from scipy import ndimage

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid, project_grid, read_aoi, snap_bounds, utm_crs_for
from cropflow.legend import Legend
from cropflow.raster import write_raster
from cropflow.simulate.parcels import (
    LEGEND_CLASSES,
    LandscapeParams,
    generate_landscape,
    rasterize_parcels,
    survey_labels,
)
from cropflow.simulate.phenology import (
    BANDS,
    PROFILE_CODE,
    PROFILES,
    Traits,
    Weather,
    canopy_state,
    draw_traits,
    simulate_weather,
    surface_reflectance,
)
from cropflow.simulate.sentinel1 import (
    RadarLandscape,
    RadarScene,
    draw_radar_traits,
    plan_acquisitions,
    plan_pairs,
    seam_slices,
    write_pair,
    write_scene,
)
from cropflow.simulate.sentinel2 import write_l1c, write_l2a
from cropflow.simulate.slc import (
    TEMPLATE,
    dem_sampler,
    load_template,
    place_track,
    split_slices,
    simulate_dem,
    write_track,
)

logger = logging.getLogger(__name__)

#: Sentinel-2 acquisitions: relative orbit 89 over the AOI; S2A on 2023-05-12 02:35:51 UTC, S2A and S2B
#: alternate every 5 days (each repeats after 10)
S2_ANCHOR = datetime(2023, 5, 12, 2, 35, 51, tzinfo=UTC)
S2_RELATIVE_ORBIT = 89
S2_BASELINE = "05.09"
S2_REVISIT_DAYS = 5
#: SCL classes counted as cloud over the AOI (as the workflow's s2.cloud_scl default)
CLOUD_SCL = (3, 8, 9, 10)
#: cloud top reflectance (bright, nearly flat; a little lower in the SWIR) and shadow transmission
_CLOUD = np.array([0.52, 0.52, 0.53, 0.54, 0.55, 0.55, 0.56, 0.56, 0.47, 0.38], dtype=np.float32)
_SHADOW = np.array([0.45, 0.45, 0.42, 0.38, 0.34, 0.32, 0.30, 0.30, 0.30, 0.30], dtype=np.float32)
_BANDS_10M = ("B02", "B03", "B04", "B08")
#: top-of-atmosphere model of the L1C products (plausible, not radiative transfer): TOA = path + T * BOA, path
#: reflectance falling with wavelength (Rayleigh + aerosol) and a direct + diffuse transmittance T per band
_PATH = {"B01": 0.080, "B02": 0.060, "B03": 0.040, "B04": 0.025, "B05": 0.020, "B06": 0.016, "B07": 0.014,
         "B08": 0.012, "B8A": 0.011, "B09": 0.004, "B10": 0.0, "B11": 0.004, "B12": 0.003}
_TRANSMITTANCE = {"B01": 0.85, "B02": 0.87, "B03": 0.89, "B04": 0.91, "B05": 0.92, "B06": 0.93, "B07": 0.93,
                  "B08": 0.94, "B8A": 0.94, "B09": 0.30, "B10": 0.0, "B11": 0.95, "B12": 0.95}
#: cirrus band B10 (1375 nm, water-vapour absorption: the ground is not seen): clear sky and thick-cloud TOA
_B10_CLEAR, _B10_CLOUD = 0.002, 0.25
#: simulated product levels (config simulate.s2_level)
S2_LEVELS = ("l2a", "l1c", "both")
#: point spread of the MSI at 10 m (Gaussian sd, m)
_PSF_SIGMA_M = 5.0
_MGRS_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_MGRS_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_MGRS_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")


# ---------------------------------------------------------------------------------------------- helpers

def entropy(seed: int, *keys: str) -> list[int]:
    """Seed material of one product: the user seed and a CRC-32 of each key (stable across runs)."""
    if int(seed) < 0:
        raise ValueError(f"seed {seed}: give a non-negative integer")
    return [int(seed), *(zlib.crc32(k.encode()) for k in keys)]


def product_rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng(entropy(seed, *keys))


def mgrs_tile(lon: float, lat: float) -> str:
    """MGRS 100 km square (Sentinel-2 tile id) of a point, e.g. ``52UCU`` for 126.6 E, 48.2 N.

    Zone and latitude band from lon/lat; column letter from the UTM easting (sets of 8 letters cycling over
    three zones), row letter from the northing (20 letters, offset by 5 in even zones).
    """
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    crs = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return mgrs_square(zone, lat, x, y)


def mgrs_square(zone: int, lat: float, x: float, y: float) -> str:
    """MGRS 100 km square id of UTM ``zone`` easting/northing (``lat`` gives the latitude band): squares
    west of the zone's central meridian keep the zone's number, as the Sentinel-2 tiles of that zone do."""
    band = _MGRS_LAT_BANDS[min(int((lat + 80.0) // 8.0), len(_MGRS_LAT_BANDS) - 1)]
    col = _MGRS_COL_SETS[(zone - 1) % 3][int(x // 100000) - 1]
    row = _MGRS_ROW_LETTERS[(int(y // 100000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{col}{row}"


def _parse_mmdd(value: str, year: int, what: str) -> datetime:
    try:
        return datetime.strptime(f"{year}-{value}", "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"season {what} {value!r}: write it as MM-DD, e.g. 05-06") from None


def plan_s2(start: datetime, end: datetime, n: int) -> list[tuple[datetime, str]]:
    """``n`` Sentinel-2 acquisitions (time, platform) spread evenly over the 5-day revisit slots of the season."""
    k0 = math.ceil((start - S2_ANCHOR) / timedelta(days=S2_REVISIT_DAYS))
    slots = []
    k = k0
    while (t := S2_ANCHOR + timedelta(days=S2_REVISIT_DAYS * k)) <= end:
        slots.append((t, "S2A" if k % 2 == 0 else "S2B"))
        k += 1
    if n < 1 or n > len(slots):
        raise ValueError(f"s2_dates {n}: the season has {len(slots)} Sentinel-2 revisits; give 1..{len(slots)}")
    idx = np.unique(np.round(np.linspace(0, len(slots) - 1, n)).astype(int))
    return [slots[i] for i in idx]


def default_cloud_cover(n: int) -> list[float]:
    """Cloud cover over the AOI per date: one date clear, the next about 30 % cloudy, the others 1-4.5 %."""
    small = [0.03, 0.015, 0.045, 0.02, 0.04, 0.01]
    cover = [small[i % len(small)] for i in range(n)]
    clear = (n - 1) // 2
    cover[clear] = 0.0
    if n > 1:
        cover[clear + 1] = 0.3
    return cover


def _window_in(big: ProjectGrid, small: ProjectGrid) -> rasterio.windows.Window | None:
    """The window of ``small`` in ``big`` if both share CRS, pixel size and lattice and it fits; else None."""
    if pyproj.CRS(big.crs) != pyproj.CRS(small.crs) or not math.isclose(big.resolution, small.resolution):
        return None
    col = (small.bounds[0] - big.bounds[0]) / big.resolution
    row = (big.bounds[3] - small.bounds[3]) / big.resolution
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    win = rasterio.windows.Window(int(round(col)), int(round(row)), small.width, small.height)
    if min(win.col_off, win.row_off) < 0 or win.col_off + win.width > big.width or \
            win.row_off + win.height > big.height:
        return None
    return win


def _on_grid(data: np.ndarray, src: ProjectGrid, dst: ProjectGrid, resampling: Resampling) -> np.ndarray:
    """``data`` on ``src`` moved to ``dst`` (a slice when the lattices agree, else a reprojection)."""
    win = _window_in(src, dst)
    if win is not None:
        return data[win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width]
    out = np.zeros(dst.shape, dtype=data.dtype)
    rasterio.warp.reproject(data, out, src_transform=src.transform, src_crs=src.crs, dst_transform=dst.transform,
                            dst_crs=dst.crs, resampling=resampling)
    return out


def smooth_noise(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field with correlation length ~``scale_px``: coarse Gaussian noise, cubic-zoomed,
    standardised to zero mean and unit variance (float32)."""
    h, w = shape
    step = max(float(scale_px), 1.0)
    coarse = rng.standard_normal((int(math.ceil(h / step)) + 3, int(math.ceil(w / step)) + 3))
    field = ndimage.zoom(coarse, step, order=3, mode="nearest", grid_mode=True)[:h, :w]
    field = field - field.mean()
    return (field / max(field.std(), 1e-6)).astype(np.float32)


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) pixels, with False shifted in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


#: field units between the cirrus fringe and the cloud edge
_CIRRUS_BAND = 0.25


def cloud_scene(field: np.ndarray, aoi: np.ndarray, cover: float, shadow: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SCL cloud codes (0 = clear), cloud opacity, shadow mask) at 20 m for a target cloud cover over the AOI.

    The threshold t of the smooth ``field`` is found by bisection so that the share of AOI pixels that are
    cloud (field > t - 0.25, cirrus fringe included) or shadow (thick cloud field > t moved by ``shadow``
    pixels, where not cloud) equals ``cover``. Codes: 10 cirrus fringe, 8 medium probability, 9 high
    probability (the upper half of the thick-cloud field values), 3 shadow. Opacity rises from 0 at the
    fringe to 1 in the high-probability core.
    """
    zeros = np.zeros(field.shape, dtype=np.uint8)
    if cover <= 0 or not aoi.any():
        return zeros, np.zeros(field.shape, np.float32), np.zeros(field.shape, bool)

    def masks(t: float) -> tuple[np.ndarray, np.ndarray]:
        cloud = field > t - _CIRRUS_BAND
        shade = _shift(field > t, *shadow) & ~cloud
        return cloud, shade

    def share(t: float) -> float:
        cloud, shade = masks(t)
        return float((cloud | shade)[aoi].mean())

    lo, hi = float(field.min()) - 1.0, float(field.max()) + 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if share(mid) > cover:
            lo = mid
        else:
            hi = mid
    t = hi if abs(share(hi) - cover) <= abs(share(lo) - cover) else lo
    cloud, shade = masks(t)
    thick = field > t
    core = float(np.median(field[thick])) if thick.any() else t + 0.5
    codes = zeros.copy()
    codes[cloud] = 10
    codes[thick] = 8
    codes[field >= core] = 9
    codes[shade] = 3
    opacity = np.clip((field - (t - _CIRRUS_BAND)) / (core - t + _CIRRUS_BAND), 0.0, 1.0) ** 0.8
    return codes, np.where(cloud, opacity, 0.0).astype(np.float32), shade


def clear_sky_scl(b04: np.ndarray, b8a: np.ndarray, b11: np.ndarray) -> np.ndarray:
    """Scene classification of cloud-free 20 m pixels: 6 water (dark NIR and SWIR), 4 vegetation (NDVI > 0.4),
    5 not vegetated (the Sen2Cor classes that matter here)."""
    ndvi = (b8a - b04) / np.maximum(b8a + b04, 1e-6)
    scl = np.full(b04.shape, 5, dtype=np.uint8)
    scl[ndvi > 0.4] = 4
    scl[(b8a < 0.05) & (b11 < 0.04) & (ndvi < 0.2)] = 6
    return scl


def _mean2x2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32)


# ---------------------------------------------------------------------------------------------- the world

@dataclass(frozen=True)
class World:
    """The simulated landscape on its grids."""

    grid: ProjectGrid           # project grid (S1, truth, cropland)
    s2_grid: ProjectGrid        # 10 m grid of the S2 products (AOI + margin, UTM zone of the tile)
    parcels: gpd.GeoDataFrame   # every parcel, project CRS
    traits: Traits              # per parcel index (0 = margins)
    parcel: np.ndarray          # parcel index on the project grid
    parcel_s2: np.ndarray       # parcel index on the S2 grid
    vigour: np.ndarray          # static green-cover / biomass multiplier, project grid
    vigour_s2: np.ndarray
    texture: np.ndarray         # static radar texture (standard normal), project grid


def build_world(aoi: gpd.GeoDataFrame, grid: ProjectGrid, s2_grid: ProjectGrid, seed: int,
                params: LandscapeParams) -> World:
    """Landscape over the union of both grids (project CRS), its traits and the per-pixel rasters."""
    s2_in_project = rasterio.warp.transform_bounds(s2_grid.crs, grid.crs, *s2_grid.bounds, densify_pts=21)
    union = (min(grid.bounds[0], s2_in_project[0]), min(grid.bounds[1], s2_in_project[1]),
             max(grid.bounds[2], s2_in_project[2]), max(grid.bounds[3], s2_in_project[3]))
    pad = 2 * grid.resolution
    world_grid = ProjectGrid(grid.crs, grid.resolution, snap_bounds(
        (union[0] - pad, union[1] - pad, union[2] + pad, union[3] + pad), grid.resolution))
    parcels = generate_landscape(world_grid.bounds, grid.bounds, grid.crs, product_rng(seed, "landscape"), params)
    codes = np.r_[PROFILE_CODE["margin"], [PROFILE_CODE[p] for p in parcels["profile"]]]
    traits = draw_traits(codes, product_rng(seed, "traits"))
    logger.info("rasterising %d parcels on a %d x %d grid", len(parcels), world_grid.width, world_grid.height)
    parcel_world = rasterize_parcels(parcels, world_grid)
    rng = product_rng(seed, "pixels")
    vigour_world = np.clip(1.0 + 0.10 * smooth_noise(world_grid.shape, 60.0 / grid.resolution, rng)
                           + 0.03 * rng.standard_normal(world_grid.shape, dtype=np.float32), 0.6, 1.4
                           ).astype(np.float32)
    texture_world = rng.standard_normal(world_grid.shape, dtype=np.float32)
    win_s2 = _window_in(world_grid, s2_grid)
    parcel_s2 = (_on_grid(parcel_world, world_grid, s2_grid, Resampling.nearest) if win_s2 is not None
                 else rasterize_parcels(parcels, s2_grid))
    return World(grid=grid, s2_grid=s2_grid, parcels=parcels, traits=traits,
                 parcel=np.ascontiguousarray(_on_grid(parcel_world, world_grid, grid, Resampling.nearest)),
                 parcel_s2=np.ascontiguousarray(parcel_s2),
                 vigour=np.ascontiguousarray(_on_grid(vigour_world, world_grid, grid, Resampling.nearest)),
                 vigour_s2=np.ascontiguousarray(_on_grid(vigour_world, world_grid, s2_grid, Resampling.bilinear)),
                 texture=np.ascontiguousarray(_on_grid(texture_world, world_grid, grid, Resampling.nearest)))


def s2_grid_for(aoi: gpd.GeoDataFrame, margin: float) -> tuple[ProjectGrid, str]:
    """(10 m grid of the S2 products: AOI bounds + margin in the tile's UTM zone, on 60 m multiples; tile id)."""
    centre = aoi.to_crs("EPSG:4326").union_all().centroid
    crs = utm_crs_for(centre.x, centre.y)
    left, bottom, right, top = aoi.to_crs(crs).total_bounds
    bounds = snap_bounds((left - margin, bottom - margin, right + margin, top + margin), 60.0)
    return ProjectGrid(crs, 10.0, bounds), mgrs_tile(centre.x, centre.y)


#: Sentinel-2 tiles are 109.8 km squares whose upper-left corner is the MGRS 100 km square's, so a tile
#: overlaps its east and south neighbours by 9.8 km (ESA's tiling grid)
S2_TILE_SIZE = 109800.0


def s2_tile_extent(column: int, row: int) -> tuple[float, float, float, float]:
    """Bounds (UTM metres) of the S2 tile of the MGRS 100 km square (easting // 100 km, northing // 100 km):
    west and north edges on the square's, 109.8 km wide and tall."""
    left, top = column * 100000.0, (row + 1) * 100000.0
    return left, top - S2_TILE_SIZE, left + S2_TILE_SIZE, top


def s2_tiles_for(s2_grid: ProjectGrid) -> list[tuple[str, ProjectGrid]]:
    """The MGRS tiles (same UTM zone) whose extent meets ``s2_grid`` and each one's part of it (a 10 m grid
    on the same 60 m lattice), west to east then north to south. Adjacent tiles overlap by 9.8 km, so a grid
    that crosses a tile edge gets several products whose overlap holds the same pixels."""
    left, bottom, right, top = s2_grid.bounds
    to_lonlat = pyproj.Transformer.from_crs(s2_grid.crs, "EPSG:4326", always_xy=True)
    zone = pyproj.CRS.from_user_input(s2_grid.crs).utm_zone
    if zone is None:
        raise ValueError(f"S2 grid CRS {s2_grid.crs} is not a UTM zone: Sentinel-2 tiles are in UTM")
    zone = int(zone[:-1])
    out = []
    for column in range(int(left // 100000) - 1, int(right // 100000) + 1):
        for row in range(int(top // 100000) + 1, int(bottom // 100000) - 2, -1):
            x0, y0, x1, y1 = s2_tile_extent(column, row)
            # inside the tile, on the grid's 60 m lattice (tile edges such as x 309 800 are not on it)
            part = (max(60.0 * np.ceil(x0 / 60.0), left), max(60.0 * np.ceil(y0 / 60.0), bottom),
                    min(60.0 * np.floor(x1 / 60.0), right), min(60.0 * np.floor(y1 / 60.0), top))
            if part[0] >= part[2] or part[1] >= part[3]:
                continue
            _, lat = to_lonlat.transform(column * 100000.0 + 50000.0, row * 100000.0 + 50000.0)
            out.append((mgrs_square(zone, lat, column * 100000.0 + 50000.0, row * 100000.0 + 50000.0),
                        ProjectGrid(s2_grid.crs, s2_grid.resolution, part)))
    return sorted(out, key=lambda t: (t[1].bounds[0], -t[1].bounds[3]))


# ---------------------------------------------------------------------------------------------- Sentinel-2

def simulate_s2_bands(world: World, doy: float, wetness: float, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
    """Clear-sky BOA reflectance of every band on the S2 grid (10 m bands at 10 m, 20 m bands as 2 x 2 means).

    Per parcel: the spectral mixture of the phenology model; per pixel: green cover times the static vigour
    field, spread by the instrument's point spread (Gaussian, sd 5 m), a per-date calibration/atmosphere
    factor per band (sd 2 %) and noise of sd 0.004 + 2 % of the value.
    """
    canopy = canopy_state(world.traits, doy)
    turbidity = rng.uniform(0.5, 1.5, len(world.traits))
    rho, d_green = surface_reflectance(canopy, world.traits, wetness, turbidity)
    p = world.parcel_s2
    green = canopy.green.astype(np.float32)
    headroom = (canopy.soil + canopy.water).astype(np.float32)
    dg = green[p] * (world.vigour_s2 - 1.0)
    dg = np.clip(dg, -green[p], headroom[p])
    gain = rng.normal(1.0, 0.02, len(BANDS)).astype(np.float32)
    out: dict[str, np.ndarray] = {}
    for b, band in enumerate(BANDS):
        value = ndimage.gaussian_filter(rho[:, b][p] + dg * d_green[:, b][p], _PSF_SIGMA_M / 10.0, mode="nearest",
                                        truncate=2.5) * gain[b]
        value += (0.004 + 0.02 * value) * rng.standard_normal(value.shape, dtype=np.float32)
        value = np.clip(value, 0.0005, 1.5)
        out[band] = value if band in _BANDS_10M else _mean2x2(value)
    return out


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def toa_from_boa(boa: Mapping[str, np.ndarray], opacity20: np.ndarray) -> dict[str, np.ndarray]:
    """All 13 Level-1C bands (TOA reflectance at native resolution) from the simulated BOA bands (10 m bands at
    10 m, 20 m bands at 20 m, clouds already blended in) and the cloud opacity at 20 m.

    A plausible model, not radiative transfer: TOA_b = path_b + T_b * BOA_b (``_PATH``, ``_TRANSMITTANCE``);
    B01 (60 m) from B02, B09 (60 m, water vapour) from B8A; B10 (cirrus) = 0.002 + 0.25 * opacity, as the
    1375 nm band sees only high cloud. 60 m bands are 3 x 3 means of the 20 m values.
    """
    out: dict[str, np.ndarray] = {}
    for band, value in boa.items():
        out[band] = (_PATH[band] + _TRANSMITTANCE[band] * value).astype(np.float32)
    b02_20 = _mean2x2(boa["B02"])
    out["B01"] = (_PATH["B01"] + _TRANSMITTANCE["B01"] * _block_mean(b02_20, 3)).astype(np.float32)
    out["B09"] = (_PATH["B09"] + _TRANSMITTANCE["B09"] * _block_mean(boa["B8A"], 3)).astype(np.float32)
    out["B10"] = (_B10_CLEAR + _B10_CLOUD * _block_mean(opacity20, 3)).astype(np.float32)
    return out


def _cut(data: np.ndarray, union: ProjectGrid, part: ProjectGrid, pixel: float) -> np.ndarray:
    """The window of ``part`` in an array on ``union`` at ``pixel`` metres."""
    r0 = int(round((union.bounds[3] - part.bounds[3]) / pixel))
    c0 = int(round((part.bounds[0] - union.bounds[0]) / pixel))
    h = int(round((part.bounds[3] - part.bounds[1]) / pixel))
    w = int(round((part.bounds[2] - part.bounds[0]) / pixel))
    return data[r0:r0 + h, c0:c0 + w]


def simulate_s2_product(folder: Path, world: World, aoi20: np.ndarray, sensing: datetime, platform: str,
                        tiles: Sequence[tuple[str, ProjectGrid]], cover: float, weather_wetness: float, seed: int,
                        zip_product: bool, level: str = "l2a") -> list[dict[str, object]]:
    """Simulate one datatake on the S2 grid and write, per MGRS tile it meets (the tile's part of the grid,
    identical pixels in the tiles' overlap, one sensing time and orbit), an L2A product, an L1C product
    (``toa_from_boa``) or both (``level`` l2a | l1c | both; the L1C and L2A of one date see the same ground and
    clouds); returns one summary per tile (name(s), tile, date, cloud fraction over the AOI of the date and of
    the tile's part)."""
    if level not in S2_LEVELS:
        raise ValueError(f"s2_level {level!r}: give one of {', '.join(S2_LEVELS)}")
    key = f"{sensing:%Y%m%dT%H%M%S}"
    rng = product_rng(seed, "s2", key)
    doy = sensing.timetuple().tm_yday + sensing.hour / 24
    bands = simulate_s2_bands(world, doy, weather_wetness, rng)
    scl = clear_sky_scl(_mean2x2(bands["B04"]), bands["B8A"], bands["B11"])
    sky = product_rng(seed, "s2-sky", key)
    field = smooth_noise(aoi20.shape, sky.uniform(40.0, 90.0), sky)
    distance = sky.uniform(40.0, 70.0)
    azimuth = math.radians(sky.uniform(125.0, 160.0))      # sun azimuth; shadows point away from it
    shadow = (int(round(distance * math.cos(azimuth))), int(round(-distance * math.sin(azimuth))))
    codes, opacity, shade = cloud_scene(field, aoi20, cover, shadow)
    opacity20 = opacity
    brightness = sky.uniform(0.85, 1.1)
    if codes.any():
        sky20 = (opacity, shade)
        sky10 = tuple(np.repeat(np.repeat(x, 2, 0), 2, 1) for x in sky20)
        for b, band in enumerate(BANDS):
            a, s = sky10 if band in _BANDS_10M else sky20
            value = np.where(s, bands[band] * _SHADOW[b], bands[band])
            bands[band] = (value * (1.0 - a) + a * _CLOUD[b] * brightness).astype(np.float32)
    scl = np.where(codes > 0, codes, scl).astype(np.uint8)
    fraction = float(np.isin(scl[aoi20], CLOUD_SCL).mean())
    out = []
    for tile, part in tiles:
        scl_part, aoi_part = _cut(scl, world.s2_grid, part, 20.0), _cut(aoi20, world.s2_grid, part, 20.0)
        refl = {b: _cut(v, world.s2_grid, part, 10.0 if b in _BANDS_10M else 20.0) for b, v in bands.items()}
        common = {"platform": platform, "sensing_time": sensing, "mgrs_tile": tile,
                  "relative_orbit": S2_RELATIVE_ORBIT, "baseline": S2_BASELINE, "grid10": part, "zip": zip_product}
        names = []
        if level in ("l2a", "both"):
            names.append(write_l2a(folder, reflectance=refl, scl=scl_part, **common).name)
        if level in ("l1c", "both"):
            valid = scl_part > 0
            percent = 100.0 * float(np.isin(scl_part[valid], (8, 9, 10)).mean()) if valid.any() else 0.0
            toa = toa_from_boa(refl, _cut(opacity20, world.s2_grid, part, 20.0))
            names.append(write_l1c(folder, toa=toa, cloud_cover=percent, **common).name)
        in_part = float(np.isin(scl_part[aoi_part], CLOUD_SCL).mean()) if aoi_part.any() else None
        logger.info("S2 %s: cloud cover over the AOI %.3f (target %.3f), over its part %s", ", ".join(names),
                    fraction, cover, "n/a" if in_part is None else f"{in_part:.3f}")
        summary: dict[str, object] = {"product": names[0], "platform": platform, "mgrs_tile": tile,
                                      "sensing_time": sensing.isoformat().replace("+00:00", "Z"),
                                      "cloud_fraction_aoi": round(fraction, 5), "target_cloud_fraction": cover,
                                      "cloud_fraction_tile_aoi": None if in_part is None else round(in_part, 5)}
        if len(names) > 1:
            summary["products"] = names
        out.append(summary)
    return out


# ---------------------------------------------------------------------------------------------- outputs

def _write_parcels(path: Path, parcels: gpd.GeoDataFrame, labels: "np.ndarray", aoi_geom: shapely.Geometry) -> int:
    """Surveyed parcels whose representative point is in the AOI, as an agency ships them (EPSG:4326)."""
    inside = shapely.contains(aoi_geom, parcels.geometry.representative_point().values)
    keep = inside & np.array([t is not None for t in labels])
    out = gpd.GeoDataFrame({"parcel_id": parcels["parcel_id"].to_numpy()[keep],
                            "crop": np.asarray(labels, dtype=object)[keep]},
                           geometry=parcels.geometry.values[keep], crs=parcels.crs).to_crs("EPSG:4326")
    with atomic_path(path) as tmp:
        out.to_file(tmp, layer="parcels", driver="GPKG")
    return int(keep.sum())


def cropland_mask(truth: np.ndarray, cropland_ids: Sequence[int], factor: int) -> np.ndarray:
    """A land-cover-style cropland mask: cropland where most of each ``factor`` x ``factor`` block of the
    true classes is a cropland class (the coarser mapping unit of a land-cover product), uint8 1/0."""
    crop = np.isin(truth, list(cropland_ids)).astype(np.float32)
    if factor <= 1:
        return crop.astype(np.uint8)
    h, w = crop.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(crop, ((0, ph), (0, pw)), mode="edge")
    blocks = padded.reshape((h + ph) // factor, factor, (w + pw) // factor, factor).mean(axis=(1, 3))
    coarse = (blocks >= 0.5).astype(np.uint8)
    return np.repeat(np.repeat(coarse, factor, 0), factor, 1)[:h, :w]


def _stale_files(folder: Path, written: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in written and not p.name.startswith("."))


def simulate(
    aoi_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    crs: str | None = "EPSG:32652",
    resolution: float = 10.0,
    season: tuple[str, str] = ("05-06", "09-27"),
    year: int = 2023,
    seed: int = 42,
    legend_path: str | os.PathLike,
    s1_orbits: Sequence[int] = (32, 105),
    s2_dates: int = 6,
    cloudy: Sequence[float] | None = None,
    label_coverage: float = 0.7,
    s2_margin: float = 1000.0,
    s1_looks: int = 5,
    coherence_looks: int = 20,
    s2_zip: bool = False,
    s2_level: str = "l2a",
    s1_format: str = "slc",
    s1_slices: int = 1,
    landscape: LandscapeParams | None = None,
) -> dict:
    """Simulate the demo inputs over an AOI into ``out_dir`` and return the summary (also ``truth.json``).

    ``season`` is (first, last) day as MM-DD of ``year``; ``s1_orbits`` are Sentinel-1A relative orbits (each
    imaged every 12 days); ``s2_dates`` Sentinel-2 acquisitions are spread over the season; ``cloudy`` gives the
    cloud cover over the AOI of each of them (share of SCL 3/8/9/10 pixels; default: one clear date, one ~30 %
    cloudy date, the others 1-4.5 %); ``label_coverage`` is the share of parcels the survey labels;
    ``s2_margin`` (m) is how far the S2 product extends beyond the AOI; ``s1_looks`` the equivalent number of
    looks of the C2 matrices and ``coherence_looks`` that of the coherence estimates (both for
    ``s1_format`` "seam": C2 and coherence products on the project grid; "slc": IW SLC SAFE zips, with the
    DEM ``dem.tif`` they were simulated on). ``s2_level`` is the Sentinel-2 processing level written per date:
    "l2a" (the default), "l1c" (TOA, all 13 bands, for Sen2Cor and s2cloudless) or "both". ``s1_slices`` (1 or 2)
    splits every pass into that many consecutive slices of one datatake, the boundary crossing the AOI (seam
    products: one C2 per slice over its band of grid rows, one coherence per pair of passes). Sentinel-2
    products are written per MGRS tile: an AOI across a tile edge gets one product per tile and date,
    identical in the tiles' overlap.
    """
    if s2_level not in S2_LEVELS:
        raise ValueError(f"s2_level {s2_level!r}: give one of {', '.join(S2_LEVELS)}")
    if int(s1_slices) not in (1, 2):
        raise ValueError(f"s1_slices {s1_slices}: give 1 or 2 (slices per Sentinel-1 pass)")
    if s1_format not in ("slc", "seam"):
        raise ValueError(f"s1_format {s1_format!r}: give 'slc' (IW SLC SAFE zips) or 'seam' (C2/coherence GeoTIFFs)")
    out = Path(out_dir)
    aoi = read_aoi(str(aoi_path))
    legend = Legend.load(str(legend_path))
    lookup = legend.lookup()
    missing = [c for c in LEGEND_CLASSES if c not in lookup]
    if missing:
        raise ValueError(f"legend {legend_path} has no class named or aliased {missing}: the simulator writes "
                         f"the classes {list(LEGEND_CLASSES)}; add them to the legend")
    start = _parse_mmdd(season[0], year, "start")
    end = _parse_mmdd(season[1], year, "end") + timedelta(days=1) - timedelta(microseconds=1)
    if end <= start:
        raise ValueError(f"season {season}: the end must follow the start")
    s2_plan = plan_s2(start, end, int(s2_dates))
    cover = list(cloudy) if cloudy is not None else default_cloud_cover(len(s2_plan))
    if len(cover) != len(s2_plan) or any(not 0.0 <= c < 1.0 for c in cover):
        raise ValueError(f"cloudy {cover}: give one cloud cover in [0, 1) per Sentinel-2 date ({len(s2_plan)})")
    if not 0.0 < label_coverage <= 1.0:
        raise ValueError(f"label_coverage {label_coverage}: give the surveyed share of parcels in (0, 1]")
    centre = aoi.to_crs("EPSG:4326").union_all().centroid
    scenes = plan_acquisitions(s1_orbits, start, end, centre.x, centre.y)
    pairs = plan_pairs(scenes)

    grid = project_grid(aoi, crs, resolution)
    s2_grid, _ = s2_grid_for(aoi, s2_margin)
    s2_tiles = s2_tiles_for(s2_grid)
    tile = ",".join(t for t, _ in s2_tiles)
    logger.info("simulating %s: grid %d x %d (%s, %g m), S2 tiles %s, seed %d", aoi_path, grid.width, grid.height,
                grid.crs, grid.resolution, tile, seed)
    world = build_world(aoi, grid, s2_grid, seed, landscape or LandscapeParams())
    weather = simulate_weather(year, product_rng(seed, "weather", str(year)))
    aoi_geom = aoi.to_crs(grid.crs).union_all()

    # labels, truth, cropland
    labels = survey_labels(world.parcels, label_coverage, lookup, product_rng(seed, "survey")).to_numpy()
    n_labelled = _write_parcels(out / "parcels.gpkg", world.parcels, labels, aoi_geom)
    class_lut = np.r_[0, [lookup[c] if c else 0 for c in world.parcels["class_name"]]].astype(np.uint8)
    truth = class_lut[world.parcel]
    inside = rasterio.features.geometry_mask([aoi_geom], grid.shape, grid.transform, invert=True)
    truth = np.where(inside, truth, 0).astype(np.uint8)
    write_raster(out / "truth.tif", truth, grid, nodata=0, colormap=legend.colormap(),
                 tags={"SEED": seed, "CLASSES": json.dumps(dict(zip(legend.names, legend.ids)))})
    factor = max(1, int(round(30.0 / grid.resolution)))
    cropland = np.where(inside, cropland_mask(truth, legend.cropland_ids, factor), 0).astype(np.uint8)
    write_raster(out / "cropland.tif", cropland, grid, tags={"MAPPING_UNIT_M": factor * grid.resolution})

    # Sentinel-2
    aoi20 = rasterio.features.geometry_mask(
        [shapely.transform(aoi_geom, pyproj.Transformer.from_crs(grid.crs, s2_grid.crs, always_xy=True).transform,
                           interleaved=False)],
        (s2_grid.height // 2, s2_grid.width // 2),
        from_origin(s2_grid.bounds[0], s2_grid.bounds[3], 20.0, 20.0), invert=True)
    s2_summary = []
    for (sensing, platform), c in zip(s2_plan, cover):
        doy = sensing.timetuple().tm_yday
        s2_summary += simulate_s2_product(out / "s2", world, aoi20, sensing, platform, s2_tiles, float(c),
                                          weather.wetness_on(doy), seed, s2_zip, s2_level)

    # Sentinel-1
    land = radar_landscape(world, weather, seed)
    (out / "s1").mkdir(parents=True, exist_ok=True)
    if s1_format == "slc":
        scenes = simulate_slc(out, grid, land, scenes, seed, int(s1_slices))
        # pairs of the passes (named by their first slice; each pair joins every slice pair of the two passes)
        firsts: dict[tuple[int, str], RadarScene] = {}
        for s in scenes:
            firsts.setdefault((s.relative_orbit, f"{s.start:%Y%m%d}"), s)
        pairs = plan_pairs(list(firsts.values()))
        written = {f"{s.name}.zip" for s in scenes}
    else:
        # one C2 per slice (a band of grid rows); one coherence per pair of passes, tagged with their first slices
        cut = {scene.name: seam_slices(scene, grid.height, int(s1_slices)) for scene in scenes}
        pairs = [replace(p, reference=cut[p.reference.name][0][0], secondary=cut[p.secondary.name][0][0])
                 for p in pairs]
        sliced = [part for parts in cut.values() for part in parts]
        for i, (scene, rows) in enumerate(sliced, start=1):
            logger.info("S1 scene %d/%d %s (grid rows %d-%d)", i, len(sliced), scene.name, *rows)
            write_scene(out / "s1" / f"{scene.name}_C2.tif", scene, grid, land, s1_looks,
                        entropy(seed, "s1", scene.name), part=rows)
        for i, pair in enumerate(pairs, start=1):
            logger.info("S1 pair %d/%d %s", i, len(pairs), pair.pair)
            write_pair(out / "s1" / f"{pair.pair}_coh.tif", pair, grid, land, coherence_looks,
                       entropy(seed, "coh", pair.pair))
        scenes = [scene for scene, _ in sliced]
        written = {f"{s.name}_C2.tif" for s in scenes} | {f"{p.pair}_coh.tif" for p in pairs}
    s2_written = {n for s in s2_summary for n in s.get("products", [s["product"]])}
    for folder, names in ((out / "s1", written), (out / "s2", s2_written)):
        stale = _stale_files(folder, names)
        if stale:
            logger.warning("%s holds %d file(s) this run did not write (e.g. %s): the workflow will read them too",
                           folder, len(stale), stale[0])

    summary = _summary(world, truth, inside, legend, n_labelled, labels, aoi_geom, scenes, pairs, s2_summary,
                       seed=seed, year=year, season=season, s2_tiles=[t for t, _ in s2_tiles])
    with atomic_path(out / "truth.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def radar_landscape(world: World, weather: Weather, seed: int) -> RadarLandscape:
    """What the radar products need of the world: parcels, static rasters, traits and weather."""
    return RadarLandscape(parcel=world.parcel, vigour=world.vigour, texture=world.texture, traits=world.traits,
                          radar=draw_radar_traits(world.traits, product_rng(seed, "radar-traits")), weather=weather)


def simulate_slc(out: Path, grid: ProjectGrid, land: RadarLandscape, scenes: Sequence[RadarScene], seed: int,
                 slices: int = 1) -> list[RadarScene]:
    """Write ``dem.tif`` and the IW SLC zips of ``scenes`` into ``out/s1``; return the scenes as written
    (product names and times from their bursts, incidence at the AOI centre). With ``slices`` 2 each pass is
    written as two consecutive slices of one datatake (slice numbers 7 and 8), split across the AOI."""
    x0, y0, x1, y1 = grid.bounds
    margin = 5000.0
    heights, dem_grid = simulate_dem((x0 - margin, y0 - margin, x1 + margin, y1 + margin), grid.crs,
                                     product_rng(seed, "dem"))
    write_raster(out / "dem.tif", heights, dem_grid, nodata=-32768.0,
                 tags={"HEIGHTS": "ellipsoidal (WGS84), m"})
    height = dem_sampler(heights, dem_grid)
    lon, lat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        0.5 * (x0 + x1), 0.5 * (y0 + y1))
    written: list[RadarScene] = []
    with tempfile.TemporaryDirectory() as tmp:
        template = load_template(TEMPLATE, tmp)
        for track in sorted({s.relative_orbit for s in scenes}):
            track_scenes = [s for s in scenes if s.relative_orbit == track]
            geometry = place_track(template, track, track_scenes[0].incidence, lon, lat, grid, height, grid.bounds,
                                   at_burst_edge=slices > 1)
            parts = split_slices(geometry, height, grid, slices)
            for number, part in enumerate(parts, start=7):
                written += write_track(out / "s1", template, part, track_scenes, land, grid,
                                       lambda swath, name, k: entropy(seed, "slc", name, swath, str(k)),
                                       slice_number=number if len(parts) > 1 else None)
    return sorted(written, key=lambda s: s.start)


def _summary(world: World, truth: np.ndarray, inside: np.ndarray, legend: Legend, n_labelled: int,
             labels: np.ndarray, aoi_geom: shapely.Geometry, scenes, pairs, s2_summary, **meta) -> dict:
    counts = np.bincount(truth[inside], minlength=max(legend.ids) + 1)
    total = max(int(inside.sum()), 1)
    shares = {name: round(float(counts[i]) / total, 5) for name, i in zip(legend.names, legend.ids)}
    shares["none"] = round(float(counts[0]) / total, 5)
    crop_ids = legend.cropland_ids
    crop_total = max(int(counts[crop_ids].sum()), 1)
    parcels = world.parcels
    in_aoi = shapely.contains(aoi_geom, parcels.geometry.representative_point().values)
    is_crop = parcels["profile"].isin([p.name for p in PROFILES if p.legend in legend.names and
                                       legend.ids[legend.names.index(p.legend)] in crop_ids]).to_numpy()
    area = parcels.geometry.area.to_numpy() / 1e4
    labelled = np.array([t is not None for t in labels])
    return {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in meta.items()},
        "grid": world.grid.to_dict(),
        "s2_grid": world.s2_grid.to_dict(),
        "class_pixel_share": shares,
        "crop_pixel_share": {legend.names[legend.ids.index(i)]: round(float(counts[i]) / crop_total, 5)
                             for i in crop_ids},
        "n_parcels": int(in_aoi.sum()),
        "n_crop_fields": int((in_aoi & is_crop).sum()),
        "n_labelled_parcels": n_labelled,
        "mean_parcel_area_ha": round(float(area[in_aoi & is_crop].mean()), 4) if (in_aoi & is_crop).any() else None,
        "mean_labelled_parcel_area_ha": (round(float(area[in_aoi & is_crop & labelled].mean()), 4)
                                         if (in_aoi & is_crop & labelled).any() else None),
        "s1_scenes": [s.name for s in scenes],
        "s1_pairs": [p.pair for p in pairs],
        "s1_incidence": {str(t): round(next(s.incidence for s in scenes if s.relative_orbit == t), 2)
                         for t in sorted({s.relative_orbit for s in scenes})},
        "s2_products": s2_summary,
    }
