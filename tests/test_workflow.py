"""The real Snakefile on a tiny simulated demo (2 tiles): outputs, grid, accuracy, report, lint, reruns, bad config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml
from rio_cogeo.cogeo import cog_validate

from cropflow.cube import open_cube
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.mosaic import UNCERTAINTY_BANDS
from cropflow.raster import read_categories
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
    hold_back_s1_product(workdir)
    snakemake(workdir)
    return workdir


def hold_back_s1_product(workdir: Path) -> Path:
    """Move the simulated S1 product in the middle of the season out of the inputs (to ``late/``), as if it
    arrived after the run: it has a same-track neighbour 12 days before and after (tests of reruns)."""
    zips = sorted((workdir / "data" / "s1").glob("*.zip"), key=lambda p: p.name.split("_")[5])
    late = workdir / "late"
    late.mkdir()
    return zips[len(zips) // 2].rename(late / zips[len(zips) // 2].name)


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
        for tile in TILES:
            with rasterio.open(demo / "results" / "maps" / model / f"{tile}_uncertainty.tif") as src:
                assert src.count == 3 and src.dtypes[0] == "uint8" and src.nodata == 255


def test_maps_are_valid_cogs_with_uncertainty_mosaic_and_stac_catalog(demo):
    from cropflow.stac import validate_catalog

    legend = Legend.load(str(LEGEND))
    maps = demo / "results" / "maps"
    for model in ("rf", "tempcnn"):
        for path in [maps / model / "mosaic.tif", maps / model / "mosaic_uncertainty.tif",
                     *(maps / model / f"{tile}_class.tif" for tile in TILES)]:
            valid, errors, _ = cog_validate(str(path))
            assert valid, (path, errors)
        assert read_categories(maps / model / "mosaic.tif") == legend.categories()
        with rasterio.open(maps / model / "mosaic.tif") as m:
            classes = m.read(1)
        with rasterio.open(maps / model / "mosaic_uncertainty.tif") as u:
            assert u.descriptions == UNCERTAINTY_BANDS and u.nodata == 255
            np.testing.assert_array_equal(u.read(1) == 255, classes == 0)
    # catalog, one collection per mapped model, an item per tile and one for the mosaic
    assert validate_catalog(demo / "results" / "stac" / "catalog.json") == 1 + 2 * (1 + len(TILES) + 1)


def test_accuracy_above_threshold(demo):
    metrics = json.loads((demo / "results" / "metrics" / "rf.json").read_text())
    assert metrics["oa"] >= MIN_OA_RF, metrics["oa"]
    assert metrics["oa"] < 1.0, "the simulator must not make the problem trivial"
    assert -1 <= metrics["kappa"] <= 1
    deep = json.loads((demo / "results" / "metrics" / "tempcnn.json").read_text())
    assert set(deep["per_class"]) >= {"maize", "soybean"}



def test_area_estimates_for_every_mapped_model(demo):
    for model in ("rf", "tempcnn"):
        table = pd.read_csv(demo / "results" / "areas" / f"{model}.csv")
        assert set(table["unit"]) == {"aoi"}
        with rasterio.open(demo / "results" / "maps" / model / "mosaic.tif") as src:
            mapped_ha = (src.read(1) > 0).sum() * 0.01
        assert table["mapped_ha"].sum() == pytest.approx(mapped_ha, abs=0.1)
        assert table["adjusted_ha"].sum() == pytest.approx(mapped_ha, abs=0.1), "adjusted areas keep the total"
        assert table["ci95_ha"].notna().any() and (table["ci95_ha"].dropna() >= 0).all()
        assert 0 < table.set_index("class").loc["soybean", "users_accuracy"] <= 1

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


def small_config(workdir: Path, s2_dates: int, season_end: str) -> dict:
    """The config of a small run in ``workdir``: one 2 km tile (its AOI written), preprocessed S1 seam products of
    one track, ``s2_dates`` S2 dates, a season from 6 May to ``season_end``."""
    bounds = (320000.0, 5330000.0, 322000.0, 5332000.0)
    gpd.GeoDataFrame(geometry=[shapely.box(*bounds)], crs="EPSG:32652").to_file(workdir / "aoi.geojson")
    config = write_config(workdir)
    config["s1"]["engine"] = "preprocessed"
    config["simulate"].update({"s1_format": "seam", "s1_orbits": [32], "s2_dates": s2_dates, "s2_margin": 300})
    config["season"] = {"start": "05-06", "end": season_end}
    return config


def simulate_with(workdir: Path, config: dict) -> None:
    """Write ``config`` as the run's config/config.yaml and simulate its inputs into ``workdir``/data."""
    with open(workdir / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", "config/config.yaml", "--out", "data"],
                   check=True, cwd=workdir, env=env, capture_output=True)


def setup_small_run(workdir: Path) -> None:
    """Config and simulated inputs of a small run: one 2 km tile, S1 seam products of one track (3 dates), 2 S2
    dates, the random forest only, no area estimates (about 25 jobs, so that a test can afford the run twice)."""
    config = small_config(workdir, 2, "06-20")
    config["s1"]["features"] = ["vv_db", "vh_db", "cross_ratio"]
    config["models"]["enabled"] = ["rf"]
    config["interpret"]["enabled"] = False
    config["areas"]["enabled"] = False
    simulate_with(workdir, config)


def test_archive_reruns_to_the_same_split_weights_and_metrics(tmp_path):
    """`snakemake archive` runs a small workflow and archives it; the bundle unpacked in an empty directory
    verifies, names an altered file, and a re-run from its code and config on the same inputs (checked by sha256)
    gives the same split manifest, random-forest weights sha256 and metrics."""
    from cropflow.archive import FIGURES, SPLIT_MANIFEST, reproducibility_figures, split_manifest

    demo = tmp_path / "original"
    demo.mkdir()
    setup_small_run(demo)
    # the archive packs the report `snakemake --report results/report.html` wrote when it exists; a real one needs
    # the maps (test_report_builds), which `snakemake archive` does not make, so this run gets a stand-in file
    (demo / "results").mkdir()
    (demo / "results" / "report.html").write_text("<html><body>report of the run</body></html>\n")
    snakemake(demo, "archive")
    assert not (demo / "results" / "maps").exists(), "without area estimates the archive needs no map"
    tarball = demo / "results" / "archive" / "cropflow-archive.tar.gz"
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(tarball) as t:
        t.extractall(unpacked, filter="data")
    bundle = unpacked / "cropflow-archive"
    assert cropflow("archive-verify", str(tarball)).returncode == 0
    for rel in ("code/Snakefile", "code/rules/archive.smk", "code/workflow/cropflow/archive.py",
                "config/config.yaml", "environment/pip-freeze.txt", "results/report.html",
                "results/models/rf/model.joblib", "results/metrics/rf.json", "results/inventory/s1_scenes.csv"):
        assert (bundle / rel).is_file(), rel
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the archived code is its commit
        assert json.loads((bundle / "provenance" / "code.json").read_text())["commit"] == head.stdout.strip()
    software = json.loads((bundle / "environment" / "software.json").read_text())
    assert software["packages"]["snakemake"] == "9.27.1"
    assert software["snap"]["version"] == "not used: s1.engine is preprocessed"
    assert software["sen2cor"]["version"] == "not used: no Level-1C product in the inventory"
    inputs = pd.read_csv(bundle / "inputs" / "inputs.csv")
    scenes = pd.read_csv(demo / "results" / "inventory" / "s1_scenes.csv")["path"].tolist()
    assert set(scenes) <= set(inputs["path"]) and {"aoi.geojson", "data/parcels.gpkg"} <= set(inputs["path"])
    crate = json.loads((bundle / "ro-crate-metadata.json").read_text())["@graph"]
    by_id = {e["@id"]: e for e in crate}
    assert by_id["./"]["license"] == {"@id": "https://spdx.org/licenses/MIT"}
    assert by_id["./"]["mainEntity"] == {"@id": "code/Snakefile"}
    assert "ComputationalWorkflow" in by_id["code/Snakefile"]["@type"]
    assert by_id["results/models/rf/model.joblib"]["encodingFormat"] == "application/octet-stream"
    assert any(e.get("@type") == "CreateAction" for e in crate)

    # the inputs are not in the bundle: a re-run directory gets them, and their sha256 must match the archive's
    run = tmp_path / "run"
    (run / "config").mkdir(parents=True)
    shutil.copy(bundle / "config" / "config.yaml", run / "config" / "config.yaml")
    shutil.copy(demo / "aoi.geojson", run / "aoi.geojson")
    (run / "data").symlink_to(demo / "data")
    assert cropflow("archive-verify", str(bundle), "--inputs", str(run)).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(bundle / "code" / "Snakefile"), "-d", str(run), "--cores", "2",
         "--workflow-profile", "none", "results/metrics/rf.json"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert list((bundle / "code" / "workflow" / "cropflow" / "__pycache__").iterdir()), \
        "the jobs ran the bundle's package (numba cached its kernels next to it)"
    archived = json.loads((bundle / FIGURES).read_text())
    rerun = reproducibility_figures(run, ["rf"])
    print("archive re-run:", json.dumps({"archived": archived["models"]["rf"]["weights_sha256"],
                                         "rerun": rerun["models"]["rf"]["weights_sha256"],
                                         "split": rerun["split_manifest_sha256"],
                                         "oa": rerun["models"]["rf"]["metrics"]["oa"]}))
    split_manifest(run / "results" / "labels" / "parcels.gpkg").to_csv(tmp_path / "split.csv", index=False)
    assert (tmp_path / "split.csv").read_bytes() == (bundle / SPLIT_MANIFEST).read_bytes()
    assert rerun["split_manifest_sha256"] == archived["split_manifest_sha256"]
    assert rerun["models"]["rf"] == archived["models"]["rf"], "same weights sha256 and metrics on CPU"
    done = cropflow("archive-verify", str(bundle), "--rerun", str(run), "--models", "rf")
    assert done.returncode == 0, done.stderr

    # one byte of one archived file changed after writing: verify fails naming it
    metrics = bundle / "results" / "metrics" / "rf.json"
    data = bytearray(metrics.read_bytes())
    data[len(data) // 2] ^= 1
    metrics.write_bytes(bytes(data))
    failed = cropflow("archive-verify", str(bundle))
    assert failed.returncode == 1 and "altered: results/metrics/rf.json" in failed.stderr


def cropflow(*args: str) -> subprocess.CompletedProcess:
    """``python -m cropflow <args>`` with the repository's package."""
    return subprocess.run([sys.executable, "-m", "cropflow", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")), timeout=600)


def test_lint_is_clean(demo):
    proc = snakemake(demo, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def job_counts(text: str) -> dict[str, int]:
    """Rule -> job count of snakemake's job stats table in its output."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([a-z0-9_]+)\s+(\d+)\s*", line)
        if m and m.group(1) not in ("total", "job", "count"):
            counts[m.group(1)] = int(m.group(2))
    return counts


def dry_run_jobs(workdir: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (the job stats table)."""
    return job_counts(snakemake(workdir, "-n", "--quiet", "rules").stdout)


def add_s2_product(workdir: Path, tile_bounds: tuple[float, float, float, float],
                   when: datetime = datetime(2023, 8, 29, 2, 35, 51)) -> str:
    """A clear L2A product (vegetation everywhere) whose footprint lies inside one tile."""
    left, bottom, right, top = tile_bounds
    grid10 = ProjectGrid("EPSG:32652", 10.0, (left + 200, bottom + 200, right - 200, top - 200))
    h, w = grid10.shape
    rng = np.random.default_rng(7)
    refl = {b: rng.uniform(0.02, 0.4, (h, w)).astype(np.float32) for b in ("B02", "B03", "B04", "B08")}
    refl |= {b: rng.uniform(0.02, 0.4, (h // 2, w // 2)).astype(np.float32)
             for b in ("B05", "B06", "B07", "B8A", "B11", "B12")}
    path = write_l2a(workdir / "data" / "s2", platform="S2B", sensing_time=when,
                     mgrs_tile="52UCU", relative_orbit=89, baseline="05.09", grid10=grid10, reflectance=refl,
                     scl=np.full((h // 2, w // 2), 4, np.uint8))
    return path.name.removesuffix(".SAFE")


def test_nothing_to_do_after_a_complete_run(demo):
    assert dry_run_jobs(demo) == {}


def copy_run(demo: Path, work: Path, **training) -> Path:
    """A copy of a completed run (mtimes and snakemake's records kept), with training settings changed. The
    inputs (which the workflow only reads; tests add files) are hard links: cheap, the same mtimes."""
    inputs = ("data", "late")
    shutil.copytree(demo, work, symlinks=True, ignore=lambda d, names: inputs if Path(d) == demo else [])
    for name in inputs:
        shutil.copytree(demo / name, work / name, copy_function=os.link)
    if training:
        path = work / "config" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        config["training"].update(training)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def add_late_s1_product(work: Path) -> str:
    """Put the S1 product the demo held back into the inputs: one scene between two of its track."""
    (product,) = (work / "late").glob("*.zip")
    return product.rename(work / "data" / "s1" / product.name).name


#: jobs of both models' maps when each tile's cube or the model changed: per model its tiles' inference, the
#: mosaics and quicklooks, the area estimates; the STAC catalog of all maps
MAPS_AGAIN = {"infer": 2 * len(TILES), "mosaic": 2, "mosaic_uncertainty": 2, "quicklook": 2,
              "uncertainty_quicklook": 2, "areas": 2, "stac": 1}
#: jobs of both models evaluated again (new test samples or a new model): metrics, interpretation, comparison
EVALUATED = {"evaluate": 2, "interpret": 2, "compare": 1}
#: a new product's inventory jobs (its table, the report of the products) and the sample profiles figure
INVENTORY_AGAIN = {"inventory": 1, "inventory_report": 1, "profiles": 1, "all": 1}
#: a new S1 scene between two of its track: its scene job, the coherence of the two pairs it forms with the
#: scenes 12 days before and after (each job extracts the zips it reads: 1 + 2 + 2), its acquisition's
#: features, and the stacks and samples of both tiles, which it covers
NEW_S1_SCENE = {"s1_extract": 5, "s1_scene": 1, "s1_pair": 2, "s1_features": 1, "stack": len(TILES),
                "samples_tile": len(TILES), "samples_merge": 3}


def test_new_s2_product_reruns_only_its_jobs_and_dependents(demo, tmp_path):
    work = copy_run(demo, tmp_path / "rerun")
    assert dry_run_jobs(work) == {}
    add_s2_product(work, (322000.0, 5330000.0, 324000.0, 5332000.0))
    # its ingest, one new layer (the other dates' layers are untouched) and the S2 selection table, the stack and
    # samples of the one tile it covers, the merged samples; the models are retrained on the new samples, so
    # every tile is mapped again
    assert dry_run_jobs(work) == {"s2_ingest": 1, "s2_layer": 1, "s2_selection": 1, "stack": 1, "samples_tile": 1,
                                  "samples_merge": 3, "train": 2, **EVALUATED, **MAPS_AGAIN, **INVENTORY_AGAIN}


def test_new_s1_product_reruns_its_scene_its_pairs_and_the_tiles_it_covers(demo, tmp_path):
    work = copy_run(demo, tmp_path / "rerun")
    add_late_s1_product(work)
    assert dry_run_jobs(work) == {**NEW_S1_SCENE, "train": 2, **EVALUATED, **MAPS_AGAIN, **INVENTORY_AGAIN}


def test_new_imagery_with_kept_models_maps_without_retraining(demo, tmp_path):
    work = copy_run(demo, tmp_path / "keep", on_new_imagery="keep")
    assert dry_run_jobs(work) == {"stac": 1, "all": 1}, "the setting reruns only the catalog, which records it"
    add_s2_product(work, (322000.0, 5330000.0, 324000.0, 5332000.0))
    # the same product, stack and sample jobs as with retraining; no training: the kept models map the one
    # changed tile again (one infer job per model) and are evaluated on the updated test samples
    maps = {**MAPS_AGAIN, "infer": 2}
    assert dry_run_jobs(work) == {"s2_ingest": 1, "s2_layer": 1, "s2_selection": 1, "stack": 1, "samples_tile": 1,
                                  "samples_merge": 3, **EVALUATED, **maps, **INVENTORY_AGAIN}


def test_changed_hyper_parameter_reruns_only_that_models_training_evaluation_and_maps(demo, tmp_path):
    for setting in ("retrain", "keep"):
        work = copy_run(demo, tmp_path / setting, on_new_imagery=setting)
        path = work / "config" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        config["models"]["rf"]["n_estimators"] += 20
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert dry_run_jobs(work) == {
            "train": 1, "evaluate": 1, "interpret": 1, "compare": 1, "infer": len(TILES), "mosaic": 1,
            "mosaic_uncertainty": 1, "quicklook": 1, "uncertainty_quicklook": 1, "areas": 1, "stac": 1,
            "all": 1}, setting


def test_job_killed_mid_write_is_redone_and_no_half_output_trusted(demo, tmp_path):
    """A run killed (SIGKILL, as by a node failure or scancel) while the stack job writes a tile's cube: the rerun
    redoes that job, the cube and the kept model's new map of the tile are complete, and no temporary is left."""
    import signal
    import time

    work = copy_run(demo, tmp_path / "killed", on_new_imagery="keep")
    layer_date = datetime(2023, 8, 29, 2, 35, 51)
    add_s2_product(work, (322000.0, 5330000.0, 324000.0, 5332000.0), layer_date)
    tile = TILES[1]
    cubes, target = work / "results" / "cubes", f"results/maps/rf/{tile}_class.tif"
    model_mtime = (work / "results" / "models" / "rf").stat().st_mtime_ns
    env = dict(os.environ, PATH=os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))))
    run = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                            "--cores", "2", "--workflow-profile", "none", target],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list(cubes.glob(f".{tile}.*.part/out/.{tile}.zarr.*.part/out.zarr/*")):  # the stack job writes
            assert run.poll() is None, "the run ended before the stack job wrote: " + run.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the stack job never started writing"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # snakemake and its job at once: nothing can clean up
        run.wait()
    assert not (cubes / tile).exists(), "the half-written cubes never take the output's name"
    assert list(cubes.glob(f".{tile}.*.part")), "the killed writer's temporary is left behind"
    locked = snakemake(work, target, check=False)  # the killed run's lock stays: the user unlocks, as told
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    snakemake(work, "--unlock")
    rerun = snakemake(work, target)
    jobs = job_counts(rerun.stdout + rerun.stderr)
    # the killed stack job again and the kept model's map of its tile (and the tile's samples, which the cube
    # feeds, but no training)
    assert jobs == {"stack": 1, "infer": 1, "samples_tile": 1, "samples_merge": 2}, jobs
    assert not list(cubes.glob(f".{tile}.*.part")), "the rerun removed the killed writer's temporary"
    cube = open_cube(cubes / tile / f"{tile}.zarr")
    assert any(name.startswith("S2B_20230829") for name in cube.attrs["products"]["s2"]), cube.attrs["products"]
    assert (work / "results" / "models" / "rf").stat().st_mtime_ns == model_mtime, "the kept model is not retrained"
    with rasterio.open(work / target) as src:
        classes = src.read(1)
    assert (classes > 0).mean() > 0.3 and set(np.unique(classes)) <= {0, *Legend.load(str(LEGEND)).ids}
    assert job_counts(snakemake(work, target, "-n", "--quiet", "rules").stdout) == {}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("resolution", "ten", "resolution"),
        ("seed", -1, "seed"),
        ("partition", {"cell_size": 500, "fractions": {"train": 1.5, "val": 0.2, "test": 0.2}, "candidates": 10,
                       "subsample": 1.0, "min_pixels": 1}, "train"),
        ("models", {"enabled": ["resnet"]}, "resnet"),
        ("areas", {"enabled": True, "boundaries": None}, "unit_field"),
        ("compare_maps", [{"a": "tempcnn"}], "'b' is a required property"),
        ("training", {"gpus": 0, "in_memory_max_mb": 2048, "on_new_imagery": "sometimes"}, "'sometimes' is not one of"),
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



@pytest.mark.parametrize(("side", "message"), [
    ("maps/2022.tif", "compare_maps: 'maps/2022.tif' is neither an enabled model"),
    ("cnn3d", "compare_maps: 'cnn3d' is neither"),
])
def test_compare_maps_side_that_is_not_a_map_stops_naming_it(tmp_path, side, message):
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(tmp_path / "aoi.geojson")
    write_config(tmp_path, compare_maps=[{"a": "tempcnn", "b": side}])
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr

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
    config = small_config(tmp_path, 1, "05-20")
    config["s2"]["clouds"]["method"] = "s2cloudless"
    simulate_with(tmp_path, config)
    (l2a,) = [p.name.removesuffix(".SAFE") for p in (tmp_path / "data" / "s2").iterdir()]
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "s2.clouds.method: s2cloudless needs the Level-1C product" in out and l2a in out
    assert "set s2.clouds.method: scl" in out
# ------------------------------------------------------------------------ same-date mosaics, acquisition selection

#: 2 x 2 km across the east edge of 52UBU (x 309.8 km): x 309-309.8 km is in both 52UBU and 52UCU, the rest
#: only in 52UCU; two 2 km project tiles
EDGE_BOUNDS = (309000.0, 5340000.0, 311000.0, 5342000.0)
EDGE_TILES = ["E0308000N5340000", "E0310000N5340000"]


@pytest.fixture(scope="module")
def mosaic_demo(tmp_path_factory) -> Path:
    """Inventory, layers and cubes of a tiny AOI whose S2 dates are two MGRS tiles and S1 passes two slices."""
    workdir = tmp_path_factory.mktemp("mosaic")
    gpd.GeoDataFrame(geometry=[shapely.box(*EDGE_BOUNDS)], crs="EPSG:32652").to_file(workdir / "aoi.geojson")
    config = write_config(workdir)
    config["season"] = {"start": "05-06", "end": "06-20"}
    config["models"]["enabled"] = ["rf"]
    config["simulate"] = {"year": 2023, "s1_format": "slc", "s1_slices": 2, "s1_orbits": [32], "s2_dates": 2,
                          "cloudy": [0.0, 0.02], "s2_margin": 120.0}
    with open(workdir / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    subprocess.run([sys.executable, "-m", "cropflow", "simulate", "--config", "config/config.yaml", "--out", "data"],
                   check=True, cwd=workdir, env=env, capture_output=True)
    snakemake(workdir, "results/inventory/report.csv", "results/inventory/s2_layers.csv",
              *[f"results/cubes/{t}" for t in EDGE_TILES])
    return workdir


def test_multi_tile_multi_slice_dates_become_one_layer(mosaic_demo):
    inventory = mosaic_demo / "results" / "inventory"
    layers = pd.read_csv(inventory / "s2_layers.csv")
    assert len(layers) == 2 and layers["used"].all()
    assert all(json.loads(t) == ["52UBU", "52UCU"] for t in layers["mgrs_tiles"])
    for layer in layers["layer"]:
        meta = json.loads((mosaic_demo / "results" / "s2" / "layers" / f"{layer}.json").read_text())
        assert [p["mgrs_tile"] for p in meta["products"]] == ["52UBU", "52UCU"]
        n = 200 * 200
        assert sum(p["pixels"] for p in meta["products"]) == round(meta["valid_fraction"] * n)
        assert meta["coverage"] == 1.0
        winner, loser = sorted(meta["products"], key=lambda p: (p["cloud_fraction"], p["scene"]))
        assert winner["pixels_in_overlap"] > 0 and loser["pixels_in_overlap"] > 0
        if meta["cloud_fraction"] == 0:
            # least cloudy (ties: name) takes the whole tile overlap; the other keeps only what it alone covers
            assert winner["pixels"] == round(winner["coverage"] * n)
            assert loser["pixels"] == round(loser["coverage"] * n) - loser["pixels_in_overlap"]
        with rasterio.open(mosaic_demo / "results" / "s2" / "layers" / f"{layer}.tif") as src:
            assert src.descriptions[-1] == "QA" and (src.read(src.count) > 0).all()
    acquisitions = pd.read_csv(inventory / "s1_acquisitions.csv")
    assert len(acquisitions) == 3 and all(len(json.loads(s)) == 2 for s in acquisitions["slices"])
    for acq in acquisitions["acq"]:
        with rasterio.open(mosaic_demo / "results" / "s1" / "acquisitions" / f"{acq}_C2.tif") as src:
            assert np.isfinite(src.read()).all(), "the assembled slices cover the whole grid"
            assert len(json.loads(src.tags()["SLICES"])) == 2
    with rasterio.open(mosaic_demo / "results" / "s1" / "pairs" / "R032_20230517_20230529_coh.tif") as src:
        assert len(json.loads(src.tags()["SLICE_PAIRS"])) == 2 and np.isfinite(src.read()).all()
    report = pd.read_csv(inventory / "report.csv")
    assert len(report) == 4 + 6 and (report["status"] == "used").all()
    assert sorted(report.loc[report["sensor"] == "S1", "tile_or_slice"]) == ["slice 7"] * 3 + ["slice 8"] * 3
    for tile in EDGE_TILES:
        cube = open_cube(mosaic_demo / "results" / "cubes" / tile / f"{tile}.zarr")
        assert cube.attrs["products"]["s2"] == [f"{layer}.tif" for layer in layers["layer"]]
        assert len(cube.attrs["products"]["s1"]) == 3


def test_product_outside_the_aoi_gets_no_job_and_is_reported(mosaic_demo, tmp_path):
    work = tmp_path / "far"
    shutil.copytree(mosaic_demo, work, symlinks=True)
    far = add_s2_product(work, (330000.0, 5340000.0, 332000.0, 5342000.0), datetime(2023, 6, 1, 2, 35, 51))
    jobs = dry_run_jobs(work)
    assert "s2_ingest" not in jobs and "s2_layer" not in jobs and "stack" not in jobs, jobs
    proc = snakemake(work, "-n", "results/s2/" + far + ".tif", check=False)
    assert proc.returncode != 0, "no rule may make the product that misses the AOI"
    snakemake(work, "results/inventory/report.csv")
    row = pd.read_csv(work / "results" / "inventory" / "report.csv").set_index("product").loc[far]
    assert (row["status"], row["stage"], row["reason"]) == ("skipped", "inventory", "footprint does not overlap the AOI")


def test_demo_through_slurm_equals_local_run(demo, tmp_path):
    """One S2 product's ingest and everything downstream of it up to the random forest's map and metrics, made
    again through the SLURM executor (profiles/slurm on the cluster of tests/slurm/cluster.sh): every compute
    job is an sbatch job SLURM ran to completion, the light rules run on the submit host, and the outputs
    equal those of the local run; with training.gpus: 1 the TempCNN training job is given the node's GPU."""
    from collections import Counter

    from slurm_cluster import local_rules, require_slurm, run_slurm, slurm_job_details, slurm_jobs, submissions

    require_slurm()
    work = tmp_path / "slurm"
    shutil.copytree(demo, work, symlinks=True)
    scene = sorted(pd.read_csv(work / "results" / "inventory" / "s2_scenes.csv")["scene"])[0]
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["training"]["gpus"] = 1
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = ["results/maps/rf/mosaic.tif", "results/metrics/rf.json", "results/models/tempcnn",
               "results/inventory/s2_selection.csv", "results/inventory/report.csv"]
    # the product's ingest is forced: a missing intermediate alone would not make up-to-date outputs rerun
    proc = run_slurm(REPO / "Snakefile", work, *targets, "--forcerun", f"results/s2/{scene}.tif")
    assert proc.returncode == 0, proc.stdout[-8000:]

    subs = submissions(proc.stdout)
    print("SLURM jobs:", ", ".join(f"{s.rule} {s.slurm_id}" for s in subs))
    assert Counter(s.rule for s in subs) == {
        "s2_ingest": 1, "s2_layer": 1, "stack": len(TILES), "samples_tile": len(TILES), "samples_merge": 3,
        "train": 2, "evaluate": 1, "infer": len(TILES), "mosaic": 1}, proc.stdout[-8000:]
    assert local_rules(proc.stdout) == {"s2_selection", "inventory_report"}
    states = slurm_jobs([s.slurm_id for s in subs])
    for sub in subs:
        state, comment = states[sub.slurm_id]
        assert state == "COMPLETED" and comment.startswith(f"rule_{sub.rule}"), (sub, state, comment)
        assert sub.log.is_file(), sub
    gres = {sub.log.parent.name: slurm_job_details(sub.slurm_id).get("TresPerJob", "") for sub in subs
            if sub.rule == "train"}
    assert gres == {"tempcnn": "gres:gpu:1", "rf": ""}, gres

    for path in [f"results/s2/{scene}.tif", "results/maps/rf/mosaic.tif",
                 *(f"results/maps/rf/{tile}_class.tif" for tile in TILES),
                 *(f"results/maps/rf/{tile}_uncertainty.tif" for tile in TILES)]:
        with rasterio.open(demo / path) as local, rasterio.open(work / path) as cluster:
            assert (cluster.crs, cluster.transform) == (local.crs, local.transform), path
            np.testing.assert_array_equal(cluster.read(), local.read(), err_msg=path)
    cluster_metrics, local_metrics = (json.loads((d / "results/metrics/rf.json").read_text()) for d in (work, demo))
    for timing in ("train_seconds", "inference_px_per_s"):  # measured, so different in every run
        assert cluster_metrics.pop(timing) > 0 and local_metrics.pop(timing) > 0
    assert cluster_metrics == local_metrics and "oa" in local_metrics
    for name in ("s2_selection.csv", "report.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(work / "results/inventory" / name),
                                      pd.read_csv(demo / "results/inventory" / name))
