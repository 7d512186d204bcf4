"""Reproducibility archive pieces: tree hashes, the code snapshot (clean, dirty, not git), the checksum manifest
and its verification, input checks, the comparison of re-run figures. The whole archive of a real run and its
re-run are in tests/test_workflow.py (test_archive_reruns_to_the_same_split_weights_and_metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cropflow.archive import (INPUTS, MANIFEST, compare_figures, config_inputs, input_records, sha256_tree,
                              snapshot_code, verify_bundle, verify_inputs, verify_tree, write_manifest)
from cropflow.cli import main


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_folder_hash_depends_on_content_and_names_not_location(tmp_path):
    a = _tree(tmp_path / "a" / "X.SAFE", {"manifest.safe": b"m", "measurement/s1.tiff": b"\x00\x01"})
    b = _tree(tmp_path / "b" / "X.SAFE", {"measurement/s1.tiff": b"\x00\x01", "manifest.safe": b"m"})
    assert sha256_tree(a) == sha256_tree(b)
    (b / "measurement" / "s1.tiff").write_bytes(b"\x00\x02")
    assert sha256_tree(a) != sha256_tree(b)
    (b / "measurement" / "s1.tiff").rename(b / "measurement" / "s2.tiff")
    (b / "measurement" / "s2.tiff").write_bytes(b"\x00\x01")
    assert sha256_tree(a) != sha256_tree(b), "a renamed file changes the folder hash"


def _unpacked_bundle(tmp_path: Path) -> Path:
    root = _tree(tmp_path / "bundle", {"config/config.yaml": b"seed: 42\n", "results/metrics/rf.json": b"{}",
                                       "results/models/rf/model.joblib": b"weights"})
    write_manifest(root)
    return root


def test_manifest_names_altered_missing_and_extra_files(tmp_path, caplog):
    root = _unpacked_bundle(tmp_path)
    assert verify_tree(root).ok and verify_tree(root).checked == 3
    weights = root / "results" / "models" / "rf" / "model.joblib"
    data = bytearray(weights.read_bytes())
    data[0] ^= 1  # one bit of one byte
    weights.write_bytes(bytes(data))
    (root / "results" / "metrics" / "rf.json").unlink()
    (root / "config" / "extra.yaml").write_text("x: 1\n")
    (root / "code" / "__pycache__").mkdir(parents=True)
    (root / "code" / "__pycache__" / "cli.cpython-312.pyc").write_bytes(b"written by a re-run from the bundle")
    result = verify_tree(root)
    assert result.altered == ["results/models/rf/model.joblib"]
    assert result.missing == ["results/metrics/rf.json"]
    assert result.extra == ["config/extra.yaml"]
    assert main(["archive-verify", str(root)]) == 1
    message = caplog.text
    for name in ("altered: results/models/rf/model.joblib", "missing: results/metrics/rf.json",
                 "extra (not in manifest-sha256.txt): config/extra.yaml"):
        assert name in message


def test_verify_reads_the_tarball_and_a_folder_without_manifest_is_named(tmp_path):
    root = _unpacked_bundle(tmp_path)
    tarball = tmp_path / "b.tar.gz"
    with tarfile.open(tarball, "w:gz") as t:
        t.add(root, arcname="cropflow-archive")
    assert verify_bundle(tarball).ok and verify_bundle(tarball).checked == 3
    (root / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="manifest-sha256.txt not found"):
        verify_bundle(root)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_code_snapshot_is_the_commit_or_flags_uncommitted_changes(tmp_path):
    repo = _tree(tmp_path / "repo", {"Snakefile": b"rule all:\n", "rules/a.smk": b"# a\n"})
    _git(repo, "init", "-q")
    _git(repo, "add", "Snakefile", "rules/a.smk")
    _git(repo, "commit", "-q", "-m", "first")
    clean = snapshot_code(repo, tmp_path / "clean")
    assert clean["dirty"] is False and len(clean["commit"]) == 40 and clean["diff"] == ""
    assert (tmp_path / "clean" / "rules" / "a.smk").read_text() == "# a\n"

    (repo / "rules" / "a.smk").write_text("# a, changed after the commit\n")
    (repo / "notes.txt").write_text("untracked\n")
    dirty = snapshot_code(repo, tmp_path / "dirty")
    assert dirty["dirty"] is True and dirty["commit"] == clean["commit"]
    assert dirty["changed"] == ["rules/a.smk"] and dirty["untracked"] == ["notes.txt"]
    assert "+# a, changed after the commit" in dirty["diff"]
    assert (tmp_path / "dirty" / "rules" / "a.smk").read_text() == "# a, changed after the commit\n", "what ran"
    assert not (tmp_path / "dirty" / "notes.txt").exists()

    shutil.rmtree(repo / ".git")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "x.pyc").write_bytes(b"")
    tree = snapshot_code(repo, tmp_path / "tree")
    assert tree["source"] == "tree" and tree["commit"] is None
    assert (tmp_path / "tree" / "Snakefile").is_file() and not (tmp_path / "tree" / "__pycache__").exists()


def test_inputs_are_recorded_by_sha256_and_checked_in_a_rerun_directory(tmp_path):
    work = _tree(tmp_path / "work", {"aoi.geojson": b"{}", "data/s2/A.SAFE/MTD.xml": b"<a/>",
                                     "data/parcels.gpkg": b"gpkg"})
    config = {"aoi": "aoi.geojson", "legend": "", "inputs": {"parcels": "data/parcels.gpkg", "cropland_mask": ""}}
    assert config_inputs(config) == [("aoi", "aoi.geojson"), ("inputs.parcels", "data/parcels.gpkg")]
    table = input_records([("s2 product", "data/s2/A.SAFE"), *config_inputs(config)], work)
    assert table["kind"].tolist() == ["folder", "file", "file"]
    bundle = tmp_path / "bundle"
    (bundle / "inputs").mkdir(parents=True)
    table.to_csv(bundle / INPUTS, index=False)
    rerun = tmp_path / "rerun"
    shutil.copytree(work, rerun)
    assert verify_inputs(bundle, rerun) == []
    (rerun / "data" / "s2" / "A.SAFE" / "MTD.xml").write_bytes(b"<b/>")
    (rerun / "aoi.geojson").unlink()
    problems = verify_inputs(bundle, rerun)
    assert len(problems) == 2
    assert problems[0].startswith("different input: data/s2/A.SAFE (s2 product) has sha256")
    assert problems[1] == f"missing input: aoi.geojson (aoi) is not in {rerun}"
    with pytest.raises(FileNotFoundError, match="input data/gone.tif"):
        input_records([("dem", "data/gone.tif")], work)


def test_figure_comparison_names_each_difference():
    archived = {"split_manifest_sha256": "a" * 64,
                "models": {"rf": {"weights_sha256": "b" * 64, "metrics": {"oa": 0.8, "kappa": 0.7}}}}
    assert compare_figures(archived, json.loads(json.dumps(archived))) == []
    rerun = {"split_manifest_sha256": "c" * 64,
             "models": {"rf": {"weights_sha256": "d" * 64, "metrics": {"oa": 0.81, "kappa": 0.7}}}}
    diffs = compare_figures(archived, rerun)
    assert [d.split(":")[0] for d in diffs] == ["split manifest", "model rf", "model rf"]
    assert "metric oa 0.81 != archived 0.8" in diffs[2]
    missing = {"split_manifest_sha256": "a" * 64, "models": {}}
    assert compare_figures(archived, missing) == ["model rf: not in the re-run"]


def test_input_table_records_bytes_and_the_file_sha256(tmp_path):
    import hashlib

    _tree(tmp_path, {"a.tif": b"1234"})
    table = input_records([("dem", "a.tif")], tmp_path)
    assert list(table.columns) == ["role", "path", "kind", "bytes", "sha256"]
    assert table.iloc[0]["bytes"] == 4 and table.iloc[0]["sha256"] == hashlib.sha256(b"1234").hexdigest()


def test_engine_versions_say_used_missing_or_found(tmp_path):
    from cropflow.archive import engine_versions

    fake_sen2cor = Path(__file__).parent / "fake_sen2cor" / "L2A_Process"
    config = {"s1": {"engine": "snap", "snap": {"gpt": str(tmp_path / "no" / "gpt")}},
              "s2": {"sen2cor": {"l2a_process": str(fake_sen2cor)}}}
    found = engine_versions(config, ["L1C", "L2A"])
    snap = found["snap"]["version"]
    assert snap.startswith("not installed: ") and str(tmp_path / "no" / "gpt") in snap
    assert found["sen2cor"]["version"] == "2.12.03" and found["sen2cor"]["level1c_products"] == 1
    unused = engine_versions({"s1": {"engine": "native"}, "s2": {"sen2cor": {"l2a_process": ""}}}, ["L2A"])
    assert unused["snap"]["version"] == "not used: s1.engine is native"
    assert unused["sen2cor"]["version"] == "not used: no Level-1C product in the inventory"


def test_snap_graphs_are_found_next_to_the_s1_outputs(tmp_path):
    from cropflow.archive import snap_graphs

    _tree(tmp_path, {"results/s1/scenes/A_C2.graph.xml": b"<graph/>", "results/s1/pairs/P_coh.graph.xml": b"<graph/>",
                     "results/s1/scenes/A_C2.tif": b""})
    assert snap_graphs(tmp_path) == ["results/s1/pairs/P_coh.graph.xml", "results/s1/scenes/A_C2.graph.xml"]
    assert snap_graphs(tmp_path / "empty") == []
