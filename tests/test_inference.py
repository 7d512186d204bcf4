"""Tiled inference of a trained model over a tile cube (cropflow.inference)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from cropflow.cube import cube_inputs, open_cube, pixel_series
from cropflow.grid import ProjectGrid
from cropflow.inference import infer_tile, input_mismatches, proba_to_uint8, read_ahead, valid_pixels
from cropflow.legend import Legend
from cropflow.models import load_trained
from cropflow.raster import read_categories
from cropflow.sampleset import SampleSet
from cropflow.training import train
from cropflow.uncertainty import confidence, margin, normalised_entropy, uncertainty_bands

LEGEND = Path(__file__).parents[1] / "resources" / "legend.yaml"
GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5339760.0, 320200.0, 5340000.0))  # 24 rows x 20 cols
DATES = np.array(["2023-05-08", "2023-05-20", "2023-06-13", "2023-07-07", "2023-08-12", "2023-09-17"],
                 dtype="datetime64[ns]")
BANDS = ["vv_db", "coh_vv", "B8A"]
CLASSES = (1, 2, 5)
RF_PARAMS = {"n_estimators": 25, "n_jobs": 1}


def truth_map() -> np.ndarray:
    """Three classes in vertical strips with a few blocks of another class inside."""
    y = np.full(GRID.shape, 1, dtype=np.uint8)
    y[:, 7:14] = 2
    y[:, 14:] = 5
    y[3:7, 2:5] = 5
    y[15:19, 9:12] = 1
    return y


def class_curves(t: int, c: int) -> dict[int, np.ndarray]:
    """Distinct (T, C) seasonal signatures per class."""
    s = np.linspace(0.0, np.pi, t)[:, None]
    k = np.arange(c)[None, :]
    return {1: np.sin(s) * (1 + k), 2: np.cos(s) * (1 + k), 5: 0.5 + 0.0 * s + 0.3 * k}


def make_cube(path: Path, *, dates=DATES, bands=BANDS, nan_pixels=((0, 0), (5, 17), (23, 19)),
              partial_nan=(10, 3), seed: int = 0) -> np.ndarray:
    """Write a chronological cube whose pixels follow the class curves of ``truth_map`` plus noise."""
    rng = np.random.default_rng(seed)
    truth = truth_map()
    curves = class_curves(len(dates), len(bands))
    data = np.empty((len(dates), len(bands), *GRID.shape), dtype=np.float32)
    for cid, curve in curves.items():
        data[..., truth == cid] = curve[..., None]
    data += rng.normal(0.0, 0.25, data.shape).astype(np.float32)
    for r, c in nan_pixels:
        data[:, :, r, c] = np.nan
    if partial_nan is not None:
        data[2, 1, partial_nan[0], partial_nan[1]] = np.nan
    x, y = GRID.coords()
    ds = xr.Dataset(
        {"features": (("time", "band", "y", "x"), data)},
        coords={"time": np.asarray(dates, dtype="datetime64[ns]"), "band": list(bands), "y": y, "x": x},
        attrs={"crs": GRID.crs, "transform": list(GRID.transform)[:6], "tile": "E0320000N5330000"},
    )
    ds.to_zarr(path)
    return data


def samples_from_cube(path: Path, rows: slice) -> SampleSet:
    """Labelled pixel series of the cube's rows ``rows`` (every valid pixel)."""
    ds = open_cube(path)
    da = cube_inputs(ds)["features"]
    x = pixel_series(da, rows)
    y = truth_map()[rows].ravel()
    ok = np.isfinite(x).all(axis=(1, 2))
    times = [str(t) for t in np.datetime_as_string(da["time"].values, unit="D")]
    inputs = {"features": {"bands": [str(b) for b in da["band"].values], "times": times}}
    return SampleSet(x={"features": x[ok]}, y=y[ok].astype(np.int16), parcel_id=np.arange(ok.sum()),
                     tile_index=np.zeros(ok.sum(), np.int16), inputs=inputs, class_ids=list(CLASSES),
                     class_names=class_names())


def class_names() -> list[str]:
    legend = Legend.load(str(LEGEND))
    return [legend.names[legend.index_of(c)] for c in CLASSES]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cube and a random forest trained on its pixels (train: even rows, validation: odd rows)."""
    folder = tmp_path_factory.mktemp("inference")
    cube = folder / "tile.zarr"
    data = make_cube(cube)
    tr, va = samples_from_cube(cube, slice(0, None, 2)), samples_from_cube(cube, slice(1, None, 2))
    model_dir = folder / "model_rf"
    train("rf", tr, va, RF_PARAMS, 7, model_dir)
    return cube, model_dir, data


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_map_equals_predicting_all_pixels_at_once(trained, tmp_path):
    cube, model_dir, data = trained
    small, large = tmp_path / "small_class.tif", tmp_path / "large_class.tif"
    infer_tile(cube, model_dir, small, window_rows=5, batch_size=17, legend=LEGEND)
    infer_tile(cube, model_dir, large, window_rows=1000, batch_size=100_000, legend=LEGEND)
    got_small, got_large = read(small)[0], read(large)[0]
    np.testing.assert_array_equal(got_small, got_large)

    model = load_trained(model_dir)
    x = data.transpose(2, 3, 0, 1).reshape(-1, len(DATES), len(BANDS))
    ok = np.isfinite(x).all(axis=(1, 2))
    expected = np.zeros(x.shape[0], np.uint8)
    expected[ok] = np.asarray(model.class_ids)[np.argmax(model.predict_proba({"features": x[ok]}), axis=1)]
    np.testing.assert_array_equal(got_small.ravel(), expected)
    # the model learnt the classes: the map agrees with the truth on nearly all valid pixels
    assert np.mean(got_small.ravel()[ok] == truth_map().ravel()[ok]) > 0.9


def test_pixels_with_nan_are_nodata_with_zero_probability(trained, tmp_path):
    cube, model_dir, _ = trained
    out, proba = tmp_path / "c.tif", tmp_path / "p.tif"
    infer_tile(cube, model_dir, out, proba, window_rows=4, legend=LEGEND)
    classes, p = read(out)[0], read(proba)
    for r, c in ((0, 0), (5, 17), (23, 19), (10, 3)):  # no observation at all, and one gap at one date
        assert classes[r, c] == 0
        assert (p[:, r, c] == 0).all()
    assert np.count_nonzero(classes == 0) == 4


def test_class_and_probability_cogs(trained, tmp_path):
    cube, model_dir, data = trained
    out, proba = tmp_path / "tile_class.tif", tmp_path / "tile_proba.tif"
    infer_tile(cube, model_dir, out, proba, window_rows=7, legend=Legend.load(str(LEGEND)))
    legend = Legend.load(str(LEGEND))
    model = load_trained(model_dir)
    with rasterio.open(out) as src:
        assert src.driver == "GTiff" and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.dtypes == ("uint8",) and src.nodata == 0
        assert src.overviews(1) or max(src.width, src.height) <= 512  # COG: overviews unless one block
        assert src.crs.to_epsg() == 32652 and src.transform == GRID.transform
        assert src.colormap(1)[2] == legend.colormap()[2]
        assert src.tags()["TILE"] == "E0320000N5330000"
        classes = src.read(1)
    assert read_categories(out) == legend.categories()          # class names GDAL and QGIS list
    with rasterio.open(proba) as src:
        assert src.count == len(model.class_ids) and src.dtypes[0] == "uint8" and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert list(src.descriptions) == [legend.names[legend.index_of(c)] for c in model.class_ids]
        q = src.read()
    x = data.transpose(2, 3, 0, 1).reshape(-1, len(DATES), len(BANDS))
    ok = np.isfinite(x).all(axis=(1, 2))
    expected = np.zeros((x.shape[0], len(model.class_ids)), np.uint8)
    expected[ok] = proba_to_uint8(model.predict_proba({"features": x[ok]}))
    np.testing.assert_array_equal(q.reshape(len(model.class_ids), -1).T, expected)
    # the class is the most probable band wherever a pixel was classified
    valid = classes > 0
    assert (np.asarray(model.class_ids)[q.argmax(axis=0)][valid] == classes[valid]).mean() > 0.99


def test_fewer_time_steps_is_an_error_listing_the_dates(trained, tmp_path):
    _, model_dir, _ = trained
    short = tmp_path / "short.zarr"
    make_cube(short, dates=DATES[:-1])
    with pytest.raises(ValueError) as err:
        infer_tile(short, model_dir, tmp_path / "x.tif", legend=LEGEND)
    msg = str(err.value)
    assert "short.zarr" in msg and str(model_dir) in msg
    assert "fewer time steps" in msg and "dates missing from the cube: 2023-09-17" in msg and "2023-05-08" in msg
    assert "Fix: rebuild the cube" in msg and "stack.time_axis" in msg
    assert not (tmp_path / "x.tif").exists()


def test_band_mismatch_is_an_error_naming_the_bands(trained, tmp_path):
    _, model_dir, _ = trained
    other = tmp_path / "other.zarr"
    make_cube(other, bands=["vv_db", "coh_vv", "B11"])
    with pytest.raises(ValueError, match=r"other\.zarr.*missing \['B8A'\].*not in the model \['B11'\].*s2\.bands"):
        infer_tile(other, model_dir, tmp_path / "x.tif", legend=LEGEND)
    assert not (tmp_path / "x.tif").exists()


def test_same_count_other_dates_is_accepted_and_logged(trained, tmp_path, caplog):
    _, model_dir, _ = trained
    shifted = tmp_path / "shifted.zarr"
    make_cube(shifted, dates=DATES + np.timedelta64(1, "D"))
    with caplog.at_level("WARNING", logger="cropflow.inference"):
        infer_tile(shifted, model_dir, tmp_path / "s.tif", legend=LEGEND)
    assert "dates differ" in caplog.text and "2023-05-09" in caplog.text
    assert (tmp_path / "s.tif").is_file()


def test_input_mismatches_missing_input_and_valid_pixels():
    model = {"s1": {"bands": ["vv_db"], "times": ["2023-05-08"]}, "s2": {"bands": ["B04"], "times": ["2023-06-01"]}}
    cube = {"s1": {"bands": ["vv_db"], "times": ["2023-05-08"]}}
    problems = input_mismatches(cube, model)
    assert len(problems) == 1 and "'s2' is missing" in problems[0]
    assert input_mismatches(model, model) == []
    x = {"a": np.ones((3, 2, 2), np.float32), "b": np.ones((3, 1, 1), np.float32)}
    x["a"][0, 1, 1] = np.nan
    x["b"][2, 0, 0] = np.inf
    np.testing.assert_array_equal(valid_pixels(x), [False, True, False])
    np.testing.assert_array_equal(proba_to_uint8(np.array([0.0, 0.5, 1.0, 0.999])), [0, 128, 255, 255])


def test_windows_never_hold_the_whole_tile(trained, tmp_path, monkeypatch):
    cube, model_dir, _ = trained
    import cropflow.inference as inference

    seen, memory = [], []
    real = inference.read_block

    def recording(cubes, name, rows, cols, shape, buffer=None):
        out = real(cubes, name, rows, cols, shape, buffer)
        seen.append(out.shape[:2])
        memory.append(out.__array_interface__["data"][0])
        return out

    monkeypatch.setattr(inference, "read_block", recording)
    infer_tile(cube, model_dir, tmp_path / "w.tif", window_rows=6, legend=LEGEND)
    assert seen == [(6, GRID.width)] * (GRID.height // 6)  # a pixel model reads no halo
    # two sets of buffers in turn: the window read ahead never lands in the one being predicted
    assert len(memory) >= 4 and memory[0] != memory[1] and memory[2:] == [memory[0], memory[1]] * (len(memory) // 2 - 1)


def test_uncertainty_cog_bands_and_values(trained, tmp_path):
    cube, model_dir, data = trained
    out, unc, proba = tmp_path / "t_class.tif", tmp_path / "t_uncertainty.tif", tmp_path / "t_proba.tif"
    infer_tile(cube, model_dir, out, proba, window_rows=7, legend=LEGEND, out_uncertainty=unc)
    with rasterio.open(unc) as src:
        assert src.count == 3 and src.dtypes == ("uint8",) * 3 and src.nodata == 255
        assert list(src.descriptions) == ["confidence", "margin", "entropy"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.transform == GRID.transform
        u = src.read()
    classes = read(out)[0]
    assert ((u == 255).all(axis=0) == (classes == 0)).all()
    model = load_trained(model_dir)
    x = data.transpose(2, 3, 0, 1).reshape(-1, len(DATES), len(BANDS))
    ok = np.isfinite(x).all(axis=(1, 2))
    p = model.predict_proba({"features": x[ok]})
    top = np.sort(p, axis=1)
    h = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis=1) / np.log(p.shape[1])
    expected = np.rint(np.stack([top[:, -1], top[:, -1] - top[:, -2], h]) * 254)
    np.testing.assert_array_equal(u.reshape(3, -1)[:, ok], expected)


def test_uncertainty_measures():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2]], np.float32)
    np.testing.assert_allclose(confidence(p), [1.0, 1 / 3, 0.5], rtol=1e-6)
    np.testing.assert_allclose(margin(p), [1.0, 0.0, 0.2], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(normalised_entropy(p), [0.0, 1.0, 1.0297 / np.log(3)], rtol=1e-4)
    q = uncertainty_bands(p, np.array([True, True, False]))
    assert q.dtype == np.uint8 and q.shape == (3, 3)
    np.testing.assert_array_equal(q[:, 0], [254, 254, 0])
    np.testing.assert_array_equal(q[:, 1], [85, 0, 254])
    np.testing.assert_array_equal(q[:, 2], [255, 255, 255])


def test_tile_without_valid_pixels_gives_all_nodata_maps(trained, tmp_path, caplog):
    _, model_dir, _ = trained
    empty = tmp_path / "empty.zarr"
    make_cube(empty, nan_pixels=[(r, c) for r in range(GRID.height) for c in range(GRID.width)])
    out, unc = tmp_path / "e_class.tif", tmp_path / "e_uncertainty.tif"
    with caplog.at_level("WARNING", logger="cropflow.inference"):
        infer_tile(empty, model_dir, out, window_rows=5, legend=LEGEND, out_uncertainty=unc)
    assert "no pixel" in caplog.text and "empty.zarr" in caplog.text
    assert (read(out) == 0).all() and (read(unc) == 255).all()
    with rasterio.open(out) as src:
        assert src.nodata == 0 and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_inference_killed_half_way_leaves_no_output(trained, tmp_path, monkeypatch):
    cube, model_dir, _ = trained
    import cropflow.inference as inference

    calls = []
    real = inference.predict_window

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("job killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_window", failing)
    outs = {k: tmp_path / f"k_{k}.tif" for k in ("class", "uncertainty", "proba")}
    with pytest.raises(KeyboardInterrupt):
        infer_tile(cube, model_dir, outs["class"], outs["proba"], window_rows=4, legend=LEGEND,
                   out_uncertainty=outs["uncertainty"])
    assert len(calls) == 3 and not any(p.exists() for p in outs.values())
    assert list(tmp_path.iterdir()) == []  # no temporary file left either
    monkeypatch.setattr(inference, "predict_window", real)
    infer_tile(cube, model_dir, outs["class"], outs["proba"], window_rows=4, legend=LEGEND,
               out_uncertainty=outs["uncertainty"])  # the rerun completes
    assert all(p.is_file() for p in outs.values())


def make_separate_cube(path: Path, seed: int = 1) -> dict[str, np.ndarray]:
    """A separate-mode cube: 's1' on 5 dates x 2 bands and 's2' on 3 dates x 3 bands, own time axes."""
    rng = np.random.default_rng(seed)
    truth = truth_map()
    arrays, variables, coords = {}, {}, {}
    x, y = GRID.coords()
    for name, (t, c) in {"s1": (5, 2), "s2": (3, 3)}.items():
        curves = class_curves(t, c)
        data = np.empty((t, c, *GRID.shape), dtype=np.float32)
        for cid, curve in curves.items():
            data[..., truth == cid] = curve[..., None]
        data += rng.normal(0.0, 0.3, data.shape).astype(np.float32)
        arrays[name] = data
        variables[name] = ((f"time_{name}", f"band_{name}", "y", "x"), data)
        coords[f"time_{name}"] = DATES[:t] + np.timedelta64(1 if name == "s2" else 0, "D")
        coords[f"band_{name}"] = [f"{name}_b{i}" for i in range(c)]
    arrays["s2"][:, :, 12, 12] = np.nan  # no optical observation at all: no class
    ds = xr.Dataset(variables, coords={**coords, "y": y, "x": x},
                    attrs={"crs": GRID.crs, "transform": list(GRID.transform)[:6], "tile": "T"})
    ds.to_zarr(path)
    return arrays


def test_separate_inputs_cube(tmp_path):
    cube = tmp_path / "sep.zarr"
    arrays = make_separate_cube(cube)
    da = cube_inputs(open_cube(cube))
    inputs = {n: {"bands": [str(b) for b in a["band"].values],
                  "times": [str(t) for t in np.datetime_as_string(a["time"].values, unit="D")]} for n, a in da.items()}

    def split(rows: slice) -> SampleSet:
        x = {n: pixel_series(a, rows) for n, a in da.items()}
        ok = np.isfinite(x["s1"]).all(axis=(1, 2)) & np.isfinite(x["s2"]).all(axis=(1, 2))
        y = truth_map()[rows].ravel()[ok]
        return SampleSet(x={n: v[ok] for n, v in x.items()}, y=y, parcel_id=np.arange(y.size),
                         tile_index=np.zeros(y.size), inputs=inputs, class_ids=list(CLASSES),
                         class_names=class_names())

    model_dir = tmp_path / "rf"
    train("rf", split(slice(0, None, 2)), split(slice(1, None, 2)), RF_PARAMS, 3, model_dir)
    out = tmp_path / "sep_class.tif"
    infer_tile(cube, model_dir, out, window_rows=5, legend=LEGEND)
    got = read(out)[0].ravel()
    model = load_trained(model_dir)
    x = {n: a.transpose(2, 3, 0, 1).reshape(-1, a.shape[0], a.shape[1]) for n, a in arrays.items()}
    ok = np.isfinite(x["s2"]).all(axis=(1, 2))
    expected = np.zeros(ok.size, np.uint8)
    expected[ok] = np.asarray(model.class_ids)[np.argmax(model.predict_proba({n: v[ok] for n, v in x.items()}), 1)]
    np.testing.assert_array_equal(got, expected)
    assert got[12 * GRID.width + 12] == 0


def test_a_failed_window_write_stops_the_job_and_leaves_no_output(trained, tmp_path, monkeypatch):
    """Windows are written in a background thread: a write error of one window is raised by infer_tile (at the
    next window or at the end) and, as for a killed job, no output or temporary file is left."""
    cube, model_dir, _ = trained
    import cropflow.inference as inference

    calls = []
    real = inference.proba_to_uint8

    def failing(proba):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(proba)

    monkeypatch.setattr(inference, "proba_to_uint8", failing)
    outs = {k: tmp_path / f"w_{k}.tif" for k in ("class", "uncertainty", "proba")}
    with pytest.raises(OSError, match="disk full"):
        infer_tile(cube, model_dir, outs["class"], outs["proba"], window_rows=4, legend=LEGEND,
                   out_uncertainty=outs["uncertainty"])
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_keras_model_map_is_independent_of_the_window(trained, tmp_path):
    cube, _, data = trained
    tr, va = samples_from_cube(cube, slice(0, None, 2)), samples_from_cube(cube, slice(1, None, 2))
    model_dir = tmp_path / "tempcnn"
    params = {"filters": 8, "layers": 1, "dense": 16, "epochs": 3, "batch_size": 64, "patience": 2}
    train("tempcnn", tr, va, params, 5, model_dir)
    small, large = tmp_path / "k_small.tif", tmp_path / "k_large.tif"
    infer_tile(cube, model_dir, small, window_rows=3, batch_size=10, legend=LEGEND)
    infer_tile(cube, model_dir, large, window_rows=100, legend=LEGEND)
    np.testing.assert_array_equal(read(small), read(large))
    got = read(small)[0]
    assert set(np.unique(got)) <= {0, *CLASSES} and np.count_nonzero(got == 0) == 4


def test_read_ahead_reads_the_next_window_while_the_current_one_is_used():
    import threading

    started = {}
    release = threading.Event()

    def read(i):
        started[i] = True
        if i == 1:
            release.wait(5)
        return i * 10

    seen = []
    reads = read_ahead(read, [0, 1, 2])
    for _ in range(500):  # window 0 is read before the iteration starts (the caller loads its model meanwhile)
        if started.get(0):
            break
        threading.Event().wait(0.01)
    assert started == {0: True}
    for item, value in reads:
        if item == 0:
            for _ in range(500):  # window 1 is being read while window 0 is in use
                if started.get(1):
                    break
                threading.Event().wait(0.01)
            assert started.get(1) and not started.get(2)
            release.set()
        seen.append((item, value))
    assert seen == [(0, 0), (1, 10), (2, 20)]
    assert list(read_ahead(read, [])) == []


def test_read_ahead_holds_no_result_it_has_handed_over():
    """Only the current window and the one being read are alive: an earlier window (the first one included,
    which is read before the iteration starts) is freed once the caller lets go of it (tile-job memory)."""
    import gc
    import weakref

    class Window:
        pass

    refs = []
    for _, window in read_ahead(lambda i: Window(), range(4)):
        refs.append(weakref.ref(window))
        del window
        gc.collect()
        assert all(ref() is None for ref in refs[:-1])


def test_read_ahead_raises_the_read_error_at_its_item():
    def read(i):
        if i == 2:
            raise OSError("cube chunk unreadable")
        return i

    got = []
    with pytest.raises(OSError, match="unreadable"):
        for item, _ in read_ahead(read, range(4)):
            got.append(item)
    assert got == [0, 1]


def test_background_threads_leave_the_cores_to_the_model():
    """The read-ahead and write-behind threads run in SCHED_IDLE (Linux), the calling thread keeps its policy."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cropflow.inference import _yield_to_compute

    if not hasattr(os, "SCHED_IDLE"):
        pytest.skip("no SCHED_IDLE on this platform")
    with ThreadPoolExecutor(1, initializer=_yield_to_compute) as pool:
        policy = pool.submit(lambda: os.sched_getscheduler(threading.get_native_id())).result()
    assert policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
