import logging
import pathlib

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from cropflow import labels
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.raster import write_raster

ROOT = pathlib.Path(__file__).parents[1]
CRS = "EPSG:32652"
AOI_BOUNDS = (320000.0, 5330000.0, 340000.0, 5350000.0)


@pytest.fixture(scope="module")
def legend() -> Legend:
    return Legend.load(str(ROOT / "resources" / "legend.yaml"))


@pytest.fixture(scope="module")
def aoi() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=[shapely.box(*AOI_BOUNDS)], crs=CRS)


def box(x0: float, y0: float, w: float = 100.0, h: float = 100.0) -> shapely.Polygon:
    return shapely.box(x0, y0, x0 + w, y0 + h)


def write(tmp_path, name, crops, geoms, ids=None, crs=CRS, to_crs=None) -> pathlib.Path:
    data = {"crop": crops}
    if ids is not None:
        data["parcel_id"] = ids
    gdf = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
    if to_crs is not None:
        gdf = gdf.to_crs(to_crs)
    path = tmp_path / name
    if path.suffix in (".parquet", ".geoparquet"):
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    return path


def all_classes():
    """One parcel per legend class (so no absent-class warning), in the AOI interior."""
    names = ["maize", "soybean", "wheat", "other_crops", "forest", "water", "residential"]
    geoms = [box(321000 + 200 * i, 5331000) for i in range(len(names))]
    return names, geoms


# ---------------------------------------------------------------------------------------------- reading


def test_parcels_in_another_crs_are_reprojected_to_the_grid_crs(tmp_path, legend, aoi):
    names, utm = all_classes()
    path = write(tmp_path, "p.gpkg", names, utm, ids=list(range(10, 17)), to_crs="EPSG:4326")
    assert gpd.read_file(path).crs.to_epsg() == 4326
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert dropped.empty
    assert kept.crs.to_epsg() == 32652
    assert kept["parcel_id"].tolist() == list(range(10, 17))
    for geom, expected in zip(kept.geometry, utm):
        assert geom.hausdorff_distance(expected) < 1e-3
    np.testing.assert_allclose(kept["area_ha"], 1.0, rtol=1e-6)
    assert kept["class_name"].tolist() == names
    assert kept["class_id"].tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_bow_tie_polygon_is_repaired(tmp_path, legend, aoi):
    names, geoms = all_classes()
    bowtie = shapely.Polygon([(330000, 5340000), (330100, 5340100), (330100, 5340000), (330000, 5340100)])
    assert not bowtie.is_valid
    path = write(tmp_path, "p.gpkg", names + ["maize"], geoms + [bowtie], ids=list(range(1, 9)))
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert dropped.empty
    fixed = kept.set_index("parcel_id").geometry[8]
    assert fixed.is_valid and fixed.geom_type == "MultiPolygon"
    assert fixed.area == pytest.approx(2 * 0.5 * 100 * 50)


def test_unrepairable_and_empty_geometries_are_dropped_with_reason(tmp_path, legend, aoi):
    names, geoms = all_classes()
    flat = shapely.Polygon([(330000, 5340000), (330050, 5340050), (330100, 5340100), (330000, 5340000)])
    path = write(tmp_path, "p.gpkg", names + ["maize", "maize", "maize"], geoms + [flat, shapely.Polygon(), None],
                 ids=list(range(1, 11)))
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    reasons = dict(zip(dropped["parcel_id"], dropped["reason"]))
    assert reasons == {8: "invalid geometry could not be repaired", 9: "empty geometry", 10: "empty geometry"}
    assert len(kept) + len(dropped) == 10


def test_unknown_label_dropped_and_labels_matched_case_insensitively(tmp_path, legend, aoi):
    names, geoms = all_classes()
    extra = ["Banana", "  SOY ", "Corn", None]
    path = write(tmp_path, "p.gpkg", names + extra, geoms + [box(330000 + 200 * i, 5340000) for i in range(4)],
                 ids=list(range(1, 12)))
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    reasons = dict(zip(dropped["parcel_id"], dropped["reason"]))
    assert reasons == {8: "label 'Banana' not in legend", 11: "label missing"}
    classes = kept.set_index("parcel_id")["class_id"]
    assert classes[9] == 2 and classes[10] == 1


def test_integer_labels_are_legend_ids(tmp_path, legend, aoi):
    geoms = [box(321000 + 200 * i, 5331000) for i in range(8)]
    path = write(tmp_path, "p.gpkg", [1, 2, 3, 4, 5, 6, 7, 9], geoms, ids=list(range(1, 9)))
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert kept["class_id"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert dropped.to_dict("records") == [{"parcel_id": 8, "reason": "label '9' not in legend"}]


def test_absent_legend_class_is_logged_as_warning(tmp_path, legend, aoi, caplog):
    path = write(tmp_path, "p.gpkg", ["maize", "soybean"], [box(321000, 5331000), box(322000, 5331000)], ids=[1, 2])
    with caplog.at_level(logging.WARNING, logger="cropflow.labels"):
        labels.read_parcels(path, "crop", legend, CRS, aoi)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in ("wheat", "other_crops", "forest", "water", "residential"):
        assert f"'{name}'" in warned
    assert "'maize'" not in warned and "'soybean'" not in warned


def test_parcels_outside_dropped_and_crossing_the_boundary_clipped(tmp_path, legend, aoi):
    names, geoms = all_classes()
    crossing = shapely.box(319900, 5340000, 320100, 5340100)  # half outside the AOI's west edge
    outside = box(300000, 5340000)
    path = write(tmp_path, "p.gpkg", names + ["maize", "maize"], geoms + [crossing, outside], ids=list(range(1, 10)))
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert dropped.to_dict("records") == [{"parcel_id": 9, "reason": "outside AOI"}]
    clipped = kept.set_index("parcel_id").geometry[8]
    assert clipped.bounds == pytest.approx((320000, 5340000, 320100, 5340100))
    assert kept.set_index("parcel_id")["area_ha"][8] == pytest.approx(1.0)


def test_no_parcel_in_aoi_raises_naming_file_and_aoi_bounds(tmp_path, legend, aoi):
    path = write(tmp_path, "faraway.gpkg", ["maize"], [box(500000, 5340000)], ids=[1], to_crs="EPSG:4326")
    with pytest.raises(ValueError, match="faraway.gpkg") as err:
        labels.read_parcels(path, "crop", legend, CRS, aoi)
    message = str(err.value)
    assert "AOI bounds" in message
    # the AOI bounds are given in the parcels' CRS (degrees), Bei'an is near 126-127 E, 48 N
    lon_lat = aoi.to_crs("EPSG:4326").total_bounds
    assert f"{round(float(lon_lat[0]), 6)}" in message


@pytest.mark.parametrize("name", ["p.shp", "p.parquet", "p.geoparquet"])
def test_shapefile_and_geoparquet_are_readable(tmp_path, legend, aoi, name):
    names, geoms = all_classes()
    path = write(tmp_path, name, names, geoms, ids=list(range(1, 8)), to_crs="EPSG:4326")
    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert dropped.empty and len(kept) == 7
    assert kept.crs.to_epsg() == 32652
    assert kept.geometry.iloc[0].hausdorff_distance(geoms[0]) < 1e-3


def test_missing_parcel_id_assigns_1_to_n_and_logs(tmp_path, legend, aoi, caplog):
    names, geoms = all_classes()
    path = write(tmp_path, "p.gpkg", names, geoms)
    with caplog.at_level(logging.WARNING, logger="cropflow.labels"):
        kept, _ = labels.read_parcels(path, "crop", legend, CRS, aoi)
    assert kept["parcel_id"].tolist() == list(range(1, 8))
    assert any("no 'parcel_id' field" in r.getMessage() for r in caplog.records)


def test_bad_inputs_raise_errors_naming_the_file(tmp_path, legend, aoi):
    names, geoms = all_classes()
    with pytest.warns(UserWarning, match="crs"):
        nocrs = write(tmp_path, "nocrs.gpkg", names, geoms, ids=list(range(1, 8)), crs=None)
    with pytest.raises(ValueError, match=r"parcels .*nocrs.gpkg have no CRS"):
        labels.read_parcels(nocrs, "crop", legend, CRS, aoi)
    path = write(tmp_path, "p.gpkg", names, geoms, ids=list(range(1, 8)))
    with pytest.raises(ValueError, match=r"p.gpkg have no label field 'landuse'.*\['crop', 'parcel_id'\]"):
        labels.read_parcels(path, "landuse", legend, CRS, aoi)
    dup = write(tmp_path, "dup.gpkg", names, geoms, ids=[1, 2, 3, 3, 5, 6, 7])
    with pytest.raises(ValueError, match=r"dup.gpkg: parcel_id is duplicated .*\[3\]"):
        labels.read_parcels(dup, "crop", legend, CRS, aoi)
    missing = write(tmp_path, "missing.gpkg", names, geoms, ids=[1, 2, None, 4, 5, 6, 7])
    with pytest.raises(ValueError, match=r"missing.gpkg: parcel_id is missing"):
        labels.read_parcels(missing, "crop", legend, CRS, aoi)
    unknown = write(tmp_path, "unknown.gpkg", ["banana", "kiwi"], geoms[:2], ids=[1, 2])
    with pytest.raises(ValueError, match=r"no usable parcel in .*unknown.gpkg.*not in legend"):
        labels.read_parcels(unknown, "crop", legend, CRS, aoi)
    other = tmp_path / "p.csv"
    other.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"p.csv: unknown format"):
        labels.read_parcels(other, "crop", legend, CRS, aoi)
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(b"not a geopackage")
    with pytest.raises(ValueError, match=r"cannot read parcels .*broken.gpkg"):
        labels.read_parcels(broken, "crop", legend, CRS, aoi)
    with pytest.raises(FileNotFoundError, match="absent.gpkg"):
        labels.read_parcels(tmp_path / "absent.gpkg", "crop", legend, CRS, aoi)


# ---------------------------------------------------------------------------------------------- rasters


def parcels_frame(rows) -> gpd.GeoDataFrame:
    """rows: (parcel_id, class_id, geometry)"""
    return gpd.GeoDataFrame({"parcel_id": [r[0] for r in rows], "class_id": [r[1] for r in rows]},
                            geometry=[r[2] for r in rows], crs=CRS)


def test_rasterize_tile_uses_the_pixel_centre_rule_on_a_rectangle():
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))  # 10 x 10 px
    # x 320016..320044 holds the centres of columns 2 and 3 only; y 5349916..5349974 those of rows 3..7
    parcels = parcels_frame([(42, 3, shapely.box(320016, 5349916, 320044, 5349974))])
    classes, ids = labels.rasterize_tile(parcels, grid)
    assert classes.dtype == np.uint8 and ids.dtype == np.int32
    expected = np.zeros((10, 10), dtype=bool)
    expected[3:8, 2:4] = True
    np.testing.assert_array_equal(ids, np.where(expected, 42, 0))
    np.testing.assert_array_equal(classes, np.where(expected, 3, 0))


def test_smaller_overlapping_parcel_stays_on_top():
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    big = shapely.box(320000, 5349900, 320100, 5350000)
    small = shapely.box(320040, 5349940, 320060, 5349960)
    for rows in ([(1, 1, big), (2, 2, small)], [(2, 2, small), (1, 1, big)]):
        classes, ids = labels.rasterize_tile(parcels_frame(rows), grid)
        assert (ids == 2).sum() == 4 and (ids == 1).sum() == 96
        assert classes[5, 5] == 2 and classes[0, 0] == 1


def test_count_pixels_matches_tile_rasters_and_drops_small_parcels(monkeypatch):
    grid = ProjectGrid(CRS, 10.0, (320000, 5349800, 320200, 5350000))  # 20 x 20 px
    west = ProjectGrid(CRS, 10.0, (320000, 5349800, 320100, 5350000))
    east = ProjectGrid(CRS, 10.0, (320100, 5349800, 320200, 5350000))
    parcels = parcels_frame([
        (1, 1, shapely.box(320013, 5349813, 320187, 5349951)),  # straddles the two tiles
        (2, 2, shapely.box(320050, 5349900, 320120, 5349930)),  # on top of 1
        (3, 3, shapely.box(320151, 5349961, 320154, 5349964)),  # smaller than a pixel, holds no centre
        (4, 4, shapely.Point(320150, 5349985).buffer(12)),
    ])
    monkeypatch.setattr(labels, "COUNT_BLOCK", 7)  # several blocks, not aligned with the tiles
    kept, dropped = labels.count_pixels(parcels, grid, min_pixels=1)
    whole = labels.rasterize_tile(parcels, grid)[1]
    tiles = np.hstack([labels.rasterize_tile(parcels, west)[1], labels.rasterize_tile(parcels, east)[1]])
    np.testing.assert_array_equal(whole, tiles)
    expected = {pid: int((tiles == pid).sum()) for pid in (1, 2, 4)}
    assert dict(zip(kept["parcel_id"], kept["n_pixels"])) == expected
    assert expected[2] == 21 and expected[1] == 18 * 14 - 21
    assert dropped["parcel_id"].tolist() == [3]
    assert dropped["reason"].iloc[0].startswith("0 pixels on the 10 m grid, fewer than min_pixels 1")


def test_count_pixels_recounts_after_dropping_a_parcel_on_top():
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    parcels = parcels_frame([(1, 1, shapely.box(320000, 5349900, 320100, 5350000)),
                             (2, 2, shapely.box(320040, 5349940, 320060, 5349960))])
    kept, dropped = labels.count_pixels(parcels, grid, min_pixels=5)
    assert dropped["parcel_id"].tolist() == [2]
    assert kept["n_pixels"].tolist() == [100]  # the pixels of the dropped parcel go back to parcel 1


def test_cropland_tile_without_mask_is_all_ones(legend):
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    parcels = parcels_frame([(1, 5, shapely.box(320000, 5349900, 320050, 5350000))])
    out = labels.cropland_tile(None, grid, parcels, legend)
    assert out.dtype == np.uint8 and out.shape == (10, 10) and (out == 1).all()


def test_cropland_tile_from_land_cover_raster(tmp_path, legend, caplog):
    # 20 m land-cover raster covering the west half of the tile: column 0..1 (20 m) cropland code 40, rest 0
    src = ProjectGrid(CRS, 20.0, (320000, 5349900, 320060, 5350000))  # 5 rows x 3 cols
    cover = np.zeros(src.shape, dtype="uint8")
    cover[:, 0] = 40
    write_raster(tmp_path / "lc.tif", cover, src)
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    forest = parcels_frame([(1, 5, shapely.box(320000, 5349900, 320010, 5349910)),   # bottom-left px: forest
                            (2, 2, shapely.box(320040, 5349990, 320050, 5350000))])  # top row col 4: soybean
    with caplog.at_level(logging.WARNING, logger="cropflow.labels"):
        out = labels.cropland_tile(tmp_path / "lc.tif", grid, forest, legend)
    expected = np.zeros((10, 10), dtype="uint8")
    expected[:, 0:2] = 1      # land cover 40 (nearest resampling of the 20 m pixels)
    expected[:, 6:] = 1       # not covered by the land-cover raster: kept as cropland
    expected[9, 0] = 0        # surveyed forest parcel
    expected[0, 4] = 1        # surveyed soybean parcel
    np.testing.assert_array_equal(out, expected)
    assert any("does not cover 40.0%" in r.getMessage() for r in caplog.records)


def test_write_label_tile_writes_three_rasters(tmp_path, legend):
    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    parcels = parcels_frame([(7, 2, shapely.box(320000, 5349900, 320050, 5350000))])
    out = {k: tmp_path / f"E0320000N5340000_{k}.tif" for k in ("class", "parcel", "cropland")}
    labels.write_label_tile(parcels, None, grid, "E0320000N5340000", out["class"], out["parcel"], out["cropland"],
                            legend)
    with rasterio.open(out["class"]) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.colormap(1)[2][:3] == legend.classes[1].rgba[:3]
        assert ds.tags()["TILE"] == "E0320000N5340000"
        assert ds.transform == grid.transform
        classes = ds.read(1)
    with rasterio.open(out["parcel"]) as ds:
        assert ds.dtypes[0] == "int32" and ds.nodata == 0
        ids = ds.read(1)
    with rasterio.open(out["cropland"]) as ds:
        assert ds.dtypes[0] == "uint8"
        assert (ds.read(1) == 1).all()
    assert (classes[:, :5] == 2).all() and (classes[:, 5:] == 0).all()
    assert (ids[:, :5] == 7).all() and (ids[:, 5:] == 0).all()
    assert not list(tmp_path.glob(".*part"))  # no temporary left behind


def test_labels_tile_command_writes_a_block_of_tiles(tmp_path, legend, caplog):
    """One job for a block of tiles: a folder with each tile's three rasters, each on its own tile's grid and
    equal to the tile labelled alone; a tile that fails leaves no folder."""
    import json

    from cropflow import cli
    from cropflow.grid import make_tiles, tile_grid

    grid = ProjectGrid(CRS, 10.0, (320000, 5349900, 320100, 5350000))
    tiles = make_tiles(grid, gpd.GeoDataFrame(geometry=[shapely.box(*grid.bounds)], crs=CRS), 50.0)
    tiles.to_file(tmp_path / "tiles.gpkg", driver="GPKG")
    (tmp_path / "grid.json").write_text(json.dumps(grid.to_dict()))
    parcels_frame([(7, 2, shapely.box(320000, 5349900, 320070, 5349980))]).to_file(tmp_path / "parcels.gpkg")
    ids = list(tiles["tile_id"])
    args = ["labels-tile", "--parcels", str(tmp_path / "parcels.gpkg"), "--grid", str(tmp_path / "grid.json"),
            "--tiles", str(tmp_path / "tiles.gpkg"), "--legend", str(ROOT / "resources" / "legend.yaml")]
    out = tmp_path / "labels" / "block"
    assert cli.main([*args, "--tile", *ids, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}_{k}.tif" for t in ids
                                                           for k in ("class", "cropland", "parcel"))
    for t in ids:
        alone = {k: tmp_path / "alone" / f"{t}_{k}.tif" for k in ("class", "parcel", "cropland")}
        labels.write_label_tile(gpd.read_file(tmp_path / "parcels.gpkg"), None, tile_grid(grid, tiles, t), t,
                                alone["class"], alone["parcel"], alone["cropland"], legend)
        for kind, path in alone.items():
            with rasterio.open(out / f"{t}_{kind}.tif") as got, rasterio.open(path) as want:
                assert got.transform == want.transform and got.tags()["TILE"] == t
                np.testing.assert_array_equal(got.read(), want.read())
    labelled = 0
    for t in ids:
        with rasterio.open(out / f"{t}_parcel.tif") as ds:
            labelled += int((ds.read(1) == 7).sum())
    assert labelled == 7 * 8  # the parcel's 56 pixels, spread over the tiles
    failing = tmp_path / "labels" / "failing"
    assert cli.main([*args, "--tile", ids[0], "E0000000N0000000", "--out", str(failing)]) != 0
    assert "E0000000N0000000" in caplog.text
    assert not failing.exists() and sorted(p.name for p in failing.parent.iterdir()) == ["block"]
