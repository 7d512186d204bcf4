"""In-season mapping (SCIENCE.md, chapter 3): train and evaluate on growing temporal windows.

For each window end (MM-DD of the season's year), every input keeps the time steps up to that day; the model is
trained on the train split (early stopping on val) and evaluated on the test split, as in the study's monthly
windows May, May-June, ..., May-September. The table has one row per window: end, time steps per input, OA,
kappa, mean F1 and per-class F1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from cropflow.atomic import atomic_path
from cropflow.metrics import evaluate
from cropflow.sampleset import SampleSet
from cropflow.training import fit, model_inputs

log = logging.getLogger(__name__)


def window_steps(times: Sequence[str], end: str) -> np.ndarray:
    """Indices of the ISO dates ``times`` on or before ``end`` (MM-DD, in each date's year)."""
    days = np.array([str(t)[:10] for t in times])
    return np.flatnonzero(np.array([d[5:] <= end for d in days]))


def truncate(samples: SampleSet, end: str) -> SampleSet:
    """The samples with every input (and patch) cut to the time steps on or before ``end``."""
    x, patches, inputs = {}, {}, {}
    for name, meta in samples.inputs.items():
        if name not in samples.x:
            continue
        keep = window_steps(meta["times"], end)
        if keep.size == 0:
            continue
        x[name] = samples.x[name][:, keep]
        if name in samples.patches:
            patches[name] = samples.patches[name][..., keep, :]
        inputs[name] = {**meta, "times": [meta["times"][i] for i in keep]}
    if not x:
        raise ValueError(f"in-season window ending {end}: no input has an observation by then; choose a later end")
    return replace(samples, x=x, patches=patches, inputs=inputs)


def inseason_table(model: str, train: SampleSet, val: SampleSet, test: SampleSet, ends: Sequence[str],
                   params: Mapping[str, object] | None, seed: int) -> pd.DataFrame:
    """Train and test ``model`` on each window; one row per window end."""
    rows = []
    for end in ends:
        tr, va, te = (truncate(s, end) for s in (train, val, test))
        trained = fit(model, tr, va, params, seed, log=log)
        pred = trained.predict(model_inputs(te, trained.kind, model), nodata=-1)
        ok = pred != -1
        m = evaluate(te.y[ok], pred[ok], trained.class_ids, trained.class_names)
        row = {"end": end, **{f"steps_{k}": v.shape[1] for k, v in tr.x.items()}, "oa": m["oa"],
               "kappa": m["kappa"], "mean_f1": m["mean_f1"]}
        row.update({f"f1_{name}": v["f1"] for name, v in m["per_class"].items()})
        rows.append(row)
        log.info("in-season %s up to %s: OA %.4f, kappa %.4f", model, end, m["oa"], m["kappa"])
    return pd.DataFrame(rows)


def write_inseason(table: pd.DataFrame, out_csv: str | os.PathLike, out_png: str | os.PathLike, model: str) -> None:
    """The table as CSV and a figure (OA and per-class F1 against the window end), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(table["end"], table["oa"], "k-o", label="OA")
    for col in [c for c in table.columns if c.startswith("f1_")]:
        ax.plot(table["end"], table[col], "-", alpha=0.7, label=col[3:])
    ax.set_ylim(0, 1)
    ax.set_xlabel("window end")
    ax.set_title(f"In-season mapping ({model})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
