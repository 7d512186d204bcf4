import json
import logging

import numpy as np
import pandas as pd
import pytest
import zoo
from pathlib import Path

from cropflow import models, training
from cropflow.models import MODELS, build, load_trained
from cropflow.models.rf import flatten_inputs
from cropflow.sampleset import SampleSet

SINGLE = {"features": (8, 5)}
DOUBLE = {"s1": (10, 4), "s2": (3, 3)}
TINY_CNN = {"filters": 8, "kernel_size": 3, "layers": 2, "dense": 16, "dropout": 0.1, "epochs": 3,
            "batch_size": 16, "patience": 2, "learning_rate": 0.01}
TINY_RF = {"n_estimators": 25, "n_jobs": 2}
CLASS_IDS = [1, 2, 3]
REPO = Path(__file__).resolve().parents[1]
NAMES = ["maize", "soybean", "wheat"]

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def separable(shapes, n_per_class, seed, k=3):
    """Raw-scale inputs (0 to 10) whose class is the time profile of every channel: rising, falling or flat."""
    return zoo.separable(shapes, n_per_class, seed, k=k, noise=0.3, scale=10.0)


def sampleset(shapes, n_per_class, seed):
    x, y = separable(shapes, n_per_class, seed)
    inputs = {name: {"bands": [f"b{i}" for i in range(c)], "times": [f"2023-06-{d + 1:02d}" for d in range(t)]}
              for name, (t, c) in shapes.items()}
    return SampleSet(x=x, y=np.asarray(CLASS_IDS)[y], parcel_id=np.arange(y.size), tile_index=np.zeros(y.size, int),
                     inputs=inputs, class_ids=CLASS_IDS, class_names=NAMES)


@pytest.mark.parametrize("shapes", [SINGLE, DOUBLE], ids=["one-input", "two-inputs"])
def test_rf_builds_and_predicts_shape(shapes):
    est = build("rf", shapes, 3, TINY_RF, seed=1)
    assert est.n_estimators == 25 and est.min_samples_split == 4 and est.max_features == "sqrt"
    assert est.random_state == 1
    x, y = separable(shapes, 10, 0)
    features = flatten_inputs(x)
    assert features.shape == (30, sum(t * c for t, c in shapes.values()))
    est.fit(features, y)
    assert est.predict_proba(features).shape == (30, 3)


def test_rf_defaults_follow_the_study():
    est = build("rf", SINGLE, 3, {}, seed=0)
    assert (est.n_estimators, est.min_samples_split, est.max_features, est.n_jobs) == (200, 4, "sqrt", -1)


def test_flatten_inputs_is_time_major_in_sorted_name_order():
    x = {"s2": np.arange(6).reshape(1, 3, 2), "coh": np.array([[[100], [101]]])}
    np.testing.assert_array_equal(flatten_inputs(x), [[100, 101, 0, 1, 2, 3, 4, 5]])


def test_rf_fit_beats_uniform_loss():
    from sklearn.metrics import log_loss

    x, y = separable(DOUBLE, 20, 0)
    est = build("rf", DOUBLE, 3, TINY_RF, seed=0).fit(flatten_inputs(x), y)
    p = est.predict_proba(flatten_inputs(x))
    assert log_loss(y, p) < np.log(3) / 2
    assert (p.argmax(axis=1) == y).all()


def test_unknown_model_and_parameter():
    with pytest.raises(ValueError, match="unknown model 'lstm'.*rf, tcn, tempcnn, transformer"):
        build("lstm", SINGLE, 3, {}, seed=0)
    with pytest.raises(ValueError, match=r"unknown parameters \['trees'\]"):
        build("rf", SINGLE, 3, {"trees": 10}, seed=0)
    assert set(MODELS) >= {"rf", "tempcnn"}
    assert MODELS["rf"].family == "sklearn" and MODELS["tempcnn"].family == "keras"


def test_encode_labels_and_class_weights():
    np.testing.assert_array_equal(training.encode_labels(np.array([5, 1, 3, 5]), [1, 3, 5]), [2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"class ids \[4\]"):
        training.encode_labels(np.array([1, 4]), [1, 3, 5], "val")
    w = training.inverse_frequency_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 0.0])


def check_bundle(bundle, name, train):
    files = {p.name for p in bundle.iterdir()}
    assert files == {models.MODEL_FILES[MODELS[name].family], "normalisation.json", "meta.json", "history.csv"}
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["name"] == name and meta["class_ids"] == CLASS_IDS and meta["class_names"] == NAMES
    assert meta["inputs"] == train.inputs and meta["seed"] == 11
    history = pd.read_csv(bundle / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert meta["best_epoch"] == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    norm = json.loads((bundle / "normalisation.json").read_text())
    np.testing.assert_allclose(norm["s2"]["min"], train.x["s2"].min(axis=(0, 1)))  # fitted on train only
    np.testing.assert_allclose(norm["s2"]["max"], train.x["s2"].max(axis=(0, 1)))
    return meta, history


@pytest.mark.parametrize("name,params", [("rf", TINY_RF), ("tempcnn", TINY_CNN)])
def test_bundle_round_trip_and_deterministic_training(tmp_path, name, params, caplog):
    train, val, test = sampleset(DOUBLE, 20, 0), sampleset(DOUBLE, 6, 1), sampleset(DOUBLE, 5, 2)
    params = {**params, "imbalance": "class_weights"}
    if name == "tempcnn":
        params["mixed_precision"] = True  # no GPU here: must fall back to float32, logged
    # in memory, then saved and read back: identical probabilities
    trained = training.fit(name, train, val, params, seed=11)
    before = trained.predict_proba(test.x)
    trained.save(tmp_path / "saved")
    loaded = load_trained(tmp_path / "saved")
    after = loaded.predict_proba(test.x)
    assert after.dtype == np.float32 and after.shape == (15, 3)
    np.testing.assert_array_equal(after, before)
    assert loaded.class_ids == CLASS_IDS and loaded.class_names == NAMES
    np.testing.assert_array_equal(loaded.predict(test.x), np.asarray(CLASS_IDS)[before.argmax(axis=1)])
    # a second training with the same seed, through train(): the same model
    with caplog.at_level(logging.INFO, logger="cropflow.training"):
        bundle = training.train(name, train, val, params, seed=11, out_dir=tmp_path / "bundle")
    assert "class weights" in caplog.text
    meta, history = check_bundle(bundle, name, train)
    np.testing.assert_array_equal(load_trained(bundle).predict_proba(test.x), before)
    if name == "rf":
        assert len(history) == 1 and history["accuracy"].iloc[0] == 1.0
        assert (loaded.predict(test.x) == test.y).all()
        noise = {k: np.random.default_rng(5).normal(0, 5, v.shape).astype(np.float32) for k, v in test.x.items()}
        other = training.fit(name, train, val, params, seed=12)
        assert not np.array_equal(other.predict_proba(noise), trained.predict_proba(noise))
    else:
        assert len(history) == params["epochs"] and meta["epochs_run"] == params["epochs"]
        assert meta["dtype_policy"] == "float32" and "no GPU is visible" in caplog.text
        # the bundle holds the best-validation state: its val loss is the history's minimum
        assert val_cross_entropy(load_trained(bundle), val) == pytest.approx(history["val_loss"].min(), rel=1e-4)


def val_cross_entropy(trained, val):
    p = trained.predict_proba(val.x).astype(np.float64)
    return float(-np.mean(np.log(p[np.arange(len(val)), training.encode_labels(val.y, CLASS_IDS)])))


def test_tempcnn_early_stopping_keeps_best_validation_epoch(tmp_path):
    train, val = sampleset(SINGLE, 20, 0), sampleset(SINGLE, 6, 1)
    val.y = np.asarray(CLASS_IDS)[[1, 2, 0]][val.y - 1]  # permuted labels: val loss only grows while fitting
    bundle = training.train("tempcnn", train, val, {**TINY_CNN, "epochs": 4, "patience": 1}, seed=2,
                            out_dir=tmp_path / "m")
    meta = json.loads((bundle / "meta.json").read_text())
    history = pd.read_csv(bundle / "history.csv")
    assert meta["epochs_run"] == len(history) == 2  # stopped after one epoch without improvement
    assert meta["best_epoch"] == 1 and history["val_loss"].iloc[1] > history["val_loss"].iloc[0]
    assert val_cross_entropy(load_trained(bundle), val) == pytest.approx(history["val_loss"].iloc[0], rel=1e-4)


def test_predict_marks_samples_without_observation(tmp_path):
    train, val = sampleset(SINGLE, 10, 0), sampleset(SINGLE, 4, 1)
    trained = training.fit("rf", train, val, TINY_RF, seed=0)
    x = {"features": val.x["features"][:3].copy()}
    x["features"][0] = np.nan
    x["features"][1, 0, 0] = np.nan
    proba = trained.predict_proba(x)
    assert np.isnan(proba[0]).all() and np.isfinite(proba[1:]).all()
    assert trained.predict(x, nodata=0)[0] == 0
    with pytest.raises(ValueError, match=r"'features' must be \(N, 8, 5\)"):
        trained.predict_proba({"features": np.zeros((2, 7, 5), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        trained.predict_proba({"s1": np.zeros((2, 8, 5), np.float32)})


def test_load_trained_missing_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_trained(tmp_path / "nope")


def test_rf_class_absent_from_training_keeps_its_column(caplog):
    train, val = sampleset(SINGLE, 10, 0), sampleset(SINGLE, 4, 1)
    wider = SampleSet(x=train.x, y=train.y, parcel_id=train.parcel_id, tile_index=train.tile_index,
                      inputs=train.inputs, class_ids=[*CLASS_IDS, 6], class_names=[*NAMES, "water"])
    with caplog.at_level(logging.WARNING, logger="cropflow.training"):
        trained = training.fit("rf", wider, val, TINY_RF, seed=0)
    assert "[6] have no training sample" in caplog.text
    proba = trained.predict_proba(val.x)
    assert proba.shape == (12, 4) and (proba[:, 3] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(trained.predict(val.x), val.y)


def test_oversample_balances_the_classes_and_turns_duplicated_patches():
    rng = np.random.default_rng(0)
    y = np.array([0] * 10 + [1] * 3 + [2] * 1)
    patches = rng.normal(size=(14, 3, 3, 2, 1)).astype(np.float32)
    x, yo = training.oversample({"s2": patches}, y, seed=1, kind="patch")
    assert np.bincount(yo).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(x["s2"][:14], patches)  # originals kept once, unchanged
    for i in np.flatnonzero(yo[14:] == 2) + 14:  # every duplicate of the single class-2 patch is a turn/flip of it
        variants = [np.rot90(patches[13], k, axes=(0, 1)) for k in range(3)]
        variants += [v[:, ::-1] for v in variants]
        assert any(np.array_equal(x["s2"][i], v) for v in variants)
    xp, yp = training.oversample({"s1": rng.normal(size=(14, 4, 2))}, y, seed=1)
    assert xp["s1"].shape == (30, 4, 2) and np.bincount(yp).tolist() == [10, 10, 10]


@pytest.mark.parametrize("name,params", [("rf", {**TINY_RF, "imbalance": "oversample"}),
                                         ("tempcnn", {**TINY_CNN, "imbalance": "mixup", "weight_decay": 1e-4})])
def test_imbalance_strategies_train(name, params):
    train, val = sampleset(DOUBLE, 20, 0), sampleset(DOUBLE, 6, 1)
    trained = training.fit(name, train, val, params, seed=3)
    assert trained.meta["params"]["imbalance"] == params["imbalance"] and trained.meta["train_seconds"] > 0
    assert trained.history["val_accuracy"].max() > 0.5


def test_mixup_batches_mix_inputs_and_one_hot_targets():
    x = {"a": np.eye(4, dtype=np.float32)[:, None, :].repeat(2, axis=1)}  # (4, 2, 4): sample i is one-hot i
    y = np.arange(4)
    ds = training.make_dataset(x, y, None, batch_size=4, shuffle=False, seed=0, mixup=0.2, n_classes=4)
    (xb, yb), = list(ds.as_numpy_iterator())
    np.testing.assert_allclose(yb.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(xb["a"][:, 0, :], yb, rtol=1e-5)  # inputs and targets mixed with the same weights


def test_mixup_needs_a_neural_network():
    with pytest.raises(ValueError, match="mixup"):
        training.fit("rf", sampleset(DOUBLE, 5, 0), sampleset(DOUBLE, 3, 1), {**TINY_RF, "imbalance": "mixup"},
                     seed=0)


def test_training_streams_a_stored_split_block_by_block(tmp_path, monkeypatch):
    from cropflow.sampleset import open_split, save_split

    train, val = sampleset(DOUBLE, 60, 0), sampleset(DOUBLE, 10, 1)
    save_split(tmp_path / "train.zarr", train)
    save_split(tmp_path / "val.zarr", val)
    stored, stored_val = open_split(tmp_path / "train.zarr"), open_split(tmp_path / "val.zarr")
    stored.block = stored_val.block = 16  # several blocks, shuffled in groups of 8
    reads = []
    real_read = type(stored).read
    monkeypatch.setattr(type(stored), "read", lambda self, key, a, b: reads.append(b - a) or real_read(self, key, a, b))
    trained = training.fit("tempcnn", stored, stored_val, {**TINY_CNN, "epochs": 4}, seed=0)
    assert trained.meta["streamed"] and max(reads) <= 16, "read one block at a time, 8 blocks in memory"
    norm = trained.normalisation["s2"]
    np.testing.assert_allclose(norm.min, train.x["s2"].min(axis=(0, 1)))  # the same ranges as in memory
    assert trained.history["val_accuracy"].max() > 0.6
    rf = training.fit("rf", stored, stored_val, TINY_RF, seed=0)  # scikit-learn: read into memory
    assert "streamed" not in rf.meta


def test_block_stream_yields_every_sample_once_per_epoch_in_full_batches(tmp_path):
    from cropflow.sampleset import open_split, save_split

    train = sampleset(DOUBLE, 37, 0)  # 111 samples
    save_split(tmp_path / "t.zarr", train)
    stored = open_split(tmp_path / "t.zarr")
    stored.block = 10
    norm = training.fit_normalisation_blocks(stored, {k: v["bands"] for k, v in train.inputs.items()})
    stream = training.BlockStream(stored, {"s1": "s1", "s2": "s2"}, norm, np.arange(len(stored)), mix=3)
    for epoch in (0, 1):
        batches = list(stream.batches(16, shuffle=True, seed=0, epoch=epoch))
        assert [len(b[1]) for b in batches] == [16] * 6 + [15]
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(111))
    first = [b[1] for b in stream.batches(16, True, 0, 0)]
    again = [b[1] for b in stream.batches(16, True, 0, 1)]
    assert not np.array_equal(np.concatenate(first), np.concatenate(again)), "a new order each epoch"


def test_a_saved_model_with_custom_layers_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    patches = {"s2": (5, 5, 4, 2)}
    train = sampleset({"s2": (4, 2)}, 8, 0)
    rng = np.random.default_rng(0)
    train.patches = {"s2": rng.normal(size=(len(train), *patches["s2"])).astype(np.float32)}
    trained = training.fit("convstar", train, train, {"filters": 4, "layers": 1, "dense": 8, "epochs": 1,
                                                      "batch_size": 8}, seed=0)
    trained.save(tmp_path / "m")
    code = ("import sys; sys.path.insert(0, 'workflow'); from cropflow.models import load_trained; "
            f"print(load_trained({str(tmp_path / 'm')!r}).name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert out.returncode == 0 and out.stdout.strip().endswith("convstar"), out.stderr[-2000:]


def test_neural_network_with_a_class_absent_from_training_trains_and_keeps_its_column(caplog):
    train, val = sampleset(SINGLE, 10, 0), sampleset(SINGLE, 4, 1)
    wider = SampleSet(x=train.x, y=train.y, parcel_id=train.parcel_id, tile_index=train.tile_index,
                      inputs=train.inputs, class_ids=[*CLASS_IDS, 6], class_names=[*NAMES, "water"])
    with caplog.at_level(logging.WARNING, logger="cropflow.training"):
        trained = training.fit("tempcnn", wider, val, TINY_CNN, seed=0)
    assert "[6] have no training sample" in caplog.text
    assert trained.predict_proba(val.x).shape == (12, 4)


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("rf", "conv1d_rf")])
def test_every_keras_model_builds_for_the_workflows_input_names(name):
    """The cube's inputs are "features" (chronological mode) or "s1", "coh", "s2" (separate mode): no layer
    name may collide with them."""
    patch = MODELS[name].kind == "patch"
    for inputs in ({"features": (6, 5)}, {"s1": (6, 5), "coh": (5, 2), "s2": (4, 3)}):
        shapes = {k: ((5, 5, *v) if patch else v) for k, v in inputs.items()}
        model = build(name, shapes, 4, {}, seed=0)
        assert tuple(model.output.shape) == (None, 4)


def test_precise_batch_norm_sets_moving_statistics_to_the_data():
    import keras

    inp = keras.Input((4, 2), name="s2")
    out = keras.layers.BatchNormalization(name="bn")(inp)
    model = keras.Model({"s2": inp}, out)
    x = (5.0 + 0.1 * np.random.default_rng(0).standard_normal((1000, 4, 2))).astype(np.float32)
    bn = model.get_layer("bn")
    bn.momentum = 0.99
    training.recalibrate_batch_norm(model, {"s2": x}, batch=100)
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1)), rtol=1e-3)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=(0, 1)), rtol=0.05)
    assert bn.momentum == 0.99


@pytest.mark.parametrize("name", ["tempcnn", "transformer", "tcn", "convstar"])
def test_inference_pass_equals_the_keras_model_for_several_inputs(name):
    """The frozen inference pass (XLA for tcn) feeds each input to its own keras.Input: with three inputs of
    different shapes whose sorted order differs from the built order, it returns the model's own probabilities,
    batch by batch and for a short last batch."""
    from cropflow.models import TrainedModel
    from cropflow.normalisation import MinMax

    patch = MODELS[name].kind == "patch"
    inputs = {"s2": (4, 3), "s1": (6, 5), "coh": (5, 2)}
    shapes = {k: ((5, 5, *v) if patch else v) for k, v in inputs.items()}
    model = build(name, shapes, 3, {}, seed=0)
    meta = {"name": name, "family": "keras", "kind": MODELS[name].kind, "class_ids": CLASS_IDS,
            "inputs": {k: {"bands": [f"b{i}" for i in range(c)], "times": [f"2023-06-{d + 1:02d}" for d in range(t)]}
                       for k, (t, c) in inputs.items()}, "shapes": shapes}
    norm = {k: MinMax(tuple(f"b{i}" for i in range(c)), np.zeros(c), np.ones(c)) for k, (_, c) in inputs.items()}
    trained = TrainedModel(model, meta, norm)
    rng = np.random.default_rng(1)
    x = {k: rng.random((37, *s), dtype=np.float32) for k, s in shapes.items()}
    expected = np.asarray(model(x, training=False))
    got = trained.predict_proba_normalised(x, batch_size=16)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["tempcnn", "tcn"])
def test_raw_finite_inputs_are_normalised_inside_the_inference_pass_as_numpy_does(name):
    """A tile job's valid pixel series (``finite=True``) go to the forward pass raw and are min-max normalised in
    it (frozen graph; XLA for tcn): the probabilities equal those of the numpy normalisation path, with values
    clipped at both ends of the range and a constant channel."""
    from cropflow.models import TrainedModel
    from cropflow.normalisation import MinMax

    inputs = {"s2": (4, 3), "s1": (6, 5)}
    model = build(name, inputs, 3, {}, seed=0)
    meta = {"name": name, "family": "keras", "kind": "pixel", "class_ids": CLASS_IDS,
            "inputs": {k: {"bands": [f"b{i}" for i in range(c)], "times": [f"2023-06-{d + 1:02d}" for d in range(t)]}
                       for k, (t, c) in inputs.items()}}
    rng = np.random.default_rng(2)
    norm = {}
    for k, (_, c) in inputs.items():
        lo = rng.uniform(-20, 0, c)
        hi = lo + rng.uniform(1, 30, c)
        hi[0] = lo[0]  # a constant channel normalises to 0
        norm[k] = MinMax(tuple(f"b{i}" for i in range(c)), lo, hi)
    trained = TrainedModel(model, meta, norm)
    x = {k: rng.uniform(-40, 40, (45, *s)).astype(np.float32) for k, s in inputs.items()}  # beyond [-0.5, 1.5]
    np.testing.assert_allclose(trained.predict_proba(x, batch_size=16, finite=True),
                               trained.predict_proba(x, batch_size=16), rtol=1e-6, atol=1e-7)
