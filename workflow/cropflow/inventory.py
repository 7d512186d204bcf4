"""Scene inventories built when the DAG is built: Sentinel-2 L1C/L2A products and Sentinel-1 seam rasters.

The Snakefile scans the input folders at parse time (no checkpoint per scene), so a new product adds
exactly its own jobs. Parse-time code runs again in every cluster job, so metadata is read only for
entries that are new or changed since the last scan: a JSON cache keyed by entry name, size and mtime
(per scanned folder) holds the rest, and a scan of thousands of cached products costs a directory
listing and a ``stat`` per product.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.errors
import rasterio.warp
import shapely

from cropflow.atomic import atomic_path
from cropflow.s2 import (METADATA_FILE, open_l1c, open_l2a, parse_product_name,
                         strip_product_suffix)

log = logging.getLogger(__name__)

S2_COLUMNS = ["scene", "level", "platform", "mgrs_tile", "datetime", "relative_orbit", "baseline", "path", "size",
              "checksum", "west", "south", "east", "north", "footprint", "cloud_l1c"]
#: values of config s2.prefer: the level that provides the reflectance when both are present
S2_PREFER = ("l2a", "l1c")
S1_SCENE_COLUMNS = ["scene", "platform", "relative_orbit", "pass", "datetime", "path", "size", "checksum",
                    "west", "south", "east", "north", "footprint"]
S1_PAIR_COLUMNS = ["pair", "platform", "relative_orbit", "reference", "secondary", "datetime_ref", "datetime_sec",
                   "path", "size", "checksum", "west", "south", "east", "north", "footprint"]
PAIR_COLUMNS = ["pair", "platform", "relative_orbit", "reference", "secondary", "datetime_ref", "datetime_sec",
                "days"]

#: Sentinel-1 product name (the scene id at the S1 seam)
S1_SCENE_RE = re.compile(
    r"^(?P<platform>S1[A-D])_IW_SLC__1S(?P<pol>[DS][VH])_(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})"
    r"_(?P<orbit>\d{6})_(?P<datatake>[0-9A-F]{6})_(?P<crc>[0-9A-F]{4})$"
)
#: pair id ``R<relative orbit>_<YYYYMMDD reference>_<YYYYMMDD secondary>``
PAIR_RE = re.compile(r"^R(?P<orbit>\d{3})_(?P<ref>\d{8})_(?P<sec>\d{8})$")
#: absolute -> relative orbit: (absolute - offset) % 175 + 1 (Sentinel-1 12-day repeat cycle of 175 orbits)
_S1_ORBIT_OFFSET = {"S1A": 73, "S1B": 27}
_CACHE_VERSION = 3
_HASH_LIMIT = 64 * 2**20


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def footprint_wkt(crs, bounds: Sequence[float]) -> str:
    """The raster's rectangle in its own CRS, densified and reprojected to EPSG:4326, as WKT (1e-8 degrees).

    Unlike a lon/lat bounding box, this polygon follows the product's true outline, so a product that
    exactly fills one tile does not also overlap its neighbours.
    """
    left, bottom, right, top = bounds
    ring = shapely.box(left, bottom, right, top).segmentize(max(right - left, top - bottom) / 32)
    to_4326 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.to_wkt(shapely.transform(ring, lambda xy: np.column_stack(to_4326.transform(xy[:, 0], xy[:, 1]))),
                          rounding_precision=8)


def footprints_in_crs(wkts: Sequence[str], crs) -> np.ndarray:
    """Footprints (WKT, EPSG:4326, lon/lat) as shapely geometries in ``crs`` (vertices reprojected)."""
    footprints = shapely.from_wkt(np.asarray(wkts, dtype=object))
    to_crs = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(footprints, lambda xy: np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1])))


def _bounds_4326(src: rasterio.io.DatasetReader) -> dict[str, float | str]:
    w, s, e, n = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    return {"west": w, "south": s, "east": e, "north": n, "footprint": footprint_wkt(src.crs, src.bounds)}


# --------------------------------------------------------------------------------------------------- cache


class _Cache:
    """Records of one scanned folder in a JSON file shared by several folders and sensors.

    An entry is reused when its stamp (sizes and mtimes) is unchanged; ``save`` writes the file
    atomically, only if something changed, keeping only the entries seen in this scan.
    """

    def __init__(self, path: str | os.PathLike, section: str):
        self.path, self.section = Path(path), section
        self.doc = self._load()
        self.old: dict = self.doc["sections"].get(section, {})
        self.new: dict = {}

    def _load(self) -> dict:
        if not self.path.exists():
            return {"version": _CACHE_VERSION, "sections": {}}
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("version") == _CACHE_VERSION and isinstance(doc.get("sections"), dict):
                return doc
            log.warning("inventory cache %s has another version: rebuilding it", self.path)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            log.warning("inventory cache %s is unreadable (%s): rebuilding it", self.path, err)
        return {"version": _CACHE_VERSION, "sections": {}}

    def get(self, key: str, stamp: list) -> dict | None:
        hit = self.old.get(key)
        if hit is not None and hit.get("stamp") == stamp:
            self.new[key] = hit
            return hit["record"]
        return None

    def put(self, key: str, stamp: list, record: dict) -> None:
        self.new[key] = {"stamp": stamp, "record": record}

    def save(self) -> None:
        if self.new == self.old:
            return
        self.doc["sections"][self.section] = self.new
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.doc, separators=(",", ":")))


def _scan(folder: str | os.PathLike, cache_path: str | os.PathLike, sensor: str,
          classify: Callable[[os.DirEntry], str | None], stamp: Callable[[os.DirEntry, str], list],
          read: Callable[[Path, str], dict], config_key: str | None = None) -> list[dict]:
    """Records of the entries of ``folder`` that ``classify`` recognises (kind), read or taken from the cache.

    ``config_key`` names the config key of the folder in the error raised when it is missing (default
    ``inputs.<sensor>``)."""
    root = Path(folder)
    if not root.is_dir():
        key = config_key or f"inputs.{sensor.lower()}"
        raise FileNotFoundError(f"{sensor} input folder {root} does not exist: set config {key}")
    cache = _Cache(cache_path, f"{sensor}:{root.resolve()}")
    records, fresh = [], []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        kind = classify(entry)
        if kind is None:
            log.debug("%s: %s is not a %s product, ignored", root, entry.name, sensor)
            continue
        st = stamp(entry, kind)
        record = cache.get(entry.name, st)
        if record is None:
            fresh.append((entry, kind, st))
        else:
            records.append(record)
    for i, (entry, kind, st) in enumerate(fresh, start=1):
        record = read(Path(entry.path), kind)
        cache.put(entry.name, st, record)
        records.append(record)
        if i % 100 == 0 or i == len(fresh):
            log.info("%s: read metadata of %d/%d new or changed entries", root, i, len(fresh))
    cache.save()
    prefix = str(root)
    return [{**record, "path": os.path.join(prefix, record["entry"])} for record in records]


# -------------------------------------------------------------------------------------------------- S2


def safe_entry_kind(entry: os.DirEntry) -> str | None:
    """``"dir"`` for a ``.SAFE`` folder, ``"zip"`` for a ``.zip`` file, None for anything else (or hidden)."""
    name = entry.name
    if name.startswith("."):
        return None
    if name.endswith(".SAFE") and entry.is_dir():
        return "dir"
    if name.endswith(".zip") and entry.is_file():
        return "zip"
    return None


def _s2_classifier(skipped: list[dict[str, str]]) -> Callable[[os.DirEntry], str | None]:
    """Classify S2 entries as ``dir``/``zip`` of an L1C or L2A product; an entry whose name starts like a
    Sentinel-2 product but matches neither level (e.g. pre-2016 long names) is recorded in ``skipped``."""

    def classify(entry: os.DirEntry) -> str | None:
        kind = safe_entry_kind(entry)
        if kind is None:
            return None
        stem = strip_product_suffix(entry.name)
        if parse_product_name(stem) is None:
            if stem.startswith("S2"):
                reason = ("not a Sentinel-2 L1C/L2A product name in the compact naming (2016+, "
                          "S2x_MSIL1C|MSIL2A_<sensing>_Nxxxx_Rxxx_Txxxxx_<generation>): rename it or remove it")
                log.warning("%s is skipped: %s", entry.path, reason)
                skipped.append({"product": entry.name, "reason": reason})
            return None
        return kind

    return classify


def safe_stamp(entry: os.DirEntry, kind: str, metadata_name: str) -> list:
    """Cache stamp of a SAFE product: size and mtime of a zip (``kind`` "zip"); for a folder, its mtime and
    the size and mtime of its metadata file ``metadata_name`` (e.g. ``manifest.safe``)."""
    st = entry.stat()
    if kind == "zip":
        return [st.st_size, st.st_mtime_ns]
    try:
        mtd = os.stat(os.path.join(entry.path, metadata_name))
    except FileNotFoundError:
        return [st.st_mtime_ns, None, None]
    return [st.st_mtime_ns, mtd.st_size, mtd.st_mtime_ns]


def _s2_stamp(entry: os.DirEntry, kind: str) -> list:
    parsed = parse_product_name(strip_product_suffix(entry.name))
    return safe_stamp(entry, kind, METADATA_FILE[str(parsed["level"]) if parsed else "L2A"])


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _footprint_bounds(wkt: str) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in shapely.from_wkt(wkt).bounds)  # type: ignore[return-value]


def _read_s2_record(path: Path, kind: str) -> dict:
    """Product-level metadata of one L1C or L2A product (the expensive part of a scan).

    The footprint is the L1C's Product_Footprint when its metadata has one, else the outline of a band raster
    (SCL for L2A, B02 for L1C)."""
    parsed = parse_product_name(strip_product_suffix(path.name))
    level = str(parsed["level"]) if parsed else "L2A"
    try:
        product = open_l1c(path) if level == "L1C" else open_l2a(path)
        footprint = getattr(product, "footprint_wkt", None)
        if footprint is not None:
            west, south, east, north = _footprint_bounds(footprint)
        else:
            band = "SCL" if level == "L2A" else "B02"
            with rasterio.open(product.band_path(band)) as src:
                if src.crs is None:
                    raise ValueError(f"{band} has no georeferencing")
                footprint = footprint_wkt(src.crs, src.bounds)
                west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds,
                                                                          densify_pts=21)
    except (OSError, ValueError, KeyError, rasterio.errors.RasterioError) as err:
        raise ValueError(f"{path}: unreadable Sentinel-2 {level} product ({err}); re-download it or remove it "
                         f"from {path.parent}") from err
    return {"entry": path.name, "scene": product.name, "level": level, "platform": product.platform,
            "mgrs_tile": product.mgrs_tile, "datetime": _iso(product.datetime),
            "relative_orbit": product.relative_orbit, "baseline": product.baseline, "size": _tree_size(path),
            "checksum": product.metadata_sha256, "west": west, "south": south, "east": east, "north": north,
            "footprint": footprint}


def _baseline_rank(baseline: str) -> tuple[int, int, int]:
    """Sort key of a processing baseline: official baselines (< 99.00) above local processings (Sen2Cor run
    by a user: 99.xx), then by number."""
    major, minor = (int(p) for p in str(baseline).split("."))
    return (0 if major >= 99 else 1, major, minor)


def _acquisition_key(df: pd.DataFrame) -> pd.Series:
    """(platform, relative orbit, MGRS tile, sensing time from the name): one acquisition, whatever the level."""
    sensing = df["scene"].str.extract(r"_MSIL(?:1C|2A)_(\d{8}T\d{6})_", expand=False).fillna(df["datetime"])
    return df["platform"] + "_R" + df["relative_orbit"].astype(int).map("{:03d}".format) + "_T" + \
        df["mgrs_tile"] + "_" + sensing


def keep_newest_baseline(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """(kept, dropped): one product per level and acquisition (platform, relative orbit, tile, sensing time in
    the name). The newest official processing baseline is kept, then the newest generation time; a local
    Sen2Cor processing (baseline 99.xx) never replaces an official one. Every dropped product is logged as a
    warning and returned as {"product", "reason"}."""
    if df.empty:
        return df, []
    order = df.assign(
        _acq=_acquisition_key(df),
        _rank=df["baseline"].map(_baseline_rank),
        _generation=df["scene"].str.extract(r"_(\d{8}T\d{6})$", expand=False).fillna(""),
    ).sort_values(["_rank", "_generation"])
    key = ["level", "_acq"]
    dup = order.duplicated(key, keep="last")
    kept = order[~dup].set_index(key)
    dropped = []
    for _, row in order[dup].iterrows():
        winner = kept.loc[(row["level"], row["_acq"])]
        reason = (f"processing baseline {row['baseline']} is older than {winner['baseline']} of {winner['scene']}"
                  if _baseline_rank(row["baseline"]) < _baseline_rank(winner["baseline"]) else
                  f"same processing baseline {row['baseline']} as {winner['scene']}, generated earlier")
        log.warning("%s is left out: %s (the same %s acquisition)", row["path"], reason, row["level"])
        dropped.append({"product": row["scene"], "reason": reason})
    return df.loc[order.index[~dup]], dropped


def choose_level(df: pd.DataFrame, prefer: str = "l2a", clouds_need_l1c: bool = False
                 ) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """(kept, dropped): where one acquisition has both an L1C and an L2A, ``prefer`` (config s2.prefer) says
    which provides the reflectance; the other is dropped with its reason (logged). With ``prefer`` "l2a" and
    ``clouds_need_l1c`` (s2cloudless masks), the L1C is not dropped but named in the L2A's ``cloud_l1c``
    column. ``cloud_l1c`` is an L1C row's own path, else the L1C twin's path or ""."""
    if prefer not in S2_PREFER:
        raise ValueError(f"s2.prefer {prefer!r}: give one of {', '.join(S2_PREFER)}")
    df = df.assign(cloud_l1c=np.where(df["level"] == "L1C", df["path"], ""))
    if df.empty:
        return df, []
    acq = _acquisition_key(df)
    keep = pd.Series(True, index=df.index)
    dropped = []
    # only acquisitions with both levels need a choice (a per-group loop over all of them costs seconds)
    both = df.groupby(acq)["level"].transform("nunique").to_numpy() > 1
    for _, idx in df[both].groupby(acq[both]).groups.items():
        rows = df.loc[idx]
        l1c, l2a = rows[rows["level"] == "L1C"].iloc[0], rows[rows["level"] == "L2A"].iloc[0]
        if prefer == "l2a":
            keep[l1c.name] = False
            if clouds_need_l1c:
                df.loc[l2a.name, "cloud_l1c"] = l1c["path"]
                log.info("%s provides the s2cloudless mask of %s", l1c["scene"], l2a["scene"])
                continue
            reason = f"its Level-2A {l2a['scene']} is used (s2.prefer: l2a)"
            loser = l1c
        else:
            keep[l2a.name] = False
            reason = f"its Level-1C {l1c['scene']} is corrected with Sen2Cor instead (s2.prefer: l1c)"
            loser = l2a
        log.warning("%s is left out: %s", loser["path"], reason)
        dropped.append({"product": loser["scene"], "reason": reason})
    return df[keep], dropped


def s2_scan_options(section: dict | None) -> dict[str, object]:
    """``scan_s2`` keyword arguments from the config's ``s2`` section: ``prefer`` (s2.prefer, default l2a) and
    ``clouds_need_l1c`` (s2.clouds.method is s2cloudless or both)."""
    section = section or {}
    method = (section.get("clouds") or {}).get("method", "scl")
    return {"prefer": section.get("prefer", "l2a"), "clouds_need_l1c": method != "scl"}


def scan_s2(folder: str | os.PathLike, cache_path: str | os.PathLike, prefer: str = "l2a",
            clouds_need_l1c: bool = False) -> pd.DataFrame:
    """Inventory of the Sentinel-2 Level-1C and Level-2A products (``*.SAFE`` folders, ``*.zip``) directly in
    ``folder``.

    Columns ``S2_COLUMNS``: scene (product name), level (L1C | L2A), platform, mgrs_tile, datetime (UTC ISO),
    relative_orbit, baseline, path, size (bytes of the zip or of the folder's files), checksum (sha256 of the
    MTD_MSIL1C.xml / MTD_MSIL2A.xml), west/south/east/north and footprint (EPSG:4326: the L1C's
    Product_Footprint, else a band raster's outline), cloud_l1c (the L1C whose TOA bands feed s2cloudless:
    the row's own path for an L1C, an L1C twin's path for an L2A when ``clouds_need_l1c``, else ""). An L1C
    row's reflectance comes from Sen2Cor (rule sen2cor).

    Metadata is read only for entries missing from the cache ``cache_path`` or whose stamp changed (zip: size
    and mtime; folder: folder mtime, metadata file size and mtime). A product that cannot be read raises
    ValueError naming it. Products are dropped, each logged and listed with its reason in
    ``df.attrs["skipped"]`` (a list of {"product": name, "reason": text}): names that look like Sentinel-2 but
    are not compact L1C/L2A names; older processing baselines of one level and acquisition
    (``keep_newest_baseline``); the level ``prefer`` (s2.prefer) does not pick when both exist (``choose_level``).
    """
    skipped: list[dict[str, str]] = []
    # the reader is looked up at call time so that it can be wrapped (e.g. counted in tests)
    records = _scan(folder, cache_path, "S2", _s2_classifier(skipped), _s2_stamp,
                    lambda p, k: _read_s2_record(p, k))
    df = pd.DataFrame(records, columns=[c for c in S2_COLUMNS if c != "cloud_l1c"])
    df, dropped = keep_newest_baseline(df)
    skipped += dropped
    df, dropped = choose_level(df, prefer, clouds_need_l1c)
    skipped += dropped
    df = df[S2_COLUMNS].sort_values(["datetime", "scene"]).reset_index(drop=True)
    df.attrs["skipped"] = skipped
    return df


# -------------------------------------------------------------------------------------------------- S1


def s1_relative_orbit(platform: str, absolute_orbit: int) -> int | None:
    """Relative orbit of a Sentinel-1 absolute orbit: (abs - 73) % 175 + 1 (S1A), (abs - 27) % 175 + 1 (S1B);
    None for a platform without a known offset."""
    offset = _S1_ORBIT_OFFSET.get(platform)
    return None if offset is None else (absolute_orbit - offset) % 175 + 1


def _s1_kind(entry: os.DirEntry) -> str | None:
    if not entry.is_file() or entry.name.startswith("."):
        return None
    if entry.name.endswith("_C2.tif") and S1_SCENE_RE.match(entry.name.removesuffix("_C2.tif")):
        return "scene"
    if entry.name.endswith("_coh.tif") and PAIR_RE.match(entry.name.removesuffix("_coh.tif")):
        return "pair"
    return None


def _file_stamp(entry: os.DirEntry, kind: str) -> list:
    st = entry.stat()
    return [st.st_size, st.st_mtime_ns]


def file_checksum(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file smaller than 64 MiB; for larger files, of its first 64 MiB followed by its size
    in bytes as decimal text (a fast fingerprint, not a full-content hash)."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = min(size, _HASH_LIMIT)
        while remaining > 0:
            chunk = f.read(min(remaining, 2**20))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    if size >= _HASH_LIMIT:
        h.update(str(size).encode())
    return h.hexdigest()


def _s1_time(stamp: str) -> str:
    return _iso(datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc))


def _read_s1_record(path: Path, kind: str) -> dict:
    """Metadata of one S1 seam raster: names parsed, tags checked against them, bounds, checksum."""
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
            if src.crs is None:
                raise ValueError("it has no CRS")
            bounds = _bounds_4326(src)
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"{path}: unreadable raster ({err}); rewrite it or remove it from {path.parent}") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}; rewrite it or remove it from {path.parent}") from err
    record = {"entry": path.name, "size": path.stat().st_size, "checksum": file_checksum(path), **bounds}
    if kind == "scene":
        scene = path.name.removesuffix("_C2.tif")
        m = S1_SCENE_RE.match(scene)
        assert m is not None
        orbit = s1_relative_orbit(m["platform"], int(m["orbit"]))
        tagged = tags.get("RELATIVE_ORBIT")
        if tagged is None and orbit is None:
            raise ValueError(f"{path}: tag RELATIVE_ORBIT is missing; write it (see the S1 seam format)")
        if tagged is not None and orbit is not None and int(tagged) != orbit:
            raise ValueError(f"{path}: tag RELATIVE_ORBIT={tagged} but absolute orbit {int(m['orbit'])} of "
                             f"{m['platform']} is relative orbit {orbit}; fix the tag")
        direction = tags.get("PASS", "").upper()
        if direction not in ("ASCENDING", "DESCENDING"):
            raise ValueError(f"{path}: tag PASS must be ASCENDING or DESCENDING (found {direction!r}); write it")
        return {**record, "scene": scene, "platform": m["platform"],
                "relative_orbit": orbit if orbit is not None else int(tagged), "pass": direction,
                "datetime": _s1_time(m["start"])}
    pair = path.name.removesuffix("_coh.tif")
    missing = [t for t in ("REFERENCE", "SECONDARY") if not tags.get(t)]
    if missing:
        raise ValueError(f"{path}: tag {' and '.join(missing)} missing; write the scene ids of the pair")
    return {**record, "pair": pair, "reference": tags["REFERENCE"], "secondary": tags["SECONDARY"]}


def _validate_pairs(pairs: pd.DataFrame, scenes: pd.DataFrame) -> pd.DataFrame:
    """Complete the pairs from their scenes; each must join consecutive passes of one platform and track (its
    REFERENCE and SECONDARY tags may name any slice of the two passes)."""
    first_slice = {s: slices[0] for slices in _passes(scenes)["slices"] for s in slices}
    consecutive = {(r.reference, r.secondary) for r in _consecutive(scenes).itertuples()}
    by_id = scenes.set_index("scene")
    rows = []
    for p in pairs.to_dict("records"):
        for role in ("reference", "secondary"):
            if p[role] not in by_id.index:
                raise ValueError(f"{p['path']}: its {role} scene {p[role]} has no {p[role]}_C2.tif in the S1 "
                                 f"folder; add the scene or remove the pair")
        ref, sec = by_id.loc[p["reference"]], by_id.loc[p["secondary"]]
        expected = (f"R{ref['relative_orbit']:03d}_{ref['datetime'][:10].replace('-', '')}_"
                    f"{sec['datetime'][:10].replace('-', '')}")
        if (first_slice[p["reference"]], first_slice[p["secondary"]]) not in consecutive or expected != p["pair"]:
            raise ValueError(
                f"{p['path']}: reference {p['reference']} ({ref['platform']} R{ref['relative_orbit']:03d} "
                f"{ref['datetime'][:10]}) and secondary {p['secondary']} ({sec['platform']} "
                f"R{sec['relative_orbit']:03d} {sec['datetime'][:10]}) are not consecutive acquisitions of one "
                f"platform and relative orbit, or the file is not named {expected}: remove or rename it"
            )
        rows.append({**p, "platform": ref["platform"], "relative_orbit": int(ref["relative_orbit"]),
                     "datetime_ref": ref["datetime"], "datetime_sec": sec["datetime"]})
    return pd.DataFrame(rows, columns=S1_PAIR_COLUMNS)


def scan_s1_seam(folder: str | os.PathLike, cache_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inventory of the Sentinel-1 seam folder: scenes (``<scene>_C2.tif``) and pairs (``<pair>_coh.tif``).

    Scenes (``S1_SCENE_COLUMNS``): scene, platform, relative_orbit (from the absolute orbit in the name,
    checked against the RELATIVE_ORBIT tag), pass (PASS tag), datetime (start time in the name, UTC ISO),
    path, size, checksum, west/south/east/north (raster bounds in EPSG:4326). The checksum is the sha256 of
    the file when it is smaller than 64 MiB, else of its first 64 MiB followed by its size (``file_checksum``).
    Pairs (``S1_PAIR_COLUMNS``): pair, platform, relative_orbit, reference, secondary (REFERENCE/SECONDARY
    tags), datetime_ref, datetime_sec, path, size, checksum, bounds. A pair whose scenes are missing or are
    not consecutive acquisitions of one platform and relative orbit, or whose id does not match them,
    raises ValueError naming the file. Tags are read only for new or changed files (cache as ``scan_s2``).
    """
    records = _scan(folder, cache_path, "S1", _s1_kind, _file_stamp, lambda p, k: _read_s1_record(p, k))
    scenes = pd.DataFrame([r for r in records if "scene" in r], columns=S1_SCENE_COLUMNS)
    scenes = scenes.sort_values(["datetime", "scene"]).reset_index(drop=True)
    pairs = pd.DataFrame([r for r in records if "pair" in r], columns=S1_PAIR_COLUMNS)
    pairs = _validate_pairs(pairs, scenes).sort_values(["datetime_ref", "pair"]).reset_index(drop=True)
    return scenes, pairs


def _passes(scenes: pd.DataFrame) -> pd.DataFrame:
    """One row per pass: platform, relative_orbit, time (its first slice's start) and slices (scene ids in time
    order). A platform images a relative orbit once a day at most, so the scenes of one platform, track and
    day are the consecutive slices of one pass."""
    df = scenes.assign(time=pd.to_datetime(scenes["datetime"], utc=True))
    df = df.assign(day=df["time"].dt.strftime("%Y%m%d")).sort_values(["time", "scene"])
    rows = [{"platform": platform, "relative_orbit": int(orbit), "time": group["time"].iloc[0],
             "datetime": group["datetime"].iloc[0], "slices": list(group["scene"])}
            for (platform, orbit, _), group in df.groupby(["platform", "relative_orbit", "day"], sort=True)]
    return pd.DataFrame(rows, columns=["platform", "relative_orbit", "time", "datetime", "slices"])


def _consecutive(scenes: pd.DataFrame) -> pd.DataFrame:
    """Every pair of passes that follow each other on one platform and relative orbit, named by their first
    slices (a pass cut into several slices is one acquisition)."""
    rows = []
    for (platform, orbit), group in _passes(scenes).groupby(["platform", "relative_orbit"], sort=True):
        group = group.sort_values("time")
        for ref, sec in zip(group.itertuples(), group.iloc[1:].itertuples()):
            rows.append({"pair": f"R{int(orbit):03d}_{ref.time:%Y%m%d}_{sec.time:%Y%m%d}", "platform": platform,
                         "relative_orbit": int(orbit), "reference": ref.slices[0], "secondary": sec.slices[0],
                         "datetime_ref": ref.datetime, "datetime_sec": sec.datetime,
                         "days": (sec.time - ref.time).total_seconds() / 86400.0})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def expected_pairs(scenes: pd.DataFrame, max_days: float = 12.5) -> pd.DataFrame:
    """Consecutive same-platform, same-relative-orbit pairs at most ``max_days`` apart (``PAIR_COLUMNS``,
    pair id ``R032_YYYYMMDD_YYYYMMDD``), e.g. to check that every expected coherence pair is present."""
    pairs = _consecutive(scenes)
    return pairs[pairs["days"] <= max_days].sort_values(["datetime_ref", "pair"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------- table helpers


def _month_day(text: str, key: str) -> int:
    m = re.fullmatch(r"(\d{2})-(\d{2})", str(text))
    if m is None or not (1 <= int(m[1]) <= 12 and 1 <= int(m[2]) <= 31):
        raise ValueError(f"season {key} {text!r}: write it as MM-DD, e.g. \"05-06\" (config season.{key})")
    return int(m[1]) * 100 + int(m[2])


def in_season(df: pd.DataFrame, start_mmdd: str, end_mmdd: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows whose dates fall between ``start_mmdd`` and ``end_mmdd`` (inclusive, MM-DD, any year; a start
    after the end wraps over the new year). ``columns`` default: ``datetime``, or both ``datetime_ref`` and
    ``datetime_sec`` for pairs (both must be in season)."""
    start, end = _month_day(start_mmdd, "start"), _month_day(end_mmdd, "end")
    if columns is None:
        columns = ["datetime"] if "datetime" in df.columns else ["datetime_ref", "datetime_sec"]
    keep = pd.Series(True, index=df.index)
    for col in columns:
        t = pd.to_datetime(df[col], utc=True)
        md = t.dt.month * 100 + t.dt.day
        keep &= (md >= start) & (md <= end) if start <= end else (md >= start) | (md <= end)
    return df[keep]


def scenes_for_tile(df: pd.DataFrame, tile: shapely.Geometry, crs: str, min_area: float) -> list[str]:
    """Ids (``scene`` or ``pair`` column) whose footprint overlaps ``tile`` (a polygon in ``crs``) by at least
    ``min_area`` (one pixel, in the workflow): products whose outline only touches the tile do not count."""
    return scenes_for_tiles(df, [tile], crs, min_area)[0]


def scenes_for_tiles(df: pd.DataFrame, tiles: Sequence[shapely.Geometry], crs: str, min_area: float
                     ) -> list[list[str]]:
    """``scenes_for_tile`` of every tile of ``tiles`` at once (sorted ids per tile, in the tiles' order).

    The footprints are reprojected once and indexed in an STRtree, so the cost grows with the number of
    (tile, footprint) pairs whose boxes meet, not with tiles x footprints: the plan of a province (thousands
    of tiles, hundreds of products) takes a fraction of a second instead of minutes."""
    key = "scene" if "scene" in df.columns else "pair"
    out: list[list[str]] = [[] for _ in tiles]
    if df.empty or len(tiles) == 0:
        return out
    footprints = footprints_in_crs(df["footprint"], crs)
    tile_geoms = np.asarray(tiles, dtype=object)
    tile_idx, fp_idx = shapely.STRtree(footprints).query(tile_geoms, predicate="intersects")
    # a tile inside a footprint overlaps it by its whole area; only tiles on a footprint's edge are intersected
    shapely.prepare(footprints)
    inside = shapely.contains_properly(footprints[fp_idx], tile_geoms[tile_idx])
    overlap = shapely.area(tile_geoms[tile_idx])
    edge = ~inside
    overlap[edge] = shapely.area(shapely.intersection(tile_geoms[tile_idx[edge]], footprints[fp_idx[edge]]))
    ids = df[key].to_numpy(dtype=object)
    for t, f in zip(tile_idx[overlap >= min_area], fp_idx[overlap >= min_area]):
        out[t].append(ids[f])
    return [sorted(v) for v in out]


def write_inventory(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write an inventory table as CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
