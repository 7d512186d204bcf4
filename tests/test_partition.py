import json
import logging
import pathlib

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from cropflow import labels, partition
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend

ROOT = pathlib.Path(__file__).parents[1]
CRS = "EPSG:32652"
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture(scope="module")
def legend() -> Legend:
    return Legend.load(str(ROOT / "resources" / "legend.yaml"))


def layout(n_side: int = 10, per_cell: int = 6, seed: int = 0) -> gpd.GeoDataFrame:
    """Synthetic parcels over n_side x n_side cells of 10 km with imbalanced classes (soybean-dominated)."""
    rng = np.random.default_rng(seed)
    rows = []
    pid = 1
    for i in range(n_side):
        for j in range(n_side):
            for k in range(per_cell):
                x0 = 300000 + i * 10000 + 500 + k * 1500
                y0 = 5300000 + j * 10000 + 500
                side = float(rng.integers(100, 400))
                cls = int(rng.choice([1, 2, 3, 4, 5], p=[0.3, 0.55, 0.05, 0.05, 0.05]))
                rows.append({"parcel_id": pid, "class_id": cls, "n_pixels": int(side * side / 100),
                             "geometry": shapely.box(x0, y0, x0 + side, y0 + side)})
                pid += 1
    return gpd.GeoDataFrame(rows, crs=CRS)


def pixel_shares(parts: pd.DataFrame) -> pd.Series:
    return parts.groupby("split")["n_pixels"].sum() / parts["n_pixels"].sum()


# ---------------------------------------------------------------------------------------------- cells


def test_assign_cells_uses_the_representative_point_so_a_parcel_is_never_split():
    # an L-shaped parcel straddling x = 310000; its representative point lies inside the parcel
    ell = shapely.Polygon([(309000, 5301000), (312000, 5301000), (312000, 5301200), (309200, 5301200),
                           (309200, 5309000), (309000, 5309000)])
    parcels = gpd.GeoDataFrame({"parcel_id": [1, 2]}, geometry=[ell, shapely.box(305000, 5315000, 305100, 5315100)],
                               crs=CRS)
    cells = partition.assign_cells(parcels, 10000)
    point = ell.representative_point()
    assert ell.contains(point)
    expected = f"E{int(point.x // 10000 * 10000):07d}N{int(point.y // 10000 * 10000):07d}"
    assert cells.tolist() == [expected, "E0300000N5310000"]


def test_partition_is_deterministic_for_a_seed_and_depends_on_it():
    parcels = layout()
    a = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 50, 1.0, 7)
    b = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 50, 1.0, 7)
    c = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 50, 1.0, 8)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_partition_keeps_parcels_of_a_cell_together_and_each_parcel_in_one_split():
    parcels = layout()
    parts = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 20, 1.0, 1)
    assert parts["split"].isin(["train", "val", "test"]).all()
    assert (parts.groupby("cell_id")["split"].nunique() == 1).all()
    assert parts["parcel_id"].is_unique and len(parts) == len(parcels)
    assert list(parts.columns) == partition.PARCEL_COLUMNS[:2] + ["n_pixels", "cell_id", "split", "subsample",
                                                                  "geometry"]


def test_partition_shares_are_close_to_60_20_20_and_class_distributions_similar():
    parcels = layout()
    parts = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 200, 1.0, 42)
    assert parts["cell_id"].nunique() == 100
    shares = pixel_shares(parts)
    assert shares["train"] == pytest.approx(0.6, abs=0.02)
    assert shares["val"] == pytest.approx(0.2, abs=0.02)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)
    overall = parts.groupby("class_id")["n_pixels"].sum() / parts["n_pixels"].sum()
    for split, sel in parts.groupby("split"):
        comp = sel.groupby("class_id")["n_pixels"].sum() / sel["n_pixels"].sum()
        assert np.abs(comp.reindex(overall.index, fill_value=0) - overall).max() < 0.05, split


def test_best_of_candidates_scores_no_worse_than_the_first_candidate():
    parcels = layout()
    parcels["cell_id"] = partition.assign_cells(parcels, 10000)
    table = partition.cell_class_pixels(parcels)
    pixels = table.to_numpy(dtype="float64")
    f = np.array([0.6, 0.2, 0.2])
    first = partition.draw_assignment(pixels.sum(axis=1), f, np.random.default_rng(3))
    first_score = partition.assignment_score(pixels, first, f)

    def score(mapping: dict) -> float:
        assignment = np.array([partition.SPLITS.index(mapping[c]) for c in table.index])
        return partition.assignment_score(pixels, assignment, f)

    one = partition.partition_cells(table, FRACTIONS, 1, 3)
    assert score(one) == pytest.approx(first_score)  # candidate 1 is the first draw of the same generator
    best = partition.partition_cells(table, FRACTIONS, 200, 3)
    assert score(best) <= first_score
    assert score(best) < first_score  # 200 draws on 100 cells do improve on one


def test_assignment_score_formula():
    pixels = np.array([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])  # cells x classes
    f = np.array([0.6, 0.2, 0.2])
    # splits: train = cell 0 (10, 0), val = cell 1 (0, 10), test = cell 2 (5, 5); overall (0.5, 0.5)
    # class term: |1-.5|+|0-.5| + |0-.5|+|1-.5| + 0 = 2; size term |1/3-.6| + 2 |1/3-.2| = 0.5333...
    score = partition.assignment_score(pixels, np.array([0, 1, 2]), f)
    assert score == pytest.approx(2 + abs(1 / 3 - 0.6) + 2 * abs(1 / 3 - 0.2))


def test_too_few_cells_raises_and_three_cells_give_each_split_one():
    table = pd.DataFrame({1: [5, 7]}, index=["E0300000N5300000", "E0310000N5300000"])
    with pytest.raises(ValueError, match="reduce partition.cell_size"):
        partition.partition_cells(table, FRACTIONS, 10, 0)
    table = pd.DataFrame({1: [1, 1, 100]}, index=["a", "b", "c"])
    for seed in range(5):
        assert sorted(partition.partition_cells(table, FRACTIONS, 10, seed).values()) == ["test", "train", "val"]


def test_bad_fractions_raise():
    table = pd.DataFrame({1: [1, 2, 3]}, index=["a", "b", "c"])
    with pytest.raises(ValueError, match="partition.fractions"):
        partition.partition_cells(table, {"train": 0.6, "val": 0.3, "test": 0.3}, 5, 0)
    with pytest.raises(ValueError, match="partition.fractions"):
        partition.partition_cells(table, {"train": 0.8, "test": 0.2}, 5, 0)


def test_subsample_keeps_about_ten_percent_of_each_stratum():
    sizes = {("train", 2): 50, ("train", 1): 30, ("val", 2): 20, ("test", 3): 3}
    frame = pd.DataFrame([{"split": s, "class_id": c} for (s, c), n in sizes.items() for _ in range(n)])
    frame["parcel_id"] = np.arange(1, len(frame) + 1)
    flags = partition.stratified_subsample(frame, 0.1, seed=5)
    kept = frame[flags].groupby(["split", "class_id"]).size().to_dict()
    assert kept == {("train", 2): 5, ("train", 1): 3, ("val", 2): 2, ("test", 3): 1}
    assert flags.equals(partition.stratified_subsample(frame, 0.1, seed=5))
    assert partition.stratified_subsample(frame, 1.0, seed=5).all()
    with pytest.raises(ValueError, match="partition.subsample"):
        partition.stratified_subsample(frame, 0.0, seed=5)


# ---------------------------------------------------------------------------------------------- report, outputs


def test_split_report_accounts_for_every_input_parcel(tmp_path, legend, caplog):
    parcels = layout(n_side=4, per_cell=4)
    parts = partition.partition(parcels, pd.DataFrame(columns=["parcel_id", "reason"]), 10000, FRACTIONS, 20, 0.5, 0)
    dropped = pd.DataFrame({"parcel_id": [1000, 1001, 1002],
                            "reason": ["outside AOI", "outside AOI", "label 'x' not in legend"]})
    n_input = len(parts) + len(dropped)
    with caplog.at_level(logging.WARNING, logger="cropflow.partition"):
        table = partition.split_report(parts, dropped, n_input, tmp_path / "split.csv", tmp_path / "split.png",
                                       legend)
    assert any("'water' has no labelled pixel" in r.getMessage() for r in caplog.records)

    csv = pd.read_csv(tmp_path / "split.csv")
    assert list(csv.columns) == ["split", "class_id", "class_name", "parcels", "pixels", "share", "share_of_class"]
    assert len(csv) == 4 * (len(legend.ids) + 1) == len(table)
    total = csv[(csv.split == "all") & (csv.class_name == "all")].iloc[0]
    assert total["parcels"] + len(dropped) == n_input
    assert total["pixels"] == parts["n_pixels"].sum()
    per_split = csv[(csv.split != "all") & (csv.class_name != "all")]
    assert per_split["parcels"].sum() == len(parts)
    for split, sel in per_split.groupby("split"):
        assert sel["share"].sum() == pytest.approx(1.0, abs=1e-5)
    soy = csv[(csv.split == "train") & (csv.class_name == "soybean")].iloc[0]
    train = parts[parts.split == "train"]
    assert soy["share"] == pytest.approx(train.loc[train.class_id == 2, "n_pixels"].sum() / train["n_pixels"].sum())
    assert (csv[(csv.split == "train") & (csv.class_name == "water")]["pixels"] == 0).all()  # absent class listed

    summary = json.loads((tmp_path / "split.json").read_text())
    assert summary["n_input"] == n_input and summary["kept"] == len(parts) and summary["dropped"] == 3
    assert summary["dropped_by_reason"] == {"outside AOI": 2, "label 'x' not in legend": 1}
    assert sum(s["parcels"] for s in summary["splits"].values()) == len(parts)
    assert "water" in summary["absent_classes"]
    assert (tmp_path / "split.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(ValueError, match="accounting"):
        partition.split_report(parts, dropped, n_input + 1, tmp_path / "bad.csv", tmp_path / "bad.png", legend)
    assert not (tmp_path / "bad.csv").exists()


def test_pipeline_from_parcel_file_accounts_for_every_parcel(tmp_path, legend):
    """read_parcels -> count_pixels -> partition -> report on a 3 x 3 km AOI with 1 km cells."""
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(320000, 5330000, 323000, 5333000)], crs=CRS)
    grid = ProjectGrid(CRS, 10.0, (320000, 5330000, 323000, 5333000))
    rng = np.random.default_rng(0)
    geoms, crops = [], []
    names = ["maize", "soybean", "wheat", "other_crops", "forest", "water", "residential"]
    for i in range(9):
        for k in range(4):
            x0, y0 = 320000 + (i % 3) * 1000 + 100 + k * 200, 5330000 + (i // 3) * 1000 + 100
            geoms.append(shapely.box(x0, y0, x0 + 150, y0 + float(rng.integers(50, 600))))
            crops.append(names[(i + k) % 7])
    geoms += [shapely.box(329000, 5331000, 329100, 5331100), shapely.box(320500, 5330500, 320504, 5330504)]
    crops += ["maize", "maize"]  # outside the AOI; no pixel centre inside
    path = tmp_path / "parcels.gpkg"
    gpd.GeoDataFrame({"crop": crops}, geometry=geoms, crs=CRS).to_crs("EPSG:4326").to_file(path)

    kept, dropped = labels.read_parcels(path, "crop", legend, CRS, aoi)
    n_input = len(kept) + len(dropped)
    kept, small = labels.count_pixels(kept, grid, min_pixels=1)
    dropped = pd.concat([dropped, small], ignore_index=True)
    parts = partition.partition(kept, dropped, 1000, FRACTIONS, 50, 1.0, 42)
    partition.split_report(parts, dropped, n_input, tmp_path / "split.csv", tmp_path / "split.png", legend)
    partition.write_parcels(parts, tmp_path / "parcels_out.gpkg")
    partition.write_dropped(dropped, tmp_path / "dropped.csv")

    assert n_input == 38
    back = gpd.read_file(tmp_path / "parcels_out.gpkg")
    assert list(back.columns) == partition.PARCEL_COLUMNS
    assert back["subsample"].dtype == bool and back.crs.to_epsg() == 32652
    assert set(back["split"]) == {"train", "val", "test"}
    lost = pd.read_csv(tmp_path / "dropped.csv")
    assert list(lost.columns) == ["parcel_id", "reason"]
    assert len(back) + len(lost) == n_input
    assert sorted(lost["reason"].str.split(",").str[0]) == ["0 pixels on the 10 m grid", "outside AOI"]
