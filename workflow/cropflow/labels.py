"""Labelled parcels: reading and cleaning the parcel file, rasterising parcels onto tiles, the cropland mask.

Every input parcel ends up either in the cleaned parcel table or in the dropped table with a reason, so
nothing is lost silently. Rasterisation follows the pixel-centre rule (a pixel belongs to a parcel when its
centre falls inside it; ``all_touched=False``).

Overlapping parcels: survey layers sometimes overlap (digitising slivers, nested plots). Parcels are burnt
in order of area descending (ties broken by parcel id), so a smaller parcel stays on top of a larger one and
each pixel belongs to exactly one parcel. ``count_pixels`` and ``rasterize_tile`` use the same order, so the
per-parcel pixel counts equal what the tile rasters hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from shapely.geometry.base import BaseGeometry

from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.raster import read_on_grid, write_raster

log = logging.getLogger(__name__)

#: parcel file extensions and how they are read
VECTOR_EXTENSIONS = (".gpkg", ".shp")
PARQUET_EXTENSIONS = (".parquet", ".geoparquet")

#: the parcel raster is int32 with 0 = no parcel
_MAX_PARCEL_ID = np.iinfo(np.int32).max

#: pixels per side of the blocks ``count_pixels`` rasterises at once (bounds memory to ~16 MB per block)
COUNT_BLOCK = 2048

DROPPED_COLUMNS = ["parcel_id", "reason"]


# --------------------------------------------------------------------------------------------------------
# reading and cleaning


def read_parcels(
    path: str | os.PathLike,
    label_field: str,
    legend: Legend,
    grid_crs: str,
    aoi: gpd.GeoDataFrame | gpd.GeoSeries | BaseGeometry,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Read, validate and clean a parcel file; return (kept parcels, dropped parcels with reasons).

    ``path``: GeoPackage (.gpkg), Shapefile (.shp) or GeoParquet (.parquet/.geoparquet), in any CRS.
    ``aoi``: the AOI (a GeoDataFrame/GeoSeries with a CRS, or a shapely geometry in ``grid_crs``).

    Kept parcels are in ``grid_crs`` with columns parcel_id (int64), class_id (int), class_name,
    area_ha (after clipping) and geometry (Polygon/MultiPolygon). Cleaning, in this order; each parcel is
    dropped at most once, with the first reason that applies:

    - null or empty geometry -> "empty geometry";
    - not polygonal (points, lines) -> "geometry is not a polygon (<type>)";
    - invalid geometry -> repaired with ``shapely.make_valid`` keeping its polygonal parts, else
      "invalid geometry could not be repaired";
    - label not mapped by ``legend.lookup()`` (case-insensitive name or alias) nor an integer class id ->
      "label '<x>' not in legend" ("label missing" for a null label);
    - outside the AOI -> "outside AOI"; parcels crossing the AOI boundary are clipped to it.

    Parcel ids come from the ``parcel_id`` column; without one, ids 1..N (file order) are assigned and a
    warning is logged. Missing, non-integer, out-of-range (1..2^31-1, the parcel raster is int32) or
    duplicated ids are errors. A legend class without any kept parcel is logged as a WARNING: it cannot be
    trained or evaluated and shows as absent in the metrics.
    """
    path = Path(path)
    raw = _read_vector(path)
    if raw.crs is None:
        raise ValueError(
            f"parcels {path} have no CRS: assign the CRS they were digitised in "
            f"(e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {path.name}`) and point inputs.parcels at the result"
        )
    if label_field not in raw.columns:
        fields = [c for c in raw.columns if c != raw.geometry.name]
        raise ValueError(
            f"parcels {path} have no label field '{label_field}': available fields are {fields}; "
            f"set inputs.label_field to the one holding the crop label"
        )
    n_input = len(raw)
    ids = _parcel_ids(raw, path)
    log.info("read %d parcels from %s (CRS %s)", n_input, path, raw.crs.to_string())

    geoms = np.array(raw.geometry.values, dtype=object)
    reasons = np.full(n_input, None, dtype=object)  # drop reason per input parcel, None = kept

    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    reasons[empty] = "empty geometry"
    geoms = _repair(geoms, reasons, path)

    class_ids = _map_labels(raw[label_field].to_numpy(), legend, reasons)

    projected = gpd.GeoSeries(
        np.where(pd.isna(reasons), geoms, None), crs=raw.crs
    ).to_crs(grid_crs)
    pgeoms = np.array(projected.values, dtype=object)
    bad = pd.isna(reasons) & ~shapely.is_missing(pgeoms)
    bad &= ~shapely.is_valid(np.where(bad, pgeoms, None))
    if bad.any():  # reprojection may make a thin geometry invalid again
        pgeoms[bad] = [_polygonal(g) for g in shapely.make_valid(pgeoms[bad])]
        lost = bad & shapely.is_empty(pgeoms)
        reasons[lost] = "invalid geometry could not be repaired"

    aoi_geom = _aoi_geometry(aoi, grid_crs)
    pgeoms = _clip_to_aoi(pgeoms, aoi_geom, reasons, raw, path, _aoi_bounds_in(aoi, grid_crs, raw.crs))

    keep = pd.isna(reasons)
    if not keep.any():
        counts = pd.Series(reasons).value_counts().to_dict()
        raise ValueError(f"no usable parcel in {path}: dropped by reason {counts}; check inputs.parcels, "
                         f"inputs.label_field and the legend")
    names = dict(zip(legend.ids, legend.names))
    kept = gpd.GeoDataFrame(
        {
            "parcel_id": ids[keep],
            "class_id": class_ids[keep].astype("int64"),
            "class_name": [names[int(c)] for c in class_ids[keep]],
            "area_ha": shapely.area(pgeoms[keep]) / 1e4,
        },
        geometry=gpd.GeoSeries(pgeoms[keep], crs=grid_crs).values,
        crs=grid_crs,
    ).reset_index(drop=True)
    dropped = pd.DataFrame({"parcel_id": ids[~keep], "reason": reasons[~keep].astype(str)},
                           columns=DROPPED_COLUMNS)
    _log_summary(kept, dropped, legend, path)
    return kept, dropped


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    """Read a parcel file by extension (GeoPackage, Shapefile, GeoParquet)."""
    if not path.exists():
        raise FileNotFoundError(f"parcels {path} do not exist: set inputs.parcels to the parcel file")
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_EXTENSIONS:
            return gpd.read_parquet(path)
        if suffix in VECTOR_EXTENSIONS:
            return gpd.read_file(path)
    except Exception as err:  # any reader failure: name the file and the expected formats
        raise ValueError(f"cannot read parcels {path}: {err}; give a valid GeoPackage, Shapefile or "
                         f"GeoParquet file") from err
    raise ValueError(
        f"parcels {path}: unknown format '{suffix}'; use a GeoPackage (.gpkg), Shapefile (.shp) or "
        f"GeoParquet (.parquet, .geoparquet) file"
    )


def _parcel_ids(raw: gpd.GeoDataFrame, path: Path) -> np.ndarray:
    """Parcel ids as int64: from the ``parcel_id`` column, or 1..N when the file has none (logged)."""
    if "parcel_id" not in raw.columns:
        log.warning("parcels %s have no 'parcel_id' field: ids 1..%d are assigned in file order", path, len(raw))
        return np.arange(1, len(raw) + 1, dtype="int64")
    col = raw["parcel_id"]
    if col.isna().any():
        rows = list(np.flatnonzero(col.isna().to_numpy())[:5])
        raise ValueError(f"parcels {path}: parcel_id is missing on {int(col.isna().sum())} parcels (rows {rows}); "
                         f"fill it or remove the field to have ids assigned")
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.isna().any() or not np.all(np.mod(numeric.to_numpy(dtype="float64"), 1) == 0):
        bad = col[numeric.isna() | (np.mod(numeric.fillna(0.5), 1) != 0)].head(5).tolist()
        raise ValueError(f"parcels {path}: parcel_id must be an integer, got {bad}; "
                         f"renumber the parcels or remove the field to have ids assigned")
    ids = numeric.to_numpy().astype("int64")
    if ids.min() < 1 or ids.max() > _MAX_PARCEL_ID:
        raise ValueError(f"parcels {path}: parcel_id must be in 1..{_MAX_PARCEL_ID} (0 marks 'no parcel' in the "
                         f"int32 parcel raster), got {ids.min()}..{ids.max()}; renumber the parcels")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ValueError(f"parcels {path}: parcel_id is duplicated for {len(dup)} ids (e.g. {dup[:5].tolist()}); "
                         f"make the ids unique or remove the field to have ids assigned")
    return ids


def _polygonal(geom: BaseGeometry | None) -> BaseGeometry:
    """The polygonal parts of a geometry (Polygon or MultiPolygon); an empty polygon when there are none."""
    if geom is None or geom.is_empty:
        return shapely.Polygon()
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = [q for p in parts for q in shapely.get_parts(p)]
    if not polys:
        return shapely.Polygon()
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _repair(geoms: np.ndarray, reasons: np.ndarray, path: Path) -> np.ndarray:
    """Drop non-polygonal geometries; repair invalid ones with ``shapely.make_valid`` (polygonal parts kept)."""
    geoms = geoms.copy()
    todo = pd.isna(reasons)
    types = shapely.get_type_id(np.where(todo, geoms, None))
    # 3 Polygon, 6 MultiPolygon, 7 GeometryCollection (its polygonal parts may be usable)
    not_poly = todo & ~np.isin(types, (3, 6, 7))
    for i in np.flatnonzero(not_poly):
        reasons[i] = f"geometry is not a polygon ({geoms[i].geom_type})"
    todo &= ~not_poly
    collection = todo & (types == 7)
    invalid = todo & (collection | ~shapely.is_valid(np.where(todo, geoms, None)))
    if invalid.any():
        fixed = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
        geoms[invalid] = fixed
        lost = invalid & shapely.is_empty(geoms)
        reasons[lost] = "invalid geometry could not be repaired"
        log.info("parcels %s: %d invalid geometries repaired, %d could not be repaired",
                 path, int(invalid.sum() - lost.sum()), int(lost.sum()))
    return geoms


def _map_labels(labels: np.ndarray, legend: Legend, reasons: np.ndarray) -> np.ndarray:
    """Class id per parcel (0 where unmapped, with a reason): legend name/alias (any case) or integer id."""
    table = legend.lookup()
    ids = set(legend.ids)
    out = np.zeros(len(labels), dtype="int64")
    for i, label in enumerate(labels):
        class_id = _class_of(label, table, ids)
        if class_id:
            out[i] = class_id
        elif reasons[i] is None:
            reasons[i] = "label missing" if _is_null(label) else f"label '{label}' not in legend"
    return out


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _class_of(label: object, table: dict[str, int], ids: set[int]) -> int:
    """Class id of one label, 0 when it is not in the legend."""
    if _is_null(label):
        return 0
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label) if int(label) in ids else 0
    if isinstance(label, (float, np.floating)):
        return int(label) if float(label).is_integer() and int(label) in ids else 0
    text = str(label).strip().lower()
    if text in table:
        return table[text]
    if text.isdigit() and int(text) in ids:
        return int(text)
    return 0


def _aoi_geometry(aoi: gpd.GeoDataFrame | gpd.GeoSeries | BaseGeometry, grid_crs: str) -> BaseGeometry:
    """The AOI as one geometry in the project CRS."""
    if isinstance(aoi, BaseGeometry):
        return aoi
    if aoi.crs is None:
        raise ValueError("the AOI has no CRS: write the AOI file with one")
    return aoi.to_crs(grid_crs).union_all()


def _clip_to_aoi(pgeoms: np.ndarray, aoi_geom: BaseGeometry, reasons: np.ndarray, raw: gpd.GeoDataFrame,
                 path: Path, aoi_bounds: tuple[float, ...]) -> np.ndarray:
    """Drop parcels outside the AOI, clip those crossing its boundary; error when none is inside."""
    pgeoms = pgeoms.copy()
    usable = pd.isna(reasons)
    shapely.prepare(aoi_geom)
    candidates = np.where(usable, pgeoms, None)
    inside = usable & shapely.within(candidates, aoi_geom)
    crossing = usable & ~inside & shapely.intersects(candidates, aoi_geom)
    if crossing.any():
        pgeoms[crossing] = [_polygonal(g) for g in shapely.intersection(pgeoms[crossing], aoi_geom)]
        crossing_kept = crossing & (shapely.area(np.where(crossing, pgeoms, None)) > 0)
        if crossing_kept.any():
            log.info("parcels %s: %d parcels crossing the AOI boundary clipped to it", path, int(crossing_kept.sum()))
    else:
        crossing_kept = crossing
    outside = usable & ~inside & ~crossing_kept
    reasons[outside] = "outside AOI"
    if usable.any() and not (inside | crossing_kept).any():
        raise ValueError(
            f"no parcel of {path} is inside the AOI: AOI bounds in the parcels' CRS ({raw.crs.to_string()}) are "
            f"{aoi_bounds}, parcel bounds are {tuple(round(float(b), 6) for b in raw.total_bounds)}; "
            f"check that inputs.parcels and aoi cover the same area and that the parcels' CRS is right"
        )
    return pgeoms


def _aoi_bounds_in(aoi: gpd.GeoDataFrame | gpd.GeoSeries | BaseGeometry, grid_crs: str,
                   crs: object) -> tuple[float, ...]:
    """AOI bounds in the parcels' CRS (for error messages)."""
    series = gpd.GeoSeries([aoi], crs=grid_crs) if isinstance(aoi, BaseGeometry) else aoi.geometry
    return tuple(round(float(b), 6) for b in series.to_crs(crs).total_bounds)


def _log_summary(kept: gpd.GeoDataFrame, dropped: pd.DataFrame, legend: Legend, path: Path) -> None:
    log.info("parcels %s: %d kept, %d dropped", path, len(kept), len(dropped))
    for reason, n in dropped["reason"].value_counts().items():
        log.info("  dropped %d: %s", n, reason)
    present = set(kept["class_id"].unique().tolist())
    for class_id, name in zip(legend.ids, legend.names):
        if class_id not in present:
            log.warning(
                "legend class '%s' (id %d) has no parcel in %s: it cannot be trained or evaluated and will "
                "show as absent in the metrics", name, class_id, path,
            )


# --------------------------------------------------------------------------------------------------------
# rasterisation


def burn_order(parcels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Parcels in burn order: area descending, ties by parcel id, so smaller parcels are drawn on top."""
    order = np.lexsort((parcels["parcel_id"].to_numpy(), -shapely.area(parcels.geometry.values)))
    return parcels.iloc[order]


def _parcel_raster(ordered: gpd.GeoDataFrame, grid: ProjectGrid) -> np.ndarray:
    """int32 parcel ids on ``grid`` (0 none) from parcels already in burn order (pixel-centre rule)."""
    box = shapely.box(*grid.bounds)
    hits = np.sort(ordered.sindex.query(box, predicate="intersects"))  # positions, burn order kept
    if len(hits) == 0:
        return np.zeros(grid.shape, dtype="int32")
    sub = ordered.iloc[hits]
    shapes = zip(sub.geometry.values, sub["parcel_id"].to_numpy().astype("int32").tolist())
    return rasterio.features.rasterize(
        shapes, out_shape=grid.shape, transform=grid.transform, fill=0, all_touched=False, dtype="int32",
    )


def _classes_of(parcel_raster: np.ndarray, parcels: gpd.GeoDataFrame) -> np.ndarray:
    """uint8 class raster from a parcel-id raster (0 where no parcel)."""
    ids = parcels["parcel_id"].to_numpy().astype("int64")
    order = np.argsort(ids)
    sorted_ids, sorted_classes = ids[order], parcels["class_id"].to_numpy()[order]
    pos = np.clip(np.searchsorted(sorted_ids, parcel_raster), 0, max(len(ids) - 1, 0))
    out = np.where(parcel_raster > 0, sorted_classes[pos] if len(ids) else 0, 0)
    return out.astype("uint8")


def rasterize_tile(parcels: gpd.GeoDataFrame, tile_grid: ProjectGrid) -> tuple[np.ndarray, np.ndarray]:
    """Class raster (uint8, 0 none) and parcel-id raster (int32, 0 none) of parcels on a tile grid.

    ``rasterio.features.rasterize`` with the pixel-centre rule (``all_touched=False``); parcels are burnt
    in ``burn_order`` (area descending) so smaller overlapping parcels are kept on top.
    """
    ordered = burn_order(parcels)
    parcel = _parcel_raster(ordered, tile_grid)
    return _classes_of(parcel, parcels), parcel


def count_pixels(
    parcels: gpd.GeoDataFrame, grid: ProjectGrid, min_pixels: int = 1
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Pixels per parcel on the project grid; parcels with fewer than ``min_pixels`` are dropped (reason given).

    The grid is rasterised block by block (``COUNT_BLOCK`` pixels a side) with exactly the rule and burn
    order of ``rasterize_tile``, so ``n_pixels`` equals what the tile rasters hold. Dropping a parcel can
    only give pixels back to the parcels under it, so one recount after dropping settles the counts.
    Returns (parcels with an ``n_pixels`` column, dropped parcels with reasons).
    """
    if min_pixels < 0:
        raise ValueError(f"partition.min_pixels must be >= 0, got {min_pixels}")
    counts = _count(parcels, grid)
    n = parcels["parcel_id"].map(counts).fillna(0).astype("int64")
    small = (n < min_pixels).to_numpy()
    dropped = pd.DataFrame(
        {"parcel_id": parcels["parcel_id"].to_numpy()[small],
         "reason": [f"{k} pixels on the {grid.resolution:g} m grid, fewer than min_pixels {min_pixels}"
                    for k in n.to_numpy()[small]]},
        columns=DROPPED_COLUMNS,
    )
    kept = parcels.loc[~small].copy()
    if small.any() and n.to_numpy()[small].sum() > 0:
        counts = _count(kept, grid)
    kept["n_pixels"] = kept["parcel_id"].map(counts).fillna(0).astype("int64")
    if small.any():
        log.info("%d parcels dropped with fewer than %d pixels", int(small.sum()), min_pixels)
    if kept.empty:
        raise ValueError(f"every parcel has fewer than partition.min_pixels ({min_pixels}) pixels on the "
                         f"{grid.resolution:g} m grid: lower partition.min_pixels or check the parcels")
    return kept, dropped


def _count(parcels: gpd.GeoDataFrame, grid: ProjectGrid) -> dict[int, int]:
    """{parcel_id: pixel count} over the whole grid, rasterised in blocks."""
    ordered = burn_order(parcels)
    totals: dict[int, int] = {}
    blocks = list(_blocks(grid, COUNT_BLOCK))
    for i, block in enumerate(blocks, start=1):
        raster = _parcel_raster(ordered, block)
        ids, n = np.unique(raster[raster > 0], return_counts=True)
        for pid, k in zip(ids.tolist(), n.tolist()):
            totals[pid] = totals.get(pid, 0) + k
        if len(blocks) > 1 and (i % 10 == 0 or i == len(blocks)):
            log.info("counted parcel pixels in %d/%d blocks", i, len(blocks))
    return totals


def _blocks(grid: ProjectGrid, size: int) -> Iterable[ProjectGrid]:
    """Sub-grids of at most ``size`` x ``size`` pixels covering ``grid`` on its lattice."""
    r = grid.resolution
    for row in range(0, grid.height, size):
        for col in range(0, grid.width, size):
            win = rasterio.windows.Window(col, row, min(size, grid.width - col), min(size, grid.height - row))
            left = grid.bounds[0] + col * r
            top = grid.bounds[3] - row * r
            yield ProjectGrid(grid.crs, r, (left, top - win.height * r, left + win.width * r, top))


# --------------------------------------------------------------------------------------------------------
# cropland mask and label tiles


def cropland_tile(
    mask_path: str | os.PathLike | None, tile_grid: ProjectGrid, parcels: gpd.GeoDataFrame, legend: Legend
) -> np.ndarray:
    """Cropland mask (uint8, 1 cropland, 0 not) of a tile.

    - ``mask_path`` None or "": no masking, every pixel is 1 (documented degradation: the mosaic is then
      not cropland-masked).
    - Otherwise the land-cover raster's band 1 is resampled onto the tile (nearest neighbour,
      ``cropflow.raster.read_on_grid``); non-zero is cropland. Pixels the raster does not cover (outside its
      footprint, or its nodata) are kept as cropland (1), since there is no evidence to mask them; their
      share is logged as a WARNING. Surveyed parcels override the land-cover product: pixels of parcels of
      a cropland class (legend ``cropland: true``) are 1, pixels of parcels of other classes are 0.
    """
    if mask_path is None or str(mask_path) == "":
        return np.ones(tile_grid.shape, dtype="uint8")
    classes, _ = rasterize_tile(parcels, tile_grid)
    return _cropland(mask_path, tile_grid, classes, legend)


def _cropland(mask_path: str | os.PathLike, tile_grid: ProjectGrid, classes: np.ndarray, legend: Legend) -> np.ndarray:
    if not Path(mask_path).exists():
        raise FileNotFoundError(f"cropland mask {mask_path} does not exist: fix inputs.cropland_mask or set it "
                                f"to \"\" to disable the cropland mask")
    values = read_on_grid(mask_path, tile_grid, bands=[1], resampling="nearest", dtype="float32")[0]
    covered = np.isfinite(values) & _footprint(mask_path, tile_grid)
    out = np.where(covered, values != 0, True)
    if not covered.all():
        log.warning("cropland mask %s does not cover %.1f%% of the tile %s: those pixels are kept as cropland",
                    mask_path, 100.0 * (1 - covered.mean()), tile_grid.bounds)
    crop = np.isin(classes, legend.cropland_ids)
    out[crop] = True
    out[(classes != legend.nodata) & (classes != 0) & ~crop] = False
    return out.astype("uint8")


def _footprint(path: str | os.PathLike, grid: ProjectGrid) -> np.ndarray:
    """Pixels of ``grid`` whose centre lies inside the raster's footprint (its bounds, reprojected)."""
    with rasterio.open(path) as src:
        outline = gpd.GeoSeries([shapely.box(*src.bounds)], crs=src.crs)
    outline = outline.segmentize(max(outline.iloc[0].length / 400, 1e-9)).to_crs(grid.crs)
    return rasterio.features.rasterize(
        [(outline.iloc[0], 1)], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8",
    ).astype(bool)


def write_label_tile(
    parcels: gpd.GeoDataFrame,
    mask_path: str | os.PathLike | None,
    grid: ProjectGrid,
    tile_id: str,
    out_class: str | os.PathLike,
    out_parcel: str | os.PathLike,
    out_cropland: str | os.PathLike,
    legend: Legend,
) -> None:
    """Write a tile's class raster (uint8, legend colormap, nodata 0), parcel raster (int32, nodata 0)
    and cropland mask (uint8 1/0), each atomically with ``cropflow.raster.write_raster``.

    ``grid`` is the tile's grid (``cropflow.grid.tile_grid``); ``tile_id`` is recorded in the TILE tag.
    """
    classes, parcel_ids = rasterize_tile(parcels, grid)
    cropland = (np.ones(grid.shape, dtype="uint8") if mask_path in (None, "")
                else _cropland(mask_path, grid, classes, legend))
    tags = {"TILE": tile_id}
    write_raster(out_class, classes, grid, nodata=legend.nodata, band_names=["class_id"], tags=tags,
                 colormap=legend.colormap())
    write_raster(out_parcel, parcel_ids, grid, nodata=0, band_names=["parcel_id"], tags=tags)
    write_raster(out_cropland, cropland, grid, band_names=["cropland"],
                 tags={**tags, "CROPLAND_SOURCE": str(mask_path) if mask_path not in (None, "") else "none"})
    log.info("label tile %s: %d labelled pixels, %d parcels, %.1f%% cropland", tile_id,
             int((classes > 0).sum()), int(np.unique(parcel_ids[parcel_ids > 0]).size), 100.0 * cropland.mean())
