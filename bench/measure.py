"""What the benchmarks share: the analytic FLOP count of a keras model's forward pass and the sgemm rate it is
compared with (numpy's float32 matmul on the same cores, in the same run), the copy bandwidth memory-bound
kernels are compared with, and a best-of timer.

FLOPs per sample, multiply and add counted as 2 FLOPs:

  counted     Dense (2 in out per position it is applied at), Conv1D / Conv2D / Conv3D (2 k_1..k_n c_in c_out
              per output position, "same" padding included), Conv2DTranspose (2 k_h k_w c_in c_out per input
              position), LSTM (4 gates x 2 (in + units) units per time step, also inside Bidirectional),
              MultiHeadAttention (query/key/value/output projections, scores Q K^T and the weighted sum of the
              values), cropflow's ConvSTAR2D (input convolution 2 k^2 c_in 2 filters and recurrent convolution
              2 k^2 filters^2 per pixel and time step); nested models are recursed into;
  ignored     as negligible against those: biases, batch and layer normalisation, activations and softmax,
              gate element-wise products, pooling, Add / Multiply / Concatenate / Dot, reshaping, padding,
              cropping, up-sampling, dropout (identity at inference).

Keras is imported only by the FLOP counting functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numba
import numpy as np

# ------------------------------------------------------------------------------------------------ FLOP counting


def _prod(values: Sequence[int | None]) -> int:
    return int(math.prod(int(v) for v in values))


def _shape(tensor) -> tuple[int, ...]:
    """The per-sample shape of a symbolic tensor (batch axis dropped)."""
    return tuple(int(s) for s in tensor.shape[1:])


def dense_flops(layer) -> int:
    """Dense: 2 in out per position (a Dense on (N, T, C) is applied at each of the T steps); bias ignored."""
    n_in, n_out = (int(s) for s in layer.kernel.shape)
    return 2 * n_in * n_out * _prod(_shape(layer.output)[:-1])


def conv_flops(layer) -> int:
    """Conv1D / Conv2D / Conv3D: 2 x (kernel taps x c_in x c_out) per output position; bias ignored.

    The kernel is (k_1, ..., k_n, c_in / groups, c_out), so 2 x kernel.size x (output positions); dilation does
    not change the count, "same" padding counts the padded positions (they are computed).
    """
    return 2 * _prod(layer.kernel.shape) * _prod(_shape(layer.output)[:-1])


def conv_transpose_flops(layer) -> int:
    """Conv2DTranspose / Conv3DTranspose: every input position is scattered through the whole kernel, so
    2 x kernel.size (k_1..k_n c_out c_in) per input position; bias ignored."""
    return 2 * _prod(layer.kernel.shape) * _prod(_shape(layer.input)[:-1])


def lstm_flops(layer, steps: int) -> int:
    """LSTM: per time step the 4 gates' input and recurrent matmuls, 4 x 2 (in + units) units; gate
    non-linearities and element-wise products ignored."""
    n_in, four_units = (int(s) for s in layer.cell.kernel.shape)
    units = four_units // 4
    return steps * 4 * 2 * (n_in + units) * units


def mha_flops(layer) -> int:
    """MultiHeadAttention: query/key/value projections, scores Q K^T (2 T_q T_k heads key_dim), weighted sum of
    the values (2 T_q T_k heads value_dim) and output projection; softmax and biases ignored."""
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    t_q = _shape(inputs[0])[0]
    t_k = _shape(inputs[1])[0] if len(inputs) > 1 else t_q  # keys and values share their length
    d_q, heads, key_dim = (int(s) for s in layer.query_dense.kernel.shape)
    d_k = int(layer.key_dense.kernel.shape[0])
    d_v, _, value_dim = (int(s) for s in layer.value_dense.kernel.shape)
    d_out = int(layer.output_dense.kernel.shape[-1])
    projections = 2 * heads * (t_q * d_q * key_dim + t_k * d_k * key_dim + t_k * d_v * value_dim
                               + t_q * value_dim * d_out)
    attention = 2 * heads * t_q * t_k * (key_dim + value_dim)
    return projections + attention


def convstar_flops(layer) -> int:
    """cropflow's ConvSTAR2D on (N, T, h, w, C): per time step and pixel the input convolution
    (2 k^2 c_in 2 filters, W_xf and W_xz) and the recurrent one (2 k^2 filters^2, W_hf); gates ignored."""
    steps, rows, cols, _ = _shape(layer.input)
    per_pixel = 2 * _prod(layer.kernel.shape) + 2 * _prod(layer.recurrent_kernel.shape)
    return steps * rows * cols * per_pixel


def layer_flops(layer) -> int:
    """Forward FLOPs per sample of one layer (0 for the layer types ignored, see the module docstring)."""
    import keras

    from cropflow.models.convstar import ConvSTAR2D

    if isinstance(layer, keras.Model):
        return model_flops(layer)
    if isinstance(layer, keras.layers.Bidirectional):
        steps = _shape(layer.input)[0]
        return sum(lstm_flops(sub, steps) if isinstance(sub, keras.layers.LSTM) else 0
                   for sub in (layer.forward_layer, layer.backward_layer))
    if isinstance(layer, keras.layers.LSTM):
        return lstm_flops(layer, _shape(layer.input)[0])
    if isinstance(layer, keras.layers.Dense):
        return dense_flops(layer)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return conv_flops(layer)
    if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        return conv_transpose_flops(layer)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return mha_flops(layer)
    if isinstance(layer, ConvSTAR2D):
        return convstar_flops(layer)
    return 0


def model_flops(model) -> int:
    """Forward FLOPs of one sample through a keras model: the sum of :func:`layer_flops` over its layers."""
    return int(sum(layer_flops(layer) for layer in model.layers))


# ------------------------------------------------------------------------------------------------ rates


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sgemm_rate(n: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of numpy's float32 matmul of two n x n matrices (2 n^3 FLOPs), best of ``repeat`` after a warm-up."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    a @ b  # warm up the BLAS threads
    return 2 * n**3 / best_time(lambda: a @ b, repeat)


@numba.njit(parallel=True)
def _threaded_copy(src: np.ndarray, dst: np.ndarray) -> None:
    """dst = src, contiguous slices split between the numba threads."""
    n = src.shape[0]
    chunks = numba.get_num_threads()
    size = (n + chunks - 1) // chunks
    for k in numba.prange(chunks):
        dst[k * size:min(n, (k + 1) * size)] = src[k * size:min(n, (k + 1) * size)]


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeat: int = 5) -> tuple[float, float]:
    """Bytes/s (read + write counted) of np.copyto and of a copy split between the numba threads, on a float32
    buffer of ``n_bytes``, larger than the caches, into a preallocated one; best of ``repeat`` each."""
    src = np.ones(n_bytes // 4, np.float32)
    dst = np.zeros_like(src)
    numpy_bw = 2 * src.nbytes / best_time(lambda: np.copyto(dst, src), repeat)
    _threaded_copy(src, dst)  # compile
    threaded_bw = 2 * src.nbytes / best_time(lambda: _threaded_copy(src, dst), repeat)
    return numpy_bw, threaded_bw


def blas_info() -> str:
    """numpy's BLAS library, version, kernel architecture and threads (threadpoolctl), or "unknown"."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    if not blas:
        return "unknown"
    info = min(blas, key=lambda i: "numpy" not in str(i.get("filepath", "")))  # numpy's own before scipy's
    return (f"{info.get('internal_api')} {info.get('version')}, {info.get('architecture')} kernels, "
            f"{info.get('num_threads')} threads")
