"""What the model tests share: the smallest settings of each keras model and synthetic inputs whose class is the
time profile of every channel (and pixel)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

K = 4
SHAPES = {"pixel": {"s1": (8, 3), "s2": (6, 2)}, "patch": {"s1": (5, 5, 6, 3), "s2": (5, 5, 4, 2)}}
PIXEL, PATCH = SHAPES["pixel"], SHAPES["patch"]
#: the smallest settings of each keras model that still build every kind of layer it has
TINY = {
    "tempcnn": {"filters": 8, "kernel_size": 3, "layers": 2, "dense": 16, "dropout": 0.1},
    "conv1d": {"filters": 8, "kernel_sizes": [1, 3], "modules": 1, "dense": 16, "dropout": 0.1},
    "tcn": {"filters": 8, "kernel_size": 3, "levels": 2, "dense": 16, "dropout": 0.1},
    "transformer": {"d_model": 16, "heads": 2, "blocks": 2, "ff": 32, "dense": 16, "dropout": 0.1},
    "atlstm": {"units": 8, "dense": 16, "dropout": 0.1},
    "conv1d_lstm": {"conv_kernels": [3, 3, 5], "conv_filters": [4, 8, 8], "conv_dense": 8, "lstm_units": 8,
                    "attention_units": 8, "lstm_dense": 16, "dense": 16, "dropout": 0.1},
    "cnn3d": {"filters": [4, 4, 8], "dense": [16], "dropout": 0.1},
    "cnn3d2d": {"filters3d": [2, 4, 4], "filters2d": 8, "dense": [16, 8], "dropout": 0.1},
    "convstar": {"filters": 6, "layers": 2, "dense": [16], "dropout": 0.1},
    "convstar3d": {"filters3d": [4, 4, 8], "filters": 6, "layers": 2, "filters2d": 8, "dense": [16, 8],
                   "dropout": 0.1},
    "unet3d": {"levels": 2, "filters": 4},
}


def profiles(t: int) -> np.ndarray:
    """(4, t): rising, falling, flat and peaked profiles in [0, 1]."""
    s = np.linspace(0, 1, t)
    return np.stack([s, 1 - s, np.full(t, 0.5), np.sin(np.pi * s)])


def separable(shapes: Mapping[str, tuple[int, ...]], n_per_class: int, seed: int = 0, k: int = K,
              noise: float = 0.05, scale: float = 1.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs of per-sample ``shapes`` ((T, C) series or (h, w, T, C) patches) and labels 0..k-1, n_per_class each,
    class i being scale * profile i plus Gaussian noise; float32 inputs, int labels in class order."""
    if not 1 <= k <= 4:
        raise ValueError(f"k must be 1 to 4, got {k}")
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    x = {}
    for name, shape in shapes.items():
        *space, t, c = shape
        mean = profiles(t)[y].reshape((y.size,) + (1,) * len(space) + (t, 1))
        x[name] = (scale * mean + rng.normal(0, noise, (y.size, *space, t, c))).astype(np.float32)
    return x, y


def with_random_statistics(model, seed: int = 0):
    """``model`` with trained-like batch normalisations: moving mean/variance, gamma and beta far from their
    initial 0/1 (for checks that must see the normalisation's effect)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=c))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, size=c))
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=c))
            layer.beta.assign(rng.normal(size=c))
    return model
