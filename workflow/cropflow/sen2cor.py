"""Sen2Cor (ESA's ``L2A_Process``) on Level-1C products: installation, version, command line, validation of
the produced Level-2A product, atomic placement.

One job corrects one L1C product into ``results/s2/l2a/<L1C name>/`` holding the produced
``<L2A name>.SAFE`` and ``sen2cor.json`` (provenance: versions, command, GIPP, timing). Sen2Cor runs in a
fresh per-job folder next to the output (its own ``SEN2COR_HOME``, ``--work_dir`` and ``--output_dir``), so
parallel jobs never share a folder, and the output folder appears only once the product has been validated:
a failed, killed or timed-out run leaves nothing that a rerun would trust. Only ``run_sen2cor`` and
``sen2cor_version`` start a process; the rest is pure or reads files.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors

from cropflow.atomic import atomic_path
from cropflow.checksum import sha256_file
from cropflow.s2 import (L1CProduct, L2AProduct, local_name, normalise_band, open_l2a, parse_product_name,
                         validate_l1c)

log = logging.getLogger(__name__)

L2A_PROCESS_MISSING = (
    "Sen2Cor's L2A_Process not found{where}: {product} is a Level-1C product and cropflow reads Level-2A "
    "reflectance. Install Sen2Cor (ESA STEP: `bash Sen2Cor-02.12.03-Linux64.run --target /opt/sen2cor`, then put "
    "/opt/sen2cor/bin on PATH or set s2.sen2cor.l2a_process), or put the Level-2A product of this acquisition "
    "in {folder} (it is used when present, s2.prefer: l2a)"
)
#: resolutions Sen2Cor's --resolution accepts
RESOLUTIONS = (10, 20, 60)
#: provenance file written next to the produced product
PROVENANCE = "sen2cor.json"
#: 10 m bands a 10 m run must produce
_BANDS_10M = ("B02", "B03", "B04", "B08")
_VERSION_RE = re.compile(r"Version:\s*v?(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)


class Sen2CorError(RuntimeError):
    """Sen2Cor failed, timed out, or produced no valid Level-2A product."""


@dataclass(frozen=True)
class Sen2CorOptions:
    """The ``s2.sen2cor`` config section."""

    l2a_process: str = ""            # path of L2A_Process; "" finds it on PATH
    resolution: int = 10             # --resolution: 10 | 20 | 60
    gipp: str = ""                   # --GIP_L2A file; "" = the installation's default
    timeout_minutes: float = 240.0   # the run is stopped (and fails) after this

    @classmethod
    def from_config(cls, section: Mapping | None) -> "Sen2CorOptions":
        section = dict(section or {})
        unknown = sorted(set(section) - {"l2a_process", "resolution", "gipp", "timeout_minutes"})
        if unknown:
            raise ValueError(f"s2.sen2cor: unknown keys {unknown}; use l2a_process, resolution, gipp, timeout_minutes")
        opts = cls(l2a_process=str(section.get("l2a_process") or ""), resolution=int(section.get("resolution", 10)),
                   gipp=str(section.get("gipp") or ""), timeout_minutes=float(section.get("timeout_minutes", 240.0)))
        if opts.resolution not in RESOLUTIONS:
            raise ValueError(f"s2.sen2cor.resolution {opts.resolution}: give one of {RESOLUTIONS}")
        if opts.timeout_minutes <= 0:
            raise ValueError(f"s2.sen2cor.timeout_minutes {opts.timeout_minutes}: give a positive number of minutes")
        return opts


# ----------------------------------------------------------------------------------------------- installation


def find_l2a_process(configured: str | os.PathLike | None, product: str = "", folder: str = "") -> Path:
    """Path of ``L2A_Process``: ``configured`` (s2.sen2cor.l2a_process) if set, else the first on PATH.

    Raises FileNotFoundError (``L2A_PROCESS_MISSING``) naming the product, how to install Sen2Cor, the config key
    and the alternative (supply the Level-2A product) when there is none or the configured path is not an
    executable file."""
    fields = {"product": product or "this product", "folder": folder or "inputs.s2"}
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        raise FileNotFoundError(L2A_PROCESS_MISSING.format(
            where=f" at s2.sen2cor.l2a_process = {str(configured)!r} (not an executable file)", **fields))
    found = shutil.which("L2A_Process")
    if found is None:
        raise FileNotFoundError(L2A_PROCESS_MISSING.format(where=" on PATH", **fields))
    return Path(found).resolve()


def parse_sen2cor_version(text: str) -> str | None:
    """The version in ``L2A_Process --help`` output ("... (Sen2Cor). Version: 2.12.03, created: ..." ->
    ``2.12.03``; Sen2Cor 3: "Sen2Cor. Version: 03.03.01"), or None."""
    match = _VERSION_RE.search(text)
    return match.group(1) if match else None


def sen2cor_version(exe: str | os.PathLike, *, timeout: float = 120.0, env: Mapping[str, str] | None = None) -> str:
    """Version of the Sen2Cor installation of ``exe``, read from ``exe --help``.

    Raises RuntimeError naming ``exe`` when it does not run or prints no version."""
    try:
        done = subprocess.run([str(exe), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=dict(env) if env is not None else None, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"{exe} --help did not run ({err}): check the Sen2Cor installation "
                           f"(s2.sen2cor.l2a_process)") from err
    version = parse_sen2cor_version(done.stdout or "")
    if version is None:
        tail = "\n".join((done.stdout or "").strip().splitlines()[-5:])
        raise RuntimeError(f"{exe} --help printed no Sen2Cor version (exit code {done.returncode}); is it Sen2Cor's "
                           f"L2A_Process? Output:\n{tail}")
    return version


# --------------------------------------------------------------------------------------------- command line


def build_command(exe: str | os.PathLike, l1c_safe: str | os.PathLike, output_dir: str | os.PathLike,
                  work_dir: str | os.PathLike, resolution: int, gipp: str | os.PathLike | None) -> list[str]:
    """The ``L2A_Process`` argv: ``<exe> <L1C .SAFE> --resolution R --output_dir O --work_dir W [--GIP_L2A G]``.

    ValueError for a resolution Sen2Cor does not offer, an input that is not an unzipped ``.SAFE`` folder name
    and a GIPP file that does not exist."""
    if int(resolution) not in RESOLUTIONS:
        raise ValueError(f"s2.sen2cor.resolution {resolution}: Sen2Cor offers {RESOLUTIONS}")
    if not str(l1c_safe).rstrip("/").endswith(".SAFE"):
        raise ValueError(f"{l1c_safe}: Sen2Cor needs an unzipped <name>.SAFE folder")
    cmd = [str(exe), str(l1c_safe), "--resolution", str(int(resolution)), "--output_dir", str(output_dir),
           "--work_dir", str(work_dir)]
    if gipp:
        if not Path(gipp).is_file():
            raise FileNotFoundError(f"s2.sen2cor.gipp {gipp} does not exist: give an L2A_GIPP.xml file or \"\" for "
                                    f"the installation's default")
        cmd += ["--GIP_L2A", str(gipp)]
    return cmd


def l2a_name_pattern(l1c_name: str) -> re.Pattern[str]:
    """Names of the Level-2A products Sen2Cor may make of ``l1c_name``: same platform, sensing time, relative
    orbit and tile; any baseline (local processings carry N9999 / N0xxx) and generation time."""
    parsed = parse_product_name(l1c_name)
    if parsed is None or parsed["level"] != "L1C":
        raise ValueError(f"{l1c_name}: not a Level-1C product name (S2x_MSIL1C_<sensing>_Nxxxx_Rxxx_Txxxxx_<gen>)")
    sensing = parsed["sensing_time"].strftime("%Y%m%dT%H%M%S")  # type: ignore[union-attr]
    return re.compile(rf"^{parsed['platform']}_MSIL2A_{sensing}_N\d{{4}}_R{int(parsed['relative_orbit']):03d}"
                      rf"_T{parsed['mgrs_tile']}_\d{{8}}T\d{{6}}\.SAFE$")


def find_produced_product(output_dir: str | os.PathLike, l1c_name: str) -> Path:
    """The one ``.SAFE`` folder of ``output_dir`` named as an L2A of ``l1c_name``; Sen2CorError listing what is
    there otherwise (Sen2Cor has been seen to exit 0 without a product)."""
    pattern = l2a_name_pattern(l1c_name)
    folder = Path(output_dir)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    matches = [name for name in present if pattern.match(name) and (folder / name).is_dir()]
    if len(matches) != 1:
        parsed = parse_product_name(l1c_name)
        assert parsed is not None
        expected = (f"{parsed['platform']}_MSIL2A_{parsed['sensing_time']:%Y%m%dT%H%M%S}_N*_"
                    f"R{int(parsed['relative_orbit']):03d}_T{parsed['mgrs_tile']}_*.SAFE")
        what = "wrote no" if not matches else f"wrote {len(matches)}"
        raise Sen2CorError(f"Sen2Cor {what} {expected} for {l1c_name} (its output folder holds: "
                           f"{', '.join(present) or 'nothing'})")
    return folder / matches[0]


# ----------------------------------------------------------------------------------------------- validation


def _product_type(product: L2AProduct) -> str | None:
    assert product._source is not None
    root = ET.fromstring(product._source.read("MTD_MSIL2A.xml"))
    for el in root.iter():
        if local_name(el.tag) == "PRODUCT_TYPE" and el.text:
            return el.text.strip()
    return None


def validate_l2a(safe: str | os.PathLike, l1c: L1CProduct, bands: Sequence[str], resolution: int) -> dict:
    """Check that ``safe`` is a complete Level-2A product of the acquisition of ``l1c``; Sen2CorError otherwise.

    Valid means: ``open_l2a`` reads it (metadata, SCL listed, quantification, baseline, orbit, cloud cover);
    PRODUCT_TYPE is S2MSI2A; platform, MGRS tile, relative orbit and sensing time (to the second) equal the
    L1C's; every band of ``bands`` and SCL exists, opens with a CRS and covers the same extent as SCL; SCL
    decodes completely (a truncated codestream fails) with values 0..11; a 10 m run has the 10 m files of
    B02/B03/B04/B08. A missing ``QI_DATA/MSK_CLDPRB_20m.jp2`` is only a warning. Returns a summary
    {l2a, baseline, bands: {band: file}, scl}.
    """
    safe = Path(safe)
    try:
        product = open_l2a(safe)
    except (OSError, ValueError) as err:
        raise Sen2CorError(f"produced L2A {safe.name} is not readable: {err}") from err
    problems: list[str] = []
    product_type = _product_type(product)
    if product_type != "S2MSI2A":
        problems.append(f"PRODUCT_TYPE is {product_type!r}, not S2MSI2A")
    mine = (product.platform, product.mgrs_tile, product.relative_orbit, product.datetime.replace(microsecond=0))
    theirs = (l1c.platform, l1c.mgrs_tile, l1c.relative_orbit, l1c.datetime.replace(microsecond=0))
    if mine != theirs:
        problems.append(f"it is for {mine[0]} tile {mine[1]} orbit {mine[2]} at {mine[3]:%Y-%m-%dT%H:%M:%S}, not the "
                        f"L1C's {theirs[0]} tile {theirs[1]} orbit {theirs[2]} at {theirs[3]:%Y-%m-%dT%H:%M:%S}")
    files: dict[str, str] = {}
    extent = None
    for band in ["SCL", *(normalise_band(b) for b in bands)]:
        try:
            path = product.band_path(band)
            with rasterio.open(path) as src:
                if src.crs is None:
                    problems.append(f"band {band} has no georeferencing")
                    continue
                bounds = tuple(round(v, 3) for v in src.bounds)
                if band == "SCL":
                    scl = src.read(1)
                    if scl.size and int(np.max(scl)) > 11:
                        problems.append(f"SCL holds class {int(np.max(scl))} (valid classes are 0..11)")
                    extent = bounds
                elif extent is not None and bounds != extent:
                    problems.append(f"band {band} covers {bounds}, SCL {extent}")
            files[band] = path
        except (OSError, ValueError, rasterio.errors.RasterioError) as err:
            problems.append(str(err))
    if int(resolution) == 10:
        for band in _BANDS_10M:
            try:
                if product.band_resolution(band) != 10:
                    problems.append(f"a 10 m run has no 10 m file of {band}")
            except (OSError, ValueError) as err:
                problems.append(str(err))
    if problems:
        raise Sen2CorError(f"produced L2A {product.name} of {l1c.name} is not valid: " + "; ".join(problems))
    granules = list(safe.glob("GRANULE/*/QI_DATA/MSK_CLDPRB_20m.jp2"))
    if not granules:
        log.warning("%s has no QI_DATA/MSK_CLDPRB_20m.jp2 (Sen2Cor's cloud probability); it is not needed here",
                    product.name)
    return {"l2a": product.name, "baseline": product.baseline, "bands": files, "scl": files["SCL"]}


# ----------------------------------------------------------------------------------------------------- the job


def _l1c_safe(l1c_path: Path, input_dir: Path) -> Path:
    """The L1C as an unzipped .SAFE folder: the folder itself, or a zip extracted into ``input_dir``."""
    if l1c_path.is_dir():
        return l1c_path.resolve()
    with zipfile.ZipFile(l1c_path) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"{l1c_path}: member {bad} fails its CRC check; the zip is corrupt, re-download it")
        zf.extractall(input_dir)
    safes = [p for p in input_dir.iterdir() if p.suffix == ".SAFE" and (p / "MTD_MSIL1C.xml").is_file()]
    if len(safes) != 1:
        raise ValueError(f"{l1c_path}: expected one <name>.SAFE/MTD_MSIL1C.xml in the zip, found {len(safes)}")
    return safes[0].resolve()


def _remove_stale_parts(out_dir: Path) -> None:
    """Remove the temporary folders of earlier, killed runs of this job (``.<name>.*.part`` next to the output).
    Snakemake never runs one job twice at once, so they belong to no live run."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.part"):
        log.warning("removing %s left by an interrupted earlier run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def sen2cor_environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment L2A_Process runs in: ``base`` with its own ``SEN2COR_HOME`` (logs and default config of
    this job only) and without PYTHONPATH/PYTHONHOME, which belong to cropflow's interpreter, not to the Python
    that Sen2Cor ships."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["SEN2COR_HOME"] = str(home)
    return env


def _run_streaming(cmd: list[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float,
                   logger: logging.Logger) -> tuple[int, list[str]]:
    """Run ``cmd``, sending each output line to ``logger``; (exit code, last 20 lines). The whole process group
    is killed on timeout (subprocess.TimeoutExpired is raised)."""
    tail: collections.deque[str] = collections.deque(maxlen=20)
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            logger.info("L2A_Process: %s", line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
        raise
    reader.join(5)
    return code, list(tail)


def run_sen2cor(l1c_path: str | os.PathLike, out_dir: str | os.PathLike, options: Sen2CorOptions, *,
                bands: Sequence[str], logger: logging.Logger = log) -> Path:
    """Correct one Level-1C product with Sen2Cor into ``out_dir`` (``<L2A name>.SAFE`` + ``sen2cor.json``).

    1. ``validate_l1c``: a missing band fails here, before Sen2Cor starts.
    2. ``find_l2a_process`` (missing installation: FileNotFoundError saying what to do) and its version.
    3. In a fresh folder next to ``out_dir`` (``atomic_path``): the L1C (a zip is extracted), Sen2Cor's
       ``--work_dir``, ``--output_dir`` and its own ``SEN2COR_HOME``, so parallel jobs never share a folder.
    4. ``L2A_Process`` runs with the output streamed to ``logger``; a non-zero exit, a timeout
       (``options.timeout_minutes``) or no product raise Sen2CorError.
    5. ``validate_l2a`` on the product; the product and its provenance are moved into the temporary output,
       which replaces ``out_dir`` only now. On any failure the temporary folder is removed and ``out_dir``
       does not exist, so a rerun never trusts a half-written L2A.
    """
    l1c_path, out_dir = Path(l1c_path), Path(out_dir)
    l1c = validate_l1c(l1c_path)
    exe = find_l2a_process(options.l2a_process, l1c.name, str(l1c_path.parent))
    gipp = Path(options.gipp).resolve() if options.gipp else None
    build_command(exe, f"{l1c.name}.SAFE", "o", "w", options.resolution, gipp)  # option errors before any work
    _remove_stale_parts(out_dir)
    started = time.monotonic()
    with atomic_path(out_dir, directory=True) as target:
        tmp = target.parent
        dirs = {k: tmp / k for k in ("input", "work", "l2a", "home")}
        for d in dirs.values():
            d.mkdir()
        env = sen2cor_environment(os.environ, dirs["home"])
        version = sen2cor_version(exe, env=env)
        safe = _l1c_safe(l1c_path, dirs["input"])
        cmd = build_command(exe, safe, dirs["l2a"], dirs["work"], options.resolution, gipp)
        logger.info("Sen2Cor %s on %s: %s", version, l1c.name, " ".join(cmd))
        timeout_s = options.timeout_minutes * 60.0
        try:
            code, tail = _run_streaming(cmd, cwd=tmp, env=env, timeout_s=timeout_s, logger=logger)
        except subprocess.TimeoutExpired as err:
            raise Sen2CorError(f"L2A_Process {version} on {l1c.name} did not finish within "
                               f"s2.sen2cor.timeout_minutes = {options.timeout_minutes:g}; it was stopped and its "
                               f"partial output removed: raise the timeout or check the installation") from err
        if code != 0:
            raise Sen2CorError(f"L2A_Process {version} exited with code {code} on {l1c.name}; last lines:\n"
                               + "\n".join(tail) + "\nThe partial output was removed; fix the cause and rerun")
        product = find_produced_product(dirs["l2a"], l1c.name)
        summary = validate_l2a(product, l1c, bands, options.resolution)
        target.mkdir()
        shutil.move(str(product), target / product.name)
        used_gipp = gipp if gipp is not None else next(iter(sorted(dirs["home"].rglob("L2A_GIPP.xml"))), None)
        if used_gipp is not None:
            shutil.copyfile(used_gipp, target / "L2A_GIPP.xml")
        provenance = {
            "l1c": l1c.name, "l1c_metadata_sha256": l1c.metadata_sha256, "l2a": summary["l2a"],
            "baseline": summary["baseline"], "sen2cor_version": version, "executable": str(exe),
            "command": [*cmd[:1], f"{l1c.name}.SAFE", *cmd[2:]],
            "resolution": options.resolution, "gipp": str(gipp) if gipp else "default",
            "gipp_sha256": sha256_file(used_gipp) if used_gipp is not None else None,
            "seconds": round(time.monotonic() - started, 1), "host": socket.gethostname(),
        }
        (target / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("%s: Sen2Cor %s made %s in %.0f s", l1c.name, version, summary["l2a"], provenance["seconds"])
    return out_dir


def produced_l2a(folder: str | os.PathLike) -> Path:
    """The Level-2A product in a ``run_sen2cor`` output folder (``results/s2/l2a/<scene>/``).

    FileNotFoundError when the folder has no ``sen2cor.json`` or not exactly one ``.SAFE`` (an incomplete
    folder that was not written by ``run_sen2cor``: delete it and rerun the sen2cor job)."""
    folder = Path(folder)
    safes = sorted(p for p in folder.glob("*.SAFE") if p.is_dir()) if folder.is_dir() else []
    if not (folder / PROVENANCE).is_file() or len(safes) != 1:
        raise FileNotFoundError(f"{folder} is not a complete Sen2Cor output (it needs {PROVENANCE} and one "
                                f"<L2A>.SAFE): delete it and rerun the sen2cor job")
    return safes[0]


def resolve_s2_product(path: str | os.PathLike) -> Path:
    """The Level-2A product to read for an ingest input: ``path`` itself (an L2A ``.SAFE``/``.zip``), or the
    product inside a Sen2Cor output folder (one holding ``sen2cor.json``)."""
    path = Path(path)
    if path.is_dir() and (path / PROVENANCE).is_file():
        return produced_l2a(path)
    return path


def provenance(path: str | os.PathLike) -> dict | None:
    """The ``sen2cor.json`` of a Sen2Cor output folder, or None for any other input (an archive L2A)."""
    doc = Path(path) / PROVENANCE
    return json.loads(doc.read_text()) if Path(path).is_dir() and doc.is_file() else None
