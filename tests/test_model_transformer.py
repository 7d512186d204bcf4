import numpy as np
import pytest

from cropflow.models import transformer
from cropflow.models.transformer import positional_encoding

SHAPES = {"s1": (8, 3), "s2": (6, 2)}
TINY = {"d_model": 16, "heads": 2, "blocks": 2, "ff": 32, "dense": 16, "dropout": 0.1}

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


def test_positional_encoding_sin_on_even_cos_on_odd_channels():
    pe = positional_encoding(5, 8)
    assert pe.shape == (5, 8) and pe.dtype == np.float32
    np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])
    t = np.arange(5)[:, None]
    rates = 1 / 10000 ** (np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(t * rates), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(t * rates), atol=1e-6)
    odd = positional_encoding(3, 5)
    assert odd.shape == (3, 5)
    np.testing.assert_array_equal(odd[0], [0, 1, 0, 1, 0])


def test_defaults_follow_science_chapter_5():
    d = transformer.DEFAULTS
    assert (d["heads"], d["d_model"], d["blocks"]) == (4, 128, 2)
    assert transformer.KIND == "pixel" and transformer.FAMILY == "keras"
    for key, value in {"epochs": 50, "batch_size": 256, "learning_rate": 0.001, "patience": 8,
                       "imbalance": "none", "mixed_precision": False, "weight_decay": 0.0}.items():
        assert d[key] == value


@pytest.mark.parametrize("shapes", [{"s2": (6, 2)}, SHAPES], ids=["one-input", "two-inputs"])
def test_output_shape_sums_to_one_float32(shapes):
    import keras

    model = transformer.build(shapes, 4, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = separable(shapes, 3)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = np.asarray(out)
    assert out.shape == (9, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_attention_layer_is_n_by_t_and_sums_to_one():
    import keras

    model = transformer.build(SHAPES, 3, TINY, seed=1)
    x, _ = separable(SHAPES, 4)
    for name, (t, _) in SHAPES.items():
        attention = keras.Model(model.inputs, model.get_layer(f"{name}_attention").output)
        a = np.asarray(attention.predict(x, verbose=0))
        assert a.shape == (12, t)
        assert (a >= 0).all()
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)


def test_training_reduces_loss():
    import keras

    x, y = separable(SHAPES, 22)
    model = transformer.build(SHAPES, 3, {**TINY, "blocks": 1}, seed=0)  # one block: half the tracing time
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", jit_compile=False)
    initial = cross_entropy(model, x, y)
    model.fit(x, y, epochs=6, batch_size=16, shuffle=True, verbose=0)
    final = cross_entropy(model, x, y)
    assert final < 0.8 * initial


def test_seed_fixes_initial_weights():
    a = weights_of(transformer.build(SHAPES, 3, TINY, seed=3))
    b = weights_of(transformer.build(SHAPES, 3, TINY, seed=3))
    c = weights_of(transformer.build(SHAPES, 3, TINY, seed=4))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert any(not np.array_equal(u, v) for u, v in zip(a, c, strict=True))


def test_attention_projections_start_different():
    model = transformer.build(SHAPES, 3, TINY, seed=3)
    mha = model.get_layer("s1_block0_mha")
    q, k, v = (np.asarray(d.kernel) for d in (mha.query_dense, mha.key_dense, mha.value_dense))
    assert not np.array_equal(q, k) and not np.array_equal(q, v)


def test_save_load_round_trip(tmp_path):
    import keras

    model = transformer.build(SHAPES, 3, TINY, seed=2)
    x, _ = separable(SHAPES, 3)
    path = tmp_path / "transformer.keras"
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
        model = transformer.build(SHAPES, 3, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_embed").compute_dtype == "float16"
    x, _ = separable(SHAPES, 2)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (6, 3)


@pytest.mark.parametrize("shapes", [{"s1": (8,)}, {"s1": (8, 3), "s2": (5, 5, 6, 2)}])
def test_wrong_rank_raises(shapes):
    with pytest.raises(ValueError, match="transformer.*input 's"):
        transformer.build(shapes, 3, TINY, seed=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="transformer.*n_classes"):
        transformer.build(SHAPES, 1, TINY, seed=0)
    with pytest.raises(ValueError, match="transformer.*heads"):
        transformer.build(SHAPES, 3, {**TINY, "d_model": 15}, seed=0)
