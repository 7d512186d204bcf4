import keras
import numpy as np
import pytest
from zoo import PATCH, TINY, separable

from cropflow.models import convstar
from cropflow.models.convstar import ConvSTAR2D

SHAPES = PATCH
TINY = TINY["convstar"]

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
    assert d["batch_size"] == 128


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
    x, _ = separable(SHAPES, 1)
    state, centre = (np.asarray(a) for a in features(x))
    np.testing.assert_array_equal(centre, state[:, 2, 2, :])
