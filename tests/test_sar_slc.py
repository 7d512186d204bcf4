"""Tests of cropflow.sar.slc on the real Azores IW3 crop and the real S1B SAFE metadata."""

from pathlib import Path

import numpy as np
import pytest

from cropflow.sar import slc

DATA = Path(__file__).parent / "data"
AZ = DATA / "s1-slc-azores"
TIFF = AZ / "s1a-iw3-slc-vv_subset_hight9800_10400_width11000_11000.tiff"
ANN = AZ / "s1a-iw3-slc-vv-20220918t074921-20220918t074946-045056-056232-006.xml"
ZIP = Path(__file__).resolve().parents[1] / "resources" / "s1" / \
    "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.zip"


@pytest.fixture(scope="module")
def safe(tmp_path_factory):
    return slc.extract_safe(ZIP, tmp_path_factory.mktemp("safe"))


def test_read_real_crop_complex_with_swath_coordinates():
    da = slc.read_measurement_tiff(TIFF, ANN, line_offset=9800, pixel_offset=11000)
    assert da.shape == (601, 1401) and da.dtype == np.complex64
    assert da.line.values[0] == 9800 and da.pixel.values[-1] == 12400
    assert np.isfinite(da.values).all()  # crop lies inside burst 6's valid lines and samples
    assert np.all(da.values.real == np.round(da.values.real))  # int16 DN
    assert np.std(np.abs(da.values)) > 10  # real signal, not a constant placeholder
    dt = np.diff(da.azimuth_time.values).astype(np.int64) * 1e-9
    np.testing.assert_allclose(dt, 2.055556299999998e-03, rtol=1e-6)


def test_annotation_bursts_and_valid_samples():
    ann = slc.read_annotation(ANN)
    assert (ann.swath, ann.polarisation, ann.pass_direction) == ("IW3", "VV", "DESCENDING")
    assert len(ann.bursts) == 9 and ann.lines_per_burst == 1514 and ann.samples_per_burst == 24203
    b = ann.burst_of_line(9800)
    assert (b.index, b.first_line) == (6, 9084)
    assert ann.bursts[0].burst_id == 18023
    mask = ann.bursts[0].valid_mask(ann.number_of_samples)
    assert not mask[:26].any() and not mask[-24:].any()  # lines flagged -1
    assert mask[26, 312] and not mask[26, 311] and mask[26, 23981] and not mask[26, 23982]


def test_crop_outside_swath_is_rejected():
    with pytest.raises(ValueError, match="exceed the swath"):
        slc.read_measurement_tiff(TIFF, ANN, line_offset=13500, pixel_offset=0)


def test_zip_extracted_and_swaths_listed(safe, tmp_path):
    assert safe.name.endswith(".SAFE") and (safe / "manifest.safe").is_file()
    assert slc.list_swath_polarisations(safe) == [("IW1", "VH"), ("IW1", "VV"), ("IW2", "VH")]
    assert slc.extract_safe(safe, tmp_path) == safe  # a folder is used as is


def test_missing_polarisation_names_product_and_available(safe):
    with pytest.raises(ValueError) as err:
        slc.open_swath(safe, "IW2", "VV")
    msg = str(err.value)
    assert safe.name in msg and "IW1/VV" in msg and "IW2/VH" in msg


def test_truncated_zip_asks_for_redownload(tmp_path):
    bad = tmp_path / ZIP.name
    bad.write_bytes(ZIP.read_bytes()[: ZIP.stat().st_size // 2])
    with pytest.raises(ValueError, match="re-download") as err:
        slc.extract_safe(bad, tmp_path / "work")
    assert ZIP.name in str(err.value)


def test_burst_geometry_from_safe(safe):
    ann = slc.swath_annotation(safe, "IW1", "VV")
    assert len(ann.bursts) == 9 and ann.lines_per_burst == 1501
    b = ann.bursts[3]
    assert b.first_line == 3 * 1501 and b.first_valid_sample.size == 1501
    valid = b.first_valid_sample >= 0
    assert valid.sum() > 1400 and (b.last_valid_sample[valid] > b.first_valid_sample[valid]).all()


def test_calibration_exact_at_lut_nodes_and_bilinear_between(safe):
    cal = slc.open_metadata(safe, "IW1", "VV", "calibration")
    meas = slc.open_swath(safe, "IW1", "VV")["measurement"]
    lut = cal["sigmaNought"]
    lines = [int(v) for v in lut.line.values if 0 <= v < meas.sizes["line"]][2:4]
    pixels = [int(v) for v in lut.pixel.values[100:103]]
    # at LUT nodes: sigma0 amplitude = DN / LUT exactly
    dn = meas.isel(line=lines, pixel=pixels).load()
    out = slc.calibrate_sigma0(dn, cal)
    expected = dn.values / lut.sel(line=lines, pixel=pixels).values
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)
    # halfway between two nodes in both directions: DN / bilinear mean of the four corner values
    mid_l, mid_p = (lines[0] + lines[1]) // 2, (pixels[0] + pixels[1]) // 2
    dn_mid = meas.isel(line=[mid_l], pixel=[mid_p]).load()
    wl = (mid_l - lines[0]) / (lines[1] - lines[0])
    wp = (mid_p - pixels[0]) / (pixels[1] - pixels[0])
    c = lut.sel(line=lines[:2], pixel=pixels[:2]).values.astype(np.float64)
    bil = (1 - wl) * ((1 - wp) * c[0, 0] + wp * c[0, 1]) + wl * ((1 - wp) * c[1, 0] + wp * c[1, 1])
    got = slc.calibrate_sigma0(dn_mid, cal).values[0, 0]
    np.testing.assert_allclose(got, dn_mid.values[0, 0] / bil, rtol=1e-5)
    assert not np.isclose(c[0, 0], c[0, 1])  # the LUT varies: the test exercises interpolation


def test_azores_has_no_calibration_xml():
    assert not list(AZ.glob("calibration*.xml"))  # calibration is tested on the S1B SAFE instead
