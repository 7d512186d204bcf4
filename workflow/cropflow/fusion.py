"""Ensembles and decision fusion (SCIENCE.md, Ensemble: "Transformer-AtLSTM-RF").

The ensemble's probabilities are the mean of its members' softmax outputs (members trained separately on the
same splits). Decision fusion with a fallback model (Eq. 5-5):

    P*(x) = P_ensemble(x)  where max_k P_ensemble(x)_k >= alpha,   else P_fallback(x)

alpha is grid-searched on the validation split (highest overall accuracy; ties go to the smallest alpha) and
recorded with the test metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from cropflow.metrics import evaluate, plot_confusion, write_metrics
from cropflow.models import TrainedModel, load_trained
from cropflow.sampleset import SampleSet
from cropflow.training import model_inputs

log = logging.getLogger(__name__)


def fuse(p_ensemble: np.ndarray, p_fallback: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. 5-5: the ensemble's row where its top probability reaches ``alpha``, the fallback's row elsewhere."""
    confident = np.nanmax(p_ensemble, axis=1) >= alpha
    return np.where(confident[:, None], p_ensemble, p_fallback)


def search_alpha(p_ensemble: np.ndarray, p_fallback: np.ndarray, y_index: np.ndarray, alphas: Sequence[float]
                 ) -> tuple[float, list[dict]]:
    """(best alpha, [{alpha, oa, share_ensemble}]) over ``alphas`` on labelled samples (output indices)."""
    rows = []
    for a in alphas:
        fused = fuse(p_ensemble, p_fallback, float(a))
        rows.append({"alpha": round(float(a), 6), "oa": float(np.mean(fused.argmax(axis=1) == y_index)),
                     "share_ensemble": float(np.mean(np.nanmax(p_ensemble, axis=1) >= a))})
    best = max(rows, key=lambda r: (r["oa"], -r["alpha"]))
    return best["alpha"], rows


def ensemble_proba(members: Sequence[TrainedModel], split: SampleSet) -> np.ndarray:
    """Mean class probabilities of the members on a split (same class order required)."""
    order = members[0].class_ids
    probs = []
    for m in members:
        if m.class_ids != order:
            raise ValueError(f"ensemble members disagree on the classes: {members[0].name} {order}, "
                             f"{m.name} {m.class_ids}; train them on the same samples")
        probs.append(m.predict_proba(model_inputs(split, m.kind, m.name)))
    return np.mean(probs, axis=0)


def _index(split: SampleSet, class_ids: Sequence[int]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(class_ids)}
    return np.array([lookup.get(int(c), -1) for c in split.y])


def fusion_report(member_dirs: Sequence[str | os.PathLike], fallback_dir: str | os.PathLike, val: SampleSet,
                  test: SampleSet, alphas: Sequence[float], out_json: str | os.PathLike,
                  out_png: str | os.PathLike) -> dict:
    """Search alpha on ``val``, apply the fusion to ``test`` and write its metrics (+ alpha, grid, the ensemble's
    and the fallback's own OA) and confusion plot."""
    members = [load_trained(d) for d in member_dirs]
    fallback = load_trained(fallback_dir)
    if fallback.class_ids != members[0].class_ids:
        raise ValueError(f"fallback {fallback.name} classes {fallback.class_ids} differ from the ensemble's "
                         f"{members[0].class_ids}")
    ids = members[0].class_ids
    results: dict[str, Mapping] = {}
    for name, split in (("val", val), ("test", test)):
        pe, pf = ensemble_proba(members, split), fallback.predict_proba(model_inputs(split, fallback.kind))
        ok = np.isfinite(pe).all(axis=1) & np.isfinite(pf).all(axis=1) & (_index(split, ids) >= 0)
        results[name] = {"pe": pe[ok], "pf": pf[ok], "y": _index(split, ids)[ok]}
    alpha, grid = search_alpha(results["val"]["pe"], results["val"]["pf"], results["val"]["y"], alphas)
    t = results["test"]
    fused = fuse(t["pe"], t["pf"], alpha).argmax(axis=1)
    metrics = evaluate(np.asarray(ids)[t["y"]], np.asarray(ids)[fused], ids, members[0].class_names)
    names = "-".join(m.name for m in members)
    metrics.update(model=f"{names}+{fallback.name}", alpha=alpha, alpha_grid=grid,
                   members=[m.name for m in members], fallback=fallback.name,
                   oa_ensemble=float(np.mean(t["pe"].argmax(axis=1) == t["y"])),
                   oa_fallback=float(np.mean(t["pf"].argmax(axis=1) == t["y"])),
                   share_ensemble=float(np.mean(t["pe"].max(axis=1) >= alpha)))
    write_metrics(metrics, out_json)
    plot_confusion(metrics, out_png, title=f"{names} + {fallback.name} (alpha {alpha:.2f}): confusion matrix")
    log.info("fusion %s + %s: alpha %.2f (validation), test OA %.4f (ensemble %.4f, %s %.4f)", names,
             fallback.name, alpha, metrics["oa"], metrics["oa_ensemble"], fallback.name, metrics["oa_fallback"])
    return metrics


def alpha_grid(start: float, stop: float, step: float) -> list[float]:
    """Inclusive grid start, start + step, ..., stop."""
    n = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(max(n, 1))]


__all__ = ["alpha_grid", "ensemble_proba", "fuse", "fusion_report", "search_alpha"]
