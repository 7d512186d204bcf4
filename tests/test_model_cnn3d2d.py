import keras
from zoo import PATCH, TINY

from cropflow.models import cnn3d2d

SHAPES = PATCH
TINY = TINY["cnn3d2d"]

def test_module_attributes():
    assert cnn3d2d.FAMILY == "keras" and cnn3d2d.KIND == "patch"
    d = cnn3d2d.DEFAULTS
    assert d["filters3d"] == [8, 16, 32] and d["filters2d"] == 64 and d["dense"] == [256, 128]
    assert d["batch_size"] == 128


def test_conv3d_then_time_and_features_as_channels_of_a_conv2d():
    model = cnn3d2d.build(SHAPES, 3, {}, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert [c.filters for c in convs if c.name.startswith("s1")] == [8, 16, 32]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == "same" for c in convs)
    # s1 has T = 6 time steps: the 2D conv sees 6 * 32 channels per pixel
    assert model.get_layer("s1_to2d").output.shape == (None, 5, 5, 6 * 32)
    assert model.get_layer("s2_to2d").output.shape == (None, 5, 5, 4 * 32)
    assert model.get_layer("s1_conv2d").kernel.shape == (3, 3, 6 * 32, 64)
    assert [model.get_layer(f"dense{i}").units for i in range(2)] == [256, 128]
    assert model.get_layer("dense_dropout0").rate == 0.4
