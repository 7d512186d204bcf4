"""Multilook and Refined Lee on simulated single-look speckle."""

import numpy as np
import pytest
from scipy import ndimage

from cropflow.sar.speckle import covariance_c2, multilook, refined_lee


def _slc_pair(rng, shape, power_vv, power_vh, rho=0.3):
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    b = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    vv = np.sqrt(power_vv) * a
    vh = np.sqrt(power_vh) * (rho * a + np.sqrt(1 - rho**2) * b)
    return vv, vh


def test_multilook_block_average_with_nan():
    x = np.arange(24, dtype=float).reshape(4, 6)
    x[0, 0] = np.nan
    out = multilook(x, (2, 3))
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(np.nanmean(x[:2, :3]))
    assert out[1, 1] == pytest.approx(x[2:, 3:].mean())
    with pytest.raises(ValueError):
        multilook(x, (5, 1))


def test_refined_lee_homogeneous_mean_and_variance():
    rng = np.random.default_rng(0)
    vv, vh = _slc_pair(rng, (256, 256), 2.0, 0.5)
    c11, c22, c12 = covariance_c2(vv, vh)
    f11, f22, f12 = refined_lee(c11, c22, c12, looks=1)
    for raw, filt in ((c11, f11), (c22, f22)):
        assert filt.mean() == pytest.approx(raw.mean(), rel=0.02)
        ratio = filt.var() / raw.var()
        # a 28-pixel half window averages ~28 looks; window selection and b > 0 cost some of it
        assert 1 / 40 < ratio < 1 / 10, ratio
    assert f12.real.mean() == pytest.approx(c12.real.mean(), abs=0.05)


def test_refined_lee_preserves_step_edge_better_than_boxcar():
    rng = np.random.default_rng(1)
    power = np.ones((128, 128))
    power[:, 64:] = 10.0
    vv, vh = _slc_pair(rng, power.shape, power, 0.25 * power)
    c11, c22, c12 = covariance_c2(vv, vh)
    f11, _, _ = refined_lee(c11, c22, c12, looks=1)
    box = ndimage.uniform_filter(c11, 7)
    near = slice(60, 68)  # the 4 columns either side of the edge
    rows = slice(8, -8)
    err_lee = np.mean(np.abs(np.log(f11[rows, near] / power[rows, near])))
    err_box = np.mean(np.abs(np.log(box[rows, near] / power[rows, near])))
    print(f"edge log-error: refined Lee {err_lee:.3f}, 7x7 boxcar {err_box:.3f}")
    assert err_lee < 0.7 * err_box


def test_refined_lee_nan_stay_nan_and_do_not_spread():
    rng = np.random.default_rng(2)
    vv, vh = _slc_pair(rng, (64, 64), 1.0, 0.3)
    c11, c22, c12 = covariance_c2(vv, vh)
    c11[30, 30] = np.nan
    f11, f22, f12 = refined_lee(c11, c22, c12, looks=1)
    assert np.isnan(f11[30, 30]) and np.isnan(f12[30, 30])
    assert np.isfinite(np.delete(f11.ravel(), 30 * 64 + 30)).all()


def test_refined_lee_rejects_bad_window():
    z = np.ones((10, 10))
    with pytest.raises(ValueError):
        refined_lee(z, z, z.astype(complex), looks=1, window=6)
