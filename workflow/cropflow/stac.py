"""STAC catalog of the maps: a collection per model, an item per tile map and one for the county mosaic.

Every item carries its rasters as assets (the class map with the legend as ``classification:classes``, the
uncertainty layers, the probabilities when written), the model, the SHA-256 of the resolved configuration,
the input products of its tile(s), the season as its datetime range and the projection of its rasters. The
catalog is saved self-contained (relative links and asset hrefs), so the results folder can be moved or
published as it is, and validated offline before it replaces an earlier catalog (:class:`OfflineValidator`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pystac
import pystac.validation
import rasterio
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.errors import STACValidationError
from pystac.validation import GetSchemaError, JsonSchemaSTACValidator
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import box, mapping

from cropflow.atomic import atomic_path
from cropflow.legend import Legend

log = logging.getLogger(__name__)

#: extension schemas (by URL) are looked up as ``<folder>/<extension>/<version>/schema.json``
_EXTENSION_PREFIX = "https://stac-extensions.github.io/"


def _count(n: int) -> dict[str, int]:
    return {"minItems": n, "maxItems": n}


_NUMBERS = {"type": "array", "items": {"type": "number"}}
#: cropflow's rules for the extension fields it writes (JSON Schema per field, after the field tables of the
#: projection v2.0.0 and classification v2.0.0 specifications), applied wherever the fields may appear: the top
#: level, an item's properties and its assets. They check an extension when no copy of its own schema is given.
FIELD_RULES: dict[str, dict[str, dict[str, Any]]] = {
    ProjectionExtension.get_schema_uri(): {
        "proj:code": {"type": ["string", "null"], "pattern": "^[^:\\s]+:[^:\\s]+$"},
        "proj:wkt2": {"type": ["string", "null"]},
        "proj:projjson": {"type": ["object", "null"]},
        "proj:bbox": {**_NUMBERS, "oneOf": [_count(4), _count(6)]},
        "proj:shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, **_count(2)},
        "proj:transform": {**_NUMBERS, "oneOf": [_count(6), _count(9)]},
    },
    ClassificationExtension.get_schema_uri(): {
        "classification:classes": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["value", "name"], "properties": {
                "value": {"type": "integer"}, "name": {"type": "string", "pattern": "^[0-9A-Za-z_-]+$"},
                "description": {"type": "string"}, "title": {"type": "string"},
                "color_hint": {"type": "string", "pattern": "^[0-9A-Fa-f]{6}$"}, "nodata": {"type": "boolean"}}}},
    },
}


# --------------------------------------------------------------------------------------------------- pure parts


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the resolved configuration as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def season_interval(start: str, end: str, year: int) -> tuple[datetime, datetime]:
    """The season (``MM-DD`` first and last day, inclusive) of ``year`` as UTC datetimes."""
    first = datetime.fromisoformat(f"{year}-{start}").replace(tzinfo=timezone.utc)
    last = datetime.fromisoformat(f"{year}-{end}T23:59:59").replace(tzinfo=timezone.utc)
    if last < first:
        raise ValueError(f"season end {end} is before its start {start}")
    return first, last


@dataclass(frozen=True)
class MapFiles:
    """The rasters of one item (a tile, or the county mosaic) and the input products they were made from."""

    id: str
    classes: str
    uncertainty: str | None = None
    probabilities: str | None = None
    products: tuple[str, ...] = ()


@dataclass(frozen=True)
class Footprint:
    """Where a raster lies: EPSG code, shape, transform and bounds in its CRS; bbox and outline in WGS84."""

    epsg: int
    shape: tuple[int, int]
    transform: tuple[float, ...]
    bounds: tuple[float, float, float, float]
    bbox: tuple[float, float, float, float]
    geometry: dict[str, Any]


def raster_footprint(path: str | os.PathLike) -> Footprint:
    """The :class:`Footprint` of a raster."""
    with rasterio.open(path) as src:
        if src.crs is None or src.crs.to_epsg() is None:
            raise ValueError(f"{path} has no EPSG-coded CRS: rerun the job that wrote it")
        bounds = tuple(src.bounds)
        return Footprint(
            epsg=src.crs.to_epsg(), shape=(src.height, src.width), transform=tuple(src.transform)[:6],
            bounds=bounds, bbox=transform_bounds(src.crs, "EPSG:4326", *bounds, densify_pts=21),
            geometry=transform_geom(src.crs, "EPSG:4326", mapping(box(*bounds))),
        )


def _field_places(stac_dict: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Where extension fields may be in a STAC object: (name, object) of its top level, its properties and
    each of its assets."""
    places = [("top level", stac_dict)]
    if isinstance(stac_dict.get("properties"), Mapping):
        places.append(("properties", stac_dict["properties"]))
    assets = stac_dict.get("assets")
    if isinstance(assets, Mapping):
        places += [(f"asset '{key}'", asset) for key, asset in assets.items() if isinstance(asset, Mapping)]
    return places


def _json_path(path: Iterable[str | int]) -> str:
    """``[1].name`` for the path (1, "name") inside a field's value."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def grid_bbox(transform: Sequence[float], shape: Sequence[int]) -> list[float]:
    """The bbox (minx, miny, maxx, maxy) of a raster of ``shape`` (rows, cols) under the affine ``transform``
    (a, b, c, d, e, f: x = a col + b row + c, y = d col + e row + f), from its four corners."""
    a, b, c, d, e, f = transform[:6]
    rows, cols = shape
    corners = [(a * x + b * y + c, d * x + e * y + f) for x in (0, cols) for y in (0, rows)]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    return [min(xs), min(ys), max(xs), max(ys)]


def field_problems(stac_dict: Mapping[str, Any], extension_id: str) -> list[str]:
    """What is wrong with the fields of a known extension (:data:`FIELD_RULES`) in a STAC object, one sentence
    each (empty: nothing). Besides each field's form: the extension's fields must be used somewhere, class
    values must be unique, and proj:bbox must be the extent of proj:shape under proj:transform."""
    from jsonschema import Draft7Validator

    rules = FIELD_RULES[extension_id]
    problems, used = [], False
    for place, obj in _field_places(stac_dict):
        for field, schema in rules.items():
            if field not in obj:
                continue
            used = True
            problems += [f"{place}: {field}{_json_path(err.absolute_path)}: {err.message}"
                         for err in Draft7Validator(schema).iter_errors(obj[field])]
        classes = obj.get("classification:classes") if "classification:classes" in rules else None
        if isinstance(classes, list):
            values = [c.get("value") for c in classes if isinstance(c, Mapping)]
            twice = sorted({v for v in values if values.count(v) > 1}, key=str)
            if twice:
                problems.append(f"{place}: classification:classes has the values {twice} more than once")
        if "proj:transform" in rules and all(k in obj for k in ("proj:bbox", "proj:shape", "proj:transform")):
            try:
                expected = grid_bbox(obj["proj:transform"], obj["proj:shape"])
                given = [float(v) for v in obj["proj:bbox"]]
            except (TypeError, ValueError):
                continue  # malformed, reported above
            tol = 1e-6 * max(1.0, *map(abs, expected))
            if len(given) != 4 or any(abs(g - e) > tol for g, e in zip(given, expected)):
                problems.append(f"{place}: proj:bbox {given} is not the extent {expected} of proj:shape "
                                f"{obj['proj:shape']} under proj:transform")
    if not used:
        problems.append(f"declares {extension_id} but uses none of its fields {sorted(rules)}")
    return problems


def legend_classes(legend: Legend) -> list[Classification]:
    """The legend as classification-extension classes (value, name, colour hint)."""
    return [Classification.create(value=c.id, name=c.name, description=c.name.replace("_", " "),
                                  color_hint=c.color.lstrip("#").upper()) for c in legend.classes]


def map_item(files: MapFiles, *, model: str, legend: Legend, config_sha256: str,
             interval: tuple[datetime, datetime]) -> pystac.Item:
    """One item: the class map (classification classes from the legend), uncertainty and probability assets."""
    fp = raster_footprint(files.classes)
    item = pystac.Item(
        id=files.id, geometry=fp.geometry, bbox=list(fp.bbox), datetime=None,
        start_datetime=interval[0], end_datetime=interval[1],
        properties={"cropflow:model": model, "cropflow:config_sha256": config_sha256,
                    "cropflow:products": list(files.products)},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(epsg=fp.epsg, bbox=list(fp.bounds), shape=list(fp.shape), transform=list(fp.transform))
    item.add_asset("classes", pystac.Asset(
        href=str(Path(files.classes).resolve()), media_type=pystac.MediaType.COG, roles=["data"],
        title=f"crop types ({model})", description="uint8 class ids of the legend, 0 no data"))
    ClassificationExtension.ext(item.assets["classes"], add_if_missing=True).classes = legend_classes(legend)
    if files.uncertainty:
        item.add_asset("uncertainty", pystac.Asset(
            href=str(Path(files.uncertainty).resolve()), media_type=pystac.MediaType.COG, roles=["metadata"],
            title="uncertainty",
            description="bands confidence, margin, entropy: uint8 round(254 x) of x in [0, 1], 255 no data"))
    if files.probabilities:
        item.add_asset("probabilities", pystac.Asset(
            href=str(Path(files.probabilities).resolve()), media_type=pystac.MediaType.COG, roles=["metadata"],
            title="class probabilities", description="one uint8 band per class, round(255 p)"))
    return item


def model_collection(model: str, items: Sequence[pystac.Item], interval: tuple[datetime, datetime],
                     legend: Legend) -> pystac.Collection:
    """A collection of one model's items, its extent the union of theirs."""
    bboxes = [i.bbox for i in items]
    extent = pystac.Extent(
        pystac.SpatialExtent([[min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                               max(b[2] for b in bboxes), max(b[3] for b in bboxes)]]),
        pystac.TemporalExtent([[interval[0], interval[1]]]),
    )
    collection = pystac.Collection(
        id=model, extent=extent, license="other", title=f"Crop-type maps: {model}",
        description=f"Crop-type maps by model {model}: one item per tile and one for the county mosaic "
                    f"(classes: {', '.join(legend.names)}).",
    )
    collection.add_items(items)
    return collection


def build_catalog(collections: Iterable[pystac.Collection]) -> pystac.Catalog:
    catalog = pystac.Catalog(id="cropflow-maps", description="Crop-type maps made by the cropflow workflow")
    catalog.add_children(list(collections))
    return catalog


# --------------------------------------------------------------------------------------------------- validation


class OfflineValidator(JsonSchemaSTACValidator):
    """JSON-schema validation that never goes to the network.

    Core schemas (catalog, collection, item and the GeoJSON they reference) come from pystac, which ships
    them. Extension schemas are read from ``schema_dir`` (``<extension>/<version>/schema.json``, as in
    their URLs) when given and present there. The extensions cropflow writes (projection, classification) are
    always checked by cropflow's own rules too (:func:`field_problems`: form of each field, unique class values,
    bbox consistent with shape and transform), so without ``schema_dir`` they are still checked. Any other
    extension without a local schema is not validated and is listed in :attr:`unchecked` (and logged). A schema
    that is neither shipped nor local is never fetched.
    """

    def __init__(self, schema_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.schema_dir = Path(schema_dir) if schema_dir else None
        self.unchecked: set[str] = set()

    def _local_path(self, uri: str) -> Path | None:
        if self.schema_dir is None or not uri.startswith(_EXTENSION_PREFIX):
            return None
        path = self.schema_dir / uri.removeprefix(_EXTENSION_PREFIX)
        return path if path.is_file() else None

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            path = self._local_path(schema_uri)
            if path is None:
                raise GetSchemaError(schema_uri, FileNotFoundError("no local copy; schemas are not fetched"))
            self.schema_cache[schema_uri] = json.loads(path.read_text())
        return self.schema_cache[schema_uri]

    def validate_extension(self, stac_dict, stac_object_type, stac_version, extension_id, href=None):
        if extension_id in FIELD_RULES:
            problems = field_problems(stac_dict, extension_id)
            if problems:
                raise STACValidationError(f"{href or stac_dict.get('id')}: " + "; ".join(problems))
        if extension_id not in self.schema_cache and self._local_path(extension_id) is None:
            if extension_id in FIELD_RULES:
                return None
            if extension_id not in self.unchecked:
                log.warning("STAC extension %s: no local schema, its fields are not validated", extension_id)
            self.unchecked.add(extension_id)
            return None
        return super().validate_extension(stac_dict, stac_object_type, stac_version, extension_id, href)


def validate_catalog(path: str | os.PathLike, validator: OfflineValidator | None = None) -> int:
    """Validate every STAC file of a saved catalog's folder as written (raises STACValidationError naming the
    file); returns how many there are."""
    validator = validator or OfflineValidator()
    files = sorted(Path(path).parent.rglob("*.json"))
    for file in files:
        pystac.validation.validate_dict(json.loads(file.read_text()), href=str(file), validator=validator)
    return len(files)


# --------------------------------------------------------------------------------------------------- edges


def cube_inputs(cube: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The input product ids (file stems) of a tile's cube and its acquisition dates (ISO), from its attrs."""
    import zarr

    attrs = zarr.open_group(str(cube), mode="r").attrs
    products = sorted({Path(p).name.split(".")[0] for names in attrs.get("products", {}).values() for p in names})
    dates = sorted({d for days in attrs.get("acquisitions", {}).values() for d in days})
    return products, dates


def write_catalog(catalog: pystac.Catalog, out_dir: str | os.PathLike,
                  validator: OfflineValidator | None = None) -> None:
    """Save ``catalog`` self-contained as ``out_dir``/catalog.json, validated, replacing ``out_dir`` atomically.

    Links and asset hrefs are relative to where the files end up, so ``out_dir`` and the rasters keep
    working when their common folder is moved.
    """
    final = Path(out_dir).resolve()
    catalog.normalize_hrefs(str(final))
    catalog.make_all_asset_hrefs_relative()
    with atomic_path(final, directory=True) as tmp:
        tmp.mkdir()
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, dest_href=str(tmp))
        n = validate_catalog(tmp / "catalog.json", validator)
    log.info("STAC catalog of %d objects written to %s", n, final / "catalog.json")


def maps_catalog(maps_dir: str | os.PathLike, models: Sequence[str], cubes: Mapping[str, str | os.PathLike], *,
                 legend: Legend, config: Mapping[str, Any], probabilities: bool) -> pystac.Catalog:
    """The catalog of ``maps_dir``/<model>/: per model, an item per tile of ``cubes`` (tile -> cube) and one
    for the mosaic; the datetime range is the season of the year of the first acquisition."""
    inputs = {tile: cube_inputs(cube) for tile, cube in cubes.items()}
    dates = sorted(d for _, days in inputs.values() for d in days)
    if not dates:
        raise ValueError(f"the cubes {sorted(map(str, cubes.values()))} record no acquisition: rerun 'stack'")
    interval = season_interval(config["season"]["start"], config["season"]["end"], int(dates[0][:4]))
    sha = config_hash(config)
    if probabilities:
        expected = [Path(maps_dir) / model / f"{tile}_proba.tif" for model in models for tile in cubes]
        missing = [str(path) for path in expected if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"probability maps {missing[:3]} are missing: rerun their 'infer' jobs")
    collections = []
    for model in models:
        folder = Path(maps_dir) / model
        files = [MapFiles(f"{model}_{tile}", str(folder / f"{tile}_class.tif"),
                          str(folder / f"{tile}_uncertainty.tif"),
                          str(folder / f"{tile}_proba.tif") if probabilities else None, tuple(inputs[tile][0]))
                 for tile in cubes]
        files.append(MapFiles(f"{model}_mosaic", str(folder / "mosaic.tif"), str(folder / "mosaic_uncertainty.tif"),
                              None, tuple(sorted({p for products, _ in inputs.values() for p in products}))))
        items = [map_item(f, model=model, legend=legend, config_sha256=sha, interval=interval) for f in files]
        collections.append(model_collection(model, items, interval, legend))
    return build_catalog(collections)
