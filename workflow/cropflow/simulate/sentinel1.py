"""Simulated Sentinel-1 seam products: per-scene speckled C2 matrices and per-pair coherence on the project grid.

Acquisition plan: Sentinel-1A, 175 orbits in a 12-day repeat, anchored on a real orbit (absolute orbit 45056
crossed the ascending node at 2022-09-18T07:10:53 UTC: its IW SLC over the Azores, relative orbit 9, starts
07:49:21, 10 s before the satellite crosses 38.7 N) and the ascending-node longitude of relative orbit 1
(about 1 W). From these the planner derives, for each requested relative orbit, the pass (ascending or
descending) from which the AOI lies in the IW swath, the time the satellite crosses the AOI's latitude, the
incidence angle at the AOI, and absolute orbits with relative = (abs - 73) % 175 + 1. For Bei'an (48 N,
126.6 E) tracks 32 and 105 are both descending, about 21:38 and 21:46 UTC, 5 days apart, at about 41 and 31
degrees (SLC slices named from 10 s before the crossing, 27 s long). These are plausible values, not ESA's
orbit files.

Signal: a water cloud model per polarisation (Attema & Ulaby 1978, Radio Sci. 13:357): sigma0 = A (1 - tau2)
+ tau2 sigma0_background, tau2 = exp(-2 B V / cos theta), with V the canopy biomass of the phenology model,
A the saturated canopy backscatter; background = soil (brighter when wet) or water (brighter with wind);
built-up surfaces add a strong, polarised double-bounce term. The C2 matrix sums the components' covariances
(each with its own VV-VH correlation and phase), plus a residual noise floor. Speckle: the multilook sample
covariance of ``looks`` complex Gaussian scattering vectors (complex Wishart, Goodman 1963; Lee et al. 1994),
times a static texture (product model). Coherence of a pair: the power-weighted coherence of the components
(bare soil high unless rain, tillage or harvest happened in between; vegetation and water low; buildings
high), reduced by the noise floor, then the sample-coherence estimation noise of ``coherence_looks`` looks.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import rasterio.windows
from scipy import ndimage

from cropflow.grid import ProjectGrid
from cropflow.raster import RasterWriter, row_windows
from cropflow.s1 import C2_BANDS, COHERENCE_BANDS, pair_id, relative_orbit
from cropflow.simulate.phenology import PROFILES, Canopy, Traits, Weather, canopy_state

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- orbit geometry

ORBIT_PERIOD_S = 12 * 86400 / 175
_ANCHOR_ORBIT = 45056
_ANCHOR_ANX = datetime(2022, 9, 18, 7, 10, 53, 400000, tzinfo=UTC)
_ANX_LONGITUDE_TRACK1 = -1.2
#: data-take ids grow about 8.6 per orbit (S1A 045056 -> 056232, 048408 -> 05D29C)
_ANCHOR_DATATAKE, _DATATAKE_PER_ORBIT = 0x056232, 8.585
_INCLINATION = math.radians(98.18)
_EARTH_ROTATION_DEG_S = 360.0 / 86164.1
_EARTH_RADIUS_KM, _ALTITUDE_KM = 6371.0, 693.0
#: IW swath incidence range (IW1 near to IW3 far), degrees
IW_INCIDENCE = (29.1, 46.0)
#: length of one IW SLC slice (s)
_SLICE_S = 27


@dataclass(frozen=True)
class RadarScene:
    """One planned acquisition over the AOI."""

    name: str
    platform: str
    absolute_orbit: int
    relative_orbit: int
    orbit_pass: str
    start: datetime
    stop: datetime
    incidence: float

    @property
    def doy(self) -> float:
        """Day of year (with the fraction of the day) of the start time."""
        return self.start.timetuple().tm_yday + (self.start.hour + self.start.minute / 60) / 24

    def tags(self) -> dict[str, str]:
        return {"SCENE": self.name, "PLATFORM": self.platform, "RELATIVE_ORBIT": str(self.relative_orbit),
                "PASS": self.orbit_pass, "START_TIME": f"{self.start:%Y-%m-%dT%H:%M:%S.%f}Z"}


@dataclass(frozen=True)
class RadarPair:
    pair: str
    reference: RadarScene
    secondary: RadarScene

    def tags(self) -> dict[str, str]:
        return {"REFERENCE": self.reference.name, "SECONDARY": self.secondary.name,
                "RELATIVE_ORBIT": str(self.reference.relative_orbit)}


def anx_longitude(track: int) -> float:
    """Ascending-node longitude (degrees east, -180..180) of an S1 relative orbit: consecutive orbits move
    360 * 12 / 175 degrees west."""
    lon = _ANX_LONGITUDE_TRACK1 - (track - 1) * 360.0 * 12 / 175
    return (lon + 180.0) % 360.0 - 180.0


def latitude_crossing(lat: float, ascending: bool) -> tuple[float, float]:
    """(seconds after the ascending node, ground longitude east of the node) where the sub-satellite point
    crosses ``lat`` on a circular orbit: argument of latitude u = asin(sin lat / sin i) (or 180 - that),
    inertial longitude atan2(cos i sin u, cos u), minus the Earth's rotation since the node."""
    u = math.asin(max(-1.0, min(1.0, math.sin(math.radians(lat)) / math.sin(_INCLINATION))))
    if not ascending:
        u = math.pi - u
    seconds = u / (2 * math.pi) * ORBIT_PERIOD_S
    inertial = math.degrees(math.atan2(math.cos(_INCLINATION) * math.sin(u), math.cos(u)))
    return seconds, inertial - _EARTH_ROTATION_DEG_S * seconds


def incidence_angle(ground_range_km: float) -> float:
    """Incidence angle (degrees) at a ground range from nadir on a spherical Earth (altitude 693 km)."""
    beta = ground_range_km / _EARTH_RADIUS_KM
    look = math.atan2(_EARTH_RADIUS_KM * math.sin(beta), _EARTH_RADIUS_KM + _ALTITUDE_KM
                      - _EARTH_RADIUS_KM * math.cos(beta))
    return math.degrees(look + beta)


def view_geometry(track: int, lon: float, lat: float) -> tuple[str, float, float]:
    """(pass, incidence, seconds after the ascending node) of a track over a point.

    The radar looks right: west of the ground track on descending passes, east on ascending ones. The pass
    whose incidence at the point is nearest mid-swath is chosen; outside the IW swath a warning is logged.
    """
    options = []
    for ascending in (True, False):
        seconds, dlon = latitude_crossing(lat, ascending)
        nadir = anx_longitude(track) + dlon
        east = ((lon - nadir + 180.0) % 360.0 - 180.0) * 111.32 * math.cos(math.radians(lat))
        look_range = east if ascending else -east
        if look_range <= 0:
            continue
        inc = incidence_angle(look_range)
        options.append((abs(inc - sum(IW_INCIDENCE) / 2), "ASCENDING" if ascending else "DESCENDING", inc, seconds))
    if not options:
        raise ValueError(f"relative orbit {track} cannot see longitude {lon:.2f}: choose another s1 orbit")
    _, orbit_pass, inc, seconds = min(options)
    if not IW_INCIDENCE[0] <= inc <= IW_INCIDENCE[1]:
        logger.warning("relative orbit %d sees the AOI at %.1f deg incidence, outside the IW swath (%.1f-%.1f): "
                       "simulated anyway", track, inc, *IW_INCIDENCE)
    return orbit_pass, inc, seconds


def datatake_id(absolute_orbit: int) -> int:
    """Mission data-take id of an acquisition on ``absolute_orbit`` (24 bits)."""
    return int(round(_ANCHOR_DATATAKE + _DATATAKE_PER_ORBIT * (absolute_orbit - _ANCHOR_ORBIT))) & 0xFFFFFF


def scene_name(platform: str, start: datetime, absolute_orbit: int, stop: datetime | None = None) -> str:
    """Product name ``S1A_IW_SLC__1SDV_<start>_<stop>_<orbit>_<datatake>_<crc>`` (crc = CRC-32 of the rest);
    ``stop`` defaults to a full 27 s slice."""
    stop = start + timedelta(seconds=_SLICE_S) if stop is None else stop
    datatake = datatake_id(absolute_orbit)
    stem = f"{platform}_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{absolute_orbit:06d}_{datatake:06X}"
    return f"{stem}_{zlib.crc32(stem.encode()) & 0xFFFF:04X}"


def plan_acquisitions(tracks: Sequence[int], start: datetime, end: datetime, lon: float, lat: float
                      ) -> list[RadarScene]:
    """Sentinel-1A acquisitions of ``tracks`` over (lon, lat) between ``start`` and ``end`` (UTC), by time."""
    if start.year < 2015:
        raise ValueError(f"season {start:%Y}: Sentinel-1A acquisitions are simulated from 2015 on")
    scenes = []
    for track in tracks:
        if not 1 <= int(track) <= 175:
            raise ValueError(f"s1 relative orbit {track}: Sentinel-1 relative orbits are 1..175")
        orbit_pass, inc, seconds = view_geometry(int(track), lon, lat)
        first = _ANCHOR_ORBIT + math.ceil(((start - _ANCHOR_ANX).total_seconds() - seconds) / ORBIT_PERIOD_S)
        orbit = first + (int(track) - relative_orbit("S1A", first)) % 175
        while True:
            t = _ANCHOR_ANX + timedelta(seconds=(orbit - _ANCHOR_ORBIT) * ORBIT_PERIOD_S + seconds - 10.0)
            t = t.replace(microsecond=(t.microsecond // 1000) * 1000)
            if t > end:
                break
            scenes.append(RadarScene(scene_name("S1A", t, orbit), "S1A", orbit, int(track), orbit_pass, t,
                                     t + timedelta(seconds=_SLICE_S), inc))
            orbit += 175
    return sorted(scenes, key=lambda s: s.start)


def plan_pairs(scenes: Sequence[RadarScene]) -> list[RadarPair]:
    """Consecutive same-track pairs (one platform, 12 days apart)."""
    pairs = []
    for track in sorted({s.relative_orbit for s in scenes}):
        seq = sorted((s for s in scenes if s.relative_orbit == track), key=lambda s: s.start)
        pairs += [RadarPair(pair_id(a.name, b.name), a, b) for a, b in zip(seq[:-1], seq[1:])]
    return pairs


# ---------------------------------------------------------------------------------------------- radar traits

@dataclass(frozen=True)
class RadarProfile:
    """C-band parameters of one surface type (dB values are sigma0 at 37 degrees)."""

    a_vv: float = -11.0       # saturated canopy backscatter, VV (dB)
    a_vh: float = -17.5
    b_vv: float = 0.8         # canopy attenuation per unit biomass
    b_vh: float = 0.5
    rho_veg: float = 0.1      # |correlation| of VV and VH in the canopy term
    phase_veg: float = 0.0    # its phase (rad)
    built_vv: float = -9.0    # built-up (double bounce) backscatter
    built_vh: float = -18.0
    rho_built: float = 0.3
    phase_built: float = 0.0
    coh_veg: float = 0.12     # 12-day coherence of the canopy term
    coh_built: float = 0.8
    texture: float = 0.15     # sd of the static log-texture


RADAR_PROFILES: dict[str, RadarProfile] = {
    "margin": RadarProfile(texture=0.2, coh_veg=0.15),
    "maize": RadarProfile(-9.0, -14.0, 1.1, 0.6, 0.20, 0.5, coh_veg=0.10),
    "soybean": RadarProfile(-9.5, -14.5, 0.8, 0.5, 0.08, 0.1, coh_veg=0.12),
    "wheat": RadarProfile(-13.0, -19.0, 1.6, 0.5, 0.15, -0.4, coh_veg=0.15),
    "rice": RadarProfile(-8.5, -15.0, 0.9, 0.5, 0.25, 1.0, coh_veg=0.10),
    "other_dryland": RadarProfile(-10.0, -15.5, 0.9, 0.5, 0.12, 0.2, coh_veg=0.12, texture=0.18),
    "forest": RadarProfile(-7.5, -12.5, 1.0, 0.6, 0.05, 0.0, coh_veg=0.08, texture=0.3),
    "water": RadarProfile(texture=0.1),
    "residential": RadarProfile(built_vv=-4.0, built_vh=-12.0, rho_built=0.45, phase_built=1.0, coh_built=0.85,
                                texture=0.45),
}
#: bare soil: sigma0_VV = -14.5 dB + 7 dB x wetness + roughness, VH 9.5 dB lower; water: -24 dB + 6 dB x wind
SOIL_VV_DB, SOIL_WET_DB, SOIL_VH_OFFSET_DB, SOIL_INCIDENCE_DB = -14.5, 7.0, -9.5, -0.2
WATER_VV_DB, WATER_WIND_DB, WATER_VH_OFFSET_DB, WATER_INCIDENCE_DB = -24.0, 6.0, -10.0, -0.3
SOIL_RHO, SOIL_PHASE, WATER_RHO = 0.3, 0.0, 0.3
#: 12-day coherence of bare soil without rain or field work; rain (mm) halving it; after tillage or harvest
SOIL_COHERENCE, RAIN_HALF_MM, WORKED_COHERENCE = 0.8, 15.0, 0.2
#: residual noise floor after thermal-noise removal (linear, -26 dB)
NOISE_FLOOR = 10 ** (-26 / 10)


def db(x: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(x)


def linear(x_db: np.ndarray | float) -> np.ndarray:
    return np.power(10.0, np.asarray(x_db, dtype=np.float64) / 10.0)


@dataclass(frozen=True)
class RadarTraits:
    """Per-parcel radar parameters (arrays indexed like Traits)."""

    a_vv: np.ndarray
    a_vh: np.ndarray
    b_vv: np.ndarray
    b_vh: np.ndarray
    rho_veg: np.ndarray
    phase_veg: np.ndarray
    built_vv: np.ndarray
    built_vh: np.ndarray
    rho_built: np.ndarray
    phase_built: np.ndarray
    coh_veg: np.ndarray
    coh_built: np.ndarray
    texture: np.ndarray
    roughness_db: np.ndarray
    shelter: np.ndarray   # water: multiplier of the wind effect


def draw_radar_traits(traits: Traits, rng: np.random.Generator) -> RadarTraits:
    """Per-parcel radar parameters: the profile's values with random offsets (row direction and canopy
    structure: sd 1.2 dB on VV, 0.9 dB on VH; attenuation +-25 %; soil roughness sd 1.5 dB; building
    orientation and density)."""
    n = len(traits)
    prof = [RADAR_PROFILES[PROFILES[c].name] for c in range(len(PROFILES))]
    code = traits.profile

    def table(attr: str) -> np.ndarray:
        return np.array([getattr(p, attr) for p in prof])[code]

    shift = rng.normal(0.0, 2.5, n)
    rows = rng.normal(0.0, 1.0, n)   # row direction and canopy structure: mostly VV
    return RadarTraits(
        a_vv=linear(table("a_vv") + rows + rng.normal(0.0, 0.6, n)),
        a_vh=linear(table("a_vh") + 0.4 * rows + rng.normal(0.0, 0.8, n)),
        b_vv=table("b_vv") * rng.uniform(0.75, 1.25, n),
        b_vh=table("b_vh") * rng.uniform(0.75, 1.25, n),
        rho_veg=table("rho_veg"),
        phase_veg=table("phase_veg") + rng.normal(0.0, 0.1, n),
        built_vv=linear(table("built_vv") + shift),
        built_vh=linear(table("built_vh") + shift + rng.normal(0.0, 1.0, n)),
        rho_built=np.clip(table("rho_built") + rng.normal(0.0, 0.08, n), 0.0, 0.9),
        phase_built=table("phase_built") + rng.normal(0.0, 0.6, n),
        coh_veg=table("coh_veg"),
        coh_built=table("coh_built"),
        texture=table("texture"),
        roughness_db=rng.normal(0.0, 1.5, n),
        shelter=rng.uniform(0.5, 1.2, n),
    )


@dataclass(frozen=True)
class ParcelRadar:
    """Per-parcel inputs of the backscatter model on one date (linear powers)."""

    biomass: np.ndarray
    open_area: np.ndarray     # share not built up
    background_vv: np.ndarray
    background_vh: np.ndarray
    background_rho: np.ndarray
    soil_share: np.ndarray    # share of the background power from soil (the rest is water)
    built_share: np.ndarray


def parcel_radar(canopy: Canopy, rt: RadarTraits, wetness: float, wind: float, incidence: float) -> ParcelRadar:
    """Background (soil and open water mixed by their cover) and cover shares of every parcel on one date."""
    dtheta = incidence - 37.0
    soil_vv = linear(SOIL_VV_DB + SOIL_WET_DB * wetness + rt.roughness_db + SOIL_INCIDENCE_DB * dtheta)
    water_vv = linear(WATER_VV_DB + WATER_WIND_DB * wind * rt.shelter + WATER_INCIDENCE_DB * dtheta)
    open_area = np.clip(1.0 - canopy.built, 1e-6, 1.0)
    water = np.clip(canopy.water / open_area, 0.0, 1.0)
    bg_vv = (1 - water) * soil_vv + water * water_vv
    bg_vh = (1 - water) * soil_vv * linear(SOIL_VH_OFFSET_DB) + water * water_vv * linear(WATER_VH_OFFSET_DB)
    soil_share = np.where(bg_vv > 0, (1 - water) * soil_vv / bg_vv, 0.0)
    rho = soil_share * SOIL_RHO + (1 - soil_share) * WATER_RHO
    return ParcelRadar(biomass=canopy.biomass, open_area=open_area, background_vv=bg_vv, background_vh=bg_vh,
                       background_rho=rho, soil_share=soil_share, built_share=canopy.built)


@dataclass
class Components:
    """Per-pixel backscatter components (linear power) of one date, each pixel-texture scaled."""

    veg_vv: np.ndarray
    veg_vh: np.ndarray
    bg_vv: np.ndarray
    bg_vh: np.ndarray
    built_vv: np.ndarray
    built_vh: np.ndarray
    c12_real: np.ndarray
    c12_imag: np.ndarray

    @property
    def c11(self) -> np.ndarray:
        return self.veg_vv + self.bg_vv + self.built_vv + NOISE_FLOOR

    @property
    def c22(self) -> np.ndarray:
        return self.veg_vh + self.bg_vh + self.built_vh + NOISE_FLOOR


def water_cloud(a: np.ndarray, b: np.ndarray, biomass: np.ndarray, background: np.ndarray, cos_theta: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Water cloud model (Attema & Ulaby 1978): (canopy term A (1 - tau2), attenuated background tau2 s0_bg),
    tau2 = exp(-2 B V / cos theta)."""
    tau2 = np.exp(-2.0 * b * biomass / cos_theta)
    return a * (1.0 - tau2), tau2 * background


def pixel_components(parcel: np.ndarray, vigour: np.ndarray, texture: np.ndarray, pr: ParcelRadar,
                     rt: RadarTraits, incidence: float) -> Components:
    """Expected backscatter components of every pixel of a block (parcel index raster, static vigour and
    standard-normal texture rasters): water cloud per polarisation over the open share, built-up term over
    the built share, C12 = sum of rho_k exp(i phi_k) sqrt(P_k,VV P_k,VH) over the components."""
    f32 = np.float32
    cos_t = math.cos(math.radians(incidence))
    v = pr.biomass.astype(f32)[parcel] * vigour
    open_ = pr.open_area.astype(f32)[parcel]
    veg_vv, bg_vv = water_cloud(rt.a_vv.astype(f32)[parcel], rt.b_vv.astype(f32)[parcel], v,
                                pr.background_vv.astype(f32)[parcel], cos_t)
    veg_vh, bg_vh = water_cloud(rt.a_vh.astype(f32)[parcel], rt.b_vh.astype(f32)[parcel], v,
                                pr.background_vh.astype(f32)[parcel], cos_t)
    tex = np.exp(rt.texture.astype(f32)[parcel] * texture - 0.5 * rt.texture.astype(f32)[parcel] ** 2)
    scale = open_ * tex
    veg_vv *= scale
    veg_vh *= scale
    bg_vv *= scale
    bg_vh *= scale
    built = pr.built_share.astype(f32)[parcel] * tex
    built_vv = built * rt.built_vv.astype(f32)[parcel]
    built_vh = built * rt.built_vh.astype(f32)[parcel]
    real = np.zeros_like(veg_vv)
    imag = np.zeros_like(veg_vv)
    for rho, phase, p_vv, p_vh in ((rt.rho_veg, rt.phase_veg, veg_vv, veg_vh),
                                   (pr.background_rho, np.zeros(1), bg_vv, bg_vh),
                                   (rt.rho_built, rt.phase_built, built_vv, built_vh)):
        amp = rho.astype(f32)[parcel] * np.sqrt(p_vv * p_vh)
        ph = phase.astype(f32)[parcel] if phase.size > 1 else np.float32(0.0)
        real += amp * np.cos(ph)
        imag += amp * np.sin(ph)
    return Components(veg_vv, veg_vh, bg_vv, bg_vh, built_vv, built_vh, real, imag)


def multilook_covariance(c11: np.ndarray, c22: np.ndarray, c12_real: np.ndarray, c12_imag: np.ndarray,
                         looks: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Sample C2 of ``looks`` scattering vectors k = [VV, VH] ~ CN(0, C) (scaled complex Wishart W(L, C) / L).

    k = Lc z with Lc the Cholesky factor of C (l11 = sqrt C11, l21 = conj C12 / l11, l22 = sqrt(C22 - |C12|2 /
    C11)) and z standard complex Gaussian; with P1 = <|z1|2>, P2 = <|z2|2>, W = <z1 conj z2> over the looks:
    C11^ = C11 P1, C12^ = C12 P1 + l11 l22 W, C22^ = |l21|2 P1 + l22^2 P2 + 2 l22 Re(l21 W).
    Returns (C11, C22, C12 real, C12 imag), float32.
    """
    if looks < 1:
        raise ValueError(f"s1 looks {looks}: give a positive number of looks")
    shape = c11.shape
    p1 = np.zeros(shape, np.float32)
    p2 = np.zeros(shape, np.float32)
    wr = np.zeros(shape, np.float32)
    wi = np.zeros(shape, np.float32)
    for _ in range(looks):
        a, b, c, d = rng.standard_normal((4, *shape), dtype=np.float32)
        p1 += a * a + b * b
        p2 += c * c + d * d
        wr += a * c + b * d
        wi += b * c - a * d
    k = np.float32(0.5 / looks)
    p1 *= k
    p2 *= k
    wr *= k
    wi *= k
    l11 = np.sqrt(c11)
    mod2 = c12_real ** 2 + c12_imag ** 2
    l22 = np.sqrt(np.maximum(c22 - mod2 / c11, 0.0))
    out11 = c11 * p1
    out12r = c12_real * p1 + l11 * l22 * wr
    out12i = c12_imag * p1 + l11 * l22 * wi
    out22 = mod2 / c11 * p1 + l22 * l22 * p2 + 2.0 * l22 * (c12_real * wr + c12_imag * wi) / l11
    return out11, out22, out12r, out12i


def coherence_terms(c1: Components, c2: Components, pol: str, gamma_veg: np.ndarray, gamma_bg: np.ndarray,
                    gamma_built: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numerator, power 1, power 2) of the coherence of a sum of independent components,
    gamma = sum_k gamma_k sqrt(P_k1 P_k2) / sqrt(P_1 P_2); the totals P include the noise floor, which
    decorrelates (the SNR term of Zebker & Villasenor 1992)."""
    num = np.zeros_like(c1.veg_vv)
    for name, g in (("veg", gamma_veg), ("bg", gamma_bg), ("built", gamma_built)):
        num += g * np.sqrt(getattr(c1, f"{name}_{pol}") * getattr(c2, f"{name}_{pol}"))
    return num, (c1.c11 if pol == "vv" else c1.c22), (c2.c11 if pol == "vv" else c2.c22)


def estimated_coherence(gamma: np.ndarray, looks: int, rng: np.random.Generator) -> np.ndarray:
    """Sample-coherence estimate of a true coherence with ``looks`` independent looks: |gamma + e|,
    e ~ CN(0, (1 - gamma^2) / looks), clipped to [0, 1] (first-order model of the estimator's spread and
    its bias at low coherence, E|gamma^| ~ sqrt(pi / 4N) at gamma = 0; Touzi et al. 1999)."""
    sd = np.sqrt((1.0 - gamma ** 2) / (2.0 * looks)).astype(np.float32)
    e = rng.standard_normal((2, *gamma.shape), dtype=np.float32)
    return np.clip(np.hypot(gamma + sd * e[0], sd * e[1]), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------- products

#: mantissa bits kept in the written rasters (relative rounding error <= 2^-11, far below speckle and
#: estimation noise) so that deflate compresses the noise-like values to about half their size
STORED_MANTISSA_BITS = 10


def round_mantissa(x: np.ndarray, bits: int = STORED_MANTISSA_BITS) -> np.ndarray:
    """float32 values rounded to ``bits`` mantissa bits (round half up on the binary mantissa; NaN kept)."""
    drop = 23 - int(bits)
    if drop <= 0:
        return np.asarray(x, dtype=np.float32)
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), rounded)


@dataclass(frozen=True)
class RadarLandscape:
    """Everything the radar products need, on the project grid."""

    parcel: np.ndarray    # int32 parcel index per pixel (0 = margins, roads)
    vigour: np.ndarray    # float32 static multiplier of biomass / green cover
    texture: np.ndarray   # float32 static standard-normal texture
    traits: Traits
    radar: RadarTraits
    weather: Weather


def _parcel_radar(land: RadarLandscape, scene: RadarScene) -> ParcelRadar:
    return parcel_radar(canopy_state(land.traits, scene.doy), land.radar, land.weather.wetness_on(scene.doy),
                        land.weather.wind_on(scene.doy), scene.incidence)


def expected_components(land: RadarLandscape, scene: RadarScene) -> Components:
    """The expected (speckle-free) backscatter components of every pixel of the project grid on one date."""
    return pixel_components(land.parcel, land.vigour, land.texture, _parcel_radar(land, scene), land.radar,
                            scene.incidence)


def _block_rng(entropy: Sequence[int], block: int) -> np.random.Generator:
    return np.random.default_rng([*entropy, block])


#: spatial spread (Gaussian sd, m) of the expected signal: SAR resolution cell (about 20 x 22 m after
#: multilooking) plus resampling onto the grid; the coherence estimation window adds to it
RESOLUTION_SIGMA_M, COHERENCE_SIGMA_M = 7.0, 10.0
_TRUNCATE = 2.5


def spread(x: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian point spread of a per-pixel signal (sd in pixels; edges replicated)."""
    if sigma_px <= 0.05:
        return x
    return ndimage.gaussian_filter(x, sigma_px, mode="nearest", truncate=_TRUNCATE)


def _halo_rows(win: rasterio.windows.Window, height: int, sigma_px: float) -> tuple[slice, slice]:
    """(rows to compute, window rows inside them) for a row window grown by the filter's reach."""
    halo = int(math.ceil(_TRUNCATE * sigma_px)) + 1
    r0, r1 = max(win.row_off - halo, 0), min(win.row_off + win.height + halo, height)
    return slice(r0, r1), slice(win.row_off - r0, win.row_off - r0 + win.height)


def seam_slices(scene: RadarScene, height: int, n: int, overlap: int = 16
                ) -> list[tuple[RadarScene, tuple[int, int]]]:
    """The ``n`` consecutive slices of one datatake a pass is cut into at the seam, each with the grid rows
    [first, stop) it covers: equal row bands that overlap by ``overlap`` rows on each side of a boundary, the
    first slice where the satellite arrives first (the south when ascending, the north when descending);
    each slice starts when the previous one stops (27 s slices)."""
    if n == 1:
        return [(scene, (0, height))]
    edges = np.linspace(0, height, n + 1).round().astype(int)
    bands = [(max(int(a) - overlap, 0), min(int(b) + overlap, height)) for a, b in zip(edges[:-1], edges[1:])]
    if scene.orbit_pass == "ASCENDING":
        bands = bands[::-1]                      # row 0 is the north edge
    out = []
    for k, band in enumerate(bands):
        start = scene.start + timedelta(seconds=k * _SLICE_S)
        stop = start + timedelta(seconds=_SLICE_S)
        out.append((replace(scene, name=scene_name(scene.platform, start, scene.absolute_orbit, stop), start=start,
                            stop=stop), band))
    return out


def write_scene(path: str | os.PathLike, scene: RadarScene, grid: ProjectGrid, land: RadarLandscape,
                looks: int, entropy: Sequence[int], rows: int = 512, part: tuple[int, int] | None = None) -> None:
    """Write ``<scene>_C2.tif`` (bands C11, C22, C12_real, C12_imag; tags per the S1 seam) by row blocks:
    expected C2 of every pixel, spread by the resolution cell, then speckled (``multilook_covariance``).
    ``part`` (first, stop) limits the raster to those grid rows (a slice of the pass)."""
    pr = _parcel_radar(land, scene)
    sigma = RESOLUTION_SIGMA_M / grid.resolution
    first, stop = part or (0, grid.height)
    band = grid.rows(first, stop)
    with RasterWriter(path, band, count=4, dtype="float32", nodata=float("nan"), band_names=C2_BANDS,
                      tags=scene.tags()) as out:
        for i, win in enumerate(row_windows(band, rows)):
            sl, inner = _halo_rows(rasterio.windows.Window(0, win.row_off + first, win.width, win.height),
                                   grid.height, sigma)
            comp = pixel_components(land.parcel[sl], land.vigour[sl], land.texture[sl], pr, land.radar,
                                    scene.incidence)
            expected = [spread(x, sigma)[inner] for x in (comp.c11, comp.c22, comp.c12_real, comp.c12_imag)]
            c2 = multilook_covariance(*expected, looks, _block_rng(entropy, i))
            out.write(round_mantissa(np.stack(c2)), win)


def pair_coherence_gammas(land: RadarLandscape, pair: RadarPair, pr0: ParcelRadar, pr1: ParcelRadar
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-parcel 12-day coherence of the canopy, background and built-up terms of a pair.

    Background: soil SOIL_COHERENCE / (1 + rain / RAIN_HALF_MM), WORKED_COHERENCE if the field was sown or
    harvested in between; open water 0; mixed by the soil's share of the background power.
    """
    d0, d1 = pair.reference.doy, pair.secondary.doy
    tr = land.traits
    worked = ((tr.sowing > d0) & (tr.sowing <= d1)) | ((tr.harvest > d0) & (tr.harvest <= d1))
    soil = np.where(worked, WORKED_COHERENCE, SOIL_COHERENCE / (1.0 + land.weather.rain_between(d0, d1) / RAIN_HALF_MM))
    share = np.sqrt(pr0.soil_share * pr1.soil_share)
    return land.radar.coh_veg, soil * share, land.radar.coh_built


def write_pair(path: str | os.PathLike, pair: RadarPair, grid: ProjectGrid, land: RadarLandscape,
               coherence_looks: int, entropy: Sequence[int], rows: int = 512) -> None:
    """Write ``<pair>_coh.tif`` (bands coh_vv, coh_vh in [0, 1]; tags REFERENCE, SECONDARY, RELATIVE_ORBIT):
    component coherence, numerator and powers spread over the estimation window, then estimation noise."""
    pr0 = _parcel_radar(land, pair.reference)
    pr1 = _parcel_radar(land, pair.secondary)
    g_veg, g_bg, g_built = (g.astype(np.float32) for g in pair_coherence_gammas(land, pair, pr0, pr1))
    sigma = math.hypot(RESOLUTION_SIGMA_M, COHERENCE_SIGMA_M) / grid.resolution
    with RasterWriter(path, grid, count=2, dtype="float32", nodata=float("nan"), band_names=COHERENCE_BANDS,
                      tags=pair.tags()) as out:
        for i, win in enumerate(row_windows(grid, rows)):
            sl, inner = _halo_rows(win, grid.height, sigma)
            p, vig, tex = land.parcel[sl], land.vigour[sl], land.texture[sl]
            c0 = pixel_components(p, vig, tex, pr0, land.radar, pair.reference.incidence)
            c1 = pixel_components(p, vig, tex, pr1, land.radar, pair.secondary.incidence)
            rng = _block_rng(entropy, i)
            bands = []
            for pol in ("vv", "vh"):
                num, p0, p1 = coherence_terms(c0, c1, pol, g_veg[p], g_bg[p], g_built[p])
                gamma = spread(num, sigma) / np.sqrt(spread(p0, sigma) * spread(p1, sigma))
                bands.append(estimated_coherence(np.clip(gamma[inner], 0.0, 1.0), coherence_looks, rng))
            out.write(round_mantissa(np.stack(bands)), win)
