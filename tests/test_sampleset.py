import numpy as np
import pytest
import zarr

from cropflow.sampleset import SampleSet, load_split, save_split


def make_set(n=7, with_patches=True):
    rng = np.random.default_rng(1)
    x = {"s1": rng.normal(size=(n, 4, 2)).astype(np.float32), "s2": rng.random((n, 3, 3)).astype(np.float32)}
    x["s2"][0, 1, 2] = np.nan
    inputs = {"s1": {"bands": ["vv_db", "vh_db"], "times": ["2023-05-08", "2023-05-20", "2023-06-01", "2023-06-13"]},
              "s2": {"bands": ["B04", "B8A", "B11"], "times": ["2023-05-12", "2023-07-01", "2023-08-20"]}}
    return SampleSet(
        x=x, y=np.array([1, 2, 2, 5, 1, 2, 5][:n], dtype=np.int16), parcel_id=np.arange(100, 100 + n),
        tile_index=np.array([0, 0, 1, 1, 0, 1, 1][:n]), inputs=inputs, class_ids=[1, 2, 3, 5],
        row=np.arange(n, dtype=np.int32), col=np.arange(n, dtype=np.int32)[::-1].copy(),
        tiles=["E0320000N5330000", "E0330000N5330000"],
        patches={"s2": rng.random((n, 3, 3, 3, 3)).astype(np.float32)} if with_patches else {},
        class_names=["maize", "soybean", "wheat", "forest"],
    )


def assert_same(a: SampleSet, b: SampleSet):
    assert set(a.x) == set(b.x)
    for k in a.x:
        np.testing.assert_array_equal(a.x[k], b.x[k])
        assert b.x[k].dtype == np.float32
    for k in ("y", "parcel_id", "tile_index", "row", "col"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.inputs == b.inputs and a.class_ids == b.class_ids and a.tiles == b.tiles
    assert a.class_names == b.class_names
    assert set(a.patches) == set(b.patches)
    for k in a.patches:
        np.testing.assert_array_equal(a.patches[k], b.patches[k])


def test_round_trip(tmp_path):
    s = make_set()
    path = save_split(tmp_path / "train.zarr", s)
    back = load_split(path)
    assert_same(s, back)
    assert back.y.dtype == np.int16 and back.parcel_id.dtype == np.int64 and back.row.dtype == np.int32
    assert back.shapes == {"s1": (4, 2), "s2": (3, 3)}
    assert not list(tmp_path.glob(".*part"))  # no temporary folder left behind


def test_store_layout_matches_the_seam(tmp_path):
    save_split(tmp_path / "val.zarr", make_set())
    g = zarr.open_group(tmp_path / "val.zarr", mode="r")
    assert set(g.array_keys()) == {"s1", "s2", "s2_patch", "y", "parcel_id", "tile_index", "row", "col"}
    assert g["s1"].dtype == np.float32 and g["tile_index"].dtype == np.int16
    assert g.attrs["class_ids"] == [1, 2, 3, 5]
    assert g.attrs["inputs"]["s2"]["bands"] == ["B04", "B8A", "B11"]
    assert g.attrs["tiles"] == ["E0320000N5330000", "E0330000N5330000"]


def test_overwrite_replaces_store(tmp_path):
    save_split(tmp_path / "t.zarr", make_set(7))
    small = make_set(3, with_patches=False)
    save_split(tmp_path / "t.zarr", small)
    back = load_split(tmp_path / "t.zarr")
    assert len(back) == 3 and back.patches == {}


def test_subset_mask_and_index():
    s = make_set()
    sub = s.subset(s.y == 2)
    assert len(sub) == 3 and (sub.y == 2).all()
    np.testing.assert_array_equal(sub.parcel_id, [101, 102, 105])
    np.testing.assert_array_equal(sub.x["s1"], s.x["s1"][[1, 2, 5]])
    np.testing.assert_array_equal(sub.patches["s2"], s.patches["s2"][[1, 2, 5]])
    np.testing.assert_array_equal(sub.row, [1, 2, 5])
    assert sub.class_ids == s.class_ids
    idx = s.subset(np.array([6, 0]))
    np.testing.assert_array_equal(idx.parcel_id, [106, 100])
    with pytest.raises(ValueError, match="mask"):
        s.subset(np.ones(3, dtype=bool))


def test_validation_errors():
    s = make_set()
    with pytest.raises(ValueError, match="not in class_ids"):
        SampleSet(x=s.x, y=np.full(7, 9), parcel_id=s.parcel_id, tile_index=s.tile_index, inputs=s.inputs,
                  class_ids=s.class_ids)
    with pytest.raises(ValueError, match="'s1'.*band names"):
        SampleSet(x=s.x, y=s.y, parcel_id=s.parcel_id, tile_index=s.tile_index,
                  inputs={**s.inputs, "s1": {"bands": ["vv_db"]}}, class_ids=s.class_ids)
    with pytest.raises(ValueError, match="parcel_id"):
        SampleSet(x=s.x, y=s.y, parcel_id=s.parcel_id[:3], tile_index=s.tile_index, inputs=s.inputs,
                  class_ids=s.class_ids)


def test_load_errors_name_the_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.zarr"):
        load_split(tmp_path / "nothere.zarr")
    g = zarr.open_group(tmp_path / "broken.zarr", mode="w")
    g.create_array("s1", data=np.zeros((2, 3, 1), np.float32))
    g.attrs.update({"inputs": {"s1": {"bands": ["vv_db"]}}, "class_ids": [1, 2]})
    with pytest.raises(ValueError, match="broken.zarr.*'y'"):
        load_split(tmp_path / "broken.zarr")
