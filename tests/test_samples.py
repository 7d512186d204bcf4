"""Training samples: pixel selection by parcel split, per-tile extraction (series and patches), merging."""

import logging

import geopandas as gpd
import numpy as np
import pytest
import shapely

from cropflow.grid import ProjectGrid
from cropflow.raster import write_raster
from cropflow.samples import merge_samples, select_pixels, tile_samples
from cropflow.sampleset import SampleSet, load_split, save_split
from cropflow.stack import build_cube, s1_layers

UTM52 = "EPSG:32652"
TILE = ProjectGrid(UTM52, 10.0, (320000.0, 5349900.0, 320080.0, 5350000.0))  # 10 rows x 8 cols
H, W = TILE.shape
DATES = ["2023-05-08", "2023-05-20", "2023-06-01"]
SCENES = ["S1A_IW_SLC__1SDV_20230508T094512_20230508T094539_048404_05D2C4_3F1A",
          "S1A_IW_SLC__1SDV_20230520T094513_20230520T094540_048579_05D8F0_1B2C",
          "S1A_IW_SLC__1SDV_20230601T094514_20230601T094541_048754_05DF1A_9A0B"]
NO_DATA_PIXEL = (7, 6)  # never observed: dropped from the samples
CLASS_IDS, CLASS_NAMES = [1, 2, 3], ["maize", "soybean", "wheat"]
# parcel id -> (rows, cols, class, split, subsample); None split: not in the parcel table
PARCELS = {
    1: (slice(0, 3), slice(0, 4), 1, "train", True),   # top-left corner of the tile
    2: (slice(0, 5), slice(5, 8), 2, "val", True),     # right edge
    3: (slice(6, 10), slice(0, 4), 3, "test", True),   # bottom edge
    4: (slice(6, 10), slice(5, 8), 1, "train", True),  # holds the never-observed pixel
    5: (slice(4, 5), slice(0, 4), 2, "train", False),  # not in the subsample
    6: (slice(5, 6), slice(5, 8), 3, None, None),      # dropped by the labels stage
}
UNLABELLED = (2, 3)  # inside parcel 1 but without a class


def expected_cube() -> np.ndarray:
    """(T, C, y, x): 1000 t + 100 c + 10 row + col, NaN at the never-observed pixel."""
    t, c, r, k = np.meshgrid(np.arange(3), np.arange(2), np.arange(H), np.arange(W), indexing="ij")
    cube = (1000 * t + 100 * c + 10 * r + k).astype(np.float32)
    cube[(slice(None), slice(None), *NO_DATA_PIXEL)] = np.nan
    return cube


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    cube = expected_cube()
    paths = []
    for i, (scene, date) in enumerate(zip(SCENES, DATES)):
        path = root / f"{scene}.tif"
        write_raster(path, cube[i], TILE, nodata=np.nan, band_names=["vv_db", "vh_db"],
                     tags={"START_TIME": f"{date}T09:45:12Z"})
        paths.append(str(path))
    bands = {"s1": ["vv_db", "vh_db"]}
    build_cube({"s1": s1_layers(paths, bands["s1"])}, bands, {"s1": [np.datetime64(d) for d in DATES]}, TILE,
               "T", root / "cube.zarr")
    classes = np.zeros(TILE.shape, np.uint8)
    parcels = np.zeros(TILE.shape, np.int32)
    rows = []
    for pid, (r, c, cls, split, sub) in PARCELS.items():
        classes[r, c], parcels[r, c] = cls, pid
        if split is not None:
            x0, y0 = TILE.bounds[0] + 10 * c.start, TILE.bounds[3] - 10 * r.stop
            rows.append({"parcel_id": pid, "class_id": cls, "split": split, "subsample": sub,
                         "geometry": shapely.box(x0, y0, x0 + 10 * (c.stop - c.start), y0 + 10 * (r.stop - r.start))})
    classes[UNLABELLED] = 0
    write_raster(root / "class.tif", classes, TILE, nodata=0)
    write_raster(root / "parcel.tif", parcels, TILE, nodata=0)
    gpd.GeoDataFrame(rows, crs=UTM52).to_file(root / "parcels.gpkg", driver="GPKG")
    return {"root": root, "cube": root / "cube.zarr", "class": root / "class.tif", "parcel": root / "parcel.tif",
            "gpkg": root / "parcels.gpkg", "classes": classes, "parcels": parcels}


def run(inputs, out_dir, tile="T", tiles=("T",), **kw):
    outs = {s: out_dir / f"{tile}_{s}.zarr" for s in ("train", "val", "test")}
    counts = tile_samples(inputs["cube"], inputs["class"], inputs["parcel"], inputs["gpkg"], tile, list(tiles),
                          CLASS_IDS, CLASS_NAMES, outs, **kw)
    return counts, {s: load_split(p) for s, p in outs.items()}


def pixels_of(pid: int, classes: np.ndarray, parcels: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero((parcels == pid) & (classes > 0)))}


# ---------------------------------------------------------------------------------------- select_pixels


def hand_labels():
    parcels = np.array([[1, 1, 1, 2, 2],
                        [1, 1, 0, 2, 2],
                        [3, 3, 0, 4, 4],
                        [3, 3, 0, 4, 4]], np.int32)
    classes = np.array([[5, 5, 0, 6, 6],
                        [5, 5, 5, 6, 6],
                        [7, 7, 7, 5, 5],
                        [7, 7, 7, 5, 5]], np.uint8)
    return classes, parcels


def test_select_pixels_follows_the_parcel_splits():
    classes, parcels = hand_labels()
    split_of = {1: "train", 2: "val", 3: "test"}  # parcel 4 has no split (dropped or not subsampled)
    chosen = select_pixels(classes, parcels, split_of, per_parcel=0, seed=1)
    assert set(chosen) == {"train", "val", "test"}
    # every labelled pixel of a parcel, in its parcel's split; unlabelled and unparcelled pixels never
    assert chosen["train"].tolist() == [0, 1, 5, 6]     # (0, 2) has no class
    assert chosen["val"].tolist() == [3, 4, 8, 9]
    assert chosen["test"].tolist() == [10, 11, 15, 16]  # (2, 2) and (3, 2) have no parcel


def test_select_pixels_caps_each_parcel():
    rng = np.random.default_rng(0)
    parcels = np.repeat(np.arange(1, 7), 20).reshape(12, 10).astype(np.int32)  # 6 parcels of 20 pixels
    classes = np.ones_like(parcels, dtype=np.uint8)
    parcels[0, :3] = 7  # a parcel of 3 pixels: fewer than the cap, all kept
    split_of = {p: str(rng.choice(["train", "val", "test"])) for p in range(1, 8)}
    chosen = select_pixels(classes, parcels, split_of, per_parcel=5, seed=3)
    flat = parcels.ravel()
    for split, idx in chosen.items():
        assert (np.diff(idx) > 0).all()  # sorted, no duplicate
        ids, counts = np.unique(flat[idx], return_counts=True)
        assert all(split_of[int(p)] == split for p in ids)
        assert all(n == (3 if p == 7 else 5) for p, n in zip(ids, counts))
    assert sum(len(v) for v in chosen.values()) == 6 * 5 + 3  # parcel 1 keeps 17 pixels, still above the cap


def test_select_pixels_is_deterministic_for_a_seed():
    parcels = np.repeat(np.arange(1, 5), 50).reshape(20, 10).astype(np.int32)
    classes = np.full_like(parcels, 2, dtype=np.uint8)
    split_of = {1: "train", 2: "train", 3: "val", 4: "test"}
    a = select_pixels(classes, parcels, split_of, per_parcel=4, seed=7)
    b = select_pixels(classes, parcels, split_of, per_parcel=4, seed=7)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    others = [select_pixels(classes, parcels, split_of, per_parcel=4, seed=s) for s in (8, 9, 10)]
    assert any(not np.array_equal(a["train"], o["train"]) for o in others)  # the seed drives the draw


# ----------------------------------------------------------------------------------------- tile_samples


def test_tile_samples_writes_three_splits(inputs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cropflow.samples"):
        counts, sets = run(inputs, tmp_path, patch_size=3, block_rows=4)
    # train: parcel 1 (12 - 1 unlabelled) + parcel 4 (12 - 1 never observed); 5 not subsampled, 6 not listed
    assert counts == {"train": 22, "val": 15, "test": 16}
    assert {s: len(v) for s, v in sets.items()} == counts
    assert any("1 labelled pixels without observations dropped" in r.message for r in caplog.records)
    classes, parcels = inputs["classes"], inputs["parcels"]
    expected_parcels = {"train": {1, 4}, "val": {2}, "test": {3}}
    for split, s in sets.items():
        assert set(s.parcel_id.tolist()) == expected_parcels[split]
        np.testing.assert_array_equal(s.y, classes[s.row, s.col])
        np.testing.assert_array_equal(s.parcel_id, parcels[s.row, s.col])
        assert s.y.dtype == np.int16 and s.parcel_id.dtype == np.int64
        assert (s.tile_index == 0).all() and s.tiles == ["T"]
        assert s.class_ids == CLASS_IDS and s.class_names == CLASS_NAMES
        assert s.inputs == {"features": {"bands": ["vv_db", "vh_db"], "times": DATES}}


def test_a_parcel_is_in_one_split_with_all_its_observed_pixels(inputs, tmp_path):
    _, sets = run(inputs, tmp_path)
    classes, parcels = inputs["classes"], inputs["parcels"]
    where = {}
    for split, s in sets.items():
        for pid, r, c in zip(s.parcel_id, s.row, s.col):
            where.setdefault(int(pid), set()).add(split)
            assert (int(r), int(c)) != NO_DATA_PIXEL
    assert all(len(v) == 1 for v in where.values())
    for pid in (1, 2, 3):
        split = PARCELS[pid][3]
        got = {(int(r), int(c)) for r, c, p in zip(sets[split].row, sets[split].col, sets[split].parcel_id) if p == pid}
        assert got == pixels_of(pid, classes, parcels)
    train4 = {(int(r), int(c)) for r, c, p in zip(sets["train"].row, sets["train"].col, sets["train"].parcel_id)
              if p == 4}
    assert train4 == pixels_of(4, classes, parcels) - {NO_DATA_PIXEL}


def test_series_and_patches_equal_the_cube(inputs, tmp_path):
    _, sets = run(inputs, tmp_path, patch_size=3, block_rows=4)
    cube = expected_cube().transpose(2, 3, 0, 1)  # (y, x, T, C)
    padded = np.pad(cube, ((1, 1), (1, 1), (0, 0), (0, 0)), mode="edge")
    for s in sets.values():
        series, patches = s.x["features"], s.patches["features"]
        assert series.shape == (len(s), 3, 2) and series.dtype == np.float32
        assert patches.shape == (len(s), 3, 3, 3, 2)
        np.testing.assert_array_equal(series, cube[s.row, s.col])
        for i, (r, c) in enumerate(zip(s.row, s.col)):
            np.testing.assert_array_equal(patches[i], padded[r:r + 3, c:c + 3])
        np.testing.assert_array_equal(patches[:, 1, 1], series)  # the centre is the pixel itself
    # a corner pixel's patch repeats the tile's edge values
    s = sets["train"]
    i = int(np.flatnonzero((s.row == 0) & (s.col == 0))[0])
    assert (s.patches["features"][i, 0, :, 0, 0] == [0, 0, 1]).all()
    assert (s.patches["features"][i, :, 0, 0, 0] == [0, 0, 10]).all()
    # block size does not change what is extracted
    _, again = run(inputs, tmp_path / "b", patch_size=3, block_rows=128)
    for split in sets:
        np.testing.assert_array_equal(again[split].patches["features"], sets[split].patches["features"])


def test_tile_samples_caps_pixels_per_parcel(inputs, tmp_path):
    counts, sets = run(inputs, tmp_path, pixels_per_parcel=5, seed=3)
    assert counts["val"] == 5 and counts["test"] == 5
    ids, n = np.unique(sets["train"].parcel_id, return_counts=True)
    assert ids.tolist() == [1, 4] and n[0] == 5 and 4 <= n[1] <= 5
    assert sets["val"].patches == {}


def test_merge_samples_concatenates_tiles(inputs, tmp_path):
    tiles = ("A", "B")
    _, a = run(inputs, tmp_path, tile="A", tiles=tiles, patch_size=3)
    _, b = run(inputs, tmp_path, tile="B", tiles=tiles, patch_size=3)
    n = merge_samples([tmp_path / "A_train.zarr", tmp_path / "B_train.zarr"], tmp_path / "train.zarr")
    merged = load_split(tmp_path / "train.zarr")
    assert n == len(merged) == len(a["train"]) + len(b["train"]) == 44
    assert merged.tile_index.tolist() == [0] * 22 + [1] * 22 and merged.tiles == ["A", "B"]
    np.testing.assert_array_equal(merged.x["features"], np.concatenate([a["train"].x["features"],
                                                                         b["train"].x["features"]]))
    np.testing.assert_array_equal(merged.patches["features"][22:], b["train"].patches["features"])
    np.testing.assert_array_equal(merged.row, np.concatenate([a["train"].row, b["train"].row]))
    assert merged.class_names == CLASS_NAMES and merged.inputs == a["train"].inputs


def test_merge_samples_rejects_other_inputs(inputs, tmp_path):
    run(inputs, tmp_path, tile="A", tiles=("A", "B"))
    other = SampleSet(x={"features": np.zeros((2, 2, 2), np.float32)}, y=np.array([1, 2]), parcel_id=[9, 9],
                      tile_index=[1, 1], inputs={"features": {"bands": ["vv_db", "vh_db"],
                                                              "times": ["2023-05-08", "2023-05-20"]}},
                      class_ids=CLASS_IDS, row=[0, 1], col=[0, 0], tiles=["A", "B"])
    save_split(tmp_path / "B_train.zarr", other)
    with pytest.raises(ValueError, match=r"B_train\.zarr: its inputs \(bands/dates\) differ from .*A_train\.zarr"):
        merge_samples([tmp_path / "A_train.zarr", tmp_path / "B_train.zarr"], tmp_path / "train.zarr")
    assert not (tmp_path / "train.zarr").exists()
    with pytest.raises(ValueError, match="no per-tile sample store"):
        merge_samples([], tmp_path / "train.zarr")


def test_tile_without_parcels_of_a_split_writes_an_empty_store(inputs, tmp_path):
    # a tile inside one partition cell: all its parcels are in train
    table = gpd.read_file(inputs["gpkg"])
    table["split"] = "train"
    table.to_file(tmp_path / "train_only.gpkg", driver="GPKG")
    outs = {s: tmp_path / f"B_{s}.zarr" for s in ("train", "val", "test")}
    counts = tile_samples(inputs["cube"], inputs["class"], inputs["parcel"], tmp_path / "train_only.gpkg", "B",
                          ["A", "B"], CLASS_IDS, CLASS_NAMES, outs, patch_size=3)
    assert counts == {"train": 22 + 15 + 16, "val": 0, "test": 0}
    empty = load_split(outs["val"])
    assert len(empty) == 0 and empty.x["features"].shape == (0, 3, 2)
    assert empty.patches["features"].shape == (0, 3, 3, 3, 2)
    assert empty.inputs == {"features": {"bands": ["vv_db", "vh_db"], "times": DATES}}
    run(inputs, tmp_path, tile="A", tiles=("A", "B"), patch_size=3)
    n = merge_samples([tmp_path / "A_val.zarr", outs["val"]], tmp_path / "val.zarr")
    merged = load_split(tmp_path / "val.zarr")
    assert n == len(merged) == 15 and set(merged.tile_index.tolist()) == {0}
