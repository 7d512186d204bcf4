"""Model registry and trained-model bundles.

Every model lives in its own module of this package with one builder signature::

    build(inputs: Mapping[str, tuple[int, ...]], n_classes: int, params: Mapping[str, object], seed: int)

``inputs`` maps input name -> per-sample shape: (T, C) for pixel models, (h, w, T, C) for patch models (module
attribute ``KIND``; the label is the patch's centre pixel); the builder returns an unfitted scikit-learn estimator
(family "sklearn") or an uncompiled keras.Model (family "keras") whose softmax output has ``n_classes``
columns. :data:`MODELS` is the registry; :func:`build` resolves a name and its parameters.

A trained model is stored as a bundle folder (written by ``cropflow.training.train``)::

    model.keras | model.joblib   the fitted model
    normalisation.json           per-input min-max ranges fitted on the training split
    meta.json                    name, family, class_ids, class_names, inputs, params, seed, best_epoch, ...
    history.csv                  per-epoch loss / accuracy (one row for the random forest)

:func:`load_trained` reads it back as a :class:`TrainedModel`, which predicts from raw inputs.
Keras (and so TensorFlow) is imported only when a keras model is built or loaded.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cropflow import normalisation as norm_mod
from cropflow.atomic import atomic_path
from cropflow.models import rf

log = logging.getLogger(__name__)

Family = Literal["sklearn", "keras"]
Kind = Literal["pixel", "patch"]
MODEL_FILES: dict[str, str] = {"sklearn": "model.joblib", "keras": "model.keras"}

#: registry: model name -> module of this package (imported on first use, so listing the models does not load
#: TensorFlow). Pixel models take (T, C) time series per input, patch models (h, w, T, C) patches.
MODEL_MODULES: dict[str, str] = {
    # pixel models
    "rf": "rf",
    "tempcnn": "tempcnn",
    "conv1d": "conv1d",
    "conv1d_rf": "conv1d_rf",
    "tcn": "tcn",
    "transformer": "transformer",
    "atlstm": "atlstm",
    "conv1d_lstm": "conv1d_lstm",
    # patch models
    "cnn3d": "cnn3d",
    "cnn3d2d": "cnn3d2d",
    "convstar": "convstar",
    "convstar3d": "convstar3d",
    "unet3d": "unet3d",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, family, input kind, builder and default parameters (model + training)."""

    name: str
    family: Family
    build: Callable[..., object]
    defaults: Mapping[str, object] = field(default_factory=dict)
    kind: Kind = "pixel"
    jit_predict: bool = False  # predictions XLA-compiled (module attribute JIT_PREDICT)


def _spec(name: str) -> ModelSpec:
    module = importlib.import_module(f"cropflow.models.{MODEL_MODULES[name]}")
    return ModelSpec(name, module.FAMILY, module.build, dict(module.DEFAULTS), getattr(module, "KIND", "pixel"),
                     bool(getattr(module, "JIT_PREDICT", False)))


class _Registry(Mapping[str, ModelSpec]):
    """Read-only mapping name -> :class:`ModelSpec`, loading each model module when first asked for."""

    def __init__(self) -> None:
        self._cache: dict[str, ModelSpec] = {}

    def __getitem__(self, name: str) -> ModelSpec:
        if name not in MODEL_MODULES:
            raise KeyError(name)
        if name not in self._cache:
            self._cache[name] = _spec(name)
        return self._cache[name]

    def __iter__(self):
        return iter(MODEL_MODULES)

    def __len__(self) -> int:
        return len(MODEL_MODULES)


MODELS: Mapping[str, ModelSpec] = _Registry()


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; ValueError listing the registered models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; registered models: {', '.join(sorted(MODELS))} "
                         "(fix models.enabled in the config)") from None


def resolve_params(name: str, params: Mapping[str, object] | None) -> dict[str, object]:
    """The model's defaults overridden by ``params``; ValueError for keys the model does not know."""
    spec = get_spec(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(f"model '{name}': unknown parameters {unknown} (known: {sorted(spec.defaults)}); "
                         f"fix models.{name} in the config")
    return {**spec.defaults, **params}


def build(name: str, inputs: Mapping[str, tuple[int, ...]], n_classes: int,
          params: Mapping[str, object] | None = None, seed: int = 0):
    """Build the registered model ``name`` for ``inputs`` {name: (T, C)} and ``n_classes`` outputs."""
    spec = get_spec(name)
    if not inputs:
        raise ValueError(f"model '{name}': no inputs given")
    return spec.build({k: tuple(int(s) for s in v) for k, v in inputs.items()}, int(n_classes),
                      resolve_params(name, params), int(seed))


def bundle_input_shapes(meta: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """Per-sample shape, (T, C) or (h, w, T, C), of every input of a bundle's metadata: its "shapes", or
    (times, bands) of its "inputs" for bundles written without them."""
    shapes = meta.get("shapes")
    if shapes:
        return {k: tuple(int(s) for s in v) for k, v in shapes.items()}  # type: ignore[union-attr]
    return {k: (len(v["times"]), len(v["bands"])) for k, v in meta["inputs"].items()}  # type: ignore[union-attr]


def inference_function(model, shapes: Mapping[str, tuple[int, ...]], jit: bool,
                       normalisation: Mapping[str, norm_mod.MinMax] | None = None
                       ) -> Callable[[Mapping[str, np.ndarray]], object]:
    """The inference forward pass of a keras ``model`` with inputs {name: per-sample shape}: a callable of a
    batch {name: float32 array} returning the (n, K) probabilities as a tensor.

    ``normalisation``: the pass takes raw, finite inputs and min-max normalises them itself, with the constants
    of :func:`cropflow.normalisation.minmax_affine` and the same float32 operations as
    :func:`cropflow.normalisation.scale_minmax` (so with equal values), on all the cores TensorFlow uses
    instead of one numpy thread.

    Batch normalisations are first folded into the convolutions before them
    (:func:`cropflow.models.folding.fold_batch_norms`: 10-13 % faster for TempCNN and Conv1D on 2 cores).
    ``jit``: the pass is one XLA-compiled tf.function. Otherwise the traced pass is frozen: its weights become
    constants of the graph (TensorFlow's ``convert_variables_to_constants_v2``), so TensorFlow's graph
    optimiser folds them and oneDNN prepares each convolution's weights once instead of at every call; this
    made TempCNN, Conv1D and the Transformer 2-14 % faster on 2 cores, with identical outputs. The weights are
    those of the first call: the model is not trained afterwards (a fine-tuned model is a new TrainedModel).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from cropflow.models.folding import fold_batch_norms

    model = fold_batch_norms(model)
    signature = {name: tf.TensorSpec((None, *shape), tf.float32) for name, shape in shapes.items()}
    affine = {name: norm_mod.minmax_affine(normalisation[name].min, normalisation[name].max)
              for name in shapes} if normalisation is not None else {}

    def call(inputs):
        if affine:  # (x - offset) * scale, clipped: scale_minmax's operations, in its order
            lo, hi = norm_mod.CLIP_RANGE
            inputs = {name: tf.clip_by_value(tf.multiply(tf.subtract(x, affine[name][0]), affine[name][1]), lo, hi)
                      for name, x in inputs.items()}
        return model(inputs, training=False)

    traced = tf.function(call, input_signature=[signature], jit_compile=jit)
    if jit:
        return traced
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
    order = sorted(shapes)  # the frozen function takes the dict's tensors in sorted key order

    def forward(batch: Mapping[str, np.ndarray]):
        out = frozen(*(tf.constant(batch[name]) for name in order))
        return out[0] if isinstance(out, (list, tuple)) else out

    return forward


class TrainedModel:
    """A fitted model with the normalisation and class order it was trained with.

    ``predict_proba`` takes raw inputs {name: (N, T, C)}, applies the bundle's normalisation and returns
    (N, K) float32 probabilities whose columns follow ``class_ids`` (legend ids). Missing values (NaN/inf):
    a sample without any finite value has no observation and gets NaN probabilities (``predict`` gives it
    ``nodata``); gaps in an otherwise observed sample are set to 0 after normalisation (the training
    minimum, as during training) and their count is logged as a warning.
    """

    def __init__(self, model, meta: Mapping[str, object], normalisation: Mapping[str, norm_mod.MinMax],
                 history: pd.DataFrame | None = None) -> None:
        self.model = model
        # the keras forward passes, of normalised (False) and of raw finite (True) inputs, each built when first used
        self._forwards: dict[bool, Callable[[Mapping[str, np.ndarray]], object]] = {}
        self.meta = dict(meta)
        self.normalisation = dict(normalisation)
        self.history = history
        for key in ("name", "family", "class_ids", "inputs"):
            if key not in self.meta:
                raise ValueError(f"model metadata lacks '{key}'")
        if self.meta["family"] not in MODEL_FILES:
            raise ValueError(f"model metadata: unknown family {self.meta['family']!r}")
        missing = sorted(set(self.meta["inputs"]) - set(self.normalisation))
        if missing:
            raise ValueError(f"model '{self.name}': no normalisation for inputs {missing}")

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def family(self) -> Family:
        return self.meta["family"]  # type: ignore[return-value]

    @property
    def class_ids(self) -> list[int]:
        return [int(c) for c in self.meta["class_ids"]]

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        return [str(n) for n in names] if names else [str(c) for c in self.class_ids]

    @property
    def kind(self) -> str:
        """"pixel" (inputs (N, T, C)) or "patch" (inputs (N, h, w, T, C))."""
        return str(self.meta.get("kind", "pixel"))

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape, (T, C) or (h, w, T, C), of every input the model was trained on."""
        return bundle_input_shapes(self.meta)

    # ------------------------------------------------------------------------------------------- prediction

    def _check(self, x: Mapping[str, np.ndarray]) -> int:
        shapes = self.input_shapes
        missing = sorted(set(shapes) - set(x))
        if missing:
            raise ValueError(f"model '{self.name}' needs inputs {sorted(shapes)}; missing {missing}")
        n = None
        for name, shape in shapes.items():
            a = x[name]
            if tuple(a.shape[1:]) != shape:
                raise ValueError(f"model '{self.name}': input '{name}' must be (N, {', '.join(map(str, shape))}) "
                                 f"({'patch, ' if len(shape) == 4 else ''}time steps, bands of training), "
                                 f"got {a.shape}")
            if n is not None and a.shape[0] != n:
                raise ValueError(f"model '{self.name}': inputs have different sample counts")
            n = a.shape[0]
        return int(n or 0)

    def predict_proba_normalised(self, xn: Mapping[str, np.ndarray], batch_size: int = 4096, *,
                                 raw: bool = False) -> np.ndarray:
        """(N, K) float32 probabilities of already normalised, finite inputs (no checks, no masking).

        ``raw``: the finite inputs are not normalised yet; a keras model's forward pass normalises them.
        """
        k = len(self.class_ids)
        if self.family == "keras":
            n = next(iter(xn.values())).shape[0] if xn else 0
            parts = [self._keras_forward({name: a[start:start + batch_size] for name, a in xn.items()}, batch_size,
                                         raw) for start in range(0, n, batch_size)]
            return np.concatenate(parts).reshape(-1, k) if parts else np.zeros((0, k), np.float32)
        if raw:
            xn = {name: norm_mod.scale_minmax(np.asarray(xn[name]), self.normalisation[name].min,
                                              self.normalisation[name].max) for name in self.input_shapes}
        p = self.model.predict_proba(rf.flatten_inputs(xn))
        out = np.zeros((p.shape[0], k), dtype=np.float32)
        out[:, np.asarray(self.model.classes_, dtype=int)] = p  # classes absent from training stay at 0
        return out

    def _keras_forward(self, xn: Mapping[str, np.ndarray], batch_size: int, raw: bool = False) -> np.ndarray:
        """(n, K) float32 probabilities of one batch of at most ``batch_size`` through the keras model.

        The forward pass is traced once (:func:`inference_function`) with its batch axis left open, so every
        batch, the last short one included, reuses one graph. keras' ``model.predict`` would instead set up a
        dataset, an iterator and callbacks on every call, which halved the throughput of the pixel models at
        4096-pixel batches on 2 cores (bench/inference.py). Models whose module sets ``JIT_PREDICT`` are
        compiled with XLA; a short batch is then padded to ``batch_size``, so that one shape, and one
        compilation, serves every call.
        """
        base = self.name.removesuffix("_finetuned")
        jit = base in MODEL_MODULES and get_spec(base).jit_predict
        if raw not in self._forwards:
            self._forwards[raw] = inference_function(self.model, self.input_shapes, jit,
                                                     self.normalisation if raw else None)
        batch = {name: np.asarray(xn[name], dtype=np.float32) for name in self.input_shapes}
        n = next(iter(batch.values())).shape[0]
        if jit and n < batch_size:
            batch = {name: np.concatenate([a, np.zeros((batch_size - n, *a.shape[1:]), np.float32)])
                     for name, a in batch.items()}
        return np.asarray(self._forwards[raw](batch), dtype=np.float32)[:n]

    def predict_proba(self, x: Mapping[str, np.ndarray], batch_size: int = 4096, *,
                      warn_missing: bool = True, finite: bool = False) -> np.ndarray:
        """(N, K) float32 class probabilities (columns = ``class_ids``) of raw inputs {name: (N, T, C)}.

        Inputs not used by the model are ignored. Rows of samples without any finite value are NaN. The count of
        samples with gaps is a warning, or a debug line with ``warn_missing=False`` (callers that sum it up).
        ``finite``: the caller has checked that every value is finite (a tile job's valid pixel series), so the
        missing-value bookkeeping is skipped.
        """
        n = self._check(x)
        if finite:
            return self.predict_proba_normalised({name: x[name] for name in self.input_shapes}, batch_size, raw=True)
        k = len(self.class_ids)
        used = {name: np.asarray(x[name]) for name in self.input_shapes}
        xn, miss = norm_mod.apply_inputs(used, self.normalisation)
        any_miss = np.zeros(n, dtype=bool)
        all_miss = np.ones(n, dtype=bool)
        for m in miss.values():
            flat = m.reshape(n, -1)
            any_miss |= flat.any(axis=1)
            all_miss &= flat.all(axis=1)
        partial = int((any_miss & ~all_miss).sum())
        if partial:
            log.log(logging.WARNING if warn_missing else logging.DEBUG,
                    "model '%s': %d of %d samples have missing values, set to 0 after normalisation",
                    self.name, partial, n)
        proba = np.full((n, k), np.nan, dtype=np.float32)
        valid = ~all_miss
        if n and valid.all():
            proba[:] = self.predict_proba_normalised(xn, batch_size)
        elif valid.any():
            proba[valid] = self.predict_proba_normalised({name: a[valid] for name, a in xn.items()}, batch_size)
        return proba

    def predict(self, x: Mapping[str, np.ndarray], nodata: int = 0, batch_size: int = 4096) -> np.ndarray:
        """Legend class ids (N,) of the most probable class; ``nodata`` for samples without observations."""
        proba = self.predict_proba(x, batch_size)
        ids = np.asarray(self.class_ids)
        valid = ~np.isnan(proba).any(axis=1)
        out = np.full(proba.shape[0], nodata, dtype=ids.dtype)
        out[valid] = ids[np.argmax(proba[valid], axis=1)]
        return out

    # ------------------------------------------------------------------------------------------- storage

    def write_into(self, folder: str | os.PathLike) -> None:
        """Write the bundle files into an existing folder (no atomicity; see :meth:`save`)."""
        folder = Path(folder)
        model_path = folder / MODEL_FILES[self.family]
        if self.family == "keras":
            self.model.save(model_path)
        else:
            import joblib

            joblib.dump(self.model, model_path)
        (folder / "normalisation.json").write_text(json.dumps(norm_mod.to_json(self.normalisation), indent=2) + "\n")
        (folder / "meta.json").write_text(json.dumps(_jsonable(self.meta), indent=2) + "\n")
        if self.history is not None:
            self.history.to_csv(folder / "history.csv", index=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle folder atomically to ``path`` (replacing an older bundle)."""
        with atomic_path(path, directory=True) as tmp:
            tmp.mkdir()
            self.write_into(tmp)
        return Path(path)


def _jsonable(obj):
    """Plain JSON types (numpy scalars/arrays to Python, tuples to lists, NaN to null)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def load_trained(path: str | os.PathLike) -> TrainedModel:
    """Read a model bundle folder written by ``cropflow.training.train``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model bundle {path} not found: run the train stage for this model")
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"model bundle {path} has no meta.json: retrain the model")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); retrain the model") from err
    family = meta.get("family")
    if family not in MODEL_FILES:
        raise ValueError(f"{meta_path}: unknown model family {family!r} (known: {sorted(MODEL_FILES)})")
    model_path = path / MODEL_FILES[family]
    if not model_path.is_file():
        raise FileNotFoundError(f"model bundle {path} has no {model_path.name}: retrain the model")
    if family == "keras":
        import keras  # deferred: loads TensorFlow

        base = str(meta.get("name", "")).removesuffix("_finetuned")
        if base in MODEL_MODULES:
            get_spec(base)  # imports the model's module, which registers its custom layers for deserialisation
        model = keras.saving.load_model(model_path)
    else:
        import joblib

        model = joblib.load(model_path)
    normalisation = norm_mod.load_normalisation(path / "normalisation.json")
    history_path = path / "history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() else None
    try:
        return TrainedModel(model, meta, normalisation, history)
    except ValueError as err:
        raise ValueError(f"model bundle {path}: {err}") from err


__all__ = ["MODELS", "ModelSpec", "TrainedModel", "build", "get_spec", "load_trained", "resolve_params"]
