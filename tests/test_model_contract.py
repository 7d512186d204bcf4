"""The contract every model of the registry keeps (cropflow.models): one builder signature
build(inputs, n_classes, params, seed); named inputs in sorted order; a float32 softmax over n_classes even under
mixed precision; a few training steps reduce the loss; the seed fixes the initial weights; a saved model loads
back to the same predictions; bad shapes and arguments raise a ValueError naming the model.
The per-model files test what is particular to each architecture."""

import numpy as np
import pytest
from zoo import K, SHAPES, TINY, separable

from cropflow.models import MODEL_MODULES, MODELS
from cropflow.models.common import training_defaults

ONE = {"pixel": {"s1": (7, 2)}, "patch": {"s1": (5, 5, 6, 3)}}
KERAS = sorted(TINY)

# keras' own .keras writer triggers a numpy 2 __array__ DeprecationWarning per variable; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(autouse=True)
def seeded():
    import keras

    keras.utils.set_random_seed(0)


def build(name, shapes=None, n_classes=K, seed=0, **params):
    spec = MODELS[name]
    return spec.build(SHAPES[spec.kind] if shapes is None else shapes, n_classes, {**TINY[name], **params}, seed)


def data(name, n_per_class, seed=0, shapes=None):
    return separable(shapes or SHAPES[MODELS[name].kind], n_per_class, seed=seed, k=K, noise=0.1)


def test_every_keras_model_of_the_registry_is_covered():
    assert KERAS == sorted(n for n in MODEL_MODULES if MODELS[n].family == "keras")


@pytest.mark.parametrize("name", sorted(MODEL_MODULES))
def test_module_declares_family_kind_and_training_keys(name):
    spec = MODELS[name]
    assert spec.family in ("sklearn", "keras") and spec.kind in ("pixel", "patch")
    if spec.family == "keras":
        keys = training_defaults()
        assert set(keys) <= set(spec.defaults)
        fixed = {k: spec.defaults[k] for k in keys if k not in ("batch_size", "weight_decay")}
        assert fixed == {k: v for k, v in keys.items() if k in fixed}  # the study's Adam 1e-3, 50 epochs, patience 8
        assert int(spec.defaults["batch_size"]) >= 1 and float(spec.defaults["weight_decay"]) >= 0


@pytest.mark.parametrize("two", [True, False], ids=["two-inputs", "one-input"])
@pytest.mark.parametrize("name", KERAS)
def test_output_is_a_float32_distribution_and_graph_equals_eager(name, two):
    shapes = (SHAPES if two else ONE)[MODELS[name].kind]
    model = build(name, shapes, seed=1)
    assert [i.name for i in model.inputs] == sorted(shapes)
    x, _ = data(name, 3, shapes=shapes)
    out = model.predict(x, verbose=0)  # graph mode, as in inference ...
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)), atol=1e-5)  # ... equals eager
    assert out.shape == (3 * K, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", KERAS)
def test_training_steps_reduce_loss(name):
    import keras

    x, y = data(name, 8)
    model = build(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    initial = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=False))))
    loss = model.fit(x, y, batch_size=16, epochs=12, shuffle=True, verbose=0).history["loss"]
    assert loss[-1] < 0.8 * initial


@pytest.mark.parametrize("name", KERAS)
def test_seed_fixes_initial_weights(name):
    a, b = (build(name, seed=3).get_weights() for _ in range(2))
    c = build(name, seed=4).get_weights()
    assert len(a) == len(c) and all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, w) for u, w in zip(a, c))


@pytest.mark.parametrize("name", KERAS)
def test_save_load_round_trip(name, tmp_path):
    import keras

    model = build(name, seed=2)
    x, _ = data(name, 2, seed=1)
    model.save(tmp_path / f"{name}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("name", KERAS)
def test_softmax_stays_float32_under_mixed_precision(name):
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = build(name, seed=1)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    x, _ = data(name, 1)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and tuple(out.shape) == (K, K)


@pytest.mark.parametrize("name", KERAS)
def test_wrong_rank_names_model_and_input(name):
    other = "patch" if MODELS[name].kind == "pixel" else "pixel"
    for shapes in ({"s1": (8,)}, {**SHAPES[MODELS[name].kind], "s2": SHAPES[other]["s2"]}):
        with pytest.raises(ValueError, match=rf"{name}: input 's\d'"):
            build(name, shapes)


@pytest.mark.parametrize("name", sorted(MODEL_MODULES))
def test_bad_classes_and_no_inputs_name_the_model(name):
    spec = MODELS[name]
    params = TINY.get(name, {})
    with pytest.raises(ValueError, match=f"{name}: n_classes"):
        spec.build(SHAPES[spec.kind], 1, params, 0)
    with pytest.raises(ValueError, match=f"{name}: at least one input"):
        spec.build({}, K, params, 0)


@pytest.mark.parametrize("name", ["transformer", "atlstm", "conv1d_lstm"])
def test_attention_models_expose_weights_over_time_per_input(name):
    """cropflow.interpret reads the layers f"{input}_attention": (N, T), non-negative, summing to 1 over time."""
    import keras

    model = build(name, seed=1)
    x, _ = data(name, 3)
    for input_name, (t, _) in SHAPES["pixel"].items():
        attention = keras.Model(model.inputs, model.get_layer(f"{input_name}_attention").output)
        a = np.asarray(attention.predict(x, verbose=0))
        assert a.shape == (3 * K, t) and (a >= 0).all()
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)
