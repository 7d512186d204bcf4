"""Transformer encoder for satellite image time series (Russwurm & Koerner 2020, "Self-attention for raw optical
Satellite Time Series Classification"; SCIENCE.md, Models: "Transformer (Russwurm & Koerner 2020): positional
encoding of time steps, 2 encoder blocks (... 4 heads, dim 128 in ch. 5), residual + layer norm, feed-forward,
global average over time, MLP").

One branch per input (T, C): Dense(d_model) projection of every time step + sinusoidal positional encoding of
the time-step index (Vaswani et al. 2017: PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)))
-> Dropout -> ``blocks`` x encoder block [MultiHeadAttention(heads, key_dim=d_model/heads) -> Dropout -> residual
-> LayerNorm -> Dense(ff, ReLU) -> Dense(d_model) -> Dropout -> residual -> LayerNorm] -> global average over
time. The branches are concatenated, followed by Dense(dense, ReLU) -> Dropout and a float32 softmax "proba".

Per input, the layer ``f"{input}_attention"`` outputs (N, T): the last block's attention scores averaged over
heads and query positions, i.e. how much attention each time step receives (rows sum to 1).

The model is made of built-in keras layers and ``keras.ops`` only (the positional encoding is a constant added
with ``keras.ops.add``; the attention layer, which feeds no computation, is kept in the graph by adding 0 times its
sum to the pooled features), so ``.keras`` files load without custom objects and importing this module does not
import TensorFlow.
Every initialiser and dropout layer is seeded from ``seed``; the query/key/value/output kernels of each
attention layer are re-drawn with their own seeds (MultiHeadAttention would otherwise clone one seeded
initialiser into four identical kernels).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cropflow.models.common import Seeds, check_inputs, classifier_head, training_defaults

FAMILY = "keras"
KIND = "pixel"
#: XLA fuses the layer norms, softmax and residual additions around the attention matmuls: 6 % more predictions
#: per second than the frozen graph on 2 cores (4 alternating rounds, batches of 4096)
JIT_PREDICT = True
DEFAULTS: dict[str, object] = {
    "d_model": 128,
    "heads": 4,
    "blocks": 2,
    "ff": 256,
    "dropout": 0.1,
    "dense": 128,
    **training_defaults(),
}


def positional_encoding(length: int, depth: int) -> np.ndarray:
    """Sinusoidal positional encoding (Vaswani et al. 2017), float32 (length, depth).

    Channel j of time step t is sin(t / 10000^(2i/depth)) for even j = 2i and cos(t / 10000^(2i/depth)) for odd
    j = 2i + 1, so the first row is [0, 1, 0, 1, ...].
    """
    if length < 0 or depth < 1:
        raise ValueError(f"positional_encoding: need length >= 0 and depth >= 1, got ({length}, {depth})")
    pos = np.arange(length, dtype=np.float64)[:, None]
    pair = (np.arange(depth) // 2) * 2
    angle = pos / np.power(10000.0, pair / depth)[None, :]
    pe = np.where(np.arange(depth) % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(np.float32)


def _keep_in_graph(keras, features, attention):
    """``features`` plus 0 * (sum of ``attention``): the values are unchanged, but the attention layer now lies
    on the path to the output, which a functional model needs to keep it (and so ``get_layer`` finds it)."""
    zero = keras.ops.multiply(keras.ops.sum(attention, axis=-1, keepdims=True), 0.0)
    return keras.ops.add(features, keras.ops.cast(zero, features.dtype))


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) Transformer keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("transformer", inputs, n_classes, KIND)
    p = {**DEFAULTS, **params}
    d_model, heads, n_blocks = int(p["d_model"]), int(p["heads"]), int(p["blocks"])
    ff, dense, rate = int(p["ff"]), int(p["dense"]), float(p["dropout"])
    if heads < 1 or d_model < heads or d_model % heads:
        raise ValueError(f"transformer: d_model ({d_model}) must be a positive multiple of heads ({heads})")
    if n_blocks < 1:
        raise ValueError(f"transformer: blocks must be at least 1, got {p['blocks']}")
    seeds = Seeds(seed)
    attention_layers = []

    def dropout(name: str):
        return keras.layers.Dropout(rate, seed=next(seeds), name=name)

    def encoder_block(h, prefix: str, last: bool):
        """Post-norm encoder block; also returns the attention scores (N, heads, T, T) of the block."""
        mha = keras.layers.MultiHeadAttention(heads, d_model // heads, kernel_initializer=seeds.glorot(),
                                              name=f"{prefix}_mha")
        a, scores = mha(h, h, return_attention_scores=True) if last else (mha(h, h), None)
        attention_layers.append(mha)
        a = dropout(f"{prefix}_mha_dropout")(a)
        h = keras.layers.Add(name=f"{prefix}_mha_add")([h, a])
        h = keras.layers.LayerNormalization(name=f"{prefix}_mha_norm")(h)
        f = keras.layers.Dense(ff, activation="relu", kernel_initializer=seeds.glorot(), name=f"{prefix}_ff1")(h)
        f = keras.layers.Dense(d_model, kernel_initializer=seeds.glorot(), name=f"{prefix}_ff2")(f)
        f = dropout(f"{prefix}_ff_dropout")(f)
        h = keras.layers.Add(name=f"{prefix}_ff_add")([h, f])
        return keras.layers.LayerNormalization(name=f"{prefix}_ff_norm")(h), scores

    model_inputs, branches = {}, []
    for name, (t, c) in shapes.items():
        inp = keras.Input(shape=(t, c), name=name)
        h = keras.layers.Dense(d_model, kernel_initializer=seeds.glorot(), name=f"{name}_embed")(inp)
        h = keras.ops.add(h, positional_encoding(t, d_model).astype(h.dtype))
        h = dropout(f"{name}_embed_dropout")(h)
        scores = None
        for b in range(n_blocks):
            h, scores = encoder_block(h, f"{name}_block{b}", last=b == n_blocks - 1)
        # mean over heads and query positions: (N, heads, T, T) -> (N, heads*T, T) -> (N, T)
        scores = keras.layers.Reshape((heads * t, t), name=f"{name}_attention_scores")(scores)
        attention = keras.layers.GlobalAveragePooling1D(dtype="float32", name=f"{name}_attention")(scores)
        pooled = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(h)
        branches.append(_keep_in_graph(keras, pooled, attention))
        model_inputs[name] = inp
    out = classifier_head(keras, branches, [dense], rate, n_classes, seeds, names=[("dense", "dense_dropout")])
    model = keras.Model(inputs=model_inputs, outputs=out, name="transformer")
    for mha in attention_layers:
        for sub in (mha.query_dense, mha.key_dense, mha.value_dense, mha.output_dense):
            sub.kernel.assign(seeds.glorot()(tuple(sub.kernel.shape), dtype=sub.kernel.dtype))
    return model
