"""The workflow's plan, computed when the DAG is built: grid, tiles, inventories and which scenes feed which tile.

This runs at parse time in every Snakemake invocation (and again inside every cluster job), so it only
reads the AOI and product names/metadata through the inventory cache: no raster is opened here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from cropflow import inventory
from cropflow.grid import ProjectGrid, make_tiles, project_grid, read_aoi
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
    s1_skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    target_dates: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tile_ids(self) -> list[str]:
        return list(self.tiles["tile_id"])


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
    the rest of the plan treats both alike.
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
        return S1Inventory(scenes, pairs.assign(datetime_sec=[], footprint=[]), skipped, coverage)
    duplicated = pairs["pair"].duplicated(keep="first")
    for pair in pairs.loc[duplicated, "pair"]:
        log.warning("pair %s: several slices share it; only the first slice pair is processed", pair)
    pairs = pairs[~duplicated]
    outline = dict(zip(scenes["scene"], gpd.GeoSeries.from_wkt(scenes["footprint"])))
    overlap = [outline[r].intersection(outline[s]).wkt for r, s in zip(pairs["reference"], pairs["secondary"])]
    return S1Inventory(scenes, pairs.assign(datetime_sec=pairs["start_sec"], footprint=overlap), skipped, coverage)


def _season_year(*frames: pd.DataFrame) -> int:
    years = sorted({pd.Timestamp(t).year for df in frames if not df.empty for t in df["datetime"]})
    if len(years) > 1:
        log.warning("products from several years %s: the season's dates use %d", years, years[0])
    return years[0] if years else pd.Timestamp.now().year


def build_plan(config: dict) -> Plan:
    """Everything the DAG needs to know before any job runs."""
    aoi = read_aoi(config["aoi"])
    grid = project_grid(aoi, config["crs"], config["resolution"])
    tiles = make_tiles(grid, aoi, config["grid"]["tile_size"])
    cache = config["inputs"]["cache"]
    season = config["season"]
    s1 = s1_inventory(config, aoi, tiles)
    s1_scenes, s1_pairs, s1_skipped = s1.scenes, s1.pairs, s1.skipped
    s2_scenes = inventory.scan_s2(config["inputs"]["s2"], cache, **inventory.s2_scan_options(config.get("s2")))
    s1_scenes = inventory.in_season(s1_scenes, season["start"], season["end"])
    s2_scenes = inventory.in_season(s2_scenes, season["start"], season["end"])
    if not s1_pairs.empty:
        kept = set(s1_scenes["scene"])
        s1_pairs = s1_pairs[s1_pairs["reference"].isin(kept) & s1_pairs["secondary"].isin(kept)]
    plan = Plan(grid, tiles, s1_scenes.reset_index(drop=True), s1_pairs.reset_index(drop=True),
                s2_scenes.reset_index(drop=True), s1_skipped=s1_skipped)
    for tile, geometry in zip(tiles["tile_id"], tiles.geometry):
        plan.tile_inputs[tile] = {
            source: inventory.scenes_for_tile(df, geometry, grid.crs, grid.resolution**2)
            for source, df in (("s1", s1_scenes), ("coh", s1_pairs), ("s2", s2_scenes))
        }
    plan.target_dates = target_dates(config, plan)
    return plan


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
        "s2": {str(pd.Timestamp(t).date()) for t in plan.s2_scenes.get("datetime", [])},
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


def as_days(dates: list[str]) -> np.ndarray:
    return np.array(dates, dtype="datetime64[D]")
