"""Acquisition layers: grouping the products of one datatake and merging them onto the project grid.

A real county is never one product: one Sentinel-2 acquisition date arrives as several MGRS tiles of one
datatake, one Sentinel-1 pass as several consecutive slices. A *layer* is one acquisition of one sensor
over the AOI, all of its products merged on the project grid with a documented overlap rule, plus a JSON
sidecar naming the products that made it.

Sentinel-2 (``s2.mosaic.overlap``): a pixel valid in exactly one product takes that product's value; where
several products are valid, ``least_cloudy`` takes the product with the lowest cloud fraction over the AOI
(ties: newest processing baseline, then product name), ``mean`` averages the valid values band by band.
The layer's quality code (band ``QA``) is the best class among the products (clear > cloud > other invalid
> no data). Selection is decided per layer: its cloud fraction over the AOI counts each AOI pixel once, and
a project tile where the layer's valid share of the tile's AOI pixels is below ``s2.min_valid_fraction``
does not stack the layer.

Sentinel-1 (``s1.mosaic.overlap``): a pixel is valid where all bands are finite; where several slices
are valid, ``mean`` averages them and ``first`` takes the earlier slice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.raster import RasterWriter, band_names, raster_tags, read_on_grid, row_windows
from cropflow.s2 import QA_CLEAR, QA_CLOUD, QA_INVALID, QA_NODATA, _unused_reason

log = logging.getLogger(__name__)

S2_LAYER_COLUMNS = ["layer", "platform", "relative_orbit", "datetime", "products", "mgrs_tiles", "footprint"]
S1_ACQ_COLUMNS = ["acq", "platform", "relative_orbit", "pass", "datatake", "datetime", "slices", "footprint"]
S2_OVERLAP_RULES = ("least_cloudy", "mean")
S1_OVERLAP_RULES = ("mean", "first")
#: rank of each QA code when products overlap: clear beats cloud beats other invalid beats no data
_QA_RANK = np.array([0, 3, 2, 1], dtype=np.int8)
_RANK_QA = np.array([QA_NODATA, QA_INVALID, QA_CLOUD, QA_CLEAR], dtype=np.uint8)
#: contributor code of a pixel: none valid / mean of several (``merge_valid``)
NO_SOURCE, SEVERAL = -1, -2

_S2_NAME_RE = re.compile(r"^(?P<platform>S2[A-D])_MSIL\w{2}_(?P<sensing>\d{8}T\d{6})_N\d{4}_R(?P<orbit>\d{3})_"
                         r"T(?P<tile>\d{2}[A-Z]{3})_\d{8}T\d{6}")
_S1_NAME_RE = re.compile(r"^(?P<platform>S1[A-D])_IW_SLC__1S[DS][VH]_(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_"
                         r"\d{6}_(?P<datatake>[0-9A-F]{6})_[0-9A-F]{4}$")
#: consecutive slices of one datatake follow each other within this many seconds (they touch or overlap)
SLICE_GAP_S = 5.0
#: products of one datatake id further apart than this are different passes (a renamed or copied product)
PASS_GAP_S = 1800.0


# ------------------------------------------------------------------------------------------------ grouping


def s2_layer_id(platform: str, sensing: pd.Timestamp, relative_orbit: int) -> str:
    """``S2A_20230512_R089``: platform, sensing date, relative orbit."""
    return f"{platform}_{sensing:%Y%m%d}_R{int(relative_orbit):03d}"


def s1_acquisition_id(platform: str, start: pd.Timestamp, relative_orbit: int, datatake: str) -> str:
    """``S1A_20230512_R032_05D2C4``: platform, start date, relative orbit, datatake id."""
    return f"{platform}_{start:%Y%m%d}_R{int(relative_orbit):03d}_{datatake}"


def _union_wkt(wkts: Sequence[str]) -> str:
    return shapely.to_wkt(shapely.union_all(shapely.from_wkt(np.asarray(list(wkts), dtype=object))),
                          rounding_precision=8)


def group_s2_layers(products: pd.DataFrame) -> pd.DataFrame:
    """One row per same-date layer (``S2_LAYER_COLUMNS``) of the S2 products table (``inventory.scan_s2``).

    Products of one datatake (platform, relative orbit and the sensing time in the product name, which is
    the datatake's sensing start and so the same for every MGRS tile of it) form one layer; ``products``
    and ``mgrs_tiles`` are JSON lists, ``footprint`` the union of the products' footprints (WKT, EPSG:4326).
    Two datatakes that would get one layer id (same platform, orbit and day) raise ValueError naming them.
    """
    if products.empty:
        return pd.DataFrame(columns=S2_LAYER_COLUMNS)
    sensing = [(_S2_NAME_RE.match(s) or {}) for s in products["scene"]]
    stamps = [pd.Timestamp(m["sensing"], tz="UTC") if m else pd.Timestamp(t) for m, t in
              zip(sensing, products["datetime"])]
    df = products.assign(_sensing=stamps)
    rows = []
    for (platform, orbit, stamp), group in df.groupby(["platform", "relative_orbit", "_sensing"], sort=True):
        group = group.sort_values("scene")
        rows.append({"layer": s2_layer_id(platform, stamp, orbit), "platform": platform,
                     "relative_orbit": int(orbit), "datetime": min(group["datetime"]),
                     "products": json.dumps(list(group["scene"])),
                     "mgrs_tiles": json.dumps(sorted(set(group["mgrs_tile"]))),
                     "footprint": _union_wkt(group["footprint"])})
    layers = pd.DataFrame(rows, columns=S2_LAYER_COLUMNS)
    clash = layers[layers["layer"].duplicated(keep=False)]
    if not clash.empty:
        raise ValueError(f"layer {clash['layer'].iloc[0]}: products of two datatakes of one platform, orbit and day "
                         f"({'; '.join(clash['products'])}); remove the duplicate acquisition from inputs.s2")
    return layers.sort_values(["datetime", "layer"]).reset_index(drop=True)


def _time_gaps(names: Sequence[str]) -> list[tuple[float, str, str]]:
    """(seconds, slice, next slice) where a slice starts more than ``SLICE_GAP_S`` after the previous one
    stops (times from the product names, which are in time order)."""
    times = [_S1_NAME_RE.match(n) for n in names]
    out = []
    for a, b, na, nb in zip(times, times[1:], names, names[1:]):
        gap = (pd.Timestamp(b["start"]) - pd.Timestamp(a["stop"])).total_seconds()
        if gap > SLICE_GAP_S:
            out.append((gap, na, nb))
    return out


def _missing_slices(numbers: Sequence[float]) -> list[int]:
    present = sorted(int(n) for n in numbers if n is not None and n == n)
    if len(present) < 2:
        return []
    return [k for k in range(present[0], present[-1] + 1) if k not in present]


def group_s1_acquisitions(scenes: pd.DataFrame) -> pd.DataFrame:
    """One row per acquisition (``S1_ACQ_COLUMNS``) of an S1 scene table (SLC or seam scenes).

    The slices of one pass (same platform, relative orbit, pass and datatake id from the product name, and
    less than ``PASS_GAP_S`` apart) form one acquisition; ``slices`` is their JSON list in time order, ``datetime`` the earliest start and
    ``footprint`` the union of the slice footprints. A gap in the slice numbers (``slice_number`` column,
    from the manifests) or, without them, a slice starting more than ``SLICE_GAP_S`` after the previous
    one stops (times in the names) is logged as a warning: the acquisition is made of the slices present,
    and the missing slice's area has no S1 data on that date.
    """
    if scenes.empty:
        return pd.DataFrame(columns=S1_ACQ_COLUMNS)
    time_col = "start" if "start" in scenes.columns else "datetime"
    parsed = [_S1_NAME_RE.match(s) for s in scenes["scene"]]
    bad = [s for s, m in zip(scenes["scene"], parsed) if m is None]
    if bad:
        raise ValueError(f"S1 product {bad[0]} has no datatake id in its name (S1x_IW_SLC__1SDV_<start>_<stop>_"
                         f"<orbit>_<datatake>_<crc>): rename it to its ESA product name")
    df = scenes.assign(_datatake=[m["datatake"] for m in parsed], _t=pd.to_datetime(scenes[time_col], utc=True),
                       _stop=[pd.Timestamp(m["stop"], tz="UTC") for m in parsed])
    if "pass" not in df.columns:
        df = df.assign(**{"pass": ""})
    df = df.sort_values("_t")
    # a new pass where a product starts long after the previous one of the same datatake id stopped
    key = ["platform", "relative_orbit", "pass", "_datatake"]
    gap = (df["_t"] - df.groupby(key)["_stop"].shift()).dt.total_seconds()
    df = df.assign(_run=(gap > PASS_GAP_S).astype(int).groupby([df[k] for k in key]).cumsum())
    rows = []
    for (platform, orbit, direction, datatake, _), group in df.groupby([*key, "_run"], sort=True):
        acq = s1_acquisition_id(platform, group["_t"].iloc[0], orbit, datatake)
        day = f"{group['_t'].iloc[0]:%Y-%m-%d}"
        missing = _missing_slices(list(group["slice_number"])) if "slice_number" in group.columns else []
        if missing:
            log.warning("acquisition %s (datatake %s): slices %s present, %s missing: the acquisition is made of "
                        "the slices present and the missing slices' area has no S1 data on %s", acq, datatake,
                        [int(n) for n in group["slice_number"]], missing, day)
        else:
            for gap, before, after in _time_gaps(list(group["scene"])):
                log.warning("acquisition %s (datatake %s): %.0f s between slices %s and %s, a slice is missing: the "
                            "acquisition is made of the slices present and the gap has no S1 data on %s", acq,
                            datatake, gap, before, after, day)
        rows.append({"acq": acq, "platform": platform, "relative_orbit": int(orbit), "pass": direction,
                     "datatake": datatake, "datetime": group[time_col].iloc[0],
                     "slices": json.dumps(list(group["scene"])), "footprint": _union_wkt(group["footprint"])})
    acqs = pd.DataFrame(rows, columns=S1_ACQ_COLUMNS)
    return acqs.sort_values(["datetime", "acq"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------- merging


def merge_valid(values: np.ndarray, valid: np.ndarray, priority: Sequence[int], rule: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Merge P co-registered products: ``values`` (P, C, y, x), ``valid`` (P, y, x) bool.

    A pixel valid in one product takes that product's values. Valid in several: rule ``first`` takes the
    product that comes first in ``priority`` (a permutation of range(P)), ``least_cloudy`` is ``first``
    with the priority ordered by cloud fraction, ``mean`` averages the valid products band by band. Valid
    in none: NaN. Returns ((C, y, x) float32, source (y, x) int16: the contributing product index,
    ``NO_SOURCE`` (-1) or ``SEVERAL`` (-2, a mean)).
    """
    if rule not in ("first", "least_cloudy", "mean"):
        raise ValueError(f"overlap rule {rule!r}: give first, least_cloudy or mean")
    n = valid.sum(axis=0)
    out = np.full(values.shape[1:], np.nan, dtype=np.float32)
    source = np.full(valid.shape[1:], NO_SOURCE, dtype=np.int16)
    if rule == "mean":
        total = np.where(valid[:, None], values, 0.0).sum(axis=0, dtype=np.float64)
        several = n > 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (total / np.maximum(n, 1)).astype(np.float32)
        out[:, n > 0] = mean[:, n > 0]
        single = n == 1
        source[single] = np.argmax(valid, axis=0)[single]
        source[several] = SEVERAL
        return out, source
    for p in reversed(list(priority)):
        take = valid[p]
        out[:, take] = values[p][:, take]
        source[take] = p
    return out, source


def layer_qa(qa: np.ndarray) -> np.ndarray:
    """The best quality code per pixel among products (P, y, x) of codes 0..3: clear > cloud > other invalid
    > no data."""
    codes = np.clip(np.nan_to_num(qa, nan=QA_NODATA), 0, 3).astype(np.uint8)
    return _RANK_QA[_QA_RANK[codes].max(axis=0)]


def _read_sidecar(tif: str) -> dict:
    path = os.path.splitext(tif)[0] + ".json"
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: the S2 product sidecar is missing; rerun its s2_ingest job") from err


def s2_priority(metas: Sequence[Mapping], names: Sequence[str]) -> list[int]:
    """Product order of ``least_cloudy``: lowest AOI cloud fraction first (unknown last), then the newest
    processing baseline (``N0509`` in the name), then the product name (deterministic)."""
    def key(i: int) -> tuple:
        cloud = metas[i].get("cloud_fraction")
        m = re.search(r"_N(\d{4})_", names[i])
        return (math.inf if cloud is None else float(cloud), -(int(m[1]) if m else 0), names[i])
    return sorted(range(len(names)), key=key)


def _tile_index(tiles: gpd.GeoDataFrame, grid: ProjectGrid) -> np.ndarray:
    """Tile number + 1 of every grid pixel (0 outside every tile)."""
    shapes = [(geom, i + 1) for i, geom in enumerate(tiles.to_crs(grid.crs).geometry)]
    return rasterio.features.rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0,
                                       dtype="int32")


def _write_json(path: str | os.PathLike, doc: Mapping) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def merge_s2_layer(products: Sequence[str], grid: ProjectGrid, aoi_mask: np.ndarray, tiles: gpd.GeoDataFrame,
                   bands: Sequence[str], overlap: str, max_cloud_fraction: float, min_valid_fraction: float,
                   out_tif: str | os.PathLike, out_json: str | os.PathLike, *, layer: str = "",
                   window_rows: int = 512) -> dict:
    """Merge the ingested S2 products of one layer (``results/s2/<scene>.tif`` with bands ``bands`` + ``QA``
    and their JSON sidecars) onto ``grid`` and decide whether the layer is used.

    ``aoi_mask`` is the AOI on ``grid`` (bool, y x). Over it, each pixel counted once: ``coverage`` =
    share of AOI pixels some product covers (QA != 0), ``cloud_fraction`` = share of cloud among the
    covered ones, ``valid_fraction`` = share left clear. The layer is unused (logged, still written) when
    it covers no AOI pixel, its cloud fraction exceeds ``max_cloud_fraction`` or no pixel is valid. Per
    project tile of ``tiles`` the valid share of the tile's AOI pixels is recorded, and the tile does not
    stack the layer when it is below ``min_valid_fraction``. Writes ``out_tif`` (float32, bands + QA, tags
    LAYER, DATETIME, PRODUCTS, OVERLAP) and ``out_json``; returns the sidecar.
    """
    if overlap not in S2_OVERLAP_RULES:
        raise ValueError(f"config s2.mosaic.overlap {overlap!r}: give one of {list(S2_OVERLAP_RULES)}")
    if not products:
        raise ValueError(f"layer {layer}: no product to merge")
    if aoi_mask.shape != grid.shape:
        raise ValueError(f"AOI mask shape {aoi_mask.shape} does not match the grid {grid.shape}")
    products = [str(p) for p in products]
    names = [os.path.basename(p).removesuffix(".tif") for p in products]
    metas = [_read_sidecar(p) for p in products]
    indices = []
    for p in products:
        have = band_names(p)
        missing = [b for b in [*bands, "QA"] if b not in have]
        if missing:
            raise ValueError(f"{p} lacks band(s) {missing} (it has {have}): rerun its s2_ingest job with the current "
                             f"cropflow and config s2.bands")
        indices.append([have.index(b) + 1 for b in [*bands, "QA"]])
    priority = s2_priority(metas, names) if overlap == "least_cloudy" else list(range(len(products)))
    rule = "least_cloudy" if overlap == "least_cloudy" else "mean"
    tile_index = _tile_index(tiles, grid)
    n_tiles = len(tiles)
    inside_t = np.zeros(n_tiles + 1, np.int64)
    valid_t = np.zeros(n_tiles + 1, np.int64)
    pixels = np.zeros(len(products), np.int64)
    in_overlap = np.zeros(len(products), np.int64)
    n_inside = n_covered = n_cloud = n_valid = 0
    datetime_ = min(str(m["datetime"]) for m in metas)
    tags = {"LAYER": layer, "DATETIME": datetime_, "PRODUCTS": json.dumps(names), "OVERLAP": overlap}
    with RasterWriter(out_tif, grid, count=len(bands) + 1, dtype="float32", nodata=float("nan"),
                      band_names=[*bands, "QA"], tags=tags) as writer:
        for win in row_windows(grid, window_rows):
            sub = grid.rows(win.row_off, win.row_off + win.height)
            rows = slice(int(win.row_off), int(win.row_off + win.height))
            data = np.stack([read_on_grid(p, sub, bands=idx) for p, idx in zip(products, indices)])
            values, qa = data[:, :-1], data[:, -1]
            valid = (np.nan_to_num(qa, nan=0) == QA_CLEAR) & np.isfinite(values).all(axis=1)
            merged, source = merge_valid(values, valid, priority, rule)
            qa_layer = layer_qa(qa)
            qa_layer[~np.isfinite(merged).all(axis=0) & (qa_layer == QA_CLEAR)] = QA_INVALID
            inside = aoi_mask[rows]
            n_inside += int(inside.sum())
            n_covered += int((inside & (qa_layer != QA_NODATA)).sum())
            n_cloud += int((inside & (qa_layer == QA_CLOUD)).sum())
            clear = inside & (qa_layer == QA_CLEAR)
            n_valid += int(clear.sum())
            t = tile_index[rows]
            inside_t += np.bincount(t[inside], minlength=n_tiles + 1)
            valid_t += np.bincount(t[clear], minlength=n_tiles + 1)
            several = valid.sum(axis=0) > 1
            for i in range(len(products)):
                pixels[i] += int(((source == i) | ((source == SEVERAL) & valid[i])).sum())
                in_overlap[i] += int((several & valid[i]).sum())
            writer.write(np.concatenate([merged, qa_layer[None].astype(np.float32)]), win)
    coverage = n_covered / n_inside if n_inside else 0.0
    cloud = n_cloud / n_covered if n_covered else math.nan
    reason = _unused_reason(coverage, cloud, n_valid, max_cloud_fraction)
    tile_rows = {}
    for k, tile in enumerate(tiles["tile_id"], start=1):
        fraction = valid_t[k] / inside_t[k] if inside_t[k] else 0.0
        tile_reason = reason
        if tile_reason is None and fraction < min_valid_fraction:
            tile_reason = (f"valid fraction {fraction:.3f} of the tile's AOI pixels < s2.min_valid_fraction "
                           f"{min_valid_fraction:g}")
        tile_rows[tile] = {"valid_fraction": round(float(fraction), 6), "used": tile_reason is None,
                           "reason": tile_reason}
    doc = {
        "layer": layer, "datetime": datetime_, "overlap": overlap,
        "products": [{"scene": m.get("scene", n), "mgrs_tile": m.get("tile"), "cloud_fraction": m.get("cloud_fraction"),
                      "coverage": m.get("coverage"), "pixels": int(px), "pixels_in_overlap": int(ov)}
                     for n, m, px, ov in zip(names, metas, pixels, in_overlap)],
        "cloud_fraction": None if math.isnan(cloud) else cloud, "valid_fraction": n_valid / n_inside if n_inside else 0.0,
        "coverage": coverage, "used": reason is None, "reason": reason, "tiles": tile_rows,
    }
    if reason is not None:
        log.warning("layer %s (%s) is not used: %s", layer, ", ".join(names), reason)
    for tile, row in tile_rows.items():
        if reason is None and not row["used"]:
            log.warning("layer %s is not stacked for tile %s: %s", layer, tile, row["reason"])
    _write_json(out_json, doc)
    return doc


def merge_s1_rasters(paths: Sequence[str], grid: ProjectGrid, overlap: str, out_tif: str | os.PathLike, *,
                     tags: Mapping[str, object] | None = None, window_rows: int = 512) -> dict[str, str]:
    """Merge the S1 rasters of one acquisition (slice C2) or of one pair (slice-pair coherence) on ``grid``.

    ``paths`` are in slice order (earliest first); they must share their band names. A pixel is valid in a
    raster where all its bands are finite; ``overlap`` ``mean`` averages the valid rasters, ``first`` takes
    the earliest. The output's tags are the first raster's, with START_TIME the earliest of the rasters',
    SLICES the file names and ``tags`` on top. Returns the tags written.
    """
    if overlap not in S1_OVERLAP_RULES:
        raise ValueError(f"config s1.mosaic.overlap {overlap!r}: give one of {list(S1_OVERLAP_RULES)}")
    if not paths:
        raise ValueError("no S1 raster to merge")
    names = band_names(paths[0])
    for p in paths[1:]:
        if band_names(p) != names:
            raise ValueError(f"{p} has bands {band_names(p)}, {paths[0]} has {names}: rebuild both with one engine")
    all_tags = [raster_tags(p) for p in paths]
    merged_tags: dict[str, object] = dict(all_tags[0])
    starts = [t["START_TIME"] for t in all_tags if "START_TIME" in t]
    if starts:
        merged_tags["START_TIME"] = min(starts)
    merged_tags["SLICES"] = json.dumps([os.path.basename(p) for p in paths])
    merged_tags["OVERLAP"] = overlap
    merged_tags.update(tags or {})
    with RasterWriter(out_tif, grid, count=len(names), dtype="float32", nodata=float("nan"), band_names=names,
                      tags=merged_tags) as writer:
        for win in row_windows(grid, window_rows):
            sub = grid.rows(win.row_off, win.row_off + win.height)
            values = np.stack([read_on_grid(p, sub) for p in paths])
            valid = np.isfinite(values).all(axis=1)
            merged, _ = merge_valid(values, valid, list(range(len(paths))), overlap)
            writer.write(merged, win)
    return {k: str(v) for k, v in merged_tags.items()}
