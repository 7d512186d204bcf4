"""Cloud masks of Sentinel-2 acquisitions: s2cloudless on Level-1C TOA bands, and the rule that combines a mask
with Sen2Cor's scene classification (SCL).

s2cloudless (Sentinel Hub's LightGBM pixel classifier; its model ships in the wheel, so it runs offline) takes
the TOA reflectance of B01 B02 B04 B05 B08 B8A B09 B10 B11 B12. ``s2cloudless_mask`` runs it on a grid
co-aligned with the project grid (``s2.clouds.s2cloudless.resolution``, 60 m by default) over the AOI's
bounding box, in bands of rows with a halo (bounded memory, the same mask as in one piece), and writes a
two-band raster (probability in percent, cloud 0/1; 255 = no data). The ingest reads it back with
``combine_masks``. The package is imported only when a mask is computed.

Combination rule (S = SCL class, C = s2cloudless cloud after averaging and dilation):

==============  ======================================  ==========================================
method          invalid (NaN in the product raster)     counted as cloud (AOI cloud fraction)
==============  ======================================  ==========================================
``scl``         S in invalid_scl                        S in cloud_scl
``s2cloudless`` C = 1 or S in scl_classes               C = 1 or S in (cloud_scl and scl_classes)
``both``        S in invalid_scl or C = 1               S in cloud_scl or C = 1
==============  ======================================  ==========================================

Where s2cloudless has no data (255) but SCL has, the pixel follows the ``scl`` row.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid, snap_bounds
from cropflow.raster import RasterWriter, read_on_grid, row_windows
from cropflow.s2 import L1C_RESOLUTION, L1CProduct, l1c_toa_reflectance, resampling_for, validate_l1c

log = logging.getLogger(__name__)

#: the bands s2cloudless's model takes, in its order
S2CLOUDLESS_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
#: cloud-mask methods of config s2.clouds.method
METHODS = ("scl", "s2cloudless", "both")
#: value of the mask raster where s2cloudless has no data
NO_DATA = 255
S2CLOUDLESS_MISSING = ("s2.clouds.method: s2cloudless needs the s2cloudless package (pip install "
                       "'s2cloudless==1.7.3', or `make setup`; on Debian also libgomp1); or set s2.clouds.method: scl")


def disk_radius_px(metres: float, resolution: float) -> int:
    """Radius in detector pixels of a disk of ``metres`` (0 = the step is off)."""
    if metres < 0:
        raise ValueError(f"radius {metres} m: give 0 or more metres")
    return int(round(metres / resolution))


def detector_grid(grid: ProjectGrid, resolution: float) -> ProjectGrid:
    """The grid the detector runs on: ``grid``'s CRS and extent, bounds snapped outwards to multiples of
    ``resolution``, so that its pixels are whole blocks of project pixels."""
    return ProjectGrid(grid.crs, float(resolution), snap_bounds(grid.bounds, float(resolution)))


def s2cloudless_input(l1c: L1CProduct, grid: ProjectGrid) -> np.ndarray:
    """(H, W, 10) float32 TOA reflectance of ``S2CLOUDLESS_BANDS`` on ``grid``, NaN where any band has no data.

    Each band is resampled with ``s2.resampling_for`` (average onto a coarser grid, bilinear onto a finer one,
    nearest at equal pixel size) and converted with ``l1c_toa_reflectance`` ((DN + offset) / quantification,
    the harmonisation s2cloudless asks for from baseline 04.00 on)."""
    layers = []
    for band in S2CLOUDLESS_BANDS:
        dn = read_on_grid(f"vrt://{l1c.band_path(band)}?a_nodata=0", grid,
                          resampling=resampling_for(L1C_RESOLUTION[band], grid.resolution))[0]
        layers.append(l1c_toa_reflectance(np.nan_to_num(dn, nan=0.0), l1c.offsets[band], l1c.quantification))
    stack = np.stack(layers, axis=-1)
    stack[~np.isfinite(stack).all(axis=-1)] = np.nan
    return stack


def _detector(threshold: float, average_px: int, dilation_px: int):
    try:
        from s2cloudless import S2PixelCloudDetector
    except ImportError as err:
        raise RuntimeError(S2CLOUDLESS_MISSING) from err
    return S2PixelCloudDetector(threshold=threshold, all_bands=False, average_over=average_px or None,
                                dilation_size=dilation_px or None)


def cloud_probability(toa: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """s2cloudless cloud probability (H, W) float32 in 0..1 of (H, W, 10) TOA reflectance; NaN where the input
    is NaN."""
    if toa.ndim != 3 or toa.shape[-1] != len(S2CLOUDLESS_BANDS):
        raise ValueError(f"toa is shaped {toa.shape}: give (H, W, {len(S2CLOUDLESS_BANDS)}) in the order "
                         f"{', '.join(S2CLOUDLESS_BANDS)}")
    nodata = ~np.isfinite(toa).all(axis=-1)
    prob = _detector(0.4, 0, 0).get_cloud_probability_maps(np.nan_to_num(toa)[None], num_threads=threads)[0]
    return np.where(nodata, np.nan, prob).astype(np.float32)


def cloud_mask_from_probability(prob: np.ndarray, threshold: float, average_px: int, dilation_px: int
                                ) -> np.ndarray:
    """uint8 cloud mask (1 cloud, 0 clear, 255 no data) of a probability map: s2cloudless's own post-processing,
    i.e. the probability averaged over a disk of ``average_px`` pixels, compared ``> threshold``, the result
    dilated by a disk of ``dilation_px`` pixels. NaN probabilities count as 0 in the filters (documented edge
    effect at the product border) and are no data in the result."""
    nodata = ~np.isfinite(prob)
    mask = _detector(threshold, average_px, dilation_px).get_mask_from_prob(np.nan_to_num(prob)[None])[0]
    return np.where(nodata, NO_DATA, mask.astype(np.uint8)).astype(np.uint8)


def combine_masks(scl: np.ndarray, s2c_cloud: np.ndarray | None, method: str, invalid_scl: Iterable[int],
                  cloud_scl: Iterable[int], keep_scl: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """(invalid, cloud) boolean masks of one window by the combination rule of this module's docstring.

    ``scl`` is the SCL class per pixel, ``s2c_cloud`` the s2cloudless mask (1 cloud, 0 clear, 255 no data; None
    with method "scl"), ``keep_scl`` the SCL classes still invalid with method "s2cloudless"."""
    if method not in METHODS:
        raise ValueError(f"s2.clouds.method {method!r}: give one of {', '.join(METHODS)}")
    invalid_scl, cloud_scl, keep_scl = (np.asarray(list(v), dtype=int) for v in (invalid_scl, cloud_scl, keep_scl))
    scl_invalid, scl_cloud = np.isin(scl, invalid_scl), np.isin(scl, cloud_scl)
    if method == "scl":
        return scl_invalid, scl_cloud
    if s2c_cloud is None:
        raise ValueError(f"s2.clouds.method {method}: the s2cloudless mask is missing")
    c = s2c_cloud == 1
    has_c = s2c_cloud != NO_DATA
    if method == "s2cloudless":
        invalid = c | np.isin(scl, keep_scl)
        cloud = c | np.isin(scl, np.intersect1d(cloud_scl, keep_scl))
    else:
        invalid, cloud = scl_invalid | c, scl_cloud | c
    return np.where(has_c, invalid, scl_invalid), np.where(has_c, cloud, scl_cloud)


def _aoi_window(grid: ProjectGrid, aoi_bounds: Sequence[float] | None) -> ProjectGrid:
    if aoi_bounds is None:
        return grid
    left, bottom, right, top = snap_bounds(tuple(aoi_bounds), grid.resolution)  # type: ignore[arg-type]
    g = grid.bounds
    box = (max(left, g[0]), max(bottom, g[1]), min(right, g[2]), min(top, g[3]))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"the AOI bounds {tuple(aoi_bounds)} miss the grid {g}")
    return ProjectGrid(grid.crs, grid.resolution, box)


def s2cloudless_mask(l1c_path: str | os.PathLike, grid: ProjectGrid, aoi_bounds: Sequence[float] | None,
                     settings: Mapping[str, object], out_tif: str | os.PathLike, out_json: str | os.PathLike, *,
                     threads: int = 1, window_px: int = 4_000_000) -> dict[str, object]:
    """Cloud mask of one Level-1C product with s2cloudless, written on the detector grid.

    ``settings`` is config s2.clouds.s2cloudless (threshold, average_over_m, dilation_m, resolution); radii in
    metres become detector pixels (``disk_radius_px``). The detector runs on ``detector_grid(grid, resolution)``
    cut to ``aoi_bounds`` (in the grid CRS; None = the whole grid), in full-width bands of rows of about
    ``window_px`` pixels, so memory is bounded at any resolution (a 10 m county is tens of megapixels). Each
    band is read with a halo of average + dilation radius rows on both sides: the probability is per pixel and
    the averaging and dilation reach no further, so the mask equals the one computed in one piece. ``out_tif``:
    uint8, band 1 "probability" (percent), band 2 "cloud" (0/1), 255 = no data, co-aligned with the project
    grid (read it with nearest resampling); ``out_json``: {scene, l1c, resolution, threshold, average_px,
    dilation_px, cloud_fraction, windows, s2cloudless_version, seconds}. A missing band (B10 included) raises
    FileNotFoundError naming it."""
    started = time.monotonic()
    l1c = validate_l1c(l1c_path, S2CLOUDLESS_BANDS)
    resolution = float(settings.get("resolution", 60))  # type: ignore[arg-type]
    threshold = float(settings.get("threshold", 0.4))  # type: ignore[arg-type]
    average_px = disk_radius_px(float(settings.get("average_over_m", 240)), resolution)  # type: ignore[arg-type]
    dilation_px = disk_radius_px(float(settings.get("dilation_m", 120)), resolution)  # type: ignore[arg-type]
    det = _aoi_window(detector_grid(grid, resolution), aoi_bounds)
    windows = row_windows(det, max(1, window_px // det.width))
    log.info("%s: s2cloudless on %d x %d pixels of %g m in %d row band(s) (threshold %g, average %d px, "
             "dilation %d px)", l1c.name, det.width, det.height, resolution, len(windows), threshold, average_px,
             dilation_px)
    halo = average_px + dilation_px
    clouds = valid = 0
    with RasterWriter(out_tif, det, count=2, dtype="uint8", nodata=NO_DATA, band_names=["probability", "cloud"],
                      tags={"SCENE": l1c.name, "METHOD": "s2cloudless", "THRESHOLD": threshold,
                            "AVERAGE_PX": average_px, "DILATION_PX": dilation_px}) as writer:
        for win in windows:
            first, stop = max(win.row_off - halo, 0), min(win.row_off + win.height + halo, det.height)
            prob = cloud_probability(s2cloudless_input(l1c, det.rows(first, stop)), threads=threads)
            inner = slice(win.row_off - first, win.row_off - first + win.height)
            cloud = cloud_mask_from_probability(prob, threshold, average_px, dilation_px)[inner]
            prob = prob[inner]
            percent = np.where(np.isfinite(prob), np.rint(np.nan_to_num(prob) * 100), NO_DATA).astype(np.uint8)
            clouds += np.count_nonzero(cloud == 1)
            valid += np.count_nonzero(cloud != NO_DATA)
            writer.write(np.stack([percent, cloud]), win)
    fraction = clouds / valid if valid else math.nan
    from importlib.metadata import version

    meta: dict[str, object] = {
        "scene": l1c.name, "l1c": str(l1c_path), "resolution": resolution, "threshold": threshold,
        "average_px": average_px, "dilation_px": dilation_px,
        "cloud_fraction": None if math.isnan(fraction) else round(fraction, 6), "windows": len(windows),
        "s2cloudless_version": version("s2cloudless"), "seconds": round(time.monotonic() - started, 1),
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    log.info("%s: cloud fraction %s over the detector window", l1c.name, meta["cloud_fraction"])
    return meta
