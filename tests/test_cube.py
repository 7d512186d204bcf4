"""Tile cube helpers: model inputs with uniform dims, the cube's grid, pixel series extraction."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cropflow.cube import cube_grid, cube_inputs, open_cube, pixel_series
from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster
from cropflow.stack import build_cube, coherence_layers, s1_layers, s2_layers

UTM52 = "EPSG:32652"
GRID = ProjectGrid(UTM52, 10.0, (320000.0, 5349960.0, 320050.0, 5350000.0))  # 4 rows x 5 cols


def coded(t: int, c: int, h: int, w: int) -> np.ndarray:
    """value = 1000 t + 100 c + 10 y + x: every element names its own position."""
    tt, cc, yy, xx = np.meshgrid(np.arange(t), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return (1000 * tt + 100 * cc + 10 * yy + xx).astype(np.float32)


def separate_dataset() -> xr.Dataset:
    x, y = GRID.coords()
    t1 = pd.to_datetime(["2023-05-08", "2023-05-20"])
    t2 = pd.to_datetime(["2023-05-12", "2023-05-22", "2023-06-01"])
    s1 = coded(2, 3, 4, 5)
    s2 = coded(3, 2, 4, 5)
    return xr.Dataset(
        {
            "s1": (("time_s1", "band_s1", "y", "x"), s1),
            # stored with band before time: cube_inputs must still give (time, band, y, x)
            "s2": (("band_s2", "time_s2", "y", "x"), s2.transpose(1, 0, 2, 3)),
            "fill_fraction_s1": (("time_s1", "band_s1"), np.zeros((2, 3), np.float32)),
        },
        coords={"time_s1": t1, "band_s1": ["vv_db", "vh_db", "rvi"], "time_s2": t2, "band_s2": ["B04", "B11"],
                "x": x, "y": y},
        attrs={"crs": UTM52, "transform": list(GRID.transform)[:6], "tile": "T"},
    )


def test_cube_inputs_renames_separate_dims():
    ds = separate_dataset()
    inputs = cube_inputs(ds)
    assert list(inputs) == ["s1", "s2"]  # fill fractions are not inputs
    s1, s2 = inputs["s1"], inputs["s2"]
    assert s1.dims == ("time", "band", "y", "x") and s2.dims == ("time", "band", "y", "x")
    assert list(s1["band"].values) == ["vv_db", "vh_db", "rvi"]
    assert list(s2["band"].values) == ["B04", "B11"]
    assert [str(t)[:10] for t in s2["time"].values] == ["2023-05-12", "2023-05-22", "2023-06-01"]
    np.testing.assert_array_equal(s1.values, coded(2, 3, 4, 5))
    np.testing.assert_array_equal(s2.values, coded(3, 2, 4, 5))
    # the selection by the new names reaches the right values
    assert float(s2.sel(band="B11").isel(time=2, y=1, x=4)) == 2000 + 100 + 10 + 4


def test_cube_inputs_chronological_and_empty():
    ds = separate_dataset()
    chrono = xr.Dataset({"features": (("time", "band", "y", "x"), coded(2, 3, 4, 5))},
                        coords={"time": ds["time_s1"].values, "band": ["a", "b", "c"]})
    inputs = cube_inputs(chrono)
    assert list(inputs) == ["features"] and inputs["features"].dims == ("time", "band", "y", "x")
    with pytest.raises(ValueError, match="holds no input variable"):
        cube_inputs(xr.Dataset({"other": (("y", "x"), np.zeros((4, 5)))}))


def test_cube_grid_from_attrs():
    assert cube_grid(separate_dataset()) == GRID


def test_pixel_series_row_major_order_and_shape():
    da = cube_inputs(separate_dataset())["s1"]
    out = pixel_series(da, slice(1, 3), slice(2, 5))
    assert out.shape == (6, 2, 3) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    for i in range(6):
        y, x = 1 + i // 3, 2 + i % 3  # row-major: x varies fastest
        for t in range(2):
            for c in range(3):
                assert out[i, t, c] == 1000 * t + 100 * c + 10 * y + x
    full = pixel_series(da, slice(0, 4))
    assert full.shape == (20, 2, 3)
    np.testing.assert_array_equal(full.reshape(4, 5, 2, 3), coded(2, 3, 4, 5).transpose(2, 3, 0, 1))


def test_written_separate_cube_opens_with_uniform_inputs(tmp_path):
    s1 = tmp_path / "S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048404_05D2C4_3F1A.tif"
    write_raster(s1, np.full((2, *GRID.shape), -12.0, np.float32), GRID, nodata=np.nan,
                 band_names=["vv_db", "vh_db"], tags={"START_TIME": "2023-05-08T09:45:12Z"})
    coh = tmp_path / "R032_20230508_20230520_coh.tif"
    write_raster(coh, np.full((1, *GRID.shape), 0.4, np.float32), GRID, nodata=np.nan, band_names=["coh_vv"])
    s2 = tmp_path / "S2A_MSIL2A_20230512T023551_N0509_R089_T52UCU_20230512T060311.tif"
    write_raster(s2, np.full((1, *GRID.shape), 0.1, np.float32), GRID, nodata=np.nan, band_names=["B04"])
    s2.with_suffix(".json").write_text('{"scene": "x", "datetime": "2023-05-12T02:35:51Z", "used": true}')
    bands = {"s1": ["vv_db", "vh_db"], "coh": ["coh_vv"], "s2": ["B04"]}
    layers = {"s1": s1_layers([str(s1)], bands["s1"]), "coh": coherence_layers([str(coh)], bands["coh"]),
              "s2": s2_layers([str(s2)], bands["s2"])}
    targets = {"s1": [np.datetime64("2023-05-08")], "coh": [np.datetime64("2023-05-20")],
               "s2": [np.datetime64("2023-05-12"), np.datetime64("2023-05-24")]}
    build_cube(layers, bands, targets, GRID, "T", tmp_path / "cube.zarr", mode="separate")
    ds = open_cube(tmp_path / "cube.zarr")
    inputs = cube_inputs(ds)
    assert list(inputs) == ["s1", "coh", "s2"]
    assert {k: v.shape for k, v in inputs.items()} == {"s1": (1, 2, 4, 5), "coh": (1, 1, 4, 5), "s2": (2, 1, 4, 5)}
    assert all(v.dims == ("time", "band", "y", "x") for v in inputs.values())
    assert pixel_series(inputs["s2"], slice(0, 4)).shape == (20, 2, 1)
    np.testing.assert_allclose(pixel_series(inputs["coh"], slice(0, 1)), 0.4)
    assert cube_grid(ds) == GRID
