"""The inventory report: one row per product found, used or skipped with the stage and the reason."""

from __future__ import annotations

import json

import pandas as pd

from cropflow.inventory_report import REPORT_COLUMNS, inventory_report, layer_table

UBU = "S2A_MSIL2A_20230512T023551_N0509_R089_T52UBU_20230512T060000"
UCU = "S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T060000"
CLOUDY = "S2A_MSIL2A_20230522T023551_N0509_R089_T52UCU_20230522T060000"
OLD = "S2A_MSIL2A_20230512T023551_N0400_R089_T52UCU_20230512T050000"
SLICE7 = "S1A_IW_SLC__1SDV_20230512T093010_20230512T093037_048330_05D2C4_ABCD"
SLICE8 = "S1A_IW_SLC__1SDV_20230512T093035_20230512T093102_048330_05D2C4_BCDE"
LATE = "S1A_IW_SLC__1SDV_20231012T093010_20231012T093037_051830_0631C4_CDEF"


def sidecar(layer: str, products: list[str], used: bool, reason: str | None, tiles: dict) -> dict:
    return {"layer": layer, "datetime": f"{layer[4:8]}-{layer[8:10]}-{layer[10:12]}T02:35:51+00:00",
            "overlap": "least_cloudy", "cloud_fraction": 0.3 if not used else 0.01, "valid_fraction": 0.7,
            "coverage": 1.0, "used": used, "reason": reason, "tiles": tiles,
            "products": [{"scene": p, "mgrs_tile": p.split("_")[5][1:]} for p in products]}


def test_every_product_is_one_row_with_its_status_stage_and_reason():
    s2 = pd.DataFrame({"scene": [UBU, UCU, CLOUDY], "datetime": ["2023-05-12T02:35:51+00:00"] * 2
                       + ["2023-05-22T02:35:51+00:00"], "relative_orbit": [89] * 3,
                       "mgrs_tile": ["52UBU", "52UCU", "52UCU"],
                       "layer": ["S2A_20230512_R089"] * 2 + ["S2A_20230522_R089"]})
    s1 = pd.DataFrame({"scene": [SLICE7, SLICE8, LATE], "start": ["2023-05-12T09:30:10"] * 3,
                       "datetime": ["2023-05-12T09:30:10", "2023-05-12T09:30:35", "2023-10-12T09:30:10"],
                       "relative_orbit": [32] * 3, "slice_number": [7, 8, 7], "in_season": [True, True, False]})
    acquisitions = pd.DataFrame({"acq": ["S1A_20230512_R032_05D2C4"], "slices": [json.dumps([SLICE7, SLICE8])]})
    skipped = pd.DataFrame([
        {"sensor": "S2", "scene": OLD, "path": "/d/x", "level": "", "stage": "inventory",
         "reason": "processing baseline 04.00 is older than 05.09"},
        {"sensor": "S1", "scene": LATE, "path": "/d/y", "level": "", "stage": "inventory",
         "reason": "acquired 2023-10-12, outside the season 05-06..09-27"}])
    sidecars = [
        sidecar("S2A_20230512_R089", [UBU, UCU], True, None,
                {"A": {"used": True, "reason": None}, "B": {"used": False, "reason": "valid fraction 0.1 < 0.5"}}),
        sidecar("S2A_20230522_R089", [CLOUDY], False, "cloud fraction 0.30 > 0.08", {}),
    ]
    report = inventory_report(s2, s1, acquisitions, skipped, sidecars)
    assert list(report.columns) == REPORT_COLUMNS
    assert len(report) == 7 and report["product"].is_unique
    rows = report.set_index("product")
    assert rows.loc[UBU, "status"] == "used" and rows.loc[UBU, "reason"] == "not stacked for tile B: valid fraction 0.1 < 0.5"
    assert (rows.loc[CLOUDY, "status"], rows.loc[CLOUDY, "stage"]) == ("skipped", "selection")
    assert rows.loc[CLOUDY, "reason"] == "layer S2A_20230522_R089: cloud fraction 0.30 > 0.08"
    assert (rows.loc[OLD, "status"], rows.loc[OLD, "stage"], rows.loc[OLD, "level"]) == ("skipped", "inventory", "L2A")
    assert (rows.loc[OLD, "date"], rows.loc[OLD, "tile_or_slice"]) == ("2023-05-12", "52UCU")
    assert rows.loc[SLICE8, "layer"] == "S1A_20230512_R032_05D2C4" and rows.loc[SLICE8, "tile_or_slice"] == "slice 8"
    assert rows.loc[LATE, "status"] == "skipped" and "outside the season" in rows.loc[LATE, "reason"]


def test_layer_table_names_the_tiles_that_did_not_stack_a_layer():
    table = layer_table([sidecar("S2A_20230512_R089", [UCU, UBU], True, None,
                                 {"A": {"used": True, "reason": None}, "B": {"used": False, "reason": "too few"}})])
    row = table.iloc[0]
    assert json.loads(row["mgrs_tiles"]) == ["52UBU", "52UCU"] and json.loads(row["products"]) == [UCU, UBU]
    assert json.loads(row["tiles_not_used"]) == {"B": "too few"}
