"""Runtime environment of the SNAP engine: importing pyroSAR and locating ESA SNAP's ``gpt``.

pyroSAR (through spatialist) needs an sqlite3 module that can load extensions. Python builds without
extension loading get the ``pysqlite3`` package registered as ``pysqlite2`` (the name spatialist falls
back to), only when the interpreter's own sqlite3 cannot load extensions. Nothing else in cropflow imports
pyroSAR at module import time: call :func:`import_pyrosar`.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

GPT_MISSING = (
    "SNAP's gpt not found{where}: install ESA SNAP (the microwave toolbox) and put its bin/ on PATH, "
    "or set s1.snap.gpt, or use s1.engine: native"
)
_VERSION_RE = re.compile(r"(?:version|SNAP)\s*[:=]?\s*v?(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)


def sqlite_loads_extensions() -> bool:
    """Whether the interpreter's sqlite3 module can load extensions (what spatialist requires)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.enable_load_extension(True)
    except (AttributeError, sqlite3.OperationalError):
        return False
    finally:
        conn.close()
    return True


def _register_pysqlite2() -> None:
    """Expose ``pysqlite3`` as ``pysqlite2`` / ``pysqlite2.dbapi2`` for spatialist's fallback import."""
    if "pysqlite2" in sys.modules:
        return
    try:
        dbapi2 = importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        raise ImportError(
            "pyroSAR needs an sqlite3 that can load extensions; this Python's sqlite3 cannot and the "
            "'pysqlite3-binary' package is missing: install it (pip install pysqlite3-binary) or use a Python "
            "built with sqlite extension loading"
        ) from None
    package = ModuleType("pysqlite2")
    package.dbapi2 = dbapi2  # type: ignore[attr-defined]
    sys.modules["pysqlite2"] = package
    sys.modules["pysqlite2.dbapi2"] = dbapi2
    logger.debug("registered pysqlite3 as pysqlite2 (sqlite3 cannot load extensions)")


def import_pyrosar() -> ModuleType:
    """Import and return the ``pyroSAR`` module, providing ``pysqlite2`` first when sqlite3 needs it."""
    if not sqlite_loads_extensions():
        _register_pysqlite2()
    try:
        return importlib.import_module("pyroSAR")
    except ImportError as err:
        raise ImportError(
            f"pyroSAR could not be imported ({err}): install pyroSAR and the GDAL Python bindings "
            "(pip install pyroSAR gdal-wheel), or use s1.engine: native"
        ) from err


def find_gpt(configured: str | os.PathLike | None = None) -> Path:
    """Path of SNAP's ``gpt``: ``configured`` (the s1.snap.gpt key) if set, else the first ``gpt`` on PATH.

    Raises FileNotFoundError naming what to install when there is none (or the configured path is not an
    executable file).
    """
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        raise FileNotFoundError(GPT_MISSING.format(where=f" at s1.snap.gpt = {str(configured)!r}"))
    found = shutil.which("gpt")
    if found is None:
        raise FileNotFoundError(GPT_MISSING.format(where=" on PATH"))
    return Path(found).resolve()


def parse_snap_version(text: str) -> str | None:
    """The first version number (``13.0.0``) in a SNAP ``VERSION.txt`` or ``gpt --diag`` output, else None."""
    match = _VERSION_RE.search(text)
    return match.group(1) if match else None


def snap_version(gpt: str | os.PathLike | None = None, *, timeout: float = 120.0) -> str:
    """Version of the SNAP installation that owns ``gpt`` (found with :func:`find_gpt` when not given).

    Reads ``<snap home>/VERSION.txt`` when the installation has one, else runs ``gpt --diag``.
    Raises FileNotFoundError when gpt is missing and RuntimeError when no version can be read.
    """
    exe = Path(gpt) if gpt else find_gpt()
    if not exe.is_file():
        raise FileNotFoundError(GPT_MISSING.format(where=f" at {str(exe)!r}"))
    version_file = exe.resolve().parent.parent / "VERSION.txt"
    if version_file.is_file():
        version = parse_snap_version(version_file.read_text(errors="replace"))
        if version:
            return version
    try:
        proc = subprocess.run([str(exe), "--diag"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"could not run {exe} --diag to read the SNAP version: {err}") from err
    version = parse_snap_version(proc.stdout + proc.stderr)
    if version is None:
        raise RuntimeError(
            f"{exe} --diag printed no SNAP version (exit code {proc.returncode}): check the SNAP installation "
            "(run 'gpt --diag' by hand) or set s1.snap.gpt to a working gpt"
        )
    return version
