"""The analytic FLOP counting of bench/models.py on tiny models whose forward FLOPs are computed by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "models.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_models", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_models"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_dense_is_two_in_out():
    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(5)(inp))
    assert bench.model_flops(model) == 2 * 6 * 5


def test_dense_on_a_series_counts_every_time_step():
    inp = keras.Input((4, 6))
    model = keras.Model(inp, keras.layers.Dense(5)(inp))
    assert bench.model_flops(model) == 4 * 2 * 6 * 5


@pytest.mark.parametrize("padding, t_out", [("same", 10), ("valid", 8)])
def test_conv1d_is_two_k_cin_cout_tout(padding, t_out):
    inp = keras.Input((10, 3))
    model = keras.Model(inp, keras.layers.Conv1D(4, 3, padding=padding)(inp))
    assert bench.model_flops(model) == 2 * 3 * 3 * 4 * t_out


def test_conv2d_and_conv3d_count_every_output_position():
    inp2 = keras.Input((5, 6, 2))
    conv2 = keras.Model(inp2, keras.layers.Conv2D(3, (3, 2), padding="valid")(inp2))  # output 3 x 5
    assert bench.model_flops(conv2) == 2 * 3 * 2 * 2 * 3 * (3 * 5)
    inp3 = keras.Input((4, 4, 3, 2))
    conv3 = keras.Model(inp3, keras.layers.Conv3D(5, 3, padding="same")(inp3))
    assert bench.model_flops(conv3) == 2 * 27 * 2 * 5 * (4 * 4 * 3)


def test_lstm_is_four_gates_times_in_plus_units_per_step():
    steps, n_in, units = 7, 3, 5
    inp = keras.Input((steps, n_in))
    model = keras.Model(inp, keras.layers.LSTM(units)(inp))
    assert bench.model_flops(model) == steps * 4 * 2 * (n_in + units) * units
    bidirectional = keras.Model(inp, keras.layers.Bidirectional(keras.layers.LSTM(units))(inp))
    assert bench.model_flops(bidirectional) == 2 * steps * 4 * 2 * (n_in + units) * units


def test_multi_head_attention_projections_and_scores():
    steps, d, heads, key_dim = 6, 8, 2, 4
    inp = keras.Input((steps, d))
    model = keras.Model(inp, keras.layers.MultiHeadAttention(heads, key_dim)(inp, inp))
    projections = 2 * steps * d * heads * key_dim * 4  # query, key, value and output (back to d)
    attention = 2 * heads * steps * steps * key_dim * 2  # Q K^T and the weighted sum of the values
    assert bench.model_flops(model) == projections + attention


def test_nested_models_are_summed_and_cheap_layers_ignored():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(5)(inner_in))
    inp = keras.Input((6,))
    h = keras.layers.BatchNormalization()(inp)
    h = keras.layers.Activation("relu")(inner(h))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.5)(h))
    assert bench.model_flops(keras.Model(inp, out)) == 2 * 6 * 5 + 2 * 5 * 2


def test_convstar_counts_input_and_recurrent_convolutions_per_step_and_pixel():
    from cropflow.models.convstar import ConvSTAR2D

    steps, rows, cols, channels, filters, k = 3, 4, 4, 2, 5, 3
    inp = keras.Input((steps, rows, cols, channels))
    model = keras.Model(inp, ConvSTAR2D(filters, k)(inp))
    per_pixel = 2 * k * k * channels * 2 * filters + 2 * k * k * filters * filters
    assert bench.model_flops(model) == steps * rows * cols * per_pixel
