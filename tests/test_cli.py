"""The cropflow command line: every stage a rule calls exists, config merging, errors reported by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import shapely

from cropflow import cli

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_called_by_a_rule_is_a_command():
    called = set()
    for smk in (REPO / "rules").glob("*.smk"):
        called |= set(re.findall(r"python -m cropflow ([a-z0-9-]+)", smk.read_text()))
    assert called, "rules call cropflow stages"
    assert called <= set(cli.COMMANDS), called - set(cli.COMMANDS)


def test_configs_merge_like_snakemake_configfiles():
    base = {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]}
    merged = cli._merge(base, {"nested": {"y": 3}, "list": [3]})
    assert merged == {"a": 1, "nested": {"x": 1, "y": 3}, "list": [3]}
    assert base["nested"]["y"] == 2


def test_grid_command_writes_grid_and_tiles(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.box(320000, 5330000, 340000, 5350000)], crs="EPSG:32652").to_file(
        tmp_path / "aoi.geojson")
    rc = cli.main(["grid", "--aoi", str(tmp_path / "aoi.geojson"), "--crs", "EPSG:32652", "--resolution", "10",
                   "--tile-size", "10000", "--out-grid", str(tmp_path / "grid.json"),
                   "--out-tiles", str(tmp_path / "tiles.gpkg")])
    assert rc == 0
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid == {"crs": "EPSG:32652", "resolution": 10.0, "bounds": [320000.0, 5330000.0, 340000.0, 5350000.0]}
    assert len(gpd.read_file(tmp_path / "tiles.gpkg")) == 4


def test_bad_input_is_reported_with_the_file_and_exit_code_1(tmp_path, caplog):
    rc = cli.main(["s2-selection", "--inputs", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o.csv")])
    assert rc == 1
    assert "missing.json" in caplog.text
    assert not (tmp_path / "o.csv").exists()


def test_s1_extract_writes_the_safe_and_rejects_a_zip_named_after_another_product(tmp_path, caplog):
    zips = list((REPO / "resources" / "s1").glob("*.zip"))
    name = zips[0].name.removesuffix(".zip")
    out = tmp_path / "safe" / f"{name}.SAFE"
    assert cli.main(["s1-extract", "--product", str(zips[0]), "--out", str(out)]) == 0
    assert (out / "manifest.safe").is_file()
    wrong = tmp_path / "safe" / "S1B_IW_SLC__1SDV_20210413T052622_20210413T052650_026444_032297_0000.SAFE"
    assert cli.main(["s1-extract", "--product", str(zips[0]), "--out", str(wrong)]) == 1
    assert "rename the zip" in caplog.text and not wrong.exists()


def test_shipped_config_overlays_validate_and_the_zoo_enables_every_model():
    import yaml
    from snakemake.utils import validate

    from cropflow.models import MODEL_MODULES, resolve_params

    def load(name):
        return yaml.safe_load((REPO / "config" / name).read_text())

    for overlays in (["demo.yaml"], ["demo.yaml", "zoo.yaml"]):
        config = load("config.yaml")
        for name in overlays:
            config = cli._merge(config, load(name))
        validate(config, str(REPO / "config" / "schema.yaml"))
        for model in config["models"]["enabled"]:
            resolve_params(model, config["models"][model])
    assert sorted(config["models"]["enabled"]) == sorted(MODEL_MODULES)
    assert config["samples"]["patches"] and config["fusion"]["enabled"]
