"""Labelled samples of one split (train, val or test) in memory and in the Zarr sample store.

Store layout (``results/samples/<split>.zarr``, a Zarr 3 group):

- one float32 array (N, T, C) per model input, named as in ``cropflow.cube.cube_inputs`` (raw values);
  optional patches ``<input>_patch`` (N, h, w, T, C);
- ``y`` int16 legend class id, ``parcel_id`` int64, ``tile_index`` int16 (index into ``tiles``),
  ``row``, ``col`` int32 (pixel position in the tile);
- attrs: ``inputs`` {name: {"bands": [...], "times": [ISO dates]}}, ``tiles`` [tile ids],
  ``class_ids`` [legend ids] (the model's output order), optional ``class_names``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from cropflow.atomic import atomic_path

log = logging.getLogger(__name__)

PATCH_SUFFIX = "_patch"
# Per-sample arrays besides the inputs, with their on-disk dtypes.
RECORD_DTYPES: dict[str, str] = {"y": "int16", "parcel_id": "int64", "tile_index": "int16",
                                 "row": "int32", "col": "int32"}
CHUNK_BYTES = 16 * 2**20


@dataclass
class SampleSet:
    """The samples of one split.

    ``x`` maps input name -> (N, T, C) raw values; ``y`` legend class ids (N,); ``parcel_id``, ``tile_index``
    (N,); ``inputs`` the per-input metadata {name: {"bands": [...], "times": [...]}}; ``class_ids`` the legend
    ids in model output order. ``row``/``col`` (pixel position), ``tiles`` (tile ids indexed by
    ``tile_index``), ``patches`` ({input: (N, h, w, T, C)}) and ``class_names`` are optional.
    """

    x: dict[str, np.ndarray]
    y: np.ndarray
    parcel_id: np.ndarray
    tile_index: np.ndarray
    inputs: dict[str, dict]
    class_ids: list[int]
    row: np.ndarray | None = None
    col: np.ndarray | None = None
    tiles: list[str] = field(default_factory=list)
    patches: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.x:
            raise ValueError("SampleSet needs at least one input array in x")
        self.x = {str(k): np.asarray(v) for k, v in self.x.items()}
        self.y = np.asarray(self.y)
        self.parcel_id = np.asarray(self.parcel_id)
        self.tile_index = np.asarray(self.tile_index)
        self.class_ids = [int(c) for c in self.class_ids]
        self.patches = {str(k): np.asarray(v) for k, v in self.patches.items()}
        n = self.y.shape[0] if self.y.ndim == 1 else -1
        if n < 0:
            raise ValueError(f"SampleSet: y must be 1-D, got shape {self.y.shape}")
        for name, a in self.x.items():
            if a.ndim != 3 or a.shape[0] != n:
                raise ValueError(f"SampleSet: input '{name}' must be (N={n}, T, C), got shape {a.shape}")
            meta = self.inputs.get(name)
            if meta is None:
                raise ValueError(f"SampleSet: input '{name}' has no entry in inputs (entries: {sorted(self.inputs)})")
            if "bands" in meta and len(meta["bands"]) != a.shape[2]:
                raise ValueError(f"SampleSet: input '{name}' has {a.shape[2]} channels but "
                                 f"{len(meta['bands'])} band names")
            if "times" in meta and len(meta["times"]) != a.shape[1]:
                raise ValueError(f"SampleSet: input '{name}' has {a.shape[1]} time steps but "
                                 f"{len(meta['times'])} times")
            if name in RECORD_DTYPES or name.endswith(PATCH_SUFFIX):
                raise ValueError(f"SampleSet: input name '{name}' is reserved in the sample store; rename it")
        for key in ("parcel_id", "tile_index", "row", "col"):
            a = getattr(self, key)
            if a is not None:
                a = np.asarray(a)
                setattr(self, key, a)
                if a.shape != (n,):
                    raise ValueError(f"SampleSet: {key} must have shape ({n},), got {a.shape}")
        for name, a in self.patches.items():
            if name not in self.x or a.ndim != 5 or a.shape[0] != n:
                raise ValueError(f"SampleSet: patches '{name}' must belong to an input and be (N={n}, h, w, T, C),"
                                 f" got shape {a.shape}")
        if len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError(f"SampleSet: class_ids has duplicates: {self.class_ids}")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) != len(self.class_ids):
                raise ValueError("SampleSet: class_names and class_ids differ in length")
        unknown = np.setdiff1d(np.unique(self.y), self.class_ids)
        if unknown.size:
            raise ValueError(f"SampleSet: labels {unknown.tolist()} are not in class_ids {self.class_ids}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape (T, C) of every input: the ``inputs`` argument of the model builders."""
        return {name: tuple(int(s) for s in a.shape[1:]) for name, a in sorted(self.x.items())}

    def subset(self, mask: np.ndarray) -> "SampleSet":
        """The samples selected by a boolean mask (N,) or an integer index array (copies)."""
        sel = np.asarray(mask)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ValueError(f"subset: boolean mask of shape {sel.shape} for {len(self)} samples")
        opt = {k: (None if getattr(self, k) is None else getattr(self, k)[sel]) for k in ("row", "col")}
        return SampleSet(
            x={k: v[sel] for k, v in self.x.items()}, y=self.y[sel], parcel_id=self.parcel_id[sel],
            tile_index=self.tile_index[sel], inputs=dict(self.inputs), class_ids=list(self.class_ids),
            tiles=list(self.tiles), patches={k: v[sel] for k, v in self.patches.items()},
            class_names=None if self.class_names is None else list(self.class_names), **opt,
        )


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks along the sample axis only (whole samples per chunk, about CHUNK_BYTES each)."""
    per_sample = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // per_sample))
    return (rows, *shape[1:])


def _write(group: zarr.Group, name: str, data: np.ndarray) -> None:
    group.create_array(name, data=data, chunks=_chunks(data.shape, data.dtype.itemsize))


def save_split(path: str | os.PathLike, samples: SampleSet) -> Path:
    """Write a split's sample store (Zarr 3 group) atomically to ``path``."""
    with atomic_path(path, directory=True) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for name, a in sorted(samples.x.items()):
            _write(group, name, np.ascontiguousarray(a, dtype=np.float32))
        for name, a in sorted(samples.patches.items()):
            _write(group, name + PATCH_SUFFIX, np.ascontiguousarray(a, dtype=np.float32))
        for key, dtype in RECORD_DTYPES.items():
            a = getattr(samples, key)
            if a is None:
                continue
            info = np.iinfo(dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise ValueError(f"save_split {path}: {key} values outside the {dtype} range")
            _write(group, key, np.ascontiguousarray(a, dtype=dtype))
        attrs = {
            "inputs": {k: {kk: list(vv) if isinstance(vv, (list, tuple, np.ndarray)) else vv for kk, vv in v.items()}
                       for k, v in samples.inputs.items() if k in samples.x},
            "tiles": [str(t) for t in samples.tiles],
            "class_ids": [int(c) for c in samples.class_ids],
        }
        if samples.class_names is not None:
            attrs["class_names"] = list(samples.class_names)
        group.attrs.update(attrs)
    log.info("wrote %d samples to %s", len(samples), path)
    return Path(path)


def load_split(path: str | os.PathLike) -> SampleSet:
    """Read a split's sample store written by :func:`save_split` (or the samples stage)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sample store {path} not found: run the samples stage first")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a group
        raise ValueError(f"{path} is not a Zarr sample store ({err}); rerun the samples stage") from err
    attrs = dict(group.attrs)
    for key in ("inputs", "class_ids"):
        if key not in attrs:
            raise ValueError(f"sample store {path} lacks the '{key}' attribute; rerun the samples stage")
    names = set(group.array_keys())

    def read(key: str, required: bool = True) -> np.ndarray | None:
        if key not in names:
            if required:
                raise ValueError(f"sample store {path} lacks the array '{key}'; rerun the samples stage")
            return None
        return np.asarray(group[key][...])

    inputs = {str(k): dict(v) for k, v in attrs["inputs"].items()}
    x = {name: read(name) for name in sorted(inputs)}
    patches = {name: read(name + PATCH_SUFFIX) for name in sorted(inputs) if name + PATCH_SUFFIX in names}
    try:
        return SampleSet(
            x=x, y=read("y"), parcel_id=read("parcel_id"), tile_index=read("tile_index"), inputs=inputs,
            class_ids=list(attrs["class_ids"]), row=read("row", False), col=read("col", False),
            tiles=list(attrs.get("tiles", [])), patches=patches, class_names=attrs.get("class_names"),
        )
    except ValueError as err:
        raise ValueError(f"sample store {path}: {err}") from err



@dataclass
class StoredSplit:
    """A split left in its Zarr store: labels and metadata in memory, the input arrays read block by block.

    ``arrays`` maps an input name (or ``<input>_patch``) to its zarr array (N, ...); ``block`` is the number of
    samples per storage chunk, the unit of reading."""

    path: Path
    arrays: dict[str, zarr.Array]
    y: np.ndarray
    inputs: dict[str, dict]
    class_ids: list[int]
    class_names: list[str] | None
    block: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the input arrays once in memory (float32)."""
        return int(sum(np.prod(a.shape) * 4 for a in self.arrays.values()))

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arrays[key].shape[1:])

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.arrays[key][start:stop], dtype=np.float32)

    def load(self) -> SampleSet:
        return load_split(self.path)


def open_split(path: str | os.PathLike) -> StoredSplit:
    """Open a split's sample store without reading its input arrays (see :class:`StoredSplit`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sample store {path} not found: run the samples stage first")
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    inputs = {str(k): dict(v) for k, v in attrs["inputs"].items()}
    names = set(group.array_keys())
    keys = [n for n in sorted(inputs)] + [n + PATCH_SUFFIX for n in sorted(inputs) if n + PATCH_SUFFIX in names]
    arrays = {k: group[k] for k in keys}
    block = min(int(a.chunks[0]) for a in arrays.values())
    return StoredSplit(path, arrays, np.asarray(group["y"][...]), inputs, list(attrs["class_ids"]),
                       attrs.get("class_names"), block)
