"""SNAP engine (``s1.engine: snap``): SNAP graphs for the S1 seam, built with pyroSAR, run with ``gpt``.

Graphs are assembled with pyroSAR's ``Workflow``/``Node`` classes from cropflow's own node templates
(``resources/snap/operators-<version>.xml``, every parameter explicit), parametrised from the product
metadata (pyroSAR ``identify`` and the SAFE annotation) and the project grid, written next to the product
output with the SNAP version found, and executed through ``pyroSAR.snap.auxil.gpt`` in explicit groups.
SNAP's GeoTIFF output is then converted into the cropflow S1 seam rasters (``<scene>_C2.tif``,
``<pair>_coh.tif``). Graph chains follow the ESA SNAP operator documentation:

- coherence per pair: Read x2 -> per sub-swath [TOPSAR-Split x2 -> Apply-Orbit-File x2 -> Back-Geocoding
  -> Enhanced-Spectral-Diversity (more than one burst) -> Coherence -> TOPSAR-Deburst] -> TOPSAR-Merge (more
  than one sub-swath) -> Terrain-Correction (project grid) -> Subset (AOI) -> Write;
- polarimetry per scene: Read -> per sub-swath [TOPSAR-Split -> Apply-Orbit-File -> Calibration (complex)
  -> TOPSAR-Deburst] -> TOPSAR-Merge -> Polarimetric-Matrices (C2) -> Multilook -> Polarimetric-Speckle-Filter
  (Refined Lee) [-> H-Alpha Dual Pol / CP-Decomposition M-Chi / Radar-Vegetation-Index DpRVI -> BandMerge]
  -> Terrain-Correction -> Subset -> Write.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pyproj
import rasterio
import rasterio.warp
import shapely
from shapely.geometry import MultiPoint, Polygon, box

from cropflow.atomic import atomic_path
from cropflow.grid import ProjectGrid
from cropflow.pyrosar_env import find_gpt, import_pyrosar, snap_version
from cropflow.raster import read_on_grid, write_raster

logger = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "snap"
DEFAULT_VERSION = "13.0"
ORBIT_TYPES = {
    "Sentinel Precise": "Sentinel Precise (Auto Download)",
    "Sentinel Restituted": "Sentinel Restituted (Auto Download)",
}
C2_BANDS = ("C11", "C22", "C12_real", "C12_imag")
COHERENCE_BANDS = ("coh_vv", "coh_vh")
SNAP_EXTRA_BANDS = ("Entropy", "Anisotropy", "Alpha", "MChi_r", "MChi_g", "MChi_b", "DpRVI")
_COH_RE = re.compile(r"^coh(?:_IW[1-3])?_(?P<pol>VV|VH)(?:_.*)?$", re.IGNORECASE)
_ANNOTATION_RE = r"^s1[a-d]-iw[1-3]-slc-(vv|vh|hh|hv)-.*\.xml$"  # annotation files (matched on the basename)
_MEAN_EARTH_RADIUS = 6371008.7714  # m, the sphere SNAP converts metre spacings to degrees with
# first execution group of each graph (memory-heavy resampling); everything after runs in the second group
_COHERENCE_STAGE1 = {"Read", "TOPSAR-Split", "Apply-Orbit-File", "Back-Geocoding", "Enhanced-Spectral-Diversity"}
_SCENE_STAGE1 = {"Read", "TOPSAR-Split", "Apply-Orbit-File", "Calibration", "TOPSAR-Deburst", "TOPSAR-Merge"}


# ------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SnapOptions:
    """Configured SNAP parameters (config ``s1.snap``)."""

    gpt: str = ""
    version: str = DEFAULT_VERSION
    dem: str = "SRTM 3Sec"
    external_dem: str = ""
    external_dem_nodata: float = 0.0
    external_dem_egm: bool = True
    orbit: str = "Sentinel Precise"
    coherence_window: tuple[int, int] = (10, 3)  # (range, azimuth) pixels
    subtract_topographic_phase: bool = False
    speckle_window: int = 7
    multilook: tuple[int, int] = (4, 1)  # (range, azimuth) looks
    decompositions: bool = False
    decomposition_window: int = 5

    @classmethod
    def from_config(cls, snap: Mapping[str, object] | None) -> "SnapOptions":
        """Options from the ``s1.snap`` mapping of the configuration (missing keys take the defaults)."""
        c = dict(snap or {})
        coh = dict(c.get("coherence_window") or {})
        ml = dict(c.get("multilook") or {})
        d = cls()
        return cls(
            gpt=str(c.get("gpt") or ""),
            version=str(c.get("version") or d.version),
            dem=str(c.get("dem") or d.dem),
            external_dem=str(c.get("external_dem") or ""),
            external_dem_nodata=float(c.get("external_dem_nodata", d.external_dem_nodata)),  # type: ignore[arg-type]
            external_dem_egm=bool(c.get("external_dem_egm", d.external_dem_egm)),
            orbit=str(c.get("orbit") or d.orbit),
            coherence_window=(int(coh.get("range", 10)), int(coh.get("azimuth", 3))),  # type: ignore[arg-type]
            subtract_topographic_phase=bool(c.get("subtract_topographic_phase", False)),
            speckle_window=int(c.get("speckle_window", d.speckle_window)),  # type: ignore[arg-type]
            multilook=(int(ml.get("range", 4)), int(ml.get("azimuth", 1))),  # type: ignore[arg-type]
            decompositions=bool(c.get("snap_decompositions", False)),
            decomposition_window=int(c.get("decomposition_window", d.decomposition_window)),  # type: ignore[arg-type]
        )

    def dem_parameters(self) -> dict[str, object]:
        """demName / externalDEMFile / externalDEMNoDataValue of the DEM-using operators."""
        if self.external_dem:
            if not Path(self.external_dem).is_file():
                raise FileNotFoundError(f"s1.snap.external_dem = {self.external_dem!r} does not exist: give a "
                                        "GeoTIFF DEM file or set it to \"\" to use s1.snap.dem")
            return {"demName": "External DEM", "externalDEMFile": str(Path(self.external_dem).resolve()),
                    "externalDEMNoDataValue": float(self.external_dem_nodata)}
        return {"demName": self.dem, "externalDEMFile": None, "externalDEMNoDataValue": 0.0}

    def orbit_type(self) -> str:
        """SNAP's ``orbitType`` value for the configured orbit (short name or SNAP's own value)."""
        if self.orbit in ORBIT_TYPES:
            return ORBIT_TYPES[self.orbit]
        if self.orbit in ORBIT_TYPES.values():
            return self.orbit
        raise ValueError(f"s1.snap.orbit = {self.orbit!r}: expected one of {sorted(ORBIT_TYPES)}")

    def speckle_window_size(self) -> str:
        """Refined Lee ``windowSize`` ('7x7'); SNAP offers odd sizes 5 to 17."""
        if self.speckle_window not in (5, 7, 9, 11, 13, 15, 17):
            raise ValueError(f"s1.snap.speckle_window = {self.speckle_window}: SNAP's Refined Lee takes 5, 7, ..., 17")
        return f"{self.speckle_window}x{self.speckle_window}"


# ------------------------------------------------------------------------------------------- pyroSAR


def _auxil() -> ModuleType:
    """``pyroSAR.snap.auxil`` (imported on demand through :func:`cropflow.pyrosar_env.import_pyrosar`)."""
    import_pyrosar()
    import importlib

    return importlib.import_module("pyroSAR.snap.auxil")


def template_path(version: str = DEFAULT_VERSION) -> Path:
    """The node-template file of a SNAP version; ValueError listing the shipped versions otherwise."""
    path = RESOURCES / f"operators-{version}.xml"
    if not path.is_file():
        shipped = sorted(p.stem.removeprefix("operators-") for p in RESOURCES.glob("operators-*.xml"))
        raise ValueError(f"no SNAP graph templates for s1.snap.version = {version!r} (looked for {path}); "
                         f"shipped versions: {shipped}")
    return path


def template_version(version: str = DEFAULT_VERSION) -> str:
    """The SNAP release the templates of ``version`` were written for (``snapVersion`` attribute)."""
    return ET.parse(template_path(version)).getroot().attrib["snapVersion"]


def load_node(operator: str, version: str = DEFAULT_VERSION):
    """A pyroSAR ``Node`` for ``operator`` from cropflow's templates (a fresh copy on every call)."""
    root = ET.parse(template_path(version)).getroot()
    element = root.find(f"node[@id='{operator}']")
    if element is None:
        raise ValueError(f"operator {operator!r} has no template in {template_path(version)}")
    return _auxil().Node(copy.deepcopy(element))


@contextlib.contextmanager
def cropflow_nodes(version: str = DEFAULT_VERSION) -> Iterator[None]:
    """Make pyroSAR's graph splitting use cropflow's templates instead of parsing ``gpt <op> -h``.

    ``pyroSAR.snap.auxil.split`` inserts Read/Write nodes through the module-level ``parse_node``; within
    this context that name resolves to :func:`load_node` for ``version``.
    """
    auxil = _auxil()
    original = auxil.parse_node
    auxil.parse_node = lambda name, use_existing=True: load_node(name.removesuffix(".xml"), version)
    try:
        yield
    finally:
        auxil.parse_node = original


def _append(workflow, operator: str, sources: str | Sequence[str] | None, version: str,
            params: Mapping[str, object]) -> str:
    """Append a node (sources wired, parameters set) at the end of ``workflow``; return its id.

    Every key of ``params`` must exist in the template (pyroSAR's Par raises KeyError otherwise).
    """
    node = load_node(operator, version)
    before = list(sources) if isinstance(sources, (list, tuple)) else sources
    if operator == "Read":
        workflow.insert_node(node, resetSuccessorSource=False)
    else:
        workflow.insert_node(node, before=before, resetSuccessorSource=False)
        # keep the XML in execution order: move the node behind the last node
        workflow.tree.remove(node.element)
        last = workflow.tree.findall("node")[-1]
        workflow.tree.insert(list(workflow.tree).index(last) + 1, node.element)
    for key, value in params.items():
        node.parameters[key] = value
    return node.id


# ------------------------------------------------------------------------------------------- scene metadata


@dataclass(frozen=True)
class SceneInfo:
    """What the graphs and the seam tags need from one SLC product (pyroSAR ``identify`` + annotation)."""

    path: str
    scene: str
    platform: str
    relative_orbit: int
    orbit_pass: str
    start: datetime
    polarizations: tuple[str, ...]
    bursts: dict[str, list[Polygon]] = field(default_factory=dict, compare=False, repr=False)

    def bursts_in(self, aoi: Polygon) -> dict[str, list[int]]:
        """1-based burst indices per sub-swath whose footprint intersects ``aoi`` (lon/lat)."""
        out = {}
        for swath, polys in sorted(self.bursts.items()):
            hits = [i + 1 for i, p in enumerate(polys) if p.intersects(aoi)]
            if hits:
                out[swath] = hits
        return out


def _burst_footprints(annotation: bytes) -> list[Polygon]:
    """Lon/lat footprint of each burst of one swath from the annotation's geolocation grid (convex hulls)."""
    root = ET.fromstring(annotation)
    lines_per_burst = int(root.findtext(".//swathTiming/linesPerBurst"))
    count = int(root.find(".//swathTiming/burstList").attrib["count"])
    pts = np.array([[float(p.findtext("line")), float(p.findtext("longitude")), float(p.findtext("latitude"))]
                    for p in root.iter("geolocationGridPoint")])
    polys = []
    for k in range(count):
        lo, hi = k * lines_per_burst, (k + 1) * lines_per_burst
        sel = pts[(pts[:, 0] >= lo - 1) & (pts[:, 0] <= hi + 1)]
        polys.append(MultiPoint(sel[:, 1:]).convex_hull)
    return polys


def scene_info(path: str | os.PathLike) -> SceneInfo:
    """Metadata of an S1 IW SLC product (``.zip`` or ``.SAFE``) via pyroSAR ``identify`` and its annotation."""
    pyrosar = import_pyrosar()
    try:
        scene = pyrosar.identify(str(path))
    except (RuntimeError, OSError) as err:
        raise ValueError(f"{path} is not a readable Sentinel-1 product ({err})") from err
    if scene.product != "SLC" or scene.acquisition_mode != "IW":
        raise ValueError(f"{path} is {scene.sensor} {scene.acquisition_mode} {scene.product}: the SNAP engine "
                         "needs IW SLC products")
    bursts: dict[str, list[Polygon]] = {}
    for member in scene.findfiles(_ANNOTATION_RE):
        swath = re.search(r"-(iw[1-3])-", os.path.basename(member)).group(1).upper()
        if swath not in bursts:
            bursts[swath] = _burst_footprints(scene.getFileObj(member).read())
    name = re.sub(r"(\.SAFE)?(\.zip)?$", "", os.path.basename(str(path).rstrip("/")))
    start = datetime.fromisoformat(scene.meta["acquisition_time"]["start"]).replace(tzinfo=UTC)
    return SceneInfo(path=str(Path(path).resolve()), scene=name, platform=scene.sensor,
                     relative_orbit=int(scene.orbitNumber_rel),
                     orbit_pass={"A": "ASCENDING", "D": "DESCENDING"}[scene.orbit], start=start,
                     polarizations=tuple(scene.polarizations), bursts=bursts)


def grid_aoi_lonlat(grid: ProjectGrid) -> Polygon:
    """The project grid's extent as a lon/lat polygon (edges densified before reprojection)."""
    to_ll = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform
    return shapely.transform(shapely.segmentize(box(*grid.bounds), grid.resolution * 100),
                             lambda xy: np.column_stack(to_ll(xy[:, 0], xy[:, 1])))


# ------------------------------------------------------------------------------------------- graphs


@dataclass
class Graph:
    """A built SNAP graph with its execution groups (lists of node ids for pyroSAR's ``split``)."""

    workflow: object
    groups: list[list[str]]
    version: str

    @property
    def ids(self) -> list[str]:
        return list(self.workflow.ids)

    def node(self, node_id: str):
        return self.workflow[node_id]

    def xml(self) -> str:
        return str(self.workflow)


def _new_workflow():
    return _auxil().parse_recipe("blank")


def _pols(scene: SceneInfo) -> str:
    if sorted(scene.polarizations) != ["VH", "VV"]:
        raise ValueError(f"{scene.path}: polarisations {list(scene.polarizations)}, the S1 seam needs VV+VH (1SDV)")
    return "VH,VV"


def _geocode_params(grid: ProjectGrid, options: SnapOptions) -> dict[str, object]:
    """Terrain-Correction onto the project grid: EPSG code, pixel spacing, standard-grid origin, DEM."""
    dem = options.dem_parameters()
    epsg = pyproj.CRS.from_user_input(grid.crs).to_epsg()
    if epsg is None:
        raise ValueError(f"project CRS {grid.crs!r} has no EPSG code: SNAP's Terrain-Correction needs 'EPSG:<code>'")
    return {
        **dem,
        "externalDEMApplyEGM": options.external_dem_egm,
        "mapProjection": f"EPSG:{epsg}",
        "pixelSpacingInMeter": float(grid.resolution),
        "pixelSpacingInDegree": float(grid.resolution) / (_MEAN_EARTH_RADIUS * math.pi / 180.0),
        "alignToStandardGrid": True,
        "standardGridOriginX": float(grid.bounds[0]),
        "standardGridOriginY": float(grid.bounds[3]),
        "nodataValueAtSea": False,
        "imgResamplingMethod": "BILINEAR_INTERPOLATION",
    }


def _swaths(scene: SceneInfo, aoi: Polygon) -> dict[str, list[int]]:
    swaths = scene.bursts_in(aoi)
    if not swaths:
        raise ValueError(f"{scene.path}: no burst of the product intersects the AOI {aoi.bounds} (lon/lat)")
    return swaths


def _tail(wf, source: str, grid: ProjectGrid, aoi: Polygon, out_file: Path, options: SnapOptions) -> None:
    tc = _append(wf, "Terrain-Correction", source, options.version, _geocode_params(grid, options))
    sub = _append(wf, "Subset", tc, options.version, {"geoRegion": aoi.wkt, "region": None, "copyMetadata": True})
    _append(wf, "Write", sub, options.version, {"file": str(out_file), "formatName": "GeoTIFF-BigTIFF"})


def _groups(wf, stage1: set[str]) -> list[list[str]]:
    first = [n.id for n in wf if n.operator in stage1]
    second = [n.id for n in wf if n.operator not in stage1]
    return [first, second]


def coherence_graph(reference: SceneInfo, secondary: SceneInfo, grid: ProjectGrid, out_file: str | os.PathLike,
                    options: SnapOptions = SnapOptions(), *, aoi: Polygon | None = None) -> Graph:
    """Coherence graph of a 12-day pair on the sub-swaths whose bursts meet the AOI (chain in module doc).

    ESD is inserted only for sub-swaths with more than one burst in the AOI, TOPSAR-Merge only with more
    than one sub-swath. ``aoi`` is lon/lat (default: the project grid's extent).
    """
    if (reference.platform[:2], reference.relative_orbit) != (secondary.platform[:2], secondary.relative_orbit) \
            or secondary.start <= reference.start:
        raise ValueError(f"{reference.scene} / {secondary.scene}: a coherence pair needs one track and the "
                         "secondary after the reference")
    aoi = aoi or grid_aoi_lonlat(grid)
    pols, v = _pols(reference), options.version
    _pols(secondary)
    swaths = _swaths(reference, aoi)
    dem = options.dem_parameters()
    orbit = {"orbitType": options.orbit_type(), "polyDegree": 3, "continueOnFail": False}
    rg, az = options.coherence_window
    wf = _new_workflow()
    read_ref = _append(wf, "Read", None, v, {"file": reference.path, "formatName": "SENTINEL-1"})
    read_sec = _append(wf, "Read", None, v, {"file": secondary.path, "formatName": "SENTINEL-1"})
    debursts = []
    for swath, bursts in swaths.items():
        logger.info("coherence graph %s: %s bursts %s", swath, reference.scene, bursts)
        split = {"subswath": swath, "selectedPolarisations": pols, "firstBurstIndex": 1, "lastBurstIndex": 9999,
                 "wktAoi": aoi.wkt}
        s_ref = _append(wf, "TOPSAR-Split", read_ref, v, split)
        s_sec = _append(wf, "TOPSAR-Split", read_sec, v, split)
        o_ref = _append(wf, "Apply-Orbit-File", s_ref, v, orbit)
        o_sec = _append(wf, "Apply-Orbit-File", s_sec, v, orbit)
        last = _append(wf, "Back-Geocoding", [o_ref, o_sec], v, {
            **dem, "demResamplingMethod": "BICUBIC_INTERPOLATION", "resamplingType": "BISINC_5_POINT_INTERPOLATION",
            "maskOutAreaWithoutElevation": True, "outputDerampDemodPhase": False})
        if len(bursts) > 1:
            last = _append(wf, "Enhanced-Spectral-Diversity", last, v, {})
        last = _append(wf, "Coherence", last, v, {
            **dem, "externalDEMApplyEGM": options.external_dem_egm, "cohWinRg": rg, "cohWinAz": az,
            "squarePixel": False, "subtractFlatEarthPhase": True,
            "subtractTopographicPhase": options.subtract_topographic_phase, "singleMaster": True})
        debursts.append(_append(wf, "TOPSAR-Deburst", last, v, {"selectedPolarisations": pols}))
    last = debursts[0]
    if len(debursts) > 1:
        last = _append(wf, "TOPSAR-Merge", debursts, v, {"selectedPolarisations": pols})
    _tail(wf, last, grid, aoi, Path(out_file), options)
    return Graph(wf, _groups(wf, _COHERENCE_STAGE1), v)


def scene_graph(scene: SceneInfo, grid: ProjectGrid, out_file: str | os.PathLike,
                options: SnapOptions = SnapOptions(), *, aoi: Polygon | None = None) -> Graph:
    """Dual-pol C2 graph of one scene (chain in the module doc); SNAP decompositions when configured."""
    aoi = aoi or grid_aoi_lonlat(grid)
    pols, v = _pols(scene), options.version
    swaths = _swaths(scene, aoi)
    rg, az = options.multilook
    wf = _new_workflow()
    read = _append(wf, "Read", None, v, {"file": scene.path, "formatName": "SENTINEL-1"})
    debursts = []
    for swath in swaths:
        last = _append(wf, "TOPSAR-Split", read, v, {"subswath": swath, "selectedPolarisations": pols,
                                                     "firstBurstIndex": 1, "lastBurstIndex": 9999, "wktAoi": aoi.wkt})
        last = _append(wf, "Apply-Orbit-File", last, v,
                       {"orbitType": options.orbit_type(), "polyDegree": 3, "continueOnFail": False})
        last = _append(wf, "Calibration", last, v, {
            "auxFile": "Product Auxiliary File", "outputImageInComplex": True, "outputImageScaleInDb": False,
            "selectedPolarisations": pols, "outputSigmaBand": True, "outputGammaBand": False,
            "outputBetaBand": False})
        debursts.append(_append(wf, "TOPSAR-Deburst", last, v, {"selectedPolarisations": pols}))
    last = debursts[0]
    if len(debursts) > 1:
        last = _append(wf, "TOPSAR-Merge", debursts, v, {"selectedPolarisations": pols})
    last = _append(wf, "Polarimetric-Matrices", last, v, {"matrix": "C2"})
    last = _append(wf, "Multilook", last, v, {"nRgLooks": rg, "nAzLooks": az, "outputIntensity": False,
                                             "grSquarePixel": False})
    last = _append(wf, "Polarimetric-Speckle-Filter", last, v, {
        "filter": "Refined Lee Filter", "windowSize": options.speckle_window_size(),
        "numLooksStr": str(min(4, max(1, rg * az)))})
    if options.decompositions:
        w = options.decomposition_window
        branches = [
            last,
            _append(wf, "Polarimetric-Decomposition", last, v,
                    {"decomposition": "H-Alpha Dual Pol Decomposition", "windowSize": w, "outputHAAlpha": True}),
            _append(wf, "CP-Decomposition", last, v,
                    {"decomposition": "M-Chi Decomposition", "windowSizeXStr": str(w), "windowSizeYStr": str(w)}),
            _append(wf, "Radar-Vegetation-Index", last, v, {"windowSize": w}),
        ]
        last = _append(wf, "BandMerge", branches, v, {})
    _tail(wf, last, grid, aoi, Path(out_file), options)
    return Graph(wf, _groups(wf, _SCENE_STAGE1), v)


def write_graph(graph: Graph, path: str | os.PathLike, found_version: str | None) -> Path:
    """Write the graph XML atomically, recording the template and the installed SNAP versions.

    The versions go into an ``<applicationData id="cropflow">`` element (ignored by gpt).
    """
    root = graph.workflow.tree
    for old in root.findall("applicationData[@id='cropflow']"):
        root.remove(old)
    app = ET.SubElement(root, "applicationData", {"id": "cropflow"})
    ET.SubElement(app, "templateVersion").text = template_version(graph.version)
    ET.SubElement(app, "snapVersion").text = found_version or "not found"
    with atomic_path(path) as tmp:
        tmp.write_text(graph.xml())
    return Path(path)


def run_graph(xml: str | os.PathLike, graph: Graph, gpt: str | os.PathLike, tmpdir: str | os.PathLike,
              gpt_args: Sequence[str] | None = None) -> None:
    """Execute a written graph with pyroSAR's ``gpt`` in the graph's groups, using the given gpt executable."""
    auxil = _auxil()
    exe = str(gpt)
    overrides = {key: exe for key in set(graph.ids) | {n.operator for n in graph.workflow}}
    logger.info("running %s with %s in %d groups", xml, exe, len(graph.groups))
    with cropflow_nodes(graph.version):
        auxil.gpt(str(xml), tmpdir=str(tmpdir), groups=[list(g) for g in graph.groups], cleanup=True,
                  gpt_exceptions=overrides, gpt_args=list(gpt_args) if gpt_args else None)


# ------------------------------------------------------------------------------------------- seam conversion


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scene_tags(scene: SceneInfo) -> dict[str, str]:
    """Seam tags of a C2 raster."""
    return {"SCENE": scene.scene, "PLATFORM": scene.platform, "RELATIVE_ORBIT": str(scene.relative_orbit),
            "PASS": scene.orbit_pass, "START_TIME": _iso(scene.start)}


def pair_tags(reference: SceneInfo, secondary: SceneInfo) -> dict[str, str]:
    """Seam tags of a coherence raster."""
    return {"REFERENCE": reference.scene, "SECONDARY": secondary.scene,
            "RELATIVE_ORBIT": str(reference.relative_orbit)}


def _read_snap_bands(src_path: Path, grid: ProjectGrid, picks: Mapping[str, list[int]], *,
                     zero_per_band: bool = False) -> tuple[ProjectGrid, dict[str, np.ndarray]]:
    """Read the chosen SNAP bands onto the part of ``grid`` the raster covers; SNAP's 0 fill becomes NaN.

    ``picks`` maps an output name to the 1-based source bands merged into it (first valid value wins).
    SNAP fills pixels outside the swath with 0: a pixel is nodata where every band is 0, or, with
    ``zero_per_band`` (coherence, which is never exactly 0 in data), wherever one band is 0.
    """
    with rasterio.open(src_path) as src:
        if src.crs is None:
            raise ValueError(f"{src_path} has no CRS: SNAP's Terrain-Correction output is expected")
        b = rasterio.warp.transform_bounds(src.crs, grid.crs, *src.bounds)
    left, bottom, right, top = max(b[0], grid.bounds[0]), max(b[1], grid.bounds[1]), \
        min(b[2], grid.bounds[2]), min(b[3], grid.bounds[3])
    if left >= right or bottom >= top:
        raise ValueError(f"{src_path} does not overlap the project grid {grid.bounds} ({grid.crs})")
    sub = grid.subgrid((left, bottom, right, top))
    bands = sorted({i for idx in picks.values() for i in idx})
    data = read_on_grid(src_path, sub, bands=bands, resampling="bilinear")
    data[:, np.all((data == 0) | np.isnan(data), axis=0)] = np.nan
    if zero_per_band:
        data[data == 0] = np.nan
    pos = {b: k for k, b in enumerate(bands)}
    out = {}
    for name, idx in picks.items():
        arr = data[pos[idx[0]]].copy()
        for i in idx[1:]:
            arr = np.where(np.isnan(arr), data[pos[i]], arr)
        out[name] = arr
    return sub, out


def _descriptions(src_path: Path) -> list[str]:
    with rasterio.open(src_path) as src:
        return [d or "" for d in src.descriptions]


def snap_c2_to_seam(src: str | os.PathLike, dst: str | os.PathLike, grid: ProjectGrid, tags: Mapping[str, str],
                    *, extras: str | os.PathLike | None = None) -> Path:
    """Convert SNAP's C2 GeoTIFF (bands C11, C12_real, C12_imag, C22 [+ decompositions]) to the seam file.

    Writes ``dst`` (float32 C11, C22, C12_real, C12_imag, NaN outside the swath, ``tags``) on the part of
    the project grid the SNAP product covers; SNAP's decomposition bands (Entropy, Anisotropy, Alpha, MChi_*,
    DpRVI), when present and ``extras`` is given, go to ``extras`` for comparison.
    """
    src = Path(src)
    names = _descriptions(src)
    missing = [b for b in C2_BANDS if b not in names]
    if missing:
        raise ValueError(f"{src}: SNAP bands {missing} missing (found {names}); the polarimetry graph must end "
                         "with Polarimetric-Matrices C2 bands")
    picks = {b: [names.index(b) + 1] for b in C2_BANDS}
    extra = [b for b in SNAP_EXTRA_BANDS if b in names]
    if extras is not None:
        picks.update({b: [names.index(b) + 1] for b in extra})
    elif extra:
        logger.info("%s: SNAP bands %s not kept (no extras path given)", src, extra)
    sub, bands = _read_snap_bands(src, grid, picks)
    write_raster(dst, np.stack([bands[b] for b in C2_BANDS]).astype("float32"), sub, nodata=float("nan"),
                 band_names=list(C2_BANDS), tags=dict(tags))
    if extras is not None and extra:
        write_raster(extras, np.stack([bands[b] for b in extra]).astype("float32"), sub, nodata=float("nan"),
                     band_names=extra, tags=dict(tags))
    return Path(dst)


def snap_coherence_to_seam(src: str | os.PathLike, dst: str | os.PathLike, grid: ProjectGrid,
                           tags: Mapping[str, str]) -> Path:
    """Convert SNAP's coherence GeoTIFF (``coh_IW1_VV_<dates>``/``coh_VV_<dates>`` ...) to the seam file.

    Per polarisation the sub-swath bands are merged (first valid value wins), values clipped to [0, 1],
    written as float32 ``coh_vv``, ``coh_vh`` with ``tags`` on the covered part of the project grid.
    """
    src = Path(src)
    names = _descriptions(src)
    picks: dict[str, list[int]] = {b: [] for b in COHERENCE_BANDS}
    for i, name in enumerate(names, start=1):
        match = _COH_RE.match(name)
        if match:
            picks[f"coh_{match['pol'].lower()}"].append(i)
    missing = [b for b, idx in picks.items() if not idx]
    if missing:
        raise ValueError(f"{src}: no SNAP coherence band for {missing} (found {names}); expected bands named "
                         "like coh_IW1_VV_<date>_<date>")
    sub, bands = _read_snap_bands(src, grid, picks, zero_per_band=True)
    data = np.clip(np.stack([bands[b] for b in COHERENCE_BANDS]), 0.0, 1.0).astype("float32")
    write_raster(dst, data, sub, nodata=float("nan"), band_names=list(COHERENCE_BANDS), tags=dict(tags))
    return Path(dst)


# ------------------------------------------------------------------------------------------- top level


def _found_gpt(options: SnapOptions) -> tuple[Path | None, str | None, FileNotFoundError | None]:
    try:
        gpt = find_gpt(options.gpt or None)
    except FileNotFoundError as err:
        return None, None, err
    found = snap_version(gpt)
    if found.split(".")[0] != template_version(options.version).split(".")[0]:
        logger.warning("SNAP %s found at %s, graph templates written for SNAP %s: parameters it does not know are "
                       "dropped by pyroSAR's execute", found, gpt, template_version(options.version))
    return gpt, found, None


def _run(graph: Graph, xml: Path, snap_out: Path, options: SnapOptions, gpt_args: Sequence[str] | None) -> None:
    gpt, found, missing = _found_gpt(options)
    write_graph(graph, xml, found)
    logger.info("wrote SNAP graph %s (SNAP %s)", xml, found or "not found")
    if missing is not None:
        raise missing
    with tempfile.TemporaryDirectory(prefix=".snap-", dir=xml.parent) as tmp:
        run_graph(xml, graph, gpt, tmp, gpt_args)
    if not snap_out.is_file():
        raise RuntimeError(f"gpt finished without writing {snap_out}: see the log of {xml}")


def process_scene(safe: str | os.PathLike, dst: str | os.PathLike, grid: ProjectGrid,
                  snap: Mapping[str, object] | None = None, *, aoi: Polygon | None = None,
                  gpt_args: Sequence[str] | None = None) -> Path:
    """SNAP engine for one scene: write ``<dst stem>.graph.xml`` next to ``dst``, run it, convert to the seam.

    ``snap`` is the ``s1.snap`` config mapping. Raises FileNotFoundError naming SNAP when gpt is missing
    (after writing the graph). SNAP's decomposition bands, if configured, go to ``<scene>_snap.tif``.
    """
    options = SnapOptions.from_config(snap)
    dst = Path(dst)
    info = scene_info(safe)
    snap_out = dst.with_name(f"{dst.stem}.snap.tif")
    graph = scene_graph(info, grid, snap_out, options, aoi=aoi)
    _run(graph, dst.with_name(f"{dst.stem}.graph.xml"), snap_out, options, gpt_args)
    extras = dst.with_name(f"{info.scene}_snap.tif") if options.decompositions else None
    out = snap_c2_to_seam(snap_out, dst, grid, scene_tags(info), extras=extras)
    snap_out.unlink()
    return out


def process_pair(reference: str | os.PathLike, secondary: str | os.PathLike, dst: str | os.PathLike,
                 grid: ProjectGrid, snap: Mapping[str, object] | None = None, *, aoi: Polygon | None = None,
                 gpt_args: Sequence[str] | None = None) -> Path:
    """SNAP engine for one pair: write ``<dst stem>.graph.xml`` next to ``dst``, run it, convert to the seam."""
    options = SnapOptions.from_config(snap)
    dst = Path(dst)
    ref, sec = scene_info(reference), scene_info(secondary)
    snap_out = dst.with_name(f"{dst.stem}.snap.tif")
    graph = coherence_graph(ref, sec, grid, snap_out, options, aoi=aoi)
    _run(graph, dst.with_name(f"{dst.stem}.graph.xml"), snap_out, options, gpt_args)
    out = snap_coherence_to_seam(snap_out, dst, grid, pair_tags(ref, sec))
    snap_out.unlink()
    return out
