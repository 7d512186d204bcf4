"""Sentinel-2 L1C and L2A products (ESA SAFE layout): metadata, band files, TOA/BOA reflectance, SCL masks,
ingestion.

A product is a ``<name>.SAFE`` folder or a ``.zip`` whose root holds that folder (as ESA ships them).
Level-1C (top-of-atmosphere, ``MTD_MSIL1C.xml``) is read by ``open_l1c``/``validate_l1c`` for Sen2Cor and
the s2cloudless detector; the reflectance stacked by the workflow always comes from a Level-2A product
(ESA's, or one Sen2Cor made from an L1C: ``cropflow.sen2cor``).
``ingest_l2a`` puts the configured bands of one product on the project grid, window by window, with
invalid scene-classification (SCL) pixels set to NaN, and writes a JSON sidecar saying whether the
product is usable (cloud fraction over the AOI, coverage, valid fraction).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import zipfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from shapely.geometry.base import BaseGeometry

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.raster import RasterWriter, read_on_grid, row_windows

log = logging.getLogger(__name__)

#: band_id order of the L2A metadata (BOA_ADD_OFFSET band_id="0".."12")
BAND_IDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                             "B11", "B12")
#: native resolution (m) of each L2A band; B10 (cirrus) exists only in L1C
NATIVE_RESOLUTION: dict[str, int] = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20,
                                     "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20,
                                     "SCL": 20}
#: native resolution (m) of each L1C band (all 13, B10 cirrus included)
L1C_RESOLUTION: dict[str, int] = {**{b: r for b, r in NATIVE_RESOLUTION.items() if b != "SCL"}, "B10": 60}
#: namespace of the root element of MTD_MSIL1C.xml
L1C_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"
#: namespace of the root element of MTD_MSIL2A.xml
L2A_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
#: namespace of the root element of the granule's MTD_TL.xml
TILE_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"
#: SCL classes counted as cloud in the product-level cloud cover (medium, high probability, thin cirrus)
SCL_CLOUD_CLASSES: tuple[int, ...] = (8, 9, 10)
SPACECRAFT = {"S2A": "Sentinel-2A", "S2B": "Sentinel-2B", "S2C": "Sentinel-2C", "S2D": "Sentinel-2D"}

#: ESA product name (compact naming, 2016+) of a Level-1C or Level-2A product (without .SAFE)
PRODUCT_NAME_RE = re.compile(
    r"^(?P<platform>S2[A-D])_MSIL(?P<level>1C|2A)_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_T(?P<tile>\d{2}[A-Z]{3})_(?P<generation>\d{8}T\d{6})$"
)
#: ESA product name of a Level-2A product (without .SAFE)
L2A_NAME_RE = re.compile(
    r"^(?P<platform>S2[A-D])_MSIL2A_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})_R(?P<orbit>\d{3})"
    r"_T(?P<tile>\d{2}[A-Z]{3})_(?P<generation>\d{8}T\d{6})$"
)
#: metadata file at the root of a product of each level
METADATA_FILE = {"L1C": "MTD_MSIL1C.xml", "L2A": "MTD_MSIL2A.xml"}
_L1C_IMAGE_FILE_RE = re.compile(r"IMG_DATA/[^/]*_(?P<band>B\d[\dA])$")
_IMAGE_FILE_RE = re.compile(r"IMG_DATA/R(?P<res>\d{2})m/[^/]*_(?P<band>B\d[\dA]|SCL)_(?P=res)m$")
_BAND_RE = re.compile(r"^B(?P<num>\d{1,2}|8A)$", re.IGNORECASE)


def local_name(tag: str) -> str:
    """The local part of an ElementTree tag (``{namespace}name`` -> ``name``)."""
    return tag.rsplit("}", 1)[-1]


def normalise_band(band: str) -> str:
    """Canonical L2A band name: ``B4`` / ``b04`` -> ``B04``, ``b8a`` -> ``B8A``, ``scl`` -> ``SCL``."""
    text = str(band).strip().upper()
    if text == "SCL":
        return text
    m = _BAND_RE.match(text)
    name = None if m is None else ("B8A" if m["num"].upper() == "8A" else f"B{int(m['num']):02d}")
    if name not in NATIVE_RESOLUTION:
        raise ValueError(
            f"unknown Sentinel-2 L2A band {band!r}: use one of {', '.join(NATIVE_RESOLUTION)} (config s2.bands)"
        )
    return name


def parse_product_name(name: str) -> dict[str, object] | None:
    """Fields of an L1C or L2A product name (``.SAFE``/``.zip`` suffixes allowed), or None if it is not one.

    ``level`` is "L1C" or "L2A"; ``baseline`` "NN.NN"; times are UTC datetimes."""
    stem = strip_product_suffix(name)
    m = PRODUCT_NAME_RE.match(stem)
    if m is None:
        return None
    return {
        "name": stem, "level": f"L{m['level']}", "platform": m["platform"],
        "sensing_time": datetime.strptime(m["sensing"], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc),
        "baseline": f"{m['baseline'][:2]}.{m['baseline'][2:]}", "relative_orbit": int(m["orbit"]),
        "mgrs_tile": m["tile"],
        "generation_time": datetime.strptime(m["generation"], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc),
    }


def parse_l2a_name(name: str) -> dict[str, object] | None:
    """Fields of an L2A product name (``.SAFE``/``.zip`` suffixes allowed), or None if it is not one."""
    parsed = parse_product_name(name)
    if parsed is None or parsed["level"] != "L2A":
        return None
    return {k: v for k, v in parsed.items() if k != "level"}


def strip_product_suffix(name: str) -> str:
    """``X.SAFE``, ``X.SAFE.zip``, ``X.zip`` -> ``X``."""
    for suffix in (".zip", ".SAFE"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------------------------------- reading


class _Source:
    """Files of one SAFE product of ``level`` ("L1C" or "L2A"), in a folder or inside a zip, addressed relative
    to the .SAFE folder."""

    def __init__(self, path: Path, level: str = "L2A"):
        self.path, self.level = path, level
        mtd = METADATA_FILE[level]
        other = METADATA_FILE["L1C" if level == "L2A" else "L2A"]
        if path.is_dir():
            self.zip_members: frozenset[str] | None = None
            self.safe_dir = path.name
            if not (path / mtd).is_file():
                raise FileNotFoundError(self._no_mtd_message(has_other=(path / other).is_file()))
        elif path.is_file():
            try:
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
            except zipfile.BadZipFile as err:
                raise ValueError(f"{path}: not a readable zip ({err}): re-download the product") from err
            self.zip_members = frozenset(names)
            tops = sorted({n.split("/", 1)[0] for n in names if n.endswith(f".SAFE/{mtd}") and n.count("/") == 1})
            if len(tops) != 1:
                raise FileNotFoundError(self._no_mtd_message(has_other=any(n.endswith(f"/{other}") for n in names)))
            self.safe_dir = tops[0]
        else:
            raise FileNotFoundError(f"Sentinel-2 product {path} does not exist")
        self.name = strip_product_suffix(self.safe_dir)

    def _no_mtd_message(self, has_other: bool) -> str:
        if has_other and self.level == "L2A":
            return (f"{self.path} is a Level-1C product (MTD_MSIL1C.xml), not Level-2A: the workflow corrects it "
                    f"with Sen2Cor (rule sen2cor, config s2.sen2cor) or uses its Level-2A product when both are in "
                    f"inputs.s2 (config s2.prefer)")
        if has_other:
            return (f"{self.path} is a Level-2A product (MTD_MSIL2A.xml), not Level-1C: read it as Level-2A "
                    f"(cropflow.s2.open_l2a)")
        return (f"{self.path}: no <name>.SAFE/{METADATA_FILE[self.level]} found: this is not a complete "
                f"Sentinel-2 {self.level} product; re-download it or remove it from {self.path.parent}")

    def read(self, rel: str) -> bytes:
        if self.zip_members is None:
            return (self.path / rel).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(f"{self.safe_dir}/{rel}")

    def exists(self, rel: str) -> bool:
        if self.zip_members is None:
            return (self.path / rel).is_file()
        return f"{self.safe_dir}/{rel}" in self.zip_members

    def gdal_path(self, rel: str) -> str:
        if self.zip_members is None:
            return str((self.path / rel).absolute())
        return f"/vsizip/{self.path.absolute()}/{self.safe_dir}/{rel}"


@dataclass(frozen=True)
class _Product:
    """What the L1C and L2A products share: identity and radiometry from their metadata."""

    name: str
    path: Path
    platform: str
    datetime: datetime
    mgrs_tile: str
    relative_orbit: int
    baseline: str
    quantification: float
    offsets: dict[str, float]

    def _check_member(self, band: str, rel: str) -> None:
        """FileNotFoundError naming the band, its file and the fix when ``rel`` is not in the product."""
        source = getattr(self, "_source", None)
        if source is not None and not source.exists(rel):
            short = "/".join(rel.split("/")[-2:])
            raise FileNotFoundError(f"{self.name}: band {band} ({short}) is missing: re-download the product or "
                                    f"remove it from {self.path.parent}")


@dataclass(frozen=True)
class L2AProduct(_Product):
    """One Sentinel-2 L2A product: product-level metadata and the paths of its band files.

    ``band_paths`` maps band names to GDAL paths (a file path, or a ``/vsizip/`` path inside a zip) of the
    finest resolution the product lists for that band; ``cloud_cover`` is the product's
    Cloud_Coverage_Assessment in percent; ``offsets`` the BOA_ADD_OFFSET per band (0 before baseline 04.00).
    Use ``band_path(band)`` to get a band that is checked to exist.
    """

    band_paths: dict[str, str]
    scl_path: str
    cloud_cover: float
    metadata_sha256: str = ""
    _members: dict[str, str] = field(default_factory=dict, repr=False)  # band -> path inside the .SAFE
    _source: _Source | None = field(default=None, repr=False, compare=False)

    def band_resolution(self, band: str) -> int:
        """Resolution (m) of the file that ``band_path(band)`` returns."""
        band = normalise_band(band)
        self.band_path(band)
        m = _IMAGE_FILE_RE.search(self._members[band].removesuffix(".jp2"))
        assert m is not None  # the members were selected with this pattern
        return int(m["res"])

    def band_path(self, band: str) -> str:
        """GDAL path of a band (``SCL`` included) after checking that the file is there."""
        band = normalise_band(band)
        if band not in self._members:
            listed = ", ".join(sorted(self._members))
            raise ValueError(f"{self.name}: band {band} is not in this product (it lists {listed}); "
                             f"change config s2.bands")
        rel = self._members[band]
        self._check_member(band, rel)
        return self._source.gdal_path(rel) if self._source is not None else self.band_paths[band]


def _xml_text(root: ET.Element, name: str, source: str) -> str:
    for el in root.iter():
        if local_name(el.tag) == name and el.text is not None:
            return el.text.strip()
    raise ValueError(f"{source}: element {name} is missing: the metadata file is incomplete; re-download "
                     f"the product")


def _band_offsets(root: ET.Element, tag: str, where: str) -> dict[str, float]:
    """The per-band radiometric offsets of a product's metadata (``tag`` BOA_ADD_OFFSET in L2A,
    RADIO_ADD_OFFSET in L1C, by band_id); 0 for every band of baselines before 04.00, which have none."""
    offsets = {b: 0.0 for b in BAND_IDS}
    for el in root.iter():
        if local_name(el.tag) == tag:
            try:
                offsets[BAND_IDS[int(el.attrib["band_id"])]] = float(el.text or 0)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"{where}: malformed {tag} {el.attrib} ({err}); re-download the product") from err
    return offsets


def open_l2a(path: str | os.PathLike) -> L2AProduct:
    """Open an L2A product (``.SAFE`` folder or ``.zip``) and read MTD_MSIL2A.xml (elements matched by local name).

    Raises FileNotFoundError when there is no MTD_MSIL2A.xml (or the product is Level-1C) and ValueError
    when the metadata is malformed. Band files are checked when asked for (``band_path``).
    """
    src = _Source(Path(path))
    mtd_name = f"{src.safe_dir}/MTD_MSIL2A.xml"
    raw = src.read("MTD_MSIL2A.xml")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        raise ValueError(f"{path}: {mtd_name} is not valid XML ({err}): re-download the product") from err
    where = f"{path}: {mtd_name}"
    start = datetime.fromisoformat(_xml_text(root, "PRODUCT_START_TIME", where))
    start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)
    spacecraft = _xml_text(root, "SPACECRAFT_NAME", where)
    platform = "S2" + spacecraft.strip()[-1].upper()
    offsets = _band_offsets(root, "BOA_ADD_OFFSET", where)
    members: dict[str, str] = {}
    for el in root.iter():
        if local_name(el.tag) != "IMAGE_FILE" or not el.text:
            continue
        rel = el.text.strip()
        m = _IMAGE_FILE_RE.search(rel.removesuffix(".jp2"))
        if m is None:
            continue
        band, res = m["band"], int(m["res"])
        rel = rel if rel.endswith(".jp2") else rel + ".jp2"
        known = members.get(band)
        if known is None or res < int(_IMAGE_FILE_RE.search(known.removesuffix(".jp2"))["res"]):  # type: ignore[index]
            members[band] = rel
    if "SCL" not in members:
        raise ValueError(f"{where} lists no SCL image (IMAGE_FILE ..._SCL_20m): not a complete L2A product; "
                         f"re-download it")
    parsed = parse_l2a_name(src.name)
    tile = parsed["mgrs_tile"] if parsed else None
    if tile is None:
        m = re.search(r"T(\d{2}[A-Z]{3})_", members["SCL"].rsplit("/", 1)[-1])
        if m is None:
            raise ValueError(f"{path}: cannot tell the MGRS tile from the product or file names")
        tile = m[1]
    return L2AProduct(
        name=src.name, path=Path(path), platform=platform, datetime=start, mgrs_tile=str(tile),
        relative_orbit=int(_xml_text(root, "SENSING_ORBIT_NUMBER", where)),
        baseline=_xml_text(root, "PROCESSING_BASELINE", where),
        quantification=float(_xml_text(root, "BOA_QUANTIFICATION_VALUE", where)),
        offsets=offsets,
        band_paths={b: src.gdal_path(r) for b, r in members.items() if b != "SCL"},
        scl_path=src.gdal_path(members["SCL"]),
        cloud_cover=float(_xml_text(root, "Cloud_Coverage_Assessment", where)),
        metadata_sha256=hashlib.sha256(raw).hexdigest(),
        _members=members, _source=src,
    )


def product_bounds(product: L2AProduct, crs: str = "EPSG:4326") -> tuple[float, float, float, float]:
    """Bounds (left, bottom, right, top) of the product's SCL raster in ``crs`` (edges densified)."""
    path = product.band_path("SCL")
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"{product.name}: {path} has no georeferencing: re-download the product")
        left, bottom, right, top = rasterio.warp.transform_bounds(src.crs, crs, *src.bounds, densify_pts=21)
    return (left, bottom, right, top)


# ------------------------------------------------------------------------------------------ Level-1C


@dataclass(frozen=True)
class L1CProduct(_Product):
    """One Sentinel-2 Level-1C product (top-of-atmosphere reflectance): metadata and its band files.

    ``offsets`` are the RADIO_ADD_OFFSET per band (0 before baseline 04.00, -1000 after), ``quantification``
    the QUANTIFICATION_VALUE, ``cloud_cover`` the product's Cloud_Coverage_Assessment (percent),
    ``footprint_wkt`` the Product_Footprint (lon/lat WKT) or None when the metadata has none. Every band is
    at its native resolution (``L1C_RESOLUTION``); use ``band_path(band)`` to get one that is checked to exist.
    """

    cloud_cover: float
    footprint_wkt: str | None
    metadata_sha256: str = ""
    _members: dict[str, str] = field(default_factory=dict, repr=False)  # band -> path inside the .SAFE
    _source: _Source | None = field(default=None, repr=False, compare=False)

    @property
    def bands(self) -> tuple[str, ...]:
        """The bands the metadata lists, in ESA band_id order."""
        return tuple(b for b in BAND_IDS if b in self._members)

    def band_path(self, band: str) -> str:
        """GDAL path of a band (B10 included) after checking that its file is there."""
        band = "B10" if str(band).strip().upper() == "B10" else normalise_band(band)
        if band not in self._members:
            raise FileNotFoundError(
                f"{self.name}: band {band} is not listed in MTD_MSIL1C.xml (it lists {', '.join(self.bands)}): "
                f"re-download the product or remove it from {self.path.parent}")
        rel = self._members[band]
        self._check_member(band, rel)
        assert self._source is not None
        return self._source.gdal_path(rel)


def metadata_footprint(root: ET.Element) -> str | None:
    """The product's ``Product_Footprint/.../EXT_POS_LIST`` ("lat lon lat lon ...") as a lon/lat WKT polygon,
    or None when the metadata has no footprint."""
    for el in root.iter():
        if local_name(el.tag) == "EXT_POS_LIST" and el.text and el.text.split():
            values = [float(v) for v in el.text.split()]
            if len(values) < 8 or len(values) % 2:
                return None
            pairs = [(values[i + 1], values[i]) for i in range(0, len(values), 2)]
            if pairs[0] != pairs[-1]:
                pairs.append(pairs[0])
            return "POLYGON ((" + ", ".join(f"{lon:.8f} {lat:.8f}" for lon, lat in pairs) + "))"
    return None


def _datetime_utc(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def open_l1c(path: str | os.PathLike) -> L1CProduct:
    """Open a Level-1C product (``.SAFE`` folder or ``.zip``) and read MTD_MSIL1C.xml.

    Raises FileNotFoundError when there is no MTD_MSIL1C.xml (naming the level found instead) and ValueError
    when the metadata is malformed. Band files are checked when asked for (``band_path``, ``validate_l1c``).
    """
    src = _Source(Path(path), "L1C")
    raw = src.read(METADATA_FILE["L1C"])
    where = f"{path}: {src.safe_dir}/{METADATA_FILE['L1C']}"
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        raise ValueError(f"{where} is not valid XML ({err}): re-download the product") from err
    offsets = _band_offsets(root, "RADIO_ADD_OFFSET", where)
    members: dict[str, str] = {}
    for el in root.iter():
        if local_name(el.tag) != "IMAGE_FILE" or not el.text:
            continue
        rel = el.text.strip().removesuffix(".jp2")
        m = _L1C_IMAGE_FILE_RE.search(rel)
        if m is not None and m["band"] in BAND_IDS:
            members[m["band"]] = rel + ".jp2"
    if not members:
        raise ValueError(f"{where} lists no band image (Granule_List/IMAGE_FILE ..._B01): not a complete "
                         f"Level-1C product; re-download it")
    parsed = parse_product_name(src.name)
    tile = parsed["mgrs_tile"] if parsed else None
    if tile is None:
        m = re.search(r"T(\d{2}[A-Z]{3})_", next(iter(members.values())).rsplit("/", 1)[-1])
        if m is None:
            raise ValueError(f"{path}: cannot tell the MGRS tile from the product or file names")
        tile = m[1]
    spacecraft = _xml_text(root, "SPACECRAFT_NAME", where)
    return L1CProduct(
        name=src.name, path=Path(path), platform="S2" + spacecraft.strip()[-1].upper(),
        datetime=_datetime_utc(_xml_text(root, "PRODUCT_START_TIME", where)), mgrs_tile=str(tile),
        relative_orbit=int(_xml_text(root, "SENSING_ORBIT_NUMBER", where)),
        baseline=_xml_text(root, "PROCESSING_BASELINE", where),
        quantification=float(_xml_text(root, "QUANTIFICATION_VALUE", where)),
        offsets=offsets, cloud_cover=float(_xml_text(root, "Cloud_Coverage_Assessment", where)),
        footprint_wkt=metadata_footprint(root), metadata_sha256=hashlib.sha256(raw).hexdigest(),
        _members=members, _source=src,
    )


def validate_l1c(path: str | os.PathLike, required: Sequence[str] = BAND_IDS) -> L1CProduct:
    """``open_l1c`` plus a check that every band of ``required`` is listed and its file exists.

    A missing band raises FileNotFoundError naming the product, the band and its file, and the fix
    (re-download the product or remove it from the input folder)."""
    product = open_l1c(path)
    for band in required:
        product.band_path(band)
    return product


def l1c_toa_reflectance(dn: np.ndarray, offset: float, quantification: float) -> np.ndarray:
    """Top-of-atmosphere reflectance of L1C digital numbers (float32; DN 0 and NaN -> NaN).

    ESA Sentinel-2 L1C product specification (baseline >= 04.00 harmonisation):
    reflectance = (DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE, DN 0 being "no data".
    """
    return boa_reflectance(dn, offset, quantification)


# ---------------------------------------------------------------------------------------------- pure math


def boa_reflectance(dn: np.ndarray, offset: float, quantification: float) -> np.ndarray:
    """Bottom-of-atmosphere reflectance of L2A digital numbers (float32; DN 0 and NaN -> NaN).

    ESA Sentinel-2 L2A product specification (baseline >= 04.00):
    reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE, DN 0 being "no data".
    """
    dn = np.asarray(dn, dtype=np.float32)
    out = (dn + np.float32(offset)) / np.float32(quantification)
    return np.where(dn == 0, np.float32(np.nan), out).astype(np.float32, copy=False)


def scl_valid_mask(scl: np.ndarray, invalid_classes: Iterable[int]) -> np.ndarray:
    """True where the Sen2Cor scene classification is not one of ``invalid_classes``."""
    return ~np.isin(scl, np.asarray(list(invalid_classes)))


#: quality codes of band QA of the ingested product (and of the same-date layers, cropflow.layers)
QA_NODATA, QA_CLEAR, QA_CLOUD, QA_INVALID = 0, 1, 2, 3


def qa_codes(scl: np.ndarray, valid: np.ndarray, cloud_classes: Iterable[int]) -> np.ndarray:
    """Quality code per pixel (float32 for the reflectance raster): 0 no data (SCL 0), 1 clear and valid,
    2 cloud (SCL in ``cloud_classes``, as counted in the cloud fraction), 3 other invalid (snow, saturated,
    a band without data, ...)."""
    qa = np.full(scl.shape, QA_INVALID, dtype=np.float32)
    qa[np.isin(scl, list(cloud_classes))] = QA_CLOUD
    qa[valid] = QA_CLEAR
    qa[scl == 0] = QA_NODATA
    return qa


def cloud_counts(scl: np.ndarray, cloud_classes: Iterable[int], inside: np.ndarray | None = None) -> tuple[int, int]:
    """(cloudy pixels, covered pixels) among the pixels ``inside`` the AOI that the product covers (SCL != 0)."""
    covered = scl != 0
    if inside is not None:
        covered &= inside
    cloudy = covered & np.isin(scl, np.asarray(list(cloud_classes)))
    return int(np.count_nonzero(cloudy)), int(np.count_nonzero(covered))


def cloud_fraction(scl: np.ndarray, cloud_classes: Iterable[int], inside: np.ndarray | None = None) -> float:
    """Share of cloud-class SCL pixels among the AOI pixels the product covers (NaN if it covers none).

    fraction = #(inside & SCL != 0 & SCL in cloud_classes) / #(inside & SCL != 0)
    """
    cloudy, covered = cloud_counts(scl, cloud_classes, inside)
    return cloudy / covered if covered else math.nan


def resampling_for(native_resolution: float, grid_resolution: float) -> str:
    """Resampling of a reflectance band onto the grid: nearest at equal pixel size (10 m bands on a 10 m
    grid), bilinear when upsampling (20/60 m bands onto 10 m), average when the grid is coarser."""
    if math.isclose(native_resolution, grid_resolution):
        return "nearest"
    return "bilinear" if native_resolution > grid_resolution else "average"


# -------------------------------------------------------------------------------------------------- ingest

AoiLike = BaseGeometry | gpd.GeoDataFrame | gpd.GeoSeries | Callable[[ProjectGrid], np.ndarray] | None


def _aoi_mask_fn(aoi: AoiLike, grid: ProjectGrid) -> Callable[[ProjectGrid], np.ndarray]:
    if aoi is None:
        return lambda sub: np.ones(sub.shape, dtype=bool)
    if callable(aoi) and not isinstance(aoi, (BaseGeometry, gpd.GeoDataFrame, gpd.GeoSeries)):
        return aoi
    if isinstance(aoi, (gpd.GeoDataFrame, gpd.GeoSeries)):
        if aoi.crs is None:
            raise ValueError("the AOI has no CRS: give it one (e.g. read it with cropflow.grid.read_aoi)")
        geom = aoi.to_crs(grid.crs).union_all()
    else:
        geom = aoi

    def mask(sub: ProjectGrid) -> np.ndarray:
        return rasterio.features.geometry_mask([geom], out_shape=sub.shape, transform=sub.transform, invert=True)

    return mask


def _row_grid(grid: ProjectGrid, win: rasterio.windows.Window) -> ProjectGrid:
    r = grid.resolution
    top = grid.bounds[3] - win.row_off * r
    return ProjectGrid(grid.crs, r, (grid.bounds[0], top - win.height * r, grid.bounds[2], top))


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _dn_view(path: str) -> str:
    """A GDAL path of the band with 0 declared as nodata (ESA's JP2 files do not declare it)."""
    return f"vrt://{path}?a_nodata=0"


def _unused_reason(coverage: float, cloud: float, valid: int, max_cloud_fraction: float) -> str | None:
    if coverage <= 0:
        return "no overlap with the AOI"
    if cloud > max_cloud_fraction:
        shown = f"{cloud:.2f}" if f"{cloud:.2f}" != f"{max_cloud_fraction:.2f}" else f"{cloud:.4f}"
        return f"cloud fraction {shown} > {max_cloud_fraction:g}"
    if valid == 0:
        return "no valid pixel in the AOI"
    return None


def ingest_l2a(
    product_path: str | os.PathLike,
    grid: ProjectGrid,
    aoi: AoiLike,
    bands: Sequence[str],
    invalid_scl: Iterable[int],
    cloud_scl: Iterable[int],
    max_cloud_fraction: float,
    out_tif: str | os.PathLike,
    out_json: str | os.PathLike,
    window_rows: int = 512,
    *,
    cloud_mask: str | os.PathLike | None = None,
    cloud_method: str = "scl",
    keep_scl: Iterable[int] = (0, 1, 3, 11),
    provenance: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Put the ``bands`` of one L2A product on the project ``grid`` as float32 BOA reflectance.

    Window by window (``window_rows`` grid rows at a time, so memory is bounded by the window): every band
    is resampled onto the grid (``resampling_for``: nearest for 10 m bands on a 10 m grid, bilinear for
    20/60 m bands; SCL nearest), converted with ``boa_reflectance``, and pixels whose SCL is in
    ``invalid_scl`` (or where a band has no data) are set to NaN in every band. ``aoi`` is a geometry in the
    grid CRS, a GeoDataFrame (any CRS), a function ``subgrid -> bool mask``, or None (the whole grid).

    Writes ``out_tif`` (float32 on the whole grid, band descriptions = band names, then band ``QA`` with the
    ``qa_codes`` the same-date layers merge by; tags SCENE, DATETIME,
    MGRS_TILE, ...) and ``out_json`` {scene, datetime, tile, cloud_fraction, valid_fraction, coverage, used,
    reason}: ``coverage`` = share of AOI pixels the product covers (SCL != 0), ``cloud_fraction`` = share of
    ``cloud_scl`` pixels among those (null when none is covered), ``valid_fraction`` = share of AOI pixels
    left valid. ``used`` is false (logged as a warning, the raster is still written) when the product does
    not cover the AOI, when its cloud fraction exceeds ``max_cloud_fraction`` or when no pixel is valid.

    ``cloud_method`` "s2cloudless" or "both" combine SCL with the s2cloudless mask ``cloud_mask`` (the raster
    of ``cropflow.clouds.s2cloudless_mask``, read with nearest resampling) by ``cropflow.clouds.combine_masks``
    (``keep_scl``: SCL classes still invalid with "s2cloudless"). ``provenance`` (e.g. Sen2Cor's
    ``sen2cor.json``) adds ``level_in``, ``l2a`` and ``sen2cor_version`` to the sidecar. Returns the sidecar dict.
    """
    from cropflow.clouds import combine_masks

    if cloud_method != "scl" and cloud_mask is None:
        raise ValueError(f"s2.clouds.method {cloud_method}: give the s2cloudless mask of {Path(product_path).name} "
                         f"(rule s2_clouds)")
    product = open_l2a(product_path)
    names = [normalise_band(b) for b in bands]
    if not names:
        raise ValueError("config s2.bands is empty: list the bands to use, e.g. [B04, B8A, B11]")
    if "SCL" in names:
        raise ValueError("config s2.bands: SCL is the cloud mask, not a reflectance band; remove it")
    paths = {b: _dn_view(product.band_path(b)) for b in names}
    methods = {b: resampling_for(product.band_resolution(b), grid.resolution) for b in names}
    scl_path = _dn_view(product.band_path("SCL"))
    footprint = product_bounds(product, grid.crs)
    invalid, clouds = list(invalid_scl), list(cloud_scl)
    mask_fn = _aoi_mask_fn(aoi, grid)
    n_inside = n_covered = n_cloud = n_valid = 0
    scene = str(provenance["l1c"]) if provenance and provenance.get("l1c") else product.name
    tags = {"SCENE": scene, "L2A": product.name, "DATETIME": product.datetime.isoformat(), "MGRS_TILE": product.mgrs_tile,
            "PLATFORM": product.platform, "RELATIVE_ORBIT": product.relative_orbit, "BASELINE": product.baseline}
    windows = row_windows(grid, window_rows)
    log.info("%s: %d bands onto the %d x %d grid in %d windows (%s)", product.name, len(names), grid.height,
             grid.width, len(windows), ", ".join(f"{b} {methods[b]}" for b in names))
    with RasterWriter(out_tif, grid, count=len(names) + 1, dtype="float32", nodata=float("nan"),
                      band_names=[*names, "QA"], tags=tags) as writer:
        for i, win in enumerate(windows, start=1):
            sub = _row_grid(grid, win)
            inside = mask_fn(sub)
            n_inside += int(np.count_nonzero(inside))
            if not _overlaps(sub.bounds, footprint):
                empty = np.full((len(names) + 1, *sub.shape), np.nan, dtype=np.float32)
                empty[-1] = QA_NODATA
                writer.write(empty, win)
                continue
            scl = read_on_grid(scl_path, sub, resampling="nearest", dtype="uint8", nodata=0)[0]
            s2c = (read_on_grid(cloud_mask, sub, bands=[2], resampling="nearest", dtype="uint8", nodata=255)[0]
                   if cloud_method != "scl" else None)
            invalid_px, cloud_px = combine_masks(scl, s2c, cloud_method, invalid, clouds, keep_scl)
            refl = np.stack([
                boa_reflectance(read_on_grid(paths[b], sub, resampling=methods[b])[0], product.offsets[b],
                                product.quantification)
                for b in names
            ])
            valid = ~invalid_px & (scl != 0) & np.isfinite(refl).all(axis=0)
            refl[:, ~valid] = np.nan
            covered_px = (scl != 0) & inside
            cloudy, covered = int(np.count_nonzero(covered_px & cloud_px)), int(np.count_nonzero(covered_px))
            n_cloud, n_covered = n_cloud + cloudy, n_covered + covered
            n_valid += int(np.count_nonzero(valid & inside))
            writer.write(np.concatenate([refl, qa_codes(scl, valid, clouds)[None]]), win)
            log.info("%s: window %d/%d done", product.name, i, len(windows))
    coverage = n_covered / n_inside if n_inside else 0.0
    cloud = n_cloud / n_covered if n_covered else math.nan
    reason = _unused_reason(coverage, cloud, n_valid, max_cloud_fraction)
    meta: dict[str, object] = {
        "scene": scene, "datetime": product.datetime.isoformat(), "tile": product.mgrs_tile,
        "cloud_fraction": None if math.isnan(cloud) else cloud,
        "valid_fraction": n_valid / n_inside if n_inside else 0.0, "coverage": coverage,
        "used": reason is None, "reason": reason, "cloud_method": cloud_method,
        "level_in": "L1C" if provenance else "L2A", "l2a": product.name,
        "sen2cor_version": provenance.get("sen2cor_version") if provenance else "esa",
    }
    if reason is not None:
        log.warning("%s is not used: %s (cloud fraction over the AOI %s, coverage %.3f)", product.name, reason,
                    "n/a" if math.isnan(cloud) else f"{cloud:.3f}", coverage)
    _write_json(out_json, meta)
    return meta


def _write_json(path: str | os.PathLike, doc: Mapping[str, object]) -> None:
    """Write ``doc`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
