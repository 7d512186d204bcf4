"""Report figures: per-class temporal profiles of the training samples and a quicklook of the county map.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas, no pyplot state, no display).
"""

from __future__ import annotations

import logging
import math
import os

import matplotlib.dates as mdates
from matplotlib import patheffects
import numpy as np
import rasterio
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from cropflow.atomic import atomic_path
from cropflow.legend import Legend

log = logging.getLogger(__name__)


def _legend(legend: str | os.PathLike | Legend) -> Legend:
    return legend if isinstance(legend, Legend) else Legend.load(str(legend))


def class_profile(
    series: np.ndarray, low: float = 10.0, high: float = 90.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and the ``low``-``high`` percentile band of samples' series (N, T, C), each (T, C), NaN ignored."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(series, axis=0)
        lo, hi = np.nanpercentile(series, [low, high], axis=0)
    return mean, lo, hi


def nice_length(span: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k) of about a fifth of ``span``."""
    target = span / 5.0
    if target <= 0:
        return 0.0
    exp = 10.0 ** math.floor(math.log10(target))
    return max(m * exp for m in (1.0, 2.0, 5.0) if m * exp <= target)


def temporal_profiles(
    train, legend: str | os.PathLike | Legend, out_png: str | os.PathLike, *,
    max_samples: int = 20000, seed: int = 0, max_cols: int = 4,
) -> None:
    """Per class and band, the mean raw value and its 10-90 percentile spread over the time steps.

    ``train`` is a :class:`cropflow.sampleset.SampleSet`; one subplot per input band (at most ``max_cols``
    a row), dates on the x axis. At most ``max_samples`` samples per class (seeded random draw, logged) enter the
    statistics, which bounds time and memory on county-sized sample sets.
    """
    legend = _legend(legend)
    names = [n for n in train.inputs if n in train.x]
    panels = [(name, c, band) for name in names for c, band in enumerate(train.inputs[name]["bands"])]
    n_cols = min(max_cols, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig = Figure(figsize=(3.4 * n_cols, 2.6 * n_rows + 0.8))
    grid_axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    axes = {(name, c): grid_axes[i] for i, (name, c, _) in enumerate(panels)}
    rng = np.random.default_rng(seed)
    y = np.asarray(train.y)
    present = [int(c) for c in train.class_ids if np.any(y == c)]
    colours = {c.id: tuple(v / 255 for v in c.rgba) for c in legend.classes}
    class_names = dict(zip(legend.ids, legend.names))
    handles = []
    for cid in present:
        idx = np.flatnonzero(y == cid)
        if idx.size > max_samples:
            log.info("temporal profiles: class %s has %d samples, %d drawn", class_names.get(cid, cid), idx.size,
                     max_samples)
            idx = np.sort(rng.choice(idx, max_samples, replace=False))
        colour = colours.get(cid, (0.5, 0.5, 0.5, 1.0))
        for r, name in enumerate(names):
            times = np.array(train.inputs[name]["times"], dtype="datetime64[D]")
            mean, lo, hi = class_profile(np.asarray(train.x[name][idx], dtype=np.float32))
            for c, band in enumerate(train.inputs[name]["bands"]):
                ax = axes[name, c]
                ax.fill_between(times, lo[:, c], hi[:, c], color=colour, alpha=0.18, linewidth=0)
                ax.plot(times, mean[:, c], color=colour, linewidth=1.4, marker=".", markersize=3)
        handles.append(Patch(color=colour, label=f"{class_names.get(cid, cid)} (n={int(np.sum(y == cid))})"))
    for ax in grid_axes[len(panels):]:
        ax.axis("off")
    for name, c, band in panels:
        ax = axes[name, c]
        ax.set_title(f"{name}: {band}" if len(names) > 1 else str(band), fontsize=9)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", rotation=45)
        ax.grid(alpha=0.3)
    fig.suptitle("Temporal profiles of the training samples (line: mean; band: 10-90th percentile)", fontsize=10)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (2.6 * n_rows + 0.8), 1, 1 - 0.4 / (2.6 * n_rows + 0.8)))
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def quicklook(
    mosaic_path: str | os.PathLike, legend: str | os.PathLike | Legend, out_png: str | os.PathLike,
    max_size: int = 1200,
) -> None:
    """A PNG of a class map decimated to at most ``max_size`` pixels a side (overviews are read, not the
    full raster), in legend colours, with a legend of the classes present, axes and a scale bar in km of the
    map's CRS."""
    legend = _legend(legend)
    if not os.path.exists(mosaic_path):
        raise FileNotFoundError(f"class map {mosaic_path} does not exist: run the 'mosaic' stage")
    with rasterio.open(mosaic_path) as src:
        scale = max(src.width, src.height) / max_size
        shape = (src.height, src.width) if scale <= 1 else (max(1, round(src.height / scale)),
                                                           max(1, round(src.width / scale)))
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        bounds, crs = src.bounds, src.crs
    lut = np.zeros((256, 4), dtype=np.uint8)
    for cid, rgba in legend.colormap().items():
        lut[cid] = rgba
    values = np.unique(data)
    unknown = [int(v) for v in values if v != legend.nodata and v not in legend.ids]
    if unknown:
        log.warning("quicklook %s: values %s are not in the legend and are drawn transparent", mosaic_path, unknown)
    projected = crs is not None and crs.is_projected
    k = 1000.0 if projected else 1.0
    unit = "km" if projected else "deg"
    extent = (bounds.left / k, bounds.right / k, bounds.bottom / k, bounds.top / k)
    aspect = (extent[1] - extent[0]) / max(extent[3] - extent[2], 1e-9)
    fig = Figure(figsize=(min(12.0, 4.0 + 6.0 * aspect), 7.0))
    ax = fig.subplots()
    ax.imshow(lut[data], extent=extent, interpolation="nearest")
    ax.set_xlabel(f"easting ({unit})")
    ax.set_ylabel(f"northing ({unit})")
    ax.set_title(f"{os.path.basename(mosaic_path)} ({crs.to_string() if crs else 'no CRS'})", fontsize=10)
    ax.ticklabel_format(useOffset=False, style="plain")
    if projected:
        length = nice_length(extent[1] - extent[0])
        x0 = extent[0] + 0.05 * (extent[1] - extent[0])
        y0 = extent[2] + 0.05 * (extent[3] - extent[2])
        halo = [patheffects.withStroke(linewidth=5, foreground="white")]
        ax.plot([x0, x0 + length], [y0, y0], color="black", linewidth=3, solid_capstyle="butt", path_effects=halo)
        ax.text(x0 + length / 2, y0 + 0.015 * (extent[3] - extent[2]), f"{length:g} km", ha="center",
                va="bottom", fontsize=9, path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
    present = [c for c in legend.classes if c.id in values]
    handles = [Patch(facecolor=np.array(c.rgba) / 255, edgecolor="black", linewidth=0.4, label=c.name)
               for c in (present or legend.classes)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="class",
              frameon=True)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def uncertainty_quicklook(path: str | os.PathLike, out_png: str | os.PathLike, max_size: int = 800) -> None:
    """A PNG of an uncertainty mosaic: one panel per band (confidence, margin, entropy) on a 0-1 scale
    (the stored round(254 x) divided by 254), decimated to at most ``max_size`` pixels a side, nodata blank."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"uncertainty map {path} does not exist: run the 'mosaic_uncertainty' stage")
    with rasterio.open(path) as src:
        scale = max(1.0, max(src.width, src.height) / max_size)
        shape = (src.count, max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        data = src.read(out_shape=shape, resampling=Resampling.nearest, masked=True)
        names = [d or f"band {i}" for i, d in enumerate(src.descriptions, start=1)]
        b = src.bounds
    extent = (b.left / 1000.0, b.right / 1000.0, b.bottom / 1000.0, b.top / 1000.0)
    fig = Figure(figsize=(5.0 * len(names), 4.6))
    for ax, band, name in zip(fig.subplots(1, len(names), squeeze=False)[0], data, names):
        image = ax.imshow(band / 254.0, extent=extent, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("easting (km)")
        ax.ticklabel_format(useOffset=False, style="plain")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.axes[0].set_ylabel("northing (km)")
    fig.suptitle(os.path.basename(path), fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
