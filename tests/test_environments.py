"""The per-step conda environments: exact pins equal to the pip pins of the test virtual environment, and every
rule's environment file present (a missing one stops the run naming the rule and the file)."""

from __future__ import annotations

import shutil

import geopandas as gpd
import pytest
import shapely

from cropflow.environments import RuleEnv, conda_env_problems, env_pins, pin_drift, pip_pins
from test_workflow import AOI_BOUNDS, REPO, snakemake, write_config

ENVS = sorted((REPO / "envs").glob("*.yaml"))
PIP_PINS = [REPO / "pyproject.toml", REPO / "requirements" / "constraints.txt"]


def test_conda_envs_and_pip_pins_agree():
    pins = pip_pins(*PIP_PINS)
    assert len(ENVS) >= 4
    assert pin_drift(ENVS, pins) == []
    # the comparison covers the packages that matter, under both naming schemes
    compared = {name for path in ENVS for name in env_pins(path).conda} | {
        name for path in ENVS for name in env_pins(path).pip}
    assert {"numpy", "rasterio", "geopandas", "matplotlib-base", "gdal", "keras", "tensorflow-cpu",
            "s2cloudless", "sarsen"} <= compared
    assert {"matplotlib", "gdal-wheel", "tensorflow-cpu", "sarsen"} <= set(pins)


def test_every_env_uses_one_python_allowed_by_the_package():
    import tomllib

    pythons = {env_pins(path).conda["python"] for path in ENVS}
    assert len(pythons) == 1, pythons
    minor = ".".join(pythons.pop().split(".")[:2])
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.12,<3.14" and minor in ("3.12", "3.13"), (minor, requires)


def test_drift_and_loose_pins_are_named(tmp_path):
    env = tmp_path / "geo.yaml"
    env.write_text("channels: [conda-forge]\ndependencies:\n  - python =3.12\n  - numpy =2.0.0\n"
                   "  - matplotlib-base =3.11.2\n  - pip\n  - pip:\n      - Keras==3.0.1\n")
    problems = pin_drift([env], pip_pins(*PIP_PINS))
    assert len(problems) == 3, problems
    assert "python =3.12 is not an exact version" in problems[0]
    assert "numpy =2.0.0 but the pip pins say numpy==2.5.5" in problems[1]
    assert "pip keras==3.0.1 but the pip pins say keras==3.15.1" in problems[2]


def test_conflicting_pip_pins_are_named(tmp_path):
    other = tmp_path / "constraints.txt"
    other.write_text("numpy==1.26.4\n")
    with pytest.raises(ValueError, match=r"numpy is pinned to 2\.5\.5 in .*pyproject\.toml and to 1\.26\.4"):
        pip_pins(REPO / "pyproject.toml", other)


def test_rule_without_env_or_with_missing_file_is_named(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "geo.yaml").write_text("dependencies: []\n")
    found = conda_env_problems([
        RuleEnv("stack", "../envs/geo.yaml", str(rules / "stack.smk"), True),
        RuleEnv("all", None, str(tmp_path / "Snakefile"), False),
        RuleEnv("mosaic", None, str(rules / "infer.smk"), True),
        RuleEnv("train", "../envs/gone.yaml", str(rules / "train.smk"), True),
    ])
    assert found == [
        f"rule mosaic ({rules / 'infer.smk'}) declares no conda: environment; add one from envs/",
        f"rule train ({rules / 'train.smk'}): conda environment file {tmp_path / 'envs' / 'gone.yaml'} not found; "
        "restore it (git checkout -- envs/) or fix the rule's conda: path",
    ]


@pytest.mark.workflow
def test_missing_env_file_stops_the_workflow_naming_rule_and_file(tmp_path):
    """The real Snakefile with envs/clouds.yaml removed: the run stops at parse time, also without --sdm conda."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("Snakefile", "rules", "config", "envs", "report", "resources"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy2)(REPO / part, repo / part)
    (repo / "workflow").symlink_to(REPO / "workflow")
    (repo / "envs" / "clouds.yaml").unlink()
    work = tmp_path / "work"
    (work / "data" / "s1").mkdir(parents=True)
    (work / "data" / "s2").mkdir()
    gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs="EPSG:32652").to_file(work / "aoi.geojson")
    write_config(work)
    proc = snakemake(work, "-n", "-s", str(repo / "Snakefile"), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"rule s2_clouds ({repo / 'rules' / 's2.smk'}): conda environment file " \
           f"{repo / 'envs' / 'clouds.yaml'} not found" in out, out[-3000:]


def test_lock_envs_pins_every_env_with_snakedeploy_or_names_what_is_missing(tmp_path):
    """`make lock-envs` runs snakedeploy's pin-conda-envs on every envs/ file with mamba when installed, else
    conda; without them it names the missing program (stand-ins on PATH record the command line)."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def stand_in(name: str, body: str = "exit 0") -> None:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def lock() -> subprocess.CompletedProcess:
        return subprocess.run([shutil.which("make"), "-s", "-C", str(REPO), "lock-envs"], capture_output=True,
                              text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path)})

    done = lock()
    assert done.returncode != 0 and "lock-envs needs conda (or mamba)" in done.stdout
    stand_in("conda")
    done = lock()
    assert done.returncode != 0 and "lock-envs needs snakedeploy: pip install snakedeploy" in done.stdout
    stand_in("snakedeploy", f'echo "$@" > {tmp_path / "args"}')
    assert lock().returncode == 0
    expected = ["pin-conda-envs", "--conda-frontend", "conda", *(f"envs/{p.name}" for p in ENVS)]
    assert (tmp_path / "args").read_text().split() == expected
    stand_in("mamba")
    assert lock().returncode == 0
    assert (tmp_path / "args").read_text().split()[:3] == ["pin-conda-envs", "--conda-frontend", "mamba"]
