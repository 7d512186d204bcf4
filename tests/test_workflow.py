"""The real Snakefile on a tiny simulated demo (2 tiles): outputs, grid, accuracy, report, lint, reruns, bad config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml

from cropflow.cube import open_cube
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.sampleset import load_split
from cropflow.simulate.sentinel2 import write_l2a

REPO = Path(__file__).resolve().parents[1]
LEGEND = REPO / "resources" / "legend.yaml"
# 4 x 2 km in UTM 52N: two 2 km tiles of 200 x 200 pixels at 10 m
AOI_BOUNDS = (320000.0, 5330000.0, 324000.0, 5332000.0)
TILES = ["E0320000N5330000", "E0322000N5330000"]
# Minimum test-split overall accuracy of the random forest on the tiny demo. The simulator's classes
# overlap on purpose (maize/soybean/other crops share phenology, with per-parcel sowing shifts, vigour and
# speckle): an RF on the simulator's own per-pixel truth series reaches about 0.8-0.9 (tests/test_simulate.py);
# the workflow adds resampling, gap filling of cloudy dates and a spatial split with few parcels, so 0.6 is
# a margin below what the data support and far above the majority-class rate of the crops.
MIN_OA_RF = 0.6

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
         "--workflow-profile", "none", *args],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def write_config(workdir: Path, **overrides) -> dict:
    with open(REPO / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config.update({
        "aoi": "aoi.geojson",
        "legend": str(LEGEND),
        "inputs": {"s1": "data/s1", "s2": "data/s2", "parcels": "data/parcels.gpkg", "label_field": "crop",
                   "cropland_mask": "data/cropland.tif", "cache": ".cropflow/inventory-cache.json"},
    })
    # Sentinel-1 from IW SLC zips through the native engine, geocoded with the DEM the simulator wrote
    config["s1"]["engine"] = "native"
    config["s1"]["native"]["dem"] = "data/dem.tif"
    config["grid"]["tile_size"] = 2000
    config["partition"]["cell_size"] = 500
    config["partition"]["candidates"] = 200
    config["samples"]["pixels_per_parcel"] = 20
    config["models"]["rf"]["n_estimators"] = 100
    config["models"]["tempcnn"].update({"epochs": 15, "patience": 4, "filters": 32, "dense": 64})
    config["simulate"] = {"year": 2023, "s1_format": "slc"}
    for key, value in overrides.items():
        config[key] = value
    (workdir / "config").mkdir(exist_ok=True)
    with open(workdir / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return config


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A complete run of the workflow on a simulated 2-tile demo."""
    workdir = tmp_path_factory.mktemp("demo")
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(workdir / "aoi.geojson")
    write_config(workdir)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", str(workdir / "config" / "config.yaml"),
                    "--out", str(workdir / "data")], check=True, cwd=workdir, env=env, capture_output=True)
    snakemake(workdir)
    return workdir


def test_map_on_project_grid_with_legend_values(demo):
    legend = Legend.load(str(LEGEND))
    for model in ("rf", "tempcnn"):
        with rasterio.open(demo / "results" / "maps" / model / "mosaic.tif") as src:
            assert src.crs.to_epsg() == 32652
            assert (src.bounds.left, src.bounds.bottom, src.bounds.right, src.bounds.top) == AOI_BOUNDS
            assert src.res == (10.0, 10.0)
            assert src.dtypes[0] == "uint8" and src.nodata == 0
            data = src.read(1)
            assert set(np.unique(data)) <= {0, *legend.ids}
            assert (data > 0).mean() > 0.3, "most of the AOI should be mapped"
            assert src.colormap(1)[legend.ids[0]][:3] == legend.classes[0].rgba[:3]


def test_accuracy_above_threshold(demo):
    metrics = json.loads((demo / "results" / "metrics" / "rf.json").read_text())
    assert metrics["oa"] >= MIN_OA_RF, metrics["oa"]
    assert metrics["oa"] < 1.0, "the simulator must not make the problem trivial"
    assert -1 <= metrics["kappa"] <= 1
    deep = json.loads((demo / "results" / "metrics" / "tempcnn.json").read_text())
    assert set(deep["per_class"]) >= {"maize", "soybean"}


def test_every_parcel_accounted_for(demo):
    summary = json.loads((demo / "results" / "partition" / "split_report.json").read_text())
    n_input = len(gpd.read_file(demo / "data" / "parcels.gpkg"))
    assert summary["n_input"] == n_input == summary["kept"] + summary["dropped"]
    parcels = gpd.read_file(demo / "results" / "labels" / "parcels.gpkg")
    assert set(parcels["split"]) == {"train", "val", "test"}


def test_report_builds(demo):
    snakemake(demo, "--report", "report.html")
    html = (demo / "report.html").read_text(errors="ignore")
    assert "split_report" in html and "profiles.png" in html


def test_lint_is_clean(demo):
    proc = snakemake(demo, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dry_run_jobs(workdir: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (the job stats table)."""
    proc = snakemake(workdir, "-n", "--quiet", "rules")
    counts: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"\s*([a-z0-9_]+)\s+(\d+)\s*", line)
        if m and m.group(1) not in ("total", "job", "count"):
            counts[m.group(1)] = int(m.group(2))
    return counts


def add_s2_product(workdir: Path, tile_bounds: tuple[float, float, float, float]) -> str:
    """A clear L2A product (vegetation everywhere) whose footprint lies inside one tile."""
    left, bottom, right, top = tile_bounds
    grid10 = ProjectGrid("EPSG:32652", 10.0, (left + 200, bottom + 200, right - 200, top - 200))
    h, w = grid10.shape
    rng = np.random.default_rng(7)
    refl = {b: rng.uniform(0.02, 0.4, (h, w)).astype(np.float32) for b in ("B02", "B03", "B04", "B08")}
    refl |= {b: rng.uniform(0.02, 0.4, (h // 2, w // 2)).astype(np.float32)
             for b in ("B05", "B06", "B07", "B8A", "B11", "B12")}
    path = write_l2a(workdir / "data" / "s2", platform="S2B", sensing_time=datetime(2023, 8, 29, 2, 35, 51),
                     mgrs_tile="52UCU", relative_orbit=89, baseline="05.09", grid10=grid10, reflectance=refl,
                     scl=np.full((h // 2, w // 2), 4, np.uint8))
    return path.name.removesuffix(".SAFE")


def test_nothing_to_do_after_a_complete_run(demo):
    assert dry_run_jobs(demo) == {}


def test_new_product_reruns_only_its_jobs_and_dependents(demo, tmp_path):
    work = tmp_path / "rerun"
    shutil.copytree(demo, work, symlinks=True)
    assert dry_run_jobs(work) == {}
    add_s2_product(work, (322000.0, 5330000.0, 324000.0, 5332000.0))
    jobs = dry_run_jobs(work)
    assert jobs.get("s2_ingest") == 1
    assert jobs.get("stack") == 1, "only the tile the new product covers is restacked"
    assert jobs.get("samples_tile") == 1
    for unaffected in ("grid", "s1_scene", "s1_pair", "s1_features", "labels_clean", "partition",
                       "labels_tile"):
        assert unaffected not in jobs, (unaffected, jobs)
    # the model is retrained on the new samples, so every tile is mapped again
    assert jobs.get("train") == 2 and jobs.get("infer") == 2 * len(TILES) and jobs.get("mosaic") == 2


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("resolution", "ten", "resolution"),
        ("seed", -1, "seed"),
        ("partition", {"cell_size": 500, "fractions": {"train": 1.5, "val": 0.2, "test": 0.2}, "candidates": 10,
                       "subsample": 1.0, "min_pixels": 1}, "train"),
        ("models", {"enabled": ["resnet"]}, "resnet"),
    ],
)
def test_bad_config_value_names_the_key(tmp_path, key, value, message):
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    write_config(tmp_path, **{key: value})
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "ValidationError" in out or "validat" in out.lower()
    assert message in out


def test_patch_model_without_patches_stops_naming_the_setting(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    config = write_config(tmp_path)
    config["models"]["enabled"] = ["rf", "convstar3d"]
    with open(tmp_path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "convstar3d is a patch model; set samples.patches: true" in proc.stdout + proc.stderr


def test_alternative_settings_run_end_to_end(tmp_path):
    """Seam products (engine preprocessed), separate time axes per source, KNN gap filling, acquisition dates,
    patches, probabilities, no post-processing."""
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    config = write_config(tmp_path)
    config["s1"]["engine"] = "preprocessed"
    config["simulate"]["s1_format"] = "seam"
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
    cube = open_cube(tmp_path / "results" / "cubes" / f"{TILES[0]}.zarr")
    assert {"s1", "coh", "s2"} <= set(cube.data_vars)
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
    assert not (tmp_path / "results" / "maps" / "cnn3d").exists(), "patch models are evaluated, not mapped"


def test_l1c_inputs_run_through_a_fake_sen2cor(tmp_path):
    """Level-1C-only inputs through the real Snakefile: without Sen2Cor the sen2cor job fails naming what to do
    and leaves no output; with tests/fake_sen2cor/L2A_Process the L1C are corrected, masked by SCL and
    s2cloudless ("both"), ingested and listed in the selection table."""
    pytest.importorskip("s2cloudless")
    bounds = (320000.0, 5330000.0, 322000.0, 5332000.0)  # one 2 km tile
    gpd.GeoDataFrame(geometry=[shapely.box(*bounds)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    config = write_config(tmp_path)
    config["s1"]["engine"] = "preprocessed"
    config["simulate"].update({"s1_format": "seam", "s1_orbits": [32], "s2_dates": 2, "cloudy": [0.02, 0.3],
                               "s2_level": "l1c", "s2_margin": 300})
    config["season"] = {"start": "05-06", "end": "05-31"}
    config["s2"]["clouds"]["method"] = "both"
    config["s2"]["sen2cor"]["l2a_process"] = str(tmp_path / "no" / "L2A_Process")
    with open(tmp_path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", "config/config.yaml", "--out", "data"],
                   check=True, cwd=tmp_path, env=env, capture_output=True)
    l1c = sorted(p.name.removesuffix(".SAFE") for p in (tmp_path / "data" / "s2").iterdir())
    assert len(l1c) == 2 and all("_MSIL1C_" in name for name in l1c)

    target = f"results/s2/l2a/{l1c[0]}"
    proc = snakemake(tmp_path, target, check=False)
    assert proc.returncode != 0
    assert "WARNING: 2 Level-1C product(s) need Sen2Cor" in proc.stderr  # already at DAG building
    log = (tmp_path / "logs" / "sen2cor" / f"{l1c[0]}.log").read_text()
    assert "L2A_Process not found at s2.sen2cor.l2a_process" in log and "Install Sen2Cor" in log and l1c[0] in log
    assert not (tmp_path / target).exists()
    l2a_dir = tmp_path / "results" / "s2" / "l2a"
    assert not l2a_dir.exists() or not list(l2a_dir.iterdir()), "nothing half-written is left"

    config["s2"]["sen2cor"]["l2a_process"] = str(REPO / "tests" / "fake_sen2cor" / "L2A_Process")
    with open(tmp_path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    snakemake(tmp_path, "results/inventory/s2_selection.csv", "results/inventory/s2_scenes.csv")
    scenes = pd.read_csv(tmp_path / "results" / "inventory" / "s2_scenes.csv")
    assert scenes["level"].tolist() == ["L1C", "L1C"]
    for name in l1c:
        out = tmp_path / "results" / "s2" / "l2a" / name
        assert json.loads((out / "sen2cor.json").read_text())["sen2cor_version"] == "2.12.03"
        assert (tmp_path / "results" / "s2" / "clouds" / f"{name}.tif").is_file()
        meta = json.loads((tmp_path / "results" / "s2" / f"{name}.json").read_text())
        assert meta["scene"] == name and meta["level_in"] == "L1C" and meta["cloud_method"] == "both"
        assert meta["sen2cor_version"] == "2.12.03" and "_MSIL2A_" in meta["l2a"]
    selection = pd.read_csv(tmp_path / "results" / "inventory" / "s2_selection.csv")
    assert selection["scene"].tolist() == l1c
    assert selection["used"].tolist() == [True, False], "the 30 % cloudy date is left out"


def test_s2cloudless_without_l1c_stops_naming_products_and_key(tmp_path):
    """s2cloudless needs the L1C TOA bands: with L2A-only inputs the run stops at DAG building, no job runs."""
    bounds = (320000.0, 5330000.0, 322000.0, 5332000.0)
    gpd.GeoDataFrame(geometry=[shapely.box(*bounds)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    config = write_config(tmp_path)
    config["s1"]["engine"] = "preprocessed"
    config["simulate"].update({"s1_format": "seam", "s1_orbits": [32], "s2_dates": 1, "s2_margin": 300})
    config["season"] = {"start": "05-06", "end": "05-20"}
    config["s2"]["clouds"]["method"] = "s2cloudless"
    with open(tmp_path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", "config/config.yaml", "--out", "data"],
                   check=True, cwd=tmp_path, env=env, capture_output=True)
    (l2a,) = [p.name.removesuffix(".SAFE") for p in (tmp_path / "data" / "s2").iterdir()]
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "s2.clouds.method: s2cloudless needs the Level-1C product" in out and l2a in out
    assert "set s2.clouds.method: scl" in out
