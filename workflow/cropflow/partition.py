"""Grid-based train/val/test partition of parcels (SCIENCE.md "Partition").

Parcels are entities: all pixels of a parcel go to one set. Parcels are grouped by the square grid cell
(``partition.cell_size``, 10 km in the study) holding their representative point; whole cells are drawn at
random into train/val/test so that each set receives its target share of labelled pixels (60/20/20) and the
class distributions of the three sets are as similar as possible. A stratified random fraction of each
set's parcels can be flagged for reduced-data experiments (the study's 10%).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cropflow.atomic import atomic_path
from cropflow.grid import tile_id
from cropflow.legend import Legend

log = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "val", "test")

#: weight of the pixel-share deviation against the class-distribution deviation in the score
SIZE_WEIGHT = 1.0

#: column order of results/labels/parcels.gpkg
PARCEL_COLUMNS = ["parcel_id", "class_id", "class_name", "area_ha", "n_pixels", "cell_id", "split", "subsample",
                  "geometry"]


# --------------------------------------------------------------------------------------------------------
# cells


def assign_cells(parcels: gpd.GeoDataFrame, cell_size: float) -> pd.Series:
    """Grid cell of each parcel: the ``cell_size`` cell (lattice anchored at multiples of ``cell_size`` in the
    project CRS) holding the parcel's representative point, which always lies inside the parcel.

    A parcel gets exactly one cell, so it is never split between sets. Cell ids name the cell's lower-left
    corner like tile ids (``E0320000N5330000``).
    """
    if not cell_size > 0:
        raise ValueError(f"partition.cell_size must be > 0, got {cell_size}")
    points = parcels.geometry.representative_point()
    col = np.floor(points.x.to_numpy() / cell_size)
    row = np.floor(points.y.to_numpy() / cell_size)
    return pd.Series([tile_id(c * cell_size, r * cell_size) for c, r in zip(col, row)], index=parcels.index,
                     name="cell_id", dtype="object")


def cell_class_pixels(parcels: pd.DataFrame) -> pd.DataFrame:
    """Labelled pixels per cell (rows, sorted) and class id (columns, sorted) from cell_id, class_id, n_pixels."""
    table = parcels.pivot_table(index="cell_id", columns="class_id", values="n_pixels", aggfunc="sum", fill_value=0)
    return table.sort_index().sort_index(axis=1).astype("int64")


# --------------------------------------------------------------------------------------------------------
# the random cell assignment


def _fraction_vector(fractions: Mapping[str, float]) -> np.ndarray:
    """Target fractions in ``SPLITS`` order, validated (non-negative, summing to 1)."""
    if set(fractions) != set(SPLITS):
        raise ValueError(f"partition.fractions must have exactly the keys {list(SPLITS)}, got {sorted(fractions)}")
    f = np.array([float(fractions[s]) for s in SPLITS])
    if (f < 0).any() or not np.isclose(f.sum(), 1.0, atol=1e-6) or f[0] <= 0:
        raise ValueError(f"partition.fractions must be >= 0 with train > 0 and sum to 1, got {dict(fractions)}")
    return f / f.sum()


def draw_assignment(cell_pixels: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random assignment of cells to splits (index into ``SPLITS`` per cell).

    The cells are shuffled with ``rng``; the first cells of the shuffled order go one to each split with a
    positive target (so no such split is empty), then each further cell goes to the split whose labelled
    pixel count is furthest below its target ``fractions[s] * total pixels`` (greedy fill in shuffled order).
    """
    n = len(cell_pixels)
    order = rng.permutation(n)
    positive = np.flatnonzero(fractions > 0)
    target = fractions * float(cell_pixels.sum())
    assignment = np.empty(n, dtype="int64")
    filled = np.zeros(len(fractions))
    for k, s in enumerate(positive):
        assignment[order[k]] = s
        filled[s] += cell_pixels[order[k]]
    closed = fractions <= 0
    for cell in order[len(positive):]:
        deficit = np.where(closed, -np.inf, target - filled)
        s = int(np.argmax(deficit))
        assignment[cell] = s
        filled[s] += cell_pixels[cell]
    return assignment


def assignment_score(pixels: np.ndarray, assignment: np.ndarray, fractions: np.ndarray,
                     size_weight: float = SIZE_WEIGHT) -> float:
    """Dissimilarity of an assignment (lower is better).

    With ``pixels[k, c]`` the labelled pixels of class c in cell k, ``P[s, c]`` their sum over the cells of
    split s, ``P[s] = sum_c P[s, c]``, ``P[c] = sum_s P[s, c]``, ``P = sum_c P[c]`` and target fractions
    ``f[s]``::

        score = sum_{s: P[s] > 0} sum_c | P[s, c] / P[s] - P[c] / P |  +  size_weight * sum_s | P[s] / P - f[s] |

    The first term is the L1 distance between each split's class distribution and the overall one; the
    second penalises each split's deviation from its target share of labelled pixels.
    """
    per_split = np.zeros((len(fractions), pixels.shape[1]))
    np.add.at(per_split, assignment, pixels)
    split_total = per_split.sum(axis=1)
    total = split_total.sum()
    overall = per_split.sum(axis=0) / total
    used = split_total > 0
    composition = per_split[used] / split_total[used, None]
    return float(np.abs(composition - overall).sum() + size_weight * np.abs(split_total / total - fractions).sum())


def partition_cells(
    cell_class_pixels: pd.DataFrame, fractions: Mapping[str, float], candidates: int, seed: int
) -> dict[str, str]:
    """Assign grid cells to train/val/test: the best of ``candidates`` random assignments.

    ``cell_class_pixels``: labelled pixels per cell (index cell id) and class (columns). With one
    ``numpy.random.default_rng(seed)`` Generator, ``candidates`` assignments are drawn with
    ``draw_assignment`` (shuffle, fill each split to its target pixel share greedily) and scored with
    ``assignment_score``; the lowest score wins (the first drawn on ties). Deterministic for a seed.
    Raises ValueError when there are fewer cells than splits with a positive fraction (3 by default).
    """
    f = _fraction_vector(fractions)
    if int(candidates) < 1:
        raise ValueError(f"partition.candidates must be >= 1, got {candidates}")
    table = cell_class_pixels.sort_index()
    cells = table.index.astype(str).tolist()
    needed = int((f > 0).sum())
    if len(cells) < needed:
        raise ValueError(
            f"only {len(cells)} grid cell(s) hold labelled parcels but {needed} splits need at least one cell "
            f"each: reduce partition.cell_size so the parcels fall into more cells"
        )
    pixels = table.to_numpy(dtype="float64")
    cell_pixels = pixels.sum(axis=1)
    rng = np.random.default_rng(seed)
    best, best_score, first_score = None, np.inf, None
    step = max(1, int(candidates) // 10)
    for k in range(int(candidates)):
        assignment = draw_assignment(cell_pixels, f, rng)
        score = assignment_score(pixels, assignment, f)
        if first_score is None:
            first_score = score
        if score < best_score:
            best, best_score = assignment, score
        if (k + 1) % step == 0 and int(candidates) >= 100:
            log.info("partition: %d/%d candidates drawn, best score %.4f", k + 1, candidates, best_score)
    assert best is not None
    shares = np.bincount(best, weights=cell_pixels, minlength=len(SPLITS)) / cell_pixels.sum()
    log.info("partition of %d cells: best score %.4f of %d candidates (first %.4f); pixel shares %s",
             len(cells), best_score, candidates, first_score,
             ", ".join(f"{s} {v:.3f}" for s, v in zip(SPLITS, shares)))
    return {cell: SPLITS[s] for cell, s in zip(cells, best.tolist())}


# --------------------------------------------------------------------------------------------------------
# subsample and the partition of a parcel table


def stratified_subsample(parcels: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Flag a stratified random ``fraction`` of the parcels of each (split, class_id) stratum.

    Each non-empty stratum of n parcels keeps max(1, round(fraction * n)) parcels drawn without replacement
    with ``numpy.random.default_rng(seed)``, strata and parcels taken in sorted order so the draw is
    deterministic. ``fraction == 1`` keeps every parcel.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"partition.subsample must be in (0, 1], got {fraction}")
    flags = pd.Series(False, index=parcels.index, name="subsample")
    if fraction >= 1:
        flags[:] = True
        return flags
    rng = np.random.default_rng(seed)
    order = parcels.sort_values(["split", "class_id", "parcel_id"], kind="stable")
    for _, stratum in order.groupby(["split", "class_id"], sort=True):
        n = len(stratum)
        k = max(1, int(np.floor(fraction * n + 0.5)))
        chosen = rng.choice(n, size=k, replace=False)
        flags.loc[stratum.index[chosen]] = True
    log.info("subsample %.3g: %d of %d parcels flagged", fraction, int(flags.sum()), len(flags))
    return flags


def partition(
    parcels: gpd.GeoDataFrame,
    dropped: pd.DataFrame,
    cell_size: float,
    fractions: Mapping[str, float],
    candidates: int,
    subsample: float,
    seed: int,
) -> gpd.GeoDataFrame:
    """Add cell_id, split and subsample to the kept parcels (which need ``n_pixels``, see labels.count_pixels).

    ``dropped`` is the table of dropped parcels: a parcel id both kept and dropped is an accounting error.
    """
    if "n_pixels" not in parcels.columns:
        raise ValueError("parcels have no n_pixels column: count them with cropflow.labels.count_pixels first")
    both = set(parcels["parcel_id"].tolist()) & set(dropped["parcel_id"].tolist())
    if both:
        raise ValueError(f"parcel ids both kept and dropped: {sorted(both)[:5]}; the label stage is inconsistent")
    out = parcels.copy()
    out["cell_id"] = assign_cells(out, cell_size)
    splits = partition_cells(cell_class_pixels(out), fractions, candidates, seed)
    out["split"] = out["cell_id"].map(splits)
    out["subsample"] = stratified_subsample(out, subsample, seed)
    log.info("partition: %s parcels per split (%d dropped before)",
             out["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict(), len(dropped))
    return out[[c for c in PARCEL_COLUMNS if c in out.columns]]


# --------------------------------------------------------------------------------------------------------
# report and outputs


def split_table(parcels: pd.DataFrame, legend: Legend) -> pd.DataFrame:
    """Parcels and pixels per (split, class), with totals.

    Columns: split, class_id, class_name, parcels, pixels, share, share_of_class. ``share`` is the share of
    the class in the split's labelled pixels; ``share_of_class`` the share of the class's pixels that went
    to the split. Rows: every split x every legend class (absent classes with zeros), then per split a row
    with class_name "all" (share 1, share_of_class = the split's share of all labelled pixels), then per
    class a row with split "all" (share = the class's overall share), then the grand total.
    """
    splits = [*SPLITS, "all"]
    classes = [*zip(legend.ids, legend.names), (pd.NA, "all")]
    rows = []
    total_pixels = float(parcels["n_pixels"].sum())
    for split in splits:
        in_split = parcels if split == "all" else parcels[parcels["split"] == split]
        split_pixels = float(in_split["n_pixels"].sum())
        for class_id, name in classes:
            sel = in_split if name == "all" else in_split[in_split["class_id"] == class_id]
            class_all = parcels if name == "all" else parcels[parcels["class_id"] == class_id]
            pixels = int(sel["n_pixels"].sum())
            class_pixels = float(class_all["n_pixels"].sum())
            rows.append({
                "split": split, "class_id": class_id, "class_name": name, "parcels": len(sel), "pixels": pixels,
                "share": pixels / split_pixels if split_pixels else 0.0,
                "share_of_class": pixels / class_pixels if class_pixels else 0.0,
            })
    table = pd.DataFrame(rows)
    table["class_id"] = table["class_id"].astype("Int64")
    if total_pixels and not np.isclose(table.loc[(table.split == "all") & (table.class_name == "all"), "pixels"]
                                       .iloc[0], total_pixels):
        raise AssertionError("split table totals do not add up")
    return table


def check_accounting(parcels: pd.DataFrame, dropped: pd.DataFrame, n_input: int) -> None:
    """Every input parcel is kept or dropped, exactly once; raise ValueError otherwise."""
    kept_ids, dropped_ids = parcels["parcel_id"], dropped["parcel_id"]
    problems = []
    if len(parcels) + len(dropped) != n_input:
        problems.append(f"{len(parcels)} kept + {len(dropped)} dropped = {len(parcels) + len(dropped)}, "
                        f"not the {n_input} input parcels")
    if kept_ids.duplicated().any():
        problems.append(f"kept parcel ids repeated: {kept_ids[kept_ids.duplicated()].head(5).tolist()}")
    if dropped_ids.duplicated().any():
        problems.append(f"dropped parcel ids repeated: {dropped_ids[dropped_ids.duplicated()].head(5).tolist()}")
    both = set(kept_ids.tolist()) & set(dropped_ids.tolist())
    if both:
        problems.append(f"parcel ids both kept and dropped: {sorted(both)[:5]}")
    if problems:
        raise ValueError("parcel accounting failed: " + "; ".join(problems)
                         + " (every input parcel must be kept or listed in dropped.csv)")


def split_report(
    parcels: pd.DataFrame,
    dropped: pd.DataFrame,
    n_input: int,
    out_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    legend: Legend,
) -> pd.DataFrame:
    """Write the split report: a CSV (``split_table``), a JSON summary next to it (same stem) and a PNG.

    First checks that kept + dropped == ``n_input`` (``check_accounting``): nothing is lost silently.
    JSON: n_input, kept, dropped, dropped_by_reason, and per split its cells, parcels, pixels, pixel_share
    and subsample_parcels; absent_classes lists legend classes without any labelled pixel.
    PNG: grouped bars of each class's share of labelled pixels per split (and overall).
    Returns the table written to the CSV.
    """
    check_accounting(parcels, dropped, n_input)
    table = split_table(parcels, legend)
    out_csv = Path(out_csv)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")

    total_pixels = float(parcels["n_pixels"].sum())
    summary = {
        "n_input": int(n_input), "kept": int(len(parcels)), "dropped": int(len(dropped)),
        "dropped_by_reason": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()},
        "splits": {},
        "absent_classes": [n for i, n in zip(legend.ids, legend.names)
                           if parcels.loc[parcels["class_id"] == i, "n_pixels"].sum() == 0],
    }
    for split in SPLITS:
        sel = parcels[parcels["split"] == split]
        summary["splits"][split] = {
            "cells": int(sel["cell_id"].nunique()) if "cell_id" in sel else 0,
            "parcels": int(len(sel)), "pixels": int(sel["n_pixels"].sum()),
            "pixel_share": float(sel["n_pixels"].sum() / total_pixels) if total_pixels else 0.0,
            "subsample_parcels": int(sel["subsample"].sum()) if "subsample" in sel else int(len(sel)),
        }
    with atomic_path(out_csv.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")

    _warn_missing_classes(table)
    _plot_shares(table, legend, out_png)
    log.info("split report written to %s (%d kept, %d dropped of %d input parcels)",
             out_csv, len(parcels), len(dropped), n_input)
    return table


def _warn_missing_classes(table: pd.DataFrame) -> None:
    """Log classes without labelled pixels overall, or in one split (they cannot be trained/evaluated there)."""
    classes = table[table["class_name"] != "all"]
    overall = classes[classes["split"] == "all"].set_index("class_name")["pixels"]
    for name, pixels in overall.items():
        if pixels == 0:
            log.warning("class '%s' has no labelled pixel: it cannot be trained or evaluated", name)
            continue
        missing = classes[(classes["class_name"] == name) & (classes["split"] != "all") & (classes["pixels"] == 0)]
        if not missing.empty:
            log.warning("class '%s' has no labelled pixel in split(s) %s: it is not learned (train) or not "
                        "measured (val/test) there; a smaller partition.cell_size spreads it over more cells",
                        name, ", ".join(missing["split"]))


def _plot_shares(table: pd.DataFrame, legend: Legend, out_png: str | os.PathLike) -> None:
    """Grouped bar chart: per class, its share of each split's labelled pixels."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(legend.ids) + 2), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups = [*SPLITS, "all"]
    width = 0.8 / len(groups)
    x = np.arange(len(legend.ids))
    for k, split in enumerate(groups):
        rows = table[(table["split"] == split) & (table["class_name"] != "all")]
        shares = rows.set_index("class_name").reindex(legend.names)["share"].to_numpy()
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, shares, width, label=split)
    ax.set_xticks(x, legend.names, rotation=30, ha="right")
    ax.set_ylabel("share of labelled pixels in the split")
    ax.set_title("Class distribution per split")
    ax.legend(title="split")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120)


def write_parcels(gdf: gpd.GeoDataFrame, path: str | os.PathLike) -> None:
    """Write the partitioned parcels atomically as a GeoPackage (layer "parcels")."""
    with atomic_path(path) as tmp:
        gdf.to_file(tmp, driver="GPKG", layer="parcels")


def write_dropped(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the dropped parcels (parcel_id, reason) atomically as CSV."""
    with atomic_path(path) as tmp:
        df[["parcel_id", "reason"]].sort_values("parcel_id", kind="stable").to_csv(tmp, index=False)
