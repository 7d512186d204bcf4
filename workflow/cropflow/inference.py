"""Tiled inference: a trained model applied to a tile's feature cube window by window, written as COGs.

The class map of a tile is a uint8 Cloud Optimised GeoTIFF on the tile grid (legend colour table, nodata 0);
the uncertainty map holds the bands confidence, margin and normalised entropy (``cropflow.uncertainty``);
the optional probability map holds one uint8 band per model class (round(p * 255), band descriptions =
class names). Pixels with any NaN input (no observation at all in the season, see the cube seam) are nodata
in the class and uncertainty maps and 0 in every probability band. The tile is streamed in full-width row
windows and predicted in batches, so at most one window (plus, for patch models, its halo rows read from the
neighbouring tiles' cubes, ``cropflow.halo``) and one batch of samples are in memory, whatever the tile or
county size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from pathlib import Path

import numpy as np
import xarray as xr

from cropflow import uncertainty
from cropflow.cube import cube_grid, cube_inputs, open_cube
from cropflow.grid import ProjectGrid
from cropflow.halo import centre_valid, extent, patch_gaps, place, read_block, samples_at
from cropflow.legend import Legend
from cropflow.raster import cog_writer, row_windows
from cropflow.threads import limit_threads

log = logging.getLogger(__name__)

_In, _Out = TypeVar("_In"), TypeVar("_Out")


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
                f"dates missing from the cube: {', '.join(only_model) or 'none'}; "
                f"dates not in the model: {', '.join(only_cube) or 'none'}"
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


def read_ahead(read: Callable[[_In], _Out], items: Iterable[_In]) -> Iterator[tuple[_In, _Out]]:
    """(item, read(item)) for each item, the next item's ``read`` running in a background thread while the
    caller works on the current one (zarr decoding and numpy copies release the GIL), so at most two results
    exist at a time. The first item's read starts at once, before the iteration does, so a caller can do its
    own set-up (loading a model) meanwhile. An exception of ``read`` is raised when its item is reached."""
    items = list(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead", initializer=_yield_to_compute)
    started = [pool.submit(read, items[0])] if items else []

    def results() -> Iterator[tuple[_In, _Out]]:
        with pool:
            pending = started.pop() if started else None  # no reference left to the first result once used
            for i, item in enumerate(items):
                result = pending.result()
                if i + 1 < len(items):
                    pending = pool.submit(read, items[i + 1])
                yield item, result
                del result

    return results()


def _yield_to_compute() -> None:
    """Put the calling thread in Linux's SCHED_IDLE class (a thread is a task with its own policy), so that the
    model's compute threads win the cores and the thread's reading or writing fills their idle moments. The
    model's two intra-op threads meet at the end of every op, so a background thread holding one core delays
    both; SCHED_IDLE made Conv1D and the Transformer 2-3 % faster end to end than nice 10 (bench/inference.py),
    and their wait for reads stayed at 1-2 %. Elsewhere (no SCHED_IDLE) the thread keeps its priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def proba_to_uint8(proba: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] quantised to uint8 as round(p * 255)."""
    return np.rint(np.clip(proba, 0.0, 1.0) * 255.0).astype(np.uint8)


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
            + ". Fix: rebuild the cube (rule 'stack') with the configuration the model was trained with (season, "
            "stack.time_axis, s1.features, s1.coherence, s2.bands, samples.bands), or retrain the model on cubes "
            "like this one."
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


def patch_halo(meta: Mapping, model_dir: str | os.PathLike) -> int:
    """The halo (h // 2) the model of bundle metadata ``meta`` needs around a pixel: 0 for pixel models, from
    the (h, w, T, C) training shape for patch models; ValueError for a patch that is not square with odd sides."""
    from cropflow.models import bundle_input_shapes

    if meta.get("kind", "pixel") != "patch":
        return 0
    sizes = {tuple(shape[:2]) for shape in bundle_input_shapes(meta).values()}
    if len(sizes) != 1:
        raise ValueError(f"model {model_dir}: inputs with different patch sizes {sorted(sizes)}; retrain the model")
    (h, w), = sizes
    if h != w or h % 2 == 0:
        raise ValueError(f"model {model_dir}: patch size {h} x {w} is not square and odd; retrain the model with "
                         "an odd samples.patch_size")
    return h // 2


def _open_inputs(cube_path: str | os.PathLike, meta: Mapping, model_dir: str | os.PathLike
                 ) -> tuple[dict[str, xr.DataArray], ProjectGrid, xr.Dataset]:
    """The model's inputs of a cube (checked against the model) and its grid."""
    if not Path(cube_path).exists():
        raise FileNotFoundError(f"cube {cube_path} does not exist: run the 'stack' stage for this tile")
    ds = open_cube(cube_path)
    inputs = model_bands(cube_inputs(ds), meta)
    check_cube_for_model(inputs, meta, cube_path, model_dir)
    return {name: inputs[name] for name in meta["inputs"]}, cube_grid(ds), ds


def predict_window(model, blocks: Mapping[str, np.ndarray], halo: int, class_ids: Sequence[int], batch_size: int,
                   nodata: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class ids (N,) uint8, probabilities (N, K) float32 and validity (N,) of the interior pixels of halo
    blocks {input: (y, x, T, C)}, row-major, predicted in batches of ``batch_size`` pixels.

    A pixel is classified when its own series is finite in every input (its patch may hold NaN from a part of
    the grid without a cube: the model fills those as during training); otherwise it gets class ``nodata`` and
    probability 0 and is never passed to the model (which is asked not to warn per batch about gaps: the tile
    job sums them up, :func:`cropflow.halo.patch_gaps`). Only one batch of patches is in memory at a time.
    """
    valid = centre_valid(blocks, halo)
    width = valid.shape[1]
    valid = valid.ravel()
    ids = np.asarray(class_ids, dtype=np.uint8)
    classes = np.full(valid.size, nodata, dtype=np.uint8)
    proba = np.zeros((valid.size, len(ids)), dtype=np.float32)
    idx = np.flatnonzero(valid)
    for start in range(0, idx.size, batch_size):
        sel = idx[start:start + batch_size]
        rows, cols = np.divmod(sel, width)
        # a pixel series passed here is finite (valid); a patch may hold gaps, which the model fills
        p = np.asarray(model.predict_proba(samples_at(blocks, halo, rows, cols), batch_size, warn_missing=False,
                                           finite=halo == 0), dtype=np.float32)
        if p.shape != (sel.size, len(ids)):
            raise ValueError(f"the model returned probabilities of shape {p.shape}, expected {(sel.size, len(ids))}")
        proba[sel] = p
        classes[sel] = ids[np.argmax(p, axis=1)]
    return classes, proba, valid


def infer_tile(
    cube_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    out_class: str | os.PathLike,
    out_proba: str | os.PathLike | None = None,
    window_rows: int = 256,
    batch_size: int = 4096,
    *,
    legend: str | os.PathLike | Legend,
    out_uncertainty: str | os.PathLike | None = None,
    neighbours: Sequence[str | os.PathLike] = (),
    grid: ProjectGrid | None = None,
    threads: int = 0,
) -> None:
    """Classify every pixel of a tile cube with a trained model and write the class, uncertainty (and
    probability) COGs.

    ``legend`` (path or :class:`Legend`) gives the colour table and the class names of the probability bands.
    A patch model reads a halo of (patch size // 2) pixels around each row window from the ``neighbours``
    cubes (the tiles around this one); ``grid`` is the project grid, beyond which the patches are padded with
    edge values (default: the extent of the tile and its neighbours). ``threads`` (> 0) caps a scikit-learn
    model's workers and the OpenMP/BLAS pools (``cropflow.threads``; TensorFlow's are set by the CLI before
    TensorFlow starts). All outputs appear only
    once complete.
    """
    from cropflow.models import load_trained  # deferred: importing the model stack loads TensorFlow

    if window_rows < 1 or batch_size < 1:
        raise ValueError(f"window_rows ({window_rows}) and batch_size ({batch_size}) must be positive")
    legend = legend if isinstance(legend, Legend) else Legend.load(str(legend))
    meta = read_model_meta(model_dir)
    inputs, tile_grid, ds = _open_inputs(cube_path, meta, model_dir)

    class_ids = [int(c) for c in meta["class_ids"]]
    unknown = [c for c in class_ids if c not in legend.ids]
    if unknown:
        raise ValueError(f"model {model_dir} predicts class ids {unknown} that are not in the legend: "
                         "use the legend the model was trained with")
    halo = patch_halo(meta, model_dir)
    others = [_open_inputs(p, meta, model_dir) for p in neighbours] if halo else []
    if neighbours and not halo:
        log.info("model %s is a pixel model: the %d neighbour cubes are not read", model_dir, len(neighbours))
    grid = grid or extent([tile_grid, *(g for _, g, _ in others)])
    cubes = [place(cube_path, inputs, tile_grid, grid),
             *(place(p, i, g, grid) for p, (i, g, _) in zip(neighbours, others))]
    tile = cubes[0]

    windows = row_windows(tile_grid, window_rows)
    # window i's blocks are assembled in buffers[i % 2]: read_ahead reads window i + 1 while window i is used,
    # and window i + 2 only once window i is done with, so two sets of buffers serve the whole tile
    sizes = {name: (windows[0].height + 2 * halo) * (tile.width + 2 * halo) * int(np.prod(da.shape[:2]))
             for name, da in inputs.items()} if windows else {}
    buffers = [{name: np.empty(n, np.float32) for name, n in sizes.items()} for _ in range(2)]

    def read_window(item) -> dict[str, np.ndarray]:
        i, win = item
        r0 = tile.row + win.row_off
        return {name: read_block(cubes, name, (r0 - halo, r0 + win.height + halo),
                                 (tile.col - halo, tile.col + tile.width + halo), grid.shape, buffers[i % 2][name])
                for name in inputs}

    reads = read_ahead(read_window, enumerate(windows, start=1))  # the first window is read while the model loads

    model = load_trained(model_dir)
    if threads > 0 and hasattr(model.model, "n_jobs"):
        model.model.n_jobs = threads  # as trained it may ask for every core of the node
    limit_threads(threads)  # the OpenMP/BLAS pools of the libraries loaded so far

    names = [legend.classes[legend.index_of(c)].name for c in class_ids]
    tile_id = ds.attrs.get("tile", Path(cube_path).stem)
    tags = {"TILE": tile_id, "MODEL": meta.get("name", Path(model_dir).name),
            "CLASS_IDS": ",".join(map(str, class_ids))}
    if halo:
        tags["PATCH_SIZE"] = 2 * halo + 1
        tags["HALO_TILES"] = ",".join(str(ds_.attrs.get("tile", Path(p).stem))
                                      for p, (_, _, ds_) in zip(neighbours, others))
    with contextlib.ExitStack() as stack:
        cls_w = stack.enter_context(cog_writer(out_class, tile_grid, count=1, dtype="uint8", nodata=legend.nodata,
                                               tags=tags, colormap=legend.colormap(), resampling="MODE",
                                               categories=legend.categories()))
        unc_w = proba_w = None
        if out_uncertainty is not None:
            unc_w = stack.enter_context(cog_writer(out_uncertainty, tile_grid, count=len(uncertainty.BANDS),
                                                   dtype="uint8", nodata=uncertainty.NODATA,
                                                   band_names=uncertainty.BANDS, tags=tags, resampling="AVERAGE"))
        if out_proba is not None:
            proba_w = stack.enter_context(cog_writer(out_proba, tile_grid, count=len(class_ids), dtype="uint8",
                                                     nodata=None, band_names=names, tags=tags,
                                                     resampling="AVERAGE"))

        def write_window(i, win, classes, proba, valid) -> None:
            shape = (win.height, win.width)
            cls_w.write(classes.reshape(1, *shape), win)
            if unc_w is not None:
                unc_w.write(uncertainty.uncertainty_bands(proba, valid).reshape(-1, *shape), win)
            if proba_w is not None:
                proba_w.write(proba_to_uint8(proba).T.reshape(len(class_ids), *shape), win)
            log.info("tile %s: window %d/%d (rows %d-%d) classified", tile_id, i, len(windows), win.row_off,
                     win.row_off + win.height - 1)

        n_valid = n_gaps = 0
        # each window is written in a background thread while the next one is predicted (at most one behind)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind",
                                initializer=_yield_to_compute) as writer:
            written = None
            for (i, win), blocks in reads:
                classes, proba, valid = predict_window(model, blocks, halo, class_ids, batch_size, legend.nodata)
                n_valid += int(np.count_nonzero(valid))
                if halo:
                    n_gaps += int(np.count_nonzero(patch_gaps(blocks, halo).ravel() & valid))
                if written is not None:
                    written.result()  # raises the previous window's write error here
                written = writer.submit(write_window, i, win, classes, proba, valid)
            if written is not None:
                written.result()
    total = tile_grid.width * tile_grid.height
    if n_valid == 0:
        log.warning("tile %s: no pixel of %s has an observation in every input: the maps are all nodata",
                    tile_id, cube_path)
    elif n_valid < total:
        log.info("tile %s: %d of %d pixels have NaN inputs (no observation) and are nodata",
                 tile_id, total - n_valid, total)
    if n_gaps:
        log.warning("tile %s: %d classified pixels have patches reaching pixels without observation (a part of the "
                    "grid without a tile, or never observed); those values were set to 0 after normalisation, as in "
                    "training", tile_id, n_gaps)
    log.info("tile %s: class map written to %s", tile_id, out_class)
