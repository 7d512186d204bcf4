"""Sen2Cor wrapper: installation lookup, version, command line, validation of the produced L2A, and runs of
the real wrapper with a fake L2A_Process (tests/fake_sen2cor) including failures mid-run."""

import json
import logging
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cropflow import sen2cor
from cropflow.s2 import open_l1c, open_l2a
from cropflow.sen2cor import (Sen2CorError, Sen2CorOptions, build_command, find_l2a_process, find_produced_product,
                              l2a_name_pattern, parse_sen2cor_version, produced_l2a, resolve_s2_product,
                              run_sen2cor, validate_l2a)
from s2_products import L1C_NAME, SENSING, make_l1c, make_l2a

FAKE_DIR = Path(__file__).parent / "fake_sen2cor"
BANDS = ["B04", "B8A", "B11"]

REAL_L1C = [
    ("S2A_MSIL1C_20170103T022102_N0204_R003_T51PUR_20170103T023326",
     r"^S2A_MSIL2A_20170103T022102_N\d{4}_R003_T51PUR_\d{8}T\d{6}\.SAFE$"),
    ("S2B_MSIL1C_20190626T140101_N0207_R067_T21JTH_20190626T154048",
     r"^S2B_MSIL2A_20190626T140101_N\d{4}_R067_T21JTH_\d{8}T\d{6}\.SAFE$"),
    ("S2A_MSIL1C_20230906T102601_N0509_R108_T32TMT_20230906T141124",
     r"^S2A_MSIL2A_20230906T102601_N\d{4}_R108_T32TMT_\d{8}T\d{6}\.SAFE$"),
    ("S2B_MSIL1C_20230306T002059_N0509_R116_T55GCP_20230306T014524",
     r"^S2B_MSIL2A_20230306T002059_N\d{4}_R116_T55GCP_\d{8}T\d{6}\.SAFE$"),
]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake L2A_Process first on PATH (with this interpreter, which it runs on); returns its call log."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKE_DIR), str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_SEN2COR_CALLS", str(calls))
    monkeypatch.delenv("FAKE_SEN2COR_MODE", raising=False)
    return calls


def _calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("name,pattern", REAL_L1C)
@pytest.mark.parametrize("resolution", [10, 20, 60])
def test_command_lines_for_real_product_names(name, pattern, resolution, tmp_path):
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_text("<x/>")
    safe = f"/data/s2/{name}.SAFE"
    assert build_command("/opt/sen2cor/bin/L2A_Process", safe, "/out", "/work", resolution, None) == [
        "/opt/sen2cor/bin/L2A_Process", safe, "--resolution", str(resolution), "--output_dir", "/out",
        "--work_dir", "/work"]
    assert build_command("/opt/sen2cor/bin/L2A_Process", safe, "/out", "/work", resolution, gipp)[-2:] == [
        "--GIP_L2A", str(gipp)]
    assert l2a_name_pattern(name).pattern == pattern


def test_bad_resolution_zip_input_and_missing_gipp_are_named(tmp_path):
    safe = f"{REAL_L1C[0][0]}.SAFE"
    with pytest.raises(ValueError, match="resolution 30"):
        build_command("L2A_Process", safe, "o", "w", 30, None)
    with pytest.raises(ValueError, match="unzipped <name>.SAFE"):
        build_command("L2A_Process", f"{REAL_L1C[0][0]}.zip", "o", "w", 10, None)
    with pytest.raises(FileNotFoundError, match="s2.sen2cor.gipp .*nope.xml does not exist"):
        build_command("L2A_Process", safe, "o", "w", 10, tmp_path / "nope.xml")
    with pytest.raises(ValueError, match="s2.sen2cor.resolution 15"):
        Sen2CorOptions.from_config({"resolution": 15})
    with pytest.raises(ValueError, match="unknown keys"):
        Sen2CorOptions.from_config({"resolutoin": 10})
    assert Sen2CorOptions.from_config({"l2a_process": "", "resolution": 20, "gipp": "", "timeout_minutes": 5}) == \
        Sen2CorOptions("", 20, "", 5.0)


def test_l2a_name_pattern_accepts_local_baselines_and_rejects_other_tiles_or_times():
    pattern = l2a_name_pattern(L1C_NAME)
    assert pattern.match("S2A_MSIL2A_20230512T023551_N9999_R089_T52UCU_20261204T101010.SAFE")
    assert pattern.match("S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T053551.SAFE")
    assert not pattern.match("S2A_MSIL2A_20230512T023551_N9999_R089_T52UBU_20261204T101010.SAFE")
    assert not pattern.match("S2A_MSIL2A_20230512T023552_N9999_R089_T52UCU_20261204T101010.SAFE")
    assert not pattern.match("S2B_MSIL2A_20230512T023551_N9999_R089_T52UCU_20261204T101010.SAFE")
    with pytest.raises(ValueError, match="not a Level-1C product name"):
        l2a_name_pattern("S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T053551")


def test_version_is_parsed_from_sen2cor_2_and_3_help_texts():
    assert parse_sen2cor_version("Sentinel-2 Level 2A Processor (Sen2Cor). Version: 2.3.1, created: 2017.02.03, "
                                 "supporting Level-1C product version: 14.") == "2.3.1"
    assert parse_sen2cor_version("usage: ...\n\nSentinel-2 Level 2A Processor (Sen2Cor). Version: 2.12.03, "
                                 "created: 2024.12.05") == "2.12.03"
    assert parse_sen2cor_version("Sen2Cor. Version: 03.03.01") == "03.03.01"
    assert parse_sen2cor_version("usage: gpt <op>") is None


def test_missing_installation_names_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        find_l2a_process("", L1C_NAME, "data/s2")
    text = str(err.value)
    for part in ("L2A_Process not found on PATH", L1C_NAME, "Install Sen2Cor", "s2.sen2cor.l2a_process",
                 "Level-2A", "data/s2", "s2.prefer: l2a"):
        assert part in text
    not_exe = tmp_path / "L2A_Process"
    not_exe.write_text("#!/bin/sh\n")
    with pytest.raises(FileNotFoundError, match="at s2.sen2cor.l2a_process = .*not an executable file"):
        find_l2a_process(str(not_exe), L1C_NAME)
    # the job fails the same way, after checking the product and before writing anything
    l1c = make_l1c(tmp_path / "in")
    out = tmp_path / "results" / "s2" / "l2a" / L1C_NAME
    with pytest.raises(FileNotFoundError, match=f"L2A_Process not found on PATH: {L1C_NAME}"):
        run_sen2cor(l1c, out, Sen2CorOptions(), bands=BANDS)
    assert not out.exists()


def test_environment_isolates_sen2cor_home_and_drops_our_python_paths(tmp_path):
    env = sen2cor.sen2cor_environment({"PATH": "/bin", "PYTHONPATH": "/x", "PYTHONHOME": "/y",
                                       "SEN2COR_HOME": "/shared"}, tmp_path / "home")
    assert env == {"PATH": "/bin", "SEN2COR_HOME": str(tmp_path / "home")}


def test_found_on_path_or_at_the_configured_path(fake):
    assert find_l2a_process("") == (FAKE_DIR / "L2A_Process").resolve()
    assert find_l2a_process(str(FAKE_DIR / "L2A_Process")) == (FAKE_DIR / "L2A_Process").resolve()
    assert sen2cor.sen2cor_version(FAKE_DIR / "L2A_Process") == "2.12.03"


# ------------------------------------------------------------------------------------------- validation


def test_validate_accepts_a_simulated_l2a_of_the_same_acquisition(tmp_path, caplog):
    l1c = open_l1c(make_l1c(tmp_path / "l1c"))
    l2a = make_l2a(tmp_path / "l2a", baseline="99.99")
    with caplog.at_level(logging.WARNING, logger="cropflow.sen2cor"):
        summary = validate_l2a(l2a, l1c, BANDS, 10)
    assert summary["l2a"] == l2a.name.removesuffix(".SAFE") and summary["baseline"] == "99.99"
    assert set(summary["bands"]) == {"SCL", *BANDS}
    assert "MSK_CLDPRB_20m" in caplog.text  # missing cloud probability: a warning only


def test_validate_rejects_wrong_tile_time_missing_scl_missing_band(tmp_path):
    l1c = open_l1c(make_l1c(tmp_path / "l1c"))
    other_tile = make_l2a(tmp_path / "a", mgrs_tile="52UBU")
    with pytest.raises(Sen2CorError, match="tile 52UBU .*not the L1C's S2A tile 52UCU"):
        validate_l2a(other_tile, l1c, BANDS, 10)
    other_time = make_l2a(tmp_path / "b", sensing_time=SENSING.replace(second=52))
    with pytest.raises(Sen2CorError, match="at 2023-05-12T02:35:52, not the L1C's"):
        validate_l2a(other_time, l1c, BANDS, 10)
    no_scl = make_l2a(tmp_path / "c")
    next(no_scl.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")).unlink()
    with pytest.raises(Sen2CorError, match=r"not valid: .*band SCL \(R20m/.*_SCL_20m.jp2\) is missing"):
        validate_l2a(no_scl, l1c, BANDS, 10)
    no_b11 = make_l2a(tmp_path / "d")
    next(no_b11.glob("GRANULE/*/IMG_DATA/R20m/*_B11_20m.jp2")).unlink()
    with pytest.raises(Sen2CorError, match="band B11 .* is missing"):
        validate_l2a(no_b11, l1c, BANDS, 10)
    truncated = make_l2a(tmp_path / "e")
    scl = next(truncated.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"))
    scl.write_bytes(scl.read_bytes()[: scl.stat().st_size // 2])
    with pytest.raises(Sen2CorError, match="not valid"):
        validate_l2a(truncated, l1c, BANDS, 10)


def test_find_produced_product_needs_exactly_one_match(tmp_path):
    with pytest.raises(Sen2CorError, match=r"wrote no S2A_MSIL2A_20230512T023551_N\*_R089_T52UCU_\*.SAFE .*nothing"):
        find_produced_product(tmp_path, L1C_NAME)
    (tmp_path / "S2A_MSIL2A_20230512T023551_N9999_R089_T52UBU_20261204T101010.SAFE").mkdir()
    with pytest.raises(Sen2CorError, match="holds: S2A_MSIL2A_.*T52UBU"):
        find_produced_product(tmp_path, L1C_NAME)
    good = tmp_path / "S2A_MSIL2A_20230512T023551_N9999_R089_T52UCU_20261204T101010.SAFE"
    good.mkdir()
    assert find_produced_product(tmp_path, L1C_NAME) == good


# ------------------------------------------------------------------------------ runs with the fake Sen2Cor


@pytest.mark.parametrize("zipped", [False, True])
def test_successful_run_places_product_and_provenance_atomically(fake, tmp_path, zipped):
    l1c = make_l1c(tmp_path / "data", zip=zipped)
    out = tmp_path / "results" / "s2" / "l2a" / L1C_NAME
    assert run_sen2cor(l1c, out, Sen2CorOptions(resolution=10), bands=BANDS) == out
    content = sorted(p.name for p in out.iterdir())
    assert len(content) == 3 and content[0] == "L2A_GIPP.xml" and content[2] == "sen2cor.json"
    assert l2a_name_pattern(L1C_NAME).match(content[1])
    doc = json.loads((out / "sen2cor.json").read_text())
    assert doc["sen2cor_version"] == "2.12.03" and doc["resolution"] == 10 and doc["baseline"] == "99.99"
    assert doc["l1c"] == L1C_NAME and doc["l2a"] == content[1].removesuffix(".SAFE") and doc["gipp"] == "default"
    assert doc["command"][1] == f"{L1C_NAME}.SAFE" and doc["command"][2:4] == ["--resolution", "10"]
    assert doc["gipp_sha256"] and doc["executable"].endswith("L2A_Process")
    assert produced_l2a(out) == out / content[1] and resolve_s2_product(out) == out / content[1]
    product = open_l2a(produced_l2a(out))
    assert product.mgrs_tile == "52UCU" and product.datetime == SENSING
    assert [p.name for p in out.parent.iterdir()] == [L1C_NAME]  # no temporary folder left
    (call,) = _calls(fake)
    argv = call["argv"]
    assert Path(argv[0]).name == f"{L1C_NAME}.SAFE" and (Path(argv[0]).parent == l1c.parent) != zipped
    assert Path(call["home"]).parent == Path(argv[argv.index("--work_dir") + 1]).parent == Path(call["cwd"])
    assert Path(call["cwd"]).parent == out.parent and Path(call["cwd"]).name.endswith(".part")


def test_configured_gipp_is_passed_and_kept(fake, tmp_path):
    gipp = tmp_path / "my_GIPP.xml"
    gipp.write_text("<mine/>")
    out = tmp_path / "out" / L1C_NAME
    run_sen2cor(make_l1c(tmp_path / "data"), out, Sen2CorOptions(resolution=20, gipp=str(gipp)), bands=BANDS)
    (call,) = _calls(fake)
    assert call["argv"][-2:] == ["--GIP_L2A", str(gipp.resolve())] and "20" in call["argv"]
    assert (out / "L2A_GIPP.xml").read_text() == "<mine/>"
    assert json.loads((out / "sen2cor.json").read_text())["gipp"] == str(gipp.resolve())


def test_l1c_with_a_missing_band_fails_before_sen2cor_runs(fake, tmp_path):
    out = tmp_path / "out" / L1C_NAME
    for band in ("B11", "B10"):
        l1c = make_l1c(tmp_path / band, omit_bands=(band,))
        with pytest.raises(FileNotFoundError, match=rf"{L1C_NAME}: band {band} .* is missing: re-download the "
                                                    rf"product or remove it from"):
            run_sen2cor(l1c, out, Sen2CorOptions(), bands=BANDS)
    assert _calls(fake) == [] and not out.parent.exists()


@pytest.mark.parametrize("mode,message", [
    ("fail", "(?s)exited with code 3 on " + L1C_NAME + ".*memory exhausted.*partial output was removed"),
    ("empty", r"wrote no S2A_MSIL2A_20230512T023551_N\*_R089_T52UCU"),
    ("noscl", r"not valid: .*band SCL .* is missing"),
])
def test_failed_run_leaves_no_l2a_a_rerun_would_trust(fake, tmp_path, monkeypatch, mode, message):
    l1c = make_l1c(tmp_path / "data")
    out = tmp_path / "results" / "s2" / "l2a" / L1C_NAME
    monkeypatch.setenv("FAKE_SEN2COR_MODE", mode)
    with pytest.raises(Sen2CorError, match=message):
        run_sen2cor(l1c, out, Sen2CorOptions(), bands=BANDS)
    assert not out.exists() and list(out.parent.iterdir()) == []  # no output, no .part folder
    with pytest.raises(FileNotFoundError, match="not a complete Sen2Cor output"):
        produced_l2a(out)
    monkeypatch.setenv("FAKE_SEN2COR_MODE", "ok")  # the rerun succeeds and is the only thing there
    run_sen2cor(l1c, out, Sen2CorOptions(), bands=BANDS)
    assert open_l2a(produced_l2a(out)).mgrs_tile == "52UCU"
    assert [p.name for p in out.parent.iterdir()] == [L1C_NAME]


def test_a_killed_earlier_run_is_cleaned_up(fake, tmp_path):
    out = tmp_path / "l2a" / L1C_NAME
    stale = tmp_path / "l2a" / f".{L1C_NAME}.abc123.part"
    (stale / "l2a" / "S2A_MSIL2A_20230512T023551_N9999_R089_T52UCU_20261204T101010.SAFE").mkdir(parents=True)
    run_sen2cor(make_l1c(tmp_path / "data"), out, Sen2CorOptions(), bands=BANDS)
    assert [p.name for p in out.parent.iterdir()] == [L1C_NAME]


def test_timeout_is_an_error_naming_the_key(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SEN2COR_MODE", "sleep")
    out = tmp_path / "out" / L1C_NAME
    with pytest.raises(Sen2CorError, match="s2.sen2cor.timeout_minutes = 0.05"):
        run_sen2cor(make_l1c(tmp_path / "data"), out, Sen2CorOptions(timeout_minutes=0.05), bands=BANDS)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_parallel_jobs_use_separate_directories(fake, tmp_path):
    a = make_l1c(tmp_path / "a")
    b = make_l1c(tmp_path / "b", sensing_time=SENSING.replace(day=22))
    outs = [tmp_path / "l2a" / p.name.removesuffix(".SAFE") for p in (a, b)]
    errors: list[BaseException] = []

    def job(l1c, out):
        try:
            run_sen2cor(l1c, out, Sen2CorOptions(), bands=BANDS)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=job, args=(l1c, out)) for l1c, out in zip((a, b), outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    calls = _calls(fake)
    assert len(calls) == 2
    assert calls[0]["home"] != calls[1]["home"]
    works = {c["argv"][c["argv"].index("--work_dir") + 1] for c in calls}
    assert len(works) == 2
    assert all(produced_l2a(out).is_dir() for out in outs)


@pytest.mark.skipif(shutil.which("L2A_Process") is None or "CROPFLOW_L1C_PRODUCT" not in os.environ,
                    reason="needs Sen2Cor's L2A_Process on PATH and a real L1C product in CROPFLOW_L1C_PRODUCT")
def test_integration_l2a_process(tmp_path):
    """The real Sen2Cor on a real Level-1C product (a simulated one lacks the angle grids Sen2Cor needs)."""
    product = Path(os.environ["CROPFLOW_L1C_PRODUCT"])
    l1c = open_l1c(product)
    out = tmp_path / "l2a" / l1c.name
    run_sen2cor(product, out, Sen2CorOptions(resolution=int(os.environ.get("CROPFLOW_SEN2COR_RESOLUTION", "60"))),
                bands=["B04", "B8A", "B11"])
    l2a = open_l2a(produced_l2a(out))
    assert (l2a.mgrs_tile, l2a.relative_orbit) == (l1c.mgrs_tile, l1c.relative_orbit)
    assert json.loads((out / "sen2cor.json").read_text())["sen2cor_version"]
    assert np.isfinite(l2a.cloud_cover)
