"""AtLSTM: bidirectional LSTM with temporal attention (SCIENCE.md, Models: "AtLSTM: bidirectional LSTM (128 units),
attention over time steps (Eq. 5-4: scores from a dense transform of the hidden states dotted with the last state,
softmax), context concatenated with the last state").

One branch per input (T, C): Bidirectional(LSTM(units)) returning the hidden states h_t (N, T, 2 units) and the
last state h_last = [forward final state, backward final state] (N, 2 units). Eq. 5-4:

    score_t = (W h_t + b) . h_last,   a_t = softmax_t(score_t),   context = sum_t a_t h_t

and the branch features are [context, h_last]. The branches are concatenated, followed by Dense(dense, ReLU) ->
Dropout and a float32 softmax "proba". Per input, the layer ``f"{input}_attention"`` outputs a_t, (N, T).

Built from keras layers only, so ``.keras`` files load without custom objects and importing this module does not
import TensorFlow. Every initialiser and dropout layer is seeded from ``seed``; the backward LSTM is given its own
layer (Bidirectional would otherwise copy the forward layer's seeded initialisers and start from the same weights).
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults

FAMILY = "keras"
KIND = "pixel"
DEFAULTS: dict[str, object] = {
    "units": 128,
    "dense": 128,
    "dropout": 0.2,
    **training_defaults(),
}


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) AtLSTM keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("atlstm", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    units, dense, rate = int(p["units"]), int(p["dense"]), float(p["dropout"])
    if units < 1:
        raise ValueError(f"atlstm: units must be at least 1, got {p['units']}")
    seeds = Seeds(seed)

    def lstm(name: str, backwards: bool):
        return keras.layers.LSTM(units, return_sequences=True, return_state=True, go_backwards=backwards,
                                 kernel_initializer=seeds.glorot(), recurrent_initializer=seeds.orthogonal(),
                                 name=name)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        states, h_fwd, _, h_bwd, _ = keras.layers.Bidirectional(
            lstm(f"{name}_lstm_forward", False), backward_layer=lstm(f"{name}_lstm_backward", True),
            name=f"{name}_bilstm")(inp)
        h_last = keras.layers.Concatenate(name=f"{name}_last_state")([h_fwd, h_bwd])
        # Eq. 5-4: score_t = (W h_t + b) . h_last, a = softmax over t, context = sum_t a_t h_t
        keys = keras.layers.Dense(2 * units, kernel_initializer=seeds.glorot(),
                                  name=f"{name}_attention_dense")(states)
        scores = keras.layers.Dot(axes=(2, 1), name=f"{name}_attention_scores")([keys, h_last])
        weights = keras.layers.Softmax(axis=-1, dtype="float32", name=f"{name}_attention")(scores)
        context = keras.layers.Dot(axes=(1, 1), name=f"{name}_context")([weights, states])
        branches.append(keras.layers.Concatenate(name=f"{name}_features")([context, h_last]))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, [dense], rate, n_classes, seeds, names=[("dense", "dense_dropout")])
    return keras.Model(inputs=model_inputs, outputs=out, name="atlstm")
