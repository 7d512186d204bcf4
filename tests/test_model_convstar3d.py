import keras
import numpy as np
import pytest
from zoo import PATCH, TINY, separable

from cropflow.models import convstar3d
from cropflow.models.convstar import ConvSTAR2D

SHAPES = PATCH
TINY = TINY["convstar3d"]

def test_module_attributes():
    assert convstar3d.FAMILY == "keras" and convstar3d.KIND == "patch"
    d = convstar3d.DEFAULTS
    assert (d["filters3d"], d["kernel_size"], d["filters"], d["layers"], d["filters2d"], d["dense"],
            d["dropout"]) == ([32, 32, 64], 3, 64, 3, 64, [256, 128], 0.4)
    assert (d["learning_rate"], d["weight_decay"], d["batch_size"]) == (1e-3, 1e-4, 128)
    assert d["readout"] == "flatten"


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
    x, _ = separable(SHAPES, 1)
    fmap, centre = (np.asarray(a) for a in features(x))
    np.testing.assert_array_equal(centre, fmap[:, 2, 2, :])
    np.testing.assert_allclose(np.asarray(model(x)).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="convstar3d: readout"):
        convstar3d.build(SHAPES, 3, {**TINY, "readout": "mean"}, seed=0)
