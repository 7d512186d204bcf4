import numpy as np
import pytest

from cropflow.models import tcn

SHAPES = {"s1": (8, 3), "s2": (6, 2)}
TINY = {"filters": 8, "kernel_size": 3, "levels": 2, "dense": 16, "dropout": 0.1}
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
    model = tcn.build(shapes, K, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = separable(shapes, 16, 0)
    out = np.asarray(model(x, training=False))
    assert out.shape == (64, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_defaults_follow_science_and_contract():
    d = tcn.DEFAULTS
    assert (d["filters"], d["kernel_size"], d["levels"]) == (64, 3, 3)
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"]) == (50, 256, 0.001, 8)
    assert (d["imbalance"], d["mixed_precision"], d["weight_decay"]) == ("none", False, 0.0)
    assert tcn.FAMILY == "keras" and tcn.KIND == "pixel"


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("levels", [0, 1, 2, 3, 4])
def test_receptive_field_formula(k, levels):
    assert tcn.receptive_field(k, levels) == 1 + 2 * (k - 1) * (2**levels - 1)


def test_receptive_field_values_and_errors():
    assert tcn.receptive_field(3, 3) == 29
    assert tcn.receptive_field(2, 1) == 3
    with pytest.raises(ValueError, match="tcn"):
        tcn.receptive_field(0, 2)


@pytest.mark.parametrize("k, levels", [(2, 2), (3, 2)])
def test_last_step_sees_exactly_the_receptive_field(k, levels):
    """Perturbing step T - R changes the last-step features; any earlier step does not (causal, dilated)."""
    import keras

    r = tcn.receptive_field(k, levels)
    t = r + 4
    model = tcn.build({"s1": (t, 2)}, K, {**TINY, "kernel_size": k, "levels": levels}, seed=0)
    features = keras.Model(model.inputs, model.get_layer("s1_flatten").output)
    x = np.repeat(np.random.default_rng(0).normal(size=(1, t, 2)).astype(np.float32), t + 1, axis=0)
    x[np.arange(t), np.arange(t)] += 5.0  # row i perturbs step i; the last row is the unperturbed base
    out = np.asarray(features({"s1": x}))
    changed = [not np.allclose(out[i], out[t], atol=1e-6) for i in range(t)]
    assert changed == [False] * (t - r) + [True] * r


def test_channel_projection_only_where_needed():
    model = tcn.build({"a": (6, 8), "b": (6, 3)}, K, TINY, seed=0)
    names = {layer.name for layer in model.layers}
    assert "b_block0_proj" in names and "a_block0_proj" not in names and "b_block1_proj" not in names
    assert model.get_layer("a_block1_a_conv").dilation_rate == (2,)
    assert model.get_layer("a_block1_a_conv").padding == "causal"


def test_training_reduces_loss():
    import keras

    x, y = separable(SHAPES, 16, 0)
    model = tcn.build(SHAPES, K, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    initial = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=False))))
    history = model.fit(x, y, batch_size=16, epochs=6, shuffle=True, verbose=0)
    assert history.history["loss"][-1] < 0.8 * initial


def test_seed_fixes_initial_weights():
    a, b = (tcn.build(SHAPES, K, TINY, seed=3).get_weights() for _ in range(2))
    c = tcn.build(SHAPES, K, TINY, seed=4).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, w) for u, w in zip(a, c))


def test_save_load_round_trip(tmp_path):
    import keras

    model = tcn.build(SHAPES, K, TINY, seed=2)
    x, _ = separable(SHAPES, 4, 1)
    path = tmp_path / "tcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=0, atol=1e-7)


def test_softmax_stays_float32_under_mixed_precision():
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = tcn.build(SHAPES, K, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_block0_a_conv").compute_dtype == "float16"
    x, _ = separable(SHAPES, 1, 0)
    assert keras.backend.standardize_dtype(model(x).dtype) == "float32"


@pytest.mark.parametrize("shapes", [{"s1": (8,)}, {"s1": (8, 3), "s2": (5, 5, 6, 2)}])
def test_wrong_rank_names_model_and_input(shapes):
    with pytest.raises(ValueError, match=r"tcn: input 's\d'"):
        tcn.build(shapes, K, TINY, seed=0)


def test_bad_classes():
    with pytest.raises(ValueError, match="tcn: n_classes"):
        tcn.build(SHAPES, 1, TINY, seed=0)
