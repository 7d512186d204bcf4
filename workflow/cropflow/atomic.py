"""Atomic outputs: write to a temporary sibling, rename onto the final path only when complete."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    On error the temporary file or folder is removed and ``path`` is left untouched, so a
    rerun never trusts a half-written output. ``directory=True`` is for folder outputs
    (Zarr stores, SAFE products). The temporaries a killed writer of ``path`` left behind (it could not
    clean up) are removed first: one job writes an output at a time.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-1:])
    stale = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.part")  # mkdtemp's 8 random characters
    for old in final.parent.iterdir():
        if stale.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    target = tmp / f"out{suffix}"
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written for {final}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
