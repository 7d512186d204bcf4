import numpy as np
import pytest

from cropflow import interpret, normalisation, training
from cropflow.models import TrainedModel
from cropflow.sampleset import SampleSet

T, C = 6, 3
SIGNAL_TIME, SIGNAL_BAND = 3, 1
CLASS_IDS = [1, 2, 3]
NAMES = ["maize", "soybean", "wheat"]
BANDS = ["B4", "B8A", "B11"]
TIMES = [f"2023-{m:02d}-15" for m in range(4, 4 + T)]
TINY_CNN = {"filters": 8, "kernel_size": 3, "layers": 1, "dense": 16, "dropout": 0.0, "epochs": 12,
            "batch_size": 32, "patience": 3, "learning_rate": 0.01}

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def signal_samples(n_per_class: int, seed: int) -> SampleSet:
    """Noise everywhere except band B8A at time step 3, whose level is the class (0, 3, 6 plus noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASS_IDS)), n_per_class)
    x = rng.normal(0.0, 1.0, (y.size, T, C)).astype(np.float32)
    x[:, SIGNAL_TIME, SIGNAL_BAND] = 3.0 * y + rng.normal(0.0, 0.3, y.size)
    return SampleSet(x={"s2": x}, y=np.asarray(CLASS_IDS)[y], parcel_id=np.arange(y.size),
                     tile_index=np.zeros(y.size, int), inputs={"s2": {"bands": BANDS, "times": TIMES}},
                     class_ids=CLASS_IDS, class_names=NAMES)


@pytest.fixture(scope="module")
def splits():
    return signal_samples(120, 0), signal_samples(40, 1), signal_samples(40, 2)


@pytest.fixture(scope="module")
def tempcnn(splits):
    train, val, _ = splits
    return training.fit("tempcnn", train, val, TINY_CNN, seed=4)


@pytest.fixture(scope="module")
def forest(splits):
    train, val, _ = splits
    return training.fit("rf", train, val, {"n_estimators": 60, "n_jobs": 2}, seed=4)


def toy_model(trained_inputs, layers_fn, class_ids=CLASS_IDS, lo=-3.0, hi=3.0):
    """A hand-built keras model wrapped as a TrainedModel with min-max ranges [lo, hi] per band."""
    import keras

    name, shape = next(iter(trained_inputs.items()))
    inp = keras.Input(shape=shape, name=name)
    model = keras.Model(inputs={name: inp}, outputs=layers_fn(keras, inp), name="toy")
    meta = {"name": "toy", "family": "keras", "class_ids": class_ids, "class_names": NAMES[:len(class_ids)],
            "inputs": {name: {"bands": BANDS[:shape[-1]], "times": TIMES[:shape[-2]]}}, "shapes": trained_inputs}
    norm = {name: normalisation.MinMax(tuple(BANDS[:shape[-1]]), np.full(shape[-1], lo), np.full(shape[-1], hi))}
    return TrainedModel(model, meta, norm)


# --------------------------------------------------------------------------------------------------- saliency


def test_tempcnn_saliency_peaks_at_the_signal(tempcnn, splits):
    test = splits[2]
    assert (tempcnn.predict(test.x) == test.y).mean() > 0.9
    sal = interpret.saliency(tempcnn, test.x, test.y)
    assert list(sal) == ["s2"] and sal["s2"].shape == (3, T, C) and sal["s2"].dtype == np.float32
    for k in range(3):
        peak = np.unravel_index(np.argmax(sal["s2"][k]), (T, C))
        assert peak == (SIGNAL_TIME, SIGNAL_BAND), (NAMES[k], sal["s2"][k])
    log_sal = interpret.saliency(tempcnn, test.x, test.y, score="log_proba", batch_size=7)
    assert all(np.unravel_index(np.argmax(log_sal["s2"][k]), (T, C)) == (SIGNAL_TIME, SIGNAL_BAND)
               for k in range(3))


def test_saliency_matches_analytic_gradient_of_a_linear_softmax_patch_model():
    rng = np.random.default_rng(3)
    shape = (2, 2, 3, 2)  # h, w, T, C
    trained = toy_model({"s2": shape}, lambda keras, inp: keras.layers.Dense(
        3, activation="softmax", name="proba")(keras.layers.Flatten()(inp)))
    dense = trained.model.get_layer("proba")
    w = rng.normal(size=(int(np.prod(shape)), 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    dense.set_weights([w, b])
    x = rng.uniform(-3, 3, (10, *shape)).astype(np.float32)
    y = np.array(CLASS_IDS)[rng.integers(0, 2, 10)]  # no sample of the third class
    sal = interpret.saliency(trained, {"s2": x}, y, batch_size=4)
    assert sal["s2"].shape == (3, *shape)

    xn = (x.reshape(10, -1) + 3.0) / 6.0
    z = xn @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    idx = interpret.class_indices(y, CLASS_IDS)
    grads = np.abs(p[np.arange(10), idx][:, None] * (w[:, idx].T - p @ w.T))  # d p_k / d xn
    for k in range(2):
        expected = grads[idx == k].mean(axis=0).reshape(shape)
        np.testing.assert_allclose(sal["s2"][k], expected, rtol=2e-4, atol=1e-7)
    assert np.isnan(sal["s2"][2]).all()


def test_saliency_rejects_a_forest_and_unknown_classes(forest, tempcnn, splits):
    test = splits[2]
    with pytest.raises(ValueError, match="keras"):
        interpret.saliency(forest, test.x, test.y)
    with pytest.raises(ValueError, match=r"\[9\]"):
        interpret.saliency(tempcnn, test.x, np.full(len(test), 9))
    with pytest.raises(ValueError, match="missing"):
        interpret.saliency(tempcnn, {"s1": test.x["s2"]}, test.y)


# --------------------------------------------------------------------------------------------------- attention


def attention_toy(keras, inp):
    """Attention over time: scores from a bias-free Dense(1) of each step, softmax named s2_attention."""
    scores = keras.layers.Dense(1, use_bias=False, name="s2_score")(inp)
    scores = keras.layers.Reshape((T,), name="s2_flat")(scores)
    weights = keras.layers.Softmax(axis=-1, name="s2_attention")(scores)
    context = keras.layers.Dot(axes=(1, 1), name="s2_context")([weights, inp])
    return keras.layers.Dense(3, activation="softmax", name="proba")(context)


def test_attention_weights_are_class_means_of_the_attention_layer(splits):
    test = splits[2]
    trained = toy_model({"s2": (T, C)}, attention_toy)
    score_w = np.array([[0.0], [2.0], [0.0]], dtype=np.float32)  # attention follows band B8A
    trained.model.get_layer("s2_score").set_weights([score_w])
    att = interpret.attention_weights(trained, test.x, test.y)
    assert list(att) == ["s2"] and att["s2"].shape == (3, T)
    np.testing.assert_allclose(att["s2"].sum(axis=1), 1.0, rtol=1e-5)

    xn, _ = normalisation.apply_minmax(test.x["s2"], np.full(C, -3.0), np.full(C, 3.0))
    s = 2.0 * xn[:, :, 1]
    a = np.exp(s - s.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    for k, cid in enumerate(CLASS_IDS):
        np.testing.assert_allclose(att["s2"][k], a[test.y == cid].mean(axis=0), rtol=1e-4)
    assert np.argmax(att["s2"][2]) == SIGNAL_TIME  # the wheat samples' bright B8A at step 3 draws the attention


def test_models_without_attention_give_an_empty_dict(tempcnn, forest, splits):
    test = splits[2]
    assert interpret.attention_weights(tempcnn, test.x, test.y) == {}
    assert interpret.attention_weights(forest, test.x, test.y) == {}


# --------------------------------------------------------------------------------------------------- forest


def test_rf_importances_unflatten_and_peak_at_the_signal(forest):
    df = interpret.rf_importances(forest)
    assert list(df.columns) == ["input", "band", "time", "time_index", "importance"]
    assert len(df) == T * C and df["importance"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(df["importance"], forest.model.feature_importances_)
    assert df[["time_index", "band"]].iloc[:4].values.tolist() == [[0, "B4"], [0, "B8A"], [0, "B11"], [1, "B4"]]
    top = df.loc[df["importance"].idxmax()]
    assert (top["time"], top["time_index"], top["band"]) == (TIMES[SIGNAL_TIME], SIGNAL_TIME, BANDS[SIGNAL_BAND])
    assert top["importance"] > 0.5


def test_rf_importances_with_two_inputs_follow_sorted_input_order():
    from sklearn.ensemble import RandomForestClassifier

    from cropflow.models.rf import flatten_inputs

    rng = np.random.default_rng(0)
    x = {"s2": rng.normal(size=(90, 2, 2)), "s1": rng.normal(size=(90, 3, 1))}
    y = np.repeat([0, 1, 2], 30)
    x["s2"][:, 1, 0] += 4 * y  # only s2 B4 at its second date carries the class
    est = RandomForestClassifier(n_estimators=30, random_state=0).fit(flatten_inputs(x), y)
    meta = {"name": "rf", "family": "sklearn", "class_ids": CLASS_IDS,
            "inputs": {"s2": {"bands": ["B4", "B8A"], "times": TIMES[:2]}, "s1": {"bands": ["VH"], "times": TIMES[:3]}}}
    norm = {n: normalisation.MinMax(tuple(meta["inputs"][n]["bands"]), np.zeros(a.shape[2]), np.ones(a.shape[2]))
            for n, a in x.items()}
    df = interpret.rf_importances(TrainedModel(est, meta, norm))
    assert df["input"].tolist() == ["s1"] * 3 + ["s2"] * 4
    top = df.loc[df["importance"].idxmax()]
    assert (top["input"], top["band"], top["time_index"]) == ("s2", "B4", 1)
    meta["inputs"]["s1"]["times"] = TIMES[:2]  # metadata that does not match the forest's features
    with pytest.raises(ValueError, match="7 features"):
        interpret.rf_importances(TrainedModel(est, meta, norm))


# --------------------------------------------------------------------------------------------------- plots


def test_plots_are_written(tempcnn, forest, splits, tmp_path):
    test = splits[2]
    png = b"\x89PNG\r\n\x1a\n"
    sal = interpret.saliency(tempcnn, test.x, test.y)
    assert interpret.plot_saliency(sal, tempcnn, tmp_path / "saliency.png").read_bytes()[:8] == png
    trained = toy_model({"s2": (T, C)}, attention_toy)
    att = interpret.attention_weights(trained, test.x, test.y)
    assert interpret.plot_attention(att, trained, tmp_path / "attention.png").read_bytes()[:8] == png
    df = interpret.rf_importances(forest)
    assert interpret.plot_importances(df, tmp_path / "out" / "importances.png", top=5).read_bytes()[:8] == png
    patch = toy_model({"s2": (2, 2, T, C)}, lambda keras, inp: keras.layers.Dense(
        3, activation="softmax", name="proba")(keras.layers.Flatten()(inp)))
    patch_sal = interpret.saliency(patch, {"s2": np.zeros((3, 2, 2, T, C), np.float32)}, CLASS_IDS)
    assert interpret.plot_saliency(patch_sal, patch, tmp_path / "patch.png").read_bytes()[:8] == png
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "attention.png", "importances.png", "patch.png", "saliency.png"]
    with pytest.raises(ValueError, match="no attention"):
        interpret.plot_attention({}, tempcnn, tmp_path / "none.png")
