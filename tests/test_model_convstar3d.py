import keras
import numpy as np
import pytest

from cropflow.models import convstar3d
from cropflow.models.convstar import ConvSTAR2D

SHAPES = {"s1": (5, 5, 6, 3), "s2": (5, 5, 4, 2)}
TINY = {"filters3d": [4, 4, 8], "filters": 6, "layers": 2, "filters2d": 8, "dense": [16, 8], "dropout": 0.1}

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
    assert convstar3d.FAMILY == "keras" and convstar3d.KIND == "patch"
    d = convstar3d.DEFAULTS
    assert (d["filters3d"], d["kernel_size"], d["filters"], d["layers"], d["filters2d"], d["dense"],
            d["dropout"]) == ([32, 32, 64], 3, 64, 3, 64, [256, 128], 0.4)
    assert (d["learning_rate"], d["weight_decay"], d["batch_size"]) == (1e-3, 1e-4, 128)
    assert (d["epochs"], d["patience"], d["imbalance"], d["mixed_precision"], d["readout"]) == (
        50, 8, "none", False, "flatten")


@pytest.mark.parametrize("shapes", [{"s1": SHAPES["s1"]}, SHAPES], ids=["one-input", "two-inputs"])
@pytest.mark.parametrize("readout", ["flatten", "centre"])
def test_output_is_a_float32_distribution_per_sample(shapes, readout):
    model = convstar3d.build(shapes, 4, {**TINY, "readout": readout}, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = patches(shapes, 32)
    out = model(x, training=False)
    assert tuple(out.shape) == (32, 4) and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


def test_architecture_follows_chapter_4():
    model = convstar3d.build(SHAPES, 3, {}, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D) and layer.name[:2] == "s1"]
    assert [c.filters for c in convs] == [32, 32, 64]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == "same" and c.strides == (1, 1, 1) for c in convs)
    stars = {layer.name: layer for layer in model.layers if isinstance(layer, ConvSTAR2D)}
    assert len(stars) == 2 * 2 * 3  # two inputs, forward + backward, three layers
    for i in range(3):
        fwd, bwd = stars[f"s1_star{i}_fwd"], stars[f"s1_star{i}_bwd"]
        assert (fwd.filters, fwd.kernel_size, fwd.go_backwards, bwd.go_backwards) == (64, 3, False, True)
        assert fwd.return_sequences == bwd.return_sequences == (i < 2)
    # the first ConvSTAR layer reads the 64 Conv3D maps, the next ones the 2 x 64 bidirectional states
    assert stars["s1_star0_fwd"].kernel.shape == (3, 3, 64, 128)
    assert stars["s1_star1_bwd"].kernel.shape == (3, 3, 128, 128)
    assert model.get_layer("s1_star2_concat").output.shape == (None, 5, 5, 128)
    assert model.get_layer("s1_conv2d").kernel.shape == (3, 3, 128, 64)
    assert model.get_layer("s1_flatten").output.shape == (None, 5 * 5 * 64)  # no pooling
    assert not any("pool" in type(layer).__name__.lower() for layer in model.layers)
    assert [model.get_layer(f"dense{i}").units for i in range(2)] == [256, 128]
    assert [model.get_layer(f"dense_dropout{i}").rate for i in range(2)] == [0.4, 0.4]


def test_centre_readout_keeps_the_centre_pixel():
    model = convstar3d.build(SHAPES, 3, {**TINY, "readout": "centre"}, seed=0)
    features = keras.Model(model.inputs, [model.get_layer("s2_relu2d").output,
                                          model.get_layer("s2_centre_features").output])
    x, _ = patches(SHAPES, 2)
    fmap, centre = (np.asarray(a) for a in features(x))
    np.testing.assert_array_equal(centre, fmap[:, 2, 2, :])
    with pytest.raises(ValueError, match="convstar3d: readout"):
        convstar3d.build(SHAPES, 3, {**TINY, "readout": "mean"}, seed=0)


def test_softmax_stays_float32_under_mixed_precision():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = convstar3d.build(SHAPES, 3, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_star0_fwd").compute_dtype == "float16"
    x, _ = patches(SHAPES, 4)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (4, 3)
    assert np.isfinite(np.asarray(out)).all()


def test_training_steps_reduce_loss():
    x, y = patches(SHAPES, 32)
    model = convstar3d.build(SHAPES, 3, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    loss = model.fit(x, y, epochs=10, batch_size=32, shuffle=False, verbose=0).history["loss"]
    assert loss[-1] < 0.8 * loss[0]


def test_seed_sets_initial_weights():
    w0 = convstar3d.build(SHAPES, 3, TINY, seed=0).get_weights()
    w0b = convstar3d.build(SHAPES, 3, TINY, seed=0).get_weights()
    w1 = convstar3d.build(SHAPES, 3, TINY, seed=1).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(w0, w0b))
    assert not np.array_equal(w0[0], w1[0])


def test_save_and_load_round_trip(tmp_path):
    model = convstar3d.build(SHAPES, 3, TINY, seed=0)
    path = tmp_path / "convstar3d.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("s1_star0_bwd").go_backwards
    x, _ = patches(SHAPES, 8)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_wrong_rank_and_classes():
    with pytest.raises(ValueError, match=r"convstar3d: input 's1' must have a per-sample patch shape"):
        convstar3d.build({"s1": (6, 3), "s2": (5, 5, 4, 2)}, 3, TINY, seed=0)
    with pytest.raises(ValueError, match="convstar3d: n_classes"):
        convstar3d.build(SHAPES, 1, TINY, seed=0)
