import numpy as np
import pytest

from cropflow.models import atlstm

SHAPES = {"s1": (8, 3), "s2": (6, 2)}
TINY = {"units": 8, "dense": 16, "dropout": 0.1}

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def separable(shapes, n_per_class, k=3):
    """Inputs whose class is written in the time profile of every channel: class c rises, falls or peaks."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(k), n_per_class)
    x = {}
    for name, (t, c) in shapes.items():
        s = np.linspace(0, 1, t)
        profiles = np.stack([s, 1 - s, 1 - np.abs(2 * s - 1)])[:k]
        x[name] = (profiles[y][:, :, None] + rng.normal(0, 0.1, (y.size, t, c))).astype(np.float32)
    return x, y


def cross_entropy(model, x, y) -> float:
    proba = np.asarray(model(x, training=False))
    return float(-np.log(proba[np.arange(y.size), y]).mean())


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_defaults_follow_science():
    d = atlstm.DEFAULTS
    assert d["units"] == 128
    assert atlstm.KIND == "pixel" and atlstm.FAMILY == "keras"
    for key, value in {"epochs": 50, "batch_size": 256, "learning_rate": 0.001, "patience": 8,
                       "imbalance": "none", "mixed_precision": False, "weight_decay": 0.0}.items():
        assert d[key] == value


@pytest.mark.parametrize("shapes", [{"s2": (6, 2)}, SHAPES], ids=["one-input", "two-inputs"])
def test_output_shape_sums_to_one_float32(shapes):
    import keras

    model = atlstm.build(shapes, 4, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = separable(shapes, 3)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = np.asarray(out)
    assert out.shape == (9, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_attention_layer_is_n_by_t_and_sums_to_one():
    import keras

    model = atlstm.build(SHAPES, 3, TINY, seed=1)
    x, _ = separable(SHAPES, 4)
    for name, (t, _) in SHAPES.items():
        attention = keras.Model(model.inputs, model.get_layer(f"{name}_attention").output)
        a = np.asarray(attention.predict(x, verbose=0))
        assert a.shape == (12, t)
        assert (a >= 0).all()
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)


def test_attention_follows_eq_5_4():
    """a = softmax_t((W h_t + b) . h_last) and the features are [sum_t a_t h_t, h_last]."""
    import keras

    model = atlstm.build({"s1": (7, 3)}, 3, TINY, seed=5)
    x, _ = separable({"s1": (7, 3)}, 2)
    bilstm = model.get_layer("s1_bilstm")
    probe = keras.Model(model.inputs, [bilstm.output[0], model.get_layer("s1_last_state").output,
                                       model.get_layer("s1_attention").output,
                                       model.get_layer("s1_features").output])
    h, h_last, a, features = (np.asarray(v, dtype=np.float64) for v in probe.predict(x, verbose=0))
    w, b = (np.asarray(v, dtype=np.float64) for v in model.get_layer("s1_attention_dense").get_weights())
    scores = np.einsum("ntd,nd->nt", h @ w + b, h_last)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a, expected, atol=1e-5)
    np.testing.assert_allclose(features, np.concatenate([np.einsum("nt,ntd->nd", a, h), h_last], axis=1),
                               atol=1e-5)


def test_training_reduces_loss():
    import keras

    x, y = separable(SHAPES, 22)
    model = atlstm.build(SHAPES, 3, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", jit_compile=False)
    initial = cross_entropy(model, x, y)
    model.fit(x, y, epochs=6, batch_size=16, shuffle=True, verbose=0)
    final = cross_entropy(model, x, y)
    assert final < 0.8 * initial


def test_seed_fixes_initial_weights():
    a = weights_of(atlstm.build(SHAPES, 3, TINY, seed=3))
    b = weights_of(atlstm.build(SHAPES, 3, TINY, seed=3))
    c = weights_of(atlstm.build(SHAPES, 3, TINY, seed=4))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert any(not np.array_equal(u, v) for u, v in zip(a, c, strict=True))


def test_forward_and_backward_lstm_start_different():
    bilstm = atlstm.build(SHAPES, 3, TINY, seed=3).get_layer("s1_bilstm")
    assert not np.array_equal(np.asarray(bilstm.forward_layer.cell.kernel),
                              np.asarray(bilstm.backward_layer.cell.kernel))


def test_save_load_round_trip(tmp_path):
    import keras

    model = atlstm.build(SHAPES, 3, TINY, seed=2)
    x, _ = separable(SHAPES, 3)
    path = tmp_path / "atlstm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-7)
    a = keras.Model(loaded.inputs, loaded.get_layer("s1_attention").output).predict(x, verbose=0)
    b = keras.Model(model.inputs, model.get_layer("s1_attention").output).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_softmax_stays_float32_under_mixed_precision():
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = atlstm.build(SHAPES, 3, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_attention_dense").compute_dtype == "float16"
    x, _ = separable(SHAPES, 2)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (6, 3)


@pytest.mark.parametrize("shapes", [{"s1": (8,)}, {"s1": (8, 3), "s2": (5, 5, 6, 2)}])
def test_wrong_rank_raises(shapes):
    with pytest.raises(ValueError, match="atlstm.*input 's"):
        atlstm.build(shapes, 3, TINY, seed=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="atlstm.*n_classes"):
        atlstm.build(SHAPES, 1, TINY, seed=0)
