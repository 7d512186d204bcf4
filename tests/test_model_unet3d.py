import numpy as np
import pytest

from cropflow.models import unet3d

TWO = {"s1": (7, 7, 8, 3), "s2": (7, 7, 6, 2)}
TINY = {"levels": 2, "filters": 4}
K = 3

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def patches(shapes, n_per_class, seed, k=K):
    """Patches whose class is written in the time profile of every pixel and band: rising, falling or flat."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    x = {}
    for name, (h, w, t, c) in shapes.items():
        profiles = np.stack([np.linspace(0, 1, t), np.linspace(1, 0, t), np.full(t, 0.5)])[:k]
        x[name] = (profiles[y][:, None, None, :, None] + rng.normal(0, 0.2, (y.size, h, w, t, c))).astype(np.float32)
    return x, y


def both_outputs(model):
    """The model with outputs [proba, proba_map] (one graph-mode predict gives both)."""
    import keras

    return keras.Model(model.inputs, [model.output, model.get_layer("proba_map").output])


def test_module_attributes():
    assert unet3d.FAMILY == "keras" and unet3d.KIND == "patch"
    d = unet3d.DEFAULTS
    assert (d["levels"], d["filters"], d["time_reduction"]) == (3, 16, "conv")
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"]) == (50, 32, 0.001, 8)
    assert (d["imbalance"], d["mixed_precision"], d["weight_decay"]) == ("none", False, 0.0)


def test_padding_is_symmetric_up_to_the_multiple():
    assert unet3d._padding(11, 8) == (2, 3)
    assert unet3d._padding(5, 4) == (1, 2)
    assert unet3d._padding(128, 8) == (0, 0)


def test_two_inputs_with_different_t_and_c_give_float32_probabilities():
    model = unet3d.build(TWO, K, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(TWO)
    x, _ = patches(TWO, 4, 0)
    out = model.predict(x, verbose=0)  # graph mode (fused oneDNN kernels) ...
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)), atol=1e-6)  # ... equals eager
    assert out.shape == (12, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("s1_gate0").output.shape == (None, 8, 8, 8, 1)  # alpha over padded pixels, time
    assert model.get_layer("s2_gate1").output.shape == (None, 4, 4, 6, 1)


@pytest.mark.parametrize("size", [5, 7, 11])
def test_any_patch_size_and_proba_is_the_centre_of_proba_map(size):
    shapes = {"s1": (size, size, 5, 2), "s2": (size, size, 3, 3)}
    model = unet3d.build(shapes, K, TINY, seed=0)
    x, _ = patches(shapes, 2, 0)
    proba, proba_map = both_outputs(model).predict(x, verbose=0)
    assert proba.shape == (6, K) and proba.dtype == np.float32
    assert proba_map.shape == (6, size, size, K) and proba_map.dtype == np.float32
    np.testing.assert_allclose(proba_map.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(proba, proba_map[:, size // 2, size // 2], rtol=1e-6, atol=1e-7)
    assert not np.allclose(proba_map[:, 0, 0], proba_map[:, size // 2, size // 2])


def test_one_input_and_mean_time_reduction_build():
    shapes = {"s2": (5, 5, 4, 3)}
    model = unet3d.build(shapes, K, {**TINY, "time_reduction": "mean"}, seed=0)
    assert model.get_layer("s2_bottleneck_time").count_params() == 0
    x, _ = patches(shapes, 2, 0)
    out = model.predict(x, verbose=0)
    assert out.shape == (6, K)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_output_stays_float32_under_mixed_precision():
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = unet3d.build(TWO, K, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_enc0_conv0").compute_dtype == "float16"
    x, _ = patches(TWO, 2, 0)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (6, K)
    assert model.get_layer("proba_map").compute_dtype == "float32"


def test_training_reduces_the_loss():
    import keras

    x, y = patches(TWO, 16, 1)
    model = unet3d.build(TWO, K, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=6, batch_size=16, shuffle=True, verbose=0)
    loss = history.history["loss"]
    assert loss[-1] < 0.8 * loss[0]


def test_same_seed_same_weights_different_seed_different():
    a = unet3d.build(TWO, K, TINY, seed=3).get_weights()
    b = unet3d.build(TWO, K, TINY, seed=3).get_weights()
    c = unet3d.build(TWO, K, TINY, seed=4).get_weights()
    assert len(a) == len(b) == len(c)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_save_and_load_round_trip(tmp_path):
    import keras

    model = unet3d.build(TWO, K, TINY, seed=2)
    x, _ = patches(TWO, 2, 0)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    assert loaded.get_layer("proba_map").output.shape == (None, 7, 7, K)


@pytest.mark.parametrize(("shapes", "n_classes", "params", "match"), [
    ({"s1": (8, 3)}, K, TINY, "unet3d: input 's1'"),
    ({"s1": (7, 7, 8, 3), "s2": (7, 7, 6, 2, 1)}, K, TINY, "unet3d: input 's2'"),
    ({"s1": (7, 7, 8, 3), "s2": (5, 5, 6, 2)}, K, TINY, "unet3d: all inputs must have the same patch size"),
    (TWO, 1, TINY, "unet3d: n_classes"),
    ({}, K, TINY, "unet3d: at least one input"),
    (TWO, K, {"time_reduction": "max"}, "unet3d: time_reduction"),
    (TWO, K, {"levels": 0}, "unet3d: levels"),
], ids=["pixel-shape", "rank-5", "patch-sizes", "one-class", "no-input", "reduction", "levels"])
def test_invalid_shapes_and_parameters_raise(shapes, n_classes, params, match):
    with pytest.raises(ValueError, match=match):
        unet3d.build(shapes, n_classes, params, seed=0)
