"""The workflow's plan, computed when the DAG is built: grid, tiles, inventories and which scenes feed which tile.

This runs at parse time in every Snakemake invocation (and again inside every cluster job), so it only
reads the AOI and product names/metadata through the inventory cache: no raster is opened here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cropflow import inventory, layers
from cropflow.grid import ProjectGrid, block_id, make_tiles, project_grid, read_aoi
from cropflow.stack import regular_dates

log = logging.getLogger(__name__)


@dataclass
class Plan:
    grid: ProjectGrid
    tiles: gpd.GeoDataFrame
    s1_scenes: pd.DataFrame
    s1_pairs: pd.DataFrame
    s2_scenes: pd.DataFrame
    tile_inputs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: the tiles of each job of the per-tile rules stack, labels_tile and samples_tile (config grid.block_tiles),
    #: block id -> tile ids, and back
    blocks: dict[str, list[str]] = field(default_factory=dict)
    tile_block: dict[str, str] = field(default_factory=dict)
    s1_skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    target_dates: dict[str, list[str]] = field(default_factory=dict)
    #: same-date S2 layers (``layers.S2_LAYER_COLUMNS``) and S1 acquisitions (``layers.S1_ACQ_COLUMNS``)
    s2_layers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=layers.S2_LAYER_COLUMNS))
    s1_acquisitions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=layers.S1_ACQ_COLUMNS))
    #: every product of either sensor left out before any job runs, with its reason (``SKIPPED_COLUMNS``)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))

    @property
    def tile_ids(self) -> list[str]:
        return list(self.tiles["tile_id"])


#: the inventory's table of left-out products: sensor, product id, path, level, stage, reason
SKIPPED_COLUMNS = ["sensor", "scene", "path", "level", "stage", "reason"]
OUTSIDE_AOI = "footprint does not overlap the AOI"


def skipped_rows(df: pd.DataFrame, sensor: str, reason: str | Sequence[str], stage: str = "inventory") -> pd.DataFrame:
    """Rows of ``df`` (columns scene, path and optionally level) as ``SKIPPED_COLUMNS`` with their reason."""
    out = pd.DataFrame({"sensor": sensor, "scene": df["scene"].to_numpy(), "path": df["path"].to_numpy(),
                        "level": df["level"].to_numpy() if "level" in df.columns else "",
                        "stage": stage, "reason": reason}, columns=SKIPPED_COLUMNS)
    return out


def season_split(df: pd.DataFrame, start: str, end: str, sensor: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows in the season, skipped rows of the others with the reason "acquired <date>, outside the season")."""
    column = "datetime" if "datetime" in df.columns else "start"
    kept = inventory.in_season(df, start, end, [column])
    out = df[~df.index.isin(kept.index)]
    reasons = [f"acquired {str(t)[:10]}, outside the season {start}..{end}" for t in out[column]]
    for scene, reason in zip(out["scene"], reasons):
        log.info("%s %s skipped: %s", sensor, scene, reason)
    return kept, skipped_rows(out, sensor, reasons)


def overlaps_aoi(footprints: Sequence[str], aoi: gpd.GeoDataFrame, crs: str, min_area: float) -> np.ndarray:
    """Whether each footprint (WKT, EPSG:4326) overlaps the AOI by at least ``min_area`` (in ``crs``)."""
    if len(footprints) == 0:
        return np.zeros(0, bool)
    area = aoi.to_crs(crs).union_all()
    dense = shapely.to_wkt(shapely.segmentize(shapely.from_wkt(np.asarray(footprints, dtype=object)), 0.01))
    projected = inventory.footprints_in_crs(dense, crs)
    shapely.prepare(area)
    inside = shapely.contains_properly(area, projected)  # no intersection needed for footprints inside the AOI
    overlap = shapely.area(projected)
    overlap[~inside] = shapely.area(shapely.intersection(projected[~inside], area))
    return overlap >= min_area


@dataclass
class S2Inventory:
    """S2 products that get jobs (with their ``layer``), their same-date layers, and every product left out."""

    products: pd.DataFrame
    layers: pd.DataFrame
    skipped: pd.DataFrame


def s2_inventory(config: dict, aoi: gpd.GeoDataFrame, crs: str, resolution: float) -> S2Inventory:
    """The S2 products of ``inputs.s2`` that get jobs, grouped into same-date layers, and the skipped ones.

    In order: the products ``inventory.scan_s2`` drops (its ``attrs["skipped"]``, e.g. older processing
    baselines), products acquired outside the season, products whose footprint misses the AOI (no job at
    all). Each skipped product is listed with its reason (``SKIPPED_COLUMNS``, stage "inventory").
    """
    season = config["season"]
    df = inventory.scan_s2(config["inputs"]["s2"], config["inputs"]["cache"],
                           **inventory.s2_scan_options(config.get("s2")))
    dropped = pd.DataFrame([{"sensor": "S2", "scene": r["product"], "path": r.get("path", ""),
                             "level": r.get("level", ""), "stage": "inventory", "reason": r["reason"]}
                            for r in df.attrs.get("skipped", [])], columns=SKIPPED_COLUMNS)
    df, out_of_season = season_split(df, season["start"], season["end"], "S2")
    touches = overlaps_aoi(list(df["footprint"]), aoi, crs, resolution**2)
    away = df[~touches]
    for scene in away["scene"]:
        log.warning("S2 %s skipped: %s", scene, OUTSIDE_AOI)
    df = df[touches].reset_index(drop=True)
    grouped = layers.group_s2_layers(df)
    layer_of = {p: row.layer for row in grouped.itertuples() for p in json.loads(row.products)}
    df = df.assign(layer=[layer_of[s] for s in df["scene"]])
    skipped = pd.concat([dropped, out_of_season, skipped_rows(away, "S2", OUTSIDE_AOI)], ignore_index=True)
    return S2Inventory(df, grouped, skipped)


def aggregate_slice_pairs(pairs: pd.DataFrame, scenes: pd.DataFrame) -> pd.DataFrame:
    """One row per coherence pair id from the per-slice-pair rows of ``s1slc.slc_pairs``: ``slice_pairs`` is the
    JSON list of [reference slice, secondary slice]; reference/secondary are the first slice pair's scenes;
    ``footprint`` is the union of every slice pair's overlap (WKT, EPSG:4326)."""
    outline = dict(zip(scenes["scene"], shapely.from_wkt(scenes["footprint"].to_numpy(dtype=object))))
    rows = []
    for pair, group in pairs.groupby("pair", sort=False):
        overlaps = [outline[r].intersection(outline[s]) for r, s in zip(group["reference"], group["secondary"])]
        first = group.iloc[0]
        rows.append({**first.to_dict(), "slice_pairs": json.dumps([[r, s] for r, s in zip(group["reference"],
                                                                                          group["secondary"])]),
                     "datetime_sec": first["start_sec"],
                     "footprint": shapely.to_wkt(shapely.union_all(overlaps), rounding_precision=8)})
    return pd.DataFrame(rows)


@dataclass
class S1Inventory:
    scenes: pd.DataFrame
    pairs: pd.DataFrame
    skipped: pd.DataFrame
    coverage: pd.DataFrame


def s1_inventory(config: dict, aoi: gpd.GeoDataFrame, tiles: gpd.GeoDataFrame) -> S1Inventory:
    """S1 scenes, pairs, skipped products and per-tile coverage: seam products (engine preprocessed) or SLC.

    SLC products that do not touch the AOI are skipped with that reason; the share of each tile that each
    SLC product covers is recorded (the "data inadequacy" areas). SLC tables get the seam tables' columns
    (``datetime`` = start, pairs' ``datetime_sec`` and a footprint that is the overlap of both scenes') so
    the rest of the plan treats both alike. With several slices per pass, a pair id has one SLC pair row
    per slice pair sharing bursts: they are aggregated into one row whose ``slice_pairs`` lists them all.
    """
    folder, cache = config["inputs"]["s1"], config["inputs"]["cache"]
    no_coverage = pd.DataFrame(columns=["scene", "tile", "coverage"])
    names = [e.name for e in os.scandir(folder)] if os.path.isdir(folder) else []
    seam_files = any(n.endswith(("_C2.tif", "_coh.tif")) for n in names)
    slc_files = any(n.startswith("S1") and n.endswith((".zip", ".SAFE")) for n in names)
    if config["s1"]["engine"] == "preprocessed":
        if slc_files and not seam_files:
            raise ValueError(f"inputs.s1 folder {folder} holds SLC products, not seam products: set s1.engine to"
                             " native or snap")
        scenes, pairs = inventory.scan_s1_seam(folder, cache)
        return S1Inventory(scenes, pairs, pd.DataFrame(columns=["scene", "path", "reason"]), no_coverage)
    from cropflow import s1slc

    if seam_files and not slc_files:
        raise ValueError(f"inputs.s1 folder {folder} holds preprocessed seam products (<scene>_C2.tif), not SLC"
                         f" products: set s1.engine: preprocessed")
    scenes, skipped = s1slc.scan_s1_slc(folder, cache)
    coverage, away = s1slc.aoi_coverage(scenes, aoi.to_crs("EPSG:4326").union_all(), tiles)
    scenes = scenes[~scenes["scene"].isin(away["scene"])].assign(datetime=lambda df: df["start"])
    skipped = pd.concat([skipped, away.reindex(columns=skipped.columns)], ignore_index=True)
    rules = config["s1"]["pairs"]
    pairs = s1slc.slc_pairs(scenes, max_gap_days=rules["max_gap_days"], tolerance_hours=rules["tolerance_hours"])
    if pairs.empty:
        return S1Inventory(scenes, pairs.assign(datetime_sec=[], footprint=[], slice_pairs=[]), skipped, coverage)
    # every slice pair of a pair id is kept: the coherence of all slices of a pass reaches the grid
    return S1Inventory(scenes, aggregate_slice_pairs(pairs, scenes), skipped, coverage)


def _season_year(*frames: pd.DataFrame) -> int:
    years = sorted({pd.Timestamp(t).year for df in frames if not df.empty for t in df["datetime"]})
    if len(years) > 1:
        log.warning("products from several years %s: the season's dates use %d", years, years[0])
    return years[0] if years else pd.Timestamp.now().year


@dataclass
class Inventories:
    """What the inventory decides, shared by the plan and the ``inventory`` job (so both write the same)."""

    s1: S1Inventory                 # as scanned (all scenes, skipped, coverage)
    s1_scenes: pd.DataFrame         # in the season
    s1_pairs: pd.DataFrame          # both scenes in the season
    s1_acquisitions: pd.DataFrame   # ``layers.S1_ACQ_COLUMNS``
    s2: S2Inventory
    skipped: pd.DataFrame           # ``SKIPPED_COLUMNS``, both sensors


def inventories(config: dict, aoi: gpd.GeoDataFrame, tiles: gpd.GeoDataFrame, crs: str, resolution: float
                ) -> Inventories:
    """Scan both sensors' inputs, apply the season and the AOI, group products into layers/acquisitions."""
    season = config["season"]
    s1 = s1_inventory(config, aoi, tiles)
    s1_scenes, s1_season = season_split(s1.scenes, season["start"], season["end"], "S1")
    s1_pairs = s1.pairs
    if not s1_pairs.empty:
        kept = set(s1_scenes["scene"])
        s1_pairs = s1_pairs[s1_pairs["reference"].isin(kept) & s1_pairs["secondary"].isin(kept)]
    s2 = s2_inventory(config, aoi, crs, resolution)
    skipped = pd.concat([skipped_rows(s1.skipped, "S1", list(s1.skipped["reason"])), s1_season, s2.skipped],
                        ignore_index=True)
    return Inventories(s1, s1_scenes.reset_index(drop=True), s1_pairs.reset_index(drop=True),
                       layers.group_s1_acquisitions(s1_scenes), s2, skipped)


def build_plan(config: dict) -> Plan:
    """Everything the DAG needs to know before any job runs."""
    aoi = read_aoi(config["aoi"])
    grid = project_grid(aoi, config["crs"], config["resolution"])
    tiles = make_tiles(grid, aoi, config["grid"]["tile_size"])
    inv = inventories(config, aoi, tiles, grid.crs, grid.resolution)
    plan = Plan(grid, tiles, inv.s1_scenes, inv.s1_pairs, inv.s2.products, s1_skipped=inv.s1.skipped,
                s2_layers=inv.s2.layers, s1_acquisitions=inv.s1_acquisitions, skipped=inv.skipped)
    geometries = list(tiles.geometry)
    per_source = {
        source: inventory.scenes_for_tiles(df, geometries, grid.crs, grid.resolution**2)
        for source, df in (("s1", inv.s1_acquisitions.rename(columns={"acq": "scene"})), ("coh", inv.s1_pairs),
                           ("s2", inv.s2.layers.rename(columns={"layer": "scene"})))
    }
    block_tiles = int(config["grid"].get("block_tiles", 1))
    for i, tile in enumerate(tiles["tile_id"]):
        plan.tile_inputs[tile] = {source: ids[i] for source, ids in per_source.items()}
        block = plan.tile_block[tile] = block_id(tile, block_tiles, config["grid"]["tile_size"])
        plan.blocks.setdefault(block, []).append(tile)
    plan.target_dates = target_dates(config, plan)
    return plan


def layer_products(plan: Plan, layer: str) -> list[str]:
    """The product ids of one S2 layer."""
    hit = plan.s2_layers.loc[plan.s2_layers["layer"] == layer, "products"]
    if hit.empty:
        raise KeyError(f"layer {layer} is not in the inventory")
    return json.loads(hit.iloc[0])


def acquisition_slices(plan: Plan, acq: str) -> list[str]:
    """The slice (scene) ids of one S1 acquisition, earliest first."""
    hit = plan.s1_acquisitions.loc[plan.s1_acquisitions["acq"] == acq, "slices"]
    if hit.empty:
        raise KeyError(f"acquisition {acq} is not in the inventory")
    return json.loads(hit.iloc[0])


def pair_slices(plan: Plan, pair: str) -> list[tuple[str, str]]:
    """The (reference slice, secondary slice) scene ids of one coherence pair."""
    row = plan.s1_pairs.loc[plan.s1_pairs["pair"] == pair].iloc[0]
    if "slice_pairs" in row.index and isinstance(row["slice_pairs"], str):
        return [tuple(p) for p in json.loads(row["slice_pairs"])]
    return [(row["reference"], row["secondary"])]


def target_dates(config: dict, plan: Plan) -> dict[str, list[str]]:
    """Target dates per source: a regular grid over the season, or the inventory's acquisition dates."""
    stack, season = config["stack"], config["season"]
    year = _season_year(plan.s1_scenes, plan.s2_scenes)
    if stack["time_axis"] == "regular":
        days = [str(d) for d in regular_dates(year, season["start"], season["end"], stack["step_days"])]
        return {s: days for s in ("s1", "coh", "s2")}
    acquired = {
        "s1": {str(pd.Timestamp(t).date()) for t in plan.s1_scenes.get("datetime", [])},
        "coh": {str(pd.Timestamp(t).date()) for t in plan.s1_pairs.get("datetime_sec", [])},
        "s2": {str(pd.Timestamp(t).date()) for t in plan.s2_layers.get("datetime", [])},
    }
    if stack["mode"] == "chronological":
        union = sorted(set().union(*acquired.values()))
        return {s: union for s in acquired}
    return {s: sorted(v) for s, v in acquired.items()}


def scene_path(df: pd.DataFrame, key: str, value: str) -> str:
    """The input path of one inventory entry."""
    hit = df.loc[df[key] == value, "path"]
    if hit.empty:
        raise KeyError(f"{value} is not in the inventory")
    return str(Path(hit.iloc[0]))


def path_index(df: pd.DataFrame, key: str) -> dict[str, str]:
    """{id: input path} of an inventory table (``key`` the id column), for lookups per job at DAG building."""
    if df.empty or "path" not in df.columns:  # SLC pairs have no file of their own
        return {}
    return {value: str(Path(path)) for value, path in zip(df[key], df["path"])}


def indexed_path(index: dict[str, str], value: str) -> str:
    """The input path of one inventory entry from a ``path_index``."""
    if value not in index:
        raise KeyError(f"{value} is not in the inventory")
    return index[value]


def as_days(dates: list[str]) -> np.ndarray:
    return np.array(dates, dtype="datetime64[D]")
