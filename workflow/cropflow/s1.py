"""The Sentinel-1 seam: validate and import per-scene C2 and per-pair coherence rasters, compute scene features.

Seam formats (spec "Sentinel-1 seam"): ``<scene>_C2.tif`` float32 bands ``C11, C22, C12_real, C12_imag``
with tags SCENE, PLATFORM, RELATIVE_ORBIT, PASS, START_TIME; ``<pair>_coh.tif`` float32 bands
``coh_vv, coh_vh`` in [0, 1] with tags REFERENCE, SECONDARY, RELATIVE_ORBIT; both NaN outside the swath,
on the project grid's CRS, pixel size and pixel lattice (any sub-extent).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from cropflow import polsar
from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.raster import RasterWriter, row_windows

logger = logging.getLogger(__name__)

C2_BANDS: tuple[str, ...] = ("C11", "C22", "C12_real", "C12_imag")
COHERENCE_BANDS: tuple[str, ...] = ("coh_vv", "coh_vh")
C2_TAGS: tuple[str, ...] = ("SCENE", "PLATFORM", "RELATIVE_ORBIT", "PASS", "START_TIME")
COHERENCE_TAGS: tuple[str, ...] = ("REFERENCE", "SECONDARY", "RELATIVE_ORBIT")
PASSES: tuple[str, ...] = ("ASCENDING", "DESCENDING")

#: Relative orbit = (absolute orbit - offset) % 175 + 1 (175 orbits per 12-day repeat cycle).
_ORBIT_OFFSET = {"S1A": 73, "S1B": 27}
#: tolerance in pixels for the origin to count as on the lattice, and relative tolerance of the pixel size
_LATTICE_TOLERANCE = 1e-3
#: coherence values may exceed [0, 1] by this much from float32 rounding
_COHERENCE_TOLERANCE = 1e-5

_SCENE_RE = re.compile(
    r"^(?P<platform>S1[A-D])_(?P<mode>IW|EW|SM|WV|S[1-6])_(?P<product>SLC|GRD|RAW|OCN)(?P<resolution>[_FHM])"
    r"_(?P<level>[012])(?P<klass>[SA])(?P<polarisation>SH|SV|DH|DV|HH|VV|HV|VH)"
    r"_(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_(?P<orbit>\d{6})_(?P<datatake>[0-9A-F]{6})_(?P<crc>[0-9A-F]{4})$"
)
_PAIR_RE = re.compile(r"^R(?P<orbit>\d{3})_(?P<reference>\d{8})_(?P<secondary>\d{8})$")
_PRODUCT_SUFFIXES = (".SAFE.zip", ".SAFE", ".zip")


# ---------------------------------------------------------------------------------------------- names

def parse_scene_id(name: str) -> dict:
    """Fields of a Sentinel-1 product name, e.g. ``S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048410_05D2C4_3F1A``.

    A trailing ``.SAFE``, ``.zip`` or ``.SAFE.zip`` is ignored. Returns ``scene`` (the bare name),
    ``platform``, ``mode``, ``product``, ``polarisation`` (e.g. ``DV``), ``start`` and ``stop`` (UTC
    datetimes), ``absolute_orbit``, ``relative_orbit`` (``(abs - 73) % 175 + 1`` for S1A,
    ``(abs - 27) % 175 + 1`` for S1B), ``datatake`` (6 hex digits) and ``crc``.
    """
    scene = str(name)
    for suffix in _PRODUCT_SUFFIXES:
        if scene.endswith(suffix):
            scene = scene[: -len(suffix)]
            break
    match = _SCENE_RE.match(scene)
    if match is None:
        raise ValueError(
            f"{name!r} is not a Sentinel-1 product name: expected e.g. "
            "S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048410_05D2C4_3F1A"
        )
    platform = match["platform"]
    if platform not in _ORBIT_OFFSET:
        raise ValueError(
            f"{name!r}: relative orbits of {platform} are not derived by cropflow (only "
            f"{sorted(_ORBIT_OFFSET)}): use S1A/S1B products or extend the orbit table in cropflow.s1"
        )
    try:
        start = datetime.strptime(match["start"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        stop = datetime.strptime(match["stop"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError as err:
        raise ValueError(f"{name!r}: invalid start/stop time in the product name ({err})") from None
    absolute = int(match["orbit"])
    return {
        "scene": scene,
        "platform": platform,
        "mode": match["mode"],
        "product": match["product"],
        "polarisation": match["polarisation"],
        "start": start,
        "stop": stop,
        "absolute_orbit": absolute,
        "relative_orbit": relative_orbit(platform, absolute),
        "datatake": match["datatake"],
        "crc": match["crc"],
    }


def relative_orbit(platform: str, absolute_orbit: int) -> int:
    """Relative orbit (track, 1..175) of an absolute orbit: ``(abs - 73) % 175 + 1`` (S1A), ``(abs - 27) % 175 + 1`` (S1B)."""
    if platform not in _ORBIT_OFFSET:
        raise ValueError(f"no relative-orbit formula for platform {platform!r}: known {sorted(_ORBIT_OFFSET)}")
    return (absolute_orbit - _ORBIT_OFFSET[platform]) % 175 + 1


def pair_id(reference: str, secondary: str) -> str:
    """Pair id ``R<rel orbit 3 digits>_<YYYYMMDD ref>_<YYYYMMDD sec>`` of two scenes of one track."""
    ref, sec = parse_scene_id(reference), parse_scene_id(secondary)
    if ref["relative_orbit"] != sec["relative_orbit"]:
        raise ValueError(
            f"scenes {reference} and {secondary} are on relative orbits {ref['relative_orbit']} and "
            f"{sec['relative_orbit']}: a coherence pair needs one track"
        )
    return f"R{ref['relative_orbit']:03d}_{ref['start']:%Y%m%d}_{sec['start']:%Y%m%d}"


def parse_pair_id(name: str) -> dict:
    """Fields of a pair id ``R032_20230508_20230520``: ``relative_orbit``, ``reference`` and ``secondary`` dates."""
    match = _PAIR_RE.match(str(name))
    if match is None:
        raise ValueError(f"{name!r} is not a coherence pair id: expected R<orbit 3 digits>_<YYYYMMDD>_<YYYYMMDD>, "
                         "e.g. R032_20230508_20230520")
    try:
        ref = datetime.strptime(match["reference"], "%Y%m%d").date()
        sec = datetime.strptime(match["secondary"], "%Y%m%d").date()
    except ValueError as err:
        raise ValueError(f"{name!r}: invalid date in the pair id ({err})") from None
    return {"pair": str(name), "relative_orbit": int(match["orbit"]), "reference": ref, "secondary": sec}


# ---------------------------------------------------------------------------------------------- validation

def _open(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: check config 'inputs.s1' and the inventory")
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise ValueError(f"{path} is not a readable raster ({err}): rewrite it as a GeoTIFF") from None


def _band_problems(src: rasterio.DatasetReader, expected: Sequence[str]) -> list[str]:
    found = [d or f"<unnamed band {i}>" for i, d in enumerate(src.descriptions, start=1)]
    problems = [f"band {name} missing" for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if extra:
        problems.append(f"unexpected band(s) {extra}")
    if not problems and found != list(expected):
        problems.append(f"bands in order {found}, expected {list(expected)}")
    if problems:
        problems[-1] += f" (bands found: {found}; expected descriptions {list(expected)})"
    dtypes = sorted(set(src.dtypes))
    if dtypes != ["float32"]:
        problems.append(f"data type {', '.join(dtypes)}, expected float32")
    return problems


def _fmt(value: float) -> str:
    return f"{value:g}"


def _grid_problems(src: rasterio.DatasetReader, grid: ProjectGrid) -> list[str]:
    """CRS, pixel size and pixel-lattice checks of a raster against the project grid."""
    if src.crs is None:
        return [f"no CRS, expected {grid.crs}: write it on the project grid"]
    if CRS.from_user_input(grid.crs) != src.crs:
        return [f"CRS {src.crs.to_string()}, expected {grid.crs}: reprocess with the project grid"]
    t, res = src.transform, grid.resolution
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        return [f"transform {tuple(t)[:6]} is not north-up: reprocess with the project grid"]
    problems = []
    xres, yres = t.a, -t.e
    if not (math.isclose(xres, res, rel_tol=1e-6) and math.isclose(yres, res, rel_tol=1e-6)):
        size = _fmt(xres) if math.isclose(xres, yres, rel_tol=1e-6) else f"{_fmt(xres)} x {_fmt(yres)}"
        problems.append(f"on a {size} m grid, expected {_fmt(res)} m: reprocess with the project grid")
        return problems
    dx = (t.c - grid.bounds[0]) / res
    dy = (grid.bounds[3] - t.f) / res
    if abs(dx - round(dx)) > _LATTICE_TOLERANCE or abs(dy - round(dy)) > _LATTICE_TOLERANCE:
        problems.append(
            f"origin ({_fmt(t.c)}, {_fmt(t.f)}) is off the project pixel lattice by "
            f"({_fmt((dx - round(dx)) * res)}, {_fmt((dy - round(dy)) * res)}) map units: "
            "reprocess with the project grid (origin on multiples of the pixel size)"
        )
    left, bottom, right, top = src.bounds
    g = grid.bounds
    if not problems and (right <= g[0] or left >= g[2] or top <= g[1] or bottom >= g[3]):
        logger.warning("%s does not overlap the project grid %s: it will contribute no pixel", src.name, g)
    return problems


def _iso_time(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _c2_tag_problems(tags: Mapping[str, str], path: Path) -> list[str]:
    missing = [k for k in C2_TAGS if k not in tags]
    if missing:
        return [f"tag(s) {missing} missing (required: {list(C2_TAGS)})"]
    problems = []
    try:
        scene = parse_scene_id(tags["SCENE"])
    except ValueError as err:
        return [f"tag SCENE: {err}"]
    if path.name.endswith("_C2.tif") and path.name[: -len("_C2.tif")] != scene["scene"]:
        problems.append(f"tag SCENE={tags['SCENE']} differs from the file name")
    if tags["PLATFORM"] != scene["platform"]:
        problems.append(f"tag PLATFORM={tags['PLATFORM']}, but the scene name says {scene['platform']}")
    if tags["RELATIVE_ORBIT"].strip() != str(scene["relative_orbit"]):
        problems.append(f"tag RELATIVE_ORBIT={tags['RELATIVE_ORBIT']}, but absolute orbit "
                        f"{scene['absolute_orbit']} of {scene['platform']} is relative orbit {scene['relative_orbit']}")
    if tags["PASS"] not in PASSES:
        problems.append(f"tag PASS={tags['PASS']}, expected one of {list(PASSES)}")
    try:
        _iso_time(tags["START_TIME"])
    except ValueError:
        problems.append(f"tag START_TIME={tags['START_TIME']} is not an ISO date-time (e.g. 2023-05-08T09:45:12Z)")
    return problems


def _coherence_tag_problems(tags: Mapping[str, str], path: Path) -> list[str]:
    missing = [k for k in COHERENCE_TAGS if k not in tags]
    if missing:
        return [f"tag(s) {missing} missing (required: {list(COHERENCE_TAGS)})"]
    try:
        ref, sec = parse_scene_id(tags["REFERENCE"]), parse_scene_id(tags["SECONDARY"])
    except ValueError as err:
        return [f"tag REFERENCE/SECONDARY: {err}"]
    problems = []
    orbit = tags["RELATIVE_ORBIT"].strip()
    for role, scene in (("REFERENCE", ref), ("SECONDARY", sec)):
        if str(scene["relative_orbit"]) != orbit:
            problems.append(f"tag RELATIVE_ORBIT={orbit}, but {role} {scene['scene']} is on relative orbit "
                            f"{scene['relative_orbit']}")
    if sec["start"] <= ref["start"]:
        problems.append(f"SECONDARY {sec['scene']} does not follow REFERENCE {ref['scene']}")
    if path.name.endswith("_coh.tif"):
        try:
            pair = parse_pair_id(path.name[: -len("_coh.tif")])
        except ValueError as err:
            problems.append(f"file name: {err}")
        else:
            expected = (int(orbit) if orbit.isdigit() else None, ref["start"].date(), sec["start"].date())
            if (pair["relative_orbit"], pair["reference"], pair["secondary"]) != expected:
                problems.append(f"file name pair {pair['pair']} differs from its tags "
                                f"(RELATIVE_ORBIT={orbit}, REFERENCE={ref['scene']}, SECONDARY={sec['scene']})")
    return problems


def _range_problems(src: rasterio.DatasetReader, lo: float, hi: float, rows: int = 1024) -> list[str]:
    """Bands whose non-NaN values leave [lo, hi] (read in row blocks)."""
    problems = []
    for band, name in enumerate(src.descriptions, start=1):
        vmin, vmax = math.inf, -math.inf
        for row in range(0, src.height, rows):
            win = rasterio.windows.Window(0, row, src.width, min(rows, src.height - row))
            data = src.read(band, window=win)
            data = data[~np.isnan(data)]
            if data.size:
                vmin, vmax = min(vmin, float(data.min())), max(vmax, float(data.max()))
        if vmin < lo - _COHERENCE_TOLERANCE or vmax > hi + _COHERENCE_TOLERANCE:
            problems.append(f"band {name} has values in [{vmin:g}, {vmax:g}], expected [{lo:g}, {hi:g}] or NaN")
    return problems


def validate_c2(path: str | os.PathLike, grid: ProjectGrid) -> dict[str, str]:
    """Check a seam C2 file against the spec and the project grid; return its tags.

    Checks: 4 float32 bands described C11, C22, C12_real, C12_imag; CRS equal to the grid's; north-up
    pixels of the grid's size with the origin on the grid's pixel lattice; tags SCENE (a product name
    matching the file name), PLATFORM and RELATIVE_ORBIT consistent with it, PASS, START_TIME (ISO).
    Every problem found is listed in one ValueError naming the file.
    """
    path = Path(path)
    with _open(path) as src:
        problems = _band_problems(src, C2_BANDS) + _grid_problems(src, grid)
        tags = dict(src.tags())
    problems += _c2_tag_problems(tags, path)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return tags


def validate_coherence(path: str | os.PathLike, grid: ProjectGrid) -> dict[str, str]:
    """Check a seam coherence file against the spec and the project grid; return its tags.

    Checks: 2 float32 bands described coh_vv, coh_vh with values in [0, 1] or NaN; CRS, pixel size and
    lattice as :func:`validate_c2`; tags REFERENCE, SECONDARY (product names on the tag RELATIVE_ORBIT,
    secondary after reference) and, for a file named ``<pair>_coh.tif``, a pair id matching those tags.
    """
    path = Path(path)
    with _open(path) as src:
        problems = _band_problems(src, COHERENCE_BANDS) + _grid_problems(src, grid)
        if not problems:
            problems += _range_problems(src, 0.0, 1.0)
        tags = dict(src.tags())
    problems += _coherence_tag_problems(tags, path)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return tags


def _copy(src: Path, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def import_scene(src: str | os.PathLike, dst: str | os.PathLike, grid: ProjectGrid) -> dict[str, str]:
    """Validate a seam C2 file (:func:`validate_c2`) and copy it atomically to ``dst``; return its tags."""
    tags = validate_c2(src, grid)
    _copy(Path(src), dst)
    logger.info("imported scene %s -> %s", tags["SCENE"], dst)
    return tags


def import_pair(src: str | os.PathLike, dst: str | os.PathLike, grid: ProjectGrid) -> dict[str, str]:
    """Validate a seam coherence file (:func:`validate_coherence`) and copy it atomically to ``dst``; return its tags."""
    tags = validate_coherence(src, grid)
    _copy(Path(src), dst)
    logger.info("imported pair %s / %s -> %s", tags["REFERENCE"], tags["SECONDARY"], dst)
    return tags


# ---------------------------------------------------------------------------------------------- features

def glcm_options(glcm: Mapping[str, object] | None) -> dict | None:
    """Normalise the ``s1.glcm`` config block: None when off, else window, levels, vmin, vmax, features.

    Keys: ``enabled`` (default true when the block is given), ``window`` (odd, default 7), ``levels``
    (default 32), ``vmin``/``vmax`` (VH dB quantisation range, default :data:`cropflow.polsar.GLCM_DB_RANGE`),
    ``features`` (default all of :data:`cropflow.polsar.GLCM_FEATURES`).
    """
    if glcm is None:
        return None
    known = {"enabled", "window", "levels", "vmin", "vmax", "features"}
    unknown = sorted(set(glcm) - known)
    if unknown:
        raise ValueError(f"config s1.glcm: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    if not glcm.get("enabled", True):
        return None
    opts = {
        "window": int(glcm.get("window", 7)),  # type: ignore[arg-type]
        "levels": int(glcm.get("levels", 32)),  # type: ignore[arg-type]
        "vmin": float(glcm.get("vmin", polsar.GLCM_DB_RANGE[0])),  # type: ignore[arg-type]
        "vmax": float(glcm.get("vmax", polsar.GLCM_DB_RANGE[1])),  # type: ignore[arg-type]
        "features": list(glcm.get("features", polsar.GLCM_FEATURES)),  # type: ignore[call-overload]
    }
    if opts["window"] < 3 or opts["window"] % 2 == 0:
        raise ValueError(f"config s1.glcm.window must be an odd integer >= 3, got {opts['window']}")
    if opts["levels"] < 2:
        raise ValueError(f"config s1.glcm.levels must be >= 2, got {opts['levels']}")
    if not opts["vmax"] > opts["vmin"]:
        raise ValueError(f"config s1.glcm needs vmin < vmax, got {opts['vmin']} and {opts['vmax']}")
    bad = [f for f in opts["features"] if f not in polsar.GLCM_FEATURES]
    if bad:
        raise ValueError(f"config s1.glcm.features: unknown {bad}; valid names are {list(polsar.GLCM_FEATURES)}")
    return opts


def _grid_of_dataset(src: rasterio.DatasetReader, path: Path) -> ProjectGrid:
    t = src.transform
    if src.crs is None or t.b != 0 or t.d != 0 or t.e >= 0 or not math.isclose(t.a, -t.e, rel_tol=1e-9):
        raise ValueError(f"{path}: not a north-up raster with square pixels and a CRS: reprocess with the project grid")
    return ProjectGrid(src.crs.to_string(), float(t.a), tuple(float(b) for b in src.bounds))  # type: ignore[arg-type]


def scene_features(
    c2_path: str | os.PathLike,
    out_path: str | os.PathLike,
    features: Sequence[str],
    window_rows: int = 512,
    glcm: Mapping[str, object] | None = None,
) -> list[str]:
    """Compute the S1 features of one C2 scene into a float32 GeoTIFF on the grid of the C2 file.

    Bands are ``features`` (names of :data:`cropflow.polsar.FEATURES`) followed, when ``glcm`` is
    enabled (see :func:`glcm_options`), by the GLCM features of VH dB; band descriptions are the names,
    nodata NaN, tags those of the C2 file (plus GLCM_WINDOW, GLCM_LEVELS, GLCM_RANGE_DB when GLCM is on).
    Work is done in blocks of ``window_rows`` rows; GLCM blocks are read with a halo of ``window // 2``
    rows and cropped, so the result equals a one-shot computation. Returns the band names written.
    """
    names = list(features)
    polsar.check_feature_names(names, allow_glcm=False)
    opts = glcm_options(glcm)
    glcm_names = list(opts["features"]) if opts else []
    out_names = names + glcm_names
    if not out_names:
        raise ValueError(f"no S1 feature requested for {c2_path}: set config s1.features (or enable s1.glcm)")
    if window_rows < 1:
        raise ValueError(f"window_rows must be >= 1, got {window_rows}")
    c2_path = Path(c2_path)
    halo = opts["window"] // 2 if opts else 0
    with _open(c2_path) as src:
        found = list(src.descriptions)
        missing = [b for b in C2_BANDS if b not in found]
        if missing:
            raise ValueError(f"{c2_path}: band(s) {missing} missing (bands found: {found}): "
                             f"a C2 file needs bands {list(C2_BANDS)}")
        bands = [found.index(b) + 1 for b in C2_BANDS]
        grid = _grid_of_dataset(src, c2_path)
        tags: dict[str, object] = dict(src.tags())
        if opts:
            tags.update(GLCM_WINDOW=opts["window"], GLCM_LEVELS=opts["levels"],
                        GLCM_RANGE_DB=f"{opts['vmin']:g},{opts['vmax']:g}")
        windows = row_windows(grid, window_rows)
        with RasterWriter(out_path, grid, count=len(out_names), dtype="float32", nodata=float("nan"),
                          band_names=out_names, tags=tags) as writer:
            for i, win in enumerate(windows, start=1):
                top = max(0, win.row_off - halo)
                bottom = min(grid.height, win.row_off + win.height + halo)
                c11, c22, re_, im_ = src.read(bands, window=rasterio.windows.Window(0, top, grid.width, bottom - top))
                c12 = re_.astype(np.float64) + 1j * im_.astype(np.float64)
                core = slice(win.row_off - top, win.row_off - top + win.height)
                out = np.empty((len(out_names), win.height, grid.width), dtype=np.float32)
                out[: len(names)] = polsar.compute_features(c11[core], c22[core], c12[core], names)
                if opts:
                    texture = polsar.glcm_features(polsar.vh_db(c11, c22, c12), window=opts["window"],
                                                   levels=opts["levels"], vmin=opts["vmin"], vmax=opts["vmax"],
                                                   names=glcm_names)
                    out[len(names):] = texture[:, core]
                writer.write(out, win)
                logger.info("%s: features of rows %d-%d written (block %d/%d)", c2_path.name, win.row_off,
                            win.row_off + win.height, i, len(windows))
    return out_names

