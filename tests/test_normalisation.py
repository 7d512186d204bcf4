import json
import logging

import numpy as np
import pytest

from cropflow import normalisation as nm


def test_fit_minmax_per_channel_over_samples_and_time_ignoring_nan():
    x = np.array([[[1.0, 10.0], [3.0, np.nan]], [[-2.0, 20.0], [np.nan, 30.0]]])  # (N=2, T=2, C=2)
    mn, mx = nm.fit_minmax(x)
    np.testing.assert_array_equal(mn, [-2.0, 10.0])
    np.testing.assert_array_equal(mx, [3.0, 30.0])


def test_fit_minmax_ignores_inf_and_flags_empty_channel(caplog):
    x = np.zeros((3, 2, 2), dtype=np.float32)
    x[..., 0] = [[1, np.inf], [2, 3], [-np.inf, 4]]
    x[..., 1] = np.nan
    with caplog.at_level(logging.WARNING, logger="cropflow.normalisation"):
        mn, mx = nm.fit_minmax(x)
    np.testing.assert_array_equal(mn, [1.0, 0.0])
    np.testing.assert_array_equal(mx, [4.0, 0.0])
    assert "no finite value" in caplog.text


def test_fit_minmax_rejects_wrong_rank_and_empty():
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        nm.fit_minmax(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no samples"):
        nm.fit_minmax(np.zeros((0, 3, 2)))


def test_apply_minmax_scales_clips_constant_channel_and_reports_missing():
    mn, mx = np.array([0.0, 5.0, 1.0]), np.array([10.0, 5.0, 3.0])  # channel 1 constant
    x = np.array([[[5.0, 5.0, 2.0], [20.0, 7.0, -10.0], [np.nan, 5.0, 3.0]]])  # (1, 3, 3)
    xn, missing = nm.apply_minmax(x, mn, mx)
    assert xn.dtype == np.float32
    np.testing.assert_allclose(xn[0, 0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(xn[0, 1], [1.5, 0.0, -0.5])  # 2.0 and -5.5 clipped
    np.testing.assert_allclose(xn[0, 2], [0.0, 0.0, 1.0])
    assert missing.shape == x.shape
    assert missing[0, 2, 0] and missing.sum() == 1


def test_training_values_map_to_unit_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 30, size=(50, 4, 3)).astype(np.float32)
    xn, missing = nm.apply_minmax(x, *nm.fit_minmax(x))
    assert not missing.any()
    assert xn.min() == 0.0 and np.isclose(xn.max(), 1.0)
    np.testing.assert_allclose(xn.min(axis=(0, 1)), 0.0)
    np.testing.assert_allclose(xn.max(axis=(0, 1)), 1.0, atol=1e-6)


def test_apply_minmax_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        nm.apply_minmax(np.zeros((1, 2, 3)), np.zeros(2), np.ones(2))


def test_json_round_trip_and_spec_format(tmp_path):
    x = {"s2": np.arange(24, dtype=np.float32).reshape(2, 4, 3), "coh": np.ones((2, 5, 2), np.float32)}
    norm = nm.fit_inputs(x, {"s2": ["B04", "B8A", "B11"], "coh": ["coh_vv", "coh_vh"]})
    path = nm.save_normalisation(tmp_path / "normalisation.json", norm)
    doc = json.loads(path.read_text())
    assert doc["s2"] == {"bands": ["B04", "B8A", "B11"], "min": [0.0, 1.0, 2.0], "max": [21.0, 22.0, 23.0]}
    assert doc["coh"]["bands"] == ["coh_vv", "coh_vh"]
    back = nm.load_normalisation(path)
    for name in norm:
        assert back[name].bands == norm[name].bands
        np.testing.assert_array_equal(back[name].min, norm[name].min)
        np.testing.assert_array_equal(back[name].max, norm[name].max)
    xn, missing = nm.apply_inputs(x, back)
    assert set(xn) == {"s2", "coh"} and not any(m.any() for m in missing.values())


def test_load_normalisation_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        nm.load_normalisation(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"s2": {"bands": ["B04"], "min": [0.0]}}))
    with pytest.raises(ValueError, match="bad.json.*'s2'"):
        nm.load_normalisation(bad)
    bad.write_text(json.dumps({"s2": {"bands": ["B04", "B11"], "min": [0.0], "max": [1.0]}}))
    with pytest.raises(ValueError, match="bad.json"):
        nm.load_normalisation(bad)


def test_apply_inputs_unknown_input():
    norm = {"s2": nm.MinMax(("B04",), np.zeros(1), np.ones(1))}
    with pytest.raises(ValueError, match="'s1'"):
        nm.apply_inputs({"s1": np.zeros((1, 2, 1))}, norm)
