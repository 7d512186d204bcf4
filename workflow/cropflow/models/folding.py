"""Batch normalisation folded into the layers before it, for inference.

At inference a BatchNormalization layer is a fixed per-channel affine map (Ioffe & Szegedy 2015, section 3.1):
BN(z) = gamma (z - mu) / sqrt(sigma^2 + eps) + beta = s z + (beta - s mu), with s = gamma / sqrt(sigma^2 + eps)
and mu, sigma^2 the moving statistics. When z = W x + b is the output of a convolution or dense layer,
BN(W x + b) = (s W) x + (s b + beta - s mu): the layer's kernel scaled per output channel and a new bias give the
same values, and the normalisation costs nothing. A BatchNormalization after a channel concatenation of such layers
(Conv1D's inception modules) is folded slice by slice into each of them. A ReLU that only the folded normalisation
feeds moves into those layers as their activation, since ReLU(concat(z_1, ..., z_n)) = concat(ReLU(z_1), ...,
ReLU(z_n)): TensorFlow then runs convolution, bias and ReLU as one fused operation.

:func:`fold_batch_norms` returns an in-memory copy of a keras model with every foldable BatchNormalization folded
and replaced by a pass-through layer; it is never saved (bundles keep the trained model as trained). A
normalisation is left as it is when its input is anything else, when the layer before it has no bias or an
activation, or when that layer's output is used elsewhere too.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def fold_batch_norms(model):
    """A copy of the keras ``model`` computing the same inference outputs, with every foldable
    BatchNormalization folded into the convolution or dense layers before it (see the module docstring); the
    model itself when there is none."""
    import keras  # deferred: importing keras loads TensorFlow

    plan = {layer.name: parts for layer in model.layers
            if type(layer) is keras.layers.BatchNormalization and (parts := _fold_targets(keras, layer))}
    if not plan:
        return model
    relus = {bn: relu for bn in plan if (relu := _only_relu_after(keras, model.get_layer(bn)))}
    with_relu = {layer.name for bn in relus for layer, _ in plan[bn]}

    def clone_layer(layer):
        if layer.name in plan or layer.name in relus.values():
            return _pass_through(keras, layer.name)
        config = layer.get_config()
        if layer.name in with_relu:
            config["activation"] = "relu"
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        if layer.name not in plan and layer.weights:
            folded.get_layer(layer.name).set_weights(layer.get_weights())
    for name, parts in plan.items():
        scale, shift = bn_affine(model.get_layer(name))
        for layer, offset in parts:
            kernel, bias = layer.get_weights()
            s = scale[offset:offset + kernel.shape[-1]]
            folded.get_layer(layer.name).set_weights([kernel * s, bias * s + shift[offset:offset + kernel.shape[-1]]])
    log.debug("model %s: %d batch normalisations folded for inference, %d ReLUs moved into the layers before",
              model.name, len(plan), len(relus))
    return folded


def bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """(s, beta - s mu) of an inference-mode BatchNormalization: BN(z) = s z + (beta - s mu), per channel, with
    s = gamma / sqrt(sigma^2 + eps) (float64)."""
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(var)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - scale * np.asarray(bn.moving_mean.numpy(), np.float64)


def _fold_targets(keras, bn) -> list[tuple[object, int]] | None:
    """[(layer, first output channel in the normalised tensor)] a BatchNormalization folds into, or None."""
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) else bn.axis
    if len(bn._inbound_nodes) != 1 or axis not in (-1, len(bn.input.shape) - 1):
        return None
    source = bn.input._keras_history.operation
    layers = [source]
    if isinstance(source, keras.layers.Concatenate):
        if source.axis not in (-1, len(bn.input.shape) - 1) or len(source._outbound_nodes) != 1:
            return None
        layers = [t._keras_history.operation for t in source.input]
    targets, offset = [], 0
    linear = keras.activations.get("linear")
    for layer in layers:
        if not isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                                  keras.layers.Dense)) or not layer.use_bias or layer.activation is not linear \
                or len(layer._inbound_nodes) != 1 or len(layer._outbound_nodes) != 1:
            return None
        targets.append((layer, offset))
        offset += int(layer.kernel.shape[-1])
    return targets


def _only_relu_after(keras, bn) -> str | None:
    """The name of the ReLU activation layer that is the only consumer of ``bn``'s output, or None."""
    consumers = [node.operation for node in bn._outbound_nodes]
    if len(consumers) != 1:
        return None
    act = consumers[0]
    if type(act) is keras.layers.Activation and act.activation is keras.activations.get("relu") \
            and len(act._inbound_nodes) == 1:
        return act.name
    return None


def _pass_through(keras, name: str):
    """The layer that takes a folded normalisation's place: it returns its input (and accepts the arguments the
    normalisation was called with)."""

    class FoldedBatchNormalization(keras.layers.Layer):
        def call(self, inputs, *args, **kwargs):
            return inputs

    return FoldedBatchNormalization(name=name)
