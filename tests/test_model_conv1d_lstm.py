import numpy as np
import pytest

from cropflow.models import conv1d_lstm

SHAPES = {"s1": (8, 3), "s2": (6, 2)}
TINY = {"conv_kernels": [3, 3, 5], "conv_filters": [4, 8, 8], "conv_dense": 8, "lstm_units": 8,
        "attention_units": 8, "lstm_dense": 16, "dense": 16, "dropout": 0.1}
K = 4

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def separable(shapes, n_per_class, seed):
    """Inputs in [0, 1] whose class is the time profile of every channel: rising, falling, flat or peaked."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n_per_class)
    x = {}
    for name, (t, c) in shapes.items():
        s = np.linspace(0, 1, t)
        profiles = np.stack([s, 1 - s, np.full(t, 0.5), np.sin(np.pi * s)])
        x[name] = (profiles[y][:, :, None] + rng.normal(0, 0.05, (y.size, t, c))).astype(np.float32)
    return x, y


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


@pytest.mark.parametrize("shapes", [SHAPES, {"s1": (7, 2)}], ids=["two-inputs", "one-input"])
def test_output_is_a_float32_distribution(shapes):
    model = conv1d_lstm.build(shapes, K, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = separable(shapes, 16, 0)
    out = np.asarray(model(x, training=False))
    assert out.shape == (64, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_defaults_follow_science_and_contract():
    d = conv1d_lstm.DEFAULTS
    assert (d["conv_kernels"], d["conv_filters"], d["lstm_units"], d["lstm_dense"]) == (
        [3, 3, 5], [64, 128, 256], 128, 512)
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"]) == (50, 256, 0.001, 8)
    assert (d["imbalance"], d["mixed_precision"], d["weight_decay"]) == ("none", False, 0.0)
    assert conv1d_lstm.FAMILY == "keras" and conv1d_lstm.KIND == "pixel"


def test_default_architecture():
    model = conv1d_lstm.build(SHAPES, K, {}, seed=0)
    for i, (kernel, width) in enumerate([(3, 64), (3, 128), (5, 256)]):
        conv = model.get_layer(f"s1_conv{i}")
        assert conv.kernel_size == (kernel,) and conv.filters == width
        assert tuple(model.get_layer(f"s1_conv{i}_bn").output.shape) == (None, 8, width)
    assert tuple(model.get_layer("s2_bilstm").output.shape) == (None, 6, 256)
    assert model.get_layer("s2_lstm_dense").units == 512


def test_attention_weights_per_input():
    import keras

    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    x, _ = separable(SHAPES, 2, 0)
    for name, (t, _) in SHAPES.items():
        att = np.asarray(keras.Model(model.inputs, model.get_layer(f"{name}_attention").output)(x))
        assert att.shape == (8, t)
        assert (att > 0).all()
        np.testing.assert_allclose(att.sum(axis=1), 1.0, rtol=1e-5)


def test_attention_context_is_weighted_sum_of_states():
    """context = sum_t a_t h_t with a_t = softmax_t(v^T tanh(W h_t)) (Eq. 3-19 to 3-21)."""
    import keras

    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    x, _ = separable(SHAPES, 2, 0)
    names = ["s1_bilstm", "s1_attention", "s1_attention_context"]
    h, a, context = (np.asarray(v) for v in keras.Model(model.inputs, [model.get_layer(n).output for n in names])(x))
    w = model.get_layer("s1_attention_w").get_weights()[0]
    v = model.get_layer("s1_attention_v").get_weights()[0][:, 0]
    score = np.tanh(h @ w) @ v
    expected = np.exp(score - score.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(context, np.einsum("nt,ntd->nd", a, h), rtol=1e-4, atol=1e-6)


def test_skip_projection_only_where_channels_change():
    model = conv1d_lstm.build({"s1": (6, 4)}, K, {**TINY, "conv_filters": [4, 8, 8]}, seed=0)
    names = {layer.name for layer in model.layers}
    assert "s1_conv0_skip" not in names and "s1_conv1_skip" in names and "s1_conv2_skip" not in names


def test_training_reduces_loss():
    import keras

    x, y = separable(SHAPES, 16, 0)
    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    initial = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=False))))
    history = model.fit(x, y, batch_size=16, epochs=6, shuffle=True, verbose=0)
    assert history.history["loss"][-1] < 0.8 * initial


def test_seed_fixes_initial_weights():
    a, b = (conv1d_lstm.build(SHAPES, K, TINY, seed=3).get_weights() for _ in range(2))
    c = conv1d_lstm.build(SHAPES, K, TINY, seed=4).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, w) for u, w in zip(a, c))


def test_backward_lstm_differs_from_forward():
    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    bilstm = model.get_layer("s1_bilstm")
    forward, backward = bilstm.forward_layer.get_weights(), bilstm.backward_layer.get_weights()
    assert not np.array_equal(forward[0], backward[0]) and not np.array_equal(forward[1], backward[1])


def test_save_load_round_trip(tmp_path):
    import keras

    model = conv1d_lstm.build(SHAPES, K, TINY, seed=2)
    x, _ = separable(SHAPES, 4, 1)
    path = tmp_path / "conv1d_lstm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=0, atol=1e-7)
    att = keras.Model(loaded.inputs, loaded.get_layer("s2_attention").output)(x)
    assert tuple(att.shape) == (16, 6)


def test_softmax_stays_float32_under_mixed_precision():
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = conv1d_lstm.build(SHAPES, K, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_conv0").compute_dtype == "float16"
    x, _ = separable(SHAPES, 1, 0)
    out = model(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("shapes", [{"s1": (8,)}, {"s1": (8, 3), "s2": (5, 5, 6, 2)}])
def test_wrong_rank_names_model_and_input(shapes):
    with pytest.raises(ValueError, match=r"conv1d_lstm: input 's\d'"):
        conv1d_lstm.build(shapes, K, TINY, seed=0)


def test_bad_parameters():
    with pytest.raises(ValueError, match="conv1d_lstm: n_classes"):
        conv1d_lstm.build(SHAPES, 1, TINY, seed=0)
    with pytest.raises(ValueError, match="conv1d_lstm: conv_kernels"):
        conv1d_lstm.build(SHAPES, K, {**TINY, "conv_kernels": [3, 3]}, seed=0)
    assert conv1d_lstm.int_list("conv_kernels", "3,3,5") == [3, 3, 5]
