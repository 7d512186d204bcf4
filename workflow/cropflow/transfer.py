"""Transfer learning (SCIENCE.md, chapter 5): fine-tune a pretrained keras model on a new year or site.

The pretrained bundle's normalisation and class order are kept (the new samples must have the same inputs,
shapes and bands); its first ``frozen_layers`` layers that hold weights are frozen; training continues with a
low learning rate (1e-5 in the study) and early stopping on the new validation split.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cropflow.atomic import atomic_path
from cropflow.models import TrainedModel, load_trained
from cropflow.sampleset import SampleSet
from cropflow.training import HISTORY_COLUMNS, _prepare, compile_model, make_dataset

log = logging.getLogger(__name__)


def freeze(model, n_layers: int) -> list[str]:
    """Freeze the first ``n_layers`` layers that hold weights; returns their names."""
    frozen = []
    for layer in model.layers:
        if len(frozen) >= n_layers:
            break
        if layer.weights:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def _check_compatible(pre: TrainedModel, train: SampleSet) -> None:
    for name, meta in pre.meta["inputs"].items():
        if name not in train.x:
            raise ValueError(f"pretrained model {pre.name} needs input '{name}', the new samples have "
                             f"{sorted(train.x)}")
        bands = list(train.inputs[name].get("bands", []))
        if bands and list(meta.get("bands", [])) != bands:
            raise ValueError(f"input '{name}': pretrained bands {meta.get('bands')} differ from the new samples' "
                             f"{bands}; build the new samples with the same features")


def finetune(bundle: str | os.PathLike, train: SampleSet, val: SampleSet, params: Mapping[str, object],
             seed: int, out_dir: str | os.PathLike) -> Path:
    """Fine-tune the keras bundle on new samples and write the fine-tuned bundle atomically.

    ``params``: learning_rate (1e-5), frozen_layers (2), epochs (20), patience (5), batch_size (from the
    pretrained model)."""
    import keras

    pre = load_trained(bundle)
    if pre.family != "keras":
        raise ValueError(f"{bundle}: transfer learning needs a neural network, {pre.name} is {pre.family}")
    _check_compatible(pre, train)
    p = {**pre.meta["params"], "learning_rate": 1e-5, "frozen_layers": 2, "epochs": 20, "patience": 5, **params}
    keras.utils.set_random_seed(int(seed))
    xtr, ytr = _prepare("train", train, pre.normalisation, pre.class_ids, log, pre.kind)
    xva, yva = _prepare("val", val, pre.normalisation, pre.class_ids, log, pre.kind)
    model = pre.model
    frozen = freeze(model, int(p["frozen_layers"]))
    compile_model(model, {**p, "imbalance": "none"})
    batch = int(p["batch_size"])
    with tempfile.TemporaryDirectory() as tmp:
        fitted = model.fit(make_dataset(xtr, ytr, None, batch, True, int(seed)),
                           validation_data=make_dataset(xva, yva, None, batch, False, int(seed)),
                           epochs=int(p["epochs"]), verbose=0, shuffle=False, callbacks=[
                               keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(p["patience"]),
                                                             restore_best_weights=True),
                               keras.callbacks.ModelCheckpoint(str(Path(tmp) / "best.keras"), monitor="val_loss",
                                                               save_best_only=True)])
    hist = fitted.history
    n = len(hist["loss"])
    history = pd.DataFrame({"epoch": np.arange(1, n + 1), **{k: hist.get(k, [np.nan] * n)
                                                            for k in HISTORY_COLUMNS[1:]}})[HISTORY_COLUMNS]
    best = int(history["val_loss"].idxmin())
    meta = {**pre.meta, "name": f"{pre.name}_finetuned", "pretrained": str(bundle), "frozen": frozen,
            "finetune_params": {k: p[k] for k in ("learning_rate", "frozen_layers", "epochs", "patience")},
            "n_train": int(ytr.size), "n_val": int(yva.size), "best_epoch": int(history["epoch"].iloc[best]),
            "val_loss": float(history["val_loss"].iloc[best]),
            "val_accuracy": float(history["val_accuracy"].iloc[best])}
    tuned = TrainedModel(model, meta, pre.normalisation, history)
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.mkdir()
        tuned.write_into(tmp)
    log.info("fine-tuned %s (frozen %s): val_accuracy %.4f at epoch %d", pre.name, frozen, meta["val_accuracy"],
             meta["best_epoch"])
    return Path(out_dir)
