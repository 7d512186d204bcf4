"""The simulated landscape: fields in blocks of narrow strips, large fields, forests, rivers, lakes, villages.

Layout (modelled on the Songnen plain around Bei'an): a road grid of 0.7-1.3 km cells; inside each cell,
slightly rotated, segments 300-800 m long split across into blocks of side-by-side strips 18-40 m wide (strip
intercropping: a block is one crop, two crops alternating, or mixed) and now and then one large field of
5-30 ha. Crop classes are drawn per strip with the study's sown-area shares (soybean 61.8 %, maize 29.5 %,
wheat 2.9 %, other crops 5.8 %), so the shares hold whatever the block pattern. Rivers (meandering buffered
lines, split into reaches at the road grid), lakes and ponds, villages and forest patches are cut out of the
fields (water > villages > forest where they overlap). A survey labels about 70 % of the parcels, whole cells
at a time, with label texts as agencies write them (legend names and aliases, mixed case).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
import shapely.affinity

from cropflow.grid import ProjectGrid
from cropflow.simulate.phenology import PROFILE_CODE, PROFILES

logger = logging.getLogger(__name__)

#: legend classes the simulator writes (every one must be in the legend, by name or alias)
LEGEND_CLASSES: tuple[str, ...] = ("maize", "soybean", "wheat", "other_crops", "forest", "water", "residential")


@dataclass(frozen=True)
class LandscapeParams:
    """Knobs of the landscape generator (lengths in metres, areas in hectares)."""

    crop_shares: tuple[tuple[str, float], ...] = (("soybean", 0.618), ("maize", 0.295), ("wheat", 0.029),
                                                  ("other_crops", 0.058))
    rice_share_of_other: float = 0.4
    forest_share: float = 0.08
    residential_share: float = 0.03
    lakes_per_km2: float = 0.08
    extra_rivers_per_km2: float = 1 / 300
    cell_size: tuple[float, float] = (700.0, 1300.0)
    road_width: float = 8.0
    strip_width: tuple[float, float] = (18.0, 42.0)
    segment_length: tuple[float, float] = (350.0, 850.0)
    strips_per_block: tuple[int, int] = (4, 20)
    large_field_probability: float = 0.08
    large_field_area_ha: tuple[float, float] = (5.0, 30.0)
    max_rotation_deg: float = 6.0
    min_area_m2: float = 300.0


# ---------------------------------------------------------------------------------------------- fields

def _edges(lo: float, hi: float, size: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Road-grid lines covering [lo, hi]: start before lo, random spacing in ``size``."""
    edges = [lo - rng.uniform(0.0, size[0])]
    while edges[-1] < hi:
        edges.append(edges[-1] + rng.uniform(*size))
    return np.array(edges)


def _pick_crops(n: int, pattern: str, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop class index of ``n`` side-by-side strips; every pattern keeps the marginal shares of ``shares``.

    "single": the whole block one crop; "alternate": two crops (each drawn from the shares) alternating in
    groups of 1-3 strips (strip intercropping); "mixed": each strip drawn on its own.
    """
    k = len(shares)
    if pattern == "single":
        return np.full(n, rng.choice(k, p=shares))
    if pattern == "alternate":
        a, b = rng.choice(k, size=2, p=shares)
        group = int(rng.integers(1, 4))
        return np.where((np.arange(n) // group) % 2 == 0, a, b)
    return rng.choice(k, size=n, p=shares)


def _cell_rectangles(width: float, height: float, along_x: bool, angle: float, params: LandscapeParams,
                     crops: Sequence[str], shares: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Rectangles (u0, u1, v0, v1, crop class index, large, block) in the cell's rotated frame (u = strip length).

    The frame covers the rotated cell; pieces outside are clipped away later.
    """
    wu, wv = (width, height) if along_x else (height, width)
    s = abs(math.sin(angle))
    eu, ev = wu + wv * s + 20.0, wv + wu * s + 20.0
    n_seg = max(1, int(round(eu / rng.uniform(*params.segment_length))))
    cuts = np.linspace(-eu / 2, eu / 2, n_seg + 1)
    if n_seg > 1:
        cuts[1:-1] += rng.uniform(-0.08, 0.08, n_seg - 1) * (eu / n_seg)
    out: list[tuple] = []
    block = 0
    for u0, u1 in zip(cuts[:-1], cuts[1:]):
        length = u1 - u0
        v = -ev / 2
        while v < ev / 2:
            block += 1
            if rng.random() < params.large_field_probability:
                area = rng.uniform(*params.large_field_area_ha) * 1e4
                w = float(np.clip(area / length, 40.0, 600.0))
                out.append((u0, u1, v, v + w, int(rng.choice(len(crops), p=shares)), True, block))
                v += w
                continue
            n = int(rng.integers(params.strips_per_block[0], params.strips_per_block[1] + 1))
            base = rng.uniform(*params.strip_width)
            widths = np.maximum(base * rng.normal(1.0, 0.08, n), 10.0)
            pattern = rng.choice(["single", "alternate", "mixed"], p=[0.45, 0.30, 0.25])
            for w, c in zip(widths, _pick_crops(n, str(pattern), shares, rng)):
                out.append((u0, u1, v, v + w, int(c), False, block))
                v += w
    return out


def _rotated_boxes(rect: np.ndarray, centre: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Polygons of local rectangles (u0, u1, v0, v1) rotated by ``angle`` about ``centre`` (vectorised)."""
    u = rect[:, [0, 1, 1, 0, 0]]
    v = rect[:, [2, 2, 3, 3, 2]]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x = centre[:, 0:1] + u * cos - v * sin
    y = centre[:, 1:2] + u * sin + v * cos
    return shapely.polygons(np.stack([x, y], axis=-1))


def generate_fields(bounds: tuple[float, float, float, float], params: LandscapeParams,
                    rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """Crop fields over ``bounds``: (fields with profile, kind, block, geometry; road-grid x edges; y edges)."""
    crops = [c for c, _ in params.crop_shares]
    shares = np.array([s for _, s in params.crop_shares], dtype=float)
    shares /= shares.sum()
    xe = _edges(bounds[0], bounds[2], params.cell_size, rng)
    ye = _edges(bounds[1], bounds[3], params.cell_size, rng)
    half_road = params.road_width / 2
    district_orientation = rng.random((len(xe) // 4 + 1, len(ye) // 4 + 1)) < 0.5
    rects, centres, angles, cells, boxes = [], [], [], [], []
    block_offset = 0
    for i in range(len(xe) - 1):
        for j in range(len(ye) - 1):
            box = (xe[i] + half_road, ye[j] + half_road, xe[i + 1] - half_road, ye[j + 1] - half_road)
            along_x = bool(district_orientation[i // 4, j // 4]) ^ (rng.random() < 0.25)
            angle = float(np.clip(rng.normal(0.0, params.max_rotation_deg / 2.5), -params.max_rotation_deg,
                                  params.max_rotation_deg)) * math.pi / 180
            cell_rects = _cell_rectangles(box[2] - box[0], box[3] - box[1], along_x, angle, params, crops,
                                          shares, rng)
            cell = len(boxes)
            boxes.append(shapely.box(*box))
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            frame = angle + (0.0 if along_x else math.pi / 2)
            for r in cell_rects:
                rects.append((*r[:6], r[6] + block_offset))
                centres.append(centre)
                angles.append(frame)
                cells.append(cell)
            block_offset += max((r[6] for r in cell_rects), default=0)
    rect = np.array([r[:4] for r in rects], dtype=float)
    polys = _rotated_boxes(rect, np.array(centres), np.array(angles))
    clipped = shapely.intersection(polys, np.array(boxes, dtype=object)[np.array(cells)])
    crop_idx = np.array([r[4] for r in rects])
    large = np.array([r[5] for r in rects])
    rice = rng.random(len(rects)) < params.rice_share_of_other
    profile = np.array([_crop_profile(crops[c], r) for c, r in zip(crop_idx, rice)], dtype=object)
    gdf = gpd.GeoDataFrame({"profile": profile, "kind": np.where(large, "field", "strip"),
                            "block": np.array([r[6] for r in rects])}, geometry=clipped)
    keep = (shapely.get_type_id(clipped) == 3) & (shapely.area(clipped) >= params.min_area_m2)
    return gdf.loc[keep].reset_index(drop=True), xe, ye


def _crop_profile(crop: str, rice: bool) -> str:
    if crop == "other_crops":
        return "rice" if rice else "other_dryland"
    if crop not in PROFILE_CODE:
        raise ValueError(f"crop share {crop!r} has no simulated profile: use maize, soybean, wheat, other_crops")
    return crop


# ---------------------------------------------------------------------------------------------- other land cover

def _blob(cx: float, cy: float, area: float, roughness: float, elongation: float, angle: float,
          rng: np.random.Generator, n: int = 48) -> shapely.Polygon:
    """A star-shaped patch of ``area`` m2: radius 1 + sum_m a_m cos(m t + p_m), stretched and rotated."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for m in range(2, 6):
        r += rng.uniform(0.0, roughness / m) * np.cos(m * t + rng.uniform(0.0, 2 * math.pi))
    r = np.maximum(r, 0.2)
    x, y = r * np.cos(t) * elongation, r * np.sin(t) / elongation
    unit = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    k = math.sqrt(area / unit)
    ca, sa = math.cos(angle), math.sin(angle)
    return shapely.Polygon(np.column_stack([cx + k * (x * ca - y * sa), cy + k * (x * sa + y * ca)]))


def _river(bounds: tuple[float, float, float, float], through: tuple[float, float], rng: np.random.Generator
           ) -> shapely.Polygon:
    """A meandering river across ``bounds`` through a point: a sum of sines around a straight axis, buffered."""
    half = math.hypot(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 2 + 1000.0
    s = np.arange(-half, half, 25.0)
    direction = rng.uniform(0.0, math.pi)
    offset = np.zeros_like(s)
    for wavelength, amplitude in ((rng.uniform(6000, 12000), rng.uniform(300, 700)),
                                  (rng.uniform(2000, 4000), rng.uniform(100, 300)),
                                  (rng.uniform(600, 1200), rng.uniform(30, 90))):
        offset += amplitude * np.sin(2 * math.pi * s / wavelength + rng.uniform(0, 2 * math.pi))
    dx, dy = math.cos(direction), math.sin(direction)
    x = through[0] + s * dx - offset * dy
    y = through[1] + s * dy + offset * dx
    return shapely.LineString(np.column_stack([x, y])).buffer(rng.uniform(40.0, 100.0) / 2, quad_segs=4)


def _random_point(bounds: tuple[float, float, float, float], rng: np.random.Generator) -> tuple[float, float]:
    return rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3])


def generate_land_cover(bounds: tuple[float, float, float, float], core: tuple[float, float, float, float],
                        xe: np.ndarray, ye: np.ndarray, params: LandscapeParams, rng: np.random.Generator
                        ) -> gpd.GeoDataFrame:
    """Rivers (one through ``core``), lakes, villages and forest patches over ``bounds``, without overlaps.

    Rivers are split into reaches at the road grid (``xe``, ``ye``) so that no parcel spans the scene.
    """
    world = shapely.box(*bounds)
    area_km2 = world.area / 1e6
    inner = (core[0] + 0.2 * (core[2] - core[0]), core[1] + 0.2 * (core[3] - core[1]),
             core[2] - 0.2 * (core[2] - core[0]), core[3] - 0.2 * (core[3] - core[1]))
    rivers = [_river(bounds, _random_point(inner, rng), rng)]
    rivers += [_river(bounds, _random_point(bounds, rng), rng)
               for _ in range(rng.poisson(area_km2 * params.extra_rivers_per_km2))]
    river = shapely.intersection(shapely.union_all(rivers), world)
    lakes = [_blob(*_random_point(bounds, rng), min(rng.lognormal(math.log(3e4), 0.8), 4e5), 0.3,
                   rng.uniform(1.0, 1.6), rng.uniform(0, math.pi), rng)
             for _ in range(rng.poisson(area_km2 * params.lakes_per_km2))]
    lake = shapely.difference(shapely.intersection(shapely.union_all(lakes), world), river)
    water = shapely.union(river, lake)

    villages, total = [], 0.0
    while total < params.residential_share * world.area:
        area = min(rng.lognormal(math.log(1.0e5), 0.7), 8e5)
        aspect = rng.uniform(1.0, 1.8)
        w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        cx, cy = _random_point(bounds, rng)
        rect = shapely.affinity.rotate(shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                                       rng.normal(0.0, 4.0), origin=(cx, cy))
        villages.append(rect)
        total += area
    village = shapely.difference(shapely.intersection(shapely.union_all(villages), world), water)

    forests, total = [], 0.0
    while total < params.forest_share * world.area * 1.1:
        area = min(rng.lognormal(math.log(1.2e5), 0.9), 3e6)
        forests.append(_blob(*_random_point(bounds, rng), area, 0.7, rng.uniform(1.0, 2.0),
                             rng.uniform(0, math.pi), rng))
        total += area
    forest = shapely.difference(shapely.intersection(shapely.union_all(forests), world),
                                shapely.union(water, village))

    cells = [shapely.box(xe[i], ye[j], xe[i + 1], ye[j + 1]) for i in range(len(xe) - 1) for j in range(len(ye) - 1)]
    reaches = shapely.intersection(river, np.array(cells, dtype=object))
    parts = [("water", "river", reaches), ("water", "lake", lake), ("residential", "village", village),
             ("forest", "forest", forest)]
    rows = []
    for profile, kind, geom in parts:
        for g in shapely.get_parts(np.atleast_1d(geom)):
            for p in shapely.get_parts(g):
                if shapely.get_type_id(p) == 3 and p.area >= params.min_area_m2:
                    rows.append({"profile": profile, "kind": kind, "block": -1, "geometry": p})
    return gpd.GeoDataFrame(rows, columns=["profile", "kind", "block", "geometry"], geometry="geometry")


def cut_fields(fields: gpd.GeoDataFrame, cover: gpd.GeoDataFrame, min_area: float) -> gpd.GeoDataFrame:
    """Fields minus the other land cover; pieces split apart become parcels of their own; slivers dropped."""
    geoms = fields.geometry.values
    tree = shapely.STRtree(cover.geometry.values)
    fi, ci = tree.query(geoms, predicate="intersects")
    out = np.array(geoms, dtype=object)
    if len(fi):
        order = np.argsort(fi, kind="stable")
        fi, ci = fi[order], ci[order]
        starts = np.flatnonzero(np.r_[True, fi[1:] != fi[:-1]])
        ends = np.r_[starts[1:], len(fi)]
        cutters = [shapely.union_all(cover.geometry.values[ci[a:b]]) for a, b in zip(starts, ends)]
        out[fi[starts]] = shapely.difference(out[fi[starts]], np.array(cutters, dtype=object))
    cut = fields.set_geometry(out).explode(index_parts=False)
    keep = (shapely.get_type_id(cut.geometry.values) == 3) & (cut.geometry.area >= min_area)
    return cut.loc[keep].reset_index(drop=True)


def generate_landscape(bounds: tuple[float, float, float, float], core: tuple[float, float, float, float],
                       crs: str, rng: np.random.Generator, params: LandscapeParams = LandscapeParams()
                       ) -> gpd.GeoDataFrame:
    """Every parcel of the simulated landscape over ``bounds`` (in ``crs``, metres), all disjoint.

    Columns: parcel_id (1..N), profile (simulated surface type), class_name (legend class), kind (strip,
    field, river, lake, village, forest), block, cell (road-grid cell of the centroid), geometry. Pixels in no
    parcel are roads and field margins. ``core`` is the area of interest (a river crosses it).
    """
    fields, xe, ye = generate_fields(bounds, params, rng)
    cover = generate_land_cover(bounds, core, xe, ye, params, rng)
    fields = cut_fields(fields, cover, params.min_area_m2)
    parcels = pd.concat([fields, cover], ignore_index=True)
    parcels = gpd.GeoDataFrame(parcels, geometry="geometry", crs=crs)
    centroid = parcels.geometry.centroid
    ix = np.clip(np.searchsorted(xe, centroid.x.to_numpy()) - 1, 0, len(xe) - 2)
    iy = np.clip(np.searchsorted(ye, centroid.y.to_numpy()) - 1, 0, len(ye) - 2)
    parcels["cell"] = ix * (len(ye) - 1) + iy
    parcels["class_name"] = [PROFILES[PROFILE_CODE[p]].legend for p in parcels["profile"]]
    parcels.insert(0, "parcel_id", np.arange(1, len(parcels) + 1, dtype=np.int64))
    logger.info("landscape: %d parcels (%d crop fields) over %.0f km2", len(parcels), len(fields),
                shapely.box(*bounds).area / 1e6)
    return parcels[["parcel_id", "profile", "class_name", "kind", "block", "cell", "geometry"]]


# ---------------------------------------------------------------------------------------------- survey labels

#: label texts the survey writes per surface type (or water kind), with their frequencies
LABEL_TEXTS: Mapping[str, tuple[tuple[str, float], ...]] = {
    "maize": (("maize", 0.45), ("corn", 0.30), ("Maize", 0.15), ("Corn", 0.10)),
    "soybean": (("soybean", 0.45), ("Soybean", 0.25), ("soy", 0.15), ("soybeans", 0.10), ("soya", 0.05)),
    "wheat": (("wheat", 0.6), ("spring wheat", 0.3), ("Wheat", 0.1)),
    "rice": (("rice", 0.8), ("Rice", 0.2)),
    "other_dryland": (("other crops", 0.4), ("other", 0.3), ("unidentified", 0.3)),
    "forest": (("forest", 0.6), ("woodland", 0.3), ("trees", 0.1)),
    "river": (("river", 0.7), ("water", 0.3)),
    "lake": (("lake", 0.6), ("pond", 0.2), ("water", 0.2)),
    "residential": (("residential", 0.4), ("village", 0.4), ("settlement", 0.2)),
}


def survey_labels(parcels: gpd.GeoDataFrame, coverage: float, lookup: Mapping[str, int],
                  rng: np.random.Generator) -> pd.Series:
    """Label text of the surveyed parcels (None for the others): whole road-grid cells are surveyed with
    probability min(1, coverage / 0.9), and inside them each parcel with the rest, so about ``coverage`` of
    the parcels carry a label. Texts the legend does not know fall back to the class name."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"label coverage {coverage}: give a fraction in (0, 1]")
    p_cell = min(1.0, coverage / 0.9)
    p_in = coverage / p_cell
    n_cells = int(parcels["cell"].max()) + 1 if len(parcels) else 0
    surveyed = (rng.random(n_cells) < p_cell)[parcels["cell"].to_numpy()] & (rng.random(len(parcels)) < p_in)
    u = rng.random(len(parcels))
    texts: list[str | None] = []
    for profile, kind, cls, take, x in zip(parcels["profile"], parcels["kind"], parcels["class_name"], surveyed, u):
        if not take or not cls:
            texts.append(None)
            continue
        options = LABEL_TEXTS[kind if profile == "water" else profile]
        cum = np.cumsum([w for _, w in options])
        text = options[int(np.searchsorted(cum / cum[-1], x, side="right"))][0]
        texts.append(text if text.strip().lower() in lookup else cls)
    return pd.Series(texts, index=parcels.index, dtype=object)


# ---------------------------------------------------------------------------------------------- rasters

def rasterize_parcels(parcels: gpd.GeoDataFrame, grid: ProjectGrid, values: np.ndarray | None = None
                      ) -> np.ndarray:
    """Parcel raster on ``grid`` (int32; pixel centres inside a parcel get its value, default its row + 1)."""
    geoms = parcels.to_crs(grid.crs).geometry.values if str(parcels.crs) != str(grid.crs) else parcels.geometry.values
    vals = np.arange(1, len(parcels) + 1) if values is None else np.asarray(values)
    if len(geoms) == 0:
        return np.zeros(grid.shape, dtype=np.int32)
    return rasterio.features.rasterize(zip(geoms, vals.tolist()), out_shape=grid.shape, transform=grid.transform,
                                       fill=0, dtype="int32")
