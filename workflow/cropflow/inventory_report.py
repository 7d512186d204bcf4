"""The inventory report: every product found in the inputs, used or skipped, with the stage and the reason.

Built after the S2 layers ran, from the inventory tables (products that get jobs, products left out before any
job with their reason) and the layer sidecars (the cloud and valid-fraction decisions taken per same-date
layer). One row per product, so that nothing in ``inputs.s1``/``inputs.s2`` disappears without a trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import pandas as pd

REPORT_COLUMNS = ["sensor", "product", "level", "date", "orbit", "tile_or_slice", "layer", "status", "stage",
                  "reason"]
LAYER_TABLE_COLUMNS = ["layer", "datetime", "products", "mgrs_tiles", "overlap", "cloud_fraction", "valid_fraction",
                       "coverage", "used", "reason", "tiles_not_used"]

_S2_NAME_RE = re.compile(r"^S2[A-D]_MSIL(?P<level>1C|2A)_(?P<date>\d{8})T\d{6}_N\d{4}_R(?P<orbit>\d{3})_T(?P<tile>\w{5})_")
_S1_NAME_RE = re.compile(r"^S1[A-D]_IW_SLC__1S[DS][VH]_(?P<date>\d{8})T\d{6}_\d{8}T\d{6}_(?P<abs>\d{6})_")


def _from_name(sensor: str, name: str) -> dict:
    """Level, date, orbit and MGRS tile parsed from a product name (empty when it does not parse)."""
    if sensor == "S2":
        m = _S2_NAME_RE.match(name)
        if m:
            return {"level": f"L{m['level']}", "date": f"{m['date'][:4]}-{m['date'][4:6]}-{m['date'][6:]}",
                    "orbit": int(m["orbit"]), "tile_or_slice": m["tile"]}
    else:
        m = _S1_NAME_RE.match(name)
        if m:
            return {"date": f"{m['date'][:4]}-{m['date'][4:6]}-{m['date'][6:]}"}
    return {}


def _s2_status(sidecar: Mapping | None) -> tuple[str, str, str]:
    """(status, stage, reason) of a product from its layer's sidecar."""
    if sidecar is None:
        return "skipped", "selection", "its layer was not built"
    if not sidecar.get("used", False):
        return "skipped", "selection", f"layer {sidecar.get('layer')}: {sidecar.get('reason')}"
    off = {t: r["reason"] for t, r in sidecar.get("tiles", {}).items() if not r.get("used", True)}
    return "used", "selection", "; ".join(f"not stacked for tile {t}: {r}" for t, r in off.items())


def inventory_report(s2_products: pd.DataFrame, s1_scenes: pd.DataFrame, s1_acquisitions: pd.DataFrame,
                     skipped: pd.DataFrame, layer_sidecars: Sequence[Mapping]) -> pd.DataFrame:
    """One row per product (``REPORT_COLUMNS``), sorted by sensor, date and product.

    ``s2_products``: the S2 products that got jobs (column ``layer``); their status follows their layer's
    sidecar (an unused layer skips all its products at stage "selection"; tiles that did not stack a used
    layer are named in the reason). ``s1_scenes``: the S1 table with ``in_season`` (the out-of-season ones
    are in ``skipped``); each in-season scene is used in its acquisition. ``skipped``: the inventory's
    left-out products (``plan.SKIPPED_COLUMNS``).
    """
    by_layer = {m.get("layer"): m for m in layer_sidecars}
    rows = []
    for r in s2_products.to_dict("records"):
        status, stage, reason = _s2_status(by_layer.get(r.get("layer")))
        rows.append({"sensor": "S2", "product": r["scene"], "level": r.get("level") or "L2A",
                     "date": str(r["datetime"])[:10], "orbit": int(r["relative_orbit"]),
                     "tile_or_slice": r.get("mgrs_tile", ""), "layer": r.get("layer", ""), "status": status,
                     "stage": stage, "reason": reason})
    acq_of = {s: a for a, slices in zip(s1_acquisitions.get("acq", []), s1_acquisitions.get("slices", []))
              for s in json.loads(slices)}
    in_season = s1_scenes[s1_scenes["in_season"].astype(bool)] if "in_season" in s1_scenes.columns else s1_scenes
    for r in in_season.to_dict("records"):
        number = r.get("slice_number")
        rows.append({"sensor": "S1", "product": r["scene"], "level": "SLC" if "start" in r else "seam",
                     "date": str(r["datetime"])[:10], "orbit": int(r["relative_orbit"]),
                     "tile_or_slice": "" if number is None or number != number else f"slice {int(number)}",
                     "layer": acq_of.get(r["scene"], ""), "status": "used", "stage": "", "reason": ""})
    for r in skipped.to_dict("records"):
        parsed = _from_name(r["sensor"], str(r["scene"]))
        level = r.get("level") if isinstance(r.get("level"), str) and r.get("level") else parsed.get("level", "")
        rows.append({"sensor": r["sensor"], "product": r["scene"], "level": level, "date": parsed.get("date", ""),
                     "orbit": parsed.get("orbit", ""), "tile_or_slice": parsed.get("tile_or_slice", ""), "layer": "",
                     "status": "skipped", "stage": r["stage"], "reason": r["reason"]})
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    return report.sort_values(["sensor", "date", "product"], kind="stable").reset_index(drop=True)


def layer_table(layer_sidecars: Sequence[Mapping]) -> pd.DataFrame:
    """One row per S2 layer (``LAYER_TABLE_COLUMNS``): its products and MGRS tiles, overlap rule, AOI
    fractions, decision, and the project tiles that did not stack it (JSON {tile: reason})."""
    rows = []
    for m in layer_sidecars:
        rows.append({"layer": m["layer"], "datetime": m["datetime"],
                     "products": json.dumps([p["scene"] for p in m["products"]]),
                     "mgrs_tiles": json.dumps(sorted({p.get("mgrs_tile") or "" for p in m["products"]})),
                     "overlap": m["overlap"], "cloud_fraction": m["cloud_fraction"],
                     "valid_fraction": m["valid_fraction"], "coverage": m["coverage"], "used": m["used"],
                     "reason": m["reason"],
                     "tiles_not_used": json.dumps({t: r["reason"] for t, r in m.get("tiles", {}).items()
                                                   if not r.get("used", True)})})
    table = pd.DataFrame(rows, columns=LAYER_TABLE_COLUMNS)
    return table.sort_values(["datetime", "layer"]).reset_index(drop=True)
