"""Synthetic Sentinel-2 Level-1C and Level-2A products in the real ESA SAFE layout.

``write_l2a`` turns reflectance arrays on a UTM grid into a product that cropflow (and GDAL, and other
SAFE readers) open like an ESA product: ``<name>.SAFE/MTD_MSIL2A.xml``, ``GRANULE/<granule>/MTD_TL.xml``,
``IMG_DATA/R10m|R20m|R60m/T<tile>_<sensing>_<band>_<res>m.jp2`` (lossless, georeferenced JPEG 2000),
optionally zipped with the ``.SAFE`` folder at the zip's root. ``write_l1c`` does the same for top-of-atmosphere
reflectance: ``MTD_MSIL1C.xml`` and all 13 bands (B10 included) at their native resolutions in one
``IMG_DATA/T<tile>_<sensing>_<band>.jp2`` folder.
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import pyproj
import rasterio
from affine import Affine

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.s2 import (BAND_IDS, L1C_NAMESPACE, L1C_RESOLUTION, L2A_NAMESPACE, NATIVE_RESOLUTION,
                         SCL_CLOUD_CLASSES, SPACECRAFT, TILE_NAMESPACE, normalise_band)

#: BOA_QUANTIFICATION_VALUE and BOA_ADD_OFFSET written by baselines >= 04.00
QUANTIFICATION = 10000
ADD_OFFSET = -1000
#: launch dates, for a plausible absolute orbit number when none is given (14.3 orbits a day)
_LAUNCH = {"S2A": datetime(2015, 6, 23, tzinfo=timezone.utc), "S2B": datetime(2017, 3, 7, tzinfo=timezone.utc),
           "S2C": datetime(2024, 9, 5, tzinfo=timezone.utc), "S2D": datetime(2028, 1, 1, tzinfo=timezone.utc)}
#: SCL class -> Image_Content_QI element of MTD_MSIL2A.xml
_SCL_QI = {0: "NODATA_PIXEL_PERCENTAGE", 1: "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE", 2: "DARK_FEATURES_PERCENTAGE",
           3: "CLOUD_SHADOW_PERCENTAGE", 4: "VEGETATION_PERCENTAGE", 5: "NOT_VEGETATED_PERCENTAGE",
           6: "WATER_PERCENTAGE", 7: "UNCLASSIFIED_PERCENTAGE", 8: "MEDIUM_PROBA_CLOUDS_PERCENTAGE",
           9: "HIGH_PROBA_CLOUDS_PERCENTAGE", 10: "THIN_CIRRUS_PERCENTAGE", 11: "SNOW_ICE_PERCENTAGE"}
_STAMP = "%Y%m%dT%H%M%S"


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


class _S2Name(TypedDict):
    platform: str
    sensing_time: datetime
    mgrs_tile: str
    relative_orbit: int
    baseline: str


class S2Identity(_S2Name, total=False):
    """The keywords that name a product written by ``write_l1c``/``write_l2a``: ``generation_time`` defaults to
    2 h (L1C) or 3 h (L2A) after sensing, ``absolute_orbit`` to an estimate from the launch date (it only names
    the granule)."""

    generation_time: datetime | None
    absolute_orbit: int | None


@dataclass(frozen=True)
class _Take:
    """One product's identity, resolved (UTC times, an absolute orbit), and the names derived from it."""

    level: str                # "L1C" or "L2A"
    platform: str
    sensing: datetime
    generation: datetime
    mgrs_tile: str
    relative_orbit: int
    baseline: str
    absolute_orbit: int

    @classmethod
    def resolve(cls, level: str, identity: Mapping) -> "_Take":
        missing = sorted(S2Identity.__required_keys__ - set(identity))
        unknown = sorted(set(identity) - set(S2Identity.__annotations__))
        if missing or unknown:
            raise TypeError(f"write_{level.lower()}: {'missing' if missing else 'unknown'} keyword(s) "
                            f"{missing or unknown}; give {sorted(S2Identity.__annotations__)}")
        sensing = _utc(identity["sensing_time"])
        generation = identity.get("generation_time")
        generation = sensing + timedelta(hours=2 if level == "L1C" else 3) if generation is None else _utc(generation)
        orbit = identity.get("absolute_orbit")
        if orbit is None:
            orbit = max(1, int((sensing - _LAUNCH[identity["platform"]]).total_seconds() / 86400 * 14.3))
        return cls(level, str(identity["platform"]), sensing, generation, str(identity["mgrs_tile"]),
                   int(identity["relative_orbit"]), str(identity["baseline"]), int(orbit))

    @property
    def name(self) -> str:
        return l2a_name(self.platform, self.sensing, self.baseline, self.relative_orbit, self.mgrs_tile,
                        self.generation, level=self.level)

    @property
    def granule(self) -> str:
        return f"{self.level}_T{self.mgrs_tile}_A{self.absolute_orbit:06d}_{self.sensing:{_STAMP}}"

    @property
    def file_prefix(self) -> str:
        return f"T{self.mgrs_tile}_{self.sensing:{_STAMP}}"


def l2a_name(platform: str, sensing_time: datetime, baseline: str, relative_orbit: int, mgrs_tile: str,
             generation_time: datetime, level: str = "L2A") -> str:
    """ESA Level-2A (or, with ``level="L1C"``, Level-1C) product name (without ``.SAFE``):
    ``S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T060311``."""
    if level not in ("L1C", "L2A"):
        raise ValueError(f"level {level!r}: give L1C or L2A")
    if platform not in SPACECRAFT:
        raise ValueError(f"platform {platform!r}: use one of {', '.join(SPACECRAFT)}")
    if not re.fullmatch(r"\d{2}\.\d{2}", baseline):
        raise ValueError(f"processing baseline {baseline!r}: write it as NN.NN, e.g. 05.09")
    if not re.fullmatch(r"\d{2}[A-Z]{3}", mgrs_tile):
        raise ValueError(f"MGRS tile {mgrs_tile!r}: write it as 2 digits and 3 letters, e.g. 52UCU")
    if not 1 <= int(relative_orbit) <= 143:
        raise ValueError(f"relative orbit {relative_orbit}: Sentinel-2 relative orbits are 1..143")
    return (f"{platform}_MSI{level}_{_utc(sensing_time):{_STAMP}}_N{baseline.replace('.', '')}"
            f"_R{int(relative_orbit):03d}_T{mgrs_tile}_{_utc(generation_time):{_STAMP}}")


def l1c_name(platform: str, sensing_time: datetime, baseline: str, relative_orbit: int, mgrs_tile: str,
             generation_time: datetime) -> str:
    """ESA Level-1C product name (without ``.SAFE``):
    ``S2A_MSIL1C_20230512T023551_N0509_R089_T52UCU_20230512T041210``."""
    return l2a_name(platform, sensing_time, baseline, relative_orbit, mgrs_tile, generation_time, level="L1C")


def dn_from_reflectance(reflectance: np.ndarray) -> np.ndarray:
    """L2A digital numbers of BOA reflectance: DN = round(reflectance * 10000 + 1000) clipped to 1..65535,
    0 (no data) where the reflectance is NaN (inverse of ``cropflow.s2.boa_reflectance``)."""
    r = np.asarray(reflectance, dtype=np.float64)
    dn = np.clip(np.rint(np.nan_to_num(r) * QUANTIFICATION - ADD_OFFSET), 1, 65535)
    return np.where(np.isnan(r), 0, dn).astype(np.uint16)


def _check_grid(grid10: ProjectGrid, step: int) -> None:
    if not np.isclose(grid10.resolution, 10.0):
        raise ValueError(f"grid10 has {grid10.resolution} m pixels: give the 10 m grid of the product")
    for b in grid10.bounds:
        if abs(b / step - round(b / step)) > 1e-6:
            raise ValueError(f"grid10 bounds {grid10.bounds} are not multiples of {step} m, which the "
                             f"{step} m bands need")


def _write_jp2(path: Path, data: np.ndarray, crs: str, transform: Affine) -> None:
    """Lossless, georeferenced JPEG 2000 (GDAL JP2OpenJPEG, QUALITY=100 REVERSIBLE=YES), checked on read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "JP2OpenJPEG", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "crs": crs, "transform": transform}
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", QUALITY=100, REVERSIBLE="YES", **profile) as dst:
            dst.write(data, 1)
        with rasterio.open(path) as src:
            if src.crs is None or src.crs != rasterio.crs.CRS.from_user_input(crs) or \
                    not src.transform.almost_equals(transform):
                raise RuntimeError(f"{path} was written without its georeferencing: GDAL's JP2OpenJPEG driver "
                                   f"must support GeoJP2/GMLJP2 boxes")


def _sub(parent: ET.Element, tag: str, text: object = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def _iso(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m-%dT%H:%M:%S.") + f"{_utc(t).microsecond // 1000:03d}Z"


def _user_product(namespace: str, take: _Take, image_files: list[str]
                  ) -> tuple[ET.Element, ET.Element, ET.Element]:
    """The parts an MTD_MSIL1C.xml and an MTD_MSIL2A.xml share: the root, its General_Info with Product_Info
    (times, URI, level, type, baseline, datatake, granule list) and the Product_Image_Characteristics begun
    with the special values; returns (root, General_Info, characteristics)."""
    level, platform, sensing, baseline = take.level[1:], take.platform, take.sensing, take.baseline
    ET.register_namespace("n1", namespace)
    n1 = f"{{{namespace}}}"
    root = ET.Element(f"{n1}Level-{level}_User_Product",
                      {"{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": f"{namespace}"})
    general = _sub(root, f"{n1}General_Info")
    info = _sub(general, "Product_Info")
    _sub(info, "PRODUCT_START_TIME", _iso(sensing))
    _sub(info, "PRODUCT_STOP_TIME", _iso(sensing + timedelta(seconds=5)))
    _sub(info, "PRODUCT_URI", f"{take.name}.SAFE")
    _sub(info, "PROCESSING_LEVEL", f"Level-{level}")
    _sub(info, "PRODUCT_TYPE", f"S2MSI{level}")
    _sub(info, "PROCESSING_BASELINE", baseline)
    _sub(info, "GENERATION_TIME", _iso(take.generation))
    datatake = _sub(info, "Datatake",
                    datatakeIdentifier=f"G{platform}_{sensing:{_STAMP}}_{take.absolute_orbit:06d}_N{baseline}")
    _sub(datatake, "SPACECRAFT_NAME", SPACECRAFT[platform])
    _sub(datatake, "DATATAKE_TYPE", "INS-NOBS")
    _sub(datatake, "DATATAKE_SENSING_START", _iso(sensing))
    _sub(datatake, "SENSING_ORBIT_NUMBER", take.relative_orbit)
    _sub(datatake, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    options = _sub(info, "Query_Options", completeSingleTile="true")
    _sub(options, "PRODUCT_FORMAT", "SAFE_COMPACT")
    organisation = _sub(info, "Product_Organisation")
    granules = _sub(_sub(organisation, "Granule_List"), "Granule", granuleIdentifier=take.granule,
                    imageFormat="JPEG2000")
    for rel in image_files:
        _sub(granules, "IMAGE_FILE", rel.removesuffix(".jp2"))
    chars = _sub(general, "Product_Image_Characteristics")
    for text, index in (("NODATA", 0), ("SATURATED", 65535)):
        special = _sub(chars, "Special_Values")
        _sub(special, "SPECIAL_VALUE_TEXT", text)
        _sub(special, "SPECIAL_VALUE_INDEX", index)
    return root, general, chars


def _band_lists(chars: ET.Element, offset_tags: tuple[str, str], resolution: Mapping[str, int]) -> None:
    """The per-band offset list (``offset_tags``: list and item element names) and Spectral_Information_List
    (band ids 0..12, physical band names, ``resolution`` in m) of Product_Image_Characteristics."""
    offsets = _sub(chars, offset_tags[0])
    for i, _ in enumerate(BAND_IDS):
        _sub(offsets, offset_tags[1], ADD_OFFSET, band_id=str(i))
    spectral = _sub(chars, "Spectral_Information_List")
    for i, band in enumerate(BAND_IDS):
        item = _sub(spectral, "Spectral_Information", bandId=str(i),
                    physicalBand=band if band == "B8A" else f"B{int(band[1:])}")
        _sub(item, "RESOLUTION", resolution[band])


def _product_xml(take: _Take, image_files: list[str], scl: np.ndarray) -> bytes:
    root, general, chars = _user_product(L2A_NAMESPACE, take, image_files)
    n1 = f"{{{L2A_NAMESPACE}}}"
    quant = _sub(chars, "QUANTIFICATION_VALUES_LIST")
    _sub(quant, "BOA_QUANTIFICATION_VALUE", QUANTIFICATION, unit="none")
    _sub(quant, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
    _sub(quant, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
    _band_lists(chars, ("BOA_ADD_OFFSET_VALUES_LIST", "BOA_ADD_OFFSET"),
                {b: NATIVE_RESOLUTION.get(b, 60) for b in BAND_IDS})
    _sub(root, f"{n1}Geometric_Info")
    quality = _sub(root, f"{n1}Quality_Indicators_Info")
    percent = _scl_percentages(scl)
    _sub(quality, "Cloud_Coverage_Assessment", f"{sum(percent[c] for c in SCL_CLOUD_CLASSES):.6f}")
    content = _sub(quality, "Image_Content_QI")
    for cls, tag in _SCL_QI.items():
        _sub(content, tag, f"{percent[cls]:.6f}")
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _scl_percentages(scl: np.ndarray) -> dict[int, float]:
    """Percent of each SCL class; class 0 over all pixels, the others over the pixels with data (as Sen2Cor)."""
    counts = np.bincount(scl.ravel(), minlength=12)
    data = max(int(counts[1:].sum()), 1)
    return {c: 100.0 * counts[c] / (data if c else max(scl.size, 1)) for c in range(12)}


def _tile_xml(take: _Take, grid10: ProjectGrid, resolutions: list[int]) -> bytes:
    ET.register_namespace("n1", TILE_NAMESPACE)
    n1 = f"{{{TILE_NAMESPACE}}}"
    root = ET.Element(f"{n1}Level-2A_Tile_ID")
    general = _sub(root, f"{n1}General_Info")
    _sub(general, "TILE_ID", f"{take.platform}_OPER_MSI_L2A_TL_2APS_{take.generation:{_STAMP}}_A"
         f"{take.absolute_orbit:06d}_T{take.mgrs_tile}_N{take.baseline}", metadataLevel="Brief")
    _sub(general, "SENSING_TIME", _iso(take.sensing), metadataLevel="Standard")
    geometric = _sub(root, f"{n1}Geometric_Info")
    geocoding = _sub(geometric, "Tile_Geocoding", metadataLevel="Brief")
    crs = pyproj.CRS.from_user_input(grid10.crs)
    epsg = crs.to_epsg()
    if epsg is None:
        raise ValueError(f"grid10 CRS {grid10.crs} has no EPSG code: give the UTM zone as EPSG:326zz/327zz")
    _sub(geocoding, "HORIZONTAL_CS_NAME", crs.name.replace("WGS 84", "WGS84"))
    _sub(geocoding, "HORIZONTAL_CS_CODE", f"EPSG:{epsg}")
    for res in resolutions:
        size = _sub(geocoding, "Size", resolution=str(res))
        _sub(size, "NROWS", grid10.height * 10 // res)
        _sub(size, "NCOLS", grid10.width * 10 // res)
    for res in resolutions:
        pos = _sub(geocoding, "Geoposition", resolution=str(res))
        _sub(pos, "ULX", int(round(grid10.bounds[0])))
        _sub(pos, "ULY", int(round(grid10.bounds[3])))
        _sub(pos, "XDIM", res)
        _sub(pos, "YDIM", -res)
    _sub(root, f"{n1}Quality_Indicators_Info", metadataLevel="Standard")
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def write_l2a(folder: str | os.PathLike, *, grid10: ProjectGrid, reflectance: Mapping[str, np.ndarray],
              scl: np.ndarray, zip: bool = False, **identity: Unpack[S2Identity]) -> Path:
    """Write a Sentinel-2 L2A product in the real SAFE layout and return its ``.SAFE`` (or ``.zip``) path.

    ``reflectance`` maps band names to float BOA reflectance (NaN = no data): 10 m bands (B02 B03 B04
    B08) shaped ``grid10.shape``, 20 m bands (B05 B06 B07 B8A B11 B12) ``grid10.shape // 2``, 60 m bands
    (B01 B09) ``grid10.shape // 6``; ``scl`` is the uint8 scene classification at 20 m. DN are
    ``dn_from_reflectance`` (offset -1000, quantification 10000) in lossless JPEG 2000; the metadata
    carries the cloud cover (percent of SCL 8/9/10 among pixels with data). ``identity`` names the product
    (``S2Identity``). The product is written atomically; ``zip=True`` writes ``<name>.zip`` holding ``<name>.SAFE/``.
    """
    take = _Take.resolve("L2A", identity)
    name = take.name
    bands = {normalise_band(b): np.asarray(a) for b, a in reflectance.items()}
    if "SCL" in bands:
        raise ValueError("give the scene classification as scl=, not as a reflectance band")
    resolutions = sorted({20} | {NATIVE_RESOLUTION[b] for b in bands})
    _check_grid(grid10, 60 if 60 in resolutions else 20)
    scl = np.asarray(scl)
    for band, arr in [*bands.items(), ("SCL", scl)]:
        res = NATIVE_RESOLUTION[band]
        expected = (grid10.height * 10 // res, grid10.width * 10 // res)
        if arr.shape != expected:
            raise ValueError(f"band {band} is shaped {arr.shape}; at {res} m on grid10 it must be {expected}")
    if scl.dtype != np.uint8 and (scl.min() < 0 or scl.max() > 11):
        raise ValueError("scl holds values outside the SCL classes 0..11")
    scl = scl.astype(np.uint8)

    granule, prefix = take.granule, take.file_prefix
    files: dict[str, np.ndarray] = {}
    for band in [b for b in NATIVE_RESOLUTION if b in bands] + ["SCL"]:
        res = NATIVE_RESOLUTION[band]
        rel = f"GRANULE/{granule}/IMG_DATA/R{res}m/{prefix}_{band}_{res}m.jp2"
        files[rel] = scl if band == "SCL" else dn_from_reflectance(bands[band])
    mtd = _product_xml(take, list(files), scl)
    tile_mtd = _tile_xml(take, grid10, resolutions)

    def write_safe(safe: Path) -> None:
        (safe / f"GRANULE/{granule}/QI_DATA").mkdir(parents=True)
        (safe / "MTD_MSIL2A.xml").write_bytes(mtd)
        (safe / f"GRANULE/{granule}/MTD_TL.xml").write_bytes(tile_mtd)
        for rel, data in files.items():
            res = int(rel.rsplit("_", 1)[1][:2])
            transform = Affine(res, 0.0, grid10.bounds[0], 0.0, -res, grid10.bounds[3])
            _write_jp2(safe / rel, data, grid10.crs, transform)

    return _write_safe_or_zip(Path(folder), name, write_safe, zip)


def _footprint_text(grid10: ProjectGrid) -> str:
    """The data extent of a product as ESA's EXT_POS_LIST: "lat lon" of the corners, closed, in EPSG:4326."""
    left, bottom, right, top = grid10.bounds
    to_4326 = pyproj.Transformer.from_crs(grid10.crs, "EPSG:4326", always_xy=True)
    corners = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
    return " ".join(f"{lat:.8f} {lon:.8f}" for lon, lat in (to_4326.transform(x, y) for x, y in corners))


def _l1c_product_xml(take: _Take, image_files: list[str], cloud_cover: float, footprint: str) -> bytes:
    root, general, chars = _user_product(L1C_NAMESPACE, take, image_files)
    n1 = f"{{{L1C_NAMESPACE}}}"
    _sub(chars, "QUANTIFICATION_VALUE", QUANTIFICATION, unit="none")
    _band_lists(chars, ("Radiometric_Offset_List", "RADIO_ADD_OFFSET"), L1C_RESOLUTION)
    geometric = _sub(root, f"{n1}Geometric_Info")
    outline = _sub(_sub(_sub(geometric, "Product_Footprint"), "Product_Footprint"), "Global_Footprint")
    _sub(outline, "EXT_POS_LIST", footprint)
    quality = _sub(root, f"{n1}Quality_Indicators_Info")
    _sub(quality, "Cloud_Coverage_Assessment", f"{cloud_cover:.6f}")
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _write_safe_or_zip(folder: Path, name: str, write_safe, zip: bool) -> Path:
    """Write a product with ``write_safe(<tmp .SAFE path>)`` atomically as ``<name>.SAFE`` or ``<name>.zip``."""
    if not zip:
        with atomic_path(folder / f"{name}.SAFE", directory=True) as tmp:
            write_safe(tmp)
        return folder / f"{name}.SAFE"
    with atomic_path(folder / f"{name}.zip") as tmp:
        safe = tmp.parent / f"{name}.SAFE"
        write_safe(safe)
        with zipfile.ZipFile(tmp, "w") as zf:
            for path in [safe, *sorted(safe.rglob("*"))]:
                arc = path.relative_to(tmp.parent).as_posix()
                if path.is_dir():
                    zf.write(path, arc + "/")
                else:
                    kind = zipfile.ZIP_STORED if path.suffix == ".jp2" else zipfile.ZIP_DEFLATED
                    zf.write(path, arc, compress_type=kind)
        shutil.rmtree(safe)
    return folder / f"{name}.zip"


def write_l1c(folder: str | os.PathLike, *, grid10: ProjectGrid, toa: Mapping[str, np.ndarray],
              cloud_cover: float = 0.0, zip: bool = False, omit_bands: Sequence[str] = (),
              **identity: Unpack[S2Identity]) -> Path:
    """Write a Sentinel-2 Level-1C product in the real SAFE layout and return its ``.SAFE`` (or ``.zip``) path.

    ``toa`` maps each of the 13 bands (B01..B12 with B8A and B10) to float top-of-atmosphere reflectance
    (NaN = no data) at its native resolution on ``grid10`` (10 m: ``grid10.shape``; 20 m: half; 60 m: a sixth).
    DN = round(TOA * 10000 + 1000) (RADIO_ADD_OFFSET -1000, QUANTIFICATION_VALUE 10000, baseline >= 04.00),
    0 = no data, lossless JPEG 2000 in ``GRANULE/L1C_T<tile>_A<orbit>_<sensing>/IMG_DATA/T<tile>_<sensing>_<band>.jp2``.
    MTD_MSIL1C.xml lists the granule's image files, the offsets, ``cloud_cover`` (percent) and the data extent
    as Product_Footprint. ``omit_bands`` are listed in the metadata but not written (a damaged download, for
    tests). ``identity`` names the product (``S2Identity``). Written atomically; ``zip=True`` writes
    ``<name>.zip`` holding ``<name>.SAFE/``.
    """
    take = _Take.resolve("L1C", identity)
    name = take.name
    bands = {("B10" if str(b).upper() == "B10" else normalise_band(b)): np.asarray(a) for b, a in toa.items()}
    missing = [b for b in BAND_IDS if b not in bands]
    if missing:
        raise ValueError(f"toa lacks bands {missing}: a Level-1C product has all 13 bands {list(BAND_IDS)}")
    _check_grid(grid10, 60)
    for band, arr in bands.items():
        res = L1C_RESOLUTION[band]
        expected = (grid10.height * 10 // res, grid10.width * 10 // res)
        if arr.shape != expected:
            raise ValueError(f"band {band} is shaped {arr.shape}; at {res} m on grid10 it must be {expected}")
    omitted = {("B10" if str(b).upper() == "B10" else normalise_band(b)) for b in omit_bands}
    granule, prefix = take.granule, take.file_prefix
    files = {f"GRANULE/{granule}/IMG_DATA/{prefix}_{band}.jp2": band for band in BAND_IDS}
    mtd = _l1c_product_xml(take, list(files), float(cloud_cover), _footprint_text(grid10))

    def write_safe(safe: Path) -> None:
        (safe / f"GRANULE/{granule}/QI_DATA").mkdir(parents=True)
        (safe / "MTD_MSIL1C.xml").write_bytes(mtd)
        for rel, band in files.items():
            if band in omitted:
                continue
            res = L1C_RESOLUTION[band]
            transform = Affine(res, 0.0, grid10.bounds[0], 0.0, -res, grid10.bounds[3])
            _write_jp2(safe / rel, dn_from_reflectance(bands[band]), grid10.crs, transform)

    return _write_safe_or_zip(Path(folder), name, write_safe, zip)


def write_l2a_placeholder(folder: str | os.PathLike, *, crs: str, bounds: tuple[float, float, float, float],
                          bands: Sequence[str] = ("B04", "B8A", "B11"), **identity: Unpack[S2Identity]) -> Path:
    """Write an L2A product for dry runs at scale: real name, layout and MTD_MSIL2A.xml, empty band files.

    What the inventory reads at parse time is real: the name, the metadata (its checksum, platform, orbit,
    baseline) and the outline, taken from the SCL raster, which is written as a 2 x 2 pixel JPEG 2000 spanning
    ``bounds`` (in ``crs``). The reflectance band files of ``bands`` exist but are empty (0 bytes), so an
    ingest job on this product fails: use it with ``snakemake -n`` only (bench/dag_scale.py)."""
    take = _Take.resolve("L2A", identity)
    granule, prefix = take.granule, take.file_prefix
    files = [f"GRANULE/{granule}/IMG_DATA/R{NATIVE_RESOLUTION[normalise_band(b)]}m/{prefix}_{normalise_band(b)}_"
             f"{NATIVE_RESOLUTION[normalise_band(b)]}m.jp2" for b in bands]
    scl_rel = f"GRANULE/{granule}/IMG_DATA/R20m/{prefix}_SCL_20m.jp2"
    scl = np.full((2, 2), 4, np.uint8)
    mtd = _product_xml(take, [*files, scl_rel], scl)
    left, bottom, right, top = bounds
    transform = Affine((right - left) / 2, 0.0, left, 0.0, -(top - bottom) / 2, top)

    def write_safe(safe: Path) -> None:
        (safe / f"GRANULE/{granule}/QI_DATA").mkdir(parents=True)
        (safe / "MTD_MSIL2A.xml").write_bytes(mtd)
        for rel in files:
            (safe / rel).parent.mkdir(parents=True, exist_ok=True)
            (safe / rel).touch()
        _write_jp2(safe / scl_rel, scl, crs, transform)

    return _write_safe_or_zip(Path(folder), take.name, write_safe, zip=False)
