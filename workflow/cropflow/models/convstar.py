"""ConvSTAR (Turkoglu et al. 2021, "Gating Revisited: Deep Multi-layer RNNs That Can Be Trained"; SCIENCE.md,
Models, Patch: "ConvSTAR (Turkoglu 2021): convolutional STAR recurrent cell (Eq. 4-2 to 4-4), 3 layers").

:class:`ConvSTAR2D` is the convolutional STAR recurrent layer. For every time step t, with ``*`` a 2D convolution
(k x k, "same" padding) and ``.`` the element-wise product (SCIENCE.md Eq. 4-2 to 4-4)::

    f_t = sigmoid(W_xf * X_t + W_hf * H_{t-1} + B_f)          (4-2)
    Z_t = tanh(W_xz * X_t + B_z)                              (4-3)
    H_t = tanh(f_t . Z_t + H_{t-1} . (1 - f_t))               (4-4)

from H_0 = 0. The model: one branch per input patch (h, w, T, C), the patch's time axis moved first, ``layers``
(3) stacked ConvSTAR2D layers of ``filters`` (64) k x k kernels, the last layer's final hidden state H_T
(h, w, filters); the centre pixel's features of that map (the pixel the label belongs to; the recurrent
convolution widens its receptive field by (k - 1) / 2 pixels per time step and layer, so it sees the patch).
The branches are concatenated, followed by ``dense`` x [Dense -> ReLU -> Dropout] and a softmax Dense(n_classes)
kept in float32.

This module defines a registered keras layer, so importing it imports keras.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import ops

from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults, units

FAMILY = "keras"
KIND = "patch"
DEFAULTS: dict[str, object] = {
    "filters": 64,
    "kernel_size": 3,
    "layers": 3,
    "dense": [256],
    "dropout": 0.4,
    **training_defaults(batch_size=128),
}


@keras.saving.register_keras_serializable(package="cropflow")
class ConvSTAR2D(keras.layers.Layer):
    """Convolutional STAR recurrent layer (Eq. 4-2 to 4-4) over inputs (N, T, h, w, C).

    Weights: ``kernel`` (k, k, C, 2 * filters) = [W_xf | W_xz], ``recurrent_kernel`` (k, k, filters, filters)
    = W_hf, ``bias`` (2 * filters,) = [B_f | B_z]. The input convolutions of all time steps are computed in one
    batch; only W_hf * H_{t-1} runs inside the (unrolled) time loop, so T must be known when the layer is built.

    Output: the final hidden state (N, h, w, filters), or with ``return_sequences`` every hidden state
    (N, T, h, w, filters). With ``go_backwards`` the sequence is read from X_T to X_1; the final state is then
    the one after X_1, and the returned sequence is put back in input time order (element t is the state after
    reading X_t), as keras' Bidirectional does with its backward layer.
    """

    def __init__(self, filters: int, kernel_size: int = 3, return_sequences: bool = False,
                 go_backwards: bool = False, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def build(self, input_shape) -> None:
        steps, channels = input_shape[1], input_shape[-1]
        if steps is None or channels is None:
            raise ValueError(f"ConvSTAR2D '{self.name}': the time steps and channels must be known, "
                             f"got input shape {tuple(input_shape)}")
        k, f = self.kernel_size, self.filters
        self.kernel = self.add_weight(shape=(k, k, int(channels), 2 * f), initializer=self.kernel_initializer,
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(k, k, f, f), initializer=self.recurrent_initializer,
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(2 * f,), initializer=self.bias_initializer, name="bias")

    def call(self, inputs):
        steps, rows, cols, channels = inputs.shape[1:]
        # W_xf * X_t + B_f and W_xz * X_t + B_z for every t in one convolution
        gx = ops.conv(ops.reshape(inputs, (-1, rows, cols, channels)), self.kernel, padding="same",
                      data_format="channels_last") + self.bias
        gate_x, candidate_x = ops.split(ops.reshape(gx, (-1, steps, rows, cols, 2 * self.filters)), 2, axis=-1)
        # per-step tensors by unstacking (whose gradient is one stack) rather than slicing inside the loop (each
        # slice's gradient would be a zero-filled tensor of the whole sequence's size)
        gates_x = ops.unstack(gate_x, num=steps, axis=1)
        candidates = ops.unstack(ops.tanh(candidate_x), num=steps, axis=1)  # Z_t, Eq. 4-3
        order = range(steps - 1, -1, -1) if self.go_backwards else range(steps)
        state = ops.zeros_like(candidates[0])  # H_0
        states = []
        for t in order:
            forget = ops.sigmoid(gates_x[t] + ops.conv(state, self.recurrent_kernel, padding="same",
                                                        data_format="channels_last"))  # Eq. 4-2
            state = ops.tanh(forget * candidates[t] + state * (1.0 - forget))  # Eq. 4-4
            states.append(state)
        if not self.return_sequences:
            return state
        if self.go_backwards:
            states.reverse()
        return ops.stack(states, axis=1)

    def compute_output_shape(self, input_shape):
        batch, steps, rows, cols, _ = input_shape
        if self.return_sequences:
            return (batch, steps, rows, cols, self.filters)
        return (batch, rows, cols, self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "return_sequences": self.return_sequences,
            "go_backwards": self.go_backwards,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


def star_stack(h, n_layers: int, filters: int, kernel: int, bidirectional: bool, name: str, seeds: Seeds):
    """``n_layers`` stacked ConvSTAR2D layers over ``h`` (N, T, h, w, C) -> the last layer's final state.

    Each layer but the last passes its whole state sequence to the next. ``bidirectional``: every layer is a
    forward and a backward ConvSTAR2D whose states are concatenated on the channel axis (2 * filters channels);
    the final state is [H_T of the forward layer | state after X_1 of the backward layer].
    """
    if n_layers < 1:
        raise ValueError(f"{name}: at least one ConvSTAR layer is needed, got {n_layers}")
    for i in range(n_layers):
        last = i == n_layers - 1
        directions = (False, True) if bidirectional else (False,)
        outs = []
        for backwards in directions:
            suffix = ("_bwd" if backwards else "_fwd") if bidirectional else ""
            outs.append(ConvSTAR2D(
                filters, kernel, return_sequences=not last, go_backwards=backwards,
                kernel_initializer=seeds.glorot(), recurrent_initializer=seeds.orthogonal(),
                name=f"{name}_star{i}{suffix}")(h))
        h = outs[0] if len(outs) == 1 else keras.layers.Concatenate(name=f"{name}_star{i}_concat")(outs)
    return h


def centre_pixel(h, name: str):
    """The features (N, F) of the centre pixel (row h // 2, column w // 2) of a map (N, h, w, F)."""
    rows, cols = h.shape[1], h.shape[2]
    crop = ((rows // 2, rows - rows // 2 - 1), (cols // 2, cols - cols // 2 - 1))
    h = keras.layers.Cropping2D(crop, name=f"{name}_centre")(h)
    return keras.layers.Flatten(name=f"{name}_centre_features")(h)


def time_first(inp, name: str):
    """A patch input (N, h, w, T, C) as a sequence of images (N, T, h, w, C)."""
    return keras.layers.Permute((3, 1, 2, 4), name=f"{name}_time_first")(inp)


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object],
          seed: int) -> keras.Model:
    """The (uncompiled) ConvSTAR keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    shapes = check_inputs("convstar", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    filters, kernel, n_layers = int(p["filters"]), int(p["kernel_size"]), int(p["layers"])
    dense, rate = units(p["dense"]), float(p["dropout"])
    seeds = Seeds(seed)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = star_stack(time_first(inp, name), n_layers, filters, kernel, False, name, seeds)
        branches.append(centre_pixel(h, name))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, dense, rate, n_classes, seeds)
    return keras.Model(inputs=model_inputs, outputs=out, name="convstar")
