import pytest
from zoo import K, PIXEL, TINY, with_random_statistics

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
    assert tuple(model.get_layer("s2_inception0_concat").output.shape) == (None, 6, 128)
    # the last module averages each branch over time before concatenating
    assert tuple(model.get_layer("s2_inception1_concat").output.shape) == (None, 128)
    assert tuple(model.get_layer("s2_inception1_k5_gap").output.shape) == (None, 32)
    assert model.get_layer("s1_inception0_pool").pool_size == (3,)
    with pytest.raises(ValueError, match="inception2"):
        model.get_layer("s1_inception2_concat")


def test_bad_kernels():
    with pytest.raises(ValueError, match="conv1d: kernel_sizes"):
        conv1d.build(SHAPES, K, {**TINY, "kernel_sizes": []}, seed=0)
    assert conv1d.kernel_list("1, 3,5") == [1, 3, 5]


def test_per_branch_normalisation_and_pooling_equal_the_concatenated_formulation():
    """BN -> ReLU per branch and the last module's per-branch time average compute Zhong's module (BN -> ReLU ->
    average of the concatenation): rebuilt that way from the same weights, the model gives the same output."""
    import keras
    import numpy as np

    model = with_random_statistics(
        conv1d.build({"s1": (7, 4)}, 3, {"filters": 4, "kernel_sizes": [1, 3], "modules": 2, "dense": 8}, 0))
    rng = np.random.default_rng(0)
    x = rng.random((5, 7, 4), dtype=np.float32)

    def bn_relu(h, names):
        scale = np.concatenate([model.get_layer(f"{n}_bn").gamma.numpy() / np.sqrt(
            model.get_layer(f"{n}_bn").moving_variance.numpy() + model.get_layer(f"{n}_bn").epsilon) for n in names])
        mean = np.concatenate([model.get_layer(f"{n}_bn").moving_mean.numpy() for n in names])
        beta = np.concatenate([model.get_layer(f"{n}_bn").beta.numpy() for n in names])
        return np.maximum((h - mean) * scale + beta, 0.0)

    h = bn_relu(np.asarray(model.get_layer("s1_stem")(x)), ["s1_stem"])
    for i in range(2):
        names = [f"s1_inception{i}_k1", f"s1_inception{i}_k3", f"s1_inception{i}_pool_proj"]
        pooled = np.asarray(model.get_layer(f"s1_inception{i}_pool")(h))
        concat = np.concatenate([np.asarray(model.get_layer(names[0])(h)), np.asarray(model.get_layer(names[1])(h)),
                                 np.asarray(model.get_layer(names[2])(pooled))], axis=-1)
        h = bn_relu(concat, names)
    features = keras.Model(model.inputs, model.get_layer("s1_inception1_concat").output)
    np.testing.assert_allclose(np.asarray(features(x)), h.mean(axis=1), rtol=1e-4, atol=1e-5)
