"""Tiled inference: a trained model applied to a tile's feature cube window by window, written as COGs.

The class map of a tile is a uint8 Cloud Optimised GeoTIFF on the tile grid (legend colour table, nodata 0);
the optional probability map holds one uint8 band per model class (round(p * 255), band descriptions =
class names). Pixels with any NaN input (no observation at all in the season, see the cube seam) are nodata
in the class map and 0 in every probability band. The tile is streamed in full-width row windows, so at most
one window's (N, T, C) series are in memory at a time, whatever the tile size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from cropflow.cube import cube_grid, cube_inputs, open_cube, pixel_series
from cropflow.legend import Legend
from cropflow.raster import cog_writer, row_windows

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- pure parts


def _dates(times: Sequence[object]) -> list[str]:
    """ISO dates (YYYY-MM-DD) of ISO date or datetime strings."""
    return [str(t)[:10] for t in times]


def cube_dates(da: xr.DataArray) -> list[str]:
    """The acquisition dates of a (time, band, y, x) input as ISO dates (YYYY-MM-DD)."""
    return [str(d) for d in np.datetime_as_string(np.asarray(da["time"].values, dtype="datetime64[ns]"), unit="D")]


def input_mismatches(
    cube: Mapping[str, Mapping[str, Sequence[str]]], model: Mapping[str, Mapping[str, Sequence[str]]]
) -> list[str]:
    """What keeps a model from being applied to a cube, one sentence per difference (empty: compatible).

    Both arguments are input metadata ``{name: {"bands": [...], "times": [ISO dates]}}`` (the sample-store
    ``inputs`` attribute layout). An input must exist in the cube, with the model's bands in the model's order
    and the model's number of time steps; the dates themselves may differ between tiles (see
    :func:`date_differences`).
    """
    problems = []
    for name, spec in model.items():
        if name not in cube:
            problems.append(f"input '{name}' is missing from the cube (cube inputs: {sorted(cube)})")
            continue
        cube_bands, model_bands = list(cube[name]["bands"]), list(spec["bands"])
        if cube_bands != model_bands:
            missing = [b for b in model_bands if b not in cube_bands]
            extra = [b for b in cube_bands if b not in model_bands]
            detail = (f"missing {missing}" if missing else "") + (", " if missing and extra else "") + (
                f"not in the model {extra}" if extra else "")
            problems.append(
                f"input '{name}': the cube has {len(cube_bands)} bands {cube_bands}, the model expects "
                f"{len(model_bands)} bands {model_bands}" + (f" ({detail})" if detail else " (different order)")
            )
        cube_times, model_times = _dates(cube[name]["times"]), _dates(spec["times"])
        if len(cube_times) != len(model_times):
            word = "fewer" if len(cube_times) < len(model_times) else "more"
            only_model = [t for t in model_times if t not in cube_times]
            only_cube = [t for t in cube_times if t not in model_times]
            problems.append(
                f"input '{name}': the cube has {word} time steps ({len(cube_times)}: {', '.join(cube_times)}) "
                f"than the model was trained on ({len(model_times)}: {', '.join(model_times)}); "
                f"dates only in the model: {only_model or 'none'}, only in the cube: {only_cube or 'none'}"
            )
    return problems


def date_differences(cube_times: Sequence[str], model_times: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (cube date, model date) at the time steps where a cube and a model of equal length differ."""
    return [(c, m) for c, m in zip(_dates(cube_times), _dates(model_times)) if c != m]


def valid_pixels(x: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pixels (N,) whose every input value over all time steps and channels is finite.

    A NaN left in the cube means the pixel had no observation at all in the season (the stack gap-fills
    everything else), so it cannot be classified.
    """
    arrays = list(x.values())
    valid = np.ones(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        valid &= np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
    return valid


def proba_to_uint8(proba: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] quantised to uint8 as round(p * 255)."""
    return np.rint(np.clip(proba, 0.0, 1.0) * 255.0).astype(np.uint8)


def predict_pixels(
    model, x: Mapping[str, np.ndarray], class_ids: Sequence[int], batch_size: int, nodata: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (N,) uint8 and probabilities (N, K) float32 of pixel series, predicted in batches.

    Pixels with a non-finite value get class ``nodata`` and probability 0 for every class; they are never
    passed to the model. The class is the legend id of the most probable output (``class_ids[argmax p]``).
    """
    n = next(iter(x.values())).shape[0]
    ids = np.asarray(class_ids, dtype=np.uint8)
    classes = np.full(n, nodata, dtype=np.uint8)
    proba = np.zeros((n, len(ids)), dtype=np.float32)
    idx = np.flatnonzero(valid_pixels(x))
    for start in range(0, idx.size, batch_size):
        sel = idx[start:start + batch_size]
        p = np.asarray(model.predict_proba({name: a[sel] for name, a in x.items()}), dtype=np.float32)
        if p.shape != (sel.size, len(ids)):
            raise ValueError(f"the model returned probabilities of shape {p.shape}, expected {(sel.size, len(ids))}")
        proba[sel] = p
        classes[sel] = ids[np.argmax(p, axis=1)]
    return classes, proba


# --------------------------------------------------------------------------------------------------- writing


# --------------------------------------------------------------------------------------------------- edges


def read_model_meta(model_dir: str | os.PathLike) -> dict:
    """The ``meta.json`` of a model bundle (name, class_ids, class_names, inputs, ...)."""
    path = Path(model_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"model bundle {model_dir} has no meta.json: retrain the model with 'train'")
    with open(path) as f:
        meta = json.load(f)
    if "inputs" not in meta or "class_ids" not in meta:
        raise ValueError(f"{path} lacks 'inputs' or 'class_ids': retrain the model with 'train'")
    return meta


def model_bands(inputs: Mapping[str, xr.DataArray], meta: Mapping) -> dict[str, xr.DataArray]:
    """Cube inputs cut to the bands a model was trained on when those are a subset of the cube's (models
    trained on a band selection, samples.bands); other inputs are returned unchanged for the check."""
    out = dict(inputs)
    for name, spec in meta["inputs"].items():
        bands = [str(b) for b in spec.get("bands", [])]
        if name in out and bands and set(bands) < set(map(str, out[name]["band"].values)):
            out[name] = out[name].sel(band=bands)
    return out


def check_cube_for_model(
    inputs: Mapping[str, xr.DataArray], meta: Mapping, cube_path: str | os.PathLike, model_dir: str | os.PathLike
) -> None:
    """Raise ValueError naming the cube, the model and every difference when the model cannot read the cube.

    Cube inputs the model does not use are ignored (logged); equal-length time axes with other dates are
    accepted (logged: the model sees the steps by position).
    """
    cube_meta = {name: {"bands": [str(b) for b in da["band"].values], "times": cube_dates(da)}
                 for name, da in inputs.items()}
    problems = input_mismatches(cube_meta, meta["inputs"])
    if problems:
        raise ValueError(
            f"cube {cube_path} does not fit model {model_dir} ({meta.get('name', '?')}): " + "; ".join(problems)
            + ". Rebuild the cube with the configuration the model was trained with, or retrain the model."
        )
    unused = sorted(set(cube_meta) - set(meta["inputs"]))
    if unused:
        log.info("cube %s: inputs %s are not used by model %s", cube_path, unused, model_dir)
    for name in meta["inputs"]:
        diff = date_differences(cube_meta[name]["times"], meta["inputs"][name]["times"])
        if diff:
            log.warning("cube %s input '%s': %d of %d dates differ from the training dates of model %s "
                        "(cube, model: %s); time steps are matched by position", cube_path, name, len(diff),
                        len(cube_meta[name]["times"]), model_dir, diff[:5])


def infer_tile(
    cube_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    out_class: str | os.PathLike,
    out_proba: str | os.PathLike | None = None,
    window_rows: int = 256,
    batch_size: int = 4096,
    *,
    legend: str | os.PathLike | Legend,
) -> None:
    """Classify every pixel of a tile cube with a trained model and write the class (and probability) COGs.

    ``legend`` (path or :class:`Legend`) gives the colour table and the class names of the probability bands.
    """
    from cropflow.models import load_trained  # deferred: importing the model stack loads TensorFlow

    if window_rows < 1 or batch_size < 1:
        raise ValueError(f"window_rows ({window_rows}) and batch_size ({batch_size}) must be positive")
    legend = legend if isinstance(legend, Legend) else Legend.load(str(legend))
    if not Path(cube_path).exists():
        raise FileNotFoundError(f"cube {cube_path} does not exist: run the 'stack' stage for this tile")
    meta = read_model_meta(model_dir)
    ds = open_cube(cube_path)
    inputs = model_bands(cube_inputs(ds), meta)
    check_cube_for_model(inputs, meta, cube_path, model_dir)
    inputs = {name: inputs[name] for name in meta["inputs"]}

    model = load_trained(model_dir)
    class_ids = [int(c) for c in model.class_ids]
    unknown = [c for c in class_ids if c not in legend.ids]
    if unknown:
        raise ValueError(f"model {model_dir} predicts class ids {unknown} that are not in the legend: "
                         "use the legend the model was trained with")
    names = [legend.classes[legend.index_of(c)].name for c in class_ids]
    grid = cube_grid(ds)
    tile = ds.attrs.get("tile", Path(cube_path).stem)
    tags = {"TILE": tile, "MODEL": meta.get("name", Path(model_dir).name), "CLASS_IDS": ",".join(map(str, class_ids))}

    windows = row_windows(grid, window_rows)
    with contextlib.ExitStack() as stack:
        cls_w = stack.enter_context(cog_writer(out_class, grid, count=1, dtype="uint8", nodata=legend.nodata,
                                               tags=tags, colormap=legend.colormap(), resampling="MODE"))
        proba_w = None
        if out_proba is not None:
            proba_w = stack.enter_context(cog_writer(out_proba, grid, count=len(class_ids), dtype="uint8",
                                                     nodata=None, band_names=names, tags=tags,
                                                     resampling="AVERAGE"))
        n_valid = 0
        for i, win in enumerate(windows, start=1):
            rows = slice(win.row_off, win.row_off + win.height)
            x = {name: pixel_series(da, rows) for name, da in inputs.items()}
            classes, proba = predict_pixels(model, x, class_ids, batch_size, legend.nodata)
            n_valid += int(np.count_nonzero(classes != legend.nodata))
            cls_w.write(classes.reshape(1, win.height, win.width), win)
            if proba_w is not None:
                q = proba_to_uint8(proba).T.reshape(len(class_ids), win.height, win.width)
                proba_w.write(q, win)
            log.info("tile %s: window %d/%d (rows %d-%d) classified", tile, i, len(windows), rows.start, rows.stop - 1)
    total = grid.width * grid.height
    if n_valid < total:
        log.info("tile %s: %d of %d pixels have NaN inputs (no observation) and are nodata",
                 tile, total - n_valid, total)
    log.info("tile %s: class map written to %s", tile, out_class)
