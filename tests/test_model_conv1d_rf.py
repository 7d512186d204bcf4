import joblib
import numpy as np
import pytest
from zoo import K, separable

from cropflow import models, training
from cropflow.models import conv1d_rf, load_trained
from cropflow.models.rf import flatten_inputs
from cropflow.sampleset import SampleSet

SHAPES = {"s2": (6, 2), "s1": (8, 3)}
TINY = {"filters": 4, "kernel_sizes": [1, 3], "modules": 1, "dense": 16, "dropout": 0.1, "epochs": 3,
        "batch_size": 16, "learning_rate": 0.01, "patience": 2, "n_estimators": 20, "n_jobs": 2}
CLASS_IDS = [10, 20, 30, 40]

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def sampleset(n_per_class, seed):
    x, y = separable(SHAPES, n_per_class, seed)
    inputs = {name: {"bands": [f"b{i}" for i in range(c)], "times": [f"2023-06-{d + 1:02d}" for d in range(t)]}
              for name, (t, c) in SHAPES.items()}
    return SampleSet(x=x, y=np.asarray(CLASS_IDS)[y], parcel_id=np.arange(y.size), tile_index=np.zeros(y.size, int),
                     inputs=inputs, class_ids=CLASS_IDS)


@pytest.fixture(scope="module")
def fitted():
    import keras

    keras.utils.set_random_seed(0)
    x, y = separable(SHAPES, 24, 0)
    model = conv1d_rf.build(SHAPES, K, TINY, seed=0)
    return model.fit(flatten_inputs(x), y)


def test_module_contract_and_defaults():
    d = conv1d_rf.DEFAULTS
    assert conv1d_rf.FAMILY == "sklearn" and conv1d_rf.KIND == "pixel"
    assert (d["filters"], d["kernel_sizes"], d["modules"], d["dense"]) == (32, [1, 3, 5], 2, 512)
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"], d["validation_fraction"]) == \
        (50, 256, 0.001, 8, 0.1)
    assert (d["n_estimators"], d["min_samples_split"], d["max_features"], d["imbalance"]) == (500, 4, "sqrt", "none")
    model = conv1d_rf.build(SHAPES, K, {}, seed=7)
    assert list(model.shapes) == ["s1", "s2"] and model.random_state == 7 and model.dense == 512
    assert not hasattr(model, "classes_")


def test_build_rejects_bad_inputs():
    with pytest.raises(ValueError, match="conv1d_rf.*'s1'"):
        conv1d_rf.build({"s1": (8, 3, 1)}, K, {}, seed=0)
    with pytest.raises(ValueError, match="conv1d_rf.*n_classes"):
        conv1d_rf.build(SHAPES, 1, {}, seed=0)
    with pytest.raises(ValueError, match="conv1d_rf.*imbalance"):
        conv1d_rf.build(SHAPES, K, {"imbalance": "mixup"}, seed=0)


def test_unflatten_inverts_flatten_inputs():
    rng = np.random.default_rng(0)
    x = {"b": rng.normal(size=(5, 4, 3)), "a": rng.normal(size=(5, 7, 2))}
    flat = flatten_inputs(x)
    back = conv1d_rf.unflatten(flat, {"b": (4, 3), "a": (7, 2)})
    assert list(back) == ["a", "b"]
    for name, a in x.items():
        np.testing.assert_array_equal(back[name], a)
    with pytest.raises(ValueError, match="columns"):
        conv1d_rf.unflatten(flat[:, :-1], {"b": (4, 3), "a": (7, 2)})


def test_stratified_split_keeps_every_class_in_training():
    y = np.repeat([0, 1, 2], [20, 10, 1])
    tr, va = conv1d_rf.stratified_split(y, 0.1, seed=3)
    assert np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(y.size))
    np.testing.assert_array_equal(conv1d_rf.stratified_split(y, 0.1, seed=3)[1], va)


def test_fit_separates_held_out_data(fitted):
    x, y = separable(SHAPES, 10, 1)
    proba = fitted.predict_proba(flatten_inputs(x))
    assert proba.shape == (y.size, K)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(fitted.classes_) == list(range(K))
    assert np.mean(fitted.predict(flatten_inputs(x)) == y) > 0.8
    assert fitted.transform(flatten_inputs(x)).shape == (y.size, TINY["dense"])
    assert len(fitted.forest_.estimators_) == TINY["n_estimators"]
    assert 1 <= fitted.trunk_best_epoch_ <= TINY["epochs"] and "val_loss" in fitted.trunk_history_


def test_same_seed_gives_the_same_model(fitted):
    x, y = separable(SHAPES, 24, 0)
    again = conv1d_rf.build(SHAPES, K, TINY, seed=0).fit(flatten_inputs(x), y)
    probe, _ = separable(SHAPES, 5, 3)
    np.testing.assert_array_equal(again.predict_proba(flatten_inputs(probe)), fitted.predict_proba(flatten_inputs(probe)))


def test_joblib_round_trip_gives_identical_probabilities(fitted, tmp_path):
    x, _ = separable(SHAPES, 5, 2)
    before = fitted.predict_proba(flatten_inputs(x))
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(flatten_inputs(x)), before)
    assert hasattr(fitted.extractor_, "predict")  # pickling left the fitted estimator intact


def test_training_path_with_sample_weights_and_bundle(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODEL_MODULES, "conv1d_rf", "conv1d_rf")
    train, val, test = sampleset(16, 0), sampleset(6, 1), sampleset(5, 2)
    params = {**TINY, "imbalance": "class_weights"}
    trained = training.fit("conv1d_rf", train, val, params, seed=5)
    assert trained.family == "sklearn" and trained.meta["kind"] == "pixel"
    assert trained.meta["val_accuracy"] > 0.8
    before = trained.predict_proba(test.x)
    assert before.shape == (20, K) and before.dtype == np.float32
    trained.save(tmp_path / "bundle")
    assert (tmp_path / "bundle" / "model.joblib").is_file()
    loaded = load_trained(tmp_path / "bundle")
    np.testing.assert_array_equal(loaded.predict_proba(test.x), before)
    assert np.mean(loaded.predict(test.x) == test.y) > 0.8
