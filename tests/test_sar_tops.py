"""TOPS deramping on the real Azores IW3 crop and its annotation."""

from pathlib import Path

import numpy as np
import pytest

from cropflow.sar import slc, tops

AZ = Path(__file__).parent / "data" / "s1-slc-azores"
TIFF = AZ / "s1a-iw3-slc-vv_subset_hight9800_10400_width11000_11000.tiff"
ANN = AZ / "s1a-iw3-slc-vv-20220918t074921-20220918t074946-045056-056232-006.xml"


@pytest.fixture(scope="module")
def crop():
    da = slc.read_measurement_tiff(TIFF, ANN, line_offset=9800, pixel_offset=11000)
    ann = slc.read_annotation(ANN)
    tp = tops.burst_tops(ann, ann.burst_of_line(9800).index)
    return da, ann, tp, tops.deramp_phase(tp, da.line.values, da.pixel.values)


def _centroid(x: np.ndarray, prf: float) -> tuple[float, float]:
    """Azimuth spectral centroid (Hz) and normalised lag-1 correlation (spectral concentration)."""
    c = np.sum(x[1:] * np.conj(x[:-1]))
    return float(np.angle(c) * prf / (2 * np.pi)), float(np.abs(c) / np.sum(np.abs(x) ** 2))


def test_rates_in_iw_range(crop):
    da, ann, tp, _ = crop
    r = tops.burst_rates(tp, da.pixel.values)
    assert 7400 < tp.velocity < 7700
    assert 5000 < r["ks"] < 8000  # steering Doppler rate, Hz/s
    assert np.all((r["ka"] < -1800) & (r["ka"] > -2400))  # FM rate is negative
    assert np.all((r["kt"] > 1200) & (r["kt"] < 2000))  # IW Doppler centroid rate
    assert np.all(np.abs(r["eta_ref"]) < 1e-3)


def test_doppler_rate_matches_the_data(crop):
    da, ann, tp, _ = crop
    prf = 1 / ann.azimuth_time_interval
    s = da.values
    block = 20
    f = np.array([_centroid(s[i : i + block], prf)[0] for i in range(0, 600, block)])
    f = np.unwrap(f * 2 * np.pi / prf) * prf / (2 * np.pi)
    slope = np.polyfit(np.arange(f.size) * block * ann.azimuth_time_interval, f, 1)[0]
    kt = tops.burst_rates(tp, da.pixel.values)["kt"].mean()
    print(f"measured Doppler rate {slope:.0f} Hz/s, annotation kt {kt:.0f} Hz/s")
    assert abs(slope - kt) / kt < 0.05


def test_deramped_spectrum_centred(crop):
    da, ann, tp, phi = crop
    prf = 1 / ann.azimuth_time_interval
    f0, rho0 = _centroid(da.values, prf)
    f1, rho1 = _centroid(tops.deramp(da.values, phi), prf)
    print(f"before: centroid {f0:.1f} Hz, lag-1 {rho0:.3f}; after: centroid {f1:.1f} Hz, lag-1 {rho1:.3f}")
    assert rho0 < 0.2  # raw: Doppler sweeps several PRFs across the crop, the summed spectrum is broad
    assert rho1 > 0.5  # deramped: concentrated at baseband
    assert abs(f1) < 0.01 * prf  # centred within 1 % of the PRF (about 5 Hz)


def test_reramp_inverts_deramp(crop):
    da, _, _, phi = crop
    x = da.values[:50, :60]
    np.testing.assert_allclose(tops.reramp(tops.deramp(x, phi[:50, :60]), phi[:50, :60]), x, rtol=1e-5, atol=1e-3)


def test_bad_burst_index():
    with pytest.raises(ValueError, match="burst 9"):
        tops.burst_tops(ANN, 9)
