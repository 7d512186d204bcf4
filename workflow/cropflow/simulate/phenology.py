"""Season of the simulated landscape: per-class phenology, per-parcel traits, weather and surface reflectance.

Every surface is a mixture of five covers whose fractions follow the season: green canopy, senescent canopy
(or harvest residue), built-up surface, open water (lakes, flooded paddies) and bare soil (the rest). The
green cover of a crop follows a double-logistic curve of the day of year (Beck et al. 2006, Remote Sens.
Environ. 100:321): rise around ``sos`` (half cover), turn senescent around ``sen``; a harvest replaces the
canopy by residue and slow weed regrowth. Class timing mirrors the study region (Bei'an, 48 N; SCIENCE.md):
spring wheat green in June and harvested late July, soybean and maize green from late June, maize greener
for longer, rice flooded until mid-season, deciduous forest in leaf from late May.

Surface reflectance is the linear mixture of the covers' spectra (Sentinel-2 bands B02..B12), with soil
darkened by moisture (Lobell & Asner 2002, Soil Sci. Soc. Am. J. 66:722). All functions are vectorised over
parcels; ``cropflow.simulate.sentinel1`` uses the same cover fractions and biomass for the radar signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

#: Sentinel-2 bands simulated (every 10 m and 20 m band of an L2A product)
BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

#: spectra of the covers (BOA reflectance, order of BANDS)
SENESCENT = np.array([0.070, 0.095, 0.120, 0.150, 0.185, 0.215, 0.235, 0.250, 0.320, 0.250], dtype=np.float32)
SOIL = np.array([0.050, 0.068, 0.085, 0.105, 0.120, 0.130, 0.140, 0.150, 0.215, 0.180], dtype=np.float32)
WATER = np.array([0.050, 0.055, 0.035, 0.025, 0.015, 0.012, 0.010, 0.009, 0.005, 0.004], dtype=np.float32)
#: reflectance added to water per unit turbidity (suspended sediment raises the visible and red edge)
TURBID = np.array([0.020, 0.035, 0.030, 0.030, 0.012, 0.006, 0.004, 0.003, 0.000, 0.000], dtype=np.float32)
BUILT = np.array([0.120, 0.130, 0.140, 0.150, 0.160, 0.165, 0.170, 0.175, 0.210, 0.190], dtype=np.float32)
#: soil reflectance lost at saturation (relative): wet soil is darker
SOIL_WET_DARKENING = 0.35


@dataclass(frozen=True)
class Profile:
    """Phenology and optical parameters of one simulated surface type (dates are days of year)."""

    name: str
    #: legend class name the type belongs to ("" for field margins and roads: no class)
    legend: str
    sos: float = 0.0          # half green cover on the rise
    rise: float = 1.0         # logistic scale of the rise (days)
    sen: float = 400.0        # half senescence
    fall: float = 1.0         # logistic scale of senescence (days)
    harvest: float = math.inf  # canopy removed (residue left)
    sowing: float = math.inf  # soil tilled and sown (decorrelates the radar surface)
    gmax: float = 0.0         # green cover at the peak
    residue: float = 0.0      # residue cover after harvest
    regrow: float = 0.0       # weed cover reached 40 days after harvest
    flood_until: float = -math.inf  # background is open water before this day
    built: float = 0.0        # built-up cover
    biomass: float = 0.0      # radar vegetation descriptor at full green cover
    dry_biomass: float = 0.0  # share of it kept by senescent canopy
    jitter: float = 0.0       # sd of the per-parcel shift of the dates (days)
    green: tuple[float, ...] = (0.030, 0.068, 0.038, 0.100, 0.270, 0.340, 0.370, 0.385, 0.215, 0.105)


_GRASS = (0.032, 0.070, 0.040, 0.100, 0.260, 0.330, 0.360, 0.375, 0.220, 0.110)

#: the surface types, in code order (the code is written in the parcel tables); code 0 = margins/roads
PROFILES: tuple[Profile, ...] = (
    Profile("margin", "", sos=150, rise=10, sen=262, fall=10, gmax=0.45, built=0.15, biomass=0.3,
            dry_biomass=0.5, jitter=6, green=_GRASS),
    Profile("maize", "maize", sos=177, rise=8, sen=254, fall=10, sowing=130, gmax=0.95, biomass=0.9,
            dry_biomass=0.85, jitter=9,
            green=(0.030, 0.066, 0.036, 0.103, 0.295, 0.385, 0.425, 0.440, 0.205, 0.096)),
    Profile("soybean", "soybean", sos=183, rise=7, sen=249, fall=5.5, sowing=140, gmax=0.95, biomass=0.75,
            dry_biomass=0.35, jitter=9,
            green=(0.029, 0.063, 0.033, 0.099, 0.305, 0.400, 0.445, 0.460, 0.212, 0.098)),
    Profile("wheat", "wheat", sos=146, rise=6, sen=192, fall=5, harvest=210, sowing=105, gmax=0.85,
            residue=0.5, regrow=0.2, biomass=0.55, dry_biomass=0.8, jitter=5,
            green=(0.034, 0.070, 0.040, 0.110, 0.270, 0.340, 0.370, 0.390, 0.225, 0.115)),
    Profile("rice", "other_crops", sos=192, rise=8, sen=248, fall=8, sowing=150, flood_until=215, gmax=0.9,
            biomass=0.8, dry_biomass=0.6, jitter=6,
            green=(0.030, 0.060, 0.035, 0.095, 0.280, 0.360, 0.390, 0.410, 0.190, 0.090)),
    Profile("other_dryland", "other_crops", sos=178, rise=10, sen=238, fall=9, sowing=138, gmax=0.75,
            biomass=0.55, dry_biomass=0.5, jitter=12,
            green=(0.032, 0.066, 0.036, 0.102, 0.285, 0.365, 0.400, 0.420, 0.210, 0.100)),
    Profile("forest", "forest", sos=138, rise=5, sen=275, fall=6, gmax=0.92, biomass=1.6, dry_biomass=0.8,
            jitter=3, green=(0.022, 0.048, 0.028, 0.080, 0.220, 0.290, 0.320, 0.335, 0.150, 0.068)),
    Profile("water", "water", flood_until=math.inf),
    Profile("residential", "residential", sos=150, rise=8, sen=265, fall=8, gmax=0.35, built=0.55,
            biomass=0.4, dry_biomass=0.5, jitter=4, green=_GRASS),
)
PROFILE_CODE: dict[str, int] = {p.name: i for i, p in enumerate(PROFILES)}
CROP_PROFILES: tuple[str, ...] = ("maize", "soybean", "wheat", "rice", "other_dryland")


def profile_table(attribute: str) -> np.ndarray:
    """One Profile attribute for every profile code (float64 array, or (n_profiles, n_bands) for spectra)."""
    return np.array([getattr(p, attribute) for p in PROFILES], dtype=np.float64)


@dataclass(frozen=True)
class Traits:
    """Per-parcel parameters (arrays indexed by the parcel index; index 0 is the margin/road surface)."""

    profile: np.ndarray        # profile code (int16)
    sos: np.ndarray
    rise: np.ndarray
    sen: np.ndarray
    fall: np.ndarray
    harvest: np.ndarray
    sowing: np.ndarray
    gmax: np.ndarray
    residue: np.ndarray
    regrow: np.ndarray
    flood_until: np.ndarray
    built: np.ndarray
    biomass: np.ndarray
    dry_biomass: np.ndarray
    green: np.ndarray          # (n, bands) green canopy spectrum
    soil_brightness: np.ndarray
    built_brightness: np.ndarray
    turbidity: np.ndarray

    def __len__(self) -> int:
        return len(self.profile)


def draw_traits(profiles: np.ndarray, rng: np.random.Generator) -> Traits:
    """Per-parcel traits: the profile's values with random offsets (sowing-date shift, vigour, soil colour).

    The timing shift is shared by the phenological dates of a parcel (a late-sown field is late all season);
    vigour scales green cover and biomass; the green spectrum gets a few percent of per-band jitter.
    """
    code = np.asarray(profiles, dtype=np.int16)
    n = len(code)
    table = {f.name: profile_table(f.name)[code] for f in fields(Profile) if f.name not in ("name", "legend", "green")}
    shift = rng.normal(0.0, 1.0, n) * table["jitter"]
    vigour = np.clip(rng.normal(1.0, 0.14, n), 0.6, 1.35)
    green = profile_table("green")[code] * rng.normal(1.0, 0.03, (n, 1)) * rng.normal(1.0, 0.04, (n, len(BANDS)))
    harvest = table["harvest"] + shift + rng.normal(0.0, 4.0, n)
    return Traits(
        profile=code,
        sos=table["sos"] + shift,
        rise=table["rise"] * rng.uniform(0.85, 1.15, n),
        sen=table["sen"] + shift * 0.5 + rng.normal(0.0, 5.0, n) * (table["jitter"] > 0),
        fall=table["fall"] * rng.uniform(0.85, 1.15, n),
        harvest=harvest,
        sowing=table["sowing"] + shift + rng.normal(0.0, 3.0, n),
        gmax=np.clip(table["gmax"] * vigour, 0.0, 0.98),
        residue=table["residue"] * rng.uniform(0.7, 1.2, n),
        regrow=table["regrow"] * rng.uniform(0.3, 1.5, n),
        flood_until=table["flood_until"] + rng.normal(0.0, 5.0, n) * np.isfinite(table["flood_until"]),
        built=np.clip(table["built"] * rng.normal(1.0, 0.15, n), 0.0, 0.9),
        biomass=table["biomass"] * vigour,
        dry_biomass=table["dry_biomass"],
        green=green.astype(np.float32),
        soil_brightness=np.clip(rng.normal(1.0, 0.12, n), 0.7, 1.4),
        built_brightness=np.clip(rng.normal(1.0, 0.2, n), 0.6, 1.6),
        turbidity=rng.gamma(2.0, 0.5, n),
    )


def logistic(x: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-x)) (numerically safe for large |x|)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class Canopy:
    """Cover fractions (sum <= 1, soil is the rest) and radar biomass of every parcel on one day."""

    green: np.ndarray
    senescent: np.ndarray
    built: np.ndarray
    water: np.ndarray
    biomass: np.ndarray

    @property
    def soil(self) -> np.ndarray:
        return np.clip(1.0 - self.green - self.senescent - self.built - self.water, 0.0, 1.0)


def canopy_state(traits: Traits, doy: float) -> Canopy:
    """Cover fractions of every parcel on day ``doy`` (double-logistic phenology, Beck et al. 2006).

    green = gmax L((t - sos)/rise) (1 - L((t - sen)/fall)); senescent = gmax L(rise) L(senescence); after the
    harvest day: senescent = residue, green = regrowth rising linearly to ``regrow`` within 40 days. The
    non-built rest of a flooded parcel is open water until ``flood_until``. Biomass (radar vegetation
    descriptor) = biomass (green + dry_biomass senescent).
    """
    t = float(doy)
    up = logistic((t - traits.sos) / traits.rise)
    down = logistic((t - traits.sen) / traits.fall)
    open_area = 1.0 - traits.built
    cover = traits.gmax * up * open_area
    green = cover * (1.0 - down)
    senescent = cover * down
    harvested = t >= traits.harvest
    regrowth = traits.regrow * np.clip((t - traits.harvest) / 40.0, 0.0, 1.0) * open_area
    green = np.where(harvested, regrowth, green)
    senescent = np.where(harvested, traits.residue * open_area, senescent)
    flooded = t < traits.flood_until
    water = np.where(flooded, np.clip(open_area - green - senescent, 0.0, 1.0), 0.0)
    biomass = traits.biomass * (green + traits.dry_biomass * np.where(harvested, 0.15 * senescent, senescent))
    return Canopy(green=green, senescent=senescent, built=traits.built.astype(np.float64), water=water,
                  biomass=biomass)


def surface_reflectance(canopy: Canopy, traits: Traits, wetness: float,
                        turbidity_factor: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Linear spectral mixture of the covers, per parcel: (reflectance (n, bands), d reflectance / d green).

    rho = g G + s S + b B + w (W + turbidity T) + (1 - g - s - b - w) soil (1 - 0.35 wetness) (linear
    mixing; soil darkening with moisture after Lobell & Asner 2002). The derivative is the green spectrum
    minus the background's (soil or water), used to vary green cover pixel by pixel within a parcel.
    """
    soil = SOIL[None, :] * (traits.soil_brightness * (1.0 - SOIL_WET_DARKENING * wetness))[:, None]
    water = WATER[None, :] + (traits.turbidity * turbidity_factor)[:, None] * TURBID[None, :]
    built = BUILT[None, :] * traits.built_brightness[:, None]
    rho = (canopy.green[:, None] * traits.green + canopy.senescent[:, None] * SENESCENT[None, :]
           + canopy.built[:, None] * built + canopy.water[:, None] * water + canopy.soil[:, None] * soil)
    background = np.where((canopy.water > 0)[:, None], water, soil)
    return rho.astype(np.float32), (traits.green - background).astype(np.float32)


@dataclass(frozen=True)
class Weather:
    """Daily weather of one year (index = day of year - 1): rain (mm), soil wetness in [0, 1] and a wind
    index (0 calm .. 1.5 strong; roughens open water)."""

    rain: np.ndarray
    wetness: np.ndarray
    wind: np.ndarray

    def _day(self, doy: float) -> int:
        return int(np.clip(math.floor(doy) - 1, 0, len(self.wetness) - 1))

    def wetness_on(self, doy: float) -> float:
        return float(self.wetness[self._day(doy)])

    def wind_on(self, doy: float) -> float:
        return float(self.wind[self._day(doy)])

    def rain_between(self, doy0: float, doy1: float) -> float:
        """Rain (mm) that fell after day ``doy0`` up to and including day ``doy1``."""
        a, b = int(math.floor(doy0)), int(math.floor(doy1))
        return float(self.rain[max(a, 0):max(b, 0)].sum())


#: monthly probability of a rain day (Heilongjiang: dry spring, wet July-August)
_RAIN_DAY_PROBABILITY = np.array([0.08, 0.08, 0.12, 0.18, 0.25, 0.33, 0.45, 0.40, 0.30, 0.20, 0.12, 0.08])


def simulate_weather(year: int, rng: np.random.Generator) -> Weather:
    """Daily rain (gamma-distributed amounts on Bernoulli rain days), an antecedent-precipitation soil
    wetness index w_d = w_(d-1) exp(-1/6) + rain_d / 25 mm, clipped to [0, 1] (Kohler & Linsley 1951), and a
    gamma-distributed daily wind index."""
    days = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    month = np.array([(np.datetime64(f"{year}-01-01") + np.timedelta64(d, "D")).astype("datetime64[M]").astype(int)
                      % 12 for d in range(days)])
    wet_day = rng.random(days) < _RAIN_DAY_PROBABILITY[month]
    rain = np.where(wet_day, rng.gamma(0.8, 9.0, days), 0.0)
    wetness = np.empty(days)
    w = 0.3
    decay = math.exp(-1.0 / 6.0)
    for d in range(days):
        w = min(1.0, w * decay + rain[d] / 25.0)
        wetness[d] = w
    wind = np.clip(rng.gamma(2.0, 0.25, days), 0.0, 1.5)
    return Weather(rain=rain, wetness=wetness, wind=wind)
