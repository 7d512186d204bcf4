"""Project grid: UTM zone, lattice snapping, grid over an AOI, tiles and their sub-grids."""

import json

import geopandas as gpd
import pytest
import shapely
from rasterio.windows import Window

from cropflow.grid import (ProjectGrid, block_id, make_tiles, neighbour_tiles, project_grid, snap_bounds, tile_grid,
                           utm_crs_for)

UTM52 = "EPSG:32652"
DEMO = (320000.0, 5330000.0, 340000.0, 5350000.0)


def aoi_of(*geoms, crs=UTM52) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"name": [f"part{i}" for i in range(len(geoms))]}, geometry=list(geoms), crs=crs)


@pytest.mark.parametrize("lon, lat, expected", [
    (126.6, 48.1, "EPSG:32652"),    # Bei'an county, northern hemisphere
    (126.0, 10.0, "EPSG:32652"),    # a zone's western edge belongs to it
    (125.999, 10.0, "EPSG:32651"),
    (-47.9, -15.8, "EPSG:32723"),   # Brasilia, southern hemisphere
    (151.2, -33.9, "EPSG:32756"),   # Sydney
    (-180.0, 0.0, "EPSG:32601"),    # the equator counts as north
    (179.9, -1.0, "EPSG:32760"),
])
def test_utm_zone_from_lon_lat(lon, lat, expected):
    assert utm_crs_for(lon, lat) == expected


def test_snap_bounds_outward():
    assert snap_bounds((320003.0, 5330009.9, 339991.0, 5349990.5), 10.0) == (320000.0, 5330000.0, 340000.0,
                                                                            5350000.0)
    # negative coordinates snap outward too (floor / ceil, not towards zero)
    assert snap_bounds((-15.0, -25.0, 15.0, 25.0), 10.0) == (-20.0, -30.0, 20.0, 30.0)


def test_snap_bounds_tolerance_keeps_values_on_the_lattice():
    # within 1e-3 pixel of the lattice: kept, not pushed one pixel outward
    assert snap_bounds((319999.996, 5330000.004, 340000.004, 5349999.996), 10.0) == DEMO
    # just beyond the tolerance: snapped outward by one pixel
    assert snap_bounds((319999.98, 5330000.0, 340000.02, 5350000.0), 10.0) == (319990.0, 5330000.0, 340010.0,
                                                                             5350000.0)


def test_project_grid_with_explicit_crs():
    aoi = aoi_of(shapely.box(320003.0, 5330004.0, 339996.0, 5349995.0))
    grid = project_grid(aoi, "EPSG:32652", 10)
    assert grid == ProjectGrid(UTM52, 10.0, DEMO)
    assert grid.shape == (2000, 2000)
    # an AOI in lon/lat is projected into the given CRS and covered by the grid
    lonlat = aoi.to_crs("EPSG:4326")
    grid2 = project_grid(lonlat, "EPSG:32652", 20)
    assert grid2.crs == UTM52 and grid2.resolution == 20.0
    left, bottom, right, top = lonlat.to_crs(UTM52).total_bounds
    assert grid2.bounds[0] <= left and grid2.bounds[1] <= bottom and grid2.bounds[2] >= right and grid2.bounds[3] >= top
    assert all(b % 20 == 0 for b in grid2.bounds)
    assert right - left > grid2.bounds[2] - grid2.bounds[0] - 40  # snapped by less than a pixel each side


@pytest.mark.parametrize("crs", ["auto", None, ""])
def test_project_grid_auto_picks_the_utm_zone_of_the_centroid(crs):
    north = aoi_of(shapely.box(126.5, 48.0, 126.7, 48.2), crs="EPSG:4326")
    grid = project_grid(north, crs, 10)
    assert grid.crs == UTM52
    assert all(abs(b / 10 - round(b / 10)) < 1e-9 for b in grid.bounds)
    south = aoi_of(shapely.box(-48.0, -16.0, -47.8, -15.7), crs="EPSG:4326")
    assert project_grid(south, crs, 10).crs == "EPSG:32723"


def test_make_tiles_demo_aoi_gives_four_10km_tiles():
    aoi = aoi_of(shapely.box(*DEMO))
    grid = project_grid(aoi, UTM52, 10)
    tiles = make_tiles(grid, aoi, 10000)
    assert list(tiles["tile_id"]) == ["E0320000N5330000", "E0320000N5340000", "E0330000N5330000",
                                      "E0330000N5340000"]
    assert tiles.crs == UTM52
    for row in tiles.itertuples():
        x0, y0 = int(row.tile_id[1:8]), int(row.tile_id[9:])
        assert (row.left, row.bottom, row.right, row.top) == (x0, y0, x0 + 10000, y0 + 10000)
        assert row.geometry.equals(shapely.box(row.left, row.bottom, row.right, row.top))
        assert tile_grid(grid, tiles, row.tile_id).shape == (1000, 1000)
    # a partition of the grid: no overlap, union = the grid
    union = shapely.union_all(tiles.geometry.values)
    assert union.area == pytest.approx(shapely.box(*grid.bounds).area)
    assert tiles.geometry.area.sum() == pytest.approx(union.area)


def test_make_tiles_for_an_aoi_off_the_tile_lattice():
    # an L-shaped AOI whose corners are neither on the 10 km lattice nor on the 10 m pixel lattice
    foot = shapely.box(325004.0, 5333003.0, 342996.0, 5341000.0)
    arm = shapely.box(325004.0, 5341000.0, 333000.0, 5350997.0)
    aoi = aoi_of(foot, arm)
    grid = project_grid(aoi, UTM52, 10)
    assert grid.bounds == (325000.0, 5333000.0, 343000.0, 5351000.0)
    tiles = make_tiles(grid, aoi, 10000)
    ids = list(tiles["tile_id"])
    # 9 lattice cells touch the grid's envelope; the top-right one holds no AOI and is dropped
    assert ids == ["E0320000N5330000", "E0320000N5340000", "E0320000N5350000", "E0330000N5330000",
                   "E0330000N5340000", "E0330000N5350000", "E0340000N5330000", "E0340000N5340000"]
    assert "E0340000N5350000" not in ids
    first = tiles.set_index("tile_id").loc["E0320000N5330000"]
    assert (first.left, first.bottom, first.right, first.top) == (325000.0, 5333000.0, 330000.0, 5340000.0)
    corner = tiles.set_index("tile_id").loc["E0340000N5340000"]
    assert (corner.left, corner.bottom, corner.right, corner.top) == (340000.0, 5340000.0, 343000.0, 5350000.0)
    aoi_geom = aoi.union_all()
    grid_box = shapely.box(*grid.bounds)
    for row in tiles.itertuples():
        assert grid_box.contains(row.geometry)                      # clipped to the grid
        assert row.geometry.intersection(aoi_geom).area > 0         # no tile outside the AOI
        assert all(abs(b / 10 - round(b / 10)) < 1e-9 for b in (row.left, row.bottom, row.right, row.top))
        sub = tile_grid(grid, tiles, row.tile_id)
        assert sub.bounds == (row.left, row.bottom, row.right, row.top)
    union = shapely.union_all(tiles.geometry.values)
    assert tiles.geometry.area.sum() == pytest.approx(union.area)   # no overlap
    assert aoi_geom.difference(union).area == pytest.approx(0.0)    # the AOI is covered


def test_make_tiles_without_any_tile_in_the_aoi_raises():
    aoi = aoi_of(shapely.box(*DEMO))
    grid = project_grid(aoi, UTM52, 10)
    far = aoi_of(shapely.box(500000.0, 5330000.0, 510000.0, 5340000.0))
    with pytest.raises(ValueError, match="no tile intersects the AOI"):
        make_tiles(grid, far, 10000)


def test_tile_grid_and_window_of():
    aoi = aoi_of(shapely.box(*DEMO))
    grid = project_grid(aoi, UTM52, 10)
    tiles = make_tiles(grid, aoi, 10000)
    top_right = tile_grid(grid, tiles, "E0330000N5340000")
    assert top_right == ProjectGrid(UTM52, 10.0, (330000.0, 5340000.0, 340000.0, 5350000.0))
    assert grid.window_of(top_right) == Window(1000, 0, 1000, 1000)
    bottom_left = tile_grid(grid, tiles, "E0320000N5330000")
    assert grid.window_of(bottom_left) == Window(0, 1000, 1000, 1000)
    assert bottom_left.transform.c == 320000.0 and bottom_left.transform.f == 5340000.0
    x, y = bottom_left.coords()
    assert x[0] == 320005.0 and y[0] == 5339995.0 and y[-1] == 5330005.0
    # a window is integral even for a sub-grid given with float noise
    noisy = ProjectGrid(UTM52, 10.0, (320100.0000001, 5349899.9999999, 320200.0, 5350000.0))
    assert grid.window_of(noisy) == Window(10, 0, 10, 10)
    with pytest.raises(KeyError, match="E0990000N5330000"):
        tile_grid(grid, tiles, "E0990000N5330000")


def test_project_grid_dict_round_trip():
    grid = ProjectGrid(UTM52, 10.0, DEMO)
    d = grid.to_dict()
    assert d == {"crs": UTM52, "resolution": 10.0, "bounds": list(DEMO)}
    back = ProjectGrid.from_dict(json.loads(json.dumps(d)))
    assert back == grid
    assert isinstance(back.bounds, tuple) and hash(back) == hash(grid)
    # integer values in a hand-written config become floats
    assert ProjectGrid.from_dict({"crs": UTM52, "resolution": 10, "bounds": [320000, 5330000, 340000, 5350000]}) == grid


def test_neighbour_tiles_are_the_up_to_eight_touching_tiles():
    grid = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 350000.0, 5360000.0))  # 3 x 3 tiles of 10 km
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(*grid.bounds)], crs=grid.crs)
    tiles = make_tiles(grid, aoi, 10000)
    centre, corner = "E0330000N5340000", "E0320000N5330000"
    assert neighbour_tiles(tiles, centre) == sorted(set(tiles["tile_id"]) - {centre})
    assert neighbour_tiles(tiles, corner) == ["E0320000N5340000", "E0330000N5330000", "E0330000N5340000"]
    assert neighbour_tiles(tiles.drop(index=tiles.index[tiles["tile_id"] == "E0330000N5330000"]), corner) == [
        "E0320000N5340000", "E0330000N5340000"]
    with pytest.raises(KeyError, match="E0999999N9999999"):
        neighbour_tiles(tiles, "E0999999N9999999")


def test_block_id_anchors_blocks_on_the_tile_lattice():
    assert block_id("E0340000N5310000", 1, 10000) == "E0340000N5310000"
    # the 2 x 2 block of 10 km tiles anchored at multiples of 20 km
    same = {block_id(t, 2, 10000) for t in ("E0340000N5300000", "E0350000N5300000", "E0340000N5310000",
                                             "E0350000N5310000")}
    assert same == {"E0340000N5300000x2"}
    assert block_id("E0360000N5300000", 2, 10000) == "E0360000N5300000x2"
    assert block_id("E0350000N5310000", 3, 10000) == "E0330000N5310000x3"
    with pytest.raises(ValueError, match="not a tile id"):
        block_id("T1", 2, 10000)
    with pytest.raises(ValueError, match="at least 1"):
        block_id("E0340000N5310000", 0, 10000)
