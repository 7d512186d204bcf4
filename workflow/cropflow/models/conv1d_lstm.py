"""Conv1D-LSTM, the two-branch network proposed in chapter 3 of the thesis (SCIENCE.md, Models: "Conv1D-LSTM
(chapter 3's proposal): two parallel branches. Conv1D branch: three Conv1D layers, kernels 3, 3, 5, channels 64,
128, 256, skip connections, BN after each, each level's output through a dense layer, concatenated. LSTM branch:
bidirectional LSTM + attention (Eq. 3-19 to 3-21), dense to 512. Branches concatenated, shared dense, dropout,
softmax").

Per input (T, C), two parallel branches:

- Conv1D branch: level i (kernels ``conv_kernels`` = 3, 3, 5; channels ``conv_filters`` = 64, 128, 256) computes
  h_i = ReLU(BN(Conv1D_i(h_{i-1})) + S_i(h_{i-1})), where the skip S_i is the identity when the channel counts
  match and a 1x1 Conv1D otherwise. Each level's output is averaged over time and passed through
  Dense(conv_dense, ReLU); the three level vectors are concatenated.
- LSTM branch: a bidirectional LSTM (``lstm_units`` per direction, all time steps returned) gives h_t; attention
  over time steps (Eq. 3-19 to 3-21):

      score_t = v^T tanh(W h_t),   a_t = exp(score_t) / sum_s exp(score_s),   context = sum_t a_t h_t,

  with W (``attention_units`` x 2 lstm_units) and v learned, no biases. The weights a (N, T) are the output of the
  layer named ``f"{input}_attention"``. The context goes through Dense(lstm_dense = 512, ReLU).

Both branches of every input are concatenated, followed by the shared Dense(dense, ReLU) -> Dropout and a softmax
Dense(n_classes) ``"proba"`` kept in float32 (stable under mixed precision). Every weight initialiser and dropout
layer gets its own seed derived from ``seed``; the backward LSTM gets seeds of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, classifier_head, positive_ints, training_defaults

FAMILY = "keras"
KIND = "pixel"
DEFAULTS: dict[str, object] = {
    "conv_kernels": [3, 3, 5],
    "conv_filters": [64, 128, 256],
    "conv_dense": 128,
    "lstm_units": 128,
    "attention_units": 128,
    "lstm_dense": 512,
    "dense": 256,
    "dropout": 0.3,
    **training_defaults(),
}


def int_list(key: str, value: object) -> list[int]:
    """Positive ints from a list/tuple or a comma-separated string ("3,3,5"); ValueError naming ``key`` otherwise."""
    return positive_ints("conv1d_lstm", key, value)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) Conv1D-LSTM keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("conv1d_lstm", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    kernels = int_list("conv_kernels", p["conv_kernels"])
    widths = int_list("conv_filters", p["conv_filters"])
    if len(kernels) != len(widths):
        raise ValueError(f"conv1d_lstm: conv_kernels {kernels} and conv_filters {widths} differ in length")
    conv_dense, units, att_units = int(p["conv_dense"]), int(p["lstm_units"]), int(p["attention_units"])
    lstm_dense, dense, rate = int(p["lstm_dense"]), int(p["dense"]), float(p["dropout"])
    if min(conv_dense, units, att_units, lstm_dense, dense) < 1:
        raise ValueError(f"conv1d_lstm: layer sizes must be >= 1, got {p}")
    seeds = Seeds(seed)

    def lstm(backwards: bool, name: str):
        return keras.layers.LSTM(units, return_sequences=True, go_backwards=backwards,
                                 kernel_initializer=seeds.glorot(), recurrent_initializer=seeds.orthogonal(), name=name)

    def conv_branch(h, name: str):
        pooled = []
        for i, (kernel, width) in enumerate(zip(kernels, widths)):
            prefix = f"{name}_conv{i}"
            y = keras.layers.Conv1D(width, kernel, padding="same", kernel_initializer=seeds.glorot(), name=prefix)(h)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn")(y)
            if h.shape[-1] != width:
                h = keras.layers.Conv1D(width, 1, kernel_initializer=seeds.glorot(), name=f"{prefix}_skip")(h)
            h = keras.layers.Add(name=f"{prefix}_add")([h, y])
            h = keras.layers.Activation("relu", name=f"{prefix}_relu")(h)
            g = keras.layers.GlobalAveragePooling1D(name=f"{prefix}_gap")(h)
            pooled.append(keras.layers.Dense(conv_dense, activation="relu", kernel_initializer=seeds.glorot(),
                                             name=f"{prefix}_dense")(g))
        return pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name=f"{name}_conv_concat")(pooled)

    def lstm_branch(h, name: str, steps: int):
        h = keras.layers.Bidirectional(lstm(False, f"{name}_lstm_forward"),
                                       backward_layer=lstm(True, f"{name}_lstm_backward"), name=f"{name}_bilstm")(h)
        u = keras.layers.Dense(att_units, activation="tanh", use_bias=False, kernel_initializer=seeds.glorot(),
                               name=f"{name}_attention_w")(h)
        score = keras.layers.Dense(1, use_bias=False, kernel_initializer=seeds.glorot(),
                                   name=f"{name}_attention_v")(u)
        score = keras.layers.Reshape((steps,), name=f"{name}_attention_score")(score)
        weights = keras.layers.Softmax(axis=-1, name=f"{name}_attention")(score)
        context = keras.layers.Dot(axes=(1, 1), name=f"{name}_attention_context")([weights, h])
        return keras.layers.Dense(lstm_dense, activation="relu", kernel_initializer=seeds.glorot(),
                                  name=f"{name}_lstm_dense")(context)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        branches += [conv_branch(inp, name), lstm_branch(inp, name, shape[0])]
        model_inputs[name] = inp
    out = classifier_head(keras, branches, [dense], rate, n_classes, seeds, names=[("dense", "dropout")])
    return keras.Model(inputs=model_inputs, outputs=out, name="conv1d_lstm")
