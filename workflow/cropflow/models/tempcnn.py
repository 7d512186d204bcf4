"""TempCNN (Pelletier et al. 2019, "Temporal Convolutional Neural Network for the Classification of Satellite
Image Time Series"; SCIENCE.md, Models: "TCNN / TempCNN: stacked Conv1D + BN + ReLU + dropout, flatten, dense").

One branch per input (T, C): ``layers`` x [Conv1D(filters, kernel_size, padding="same") -> BatchNorm -> ReLU ->
Dropout], then Flatten. The branches are concatenated, followed by Dense(dense) -> BatchNorm -> ReLU -> Dropout
and a softmax Dense(n_classes) kept in float32 so the output is stable under mixed precision.
Every weight initialiser and dropout layer gets its own seed derived from ``seed``, so a build is reproducible
without touching global random state.
"""

from __future__ import annotations

from collections.abc import Mapping

from cropflow.models.common import Seeds, check_inputs, training_defaults

FAMILY = "keras"
DEFAULTS: dict[str, object] = {
    "filters": 64,
    "kernel_size": 5,
    "layers": 3,
    "dense": 256,
    "dropout": 0.2,
    **training_defaults(),
}


def build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int):
    """The (uncompiled) TempCNN keras.Model with one named ``keras.Input`` per input key (sorted order)."""
    import keras  # deferred: importing keras loads TensorFlow, which only the deep models need

    shapes = check_inputs("tempcnn", inputs, n_classes, "pixel")
    p = {**DEFAULTS, **params}
    filters, kernel, n_layers = int(p["filters"]), int(p["kernel_size"]), int(p["layers"])
    dense, rate = int(p["dense"]), float(p["dropout"])
    seeds = Seeds(seed)

    model_inputs, branches = {}, []
    for name, shape in shapes.items():
        inp = keras.Input(shape=shape, name=name)
        h = inp
        for i in range(n_layers):
            h = keras.layers.Conv1D(filters, kernel, padding="same", kernel_initializer=seeds.glorot(),
                                    name=f"{name}_conv{i}")(h)
            h = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(h)
            h = keras.layers.Activation("relu", name=f"{name}_relu{i}")(h)
            h = keras.layers.Dropout(rate, seed=next(seeds), name=f"{name}_dropout{i}")(h)
        branches.append(keras.layers.Flatten(name=f"{name}_flatten")(h))
        model_inputs[name] = inp
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    h = keras.layers.Dense(dense, kernel_initializer=seeds.glorot(), name="dense")(h)
    h = keras.layers.BatchNormalization(name="dense_bn")(h)
    h = keras.layers.Activation("relu", name="dense_relu")(h)
    h = keras.layers.Dropout(rate, seed=next(seeds), name="dense_dropout")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_initializer=seeds.glorot(),
                             name="proba")(h)
    return keras.Model(inputs=model_inputs, outputs=out, name="tempcnn")
