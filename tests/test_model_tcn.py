import numpy as np
import pytest
from zoo import K, PIXEL, TINY

from cropflow.models import tcn

SHAPES = PIXEL
TINY = TINY["tcn"]


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def test_defaults_follow_science_and_contract():
    d = tcn.DEFAULTS
    assert (d["filters"], d["kernel_size"], d["levels"]) == (64, 3, 3)
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
