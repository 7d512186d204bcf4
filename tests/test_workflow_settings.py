"""The real Snakefile on the 2-tile demo with settings other than the defaults, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml
from test_workflow import AOI_BOUNDS, REPO, TILES, snakemake, write_config

from cropflow.cube import open_cube
from cropflow.sampleset import load_split

pytestmark = pytest.mark.workflow


def test_alternative_settings_run_end_to_end(tmp_path):
    """Seam products (engine preprocessed) cut into two slices per pass, separate time axes per source, KNN gap
    filling, acquisition dates, patches, probabilities, no post-processing, and both tiles in one block
    (grid.block_tiles 2: one stack, labels_tile and samples_tile job for the two)."""
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    config = write_config(tmp_path)
    config["grid"]["block_tiles"] = 2
    config["s1"]["engine"] = "preprocessed"
    config["simulate"].update({"s1_format": "seam", "s1_slices": 2})
    config["stack"].update({"mode": "separate", "gapfill": "knn", "time_axis": "acquisitions"})
    config["samples"].update({"patches": True, "patch_size": 5, "pixels_per_parcel": 5})
    config["inference"]["probabilities"] = True
    config["postprocess"] = {"majority_filter": False, "cropland_mask": False}
    # a patch model beside TempCNN, decision fusion of the two and an in-season table
    config["models"]["enabled"] = ["tempcnn", "cnn3d"]
    config["models"]["cnn3d"] = {"filters": [8, 8, 16], "dense": 32, "epochs": 3, "batch_size": 64, "patience": 2,
                                 "imbalance": "oversample"}
    config["fusion"].update({"enabled": True, "members": ["cnn3d"], "fallback": "tempcnn",
                             "alphas": {"start": 0.4, "stop": 0.9, "step": 0.1}})
    config["inseason"].update({"enabled": True, "model": "tempcnn", "ends": ["07-15", "09-27"]})
    with open(tmp_path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", "config/config.yaml", "--out", "data"],
                   check=True, cwd=tmp_path, env=env, capture_output=True)
    snakemake(tmp_path)
    block = "E0320000N5328000x2"  # the 4 km square of the 2 km lattice holding both tiles
    jobs = {path.name: sorted(p.name for p in path.iterdir()) for path in (tmp_path / "logs").iterdir()}
    assert jobs["stack"] == jobs["labels_tile"] == jobs["samples_tile"] == [f"{block}.log"]
    assert sorted(jobs["infer"]) == ["cnn3d", "tempcnn"]
    assert sorted(p.name for p in (tmp_path / "results" / "labels" / "tiles" / block).glob("E*")) == sorted(
        f"{t}_{k}.tif" for t in TILES for k in ("class", "cropland", "parcel"))
    cube = open_cube(tmp_path / "results" / "cubes" / block / f"{TILES[0]}.zarr")
    assert {"s1", "coh", "s2"} <= set(cube.data_vars)
    acquisitions = pd.read_csv(tmp_path / "results" / "inventory" / "s1_acquisitions.csv")
    assert acquisitions["slices"].map(lambda s: len(json.loads(s))).eq(2).all()
    assert len(list((tmp_path / "results" / "s1" / "acquisitions").glob("*_C2.tif"))) == len(acquisitions)
    assert len(cube["time_s1"]) == len(acquisitions) and np.isfinite(cube["s1"].values).all()
    s2_dates = {str(t)[:10] for t in cube["time_s2"].values}
    selection = pd.read_csv(tmp_path / "results" / "inventory" / "s2_selection.csv")
    assert s2_dates == {d[:10] for d in pd.read_csv(tmp_path / "results" / "inventory" / "s2_scenes.csv")["datetime"]}
    assert (~selection["used"]).sum() == 1, "the cloudy S2 product is skipped"
    train = load_split(tmp_path / "results" / "samples" / "train.zarr")
    assert set(train.patches) == {"s1", "coh", "s2"} and train.patches["s2"].shape[1:3] == (5, 5)
    with rasterio.open(tmp_path / "results" / "maps" / "tempcnn" / f"{TILES[0]}_proba.tif") as src:
        assert src.count == 7 and src.dtypes[0] == "uint8"
    comparison = pd.read_csv(tmp_path / "results" / "metrics" / "comparison.csv")
    assert set(comparison["model"]) == {"tempcnn", "cnn3d", "cnn3d+tempcnn"}
    models = comparison[comparison["model"] != "cnn3d+tempcnn"]
    assert comparison["oa"].between(0, 1).all() and models["inference_px_per_s"].gt(0).all()
    fusion = json.loads((tmp_path / "results" / "metrics" / "fusion.json").read_text())
    assert 0.4 <= fusion["alpha"] <= 0.9 and fusion["members"] == ["cnn3d"]
    inseason = pd.read_csv(tmp_path / "results" / "inseason" / "tempcnn.csv")
    assert inseason["end"].tolist() == ["07-15", "09-27"]
    assert inseason["steps_s1"].iloc[0] < inseason["steps_s1"].iloc[1]
    # the patch model is mapped too, each tile reading its halo from the other tile's cube
    for tile, other in (TILES, TILES[::-1]):
        with rasterio.open(tmp_path / "results" / "maps" / "cnn3d" / f"{tile}_class.tif") as src:
            assert src.tags()["HALO_TILES"] == other and src.tags()["PATCH_SIZE"] == "5"
        with rasterio.open(tmp_path / "results" / "maps" / "cnn3d" / f"{tile}_uncertainty.tif") as src:
            assert list(src.descriptions) == ["confidence", "margin", "entropy"] and src.nodata == 255
    with rasterio.open(tmp_path / "results" / "maps" / "cnn3d" / "mosaic.tif") as src:
        assert (src.read(1) > 0).mean() > 0.3
