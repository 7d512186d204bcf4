import keras
import numpy as np
import pytest

from cropflow.models import convstar
from cropflow.models.convstar import ConvSTAR2D

SHAPES = {"s1": (5, 5, 6, 3), "s2": (5, 5, 4, 2)}
TINY = {"filters": 6, "layers": 2, "dense": [16], "dropout": 0.1}

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


# ------------------------------------------------------------------------------------------ the ConvSTAR cell


def conv2d_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2D cross-correlation with zero "same" padding: x (N, h, w, C), kernel (k, k, C, F) -> (N, h, w, F)."""
    k = kernel.shape[0]
    r = k // 2
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += xp[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def star_reference(x, w_xf, w_xz, w_hf, b_f, b_z, backwards=False):
    """Eq. 4-2 to 4-4 step by step from H_0 = 0: x (N, T, h, w, C) -> the states (N, T, h, w, F) in input order."""
    n, steps, h, w, _ = x.shape
    state = np.zeros((n, h, w, w_hf.shape[-1]))
    states = [None] * steps
    for t in (reversed(range(steps)) if backwards else range(steps)):
        f = sigmoid(conv2d_same(x[:, t], w_xf) + conv2d_same(state, w_hf) + b_f)  # (4-2)
        z = np.tanh(conv2d_same(x[:, t], w_xz) + b_z)  # (4-3)
        state = np.tanh(f * z + state * (1 - f))  # (4-4)
        states[t] = state
    return np.stack(states, axis=1), state


def star_case(seed=3, n=2, steps=4, h=4, w=5, c=2, f=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, steps, h, w, c))
    weights = (rng.normal(0, 0.4, (3, 3, c, f)), rng.normal(0, 0.4, (3, 3, c, f)), rng.normal(0, 0.4, (3, 3, f, f)),
               rng.normal(0, 0.3, f), rng.normal(0, 0.3, f))
    return x, weights


def star_layer(x, weights, **kwargs) -> ConvSTAR2D:
    w_xf, w_xz, w_hf, b_f, b_z = weights
    layer = ConvSTAR2D(w_hf.shape[-1], 3, **kwargs)
    layer.build(x.shape)
    layer.set_weights([np.concatenate([w_xf, w_xz], axis=-1), w_hf, np.concatenate([b_f, b_z])])
    return layer


@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "backward"])
def test_convstar_cell_follows_equations_4_2_to_4_4(backwards):
    x, weights = star_case()
    states, last = star_reference(x, *weights, backwards=backwards)
    xf = x.astype(np.float32)
    final = np.asarray(star_layer(x, weights, go_backwards=backwards)(xf))
    np.testing.assert_allclose(final, last, atol=1e-5)
    seq = np.asarray(star_layer(x, weights, go_backwards=backwards, return_sequences=True)(xf))
    assert seq.shape == (2, 4, 4, 5, 3)
    np.testing.assert_allclose(seq, states, atol=1e-5)


def test_convstar_forget_gate_reads_the_previous_state():
    # with W_hf = 0 the gate depends on X_t only; a non-zero W_hf must change the states from t = 2 on
    x, weights = star_case()
    no_rec = (*weights[:2], np.zeros_like(weights[2]), *weights[3:])
    a = np.asarray(star_layer(x, weights, return_sequences=True)(x.astype(np.float32)))
    b = np.asarray(star_layer(x, no_rec, return_sequences=True)(x.astype(np.float32)))
    np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-6)  # H_0 = 0: the first step has no recurrence
    assert np.abs(a[:, 1:] - b[:, 1:]).max() > 1e-3


def test_convstar_layer_config_round_trip():
    layer = ConvSTAR2D(4, 3, return_sequences=True, go_backwards=True, name="star")
    clone = ConvSTAR2D.from_config(layer.get_config())
    assert (clone.filters, clone.kernel_size, clone.return_sequences, clone.go_backwards) == (4, 3, True, True)
    assert clone.compute_output_shape((None, 6, 5, 5, 2)) == (None, 6, 5, 5, 4)


# ------------------------------------------------------------------------------------------------ the model


def test_module_attributes():
    assert convstar.FAMILY == "keras" and convstar.KIND == "patch"
    d = convstar.DEFAULTS
    assert (d["filters"], d["kernel_size"], d["layers"]) == (64, 3, 3)
    assert (d["epochs"], d["batch_size"], d["learning_rate"], d["patience"], d["imbalance"], d["mixed_precision"],
            d["weight_decay"]) == (50, 128, 0.001, 8, "none", False, 0.0)


@pytest.mark.parametrize("shapes", [{"s1": SHAPES["s1"]}, SHAPES], ids=["one-input", "two-inputs"])
def test_output_is_a_float32_distribution_per_sample(shapes):
    model = convstar.build(shapes, 4, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = patches(shapes, 32)
    out = model(x, training=False)
    assert tuple(out.shape) == (32, 4) and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


def test_stacked_layers_and_centre_pixel_features():
    model = convstar.build(SHAPES, 3, {}, seed=0)
    stars = [layer for layer in model.layers if isinstance(layer, ConvSTAR2D) and layer.name.startswith("s1")]
    assert [s.filters for s in stars] == [64, 64, 64]
    assert [s.return_sequences for s in stars] == [True, True, False]
    assert model.get_layer("s1_star0").kernel.shape == (3, 3, 3, 128)  # [W_xf | W_xz] over the 3 bands
    assert model.get_layer("s1_centre_features").output.shape == (None, 64)
    # the centre crop is the pixel (2, 2) of the 5 x 5 state map
    features = keras.Model(model.inputs, [model.get_layer("s1_star2").output,
                                          model.get_layer("s1_centre_features").output])
    x, _ = patches(SHAPES, 2)
    state, centre = (np.asarray(a) for a in features(x))
    np.testing.assert_array_equal(centre, state[:, 2, 2, :])


def test_softmax_stays_float32_under_mixed_precision():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = convstar.build(SHAPES, 3, TINY, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("s1_star0").compute_dtype == "float16"
    x, _ = patches(SHAPES, 4)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (4, 3)
    assert np.isfinite(np.asarray(out)).all()


def test_training_steps_reduce_loss():
    x, y = patches(SHAPES, 32)
    model = convstar.build(SHAPES, 3, TINY, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    loss = model.fit(x, y, epochs=20, batch_size=32, shuffle=False, verbose=0).history["loss"]
    assert loss[-1] < 0.8 * loss[0]


def test_seed_sets_initial_weights():
    w0 = convstar.build(SHAPES, 3, TINY, seed=0).get_weights()
    w0b = convstar.build(SHAPES, 3, TINY, seed=0).get_weights()
    w1 = convstar.build(SHAPES, 3, TINY, seed=1).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(w0, w0b))
    assert not np.array_equal(w0[0], w1[0])


def test_save_and_load_round_trip(tmp_path):
    model = convstar.build(SHAPES, 3, TINY, seed=0)
    path = tmp_path / "convstar.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("s1_star0"), ConvSTAR2D)
    x, _ = patches(SHAPES, 8)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_wrong_rank_and_classes():
    with pytest.raises(ValueError, match=r"convstar: input 's2' must have a per-sample patch shape"):
        convstar.build({"s1": (5, 5, 6, 3), "s2": (5, 6, 3)}, 3, TINY, seed=0)
    with pytest.raises(ValueError, match="convstar: n_classes"):
        convstar.build(SHAPES, 1, TINY, seed=0)
