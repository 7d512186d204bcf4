"""Gap filling: linear interpolation in time and k-nearest-neighbour imputation in space."""

import numpy as np
import pytest

from cropflow.gapfill import interpolate_time, knn_fill

NAN = np.nan


def test_interpolate_time_linear_between_irregular_dates():
    days = np.array([0.0, 2.0, 5.0, 11.0, 20.0])
    values = np.array([NAN, 2.0, NAN, NAN, 8.0], np.float32)
    out = interpolate_time(values, days)
    # v(t) = 2 + (8 - 2) (t - 2) / (20 - 2)
    np.testing.assert_allclose(out, [2.0, 2.0, 3.0, 5.0, 8.0], rtol=1e-6)
    assert out.dtype == np.float32


def test_interpolate_time_uses_the_nearest_observations_on_each_side():
    days = np.array([0.0, 1.0, 4.0, 10.0, 12.0])
    values = np.array([1.0, NAN, 10.0, NAN, 4.0], np.float32)
    # t=1: 1 + 9 * 1/4; t=10: 10 - 6 * 6/8
    np.testing.assert_allclose(interpolate_time(values, days), [1.0, 3.25, 10.0, 5.5, 4.0], rtol=1e-6)


def test_interpolate_time_extrapolates_the_nearest_value_at_both_ends():
    days = np.array([0.0, 3.0, 7.0, 8.0, 30.0])
    values = np.array([NAN, NAN, 5.0, 7.0, NAN], np.float32)
    np.testing.assert_array_equal(interpolate_time(values, days), [5.0, 5.0, 5.0, 7.0, 7.0])
    single = np.array([NAN, -3.0, NAN], np.float32)
    np.testing.assert_array_equal(interpolate_time(single, np.array([0.0, 1.0, 2.0])), [-3.0, -3.0, -3.0])


def test_interpolate_time_all_nan_series_stays_nan():
    values = np.full((4, 2), NAN, np.float32)
    values[:, 1] = [1.0, NAN, NAN, 4.0]
    out = interpolate_time(values, np.arange(4.0))
    assert np.isnan(out[:, 0]).all()
    np.testing.assert_allclose(out[:, 1], [1.0, 2.0, 3.0, 4.0])


def test_interpolate_time_is_vectorised_over_trailing_axes():
    rng = np.random.default_rng(3)
    days = np.cumsum(rng.integers(1, 15, size=9)).astype(np.float64)
    values = rng.normal(size=(9, 3, 4, 5)).astype(np.float32)
    values[rng.random(values.shape) < 0.4] = NAN
    values[:, 0, 0, 0] = NAN  # one pixel never observed
    out = interpolate_time(values, days)
    assert out.shape == values.shape
    for idx in np.ndindex(values.shape[1:]):
        series = values[(slice(None), *idx)]
        ok = np.isfinite(series)
        if not ok.any():
            assert np.isnan(out[(slice(None), *idx)]).all()
            continue
        # np.interp: linear inside, nearest value (fp[0], fp[-1]) outside
        expected = np.interp(days, days[ok], series[ok])
        np.testing.assert_allclose(out[(slice(None), *idx)], expected, rtol=1e-5, atol=1e-6)
    # observed values are kept as they are
    observed = np.isfinite(values)
    np.testing.assert_array_equal(out[observed], values[observed])


def test_interpolate_time_checks_the_dates():
    with pytest.raises(ValueError, match="3 time steps but 2 dates"):
        interpolate_time(np.zeros((3, 2)), np.array([0.0, 1.0]))
    assert interpolate_time(np.zeros((0, 2)), np.zeros(0)).shape == (0, 2)


def test_knn_fill_mean_of_the_k_nearest_valid_pixels():
    line = np.array([[1.0, NAN, NAN, 4.0, NAN, NAN, 10.0]], np.float32)
    # k = 2: pixel 1 -> (1, 4), pixel 2 -> (4, 1), pixel 4 -> (4, 10), pixel 5 -> (10, 4)
    np.testing.assert_allclose(knn_fill(line, k=2), [[1.0, 2.5, 2.5, 4.0, 7.0, 7.0, 10.0]])
    # k = 1: the nearest valid pixel
    np.testing.assert_allclose(knn_fill(line, k=1), [[1.0, 1.0, 4.0, 4.0, 4.0, 10.0, 10.0]])


def test_knn_fill_k4_in_two_dimensions():
    layer = np.array([[100.0, 1.0, 100.0],
                      [2.0, NAN, 3.0],
                      [100.0, 4.0, 100.0]], np.float32)
    # the 4 edge neighbours are at distance 1, the corners at sqrt(2)
    out = knn_fill(layer)
    assert out[1, 1] == pytest.approx(2.5)
    mask = np.isfinite(layer)
    np.testing.assert_array_equal(out[mask], layer[mask])
    hole = np.array([[5.0, 5.0, 5.0, 9.0],
                     [5.0, NAN, NAN, 9.0],
                     [5.0, 5.0, 5.0, 9.0]], np.float32)
    filled = knn_fill(hole, k=4)
    # (1, 1): (0,1) (1,0) (2,1) at 1 and (1,3) at 2 is farther than (0,0) (0,2) (2,0) (2,2) at sqrt 2 -> all 5
    assert filled[1, 1] == pytest.approx(5.0)
    # (1, 2): 5, 5, 9 at distance 1, then one of the sqrt 2 neighbours (5 or 9)
    assert float(filled[1, 2]) in (pytest.approx(6.0), pytest.approx(7.0))
    assert np.isfinite(filled).all()
    assert layer[1, 1] != layer[1, 1]  # the input is not modified


def test_knn_fill_with_fewer_than_k_valid_pixels_is_unchanged():
    layer = np.full((4, 4), NAN, np.float32)
    layer[0, 0], layer[3, 3], layer[1, 2] = 1.0, 2.0, 3.0
    out = knn_fill(layer, k=4)
    np.testing.assert_array_equal(out, layer)
    assert np.isnan(out).sum() == 13
    assert np.isfinite(knn_fill(layer, k=3)).all()


def test_knn_fill_without_gaps_is_identity():
    layer = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(knn_fill(layer), layer)


@pytest.mark.parametrize("max_patterns", [0, 10_000])
def test_interpolate_onto_matches_numpy_interp_per_pixel(monkeypatch, max_patterns):
    """Grouped (per validity pattern) and elementwise paths both equal numpy.interp with nearest extrapolation."""
    from cropflow import gapfill

    monkeypatch.setattr(gapfill, "MAX_PATTERNS", max_patterns)
    rng = np.random.default_rng(5)
    obs_days = np.array([3.0, 10.0, 12.0, 30.0, 41.0])
    target = np.array([0.0, 10.0, 11.0, 20.0, 41.0, 50.0])
    values = rng.normal(size=(5, 300)).astype(np.float32)
    values[:, rng.random(300) < 0.5] *= np.where(rng.random((5, 1)) < 0.4, np.nan, 1.0).astype(np.float32)
    values[:, :3] = np.nan
    out = gapfill.interpolate_onto(values, obs_days, target)
    for j in range(values.shape[1]):
        ok = np.isfinite(values[:, j])
        if not ok.any():
            assert np.isnan(out[:, j]).all()
            continue
        expected = np.interp(target, obs_days[ok], values[ok, j])
        np.testing.assert_allclose(out[:, j], expected, rtol=1e-5, atol=1e-6)
