"""Error-adjusted areas (Olofsson et al. 2014): the paper's numerical example, a hand computation, edge cases,
window-bounded pixel counts per unit and the command."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from cropflow import cli
from cropflow.areas import estimate, estimate_table, load_error_matrix, proportions
from cropflow.grid import ProjectGrid
from cropflow.pixelcount import count_classes, count_classes_by_unit
from cropflow.raster import write_raster

# Olofsson et al. (2014) section 5: map classes deforestation, forest gain, stable forest, stable non-forest;
# sample counts (rows = map class, columns = reference class) and mapped areas of 30 m pixels (0.09 ha).
PAPER_COUNTS = np.array([[66, 0, 5, 4],
                         [0, 55, 8, 12],
                         [1, 0, 153, 11],
                         [2, 1, 9, 313]])
PAPER_MAPPED_HA = np.array([200_000, 150_000, 3_200_000, 6_450_000]) * 0.09


def test_olofsson_2014_numerical_example():
    est = estimate(PAPER_COUNTS, PAPER_MAPPED_HA)
    # published error-adjusted areas and 95 % intervals (ha)
    np.testing.assert_allclose(est.adjusted, [21_158, 11_686, 285_770, 581_386], atol=0.5)
    np.testing.assert_allclose(est.ci95, [6_158, 3_756, 15_510, 16_282], atol=0.5)
    # published accuracies to two decimals: user's, producer's and overall with their 95 % intervals
    np.testing.assert_allclose(est.users, [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(est.users_ci95, [0.07, 0.10, 0.04, 0.02], atol=0.005)
    np.testing.assert_allclose(est.producers, [0.75, 0.85, 0.93, 0.96], atol=0.005)
    assert est.producers_ci95[0] == pytest.approx(0.21, abs=0.005)
    assert est.overall == pytest.approx(0.95, abs=0.005) and est.overall_ci95 == pytest.approx(0.02, abs=0.005)
    assert est.adjusted.sum() == pytest.approx(PAPER_MAPPED_HA.sum())


def test_hand_computation_of_a_two_class_example():
    """Map: 80 ha of class a, 20 ha of class b. Samples: map a 8 right, 2 wrong (b); map b 3 wrong (a), 7 right.
    W = (0.8, 0.2); p_ij = W_i n_ij / n_i. = [[0.64, 0.16], [0.06, 0.14]]; p_.a = 0.70, p_.b = 0.30:
    areas 70 and 30 ha. S(p_.a)^2 = 0.8^2 0.8 0.2 / 9 + 0.2^2 0.3 0.7 / 9 = (0.1024 + 0.0084) / 9 = 0.012311,
    S = 0.110955, CI = 1.96 * 100 * S = 21.747 ha (the same for b: two classes share one variance).
    U = (0.8, 0.7), CI_U = 1.96 sqrt(0.8 0.2 / 9) = 0.261333, 1.96 sqrt(0.7 0.3 / 9) = 0.299395.
    P_a = 0.64 / 0.70 = 0.914286; N_.a = 70: V(P_a) = [80^2 (1 - P_a)^2 0.16/9 + P_a^2 20^2 0.21/9] / 70^2
    = [6400 * 0.00734694 * 0.0177778 + 0.835918 * 400 * 0.0233333] / 4900 = (0.835918 + 7.801905) / 4900
    = 0.00176282, CI = 1.96 * 0.0419860 = 0.082293. O = 0.78, V(O) = 0.64 * 0.0177778 + 0.04 * 0.0233333
    = 0.0123111, CI = 1.96 * 0.110955 = 0.217472."""
    est = estimate(np.array([[8, 2], [3, 7]]), np.array([80.0, 20.0]))
    np.testing.assert_allclose(proportions([[8, 2], [3, 7]], [0.8, 0.2]), [[0.64, 0.16], [0.06, 0.14]])
    np.testing.assert_allclose(est.adjusted, [70, 30])
    np.testing.assert_allclose(est.ci95, [21.747, 21.747], atol=1e-3)
    np.testing.assert_allclose(est.users_ci95, [0.261333, 0.299395], atol=1e-6)
    assert est.producers[0] == pytest.approx(0.914286, abs=1e-6)
    assert est.producers_ci95[0] == pytest.approx(0.082293, abs=1e-5)
    assert est.overall == pytest.approx(0.78) and est.overall_ci95 == pytest.approx(0.217472, abs=1e-5)


def test_a_perfect_map_has_its_mapped_areas_and_zero_intervals():
    est = estimate(np.diag([10, 20, 30]), np.array([5.0, 3.0, 2.0]))
    np.testing.assert_allclose(est.adjusted, [5, 3, 2])
    np.testing.assert_allclose(est.ci95, 0)
    assert est.overall == 1.0


def test_unmapped_class_and_classes_with_too_few_samples_degrade_to_nan():
    counts = np.array([[9, 1, 0, 0],     # class 0: fine
                       [1, 8, 0, 0],     # class 1: fine
                       [0, 0, 0, 0],     # class 2: mapped, no test sample -> taken as correct, NaN intervals
                       [0, 0, 0, 5]])    # class 3: not mapped
    mapped = np.array([50.0, 40.0, 10.0, 0.0])
    est = estimate(counts, mapped)
    assert est.adjusted.sum() == pytest.approx(100.0)
    assert est.adjusted[2] == pytest.approx(10.0) and np.isnan(est.ci95[2])
    assert np.isnan(est.users[2]) and np.isnan(est.users_ci95[2]) and np.isnan(est.overall_ci95)
    assert np.isfinite(est.ci95[[0, 1]]).all(), "intervals of classes the empty stratum cannot hold stay finite"
    assert np.isnan(est.users[3]) and est.adjusted[3] == 0 and np.isnan(est.producers[3])
    one = estimate(np.array([[5, 1], [0, 1]]), np.array([60.0, 40.0]))   # class 1 has a single sample
    assert np.isnan(one.ci95[1]) and np.isnan(one.users_ci95[1]) and np.isfinite(one.ci95[0])
    nothing = estimate(np.eye(2), np.zeros(2))
    assert np.isnan(nothing.overall) and (nothing.adjusted == 0).all()


def test_degradation_is_logged_naming_unit_and_class(caplog):
    with caplog.at_level(logging.WARNING, logger="cropflow.areas"):
        table = estimate_table(np.array([[3, 1], [0, 0]]), {"aoi": np.array([10, 5])}, ["maize", "wheat"], 0.01)
    assert "aoi: class wheat is mapped but has no test sample" in caplog.text
    assert table["ci95_ha"].isna().tolist() == [False, True]


def test_error_matrix_is_transposed_from_the_metrics_layout(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"class_ids": [1, 2], "class_names": ["maize", "soybean"],
                                "confusion": [[9, 1], [3, 7]]}))   # rows = reference
    counts, ids, names = load_error_matrix(path)
    assert counts.tolist() == [[9, 3], [1, 7]] and ids == [1, 2] and names == ["maize", "soybean"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json.*evaluate"):
        load_error_matrix(tmp_path / "bad.json")


GRID = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 320100.0, 5330060.0))   # 10 x 6 pixels


def _map(tmp_path):
    data = np.zeros((6, 10), dtype=np.uint8)
    data[:, :4] = 1          # 24 px of class 1 in the west
    data[:3, 4:] = 2         # 18 px of class 2 in the north-east
    data[3:, 4:8] = 1        # 12 px more of class 1; the south-east corner (6 px) is nodata
    path = tmp_path / "map.tif"
    write_raster(path, data, GRID, nodata=0)
    return path


def test_pixel_counts_in_windows_whole_map_and_per_unit(tmp_path):
    path = _map(tmp_path)
    for rows in (1, 4, 100):
        counts, pixel_ha = count_classes(path, [1, 2, 3], window_rows=rows)
        assert counts.tolist() == [36, 18, 0] and pixel_ha == pytest.approx(0.01)
    west, east = shapely.box(320000, 5330000, 320050, 5330060), shapely.box(320050, 5330000, 320100, 5330060)
    units = gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[west, east], crs="EPSG:32652").to_crs(4326)
    units.to_file(tmp_path / "units.gpkg")
    by_unit = count_classes_by_unit(path, [1, 2, 3], tmp_path / "units.gpkg", "name", window_rows=4)
    assert {k: v.tolist() for k, v in by_unit.items()} == {"west": [27, 3, 0], "east": [9, 15, 0]}
    with pytest.raises(ValueError, match="units.gpkg has no attribute 'county'.*areas.unit_field"):
        count_classes_by_unit(path, [1, 2, 3], tmp_path / "units.gpkg", "county")
    with pytest.raises(ValueError, match="map.tif holds class values \\[2\\]"):
        count_classes(path, [1])


def test_areas_command_writes_the_table_per_unit(tmp_path):
    path = _map(tmp_path)
    gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[shapely.box(320000, 5330000, 320050, 5330060),
                                                           shapely.box(320050, 5330000, 320100, 5330060)],
                     crs="EPSG:32652").to_file(tmp_path / "units.gpkg")
    (tmp_path / "m.json").write_text(json.dumps({"class_ids": [1, 2], "class_names": ["maize", "soybean"],
                                                 "confusion": [[8, 3], [2, 7]]}))
    out = tmp_path / "areas" / "rf.csv"
    assert cli.main(["areas", "--metrics", str(tmp_path / "m.json"), "--map", str(path), "--boundaries",
                     str(tmp_path / "units.gpkg"), "--unit-field", "name", "--window-rows", "2",
                     "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:9]) == ["unit", "class", "mapped_ha", "adjusted_ha", "ci95_ha", "users_accuracy",
                                       "users_ci95", "producers_accuracy", "producers_ci95"]
    assert table["unit"].tolist() == ["aoi", "aoi", "west", "west", "east", "east"]
    aoi = table[table["unit"] == "aoi"].set_index("class")
    assert aoi.loc["maize", "mapped_ha"] == pytest.approx(0.36) and aoi.loc["soybean", "mapped_ha"] == 0.18
    # map maize (0.36 ha): 8 of 10 samples maize; map soybean (0.18 ha): 3 of 10 maize -> 0.288 + 0.054 ha
    assert aoi.loc["maize", "adjusted_ha"] == pytest.approx(0.34, abs=0.005)
    assert table.groupby("unit")["adjusted_ha"].sum().to_dict() == pytest.approx(
        table.groupby("unit")["mapped_ha"].sum().to_dict(), abs=0.02)
