import keras
from zoo import PATCH, TINY

from cropflow.models import cnn3d

SHAPES = PATCH
TINY = TINY["cnn3d"]

def test_module_attributes():
    assert cnn3d.FAMILY == "keras" and cnn3d.KIND == "patch"
    d = cnn3d.DEFAULTS
    assert d["filters"] == [32, 32, 64] and d["kernel_size"] == 3 and d["batch_size"] == 128


def test_three_conv3d_layers_over_h_w_t():
    model = cnn3d.build(SHAPES, 3, {}, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert len(convs) == 6
    assert [c.filters for c in convs if c.name.startswith("s1")] == [32, 32, 64]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == "same" for c in convs)
    assert model.get_layer("s1_conv0").kernel.shape == (3, 3, 3, 3, 32)  # bands are the channels
