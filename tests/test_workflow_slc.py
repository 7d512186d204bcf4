"""The Snakefile with Sentinel-1 SLC inputs: the native engine end to end on real product metadata, SNAP wiring."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import shapely
import yaml
from test_s1slc import NAME, ZIP, derive

from cropflow.grid import ProjectGrid
from cropflow.s1 import validate_c2, validate_coherence

REPO = Path(__file__).resolve().parents[1]
PAIR = "R168_20210401_20210413"
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--cores", "2", "--workflow-profile", "none", *args],
                          capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def slc_workdir(tmp_path_factory) -> Path:
    """A 2 x 2 km AOI inside IW1 of the real S1B product, the product and a copy 12 days later on its track."""
    work = tmp_path_factory.mktemp("slc")
    x, y = pyproj.Transformer.from_crs(4326, 32632, always_xy=True).transform(11.3, 46.4)
    x0, y0 = 2000 * (x // 2000), 2000 * (y // 2000)
    gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, x0 + 2000, y0 + 2000)], crs="EPSG:32632").to_file(
        work / "aoi.geojson")
    (work / "s1").mkdir()
    shutil.copy(ZIP, work / "s1" / ZIP.name)
    derive(work / "s1", shift=timedelta(days=12), orbit=26269 + 175, relative_orbit=168)
    (work / "s2").mkdir()
    with open(REPO / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config.update({"aoi": "aoi.geojson", "legend": str(REPO / "resources" / "legend.yaml"), "crs": "EPSG:32632",
                   "resolution": 20})
    config["season"] = {"start": "03-01", "end": "10-31"}
    config["inputs"].update({"s1": "s1", "s2": "s2", "parcels": "parcels.gpkg", "cropland_mask": ""})
    config["grid"]["tile_size"] = 2000
    config["s1"]["native"].update({"ellipsoid_height": 0.0, "workdir": "safe"})
    (work / "config").mkdir()
    with open(work / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return work


def test_native_engine_writes_the_seam_from_slc(slc_workdir):
    scenes = sorted(p.name.removesuffix(".zip") for p in (slc_workdir / "s1").glob("*.zip"))
    assert len(scenes) == 2
    # one slice per pass: each acquisition's features come straight from its slice's C2 (no assembly job)
    acquisitions = [f"{s[:3]}_{s[17:25]}_R168_{s.split('_')[-2]}" for s in scenes]
    targets = [f"results/s1/pairs/{PAIR}_coh.tif"] + [f"results/s1/features/{a}.tif" for a in acquisitions]
    assert "s1_assemble" not in snakemake(slc_workdir, "-n", *targets).stdout
    snakemake(slc_workdir, *targets)
    grid = ProjectGrid.from_dict(json.loads((slc_workdir / "results" / "grid" / "grid.json").read_text()))
    tags = validate_c2(slc_workdir / "results" / "s1" / "scenes" / f"{NAME}_C2.tif", grid)
    assert tags["RELATIVE_ORBIT"] == "168" and tags["PASS"] == "DESCENDING"
    with rasterio.open(slc_workdir / "results" / "s1" / "scenes" / f"{NAME}_C2.tif") as src:
        c11, c22, re, im = src.read()
    # the product's placeholder pixels are constant VV and VH: C2 is rank one and C11/C22 = |VV/VH|^2 = 4
    assert np.isfinite(c11).all()
    np.testing.assert_allclose((re**2 + im**2) / (c11 * c22), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.median(c11 / c22), 4.0, rtol=0.02)
    validate_coherence(slc_workdir / "results" / "s1" / "pairs" / f"{PAIR}_coh.tif", grid)
    with rasterio.open(slc_workdir / "results" / "s1" / "pairs" / f"{PAIR}_coh.tif") as src:
        coh = src.read()
    # both dates hold the same pixels (the copy only renames the acquisition): coherence 1
    assert np.isfinite(coh).all() and coh.min() > 0.999
    # the extracted SAFE folders were temporary: removed once their jobs were done
    assert not list((slc_workdir / "safe").rglob("*.SAFE"))


def test_snap_engine_is_wired_and_fails_clearly_without_gpt(slc_workdir):
    target = f"results/s1/scenes/{NAME}_C2.tif"
    work = slc_workdir / "snap"
    shutil.copytree(slc_workdir, work, ignore=shutil.ignore_patterns("results", ".snakemake", "safe"))
    with open(work / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config["s1"]["engine"] = "snap"
    with open(work / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    jobs = snakemake(work, "-n", target).stdout
    assert "s1_scene" in jobs
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                           "--cores", "1", "--workflow-profile", "none", target], capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin"), timeout=600)
    assert proc.returncode != 0
    log = (work / "logs" / "s1_scene" / f"{NAME}.log").read_text()
    assert "gpt" in log and "SNAP" in log
    assert (work / "results" / "s1" / "scenes" / f"{NAME}_C2.graph.xml").exists(), "the graph is written first"


def test_products_that_miss_the_aoi_are_skipped_and_reported(slc_workdir, tmp_path):
    work = tmp_path / "far"
    shutil.copytree(slc_workdir, work, ignore=shutil.ignore_patterns("results", ".snakemake", "safe", "snap", "logs",
                                                                     ".cropflow"))
    far = gpd.GeoDataFrame(geometry=[shapely.box(320000, 5330000, 322000, 5332000)], crs="EPSG:32652")  # Bei'an
    far.to_crs("EPSG:32632").to_file(work / "aoi.geojson")
    snakemake(work, "results/inventory/s1_skipped.csv")
    skipped = pd.read_csv(work / "results" / "inventory" / "s1_skipped.csv")
    assert sorted(skipped["reason"]) == ["does not touch the AOI"] * 2
    assert pd.read_csv(work / "results" / "inventory" / "s1_scenes.csv").empty


def test_tile_coverage_of_each_product_is_recorded(slc_workdir):
    snakemake(slc_workdir, "results/inventory/s1_coverage.csv")
    coverage = pd.read_csv(slc_workdir / "results" / "inventory" / "s1_coverage.csv")
    assert len(coverage) == 2 and (coverage["coverage"] == 1.0).all()


def test_lint_is_clean_with_slc_engines(slc_workdir):
    proc = snakemake(slc_workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
