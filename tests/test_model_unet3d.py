import numpy as np
import pytest
from zoo import TINY, separable

from cropflow.models import unet3d

TWO = {"s1": (7, 7, 8, 3), "s2": (7, 7, 6, 2)}
TINY = TINY["unet3d"]
K = 3


def both_outputs(model):
    """The model with outputs [proba, proba_map] (one graph-mode predict gives both)."""
    import keras

    return keras.Model(model.inputs, [model.output, model.get_layer("proba_map").output])


def test_module_attributes():
    assert unet3d.FAMILY == "keras" and unet3d.KIND == "patch"
    d = unet3d.DEFAULTS
    assert (d["levels"], d["filters"], d["time_reduction"]) == (3, 16, "conv")
    assert d["batch_size"] == 32


def test_padding_is_symmetric_up_to_the_multiple():
    assert unet3d._padding(11, 8) == (2, 3)
    assert unet3d._padding(5, 4) == (1, 2)
    assert unet3d._padding(128, 8) == (0, 0)


def test_attention_gates_over_padded_pixels_and_time_per_input():
    model = unet3d.build(TWO, K, TINY, seed=1)
    assert [i.name for i in model.inputs] == sorted(TWO)
    assert model.get_layer("s1_gate0").output.shape == (None, 8, 8, 8, 1)  # alpha over padded pixels, time
    assert model.get_layer("s2_gate1").output.shape == (None, 4, 4, 6, 1)


@pytest.mark.parametrize("size", [5, 7, 11])
def test_any_patch_size_and_proba_is_the_centre_of_proba_map(size):
    shapes = {"s1": (size, size, 5, 2), "s2": (size, size, 3, 3)}
    model = unet3d.build(shapes, K, TINY, seed=0)
    x, _ = separable(shapes, 2, 0, k=K)
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
    x, _ = separable(shapes, 2, 0, k=K)
    out = model.predict(x, verbose=0)
    assert out.shape == (6, K)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("shapes", "n_classes", "params", "match"), [
    ({"s1": (7, 7, 8, 3), "s2": (5, 5, 6, 2)}, K, TINY, "unet3d: all inputs must have the same patch size"),
    (TWO, K, {"time_reduction": "max"}, "unet3d: time_reduction"),
    (TWO, K, {"levels": 0}, "unet3d: levels"),
], ids=["patch-sizes", "reduction", "levels"])
def test_invalid_shapes_and_parameters_raise(shapes, n_classes, params, match):
    with pytest.raises(ValueError, match=match):
        unet3d.build(shapes, n_classes, params, seed=0)
