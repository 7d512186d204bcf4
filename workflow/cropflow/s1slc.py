"""Sentinel-1 IW SLC inventory: products identified with pyroSAR, coherence pairs, burst matching, AOI coverage.

The SLC folder holds SAFE products (``*.SAFE`` folders or their ``.zip``). A scan reads each new or
changed product once (pyroSAR ``identify`` on ``manifest.safe`` plus the burst lists of one annotation per
swath) and keeps the records in the inventory's JSON cache, keyed by entry name, size and mtime, so a
rescan of thousands of cached products costs a directory listing and a ``stat`` per product. Products that
cannot be read are skipped with a logged reason and listed in a ``skipped`` table; the rest still process.

Burst identity (ESA, "Sentinel-1 Level 1 Detailed Algorithm Definition", burst ID map): products of IPF
3.40 and later carry ``burstList/burst/burstId`` (the relative burst id, the same for every pass over the
burst); older products are identified by the burst's ``azimuthAnxTime`` (seconds since the ascending node),
which repeats within a fraction of a second on every pass of the same relative orbit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cropflow.inventory import (S1_SCENE_RE, _iso, _scan, _tree_size, footprints_in_crs, s1_relative_orbit,
                                safe_entry_kind, safe_stamp)

log = logging.getLogger(__name__)

SLC_COLUMNS = ["scene", "platform", "relative_orbit", "pass", "start", "stop", "polarisations", "ipf_version",
               "path", "size", "checksum", "west", "south", "east", "north", "footprint", "burst_ids",
               "burst_anx_times", "slice_number", "total_slices"]
SKIPPED_COLUMNS = ["scene", "path", "reason"]
SLC_PAIR_COLUMNS = ["pair", "relative_orbit", "pass", "reference", "secondary", "platform_ref", "platform_sec",
                    "start_ref", "start_sec", "days", "bursts"]
COVERAGE_COLUMNS = ["scene", "tile", "coverage"]

#: first IPF version whose annotations carry ``burstId``
BURST_ID_IPF = 3.40
#: nominal orbit period: 12 days / 175 orbits (s); azimuth-ANX times are taken modulo this
ORBIT_PERIOD_S = 12 * 86400 / 175
#: annotation files of the measurement swaths (``s1b-iw1-slc-vv-...xml``)
_ANNOTATION_RE = r"^s1[a-d]-iw[1-3]-slc-(vv|vh|hh|hv)-.*\.xml$"
_SWATH_RE = re.compile(r"^s1[a-d]-(iw[1-3])-slc-")
NOT_IN_AOI = "does not touch the AOI"


class BurstMatch(NamedTuple):
    """One burst seen by both scenes of a pair: its id and its index in each scene's swath burst list."""
    burst_id: int | float
    index_ref: int
    index_sec: int


# ------------------------------------------------------------------------------------------------ scan


def _product_name(entry_name: str) -> str:
    return entry_name.removesuffix(".zip").removesuffix(".SAFE")


def _slc_kind(entry: os.DirEntry) -> str | None:
    name = entry.name
    kind = safe_entry_kind(entry)
    if kind is None:
        return None
    if S1_SCENE_RE.match(_product_name(name)) is None:
        if name.startswith("S1"):
            log.info("%s is not a Sentinel-1 IW SLC product: the SLC inventory ignores it", entry.path)
        return None
    return kind


def _slc_stamp(entry: os.DirEntry, kind: str) -> list:
    return safe_stamp(entry, kind, "manifest.safe")


def _check_zip(path: Path) -> None:
    """Open the zip's central directory (cheap; no member is decompressed) and require a manifest."""
    try:
        with zipfile.ZipFile(path) as zf:
            if not any(n.endswith(".SAFE/manifest.safe") for n in zf.namelist()):
                raise ValueError("the zip holds no <product>.SAFE/manifest.safe")
    except zipfile.BadZipFile as err:
        raise ValueError(f"not a readable zip archive, truncated or corrupt ({err})") from err


def _burst_lists(scene, first_polarisation_only: bool = True) -> dict[str, dict[str, list]]:
    """Per swath (``IW1``...): relative burst ids (None when absent) and azimuth-ANX times (s) of the
    annotation ``burstList`` (one polarisation per swath: the bursts of all polarisations are the same)."""
    files = sorted(scene.findfiles(_ANNOTATION_RE), key=lambda f: os.path.basename(f))
    out: dict[str, dict[str, list]] = {}
    for name in files:
        swath = _SWATH_RE.match(os.path.basename(name))[1].upper()
        if swath in out and first_polarisation_only:
            continue
        root = ET.parse(scene.getFileObj(name)).getroot()
        ids, anx = [], []
        for burst in root.iterfind("swathTiming/burstList/burst"):
            anx.append(round(float(burst.findtext("azimuthAnxTime")), 6))
            bid = burst.findtext("burstId")
            ids.append(int(bid) if bid is not None else None)
        out[swath] = {"ids": ids, "anx": anx}
    return out


def _read_slc_record(path: Path, kind: str) -> dict:
    """Metadata of one SLC product; a product that cannot be read gives ``{"entry", "skip": reason}``."""
    from cropflow.pyrosar_env import import_pyrosar

    try:
        if kind == "zip":
            _check_zip(path)
        pyrosar = import_pyrosar()
        try:
            scene = pyrosar.identify(str(path))
        except RuntimeError as err:
            raise ValueError(f"pyroSAR cannot identify it ({err})") from err
        meta = scene.meta
        if meta.get("product") != "SLC" or meta.get("acquisition_mode") != "IW":
            raise ValueError(f"it is a {meta.get('acquisition_mode')} {meta.get('product')} product, not IW SLC")
        name = _product_name(os.path.basename(scene.scene))
        m = S1_SCENE_RE.match(name)
        if m is None:
            raise ValueError(f"its SAFE folder {os.path.basename(scene.scene)} is not an IW SLC product name")
        platform, orbit = meta["sensor"], int(meta["orbitNumber_rel"])
        from_name = s1_relative_orbit(m["platform"], int(m["orbit"]))
        if from_name is not None and from_name != orbit:
            raise ValueError(f"manifest relative orbit {orbit} disagrees with absolute orbit {int(m['orbit'])} "
                             f"of the name (relative orbit {from_name})")
        manifest = scene.getFileObj(scene.findfiles(r"^manifest\.safe$")[0]).read()
        ipf = float(meta["IPF_version"])
        bursts = _burst_lists(scene)
        if not bursts:
            raise ValueError("it has no swath annotation (annotation/s1*-iw*-slc-*.xml)")
    except (ValueError, OSError, KeyError, IndexError, TypeError, ET.ParseError, zipfile.BadZipFile) as err:
        return {"entry": path.name, "skip": f"{err}"}
    ids_present = all(i is not None for b in bursts.values() for i in b["ids"])
    if ipf >= BURST_ID_IPF and not ids_present:
        log.warning("%s: IPF %.2f but the annotation has no burstId: bursts are matched by azimuth-ANX time",
                    path, ipf)
    burst_ids = {sw: (b["ids"] if ipf >= BURST_ID_IPF and ids_present else b["anx"]) for sw, b in bursts.items()}
    lon, lat = np.asarray(meta["coordinates"], dtype=float).T
    outline = shapely.Polygon(np.column_stack([lon, lat]))
    outline = shapely.orient_polygons(outline)
    return {
        "entry": path.name, "scene": name, "platform": platform, "relative_orbit": orbit,
        "pass": {"A": "ASCENDING", "D": "DESCENDING"}[meta["orbit"]],
        "start": _iso(datetime.fromisoformat(meta["acquisition_time"]["start"] + "+00:00")),
        "stop": _iso(datetime.fromisoformat(meta["acquisition_time"]["stop"] + "+00:00")),
        "polarisations": "+".join(meta["polarizations"]), "ipf_version": ipf,
        "size": _tree_size(path), "checksum": hashlib.sha256(manifest).hexdigest(),
        "west": float(lon.min()), "south": float(lat.min()), "east": float(lon.max()), "north": float(lat.max()),
        "footprint": shapely.to_wkt(outline, rounding_precision=8),
        "burst_ids": json.dumps(burst_ids), "burst_anx_times": json.dumps({sw: b["anx"] for sw, b in bursts.items()}),
        "slice_number": meta.get("sliceNumber"), "total_slices": meta.get("totalSlices"),
    }


def scan_s1_slc(folder: str | os.PathLike, cache_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inventory of the Sentinel-1 IW SLC products (``*.SAFE`` folders, ``*.zip``) directly in ``folder``.

    Returns ``(scenes, skipped)``. Scenes (``SLC_COLUMNS``): scene (product name), platform, relative_orbit,
    pass (ASCENDING/DESCENDING), start/stop (UTC ISO, from the manifest), polarisations ("VV+VH"),
    ipf_version, path, size (bytes of the zip or of the folder's files), checksum (sha256 of manifest.safe),
    west/south/east/north and footprint (WKT, EPSG:4326, the manifest's footprint polygon), burst_ids (JSON
    {swath: [ids]}: relative burst ids for IPF >= 3.40, else azimuth-ANX times in s) and burst_anx_times
    (JSON {swath: [s]}), slice_number and total_slices (manifest ``sliceNumber``/``totalSlices``; empty for a
    product that is not a slice). Skipped (``SKIPPED_COLUMNS``): scene, path, reason, one row per product that could
    not be read (truncated or corrupt zip, not an IW SLC, inconsistent metadata), each logged as a warning.
    Metadata is read only for entries that are new or changed since the cache ``cache_path`` was written
    (zip: size and mtime; folder: its mtime and manifest.safe size and mtime); skips are cached too.
    """
    records = _scan(folder, cache_path, "S1 SLC", _slc_kind, _slc_stamp, lambda p, k: _read_slc_record(p, k),
                    config_key="inputs.s1_slc")
    skipped = [{"scene": _product_name(r["entry"]), "path": r["path"], "reason": r["skip"]}
               for r in records if "skip" in r]
    for s in skipped:
        log.warning("%s skipped: %s", s["path"], s["reason"])
    scenes = pd.DataFrame([r for r in records if "skip" not in r], columns=SLC_COLUMNS)
    dup = scenes.duplicated("scene", keep="first")
    for _, row in scenes[dup].iterrows():
        skipped.append({"scene": row["scene"], "path": row["path"],
                        "reason": "the same product is also in the folder (zip and folder): the first is used"})
        log.warning("%s skipped: another copy of %s is in the folder", row["path"], row["scene"])
    scenes = scenes[~dup].sort_values(["start", "scene"]).reset_index(drop=True)
    return scenes, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)


# ----------------------------------------------------------------------------------------------- pairs


def _track(row: Mapping) -> tuple[int, str]:
    return int(row["relative_orbit"]), str(row["pass"])


def _anx_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of azimuth-ANX times modulo the orbit period (a burst at the node may wrap), (len(a), len(b))."""
    d = np.abs(a[:, None] - b[None, :]) % ORBIT_PERIOD_S
    return np.minimum(d, ORBIT_PERIOD_S - d)


def common_bursts(a: Mapping, b: Mapping, tolerance_s: float = 1.0) -> dict[str, list[BurstMatch]]:
    """Bursts seen by both scenes ``a`` and ``b`` (rows of the ``scan_s1_slc`` table), per swath.

    Relative burst ids are compared when both scenes have them (IPF >= 3.40); otherwise bursts match when
    their azimuth-ANX times differ by at most ``tolerance_s`` (less than half the 2.758 s burst cycle), and
    the id reported is the reference's ANX time. Swaths without a common burst are left out. Scenes of
    different tracks (relative orbit or pass) raise ValueError naming both.
    """
    if _track(a) != _track(b):
        raise ValueError(f"{a['scene']} (relative orbit {a['relative_orbit']} {a['pass']}) and {b['scene']} "
                         f"(relative orbit {b['relative_orbit']} {b['pass']}) are on different tracks: an "
                         f"interferometric pair needs two acquisitions of one relative orbit and pass")
    ids_a, ids_b = json.loads(a["burst_ids"]), json.loads(b["burst_ids"])
    anx_a, anx_b = json.loads(a["burst_anx_times"]), json.loads(b["burst_anx_times"])
    by_id = all(isinstance(i, int) for ids in (*ids_a.values(), *ids_b.values()) for i in ids)
    out: dict[str, list[BurstMatch]] = {}
    for swath in sorted(set(anx_a) & set(anx_b)):
        if by_id:
            index_b = {bid: j for j, bid in enumerate(ids_b[swath])}
            matches = [BurstMatch(bid, i, index_b[bid]) for i, bid in enumerate(ids_a[swath]) if bid in index_b]
        else:
            ta, tb = np.asarray(anx_a[swath], float), np.asarray(anx_b[swath], float)
            if ta.size == 0 or tb.size == 0:
                continue
            d = _anx_distance(ta, tb)
            j = d.argmin(axis=1)
            matches = [BurstMatch(float(ta[i]), i, int(j[i])) for i in range(ta.size) if d[i, j[i]] <= tolerance_s]
        if matches:
            out[swath] = matches
    return out


def pair_id(a: Mapping, b: Mapping) -> str:
    """``R<relative orbit 3 digits>_<YYYYMMDD reference>_<YYYYMMDD secondary>`` (the S1 seam's pair id)."""
    return f"R{int(a['relative_orbit']):03d}_{str(a['start'])[:10].replace('-', '')}_" \
           f"{str(b['start'])[:10].replace('-', '')}"


def slc_pair(a: Mapping, b: Mapping, tolerance_s: float = 1.0) -> dict:
    """The pair record (``SLC_PAIR_COLUMNS``) of reference ``a`` and secondary ``b``; ``bursts`` is JSON
    {swath: [[burst id, index in reference, index in secondary], ...]}. Different tracks raise ValueError."""
    bursts = common_bursts(a, b, tolerance_s)
    days = (pd.Timestamp(b["start"]) - pd.Timestamp(a["start"])).total_seconds() / 86400.0
    return {"pair": pair_id(a, b), "relative_orbit": int(a["relative_orbit"]), "pass": a["pass"],
            "reference": a["scene"], "secondary": b["scene"], "platform_ref": a["platform"],
            "platform_sec": b["platform"], "start_ref": a["start"], "start_sec": b["start"], "days": days,
            "bursts": json.dumps({sw: [list(m) for m in ms] for sw, ms in bursts.items()})}


def _gap_ok(days: float, same_platform: bool, max_gap_days: float, tolerance_hours: float) -> bool:
    """A repeat-pass gap: a multiple of 12 days (one platform) or of 6 days (two platforms 180 deg apart),
    within ``tolerance_hours``, at most ``max_gap_days``."""
    cycle = 12.0 if same_platform else 6.0
    n = round(days / cycle)
    return n >= 1 and abs(days - n * cycle) * 24.0 <= tolerance_hours and n * cycle <= max_gap_days


def slc_pairs(scenes: pd.DataFrame, max_gap_days: float = 12, tolerance_hours: float = 1.0,
              allow_cross_platform: bool = True, burst_tolerance_s: float = 1.0) -> pd.DataFrame:
    """Consecutive interferometric pairs of the ``scan_s1_slc`` table (``SLC_PAIR_COLUMNS``).

    Per track (relative orbit and pass; also per platform when ``allow_cross_platform`` is false) each
    acquisition date is paired with the next date of the track: every reference slice with every secondary
    slice that shares at least one burst (``common_bursts``). The gap must be the 12-day repeat of one
    platform or the 6-day interval of two platforms (multiples up to ``max_gap_days``), within
    ``tolerance_hours``; consecutive dates that fail this are logged and not paired. Several slices per date
    give several rows with the same pair id (the slices of one coherence product).
    """
    rows: list[dict] = []
    if scenes.empty:
        return pd.DataFrame(rows, columns=SLC_PAIR_COLUMNS)
    keys = ["relative_orbit", "pass"] + ([] if allow_cross_platform else ["platform"])
    for key, group in scenes.groupby(keys, sort=True):
        group = group.assign(_t=pd.to_datetime(group["start"], utc=True)).sort_values("_t")
        day = group["_t"].dt.strftime("%Y%m%d")
        dates = sorted(day.unique())
        for d_ref, d_sec in zip(dates, dates[1:]):
            refs = group[day == d_ref].to_dict("records")
            secs = group[day == d_sec].to_dict("records")
            found = 0
            for a in refs:
                for b in secs:
                    days = (b["_t"] - a["_t"]).total_seconds() / 86400.0
                    if not _gap_ok(days, a["platform"] == b["platform"], max_gap_days, tolerance_hours):
                        log.info("%s and %s (track %s) are %.2f days apart: not a repeat-pass pair within "
                                 "max_gap_days=%s, tolerance_hours=%s", a["scene"], b["scene"], key, days,
                                 max_gap_days, tolerance_hours)
                        continue
                    record = slc_pair(a, b, burst_tolerance_s)
                    if record["bursts"] == "{}":
                        continue
                    rows.append(record)
                    found += 1
            if not found:
                log.warning("track %s: no pair between %s and %s (gap or no common burst)", key, d_ref, d_sec)
    pairs = pd.DataFrame(rows, columns=SLC_PAIR_COLUMNS)
    return pairs.sort_values(["start_ref", "pair", "reference", "secondary"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ AOI coverage


def aoi_coverage(scenes: pd.DataFrame, aoi_geometry_4326: shapely.Geometry,
                 tiles: gpd.GeoDataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage of the project tiles by each scene, for the data-inadequacy report.

    Returns ``(coverage, skipped)``: coverage (``COVERAGE_COLUMNS``) has one row per scene touching
    ``aoi_geometry_4326`` (lon/lat) and tile of ``tiles`` (columns tile_id, geometry, in the project CRS):
    the fraction of the tile's area inside the scene footprint (0..1, computed in the tiles' CRS with the
    footprint densified along its lon/lat edges). Scenes whose footprint does not touch the AOI are listed
    in skipped (``SKIPPED_COLUMNS``, reason "does not touch the AOI") and logged.
    """
    footprints = shapely.from_wkt(scenes["footprint"].to_numpy(dtype=object))
    touches = shapely.intersects(footprints, aoi_geometry_4326)
    skipped = scenes.loc[~touches, ["scene", "path"]].assign(reason=NOT_IN_AOI)
    for _, row in skipped.iterrows():
        log.info("%s skipped: %s", row["scene"], NOT_IN_AOI)
    inside = scenes[touches]
    dense = [shapely.to_wkt(shapely.segmentize(f, 0.01)) for f in footprints[touches]]
    projected = footprints_in_crs(dense, tiles.crs) if dense else np.array([], dtype=object)
    tile_geoms = tiles.geometry.to_numpy()
    tile_area = shapely.area(tile_geoms)
    rows = []
    for scene, fp in zip(inside["scene"], projected):
        fraction = shapely.area(shapely.intersection(fp, tile_geoms)) / tile_area
        rows.extend({"scene": scene, "tile": t, "coverage": float(min(c, 1.0))}
                    for t, c in zip(tiles["tile_id"], fraction))
    coverage = pd.DataFrame(rows, columns=COVERAGE_COLUMNS)
    partial = coverage[(coverage["coverage"] > 0) & (coverage["coverage"] < 1)]
    for _, row in partial.iterrows():
        log.info("%s covers %.1f%% of tile %s", row["scene"], 100 * row["coverage"], row["tile"])
    return coverage, skipped.reset_index(drop=True)[SKIPPED_COLUMNS]
