"""Benchmark: training and inference throughput of every registered model, and achieved FLOP/s against sgemm.

Inputs are synthetic and shaped like the demo's: pixel models get {"s1": (12, 11), "coh": (11, 4),
"s2": (12, 3)} (time steps, bands) per sample, patch models the same series as --patch x --patch patches
(default 11 x 11, the workflow's patch size), i.e. {name: (p, p, T, C)}. 7 classes; every class has its own mean
series per input and every value gets unit Gaussian noise. Every model is built with its registry defaults
(``cropflow.models.build``, seed 0); keras models are compiled with ``cropflow.training.compile_model`` and, as
``cropflow.training`` does on CPU, run with TensorFlow op determinism enabled.

Measured, per model, in one run:

- training throughput (samples/s). Keras models: ``model.fit`` for 2 epochs on the tf.data pipeline of
  ``cropflow.training.make_dataset`` (shuffled, batch size = the model's DEFAULTS["batch_size"]), each epoch
  the same fixed number of batches; only the second epoch is timed (the first includes tracing and graph
  compilation). The number of batches is --train-steps, cut for the heavy patch models so that an epoch is at
  most --epoch-tflop estimated TFLOP (3 x FLOPs/sample x batch per step), and at least 1; it depends only on
  the model and the arguments, and the table shows the samples timed. scikit-learn models ("rf", "conv1d_rf"):
  --sk-samples / wall time of ``fit`` on that many flattened samples (registry defaults: rf 200 trees,
  conv1d_rf 500 trees, all cores). conv1d_rf's fit trains its Conv1D trunk first; here the trunk runs 1 epoch
  (its default is up to 50 with early stopping), tracing included, so its rate is one trunk epoch + the
  feature extraction + the forest, not comparable to the keras rows (its trunk's per-epoch training rate is
  the conv1d row's: the same network and batch);
- inference throughput (px/s): ``model.predict`` (keras; batch --batch for pixel models, --patch-batch for
  patch models) or ``predict_proba`` (scikit-learn) on --infer-px samples, for keras models cut to whole
  batches of at most --infer-tflop estimated TFLOP in total (at least one batch); best of 2 after a warm-up
  call on one batch (which traces the predict function). The table shows the samples predicted;
- keras models: forward FLOPs per sample counted analytically from the layer shapes
  (``measure.model_flops``, bench/measure.py lists the layers counted and ignored);
  achieved inference FLOP/s = FLOPs/sample x px/s, and its ratio to the sgemm rate; training FLOP/s estimated
  as 3 x FLOPs/sample x samples/s (forward + backward, the backward pass taken as twice the forward), and its
  ratio to the sgemm rate. conv1d_rf: the FLOPs of its trunk up to the 512 features (the forest's work is not
  counted, so its FLOP/s is a lower bound of the work done) and no training FLOP/s; rf: no FLOPs;
- the sgemm rate: numpy float32 matmul of two 2048 x 2048 matrices (2 n^3 FLOPs), best of 5, measured at the
  start and at the end of the run; the ratios use the higher of the two. The inference % of sgemm says how
  close a model's (mostly dense) arithmetic comes to a plain matrix product on the same cores; above 100 %,
  TensorFlow's oneDNN kernels outrun numpy's BLAS, whose library and kernel architecture are printed;
- the 1-minute load average (os.getloadavg) before and after: other processes on the machine lower every rate.

With the defaults (11 x 11 patches) the run takes about 6 minutes on 2 cores (load average about 4); the
heaviest patch models get 1 training batch and 1 predict batch of 128 (cnn3d, convstar, convstar3d for
training; convstar, convstar3d for predicting). --quick (7 x 7 patches, a quarter of the budgets) is a smoke
run.

    PYTHONPATH=workflow .venv/bin/python bench/models.py [--models rf,tempcnn] [--quick] [--patch 11]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/measure.py, also when loaded by the tests

from cropflow.models import MODEL_MODULES, build, get_spec, resolve_params
from measure import best_time, blas_info, model_flops, sgemm_rate

SERIES: dict[str, tuple[int, int]] = {"s1": (12, 11), "coh": (11, 4), "s2": (12, 3)}  # the demo's (T, C)
N_CLASSES = 7
SEED = 0


# ------------------------------------------------------------------------------------------------ measurements


def input_shapes(kind: str, patch: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes: the demo's (T, C) series, or (patch, patch, T, C) patches."""
    if kind == "pixel":
        return dict(SERIES)
    return {name: (patch, patch, t, c) for name, (t, c) in SERIES.items()}


def synthetic(shapes: Mapping[str, tuple[int, ...]], n: int, rng: np.random.Generator
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """n samples of 7 classes: per input a class mean series (T, C) broadcast over the patch, plus N(0, 1) noise."""
    y = rng.integers(0, N_CLASSES, n).astype(np.int32)
    x = {}
    for name, shape in shapes.items():
        means = rng.normal(0.0, 1.0, (N_CLASSES, *shape[-2:])).astype(np.float32)
        values = rng.normal(0.0, 1.0, (n, *shape)).astype(np.float32)
        values += means[y].reshape(n, *(1,) * (len(shape) - 2), *shape[-2:])
        x[name] = values
    return x, y


@dataclass
class Result:
    model: str
    kind: str
    params: str
    batch: int  # training batch size (rf: all samples)
    flops: int | None  # forward FLOPs per sample (keras models, conv1d_rf's trunk)
    train_flops: int | None  # estimated training FLOPs per sample (keras models)
    train_n: int  # samples of the timed fit (keras: epoch 2)
    train_rate: float  # samples/s
    infer_n: int  # samples predicted per timed call
    infer_rate: float  # px/s
    seconds: float  # wall time of this model's measurements, setup included


def bench_sklearn(name: str, n_train: int, n_infer: int, rng: np.random.Generator) -> Result:
    """scikit-learn model: fit time on ``n_train`` flattened samples (a keras trunk for 1 epoch); predict_proba
    px/s on ``n_infer``."""
    from cropflow.models.rf import flatten_inputs

    started = time.perf_counter()
    spec = get_spec(name)
    x, y = synthetic(SERIES, n_train, rng)
    features = flatten_inputs(x)
    params = {"epochs": 1} if "epochs" in spec.defaults else None  # conv1d_rf: one trunk epoch
    model = build(name, SERIES, N_CLASSES, params, SEED)
    t = time.perf_counter()
    model.fit(features, y)
    train_seconds = time.perf_counter() - t
    xi, _ = synthetic(SERIES, n_infer, rng)
    fi = flatten_inputs(xi)
    model.predict_proba(fi[: min(4096, n_infer)])  # warm-up: the worker pool (and the trunk's predict function)
    infer_seconds = best_time(lambda: model.predict_proba(fi), 2)
    forest = getattr(model, "forest_", model)
    trunk = getattr(model, "extractor_", None)
    nodes = f"{sum(int(tree.tree_.node_count) for tree in forest.estimators_) / 1e6:.2f}M nodes"
    size = nodes if trunk is None else f"{trunk.count_params() / 1e6:.2f}M + {nodes}"
    flops = None if trunk is None else model_flops(trunk)
    batch = int(spec.defaults.get("batch_size", n_train))  # the trunk's batch, else the whole set at once
    return Result(name, spec.kind, size, batch, flops, None, n_train, n_train / train_seconds, n_infer,
                  n_infer / infer_seconds, time.perf_counter() - started)


class EpochTimer:
    """A keras callback recording the wall time of every epoch."""

    def __init__(self) -> None:
        import keras

        timer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None) -> None:
                timer._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None) -> None:
                timer.seconds.append(time.perf_counter() - timer._start)

        self.seconds: list[float] = []
        self._start = 0.0
        self.callback = _Callback()


def budget_count(limit: int, flops_each: float, tflop: float) -> int:
    """min(limit, floor(tflop 1e12 / flops_each)), at least 1: how many steps or batches fit the budget."""
    return max(1, min(limit, int(tflop * 1e12 // max(flops_each, 1.0))))


def bench_keras(name: str, patch: int, max_steps: int, epoch_tflop: float, batch: int, max_infer: int,
                infer_tflop: float, rng: np.random.Generator) -> Result:
    """Keras model: fit samples/s (second of two epochs of a fixed number of batches), predict px/s, FLOPs/sample.

    Training batches per epoch: ``max_steps`` cut to ``epoch_tflop`` (see :func:`budget_count`); predicted
    samples: whole ``batch``-sized batches, at most ``max_infer`` samples and ``infer_tflop``.
    """
    import keras

    from cropflow.training import compile_model, make_dataset

    started = time.perf_counter()
    spec = get_spec(name)
    params = resolve_params(name, None)
    train_batch = int(params["batch_size"])
    shapes = input_shapes(spec.kind, patch)
    keras.utils.set_random_seed(SEED)
    model = build(name, shapes, N_CLASSES, params, SEED)
    compile_model(model, params)
    flops = model_flops(model)

    steps = budget_count(max_steps, 3 * flops * train_batch, epoch_tflop)
    n_train = steps * train_batch
    x, y = synthetic(shapes, n_train, rng)
    ds = make_dataset(x, y, None, train_batch, shuffle=True, seed=SEED)
    timer = EpochTimer()
    model.fit(ds, epochs=2, verbose=0, callbacks=[timer.callback], shuffle=False)  # ds shuffles itself
    train_rate = n_train / timer.seconds[1]
    del ds, x, y

    batch = min(batch, max_infer)
    n_infer = batch * budget_count(max(max_infer // batch, 1), flops * batch, infer_tflop)
    xi, _ = synthetic(shapes, n_infer, rng)
    model.predict({k: v[:batch] for k, v in xi.items()}, batch_size=batch, verbose=0)  # warm-up: tracing
    infer_seconds = best_time(lambda: model.predict(xi, batch_size=batch, verbose=0), 2)
    result = Result(name, spec.kind, f"{model.count_params() / 1e6:.2f}M", train_batch, flops, 3 * flops, n_train,
                    train_rate,
                    n_infer, n_infer / infer_seconds, time.perf_counter() - started)
    keras.backend.clear_session()
    return result


# ------------------------------------------------------------------------------------------------ report


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def print_table(results: Sequence[Result], sgemm: float) -> None:
    header = ["model", "kind", "params", "batch", "train n", "infer n", "MFLOP/sample", "train samples/s",
              "infer px/s", "infer GFLOP/s", "infer % sgemm", "train GFLOP/s", "train % sgemm", "wall s"]
    rows = []
    for r in results:
        flop_cols = ["-"] * 5
        if r.flops is not None:
            infer_fs = r.flops * r.infer_rate
            flop_cols[:3] = [f"{r.flops / 1e6:,.2f}", f"{infer_fs / 1e9:.1f}", f"{infer_fs / sgemm:.1%}"]
        if r.train_flops is not None:
            train_fs = r.train_flops * r.train_rate
            flop_cols[3:] = [f"{train_fs / 1e9:.1f}", f"{train_fs / sgemm:.1%}"]
        rows.append([r.model, r.kind, r.params, str(r.batch), str(r.train_n), str(r.infer_n), flop_cols[0],
                     _fmt_rate(r.train_rate), _fmt_rate(r.infer_rate), *flop_cols[1:], f"{r.seconds:.0f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 7 x 7 patches, a quarter of the steps, samples and budgets")
    parser.add_argument("--patch", type=int, default=11, help="patch side of the patch models (default 11)")
    parser.add_argument("--train-steps", type=int, default=20, help="fit batches per epoch, at most (default 20)")
    parser.add_argument("--epoch-tflop", type=float, default=0.5,
                        help="estimated TFLOP per fit epoch, at most (default 0.5; at least 1 batch)")
    parser.add_argument("--batch", type=int, default=4096, help="predict batch, pixel models (default 4096)")
    parser.add_argument("--patch-batch", type=int, default=128, help="predict batch, patch models (default 128)")
    parser.add_argument("--infer-px", type=int, default=32768, help="predicted samples, at most (default 32768)")
    parser.add_argument("--infer-tflop", type=float, default=0.5,
                        help="estimated TFLOP per timed predict call, at most (default 0.5; at least 1 batch)")
    parser.add_argument("--sk-samples", type=int, default=5000,
                        help="training samples of the scikit-learn models (rf, conv1d_rf; default 5000)")
    args = parser.parse_args()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices of the models built one by one
    names = args.models.split(",") if args.models else list(MODEL_MODULES)
    for name in names:
        get_spec(name)  # ValueError listing the registered models
    if args.quick:
        args.patch = min(args.patch, 7)
        args.train_steps = max(args.train_steps // 4, 1)
        args.epoch_tflop, args.infer_tflop = args.epoch_tflop / 4, args.infer_tflop / 4
        args.infer_px, args.sk_samples = max(args.infer_px // 4, 1), max(args.sk_samples // 4, 100)

    load_before = os.getloadavg()
    started = time.perf_counter()
    sgemm_start = sgemm_rate()
    if any(get_spec(n).family == "keras" for n in names):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # as cropflow.training does on CPU
    print(f"inputs: pixel {SERIES} (T, C); patch models {args.patch} x {args.patch} patches of the same series; "
          f"{N_CLASSES} classes; {os.cpu_count()} cores")
    print(f"fit: <= {args.train_steps} batches and <= {args.epoch_tflop} TFLOP per epoch, 2nd epoch timed; "
          f"scikit-learn: {args.sk_samples} samples. predict: <= {args.infer_px} px and <= {args.infer_tflop} TFLOP in "
          f"batches of {args.batch} (pixel) / {args.patch_batch} (patch), best of 2 after a warm-up", flush=True)
    rng = np.random.default_rng(SEED)
    results = []
    for name in names:
        spec = get_spec(name)
        load = os.getloadavg()[0]
        if spec.family == "sklearn":
            r = bench_sklearn(name, args.sk_samples, args.infer_px, rng)
        else:
            r = bench_keras(name, args.patch, args.train_steps, args.epoch_tflop,
                            args.batch if spec.kind == "pixel" else args.patch_batch, args.infer_px,
                            args.infer_tflop, rng)
        results.append(r)
        print(f"  {name}: {r.seconds:.0f} s (1-min load {load:.2f} at its start)", file=sys.stderr, flush=True)
    sgemm_end = sgemm_rate()
    sgemm = max(sgemm_start, sgemm_end)
    load_after = os.getloadavg()

    print(f"sgemm (numpy float32 2048 x 2048 matmul, best of 5; {blas_info()}): {sgemm_start / 1e9:.1f} GFLOP/s "
          f"at the start, {sgemm_end / 1e9:.1f} at the end; ratios use {sgemm / 1e9:.1f}")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.2f}' for v in load_after)}; total {time.perf_counter() - started:.0f} s\n")
    print_table(results, sgemm)


if __name__ == "__main__":
    main()
