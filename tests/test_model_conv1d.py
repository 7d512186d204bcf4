import pytest
from zoo import K, PIXEL, TINY

from cropflow.models import conv1d

SHAPES = PIXEL
TINY = TINY["conv1d"]


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def test_defaults_follow_science_and_contract():
    d = conv1d.DEFAULTS
    assert (d["filters"], d["kernel_sizes"], d["modules"], d["dense"]) == (32, [1, 3, 5], 2, 512)
    assert conv1d.FAMILY == "keras" and conv1d.KIND == "pixel"


def test_features_layer_and_inception_branches():
    model = conv1d.build(SHAPES, K, {}, seed=0)
    features = model.get_layer("trunk_features")
    assert features.units == 512 and tuple(features.output.shape) == (None, 512)
    # 3 kernel branches + the pooled 1x1 branch, 32 filters each
    assert tuple(model.get_layer("s2_inception1_concat").output.shape) == (None, 6, 128)
    assert model.get_layer("s1_inception0_pool").pool_size == (3,)
    with pytest.raises(ValueError, match="inception2"):
        model.get_layer("s1_inception2_concat")


def test_bad_kernels():
    with pytest.raises(ValueError, match="conv1d: kernel_sizes"):
        conv1d.build(SHAPES, K, {**TINY, "kernel_sizes": []}, seed=0)
    assert conv1d.kernel_list("1, 3,5") == [1, 3, 5]
