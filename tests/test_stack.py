"""Feature cube of a tile from real per-scene rasters: time axes, merging, interpolation, gap filling."""

import json
import logging

import numpy as np
import zarr
import pytest

from cropflow.cube import cube_grid, cube_inputs, open_cube
from cropflow.gapfill import knn_fill
from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster
from cropflow.stack import build_cube, coherence_layers, regular_dates, s1_layers, s2_layers

UTM52 = "EPSG:32652"
TILE = ProjectGrid(UTM52, 10.0, (320000.0, 5349920.0, 320060.0, 5350000.0))  # 8 rows x 6 cols
H, W = TILE.shape
ROW, COL = np.mgrid[0:H, 0:W].astype(np.float32)
BANDS = {"s1": ["vv_db", "vh_db"], "coh": ["coh_vv", "coh_vh"], "s2": ["B04", "B8A", "B11"]}
TARGETS = regular_dates(2023, "05-08", "06-01", 4)  # 05-08 05-12 05-16 05-20 05-24 05-28 06-01
S1 = {
    "A": "S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048404_05D2C4_3F1A",
    "B1": "S1A_IW_SLC__1SDV_20230520T094513_20230520T094540_048579_05D8F0_1B2C",
    "B2": "S1A_IW_SLC__1SDV_20230520T094538_20230520T094605_048579_05D8F0_4D5E",
    "C": "S1A_IW_SLC__1SDV_20230601T094514_20230601T094541_048754_05DF1A_9A0B",
}
HOLE = (slice(2, 4), slice(2, 4))  # cloud on the S2 product of 05-12


def day(text: str) -> np.datetime64:
    return np.datetime64(text, "D")


def field(grid: ProjectGrid, base: float) -> np.ndarray:
    """base + 0.01 col + 0.1 row, in pixel units of TILE, evaluated on any grid of the same lattice."""
    x, y = grid.coords()
    col = (x - TILE.bounds[0] - 5.0) / 10.0
    row = (TILE.bounds[3] - y - 5.0) / 10.0
    return (base + 0.01 * col[None, :] + 0.1 * row[:, None]).astype(np.float32)


# per source and band: the value on the tile of every product (key = product label)
def s1_values(base: float) -> dict[str, np.ndarray]:
    return {"vv_db": field(TILE, base), "vh_db": field(TILE, base - 6.0)}


S1_BASE = {"A": -10.0, "B1": -8.0, "B2": 50.0, "C": -12.0}
COH_BASE = {"R032_20230508_20230520": 0.3, "R032_20230520_20230601": 0.6}
S2_BASE = {"20230512": 0.05, "20230517": 3.0, "20230522": 0.15}


def write_s1(folder, label: str, grid: ProjectGrid, band_order=("vh_db", "entropy", "vv_db")) -> str:
    base = S1_BASE[label]
    layers = {"vv_db": field(grid, base), "vh_db": field(grid, base - 6.0), "entropy": np.full(grid.shape, 0.5)}
    path = folder / f"{S1[label]}.tif"
    start = S1[label].split("_")[5]  # (the product type is "SLC_", hence "__")
    iso = f"{start[:4]}-{start[4:6]}-{start[6:8]}T{start[9:11]}:{start[11:13]}:{start[13:15]}.000000Z"
    write_raster(path, np.stack([layers[b] for b in band_order]).astype(np.float32), grid, nodata=np.nan,
                 band_names=list(band_order), tags={"SCENE": S1[label], "START_TIME": iso})
    return str(path)


def write_coh(folder, pair: str) -> str:
    path = folder / f"{pair}_coh.tif"
    base = COH_BASE[pair]
    write_raster(path, np.stack([field(TILE, base), field(TILE, base - 0.1)]), TILE, nodata=np.nan,
                 band_names=["coh_vv", "coh_vh"], tags={"RELATIVE_ORBIT": 32})
    return str(path)


def write_s2(folder, date: str, *, used: bool = True, hole: bool = False) -> str:
    scene = f"S2A_MSIL2A_{date}T023551_N0509_R089_T52UCU_{date}T060311"
    base = S2_BASE[date]
    data = np.stack([field(TILE, base), field(TILE, base + 0.2), field(TILE, base + 0.1)])
    if hole:
        data[(slice(None), *HOLE)] = np.nan
    path = folder / f"{scene}.tif"
    write_raster(path, data, TILE, nodata=np.nan, band_names=["B04", "B8A", "B11"])
    meta = {"scene": scene, "datetime": f"{date[:4]}-{date[4:6]}-{date[6:]}T02:35:51.000Z", "tile": "52UCU",
            "cloud_fraction": 0.5 if not used else 0.01, "valid_fraction": 0.9, "coverage": 1.0, "used": used,
            "reason": "" if used else "cloud fraction 0.50 > 0.08"}
    (folder / f"{scene}.json").write_text(json.dumps(meta))
    return str(path)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    s1_dir, coh_dir, s2_dir = root / "s1", root / "coh", root / "s2"
    for d in (s1_dir, coh_dir, s2_dir):
        d.mkdir()
    wide = ProjectGrid(UTM52, 10.0, (319980.0, 5349900.0, 320100.0, 5350020.0))  # covers the tile and more
    left = ProjectGrid(UTM52, 10.0, (320000.0, 5349920.0, 320030.0, 5350000.0))  # the tile's left 3 columns
    s1 = [write_s1(s1_dir, "A", wide), write_s1(s1_dir, "B1", left), write_s1(s1_dir, "B2", TILE),
          write_s1(s1_dir, "C", TILE, band_order=("vv_db", "vh_db"))]
    coh = [write_coh(coh_dir, p) for p in COH_BASE]
    s2 = [write_s2(s2_dir, "20230512", hole=True), write_s2(s2_dir, "20230517", used=False),
          write_s2(s2_dir, "20230522")]
    return {"s1": s1, "coh": coh, "s2": s2, "root": root}


def layers_of(products) -> dict:
    return {"s1": s1_layers(products["s1"], BANDS["s1"]), "coh": coherence_layers(products["coh"], BANDS["coh"]),
            "s2": s2_layers(products["s2"], BANDS["s2"])}


@pytest.fixture(scope="module")
def chrono(products, tmp_path_factory):
    out = tmp_path_factory.mktemp("cubes") / "E0320000N5349920.zarr"
    build_cube(layers_of(products), BANDS, {s: TARGETS for s in BANDS}, TILE, "E0320000N5349920", out)
    return out


def band_series(ds, name: str) -> np.ndarray:
    """(T, y, x) values of one band of the chronological cube."""
    da = cube_inputs(ds)["features"]
    return da.sel(band=name).values


# ------------------------------------------------------------------------------------------------ layers


def test_layers_are_dated_and_unused_s2_is_skipped(products, caplog):
    s1 = s1_layers(products["s1"], BANDS["s1"])
    assert [str(layer.day) for layer in s1] == ["2023-05-08", "2023-05-20", "2023-05-20", "2023-06-01"]
    assert all(layer.source == "s1" and layer.bands == ("vv_db", "vh_db") for layer in s1)
    coh = coherence_layers(products["coh"], BANDS["coh"])
    assert [str(layer.day) for layer in coh] == ["2023-05-20", "2023-06-01"]  # dated at the secondary
    with caplog.at_level(logging.INFO, logger="cropflow.stack"):
        s2 = s2_layers(products["s2"], BANDS["s2"])
    assert [str(layer.day) for layer in s2] == ["2023-05-12", "2023-05-22"]
    assert any("20230517" in r.message and "cloud fraction 0.50" in r.message for r in caplog.records)


def test_coherence_file_without_pair_id_raises(tmp_path):
    with pytest.raises(ValueError, match="coh_20230508.tif: coherence file name"):
        coherence_layers([str(tmp_path / "coh_20230508.tif")], ["coh_vv"])


def test_regular_dates():
    season = regular_dates(2023, "05-06", "09-27", 12)
    assert len(season) == 13
    assert season[0] == day("2023-05-06") and season[-1] == day("2023-09-27")
    assert set(np.diff(np.array(season)).astype(int)) == {12}
    ten = regular_dates(2023, "05-06", "09-27", 10)
    assert ten[0] == day("2023-05-06") and ten[-1] == day("2023-09-23")  # the last step inside the season


# ----------------------------------------------------------------------------------- chronological cube


def test_chronological_cube_layout(chrono):
    ds = open_cube(chrono)
    da = cube_inputs(ds)["features"]
    assert set(cube_inputs(ds)) == {"features"}
    assert da.dims == ("time", "band", "y", "x") and da.dtype == np.float32
    assert list(da["band"].values) == ["vv_db", "vh_db", "coh_vv", "coh_vh", "B04", "B8A", "B11"]
    np.testing.assert_array_equal(da["time"].values.astype("datetime64[D]"), np.array(TARGETS))
    x, y = TILE.coords()
    np.testing.assert_array_equal(da["x"].values, x)
    np.testing.assert_array_equal(da["y"].values, y)
    assert ds["fill_fraction_features"].dims == ("time", "band")
    assert ds.attrs["tile"] == "E0320000N5349920" and ds.attrs["mode"] == "chronological"


def test_features_are_stored_with_shuffled_lz4(chrono):
    """The feature array is compressed with Blosc LZ4 after a byte shuffle (cheap to decode at inference)."""
    codecs = zarr.open_array(chrono / "features", mode="r").metadata.codecs
    blosc = [c for c in codecs if isinstance(c, zarr.codecs.BloscCodec)]
    assert len(blosc) == 1 and str(getattr(blosc[0].cname, "value", blosc[0].cname)) == "lz4"
    assert str(getattr(blosc[0].shuffle, "value", blosc[0].shuffle)) == "shuffle"


def test_values_on_observation_days_and_interpolated_between(chrono):
    ds = open_cube(chrono)
    vv, vh = band_series(ds, "vv_db"), band_series(ds, "vh_db")
    t = {str(d): i for i, d in enumerate(TARGETS)}
    a, c = s1_values(S1_BASE["A"]), s1_values(S1_BASE["C"])
    # 05-20: two products the same day, merged first-valid-wins (B1 covers the left 3 columns only)
    merged = {b: np.where(COL < 3, s1_values(S1_BASE["B1"])[b], s1_values(S1_BASE["B2"])[b]) for b in a}
    np.testing.assert_allclose(vv[t["2023-05-08"]], a["vv_db"], rtol=1e-6)
    np.testing.assert_allclose(vv[t["2023-05-20"]], merged["vv_db"], rtol=1e-6)
    np.testing.assert_allclose(vh[t["2023-05-20"]], merged["vh_db"], rtol=1e-6)
    np.testing.assert_allclose(vv[t["2023-06-01"]], c["vv_db"], rtol=1e-6)
    # 05-12 is 4 of the 12 days from 05-08 to 05-20; 05-28 is 8 of the 12 days from 05-20 to 06-01
    np.testing.assert_allclose(vv[t["2023-05-12"]], a["vv_db"] + (merged["vv_db"] - a["vv_db"]) * 4 / 12,
                               rtol=1e-5)
    np.testing.assert_allclose(vh[t["2023-05-28"]], merged["vh_db"] + (c["vh_db"] - merged["vh_db"]) * 8 / 12,
                               rtol=1e-5)


def test_coherence_and_s2_interpolation_and_extrapolation(chrono):
    ds = open_cube(chrono)
    t = {str(d): i for i, d in enumerate(TARGETS)}
    coh = band_series(ds, "coh_vv")
    first, second = field(TILE, 0.3), field(TILE, 0.6)
    np.testing.assert_allclose(coh[t["2023-05-08"]], first, rtol=1e-6)  # before the first pair: nearest
    np.testing.assert_allclose(coh[t["2023-05-20"]], first, rtol=1e-6)
    np.testing.assert_allclose(coh[t["2023-05-24"]], first + (second - first) * 4 / 12, rtol=1e-5)
    b04 = band_series(ds, "B04")
    may12, may22 = field(TILE, 0.05), field(TILE, 0.15)
    clear = np.ones((H, W), bool)
    clear[HOLE] = False
    np.testing.assert_allclose(b04[t["2023-05-12"]][clear], may12[clear], rtol=1e-6)
    # the cloud hole is filled in time: no earlier observation, so the next one (05-22)
    np.testing.assert_allclose(b04[t["2023-05-12"]][~clear], may22[~clear], rtol=1e-6)
    np.testing.assert_allclose(b04[t["2023-05-16"]][clear], (may12 + (may22 - may12) * 4 / 10)[clear], rtol=1e-5)
    np.testing.assert_allclose(b04[t["2023-06-01"]], may22, rtol=1e-6)  # after the last: nearest
    # the used=false product (reflectance >= 3) never enters the cube
    assert np.nanmax(b04) < 1.0 and np.isfinite(b04).all()


def test_fill_fractions(chrono):
    ds = open_cube(chrono)
    frac = ds["fill_fraction_features"].to_pandas()  # rows: time, columns: band
    frac.index = [str(d)[:10] for d in frac.index]
    for b in ("vv_db", "vh_db"):
        assert frac.loc["2023-05-08", b] == 0.0   # observed everywhere that day
        assert frac.loc["2023-05-12", b] == 1.0   # interpolated everywhere
        assert frac.loc["2023-05-20", b] == 0.0   # two same-day products together cover the tile
    assert frac.loc["2023-05-08", "coh_vv"] == 1.0 and frac.loc["2023-06-01", "coh_vh"] == 0.0
    n_hole = 4
    for b in ("B04", "B8A", "B11"):
        assert frac.loc["2023-05-12", b] == pytest.approx(n_hole / (H * W))
        assert frac.loc["2023-05-16", b] == 1.0


def test_attrs_record_products_and_acquisitions(chrono, products):
    ds = open_cube(chrono)
    assert ds.attrs["acquisitions"] == {"s1": ["2023-05-08", "2023-05-20", "2023-06-01"],
                                        "coh": ["2023-05-20", "2023-06-01"], "s2": ["2023-05-12", "2023-05-22"]}
    names = ds.attrs["products"]
    assert names["s1"] == [f"{S1[k]}.tif" for k in ("A", "B1", "B2", "C")]
    assert names["coh"] == ["R032_20230508_20230520_coh.tif", "R032_20230520_20230601_coh.tif"]
    assert len(names["s2"]) == 2 and not any("20230517" in n for n in names["s2"])
    assert ds.attrs["crs"] == UTM52 and ds.attrs["gapfill"] == "interpolate"


def test_cube_grid_is_the_tile_grid(chrono):
    assert cube_grid(open_cube(chrono)) == TILE


def test_block_rows_does_not_change_the_cube(chrono, products, tmp_path):
    out = tmp_path / "blocks.zarr"
    build_cube(layers_of(products), BANDS, {s: TARGETS for s in BANDS}, TILE, "E0320000N5349920", out,
               block_rows=3)
    a, b = open_cube(chrono), open_cube(out)
    np.testing.assert_array_equal(a["features"].values, b["features"].values)
    np.testing.assert_allclose(a["fill_fraction_features"].values, b["fill_fraction_features"].values, atol=1e-6)


# --------------------------------------------------------------------------------------- other options


def test_separate_mode_keeps_one_time_axis_per_source(products, tmp_path):
    targets = {"s1": [day("2023-05-08"), day("2023-05-20"), day("2023-06-01")],
               "coh": [day("2023-05-20"), day("2023-06-01")], "s2": [day("2023-05-12"), day("2023-05-22")]}
    out = tmp_path / "sep.zarr"
    build_cube(layers_of(products), BANDS, targets, TILE, "T", out, mode="separate")
    ds = open_cube(out)
    assert "features" not in ds
    assert ds["s1"].dims == ("time_s1", "band_s1", "y", "x")
    assert ds["s2"].dims == ("time_s2", "band_s2", "y", "x")
    assert list(ds["band_coh"].values) == ["coh_vv", "coh_vh"]
    assert ds["fill_fraction_s2"].dims == ("time_s2", "band_s2")
    inputs = cube_inputs(ds)
    assert list(inputs) == ["s1", "coh", "s2"]
    for s, da in inputs.items():
        assert da.dims == ("time", "band", "y", "x")
        np.testing.assert_array_equal(da["time"].values.astype("datetime64[D]"), np.array(targets[s]))
        assert list(da["band"].values) == BANDS[s]
    s1 = inputs["s1"].values
    np.testing.assert_allclose(s1[1, 0], np.where(COL < 3, field(TILE, -8.0), field(TILE, 50.0)), rtol=1e-6)
    np.testing.assert_allclose(inputs["coh"].values[1, 1], field(TILE, 0.5), rtol=1e-6)
    s2 = inputs["s2"].values
    assert np.isfinite(s2).all()
    np.testing.assert_allclose(s2[0, 0][HOLE], field(TILE, 0.15)[HOLE], rtol=1e-6)
    np.testing.assert_allclose(s2[1, 2], field(TILE, 0.25), rtol=1e-6)
    assert float(ds["fill_fraction_s2"].values[0, 0]) == pytest.approx(4 / (H * W))
    assert float(ds["fill_fraction_s1"].values.max()) == 0.0


def test_chronological_mode_needs_one_time_axis(products, tmp_path):
    targets = {"s1": TARGETS, "coh": TARGETS, "s2": TARGETS[:3]}
    with pytest.raises(ValueError, match="one target time axis"):
        build_cube(layers_of(products), BANDS, targets, TILE, "T", tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="stack.mode"):
        build_cube(layers_of(products), BANDS, {s: TARGETS for s in BANDS}, TILE, "T", tmp_path / "x.zarr",
                   mode="stacked")
    assert not (tmp_path / "x.zarr").exists()


def test_source_without_layers_stays_nan_and_is_logged(products, tmp_path, caplog):
    layers = layers_of(products)
    layers["coh"] = []
    out = tmp_path / "nocoh.zarr"
    with caplog.at_level(logging.WARNING, logger="cropflow.stack"):
        build_cube(layers, BANDS, {s: TARGETS for s in BANDS}, TILE, "E0320000N5349920", out)
    ds = open_cube(out)
    assert np.isnan(band_series(ds, "coh_vv")).all() and np.isnan(band_series(ds, "coh_vh")).all()
    assert np.isfinite(band_series(ds, "vv_db")).all() and np.isfinite(band_series(ds, "B11")).all()
    assert any(r.levelno == logging.WARNING and "E0320000N5349920" in r.message and "coh" in r.message
               for r in caplog.records)
    assert ds.attrs["products"]["coh"] == [] and ds.attrs["acquisitions"]["coh"] == []


def test_missing_band_raises_naming_the_file(products, tmp_path):
    old = write_s1(tmp_path, "A", TILE, band_order=("vv_db",))  # built with another config
    layers = layers_of(products)
    layers["s1"] = s1_layers([old], BANDS["s1"])
    with pytest.raises(ValueError, match=rf"{S1['A']}\.tif lacks band\(s\) \['vh_db'\]"):
        build_cube(layers, BANDS, {s: TARGETS for s in BANDS}, TILE, "T", tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


def test_knn_fills_cloud_holes_spatially(products, chrono, tmp_path):
    out = tmp_path / "knn.zarr"
    build_cube(layers_of(products), BANDS, {s: TARGETS for s in BANDS}, TILE, "T", out, gapfill="knn", knn_k=4)
    ds = open_cube(out)
    assert ds.attrs["gapfill"] == "knn" and ds.attrs["knn_k"] == 4
    i12 = TARGETS.index(day("2023-05-12"))
    for b, base in (("B04", 0.05), ("B11", 0.15)):
        cloudy = field(TILE, base)
        cloudy[HOLE] = np.nan
        got = band_series(ds, b)[i12]
        # the hole takes the mean of the 4 nearest clear pixels of the same date and band
        np.testing.assert_allclose(got, knn_fill(cloudy, 4), rtol=1e-6)
        interpolated = band_series(open_cube(chrono), b)[i12]
        assert not np.allclose(got[HOLE], interpolated[HOLE])
    # clear pixels and the other sources are as with temporal interpolation
    np.testing.assert_array_equal(band_series(ds, "vv_db"), band_series(open_cube(chrono), "vv_db"))
    # spatially filled pixels are not counted as observed
    frac = ds["fill_fraction_features"].sel(band="B04").values
    assert frac[i12] == pytest.approx(4 / (H * W))


def test_source_without_any_target_date_raises_naming_the_config_keys(products, tmp_path):
    # separate mode on the acquisitions axis, an inventory without coherence pairs: coh has no date at all
    layers = layers_of(products)
    layers["coh"] = []
    targets = {"s1": [day("2023-05-08")], "coh": [], "s2": [day("2023-05-12")]}
    with pytest.raises(ValueError, match=r"tile T: no target date for coh .*stack.time_axis.*s1\.coherence"):
        build_cube(layers, BANDS, targets, TILE, "T", tmp_path / "c.zarr", mode="separate")
    assert not (tmp_path / "c.zarr").exists()


def test_layer_not_used_for_a_tile_below_min_valid_fraction_is_skipped_and_logged(tmp_path, caplog):
    path = tmp_path / "S2A_20230512_R089.tif"
    write_raster(path, np.full((4, *TILE.shape), 0.1, np.float32), TILE, nodata=np.nan,
                 band_names=["B04", "B8A", "B11", "QA"])
    sidecar = {"layer": "S2A_20230512_R089", "datetime": "2023-05-12T02:35:51+00:00", "used": True, "reason": None,
               "tiles": {"A": {"used": True, "valid_fraction": 0.9, "reason": None},
                         "B": {"used": False, "valid_fraction": 0.1,
                               "reason": "valid fraction 0.100 of the tile's AOI pixels < s2.min_valid_fraction 0.5"}}}
    (tmp_path / "S2A_20230512_R089.json").write_text(json.dumps(sidecar))
    assert [str(layer.day) for layer in s2_layers([str(path)], BANDS["s2"], "A")] == ["2023-05-12"]
    with caplog.at_level(logging.INFO, logger="cropflow.stack"):
        assert s2_layers([str(path)], BANDS["s2"], "B") == []
    assert any("S2A_20230512_R089" in r.message and "tile B" in r.message and "min_valid_fraction" in r.message
               for r in caplog.records)
    sidecar["used"], sidecar["reason"] = False, "cloud fraction 0.30 > 0.08"
    (tmp_path / "S2A_20230512_R089.json").write_text(json.dumps(sidecar))
    assert s2_layers([str(path)], BANDS["s2"], "A") == []


def test_s2_layers_read_layer_rasters_by_band_name_ignoring_qa(tmp_path):
    path = tmp_path / "S2A_20230512_R089.tif"
    data = np.stack([np.full(TILE.shape, v, np.float32) for v in (0.1, 0.2, 0.3, 1.0)])
    write_raster(path, data, TILE, nodata=np.nan, band_names=["QA", "B11", "B8A", "B04"][::-1])
    (tmp_path / "S2A_20230512_R089.json").write_text(json.dumps(
        {"layer": "S2A_20230512_R089", "datetime": "2023-05-12T02:35:51+00:00", "used": True, "tiles": {}}))
    out = tmp_path / "cube.zarr"
    build_cube({"s2": s2_layers([str(path)], BANDS["s2"], "A")}, {"s2": BANDS["s2"]}, {"s2": TARGETS[:1]}, TILE,
               "A", out)
    cube = cube_inputs(open_cube(out))["features"]
    assert list(cube["band"].values) == list(BANDS["s2"])
    assert "QA" not in list(cube["band"].values)
    assert np.allclose(cube.sel(band="B11").values[0], 0.3)
