"""The project grid: one CRS, one pixel size, origin aligned to multiples of the pixel size; and its tiles."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from affine import Affine
from rasterio.windows import Window, from_bounds

#: tolerance (in pixels) under which a bound is taken as already on the pixel lattice
_SNAP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ProjectGrid:
    """A north-up raster grid: CRS, pixel size and bounds (left, bottom, right, top) on the pixel lattice."""

    crs: str
    resolution: float
    bounds: tuple[float, float, float, float]

    @property
    def width(self) -> int:
        return int(round((self.bounds[2] - self.bounds[0]) / self.resolution))

    @property
    def height(self) -> int:
        return int(round((self.bounds[3] - self.bounds[1]) / self.resolution))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    def window_of(self, sub: "ProjectGrid") -> Window:
        """The window of ``sub`` (a grid on the same lattice) inside this grid."""
        win = from_bounds(*sub.bounds, transform=self.transform)
        return Window(
            int(round(win.col_off)), int(round(win.row_off)), int(round(win.width)), int(round(win.height))
        )

    def subgrid(self, bounds: tuple[float, float, float, float]) -> "ProjectGrid":
        """The part of this grid inside ``bounds`` (snapped outward to the lattice, clipped to the grid)."""
        left, bottom, right, top = snap_bounds(bounds, self.resolution)
        return ProjectGrid(
            self.crs,
            self.resolution,
            (max(left, self.bounds[0]), max(bottom, self.bounds[1]), min(right, self.bounds[2]), min(top, self.bounds[3])),
        )

    def rows(self, first: int, stop: int) -> "ProjectGrid":
        """The full-width band of rows ``first`` (inclusive) to ``stop`` (exclusive) of this grid."""
        top = self.bounds[3] - first * self.resolution
        return ProjectGrid(self.crs, self.resolution, (self.bounds[0], top - (stop - first) * self.resolution,
                                                       self.bounds[2], top))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (x, y) of the columns and rows."""
        r = self.resolution
        x = self.bounds[0] + r * (np.arange(self.width) + 0.5)
        y = self.bounds[3] - r * (np.arange(self.height) + 0.5)
        return x, y

    def to_dict(self) -> dict:
        return {"crs": self.crs, "resolution": self.resolution, "bounds": list(self.bounds)}

    @classmethod
    def from_dict(cls, d: dict) -> "ProjectGrid":
        return cls(str(d["crs"]), float(d["resolution"]), tuple(float(b) for b in d["bounds"]))  # type: ignore[arg-type]


def snap_bounds(bounds: tuple[float, float, float, float], step: float) -> tuple[float, float, float, float]:
    """Snap bounds outward to multiples of ``step``; values within a tiny tolerance of the lattice stay put."""

    def down(v: float) -> float:
        q = v / step
        return round(q) * step if abs(q - round(q)) < _SNAP_TOLERANCE else math.floor(q) * step

    def up(v: float) -> float:
        q = v / step
        return round(q) * step if abs(q - round(q)) < _SNAP_TOLERANCE else math.ceil(q) * step

    left, bottom, right, top = bounds
    return (down(left), down(bottom), up(right), up(top))


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone EPSG code of a point (326zz north, 327zz south)."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def read_aoi(path: str) -> gpd.GeoDataFrame:
    """Read the AOI vector file (any OGR format); all its features together form the AOI."""
    aoi = gpd.read_file(path)
    if aoi.empty:
        raise ValueError(f"AOI file {path} holds no feature: give a polygon of the area to map")
    if aoi.crs is None:
        raise ValueError(f"AOI file {path} has no CRS: write it with one (e.g. GeoJSON in EPSG:4326)")
    return aoi


def project_grid(aoi: gpd.GeoDataFrame, crs: str | None, resolution: float) -> ProjectGrid:
    """The project grid over an AOI: ``crs`` or the AOI centroid's UTM zone, bounds snapped to the pixel lattice."""
    if crs in (None, "", "auto"):
        centroid = aoi.to_crs("EPSG:4326").union_all().centroid
        crs = utm_crs_for(centroid.x, centroid.y)
    crs = pyproj.CRS.from_user_input(crs).to_string()
    bounds = tuple(aoi.to_crs(crs).total_bounds)
    return ProjectGrid(crs, float(resolution), snap_bounds(bounds, resolution))  # type: ignore[arg-type]


def tile_id(left: float, bottom: float) -> str:
    """A tile's id from its lower-left corner in metres: ``E0340000N5310000``."""
    return f"E{int(round(left)):07d}N{int(round(bottom)):07d}"


_TILE_ID = re.compile(r"E(-?\d+)N(-?\d+)")


def block_id(tile: str, block_tiles: int, tile_size: float) -> str:
    """The id of the block of ``block_tiles`` x ``block_tiles`` tiles holding ``tile`` (blocks on the tile
    lattice, anchored at multiples of ``block_tiles`` x ``tile_size``): the tile's own id when ``block_tiles`` is
    1, else the block's lower-left corner as a tile id with the block side, ``E0340000N5300000x2``."""
    if block_tiles < 1:
        raise ValueError(f"block_tiles must be at least 1, got {block_tiles}")
    if block_tiles == 1:
        return tile
    m = _TILE_ID.fullmatch(tile)
    if m is None:
        raise ValueError(f"{tile!r} is not a tile id (E<metres>N<metres>)")
    span = block_tiles * tile_size
    left, bottom = (math.floor(int(v) / span + 1e-9) * span for v in m.groups())
    return f"{tile_id(left, bottom)}x{block_tiles}"


def make_tiles(grid: ProjectGrid, aoi: gpd.GeoDataFrame, tile_size: float) -> gpd.GeoDataFrame:
    """Square tiles of ``tile_size`` on a lattice anchored at multiples of ``tile_size`` in the project CRS.

    Only tiles whose area intersects the AOI are kept; each tile is clipped to the grid bounds, so the
    tiles partition the project grid's area inside the AOI's envelope without overlap.
    """
    aoi_geom = aoi.to_crs(grid.crs).union_all()
    left, bottom, right, top = snap_bounds(grid.bounds, tile_size)
    rows = []
    for x0 in np.arange(left, right, tile_size):
        for y0 in np.arange(bottom, top, tile_size):
            box = shapely.box(x0, y0, x0 + tile_size, y0 + tile_size)
            if box.intersection(aoi_geom).area <= 0:
                continue
            sub = grid.subgrid((x0, y0, x0 + tile_size, y0 + tile_size))
            if sub.width <= 0 or sub.height <= 0:
                continue
            rows.append({"tile_id": tile_id(x0, y0), "left": sub.bounds[0], "bottom": sub.bounds[1],
                         "right": sub.bounds[2], "top": sub.bounds[3], "geometry": shapely.box(*sub.bounds)})
    if not rows:
        raise ValueError("no tile intersects the AOI: check the AOI file and config 'grid'")
    return gpd.GeoDataFrame(rows, crs=grid.crs).sort_values("tile_id").reset_index(drop=True)


def tile_grid(grid: ProjectGrid, tiles: gpd.GeoDataFrame, tile: str) -> ProjectGrid:
    """The sub-grid of one tile."""
    row = tiles.loc[tiles["tile_id"] == tile]
    if row.empty:
        raise KeyError(f"tile {tile} is not in the tile grid")
    r = row.iloc[0]
    return grid.subgrid((r["left"], r["bottom"], r["right"], r["top"]))


def neighbour_tiles(tiles: gpd.GeoDataFrame, tile: str) -> list[str]:
    """Ids of the tiles sharing an edge or a corner with ``tile`` (up to 8 on the tile lattice), sorted."""
    row = tiles.loc[tiles["tile_id"] == tile]
    if row.empty:
        raise KeyError(f"tile {tile} is not in the tile grid")
    r = row.iloc[0]
    touching = ((tiles["left"] <= r["right"]) & (tiles["right"] >= r["left"])
                & (tiles["bottom"] <= r["top"]) & (tiles["top"] >= r["bottom"]) & (tiles["tile_id"] != tile))
    return sorted(tiles.loc[touching, "tile_id"])
