"""SHA-256 of files and of folders (SAFE products, model bundles, Zarr stores), independent of where they lie."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (symlinks followed), sorted by relative POSIX path."""
    out = [Path(root) / name for root, _, names in os.walk(folder, followlinks=True) for name in names]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def sha256_tree(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (a SAFE product, a model bundle): the sha256 of the lines
    ``<sha256 of file>  <relative POSIX path>\\n`` of its files in path order, so the same tree hashes the
    same wherever it lies and whatever order the file system lists it in."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found")
    h = hashlib.sha256()
    for f in files_under(path):
        h.update(f"{sha256_file(f)}  {f.relative_to(path).as_posix()}\n".encode())
    return h.hexdigest()
