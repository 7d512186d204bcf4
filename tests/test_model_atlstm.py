import numpy as np
import pytest
from zoo import PIXEL, TINY, separable

from cropflow.models import atlstm

SHAPES = PIXEL
TINY = TINY["atlstm"]


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def test_defaults_follow_science():
    d = atlstm.DEFAULTS
    assert d["units"] == 128
    assert atlstm.KIND == "pixel" and atlstm.FAMILY == "keras"


def test_attention_follows_eq_5_4():
    """a = softmax_t((W h_t + b) . h_last) and the features are [sum_t a_t h_t, h_last]."""
    import keras

    model = atlstm.build({"s1": (7, 3)}, 3, TINY, seed=5)
    x, _ = separable({"s1": (7, 3)}, 2, k=3)
    bilstm = model.get_layer("s1_bilstm")
    probe = keras.Model(model.inputs, [bilstm.output[0], model.get_layer("s1_last_state").output,
                                       model.get_layer("s1_attention").output,
                                       model.get_layer("s1_features").output])
    h, h_last, a, features = (np.asarray(v, dtype=np.float64) for v in probe.predict(x, verbose=0))
    w, b = (np.asarray(v, dtype=np.float64) for v in model.get_layer("s1_attention_dense").get_weights())
    scores = np.einsum("ntd,nd->nt", h @ w + b, h_last)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a, expected, atol=1e-5)
    np.testing.assert_allclose(features, np.concatenate([np.einsum("nt,ntd->nd", a, h), h_last], axis=1),
                               atol=1e-5)


def test_forward_and_backward_lstm_start_different():
    bilstm = atlstm.build(SHAPES, 3, TINY, seed=3).get_layer("s1_bilstm")
    assert not np.array_equal(np.asarray(bilstm.forward_layer.cell.kernel),
                              np.asarray(bilstm.backward_layer.cell.kernel))
