"""Map comparison: change codes and transitions of a synthetic pair, windowed, and a raster on another grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from cropflow import cli
from cropflow.changes import change_codes, compare_maps, transitions
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.raster import write_raster

LEGEND = Path(__file__).resolve().parents[1] / "resources" / "legend.yaml"

GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 320080.0, 5330050.0))   # 8 x 5 pixels


def _pair(tmp_path):
    """Map a: maize (1) west half, soybean (2) east half. Map b: the soybean in the first two rows becomes
    maize (8 px), the maize of the last row becomes wheat (4 px), one pixel is nodata in b, one in a."""
    a = np.ones((5, 8), dtype=np.uint8)
    a[:, 4:] = 2
    b = a.copy()
    b[:2, 4:] = 1
    b[4, :4] = 3
    b[2, 0] = 0
    a[3, 7] = 0
    write_raster(tmp_path / "a.tif", a, GRID, nodata=0)
    write_raster(tmp_path / "b.tif", b, GRID, nodata=0)
    return a, b


def test_change_codes_and_transitions():
    a = np.array([[1, 2, 0], [3, 3, 1]], dtype=np.uint8)
    b = np.array([[1, 1, 2], [0, 3, 2]], dtype=np.uint8)
    assert change_codes(a, b).tolist() == [[1, 2, 0], [0, 1, 2]]
    assert transitions(a, b, [1, 2, 3]).tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_synthetic_pair_has_its_known_transitions_in_any_window(tmp_path):
    a, b = _pair(tmp_path)
    legend = Legend.load(str(LEGEND))
    for rows in (1, 2, 100):
        comp = compare_maps(tmp_path / "a.tif", tmp_path / "b.tif", GRID, legend, tmp_path / "c.tif",
                            window_rows=rows)
        assert comp.counts[0, 0] == 15 and comp.counts[1, 0] == 8 and comp.counts[0, 2] == 4
        assert comp.counts[1, 1] == 11 and comp.compared == 38 and comp.changed == 12
        assert comp.only_a == 1 and comp.only_b == 1 and comp.pixel_ha == pytest.approx(0.01)
    with rasterio.open(tmp_path / "c.tif") as src:
        change = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and src.transform == GRID.transform
    assert change.tolist() == change_codes(a, b).tolist()
    assert (change == 2).sum() == 12 and (change == 0).sum() == 2


def test_change_map_command_writes_named_transitions_and_share(tmp_path):
    _pair(tmp_path)
    (tmp_path / "grid.json").write_text(json.dumps(GRID.to_dict()))
    out = tmp_path / "changes" / "y2022_vs_y2023.tif"
    assert cli.main(["change-map", "--a", str(tmp_path / "a.tif"), "--b", str(tmp_path / "b.tif"),
                     "--grid", str(tmp_path / "grid.json"), "--legend", str(LEGEND), "--labels", "y2022", "y2023",
                     "--out", str(out), "--out-csv", str(out.with_name("y2022_vs_y2023_transitions.csv")),
                     "--out-json", str(out.with_suffix(".json"))]) == 0
    table = pd.read_csv(out.with_name("y2022_vs_y2023_transitions.csv"))
    assert len(table) == 49 and table["pixels"].sum() == 38
    row = table[(table["from_class"] == "soybean") & (table["to_class"] == "maize")].iloc[0]
    assert row["pixels"] == 8 and row["hectares"] == pytest.approx(0.08) and row["changed"]
    assert table.loc[table["changed"], "pixels"].sum() == 12
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["changed_share"] == pytest.approx(12 / 38, abs=1e-6) and summary["a"] == "y2022"


def test_a_raster_on_another_grid_fails_naming_it(tmp_path, caplog):
    _pair(tmp_path)
    shifted = ProjectGrid("EPSG:32652", 10.0, (320010.0, 5330000.0, 320090.0, 5330050.0))
    write_raster(tmp_path / "other.tif", np.ones(shifted.shape, dtype=np.uint8), shifted, nodata=0)
    with pytest.raises(ValueError, match="other.tif is not on the project grid.*gdalwarp"):
        compare_maps(tmp_path / "a.tif", tmp_path / "other.tif", GRID, Legend.load(str(LEGEND)), tmp_path / "c.tif")
    assert not (tmp_path / "c.tif").exists()
    (tmp_path / "grid.json").write_text(json.dumps(GRID.to_dict()))
    assert cli.main(["change-map", "--a", str(tmp_path / "other.tif"), "--b", str(tmp_path / "b.tif"),
                     "--grid", str(tmp_path / "grid.json"), "--legend", str(LEGEND), "--out", str(tmp_path / "d.tif"),
                     "--out-csv", str(tmp_path / "d.csv"), "--out-json", str(tmp_path / "d.json")]) == 1
    assert "other.tif is not on the project grid" in caplog.text
