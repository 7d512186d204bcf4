import numpy as np
import pytest
from zoo import PIXEL, TINY

from cropflow.models import transformer
from cropflow.models.transformer import positional_encoding

SHAPES = PIXEL
TINY = TINY["transformer"]


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def test_positional_encoding_sin_on_even_cos_on_odd_channels():
    pe = positional_encoding(5, 8)
    assert pe.shape == (5, 8) and pe.dtype == np.float32
    np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])
    t = np.arange(5)[:, None]
    rates = 1 / 10000 ** (np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(t * rates), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(t * rates), atol=1e-6)
    odd = positional_encoding(3, 5)
    assert odd.shape == (3, 5)
    np.testing.assert_array_equal(odd[0], [0, 1, 0, 1, 0])


def test_defaults_follow_science_chapter_5():
    d = transformer.DEFAULTS
    assert (d["heads"], d["d_model"], d["blocks"]) == (4, 128, 2)
    assert transformer.KIND == "pixel" and transformer.FAMILY == "keras"


def test_attention_projections_start_different():
    model = transformer.build(SHAPES, 3, TINY, seed=3)
    mha = model.get_layer("s1_block0_mha")
    q, k, v = (np.asarray(d.kernel) for d in (mha.query_dense, mha.key_dense, mha.value_dense))
    assert not np.array_equal(q, k) and not np.array_equal(q, v)


def test_d_model_must_divide_into_heads():
    with pytest.raises(ValueError, match="transformer.*heads"):
        transformer.build(SHAPES, 3, {**TINY, "d_model": 15}, seed=0)
