"""Batch normalisations folded into the layers before them give the model's own inference outputs."""

import keras
import numpy as np
import pytest

from zoo import with_random_statistics

from cropflow.models import MODELS, build
from cropflow.models.folding import bn_affine, fold_batch_norms


def batch_norms(model) -> int:
    return sum(type(layer) is keras.layers.BatchNormalization for layer in model.layers)


@pytest.mark.parametrize("name, left", [("conv1d", 0), ("tempcnn", 0), ("tcn", 0), ("cnn3d", 0), ("conv1d_lstm", 0)])
def test_folded_model_predicts_as_the_model(name, left):
    patch = MODELS[name].kind == "patch"
    shapes = {k: ((5, 5, *v) if patch else v) for k, v in {"s1": (8, 5), "s2": (6, 3)}.items()}
    model = with_random_statistics(build(name, shapes, 4, {}, seed=0))
    assert batch_norms(model) > 0
    folded = fold_batch_norms(model)
    assert batch_norms(folded) == left
    x = {k: np.random.default_rng(1).random((64, *s), dtype=np.float32) for k, s in shapes.items()}
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-4, atol=1e-5)
    assert batch_norms(model) > 0  # the trained model itself is unchanged


def test_normalisation_after_an_activation_or_a_shared_output_is_kept():
    inp = keras.Input((6, 3))
    relu = keras.layers.Conv1D(4, 3, padding="same", activation="relu")(inp)
    shared = keras.layers.Conv1D(4, 3, padding="same")(inp)
    a = keras.layers.BatchNormalization()(relu)
    b = keras.layers.BatchNormalization()(shared)
    out = keras.layers.Concatenate()([a, b, shared])
    model = with_random_statistics(keras.Model(inp, out))
    folded = fold_batch_norms(model)
    assert folded is model
    x = np.random.default_rng(2).random((16, 6, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)))


def test_batch_norm_affine_is_the_inference_formula():
    bn = keras.layers.BatchNormalization(epsilon=0.01)
    bn.build((None, 3))
    with_random_statistics(keras.Sequential([keras.Input((3,)), bn]))
    z = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    scale, shift = bn_affine(bn)
    np.testing.assert_allclose(z * scale + shift, np.asarray(bn(z, training=False)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["conv1d", "tempcnn"])
def test_relu_after_a_folded_normalisation_moves_into_the_convolutions(name):
    """Every ReLU of these models follows a normalisation: after folding none is left as a layer of its own, and
    every convolution feeding one now applies it itself."""
    model = with_random_statistics(build(name, {"s1": (8, 5)}, 4, {}, seed=0))
    assert any(type(layer) is keras.layers.Activation for layer in model.layers)
    folded = fold_batch_norms(model)
    assert not any(type(layer) is keras.layers.Activation for layer in folded.layers)
    convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv1D)]
    assert convs and all(layer.activation is keras.activations.get("relu") for layer in convs)
    x = np.random.default_rng(4).random((32, 8, 5), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-5)
