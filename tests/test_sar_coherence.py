"""Coherence estimator: summed-area boxcar, NaN handling, bias formula, recovery on the real Azores crop."""

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from cropflow.sar import slc, tops
from cropflow.sar.coherence import box_sum, coherence, coherence_reference, estimator_bias

AZ = Path(__file__).parent / "data" / "s1-slc-azores"
TIFF = AZ / "s1a-iw3-slc-vv_subset_hight9800_10400_width11000_11000.tiff"
ANN = AZ / "s1a-iw3-slc-vv-20220918t074921-20220918t074946-045056-056232-006.xml"


def _direct_box(x, w):
    pa, pr = w[0] // 2, w[1] // 2
    xp = np.pad(x, ((pa, w[0] - 1 - pa), (pr, w[1] - 1 - pr)))
    return sliding_window_view(xp, w).sum(axis=(-2, -1))


@pytest.mark.parametrize("window", [(1, 1), (3, 3), (4, 6), (7, 7), (15, 31)])
def test_summed_area_equals_direct_window_sum(window):
    rng = np.random.default_rng(3)
    s1 = rng.normal(size=(60, 80)) + 1j * rng.normal(size=(60, 80))
    s2 = 0.7 * s1 + 0.5 * (rng.normal(size=(60, 80)) + 1j * rng.normal(size=(60, 80)))
    s1[10:14, 20:30] = np.nan
    valid = np.isfinite(s1) & np.isfinite(s2)
    a, b = np.where(valid, s1, 0), np.where(valid, s2, 0)
    np.testing.assert_allclose(box_sum(a, window), _direct_box(a, window), atol=1e-9)
    num = _direct_box(a * b.conj(), window)
    den = np.sqrt(_direct_box(np.abs(a) ** 2, window) * _direct_box(np.abs(b) ** 2, window))
    with np.errstate(invalid="ignore"):
        direct = np.abs(num / den)
    np.testing.assert_allclose(coherence(s1, s2, window), direct, atol=1e-5)


def test_nan_windows_and_excluded_samples():
    rng = np.random.default_rng(4)
    s1 = rng.normal(size=(40, 40)) + 1j * rng.normal(size=(40, 40))
    s2 = s1.copy()
    s2[:, :10] = 1e6 * (rng.normal(size=(40, 10)) + 1j * rng.normal(size=(40, 10)))  # unrelated
    s2[:, :10] = np.nan  # ... but invalid: must not lower the coherence of windows overlapping them
    g = coherence(s1, s2, (3, 5))
    assert np.isnan(g[:, :8]).all()  # no valid sample in the window
    np.testing.assert_allclose(g[:, 8:], 1.0, atol=1e-5)


def test_flat_phase_removed():
    rng = np.random.default_rng(5)
    s1 = rng.normal(size=(50, 50)) + 1j * rng.normal(size=(50, 50))
    phase = np.add.outer(np.zeros(50), np.arange(50) * 2 * np.pi / 5)
    s2 = s1 * np.exp(1j * phase)
    assert np.nanmean(coherence(s1, s2, (5, 5))) < 0.3
    np.testing.assert_allclose(coherence(s1, s2, (5, 5), flat_phase=phase), 1.0, atol=1e-5)


def test_estimator_bias_limits_and_monte_carlo():
    L = 20
    # gamma = 0: Gamma(L) Gamma(3/2) / Gamma(L + 1/2) (approx. sqrt(pi / 4L)); gamma = 1: 1
    assert estimator_bias(0.0, L) == pytest.approx(np.sqrt(np.pi / (4 * L)), rel=0.01)
    assert estimator_bias(1.0, L) == 1.0
    rng = np.random.default_rng(6)
    n = 40000
    for g in (0.3, 0.7):
        a = rng.normal(size=(n, L)) + 1j * rng.normal(size=(n, L))
        b = g * a + np.sqrt(1 - g * g) * (rng.normal(size=(n, L)) + 1j * rng.normal(size=(n, L)))
        e = np.abs((a * b.conj()).sum(1)) / np.sqrt((np.abs(a) ** 2).sum(1) * (np.abs(b) ** 2).sum(1))
        assert estimator_bias(g, L) == pytest.approx(e.mean(), abs=0.004)


def test_coherence_recovery_on_real_crop():
    """s2 = g s1 + sqrt(1-g^2) n (n with the local power of s1), carrying the real TOPS ramp and a known
    geometric phase; after deramping both and removing the phase, the mean estimate over the sea (lines
    450-595) must equal estimator_bias(g, looks) within 0.015."""
    da = slc.read_measurement_tiff(TIFF, ANN, line_offset=9800, pixel_offset=11000)
    ann = slc.read_annotation(ANN)
    tp = tops.burst_tops(ann, ann.burst_of_line(9800).index)
    phi = tops.deramp_phase(tp, da.line.values, da.pixel.values)
    s1 = da.values.astype(np.complex128)
    s1_base = tops.deramp(s1, phi)
    power = ndimage.uniform_filter(np.abs(s1) ** 2, 15)
    lines, pixels = np.meshgrid(np.arange(s1.shape[0]), np.arange(s1.shape[1]), indexing="ij")
    geo = 2 * np.pi * (pixels / 40 + lines / 150)
    rng = np.random.default_rng(7)
    window = (5, 15)
    looks = window[0] * window[1]
    area = (slice(450, 595), slice(10, -10))
    print(f"\ncoherence recovery, window {window}, {looks} looks, sea area lines 450-595")
    print(" true  expected(bias)  estimated  no-phase-removal")
    for g in (0.2, 0.4, 0.6, 0.8, 0.9):
        n = np.sqrt(power / 2) * (rng.standard_normal(s1.shape) + 1j * rng.standard_normal(s1.shape))
        s2 = tops.reramp(g * s1_base + np.sqrt(1 - g * g) * n, phi) * np.exp(1j * geo)
        d1, d2 = tops.deramp(s1, phi), tops.deramp(s2, phi)
        est = float(np.nanmean(coherence(d1, d2, window, flat_phase=geo)[area]))
        raw = float(np.nanmean(coherence(d1, d2, window)[area]))
        exp = float(estimator_bias(g, looks))
        print(f" {g:.1f}   {exp:.4f}          {est:.4f}     {raw:.4f}")
        assert abs(est - exp) < 0.015
        if g >= 0.6:
            assert raw < est - 0.05  # the geometric phase must be compensated


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("window", [(1, 1), (3, 10), (4, 6), (7, 7), (31, 15), (90, 3)])
def test_numba_kernel_agrees_with_summed_area_reference(window, dtype):
    rng = np.random.default_rng(11)
    shape = (70, 90)
    s1 = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    s2 = (0.7 * s1 + 0.5 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))).astype(dtype)
    s1[rng.random(shape) < 0.1] = np.nan
    s2[10:25, 30:80] = np.nan  # a block wide enough to leave windows without any valid sample
    s2[3, 4] = np.inf
    phase = rng.uniform(-np.pi, np.pi, shape)
    for kwargs in ({}, {"flat_phase": phase}, {"complex_output": True}):
        got = coherence(s1, s2, window, **kwargs)
        want = coherence_reference(s1, s2, window, **kwargs)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


def test_zero_filled_no_data_gives_nan_as_the_reference():
    # zeros (a common no-data fill) next to bright data: windows holding only zeros have P1 P2 = 0 exactly
    rng = np.random.default_rng(5)
    shape = (60, 80)
    s1 = ((rng.normal(size=shape) + 1j * rng.normal(size=shape)) * np.exp(rng.uniform(-3, 3, shape)))
    s1 = s1.astype(np.complex64)
    s2 = (0.7 * s1 + 0.5 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))).astype(np.complex64)
    s1[20:40, 20:60] = 0
    s2[20:40, 20:60] = 0
    for window in ((3, 3), (5, 9)):
        got = coherence(s1, s2, window)
        want = coherence_reference(s1, s2, window)
        assert np.isnan(want[25:35, 30:50]).all()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape, window", [((37, 23), (5, 9)), ((1, 40), (3, 3)), ((40, 1), (3, 3)),
                                           ((5, 7), (11, 15)), ((2, 3), (4, 4))])
def test_row_blocks_of_any_thread_count_match_the_reference(shape, window):
    import numba

    rng = np.random.default_rng(17)
    s1 = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    s2 = (0.6 * s1 + 0.6 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))).astype(np.complex64)
    s1.flat[::7] = np.nan
    want = coherence_reference(s1, s2, window)
    before = numba.get_num_threads()
    try:
        for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(threads)
            got = coherence(s1, s2, window)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    finally:
        numba.set_num_threads(before)
