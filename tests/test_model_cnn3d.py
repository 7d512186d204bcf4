import keras
import numpy as np
import pytest

from cropflow.models import cnn3d

SHAPES = {"s1": (5, 5, 6, 3), "s2": (5, 5, 4, 2)}
TINY = {"filters": [4, 4, 8], "dense": [16], "dropout": 0.1}

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def patches(shapes, n, k=3, seed=0):
    """Patches whose centre-pixel class is written in the time profile of every pixel: rising, falling, flat."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = {}
    for name, (h, w, t, c) in shapes.items():
        profiles = np.stack([np.linspace(0, 1, t), np.linspace(1, 0, t), np.full(t, 0.5)])[:k]
        x[name] = (profiles[y][:, None, None, :, None] + rng.normal(0, 0.1, (n, h, w, t, c))).astype(np.float32)
    return x, y


def test_module_attributes():
    assert cnn3d.FAMILY == "keras" and cnn3d.KIND == "patch"
    d = cnn3d.DEFAULTS
    assert d["filters"] == [32, 32, 64] and d["kernel_size"] == 3 and d["batch_size"] == 128
    assert (d["epochs"], d["learning_rate"], d["patience"], d["imbalance"], d["mixed_precision"],
            d["weight_decay"]) == (50, 0.001, 8, "none", False, 0.0)


@pytest.mark.parametrize("shapes", [{"s1": SHAPES["s1"]}, SHAPES], ids=["one-input", "two-inputs"])
def test_output_is_a_float32_distribution_per_sample(shapes):
    model = cnn3d.build(shapes, 4, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = patches(shapes, 32)
    out = model(x, training=False)
    assert tuple(out.shape) == (32, 4) and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


def test_three_conv3d_layers_over_h_w_t():
    model = cnn3d.build(SHAPES, 3, {}, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert len(convs) == 6
    assert [c.filters for c in convs if c.name.startswith("s1")] == [32, 32, 64]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == "same" for c in convs)
    assert model.get_layer("s1_conv0").kernel.shape == (3, 3, 3, 3, 32)  # bands are the channels


def test_softmax_stays_float32_under_mixed_precision():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = cnn3d.build(SHAPES, 3, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_conv0").compute_dtype == "float16"
    x, _ = patches(SHAPES, 4)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (4, 3)


def test_training_steps_reduce_loss():
    x, y = patches(SHAPES, 32)
    model = cnn3d.build(SHAPES, 3, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    loss = model.fit(x, y, epochs=10, batch_size=32, shuffle=False, verbose=0).history["loss"]
    assert loss[-1] < 0.8 * loss[0]


def test_seed_sets_initial_weights():
    w0 = cnn3d.build(SHAPES, 3, TINY, seed=0).get_weights()
    w0b = cnn3d.build(SHAPES, 3, TINY, seed=0).get_weights()
    w1 = cnn3d.build(SHAPES, 3, TINY, seed=1).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(w0, w0b))
    assert not np.array_equal(w0[0], w1[0])


def test_save_and_load_round_trip(tmp_path):
    model = cnn3d.build(SHAPES, 3, TINY, seed=0)
    path = tmp_path / "cnn3d.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x, _ = patches(SHAPES, 8)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_wrong_rank_and_classes():
    with pytest.raises(ValueError, match=r"cnn3d: input 's2' must have a per-sample patch shape"):
        cnn3d.build({"s1": (5, 5, 6, 3), "s2": (6, 3)}, 3, TINY, seed=0)
    with pytest.raises(ValueError, match="cnn3d: n_classes"):
        cnn3d.build(SHAPES, 1, TINY, seed=0)
