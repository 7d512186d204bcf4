import numpy as np
import pytest
from zoo import K, PIXEL, TINY, separable

from cropflow.models import conv1d_lstm

SHAPES = PIXEL
TINY = TINY["conv1d_lstm"]


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def test_defaults_follow_science_and_contract():
    d = conv1d_lstm.DEFAULTS
    assert (d["conv_kernels"], d["conv_filters"], d["lstm_units"], d["lstm_dense"]) == (
        [3, 3, 5], [64, 128, 256], 128, 512)
    assert conv1d_lstm.FAMILY == "keras" and conv1d_lstm.KIND == "pixel"


def test_default_architecture():
    model = conv1d_lstm.build(SHAPES, K, {}, seed=0)
    for i, (kernel, width) in enumerate([(3, 64), (3, 128), (5, 256)]):
        conv = model.get_layer(f"s1_conv{i}")
        assert conv.kernel_size == (kernel,) and conv.filters == width
        assert tuple(model.get_layer(f"s1_conv{i}_bn").output.shape) == (None, 8, width)
    assert tuple(model.get_layer("s2_bilstm").output.shape) == (None, 6, 256)
    assert model.get_layer("s2_lstm_dense").units == 512


def test_attention_context_is_weighted_sum_of_states():
    """context = sum_t a_t h_t with a_t = softmax_t(v^T tanh(W h_t)) (Eq. 3-19 to 3-21)."""
    import keras

    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    x, _ = separable(SHAPES, 2)
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


def test_backward_lstm_differs_from_forward():
    model = conv1d_lstm.build(SHAPES, K, TINY, seed=0)
    bilstm = model.get_layer("s1_bilstm")
    forward, backward = bilstm.forward_layer.get_weights(), bilstm.backward_layer.get_weights()
    assert not np.array_equal(forward[0], backward[0]) and not np.array_equal(forward[1], backward[1])


def test_bad_parameters():
    with pytest.raises(ValueError, match="conv1d_lstm: conv_kernels"):
        conv1d_lstm.build(SHAPES, K, {**TINY, "conv_kernels": [3, 3]}, seed=0)
    assert conv1d_lstm.int_list("conv_kernels", "3,3,5") == [3, 3, 5]
