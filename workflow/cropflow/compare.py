"""The model comparison table (every configured model on the same test split) and its figure."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cropflow.atomic import atomic_path


def comparison_table(metrics_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per metrics JSON: model, kind, OA, kappa, mIoU, mean F1, per-class F1 (``f1_<class>``),
    training time (s) and inference throughput (samples/s on the test split), sorted by OA."""
    rows = []
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        row = {"model": m.get("model", Path(path).stem), "kind": m.get("kind", "pixel"), "oa": m["oa"],
               "kappa": m["kappa"], "miou": m["miou"], "mean_f1": m["mean_f1"]}
        row.update({f"f1_{name}": v["f1"] for name, v in m.get("per_class", {}).items()})
        row.update(train_seconds=m.get("train_seconds"), inference_px_per_s=m.get("inference_px_per_s"),
                   n_test=m.get("n"))
        rows.append(row)
    if not rows:
        raise ValueError("no metrics to compare: enable at least one model")
    return pd.DataFrame(rows).sort_values("oa", ascending=False, kind="stable").reset_index(drop=True)


def write_comparison(table: pd.DataFrame, out_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """The table as CSV and a figure (OA, kappa, mean F1 per model), both written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(table) + 2), 3.6))
    width = 0.27
    xs = range(len(table))
    for i, (col, label) in enumerate((("oa", "OA"), ("kappa", "kappa"), ("mean_f1", "mean F1"))):
        ax.bar([x + (i - 1) * width for x in xs], table[col], width, label=label)
    ax.set_xticks(list(xs), table["model"], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test split")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Models on the same test split")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
