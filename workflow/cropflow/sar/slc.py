"""Sentinel-1 IW SLC reading: SAFE folders/zips, swaths, burst geometry, valid samples, sigma0 calibration.

Pixels and the metadata groups (orbit, azimuth_fm_rate, dc_estimate, calibration) are read with
xarray-sentinel; the burst list (first/last valid sample per line, burst ids) and the scalar annotation
values are parsed from the product annotation XML here, because xarray-sentinel does not expose them.
Zipped products are extracted first: xarray-sentinel reads metadata from a zip but not the measurement.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows
import xarray as xr
from xarray_sentinel import sentinel1 as xs1

log = logging.getLogger(__name__)

SPEED_OF_LIGHT = 299_792_458.0
_FILE_RE = re.compile(r"^s1[abcd]-(?P<swath>iw\d|ew\d|s\d|wv\d)-slc-(?P<pol>hh|hv|vv|vh)-.*\.(xml|tiff)$", re.I)


@dataclass(frozen=True)
class Burst:
    """One TOPS burst of a swath (annotation ``swathTiming/burstList/burst``)."""

    index: int
    first_line: int
    lines: int
    azimuth_time: np.datetime64
    azimuth_anx_time: float
    burst_id: int | None
    first_valid_sample: np.ndarray
    last_valid_sample: np.ndarray

    def valid_mask(self, n_samples: int) -> np.ndarray:
        """Boolean (lines, n_samples) mask: True where firstValidSample <= sample <= lastValidSample.

        Lines flagged -1 in the annotation are entirely invalid."""
        sample = np.arange(n_samples)[None, :]
        first = self.first_valid_sample[:, None]
        last = self.last_valid_sample[:, None]
        return (first >= 0) & (sample >= first) & (sample <= last)


@dataclass(frozen=True)
class SwathAnnotation:
    """Scalar values and burst list of one swath/polarisation annotation XML (S1 product specification)."""

    path: Path
    mission: str
    swath: str
    polarisation: str
    pass_direction: str
    radar_frequency: float
    range_sampling_rate: float
    azimuth_steering_rate_deg: float
    azimuth_time_interval: float
    slant_range_time: float
    product_first_line_time: np.datetime64
    number_of_lines: int
    number_of_samples: int
    lines_per_burst: int
    samples_per_burst: int
    bursts: tuple[Burst, ...]

    @property
    def wavelength(self) -> float:
        """Radar wavelength lambda = c / f0 (m)."""
        return SPEED_OF_LIGHT / self.radar_frequency

    def burst_of_line(self, line: int) -> Burst:
        """The burst holding swath line ``line`` (lines count from 0 at the swath's first line)."""
        for burst in self.bursts:
            if burst.first_line <= line < burst.first_line + burst.lines:
                return burst
        raise ValueError(f"{self.path}: line {line} is outside the {len(self.bursts)} bursts of {self.swath}")

    def line_azimuth_time(self, lines: np.ndarray) -> np.ndarray:
        """Zero-Doppler azimuth time (datetime64[ns]) of swath lines: burst azimuthTime + k * azimuthTimeInterval."""
        lines = np.asarray(lines)
        out = np.empty(lines.shape, dtype="datetime64[ns]")
        for burst in self.bursts:
            sel = (lines >= burst.first_line) & (lines < burst.first_line + burst.lines)
            dt = (lines[sel] - burst.first_line) * self.azimuth_time_interval
            out[sel] = burst.azimuth_time + (dt * 1e9).astype("timedelta64[ns]")
        return out

    def pixel_slant_range_time(self, pixels: np.ndarray) -> np.ndarray:
        """Two-way slant range time (s) of pixels: slantRangeTime + pixel / rangeSamplingRate."""
        return self.slant_range_time + np.asarray(pixels, dtype=np.float64) / self.range_sampling_rate


def _text(root: ET.Element, path: str, source: Path) -> str:
    node = root.find(path)
    if node is None or node.text is None:
        raise ValueError(f"{source}: annotation element {path!r} is missing; is this a Sentinel-1 SLC annotation?")
    return node.text.strip()


def parse_xml(path: str | os.PathLike, what: str) -> ET.Element:
    """The root element of an XML file; a missing or malformed file is an error naming it and ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: {what} XML is not well formed ({exc}); re-download it") from exc


def read_annotation(path: str | os.PathLike) -> SwathAnnotation:
    """Parse a Sentinel-1 SLC product annotation XML (adsHeader, productInformation, imageInformation,
    swathTiming/burstList with firstValidSample/lastValidSample)."""
    path = Path(path)
    root = parse_xml(path, "Sentinel-1 annotation")
    lpb = int(_text(root, "swathTiming/linesPerBurst", path))
    bursts = []
    for k, node in enumerate(root.findall("swathTiming/burstList/burst")):
        first = np.array(_text(node, "firstValidSample", path).split(), dtype=np.int64)
        last = np.array(_text(node, "lastValidSample", path).split(), dtype=np.int64)
        if first.size != lpb or last.size != lpb:
            raise ValueError(f"{path}: burst {k} has {first.size} valid-sample entries, expected {lpb}")
        bid = node.find("burstId")
        bursts.append(
            Burst(
                index=k,
                first_line=k * lpb,
                lines=lpb,
                azimuth_time=np.datetime64(_text(node, "azimuthTime", path), "ns"),
                azimuth_anx_time=float(_text(node, "azimuthAnxTime", path)),
                burst_id=int(bid.text) if bid is not None and bid.text else None,
                first_valid_sample=first,
                last_valid_sample=last,
            )
        )
    info = "generalAnnotation/productInformation/"
    image = "imageAnnotation/imageInformation/"
    return SwathAnnotation(
        path=path,
        mission=_text(root, "adsHeader/missionId", path),
        swath=_text(root, "adsHeader/swath", path),
        polarisation=_text(root, "adsHeader/polarisation", path),
        pass_direction=_text(root, info + "pass", path).upper(),
        radar_frequency=float(_text(root, info + "radarFrequency", path)),
        range_sampling_rate=float(_text(root, info + "rangeSamplingRate", path)),
        azimuth_steering_rate_deg=float(_text(root, info + "azimuthSteeringRate", path)),
        azimuth_time_interval=float(_text(root, image + "azimuthTimeInterval", path)),
        slant_range_time=float(_text(root, image + "slantRangeTime", path)),
        product_first_line_time=np.datetime64(_text(root, image + "productFirstLineUtcTime", path), "ns"),
        number_of_lines=int(_text(root, image + "numberOfLines", path)),
        number_of_samples=int(_text(root, image + "numberOfSamples", path)),
        lines_per_burst=lpb,
        samples_per_burst=int(_text(root, "swathTiming/samplesPerBurst", path)),
        bursts=tuple(bursts),
    )


# --------------------------------------------------------------------------------------------- SAFE / zip


def extract_safe(product: str | os.PathLike, workdir: str | os.PathLike, expected: str | None = None) -> Path:
    """Return the ``.SAFE`` folder of ``product``: the folder itself, or the zip extracted under ``workdir``.

    Extraction goes to a temporary folder renamed into place, so an interrupted run leaves no partial SAFE;
    an already extracted product is reused. A truncated or corrupt zip, or one whose SAFE folder is not named
    ``expected`` (when given), raises ValueError."""
    product = Path(product)
    if not product.exists():
        raise FileNotFoundError(f"Sentinel-1 product {product} does not exist")
    if product.is_dir():
        if not (product / "manifest.safe").is_file():
            raise ValueError(f"{product}: no manifest.safe; not a Sentinel-1 SAFE folder")
        return product
    workdir = Path(workdir)
    try:
        with zipfile.ZipFile(product) as zf:
            names = [n for n in zf.namelist() if n.endswith(".SAFE/manifest.safe")]
            if len(names) != 1:
                raise ValueError(f"{product}: expected one <name>.SAFE/manifest.safe in the zip, found {len(names)}")
            safe_name = names[0].split("/")[-2]
            if expected is not None and safe_name != expected:
                raise ValueError(f"{product} holds {safe_name}, not {expected}: a Sentinel-1 zip must be named after"
                                 " the SAFE folder it contains (<name>.zip holding <name>.SAFE); rename the zip")
            target = workdir / safe_name
            if (target / "manifest.safe").is_file():
                return target
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{product}: member {bad} fails its CRC check; the zip is corrupt, re-download it")
            workdir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=workdir))
            try:
                prefix = names[0][: -len("manifest.safe")]
                members = [n for n in zf.namelist() if n.startswith(prefix)]
                log.info("extracting %d members of %s to %s", len(members), product.name, target)
                zf.extractall(tmp, members=members)
                try:
                    os.replace(tmp / prefix.rstrip("/"), target)
                except OSError:  # another job extracted the same product meanwhile
                    if not (target / "manifest.safe").is_file():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return target
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{product}: not a readable zip (truncated or corrupt: {exc}); re-download the product") from exc


def list_swath_polarisations(safe: str | os.PathLike) -> list[tuple[str, str]]:
    """(swath, polarisation) pairs actually present in a SAFE folder (annotation + measurement files),
    e.g. [("IW1", "VH"), ("IW1", "VV"), ("IW2", "VH")]. The manifest may announce more than the folder holds."""
    safe = Path(safe)
    found = set()
    for ann in (safe / "annotation").glob("*.xml"):
        m = _FILE_RE.match(ann.name)
        if m and (safe / "measurement" / (ann.stem + ".tiff")).is_file():
            found.add((m["swath"].upper(), m["pol"].upper()))
    return sorted(found)


def _swath_files(safe: Path, swath: str, polarisation: str) -> tuple[Path, Path, Path]:
    available = list_swath_polarisations(safe)
    if (swath.upper(), polarisation.upper()) not in available:
        have = ", ".join(f"{s}/{p}" for s, p in available) or "none"
        raise ValueError(
            f"{safe.name}: no {swath.upper()}/{polarisation.upper()} in the product; available: {have}. "
            "Choose an available swath/polarisation or use a product acquired with it."
        )
    stem_glob = f"s1?-{swath.lower()}-slc-{polarisation.lower()}-*"
    ann = next((safe / "annotation").glob(stem_glob + ".xml"))
    cal = safe / "annotation" / "calibration" / f"calibration-{ann.name}"
    return ann, safe / "measurement" / (ann.stem + ".tiff"), cal


def open_swath(safe: str | os.PathLike, swath: str, polarisation: str) -> xr.Dataset:
    """Open one swath/polarisation of an extracted SAFE with xarray-sentinel (lazy complex64 ``measurement``
    on (line, pixel)); ValueError naming the product and the available pairs if it is not there."""
    safe = Path(safe)
    _swath_files(safe, swath, polarisation)
    return xr.open_dataset(safe, engine="sentinel-1", group=f"{swath.upper()}/{polarisation.upper()}")


def read_window(safe: str | os.PathLike, swath: str, polarisation: str, lines: slice, samples: slice) -> np.ndarray:
    """Complex DN (complex64) of a (lines, samples) window of one swath's measurement TIFF: a windowed read
    of the file, for the engine's hot path (``open_swath`` is the labelled, lazy view of the same pixels)."""
    _, tiff, _ = _swath_files(Path(safe), swath, polarisation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tiff) as src:
            return src.read(1, window=rasterio.windows.Window.from_slices(lines, samples)).astype(np.complex64)


def open_metadata(safe: str | os.PathLike, swath: str, polarisation: str, name: str) -> xr.Dataset:
    """Open a metadata group (``orbit``, ``azimuth_fm_rate``, ``dc_estimate``, ``calibration``, ...)."""
    safe = Path(safe)
    _swath_files(safe, swath, polarisation)
    return xr.open_dataset(safe, engine="sentinel-1", group=f"{swath.upper()}/{polarisation.upper()}/{name}")


def swath_annotation(safe: str | os.PathLike, swath: str, polarisation: str) -> SwathAnnotation:
    """Parsed annotation (burst list, valid samples) of one swath/polarisation of a SAFE folder."""
    ann, _, _ = _swath_files(Path(safe), swath, polarisation)
    return read_annotation(ann)


def read_burst(safe: str | os.PathLike, swath: str, polarisation: str, burst: int) -> xr.DataArray:
    """Complex DN of one burst as (line, pixel) with swath line numbers; samples outside the annotation's
    firstValidSample..lastValidSample are set to NaN."""
    ann = swath_annotation(safe, swath, polarisation)
    if not 0 <= burst < len(ann.bursts):
        raise ValueError(f"{Path(safe).name} {swath}: burst {burst} not in 0..{len(ann.bursts) - 1}")
    b = ann.bursts[burst]
    da = open_swath(safe, swath, polarisation)["measurement"].isel(line=slice(b.first_line, b.first_line + b.lines))
    da = da.load()
    return da.where(b.valid_mask(da.sizes["pixel"]))


# --------------------------------------------------------------------------------------------- calibration


def calibration_lut(calibration: xr.Dataset, lines: np.ndarray, pixels: np.ndarray, lut: str = "sigmaNought") -> xr.DataArray:
    """The calibration LUT (default sigmaNought) bilinearly interpolated on the (line, pixel) grid
    (S1 Level-1 calibration, ESA-EOPG-CSCOP-TN-0002 Eq. 1 uses the LUT value at each pixel)."""
    if lut not in calibration:
        raise ValueError(f"calibration dataset has no LUT {lut!r}; available: {sorted(calibration.data_vars)}")
    return calibration[lut].interp(line=np.asarray(lines), pixel=np.asarray(pixels))


def calibrate_sigma0(dn: xr.DataArray, calibration: xr.Dataset) -> xr.DataArray:
    """Complex sigma0 amplitude = DN / A_sigma(line, pixel) (ESA-EOPG-CSCOP-TN-0002 Eq. 1, taken as
    amplitude), with the LUT interpolated at each pixel (xarray_sentinel.calibrate_amplitude)."""
    out = xs1.calibrate_amplitude(dn, calibration["sigmaNought"])
    out.attrs["calibration"] = "sigmaNought"
    return out


# --------------------------------------------------------------------------------------------- standalone tiff


def read_measurement_tiff(
    tiff: str | os.PathLike,
    annotation: str | os.PathLike,
    *,
    line_offset: int = 0,
    pixel_offset: int = 0,
    calibration: str | os.PathLike | None = None,
) -> xr.DataArray:
    """Read a measurement TIFF (or a crop of one starting at swath ``line_offset``/``pixel_offset``) with its
    annotation XML: complex64 (line, pixel) with swath line/pixel numbers, ``azimuth_time`` and
    ``slant_range_time`` coordinates, samples outside the valid-sample limits NaN. With a calibration XML,
    the result is calibrated to complex sigma0 (``calibrate_sigma0``)."""
    tiff = Path(tiff)
    if not tiff.is_file():
        raise FileNotFoundError(f"measurement TIFF {tiff} does not exist")
    ann = read_annotation(annotation)
    with warnings.catch_warnings():
        # measurement TIFFs carry GCPs, not a geotransform; geometry comes from the annotation
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = rasterio.open(tiff)
    with src:
        if src.count != 1 or "complex" not in src.dtypes[0]:
            raise ValueError(f"{tiff}: expected one complex band, found {src.count} band(s) of {src.dtypes}")
        data = src.read(1).astype(np.complex64)
    lines = np.arange(data.shape[0]) + line_offset
    pixels = np.arange(data.shape[1]) + pixel_offset
    if lines[-1] >= ann.number_of_lines or pixels[-1] >= ann.number_of_samples:
        raise ValueError(
            f"{tiff}: crop lines {lines[0]}..{lines[-1]}, pixels {pixels[0]}..{pixels[-1]} exceed the swath "
            f"({ann.number_of_lines} x {ann.number_of_samples}) of {ann.path.name}; check the offsets"
        )
    valid = np.zeros(data.shape, dtype=bool)
    for burst in ann.bursts:
        sel = (lines >= burst.first_line) & (lines < burst.first_line + burst.lines)
        if sel.any():
            mask = burst.valid_mask(ann.number_of_samples)[lines[sel] - burst.first_line]
            valid[sel] = mask[:, pixels]
    data[~valid] = np.nan
    da = xr.DataArray(
        data,
        dims=("line", "pixel"),
        coords={
            "line": lines,
            "pixel": pixels,
            "azimuth_time": ("line", ann.line_azimuth_time(lines)),
            "slant_range_time": ("pixel", ann.pixel_slant_range_time(pixels)),
        },
        attrs={"swath": ann.swath, "polarisation": ann.polarisation, "source": tiff.name},
        name="measurement",
    )
    if calibration is not None:
        cal = xs1.open_calibration_dataset(Path(calibration))
        da = calibrate_sigma0(da, cal)
    return da
