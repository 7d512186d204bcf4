"""Reproducibility archive: one .tar.gz holding what a run used and made, described by RO-Crate metadata.

The bundle (a folder ``cropflow-archive/`` inside the tarball) holds

- ``code/``: the workflow at its commit (``git archive HEAD``; with uncommitted changes the tracked files as they
  ran, and ``provenance/code.json`` says so and lists them, ``provenance/code-changes.diff`` shows them);
- ``config/config.yaml``: the configuration as the run resolved it;
- ``environment/``: ``pip-freeze.txt`` of the running interpreter and ``software.json`` (Python, Snakemake,
  cropflow, SNAP and Sen2Cor versions or why they were not used); the conda env files and the pin list are in
  ``code/envs`` and ``code/requirements``;
- ``inputs/inputs.csv``: every input the run read (products of the inventory, parcels, AOI, legend, DEM, ...)
  with its sha256. The raw inputs themselves are not archived (terabytes of SAFE products, often under
  their own licence); :func:`verify_inputs` checks that inputs given to a re-run are the same bytes;
- ``results/``: the inventory tables, the partition report, the trained models, metrics, the SNAP graph XMLs
  the run wrote and the Snakemake report when it was built; ``split-manifest.csv`` (parcel -> split);
- ``reproducibility.json``: the figures a re-run must match (split manifest and model weights sha256,
  metrics without timings);
- ``ro-crate-metadata.json`` (ro-crate-py) and ``manifest-sha256.txt`` (BagIt style: ``<sha256>  <path>``
  of every other file), which :func:`verify_bundle` checks, naming altered, missing and extra files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from cropflow.atomic import atomic_path
from cropflow.checksum import files_under, sha256_file, sha256_tree

logger = logging.getLogger(__name__)

BUNDLE_DIR = "cropflow-archive"
MANIFEST = "manifest-sha256.txt"
FIGURES = "reproducibility.json"
INPUTS = "inputs/inputs.csv"
SPLIT_MANIFEST = "split-manifest.csv"
#: the folders Python and numba write their caches into, next to the code that runs
CACHE_DIR = "__pycache__"
#: configuration keys whose values are input files or folders (besides the products of the inventory), read
#: whatever the settings; the engine- and option-specific ones are added by :func:`config_inputs`
CONFIG_INPUT_KEYS = ("aoi", "legend", "inputs.parcels", "inputs.cropland_mask", "s2.sen2cor.gipp")
#: metrics entries that time the run rather than describe the model (they differ between identical runs)
TIMING_KEYS = ("train_seconds", "inference_px_per_s")
#: folders never copied from a working tree that is not a git checkout
_NOT_CODE = {".git", ".snakemake", ".venv", "__pycache__", ".pytest_cache", "results", "logs", "data",
             "benchmarks", ".cropflow"}
_FORMATS = {".py": "text/x-python", ".smk": "text/x-python", ".yaml": "application/yaml",
            ".yml": "application/yaml", ".json": "application/json", ".csv": "text/csv", ".txt": "text/plain",
            ".xml": "application/xml", ".html": "text/html", ".png": "image/png", ".joblib": "application/octet-stream",
            ".keras": "application/zip", ".diff": "text/x-diff", ".gpkg": "application/geopackage+sqlite3",
            ".md": "text/markdown", ".rst": "text/x-rst"}


# ------------------------------------------------------------------------------------------------ hashing

# ------------------------------------------------------------------------------------------------ code

def _git(code_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(code_dir), *args], capture_output=True, check=False)


def is_git_checkout(code_dir: Path) -> bool:
    done = _git(code_dir, "rev-parse", "--show-toplevel")
    return done.returncode == 0 and Path(done.stdout.decode().strip()).resolve() == code_dir.resolve()


def snapshot_code(code_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy the workflow code into ``dest``; return its provenance (commit, dirty flag, changed files, diff).

    A clean git checkout is exported with ``git archive HEAD``. With uncommitted changes to tracked files the
    tracked files are copied as they are on disk (what ran), and the provenance flags the tree dirty and
    carries ``git diff HEAD``; untracked files are listed, not copied. Outside git the source tree is copied
    (no commit)."""
    code_dir, dest = Path(code_dir), Path(dest)
    dest.mkdir(parents=True)
    if not shutil.which("git") or not is_git_checkout(code_dir):
        logger.warning("%s is not a git checkout: archiving its files without a commit id", code_dir)
        for f in files_under(code_dir):
            rel = f.relative_to(code_dir)
            if not _NOT_CODE.intersection(rel.parts) and not f.name.endswith(".pyc"):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / rel)
        return {"source": "tree", "commit": None, "dirty": None, "changed": [], "untracked": [], "diff": ""}
    commit = _git(code_dir, "rev-parse", "HEAD").stdout.decode().strip()
    status = _git(code_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all").stdout.decode()
    entries = [e for e in status.split("\0") if e]
    changed = sorted(e[3:] for e in entries if not e.startswith("??"))
    untracked = sorted(e[3:] for e in entries if e.startswith("??"))
    if not changed:
        tar = _git(code_dir, "archive", "--format=tar", "HEAD")
        if tar.returncode != 0:
            raise RuntimeError(f"git archive HEAD failed in {code_dir}: {tar.stderr.decode()}")
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
            t.extractall(dest, filter="data")
        diff = ""
    else:
        logger.warning("%s has uncommitted changes (%s): archiving the files as they ran, commit %s + diff",
                       code_dir, ", ".join(changed), commit[:12])
        tracked = _git(code_dir, "ls-files", "-z").stdout.decode().split("\0")
        for rel in filter(None, tracked):
            src = code_dir / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        diff = _git(code_dir, "diff", "HEAD", "--binary").stdout.decode(errors="replace")
    if untracked:
        logger.warning("%d untracked file(s) in %s are not archived: %s", len(untracked), code_dir,
                       ", ".join(untracked[:10]))
    return {"source": "git", "commit": commit, "dirty": bool(changed), "changed": changed, "untracked": untracked,
            "diff": diff}


# ------------------------------------------------------------------------------------------------ inputs

def _lookup(config: Mapping, dotted: str):
    value: object = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def config_inputs(config: Mapping) -> list[tuple[str, str]]:
    """(config key, path) of every input file or folder the configuration names and the run reads (the DEM
    of the engine in use, the boundaries only with areas enabled, ...; empty values left out)."""
    keys = list(CONFIG_INPUT_KEYS)
    engine = _lookup(config, "s1.engine")
    keys += {"native": ["s1.native.dem", "s1.native.orbit_dir"], "snap": ["s1.snap.external_dem"]}.get(engine, [])
    keys += ["areas.boundaries"] if _lookup(config, "areas.enabled") else []
    keys += ["transfer.pretrained"] if _lookup(config, "transfer.enabled") else []
    return [(key, str(value)) for key in keys if (value := _lookup(config, key))]


def inventory_inputs(tables: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """(role, path) of every product the inventory tables name (results/inventory/s1_scenes.csv, s1_pairs.csv,
    s2_scenes.csv: column ``path``, and ``cloud_l1c``, the Level-1C products the S2 cloud masks read), each
    path once; the role is the table's name."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for table in tables:
        df = pd.read_csv(table, dtype=str, keep_default_na=False)
        for column in ("path", "cloud_l1c"):
            role = Path(table).stem + ("" if column == "path" else f" {column}")
            for p in df.get(column, pd.Series(dtype=str)):
                if p and p not in seen:
                    seen.add(p)
                    out.append((role, p))
    return out


def input_records(entries: Iterable[tuple[str, str]], workdir: str | os.PathLike = ".") -> pd.DataFrame:
    """The input table: role, path (as the run named it), kind (file | folder), bytes, sha256.

    Raises FileNotFoundError naming an input that is gone."""
    rows = []
    for role, path in entries:
        full = Path(workdir) / path
        if not full.exists():
            raise FileNotFoundError(f"input {path} ({role}) not found: the archive records the sha256 of every "
                                    "input, so restore it or rerun the workflow without it")
        files = [full] if full.is_file() else files_under(full)
        rows.append({"role": role, "path": path, "kind": "file" if full.is_file() else "folder",
                     "bytes": sum(f.stat().st_size for f in files), "sha256": sha256_tree(full)})
        logger.info("sha256 of input %s (%s)", path, role)
    return pd.DataFrame(rows, columns=["role", "path", "kind", "bytes", "sha256"])


def verify_inputs(bundle: str | os.PathLike, workdir: str | os.PathLike) -> list[str]:
    """Problems with the inputs in ``workdir`` against the bundle's input table ([] when every input is
    there with the archived sha256). Relative paths are taken relative to ``workdir``."""
    table = pd.read_csv(Path(bundle) / INPUTS, dtype={"sha256": str})
    problems = []
    for row in table.itertuples():
        full = Path(workdir) / row.path
        if not full.exists():
            problems.append(f"missing input: {row.path} ({row.role}) is not in {workdir}")
        elif (digest := sha256_tree(full)) != row.sha256:
            problems.append(f"different input: {row.path} ({row.role}) has sha256 {digest}, the archive "
                            f"recorded {row.sha256}")
    return problems


# ------------------------------------------------------------------------------------------------ results

def split_manifest(parcels: str | os.PathLike) -> pd.DataFrame:
    """Parcel -> split table of the partition (parcel_id, class_id, cell_id, split, subsample), by parcel."""
    import pyogrio

    df = pyogrio.read_dataframe(parcels, read_geometry=False)
    columns = [c for c in ("parcel_id", "class_id", "cell_id", "split", "subsample") if c in df]
    return df[columns].sort_values("parcel_id", kind="stable").reset_index(drop=True)


def model_weights_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 of a model bundle's fitted parameters: the joblib file of a scikit-learn model; for a Keras model
    the arrays of the weights file inside model.keras (name, dtype, shape, bytes), as the zip and its metadata
    carry the time of saving."""
    model_dir = Path(model_dir)
    keras_file = model_dir / "model.keras"
    if keras_file.is_file():
        import h5py

        h = hashlib.sha256()
        with zipfile.ZipFile(keras_file) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            names: list[str] = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            for name in sorted(names):
                data = f[name][()]
                h.update(f"{name} {data.dtype.str} {getattr(data, 'shape', ())}\n".encode())
                h.update(data.tobytes() if hasattr(data, "tobytes") else bytes(str(data), "utf-8"))
        return h.hexdigest()
    joblib_file = model_dir / "model.joblib"
    if joblib_file.is_file():
        return sha256_file(joblib_file)
    raise FileNotFoundError(f"{model_dir} holds neither model.keras nor model.joblib: retrain the model")


def reproducibility_figures(workdir: str | os.PathLike, models: Sequence[str],
                            parcels: str = "results/labels/parcels.gpkg") -> dict:
    """What a re-run must reproduce: the split manifest's sha256 (of the partitioned ``parcels``), each model's
    weights sha256 and its metrics (results/metrics/<model>.json without timings)."""
    workdir = Path(workdir)
    split = split_manifest(workdir / parcels)
    figures: dict = {"split_manifest_sha256": hashlib.sha256(split.to_csv(index=False).encode()).hexdigest(),
                     "models": {}}
    for model in models:
        metrics = json.loads((workdir / "results" / "metrics" / f"{model}.json").read_text())
        figures["models"][model] = {
            "weights_sha256": model_weights_sha256(workdir / "results" / "models" / model),
            "metrics": {k: v for k, v in metrics.items() if k not in TIMING_KEYS}}
    return figures


def compare_figures(archived: Mapping, rerun: Mapping) -> list[str]:
    """Differences between the archived figures and a re-run's ([] when they agree)."""
    out = []
    if archived["split_manifest_sha256"] != rerun["split_manifest_sha256"]:
        out.append(f"split manifest: sha256 {rerun['split_manifest_sha256']} != archived "
                   f"{archived['split_manifest_sha256']}")
    for model, fig in archived["models"].items():
        mine = rerun["models"].get(model)
        if mine is None:
            out.append(f"model {model}: not in the re-run")
            continue
        if mine["weights_sha256"] != fig["weights_sha256"]:
            out.append(f"model {model}: weights sha256 {mine['weights_sha256']} != archived {fig['weights_sha256']}")
        for key in sorted(set(fig["metrics"]) | set(mine["metrics"])):
            if fig["metrics"].get(key) != mine["metrics"].get(key):
                out.append(f"model {model}: metric {key} {mine['metrics'].get(key)!r} != archived "
                           f"{fig['metrics'].get(key)!r}")
    return out


def check_rerun(bundle: str | os.PathLike, workdir: str | os.PathLike,
                models: Sequence[str] | None = None) -> list[str]:
    """Differences between the archived figures and the re-run in ``workdir`` ([] when it reproduces them),
    for ``models`` (default: every archived model). ValueError for a model the archive does not have."""
    archived = json.loads((Path(bundle) / FIGURES).read_text())
    models = list(models or archived["models"])
    unknown = sorted(set(models) - set(archived["models"]))
    if unknown:
        raise ValueError(f"models {unknown} are not in the archive (it has {sorted(archived['models'])})")
    archived["models"] = {m: archived["models"][m] for m in models}
    return compare_figures(archived, reproducibility_figures(workdir, models))


def snap_graphs(workdir: str | os.PathLike) -> list[str]:
    """The SNAP graph XMLs the run wrote next to its S1 outputs (results/s1/**/<output>.graph.xml)."""
    root = Path(workdir) / "results" / "s1"
    return sorted(p.relative_to(workdir).as_posix() for p in root.rglob("*.graph.xml")) if root.is_dir() else []


# ------------------------------------------------------------------------------------------------ software

def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pip_freeze() -> str:
    """``name==version`` of every distribution of the running interpreter, sorted (pip freeze's format)."""
    dists = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}
    return "".join(f"{name}=={version}\n" for name, version in sorted(dists.items()))


def engine_versions(config: Mapping, s2_levels: Sequence[str]) -> dict:
    """SNAP and Sen2Cor as the run used them: the version when the configuration used the engine and it is
    installed here, else why not ("not used: s1.engine is native", "not installed: ...")."""
    from cropflow.pyrosar_env import find_gpt, snap_version
    from cropflow.sen2cor import find_l2a_process, sen2cor_version

    engine = _lookup(config, "s1.engine")
    snap: dict = {"s1.engine": engine}
    if engine != "snap":
        snap["version"] = f"not used: s1.engine is {engine}"
    else:
        snap |= _installed("gpt", lambda: find_gpt(_lookup(config, "s1.snap.gpt") or None), snap_version)
    sen2cor: dict = {"level1c_products": int(sum(level == "L1C" for level in s2_levels))}
    if not sen2cor["level1c_products"]:
        sen2cor["version"] = "not used: no Level-1C product in the inventory"
    else:
        configured = _lookup(config, "s2.sen2cor.l2a_process") or None
        sen2cor |= _installed("l2a_process", lambda: find_l2a_process(configured), sen2cor_version)
    return {"snap": snap, "sen2cor": sen2cor}


def _installed(key: str, find, version) -> dict:
    """{key: executable, "version": its version} of an external program, or {"version": "not installed: why"}."""
    try:
        exe = find()
        return {key: str(exe), "version": version(exe)}
    except (FileNotFoundError, RuntimeError) as err:
        return {"version": f"not installed: {err}"}


def software_versions(config: Mapping, s2_levels: Sequence[str]) -> dict:
    """Interpreter, platform, the workflow's key packages and the external engines."""
    packages = ("cropflow", "snakemake", "numpy", "pandas", "xarray", "zarr", "rasterio", "gdal-wheel",
                "geopandas", "scikit-learn", "tensorflow-cpu", "tensorflow", "keras", "pyroSAR", "sarsen",
                "xarray-sentinel", "rocrate")
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "packages": {p: v for p in packages if (v := _version(p))}, **engine_versions(config, s2_levels)}


# ------------------------------------------------------------------------------------------------ manifest

def write_manifest(root: str | os.PathLike) -> Path:
    """Write ``manifest-sha256.txt``: ``<sha256>  <path>`` of every other file below ``root``, by path."""
    root = Path(root)
    lines = [f"{sha256_file(f)}  {f.relative_to(root).as_posix()}\n" for f in files_under(root)
             if f.relative_to(root).as_posix() != MANIFEST]
    (root / MANIFEST).write_text("".join(lines))
    return root / MANIFEST


@dataclass
class Verification:
    """The result of checking a bundle against its checksum manifest."""

    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.altered or self.missing or self.extra)

    def problems(self) -> list[str]:
        return ([f"altered: {p}" for p in self.altered] + [f"missing: {p}" for p in self.missing]
                + [f"extra (not in {MANIFEST}): {p}" for p in self.extra])


def verify_tree(root: str | os.PathLike) -> Verification:
    """Check every file below ``root`` against its ``manifest-sha256.txt``.

    Files in ``__pycache__`` folders that the manifest does not list are left out: Python and numba write them
    next to the archived code when a re-run uses it (the archive itself never holds any)."""
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: {root} is not a cropflow archive (or its manifest was "
                                "deleted); unpack the .tar.gz and give the cropflow-archive folder")
    expected: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{manifest} line {n} is not '<sha256>  <path>': {line!r}")
        expected[rel] = digest
    present = {f.relative_to(root).as_posix(): f for f in files_under(root)}
    present.pop(MANIFEST)
    caches = [rel for rel in present if CACHE_DIR in rel.split("/") and rel not in expected]
    for rel in caches:
        del present[rel]
    if caches:
        logger.info("%s: %d file(s) in %s folders (written when the archived code ran) are not checked", root,
                    len(caches), CACHE_DIR)
    result = Verification(checked=len(expected))
    result.missing = sorted(set(expected) - set(present))
    result.extra = sorted(set(present) - set(expected))
    result.altered = sorted(rel for rel in set(expected) & set(present) if sha256_file(present[rel]) != expected[rel])
    return result



@contextlib.contextmanager
def opened_bundle(bundle: str | os.PathLike) -> Iterator[Path]:
    """The bundle folder of an unpacked archive (the folder itself, or the cropflow-archive folder inside it),
    or of a .tar.gz unpacked into a temporary folder for the duration of the context."""
    bundle = Path(bundle)
    if bundle.is_dir():
        yield bundle / BUNDLE_DIR if (bundle / BUNDLE_DIR / MANIFEST).is_file() else bundle
        return
    if not bundle.is_file() or not tarfile.is_tarfile(bundle):
        raise FileNotFoundError(f"{bundle} is neither a cropflow archive (.tar.gz) nor an unpacked one (a folder "
                                f"with {MANIFEST})")
    with tempfile.TemporaryDirectory(prefix="cropflow-archive-") as tmp:
        with tarfile.open(bundle) as t:
            t.extractall(tmp, filter="data")
        yield Path(tmp) / BUNDLE_DIR


def verify_bundle(bundle: str | os.PathLike) -> Verification:
    """Check an archive (.tar.gz or unpacked folder) against its checksum manifest."""
    with opened_bundle(bundle) as root:
        return verify_tree(root)


# ------------------------------------------------------------------------------------------------ RO-Crate

def _format(path: Path) -> str:
    return _FORMATS.get(path.suffix.lower(), "application/octet-stream")


def _describe(rel: str) -> str:
    """A one-line description of a bundle file from where it lies."""
    parts = rel.split("/")
    if rel == SPLIT_MANIFEST:
        return "Parcel -> train/val/test split of the run (parcel_id, class_id, cell_id, split, subsample)"
    if rel == FIGURES:
        return "What a re-run must reproduce: split manifest sha256, model weights sha256, metrics without timings"
    if rel == INPUTS:
        return "Every input the run read (products, parcels, AOI, legend, DEM) with its sha256; not archived"
    if rel.endswith(".graph.xml"):
        return "SNAP graph the run executed with gpt"
    if parts[0] == "config":
        return "The configuration as the run resolved it"
    if parts[0] == "environment":
        return {"pip-freeze.txt": "Python distributions of the interpreter that ran the workflow",
                "software.json": "Python, platform, key packages, SNAP and Sen2Cor versions"}.get(parts[-1], "")
    if parts[0] == "provenance":
        return "Commit of the archived code, whether its tree had uncommitted changes, and those changes"
    if parts[:2] == ["results", "models"]:
        return f"Trained model bundle file of model {parts[2]}"
    if parts[:2] == ["results", "metrics"]:
        return "Test-split metrics"
    if parts[:2] == ["results", "inventory"]:
        return "Inventory of the input products (the run's scene list)"
    if parts[:2] == ["results", "partition"]:
        return "Report of the grid-based train/val/test partition"
    if rel == "results/report.html":
        return "Snakemake report of the run"
    return ""


def describe_crate(root: Path, *, name: str, description: str, license_id: str, code: Mapping,
                   software: Mapping, ended: str) -> None:
    """Write ``ro-crate-metadata.json`` into the bundle folder ``root``: the root dataset, the Snakefile as the
    main ComputationalWorkflow (Snakemake), every other file with its format and description, and the run
    as a CreateAction from the inputs (identified by sha256) to the results."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    crate.name, crate.description = name, description
    if license_id:
        crate.license = crate.add(ContextEntity(crate, f"https://spdx.org/licenses/{license_id}", properties={
            "@type": "CreativeWork", "name": f"{license_id} License", "identifier": license_id}))
    crate.root_dataset["datePublished"] = ended
    version = code.get("commit") or "uncommitted tree"
    workflow = crate.add_workflow(root / "code" / "Snakefile", "code/Snakefile", main=True, lang="snakemake",
                                  lang_version=software["packages"].get("snakemake"),
                                  properties={"name": "cropflow", "version": version,
                                              "description": "Snakemake workflow of the run (code/ holds the "
                                                             "workflow at this commit)"})
    results = []
    for f in files_under(root):
        rel = f.relative_to(root).as_posix()
        if rel in (MANIFEST, "ro-crate-metadata.json", "code/Snakefile"):
            continue
        props = {"encodingFormat": _format(f), "contentSize": str(f.stat().st_size)}
        if desc := _describe(rel):
            props["description"] = desc
        entity = crate.add_file(f, rel, properties=props)
        if rel.startswith("results/") or rel in (SPLIT_MANIFEST, FIGURES):
            results.append(entity)
    inputs = []
    for row in pd.read_csv(root / INPUTS, dtype=str).itertuples():
        inputs.append(crate.add(ContextEntity(crate, f"#input-{row.sha256}", properties={
            "@type": "File", "name": row.path, "description": f"{row.role} (not archived; sha256 recorded)",
            "sha256": row.sha256, "contentSize": row.bytes})))
    tools = [crate.add(ContextEntity(crate, f"#software-{name}", properties={
        "@type": "SoftwareApplication", "name": name, "softwareVersion": str(version)}))
        for name, version in software["packages"].items()]
    crate.add_action(workflow, identifier="#run", object=inputs, result=results,
                     properties={"name": "cropflow run archived here", "endTime": ended,
                                 "instrument": workflow, "description": "Workflow run; tools: "
                                 + ", ".join(f"{t['name']} {t['softwareVersion']}" for t in tools)})
    crate.write(root)


# ------------------------------------------------------------------------------------------------ bundle

def project_license(code_dir: Path) -> str:
    """The SPDX licence of the project: pyproject.toml's ``license`` field ("" when there is none)."""
    import tomllib

    pyproject = code_dir / "pyproject.toml"
    if not pyproject.is_file():
        return ""
    value = tomllib.loads(pyproject.read_text()).get("project", {}).get("license", "")
    return value if isinstance(value, str) else value.get("text", "")


@dataclass
class ArchiveRequest:
    """What ``cropflow archive`` puts in the bundle; paths relative to the run's working directory."""

    code_dir: Path
    config: Mapping
    inventories: Sequence[str]
    models: Sequence[str]
    results: Sequence[str]
    parcels: str = "results/labels/parcels.gpkg"
    workdir: Path = Path(".")


def _copy_result(src: Path, dest: Path) -> None:
    """Copy a result file or folder (without Snakemake's marker files)."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".snakemake_timestamp"))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def write_bundle(request: ArchiveRequest, root: Path) -> dict:
    """Fill the bundle folder ``root``; return the reproducibility figures."""
    workdir = request.workdir
    code = snapshot_code(request.code_dir, root / "code")
    (root / "provenance").mkdir()
    (root / "provenance" / "code.json").write_text(json.dumps({k: v for k, v in code.items() if k != "diff"},
                                                              indent=2) + "\n")
    if code["diff"]:
        (root / "provenance" / "code-changes.diff").write_text(code["diff"])
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(dict(request.config), sort_keys=False))
    levels = [level for table in request.inventories for level in
              pd.read_csv(workdir / table, dtype=str, keep_default_na=False).get("level", pd.Series(dtype=str))]
    software = software_versions(request.config, levels)
    (root / "environment").mkdir()
    (root / "environment" / "software.json").write_text(json.dumps(software, indent=2) + "\n")
    (root / "environment" / "pip-freeze.txt").write_text(pip_freeze())
    entries = inventory_inputs([workdir / table for table in request.inventories])
    entries += config_inputs(request.config)
    (root / "inputs").mkdir()
    input_records(entries, workdir).to_csv(root / INPUTS, index=False)
    for rel in [*request.results, *snap_graphs(workdir)]:
        src = workdir / rel
        if not src.exists():
            raise FileNotFoundError(f"result {rel} not found in {workdir.resolve()}: run the workflow first")
        _copy_result(src, root / rel)
    split_manifest(workdir / request.parcels).to_csv(root / SPLIT_MANIFEST, index=False)
    figures = reproducibility_figures(workdir, request.models, request.parcels)
    figures["code"] = {k: code[k] for k in ("commit", "dirty")}
    (root / FIGURES).write_text(json.dumps(figures, indent=2) + "\n")
    ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
    describe_crate(root, name=f"cropflow run {code['commit'] or ''}".strip(),
                   description="Reproducibility archive of a cropflow run: workflow code at its commit, resolved "
                               "configuration, environment, input checksums, split, models, metrics and report",
                   license_id=project_license(request.code_dir), code=code, software=software, ended=ended)
    write_manifest(root)
    return figures


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_archive(request: ArchiveRequest, out: str | os.PathLike) -> dict:
    """Write the archive ``out`` (.tar.gz, atomically); return its reproducibility figures."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".archive-", dir=out.parent) as tmp:
        root = Path(tmp) / BUNDLE_DIR
        root.mkdir()
        figures = write_bundle(request, root)
        with atomic_path(out) as part, tarfile.open(part, "w:gz") as t:
            t.add(root, arcname=BUNDLE_DIR, filter=_reset)
    logger.info("wrote %s (%.1f MB)", out, out.stat().st_size / 2**20)
    return figures
