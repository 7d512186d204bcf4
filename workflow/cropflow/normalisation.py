"""Per-channel min-max normalisation of model inputs, fitted on the training split only.

SCIENCE.md (Sentinel-1 processing): "features min-max normalised". For an input of shape (N, T, C) the
minimum and maximum of each channel c are taken over all samples and time steps of the training split:

    x_norm = (x - min_c) / (max_c - min_c)

Training values fall in [0, 1] by construction; validation, test and map pixels may fall outside and are
clipped to [-0.5, 1.5] so that one outlier cannot push a network far out of the range it was trained on.
A constant channel (max_c == min_c) carries no information and maps to 0.

Missing values: NaN (or inf) inputs are never hidden. :func:`apply_minmax` returns the normalised array with
0 (the training minimum) at missing positions **and** a boolean mask of those positions, so the caller decides
what a missing value means (the model stack predicts no class for a sample without any observation and logs
how many samples had gaps filled with 0).

On disk (``normalisation.json``, sample-store seam):
``{input_name: {"bands": [C names], "min": [C floats], "max": [C floats]}}``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cropflow.atomic import atomic_path

log = logging.getLogger(__name__)

CLIP_RANGE: tuple[float, float] = (-0.5, 1.5)


@dataclass(frozen=True)
class MinMax:
    """Channel ranges of one model input: band names and per-channel minimum and maximum (float64, (C,))."""

    bands: tuple[str, ...]
    min: np.ndarray
    max: np.ndarray

    def __post_init__(self) -> None:
        mn = np.asarray(self.min, dtype=np.float64).reshape(-1)
        mx = np.asarray(self.max, dtype=np.float64).reshape(-1)
        if not (len(self.bands) == mn.size == mx.size):
            raise ValueError(
                f"normalisation: {len(self.bands)} band names but {mn.size} minima and {mx.size} maxima")
        if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
            raise ValueError("normalisation: minima and maxima must be finite numbers")
        if (mx < mn).any():
            bad = [b for b, lo, hi in zip(self.bands, mn, mx) if hi < lo]
            raise ValueError(f"normalisation: max < min for bands {bad}")
        object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        object.__setattr__(self, "min", mn)
        object.__setattr__(self, "max", mx)


# --------------------------------------------------------------------------------------------------- pure math


def fit_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of ``x`` (N, T, C) over samples and time, ignoring NaN.

    Returns two float64 arrays of shape (C,). A channel without any finite value cannot be normalised; it is
    given min = max = 0 (so :func:`apply_minmax` maps it to 0) and a warning is logged naming the channel.
    Raises ValueError when ``x`` is not 3-D or has no samples.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"fit_minmax expects an (N, T, C) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"fit_minmax: no samples to fit on (shape {x.shape})")
    x = x.astype(np.float64, copy=False) if x.dtype.kind != "f" else x
    mn = np.fmin.reduce(x, axis=(0, 1)).astype(np.float64)  # fmin/fmax skip NaN without copying x
    mx = np.fmax.reduce(x, axis=(0, 1)).astype(np.float64)
    for c in np.flatnonzero(~(np.isfinite(mn) & np.isfinite(mx))):  # all-NaN or infinite values: slow path
        v = x[..., c]
        v = v[np.isfinite(v)]
        if v.size:
            mn[c], mx[c] = float(v.min()), float(v.max())
        else:
            log.warning("normalisation: channel %d has no finite value; it is normalised to 0", c)
            mn[c] = mx[c] = 0.0
    return mn, mx


def scale_minmax(x: np.ndarray, mn: np.ndarray, mx: np.ndarray, clip: tuple[float, float] = CLIP_RANGE
                 ) -> np.ndarray:
    """Min-max normalise ``x`` (..., C) per channel: (x - min) / (max - min), clipped to ``clip``, as a new float32
    array (constant channels, max == min, map to 0). Values that are not finite stay so: :func:`apply_minmax`
    handles them."""
    x = np.asarray(x)
    offset, scale = minmax_affine(mn, mx)
    if x.shape[-1] != offset.size:
        raise ValueError(f"normalisation: the input has {x.shape[-1]} channels, the normalisation {offset.size}")
    out = np.subtract(x, offset, dtype=np.float32)  # one new array; the rest is in place
    np.multiply(out, scale, out=out)
    return np.clip(out, clip[0], clip[1], out=out)


def minmax_affine(mn: np.ndarray, mx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 (offset, scale) (C,) of the min-max normalisation x_norm = (x - offset) * scale, offset = min_c
    and scale = 1 / (max_c - min_c) (0 for a constant channel): the constants :func:`scale_minmax` and a model's
    inference graph (``cropflow.models.inference_function``) both apply, so the two give equal values."""
    mn = np.asarray(mn, dtype=np.float64).reshape(-1)
    mx = np.asarray(mx, dtype=np.float64).reshape(-1)
    if mn.shape != mx.shape:
        raise ValueError(f"normalisation: {mn.size} minima but {mx.size} maxima")
    span = mx - mn
    scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
    return mn.astype(np.float32), scale.astype(np.float32)


def apply_minmax(
    x: np.ndarray, mn: np.ndarray, mx: np.ndarray, clip: tuple[float, float] = CLIP_RANGE
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scale_minmax` with missing values marked: returns ``(x_norm, missing)``, ``x_norm`` float32 with 0
    where the input was not finite, ``missing`` a boolean array of the input's shape, True at those positions.
    Nothing is filled silently: callers must look at ``missing``.
    """
    out = scale_minmax(x, mn, mx, clip)
    missing = ~np.isfinite(np.asarray(x))
    np.copyto(out, 0.0, where=missing)
    return out, missing


def fit_inputs(x: Mapping[str, np.ndarray], bands: Mapping[str, Sequence[str]] | None = None) -> dict[str, MinMax]:
    """:func:`fit_minmax` for every input of a sample set; ``bands`` names the channels (default c0, c1, ...)."""
    out = {}
    for name in sorted(x):
        mn, mx = fit_minmax(x[name])
        names = list(bands[name]) if bands and name in bands else [f"c{i}" for i in range(mn.size)]
        out[name] = MinMax(tuple(names), mn, mx)
    return out


def apply_inputs(
    x: Mapping[str, np.ndarray], norm: Mapping[str, MinMax]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`apply_minmax` for every input; returns (normalised inputs, missing masks), both keyed by input.

    Raises ValueError when an input has no normalisation.
    """
    xn, missing = {}, {}
    for name in sorted(x):
        if name not in norm:
            raise ValueError(f"no normalisation for input '{name}' (normalised inputs: {sorted(norm)})")
        xn[name], missing[name] = apply_minmax(x[name], norm[name].min, norm[name].max)
    return xn, missing


# --------------------------------------------------------------------------------------------------- JSON


def to_json(norm: Mapping[str, MinMax]) -> dict[str, dict[str, list]]:
    """The ``normalisation.json`` document of a normalisation."""
    return {name: {"bands": list(m.bands), "min": [float(v) for v in m.min], "max": [float(v) for v in m.max]}
            for name, m in sorted(norm.items())}


def from_json(doc: Mapping, source: str = "normalisation") -> dict[str, MinMax]:
    """Parse a ``normalisation.json`` document; ``source`` names the file in error messages."""
    if not isinstance(doc, Mapping) or not doc:
        raise ValueError(f"{source}: expected an object {{input: {{bands, min, max}}}}, got {type(doc).__name__}")
    out = {}
    for name, entry in doc.items():
        try:
            values = (entry["bands"], entry["min"], entry["max"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: input '{name}' needs 'bands', 'min' and 'max' ({err!r})") from err
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (*values[1], *values[2])):
            raise ValueError(f"{source}: input '{name}' has missing min/max values; refit the normalisation")
        try:
            out[str(name)] = MinMax(tuple(values[0]), np.asarray(values[1], float), np.asarray(values[2], float))
        except ValueError as err:
            raise ValueError(f"{source}: input '{name}': {err}") from err
    return out


def save_normalisation(path: str | os.PathLike, norm: Mapping[str, MinMax]) -> Path:
    """Write ``normalisation.json`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_json(norm), indent=2) + "\n")
    return Path(path)


def load_normalisation(path: str | os.PathLike) -> dict[str, MinMax]:
    """Read ``normalisation.json``; FileNotFoundError / ValueError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"normalisation file {path} not found: rerun the samples (or train) stage")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the stage that wrote it") from err
    return from_json(doc, str(path))
