"""STAC catalog of the maps (cropflow.stac): content, self-containment, offline validation."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import zarr
from pystac.errors import STACValidationError
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension

from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.mosaic import UNCERTAINTY_BANDS
from cropflow.raster import write_raster
from cropflow.stac import OfflineValidator, config_hash, maps_catalog, season_interval, validate_catalog, write_catalog

LEGEND = Legend.load(str(Path(__file__).parents[1] / "resources" / "legend.yaml"))
TILES = {"E0320000N5330000": (320000.0, 5330000.0), "E0320600N5330000": (320600.0, 5330000.0)}
CONFIG = {"season": {"start": "05-06", "end": "09-27"}, "seed": 42, "models": {"enabled": ["rf"]}}


def write_maps(results: Path) -> dict[str, Path]:
    """Synthetic results: per tile a class map, an uncertainty layer and a cube with its inputs; the mosaics."""
    rng = np.random.default_rng(0)
    maps = results / "maps" / "rf"
    cubes = {}
    for k, (tile, (x, y)) in enumerate(TILES.items()):
        grid = ProjectGrid("EPSG:32652", 10.0, (x, y, x + 600.0, y + 600.0))
        write_raster(maps / f"{tile}_class.tif", rng.integers(0, 8, grid.shape).astype(np.uint8), grid, nodata=0,
                     colormap=LEGEND.colormap(), cog=True)
        write_raster(maps / f"{tile}_uncertainty.tif", rng.integers(0, 256, (3, *grid.shape)).astype(np.uint8), grid,
                     nodata=255, band_names=list(UNCERTAINTY_BANDS), cog=True)
        cubes[tile] = results / "cubes" / f"{tile}.zarr"
        zarr.open_group(str(cubes[tile]), mode="w").attrs.update({
            "products": {"s1": [f"S1A_2023051{k}_R032_05D857.tif"], "s2": ["S2A_20230512_R089.tif"]},
            "acquisitions": {"s1": [f"2023-05-1{k}"], "s2": ["2023-05-12"]},
        })
    county = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 321200.0, 5330600.0))
    write_raster(maps / "mosaic.tif", rng.integers(0, 8, county.shape).astype(np.uint8), county, nodata=0, cog=True)
    write_raster(maps / "mosaic_uncertainty.tif", rng.integers(0, 256, (3, *county.shape)).astype(np.uint8), county,
                 nodata=255, band_names=list(UNCERTAINTY_BANDS), cog=True)
    return cubes


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to read a schema (or anything) over HTTP fails the test."""
    real = pystac.StacIO.default().read_text

    def local_only(self, source, *args, **kwargs):
        href = str(getattr(source, "href", source))
        if href.startswith("http"):
            raise AssertionError(f"network access to {href}")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pystac.stac_io.DefaultStacIO, "read_text", local_only)


@pytest.fixture
def catalog_dir(tmp_path, no_network) -> Path:
    results = tmp_path / "results"
    cubes = write_maps(results)
    catalog = maps_catalog(results / "maps", ["rf"], cubes, legend=LEGEND, config=CONFIG, probabilities=False)
    write_catalog(catalog, results / "stac")
    return results / "stac"


def test_config_hash_is_sha256_of_canonical_json():
    expected = hashlib.sha256(json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert config_hash(CONFIG) == expected
    assert config_hash({**CONFIG, "seed": 1}) != expected


def test_season_interval_covers_the_last_day():
    start, end = season_interval("05-06", "09-27", 2023)
    assert start.isoformat() == "2023-05-06T00:00:00+00:00" and end.isoformat() == "2023-09-27T23:59:59+00:00"


def test_catalog_has_a_collection_per_model_and_an_item_per_tile_and_mosaic(catalog_dir):
    catalog = pystac.Catalog.from_file(str(catalog_dir / "catalog.json"))
    assert catalog.catalog_type == pystac.CatalogType.SELF_CONTAINED
    (collection,) = list(catalog.get_children())
    assert collection.id == "rf"
    items = {i.id: i for i in collection.get_items()}
    assert set(items) == {f"rf_{t}" for t in TILES} | {"rf_mosaic"}
    tile = items["rf_E0320000N5330000"]
    assert tile.properties["cropflow:model"] == "rf"
    assert tile.properties["cropflow:config_sha256"] == config_hash(CONFIG)
    assert tile.properties["cropflow:products"] == ["S1A_20230510_R032_05D857", "S2A_20230512_R089"]
    assert len(items["rf_mosaic"].properties["cropflow:products"]) == 3
    assert tile.properties["start_datetime"].startswith("2023-05-06") and tile.datetime is None
    assert tile.properties["end_datetime"].startswith("2023-09-27")
    proj = ProjectionExtension.ext(tile)
    assert proj.epsg == 32652 and proj.shape == [60, 60] and proj.bbox == [320000.0, 5330000.0, 320600.0, 5330600.0]
    lon, lat = tile.geometry["coordinates"][0][0]
    assert 125 < lon < 127 and 48 < lat < 49 and tile.bbox[0] < tile.bbox[2]
    classes = ClassificationExtension.ext(tile.assets["classes"]).classes
    assert [(c.value, c.name) for c in classes] == [(c.id, c.name) for c in LEGEND.classes]
    assert tile.assets["classes"].roles == ["data"] and "uncertainty" in tile.assets
    assert "probabilities" not in tile.assets


def test_catalog_validates_offline_and_still_works_after_the_results_are_moved(catalog_dir, tmp_path):
    validator = OfflineValidator()
    assert validate_catalog(catalog_dir / "catalog.json", validator) == 1 + 1 + 3
    assert validator.unchecked == set()  # projection and classification are checked by cropflow's rules
    moved = tmp_path / "published"
    shutil.move(catalog_dir.parent, moved)
    catalog = pystac.Catalog.from_file(str(moved / "stac" / "catalog.json"))
    for item in catalog.get_items(recursive=True):
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file(), asset.href
            assert not Path(asset.href).is_absolute()


def broken_items(catalog_dir: Path) -> list[Path]:
    return sorted(catalog_dir.rglob("rf_mosaic.json"))


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("geometry"),
    lambda d: d.update(bbox="east of here"),
    lambda d: d["properties"].pop("start_datetime"),
])
def test_an_invalid_item_fails_validation(catalog_dir, damage):
    (path,) = broken_items(catalog_dir)
    doc = json.loads(path.read_text())
    damage(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(STACValidationError, match="rf_mosaic"):
        validate_catalog(catalog_dir / "catalog.json")


def _classes(doc: dict) -> list[dict]:
    return doc["assets"]["classes"]["classification:classes"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["properties"].update({"proj:shape": ["60", "60"]}), "proj:shape\\[0\\]: '60' is not of type"),
    (lambda d: d["properties"].update({"proj:bbox": [1.0, 2.0, 3.0]}), "proj:bbox"),
    (lambda d: d["properties"].update({"proj:code": "32652"}), "proj:code: '32652' does not match"),
    (lambda d: d["properties"]["proj:transform"].__setitem__(2, 0.0), "is not the extent"),
    (lambda d: d["properties"].update({"proj:shape": [61, 60]}), "is not the extent"),
    (lambda d: _classes(d)[1].update(name="winter wheat"), "name: 'winter wheat' does not match"),
    (lambda d: _classes(d)[1].update(value=_classes(d)[2]["value"]), "more than once"),
    (lambda d: _classes(d)[1].pop("value"), "'value' is a required property"),
    (lambda d: _classes(d)[1].update(color_hint="red"), "color_hint: 'red' does not match"),
    (lambda d: [d["properties"].pop(k) for k in list(d["properties"]) if k.startswith("proj:")],
     "uses none of its fields"),
])
def test_extension_fields_are_checked_by_cropflow_rules_without_their_schemas(catalog_dir, damage, message):
    (path,) = broken_items(catalog_dir)
    validate_catalog(catalog_dir / "catalog.json")  # intact: valid
    doc = json.loads(path.read_text())
    damage(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(STACValidationError, match=message):
        validate_catalog(catalog_dir / "catalog.json")


def test_an_extension_without_rules_or_schema_is_listed_unchecked(catalog_dir, caplog):
    (path,) = broken_items(catalog_dir)
    doc = json.loads(path.read_text())
    uri = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
    doc["stac_extensions"].append(uri)
    path.write_text(json.dumps(doc))
    validator = OfflineValidator()
    with caplog.at_level(logging.WARNING, logger="cropflow.stac"):
        validate_catalog(catalog_dir / "catalog.json", validator)
    assert validator.unchecked == {uri} and "eo/v1.1.0" in caplog.text


def test_extension_fields_are_validated_against_a_local_schema(catalog_dir, tmp_path):
    uri = ProjectionExtension.get_schema_uri()
    schema_file = tmp_path / "schemas" / uri.removeprefix("https://stac-extensions.github.io/")
    schema_file.parent.mkdir(parents=True)
    # a stand-in extension schema that requires an integer proj:code, which a valid item does not have
    integer_code = {"properties": {"proj:code": {"type": "integer"}}}
    schema_file.write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "$id": uri,
                                       "type": "object", "required": ["properties"],
                                       "properties": {"properties": integer_code}}))
    validator = OfflineValidator(tmp_path / "schemas")
    with pytest.raises(STACValidationError, match="proj:code|EPSG"):
        validate_catalog(catalog_dir / "catalog.json", validator)
    assert uri not in validator.unchecked


def test_stac_command_writes_a_valid_catalog(tmp_path, no_network, caplog):
    from cropflow.cli import main

    results = tmp_path / "results"
    cubes = write_maps(results)
    legend = Path(__file__).parents[1] / "resources" / "legend.yaml"
    code = main(["stac", "--maps", str(results / "maps"), "--models", "rf", "--tiles", *cubes,
                 "--cubes", *map(str, cubes.values()), "--legend", str(legend), "--config", json.dumps(CONFIG),
                 "--out", str(results / "stac")])
    assert code == 0
    assert validate_catalog(results / "stac" / "catalog.json") == 5
    item = pystac.Item.from_file(str(results / "stac" / "rf" / "rf_mosaic" / "rf_mosaic.json"))
    assert item.properties["cropflow:config_sha256"] == config_hash(CONFIG)
    # asked for probability maps that were not written: named, and the catalog is left as it was
    code = main(["stac", "--maps", str(results / "maps"), "--models", "rf", "--tiles", *cubes,
                 "--cubes", *map(str, cubes.values()), "--legend", str(legend), "--config", json.dumps(CONFIG),
                 "--probabilities", "--out", str(results / "stac")])
    assert code == 1 and "E0320000N5330000_proba.tif" in caplog.text
    assert item.to_dict()["properties"] == pystac.Item.from_file(
        str(results / "stac" / "rf" / "rf_mosaic" / "rf_mosaic.json")).to_dict()["properties"]
