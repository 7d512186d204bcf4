import numpy as np
import pytest

from cropflow.models import conv1d

SHAPES = {"s1": (8, 3), "s2": (6, 2)}
TINY = {"filters": 8, "kernel_sizes": [1, 3], "modules": 1, "dense": 16, "dropout": 0.1}
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
    model = conv1d.build(shapes, K, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = separable(shapes, 16, 0)
    out = np.asarray(model(x, training=False))
    assert out.shape == (64, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_defaults_follow_science_and_contract():
    d = conv1d.DEFAULTS
    assert (d["filters"], d["kernel_sizes"], d["modules"], d["dense"]) == (32, [1, 3, 5], 2, 512)
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"]) == (50, 256, 0.001, 8)
    assert (d["imbalance"], d["mixed_precision"], d["weight_decay"]) == ("none", False, 0.0)
    assert conv1d.FAMILY == "keras" and conv1d.KIND == "pixel"


def test_features_layer_and_inception_branches():
    model = conv1d.build(SHAPES, K, {}, seed=0)
    features = model.get_layer("trunk_features")
    assert features.units == 512 and tuple(features.output.shape) == (None, 512)
    # 3 kernel branches + the pooled 1x1 branch, 32 filters each
    assert tuple(model.get_layer("s2_inception1_concat").output.shape) == (None, 6, 128)
    assert model.get_layer("s1_inception0_pool").pool_size == (3,)
    with pytest.raises(ValueError, match="inception2"):
        model.get_layer("s1_inception2_concat")


def test_training_reduces_loss():
    import keras

    x, y = separable(SHAPES, 16, 0)
    model = conv1d.build(SHAPES, K, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    initial = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=False))))
    history = model.fit(x, y, batch_size=16, epochs=6, shuffle=True, verbose=0)
    assert history.history["loss"][-1] < 0.8 * initial


def test_seed_fixes_initial_weights():
    a, b = (conv1d.build(SHAPES, K, TINY, seed=3).get_weights() for _ in range(2))
    c = conv1d.build(SHAPES, K, TINY, seed=4).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, w) for u, w in zip(a, c))


def test_save_load_round_trip(tmp_path):
    import keras

    model = conv1d.build(SHAPES, K, TINY, seed=2)
    x, _ = separable(SHAPES, 4, 1)
    path = tmp_path / "conv1d.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=0, atol=1e-7)
    assert loaded.get_layer("trunk_features").units == 16


def test_softmax_stays_float32_under_mixed_precision():
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = conv1d.build(SHAPES, K, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_stem").compute_dtype == "float16"
    x, _ = separable(SHAPES, 1, 0)
    assert keras.backend.standardize_dtype(model(x).dtype) == "float32"


@pytest.mark.parametrize("shapes", [{"s1": (8,)}, {"s1": (8, 3), "s2": (5, 5, 6, 2)}])
def test_wrong_rank_names_model_and_input(shapes):
    with pytest.raises(ValueError, match=r"conv1d: input 's\d'"):
        conv1d.build(shapes, K, TINY, seed=0)


def test_bad_classes_and_kernels():
    with pytest.raises(ValueError, match="conv1d: n_classes"):
        conv1d.build(SHAPES, 1, TINY, seed=0)
    with pytest.raises(ValueError, match="conv1d: kernel_sizes"):
        conv1d.build(SHAPES, K, {**TINY, "kernel_sizes": []}, seed=0)
    assert conv1d.kernel_list("1, 3,5") == [1, 3, 5]
