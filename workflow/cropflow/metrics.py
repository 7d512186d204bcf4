"""Accuracy assessment of a classification (SCIENCE.md, Metrics).

- overall accuracy OA = sum of the confusion diagonal / N;
- Cohen's kappa (thesis Eq. 4-11, 4-12) = (p_o - p_e) / (1 - p_e);
- per class precision TP/(TP+FP), recall TP/(TP+FN), F1 = 2PR/(P+R) (Eq. 4-13);
- per class IoU = TP / (TP + FP + FN); mIoU and mean F1 average the classes present in the reference;
- the confusion matrix over every legend class (rows = reference, columns = prediction), in counts and
  normalised by row (each row divided by the class's reference count).

Undefined ratios: a class that occurs in neither the reference nor the prediction has NaN metrics (``null``
in JSON); otherwise a 0/0 ratio is 0 (scikit-learn's ``zero_division=0``). A row without reference samples
is NaN in the row-normalised matrix.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from cropflow.atomic import atomic_path
from cropflow.sampleset import SampleSet

log = logging.getLogger(__name__)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Intersection over union TP / (TP + FP + FN) per class of a confusion matrix (rows = reference); NaN
    for a class with TP + FP + FN = 0 (absent from reference and prediction)."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
    return np.divide(tp, denom, out=np.full_like(tp, np.nan), where=denom > 0)


def row_normalise(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the class's reference count); NaN rows for classes without reference."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)


def evaluate(y_true_ids: np.ndarray, y_pred_ids: np.ndarray, class_ids: Sequence[int],
             class_names: Sequence[str]) -> dict:
    """Accuracy metrics of predicted against reference legend ids over the classes ``class_ids``.

    Returns {n, class_ids, class_names, oa, kappa, miou, mean_f1, per_class {name: {precision, recall, f1,
    iou, support}}, confusion (counts, rows = reference, columns = prediction, in ``class_ids`` order),
    confusion_norm (row-normalised)}. ValueError when ids outside ``class_ids`` occur or the inputs are empty.
    """
    y_true = np.asarray(y_true_ids).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred_ids).astype(np.int64).ravel()
    labels = [int(c) for c in class_ids]
    if len(class_names) != len(labels):
        raise ValueError(f"evaluate: {len(class_names)} class names for {len(labels)} class ids")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"evaluate: {y_true.size} reference labels but {y_pred.size} predictions")
    if y_true.size == 0:
        raise ValueError("evaluate: no samples to evaluate")
    for what, y in (("reference", y_true), ("predicted", y_pred)):
        unknown = np.setdiff1d(np.unique(y), labels)
        if unknown.size:
            raise ValueError(f"evaluate: {what} class ids {unknown.tolist()} are not in {labels}")

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0.0)
    iou = iou_per_class(cm)
    occurs = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    precision, recall, f1 = (np.where(occurs, v, np.nan) for v in (precision, recall, f1))
    present = support > 0
    if len(np.unique(np.concatenate([y_true, y_pred]))) > 1:
        kappa = float(cohen_kappa_score(y_true, y_pred, labels=labels))
    else:  # p_e = 1: kappa is 0/0
        kappa = float("nan")
    return {
        "n": int(y_true.size),
        "class_ids": labels,
        "class_names": [str(n) for n in class_names],
        "oa": float(accuracy_score(y_true, y_pred)),
        "kappa": kappa,
        "miou": float(np.mean(iou[present])),
        "mean_f1": float(np.mean(f1[present])),
        "per_class": {
            str(name): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "iou": float(iou[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion": cm.astype(int).tolist(),
        "confusion_norm": row_normalise(cm).tolist(),
    }


def _json_safe(obj):
    """NaN/inf floats to None (JSON null), recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_metrics(metrics: Mapping, out_json: str | os.PathLike) -> Path:
    """Write a metrics dict as JSON atomically (NaN written as null)."""
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
    return Path(out_json)


def plot_confusion(metrics: Mapping, out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Heatmap of the row-normalised confusion matrix with class names and cell values, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.array([[np.nan if v is None else v for v in row] for row in metrics["confusion_norm"]], dtype=float)
    names = list(metrics["class_names"])
    k = len(names)
    size = max(4.0, 0.75 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(cm), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of reference class")
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(k):
        for j in range(k):
            v = cm[i, j]
            text = "–" if np.isnan(v) else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(v) and v > 0.5 else "black")
    oa, kappa = metrics.get("oa"), metrics.get("kappa")
    head = title or "confusion matrix (row-normalised)"
    if oa is not None:
        head += f"\nOA {oa:.3f}" + ("" if kappa is None or not np.isfinite(kappa) else f", kappa {kappa:.3f}")
    ax.set_title(head)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return Path(out_png)


def evaluate_model(bundle_dir: str | os.PathLike, test: SampleSet, out_json: str | os.PathLike,
                   out_png: str | os.PathLike) -> dict:
    """Predict the test samples with a model bundle and write the metrics JSON and the confusion plot.

    Samples without any observation get no prediction; they are left out of the metrics, counted in
    ``n_unpredicted`` and logged. Returns the metrics dict.
    """
    from cropflow.models import load_trained

    model = load_trained(bundle_dir)
    if len(test) == 0:
        raise ValueError(f"test split is empty: nothing to evaluate model {bundle_dir}")
    nodata = -1
    from cropflow.training import model_inputs

    x = model_inputs(test, model.kind, model.name)
    started = time.perf_counter()
    pred = model.predict(x, nodata=nodata)
    seconds = time.perf_counter() - started
    ok = pred != nodata
    if not ok.all():
        log.warning("model %s: %d of %d test samples have no observation and are left out of the metrics",
                    bundle_dir, int((~ok).sum()), len(test))
    try:
        metrics = evaluate(test.y[ok], pred[ok], model.class_ids, model.class_names)
    except ValueError as err:
        raise ValueError(f"evaluating model {bundle_dir}: {err}; were the test samples built with the same "
                         "legend as the training samples?") from err
    metrics["n_unpredicted"] = int((~ok).sum())
    metrics["model"] = model.name
    metrics["kind"] = model.kind
    metrics["train_seconds"] = model.meta.get("train_seconds")
    metrics["inference_px_per_s"] = round(len(test) / seconds, 1) if seconds > 0 else None
    write_metrics(metrics, out_json)
    plot_confusion(metrics, out_png, title=f"{model.name}: confusion matrix (row-normalised)")
    log.info("model %s: OA %.4f, kappa %.4f, mean F1 %.4f, mIoU %.4f on %d test samples", model.name,
             metrics["oa"], metrics["kappa"], metrics["mean_f1"], metrics["miou"], metrics["n"])
    return metrics
