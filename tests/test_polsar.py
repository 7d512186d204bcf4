import warnings

import numpy as np
import pytest

from cropflow import polsar


def random_c2(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random Hermitian positive semi-definite C2 matrices as sample covariances of complex Gaussians."""
    rng = np.random.default_rng(seed)
    looks = rng.integers(1, 6, size=n)
    c11, c22, c12 = np.empty(n), np.empty(n), np.empty(n, dtype=complex)
    for i, k in enumerate(looks):
        mix = rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))
        s = mix @ (rng.normal(size=(2, k)) + 1j * rng.normal(size=(2, k)))
        cov = s @ s.conj().T / k
        c11[i], c22[i], c12[i] = cov[0, 0].real, cov[1, 1].real, cov[0, 1]
    return c11, c22, c12


def eigh_reference(c11, c22, c12):
    """Per-pixel H, A, alpha (deg), DpRVI from numpy.linalg.eigh."""
    out = []
    for a, b, c in zip(c11, c22, c12):
        w, v = np.linalg.eigh(np.array([[a, c], [np.conj(c), b]]))
        w, v = w[::-1], v[:, ::-1]
        w = np.maximum(w, 0)
        p = w / w.sum()
        h = -sum(pi * np.log2(pi) for pi in p if pi > 0)
        aniso = (p[0] - p[1]) / (p[0] + p[1])
        alpha = np.degrees(sum(p[i] * np.arccos(min(1.0, abs(v[0, i]))) for i in range(2)))
        det, tr = np.linalg.det(np.array([[a, c], [np.conj(c), b]])).real, a + b
        dprvi = 1 - np.sqrt(max(0.0, 1 - 4 * det / tr**2)) * p[0]
        out.append((h, aniso, alpha, dprvi))
    return np.array(out).T


def test_identity_c2_closed_form():
    one, zero = np.ones(3), np.zeros(3, dtype=complex)
    h, a, al = polsar.h_a_alpha(one, one, zero)
    np.testing.assert_allclose(h, 1.0)
    np.testing.assert_allclose(a, 0.0, atol=1e-15)
    np.testing.assert_allclose(al, 45.0)
    np.testing.assert_allclose(polsar.dprvi(one, one, zero), 1.0)
    mc = polsar.m_chi(one, one, zero)
    np.testing.assert_allclose(mc.m, 0.0, atol=1e-15)
    np.testing.assert_allclose(mc.volume, np.sqrt(2.0))
    np.testing.assert_allclose(mc.single, 0.0, atol=1e-15)
    np.testing.assert_allclose(mc.double, 0.0, atol=1e-15)
    np.testing.assert_allclose(polsar.rvi(one, one, zero), 2.0)


@pytest.mark.parametrize("phi", [0.0, 0.7, -2.0, np.pi])
def test_rank_one_c2_is_fully_polarised(phi):
    c11, c22 = np.array([2.0, 0.3, 5.0]), np.array([0.5, 0.3, 0.01])
    c12 = np.sqrt(c11 * c22) * np.exp(1j * phi)
    h, a, _ = polsar.h_a_alpha(c11, c22, c12)
    np.testing.assert_allclose(h, 0.0, atol=1e-6)
    np.testing.assert_allclose(a, 1.0, atol=1e-7)
    mc = polsar.m_chi(c11, c22, c12)
    np.testing.assert_allclose(mc.m, 1.0, atol=1e-12)
    np.testing.assert_allclose(mc.volume, 0.0, atol=1e-6)
    np.testing.assert_allclose(polsar.dprvi(c11, c22, c12), 0.0, atol=1e-6)
    e = polsar.eigen_c2(c11, c22, c12)
    np.testing.assert_allclose(e.l1, c11 + c22)
    assert np.all(e.l2 >= 0)


def test_diagonal_alpha_is_zero_when_vv_dominates_and_90_when_vh_dominates():
    _, _, al = polsar.h_a_alpha(np.array([4.0]), np.array([1.0]), np.array([0j]))
    np.testing.assert_allclose(al, 0.2 * 90.0)  # p1 = 0.8 with alpha_1 = 0, p2 = 0.2 with alpha_2 = 90
    _, _, al = polsar.h_a_alpha(np.array([4.0]), np.array([1e-30]), np.array([0j]))
    np.testing.assert_allclose(al, 0.0, atol=1e-12)
    _, _, al = polsar.h_a_alpha(np.array([1e-30]), np.array([4.0]), np.array([0j]))
    np.testing.assert_allclose(al, 90.0)


@pytest.mark.parametrize("theta_deg, phi, l1, l2", [(30.0, 0.4, 3.0, 1.0), (60.0, -1.0, 2.0, 0.0),
                                                    (10.0, 2.5, 1.0, 0.5), (90.0, 0.0, 1.0, 0.25)])
def test_alpha_of_rotated_eigenvectors(theta_deg, phi, l1, l2):
    t = np.radians(theta_deg)
    e1 = np.array([np.cos(t), np.sin(t) * np.exp(1j * phi)])
    e2 = np.array([-np.sin(t) * np.exp(-1j * phi), np.cos(t)])
    c = l1 * np.outer(e1, e1.conj()) + l2 * np.outer(e2, e2.conj())
    p1, p2 = l1 / (l1 + l2), l2 / (l1 + l2)
    _, _, al = polsar.h_a_alpha(c[0, 0].real, c[1, 1].real, c[0, 1])
    np.testing.assert_allclose(al, p1 * theta_deg + p2 * (90.0 - theta_deg), atol=1e-9)
    e = polsar.eigen_c2(c[0, 0].real, c[1, 1].real, c[0, 1])
    np.testing.assert_allclose([e.l1, e.l2], [l1, l2], atol=1e-12)
    np.testing.assert_allclose([e.v1, e.v2], [np.cos(t), np.sin(t)], atol=1e-12)


def test_against_per_pixel_eigh_reference():
    c11, c22, c12 = random_c2(300)
    h, a, al = polsar.h_a_alpha(c11, c22, c12)
    ref = eigh_reference(c11, c22, c12)
    np.testing.assert_allclose(h, ref[0], atol=1e-9)
    np.testing.assert_allclose(a, ref[1], atol=1e-9)
    np.testing.assert_allclose(al, ref[2], atol=1e-5)
    np.testing.assert_allclose(polsar.dprvi(c11, c22, c12), ref[3], atol=1e-9)
    e = polsar.eigen_c2(c11, c22, c12)
    for i in range(0, 300, 37):
        w, v = np.linalg.eigh(np.array([[c11[i], c12[i]], [np.conj(c12[i]), c22[i]]]))
        np.testing.assert_allclose([e.l1[i], e.l2[i]], [w[1], max(w[0], 0.0)], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose([e.v1[i], e.v2[i]], [abs(v[0, 1]), abs(v[0, 0])], atol=1e-7)
    assert np.all((h >= 0) & (h <= 1) & (a >= 0) & (a <= 1) & (al >= 0) & (al <= 90))


def test_mchi_components_sum_to_span_and_sign_convention():
    c11, c22, c12 = random_c2(200, seed=3)
    mc = polsar.m_chi(c11, c22, c12)
    np.testing.assert_allclose(mc.single**2 + mc.double**2 + mc.volume**2, c11 + c22, rtol=1e-9)
    g0, g1, g2, g3 = polsar.stokes_cp(c11, c22, c12)
    np.testing.assert_allclose(g3, -2 * c12.imag)
    np.testing.assert_allclose(mc.m, np.sqrt(g1**2 + g2**2 + g3**2) / g0)
    # Im C12 > 0 -> sin 2chi = -1 for this fully polarised case: all power in single bounce
    one = np.array([1.0])
    up = polsar.m_chi(one, one, np.array([1j]))
    np.testing.assert_allclose([up.sin2chi[0], up.single[0], up.double[0]], [-1.0, np.sqrt(2.0), 0.0], atol=1e-12)
    down = polsar.m_chi(one, one, np.array([-1j]))
    np.testing.assert_allclose([down.sin2chi[0], down.single[0], down.double[0]], [1.0, 0.0, np.sqrt(2.0)], atol=1e-12)
    np.testing.assert_allclose(polsar.mchi_s(one, one, np.array([1j])), up.single)
    np.testing.assert_allclose(polsar.mchi_d(one, one, np.array([1j])), up.double)


def test_backscatter_features():
    c11, c22, c12 = np.array([0.1, 0.01]), np.array([0.01, 0.001]), np.array([0j, 0j])
    np.testing.assert_allclose(polsar.vv_db(c11, c22, c12), [-10.0, -20.0])
    np.testing.assert_allclose(polsar.vh_db(c11, c22, c12), [-20.0, -30.0])
    np.testing.assert_allclose(polsar.cross_ratio(c11, c22, c12), [-10.0, -10.0])
    np.testing.assert_allclose(polsar.rvi(c11, c22, c12), 4 * c22 / (c11 + c22))
    np.testing.assert_allclose(polsar.sigma0_db(np.array([1.0, 0.0, -1.0, np.nan])), [0.0, np.nan, np.nan, np.nan])


def test_no_data_pixels_give_nan_without_warnings():
    c11 = np.array([0.0, np.nan, 1.0, -1.0, 1.0, 1.0])
    c22 = np.array([1.0, 1.0, 0.0, 1.0, np.inf, 0.5])
    c12 = np.array([0j, 0j, 0j, 0j, 0j, complex(np.nan, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = polsar.compute_features(c11, c22, c12, list(polsar.FEATURES))
        e = polsar.eigen_c2(c11, c22, c12)
    assert out.shape == (len(polsar.FEATURES), 6)
    assert np.isnan(out).all()
    assert all(np.isnan(x).all() for x in e)


def test_tiny_negative_eigenvalue_is_clamped():
    # |C12|^2 slightly above C11 C22 (not PSD after rounding/filtering)
    c11, c22 = np.array([1.0]), np.array([1.0])
    c12 = np.array([1.0 + 1e-9 + 0j])
    e = polsar.eigen_c2(c11, c22, c12)
    assert e.l2[0] == 0.0
    h, a, _ = polsar.h_a_alpha(c11, c22, c12)
    assert h[0] == 0.0 and a[0] == 1.0
    assert 0.0 <= polsar.dprvi(c11, c22, c12)[0] <= 1.0
    assert polsar.m_chi(c11, c22, c12).m[0] == 1.0


def test_compute_features_stacks_registry_and_rejects_unknown_names():
    c11, c22, c12 = random_c2(50, seed=1)
    c11, c22, c12 = c11.reshape(5, 10), c22.reshape(5, 10), c12.reshape(5, 10)
    names = ["mchi_v", "vv_db", "alpha"]
    out = polsar.compute_features(c11, c22, c12, names)
    assert out.shape == (3, 5, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], polsar.mchi_v(c11, c22, c12), rtol=1e-6)
    np.testing.assert_allclose(out[2], polsar.alpha(c11, c22, c12), rtol=1e-6)
    assert set(polsar.FEATURES) == {"vv_db", "vh_db", "cross_ratio", "entropy", "anisotropy", "alpha",
                                    "mchi_s", "mchi_d", "mchi_v", "dprvi", "rvi"}
    with pytest.raises(ValueError, match="'ndvi'.*valid names.*vv_db"):
        polsar.compute_features(c11, c22, c12, ["vv_db", "ndvi"])
    with pytest.raises(ValueError, match="window"):
        polsar.compute_features(c11, c22, c12, ["glcm_mean"])


# ---------------------------------------------------------------------------------------------- GLCM

def glcm_brute_force(image, window, levels, vmin, vmax):
    """Per-window symmetric GLCM matrices for each offset, textbook formulas, averaged over offsets."""
    q = polsar.quantize(image, levels, vmin, vmax)
    h, w = q.shape
    half = window // 2
    out = np.full((3, h, w), np.nan)
    for r in range(h):
        for c in range(w):
            if np.isnan(q[r, c]):
                continue
            feats = []
            for dr, dc in polsar.GLCM_OFFSETS:
                m = np.zeros((levels, levels))
                for rr in range(max(0, r - half), min(h, r + half + 1)):
                    for cc in range(max(0, c - half), min(w, c + half + 1)):
                        r2, c2 = rr + dr, cc + dc
                        if not (r - half <= r2 <= r + half and c - half <= c2 <= c + half and 0 <= r2 < h and 0 <= c2 < w):
                            continue
                        if np.isnan(q[rr, cc]) or np.isnan(q[r2, c2]):
                            continue
                        i, j = int(q[rr, cc]), int(q[r2, c2])
                        m[i, j] += 1
                        m[j, i] += 1
                if m.sum() == 0:
                    continue
                p = m / m.sum()
                ii, jj = np.indices(p.shape)
                mu = (ii * p).sum()
                var = ((ii - mu) ** 2 * p).sum()
                corr = ((ii - mu) * (jj - mu) * p).sum() / var if var > 1e-12 else 1.0
                feats.append((mu, var, corr))
            if feats:
                out[:, r, c] = np.mean(feats, axis=0)
    return out


def test_glcm_constant_image_has_zero_variance():
    img = np.full((12, 15), -17.3)
    out = polsar.glcm_features(img, window=5, levels=16, vmin=-30, vmax=0)
    level = np.floor((-17.3 + 30) / 30 * 16)
    np.testing.assert_array_equal(out[0], level)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[2], 1.0)


def test_glcm_checkerboard_matches_brute_force():
    r, c = np.indices((11, 13))
    img = np.where((r + c) % 2 == 0, -25.0, -5.0)
    out = polsar.glcm_features(img, window=5, levels=8, vmin=-30, vmax=0)
    np.testing.assert_allclose(out, glcm_brute_force(img, 5, 8, -30, 0), atol=1e-12)
    # interior: horizontal/vertical neighbours always differ (corr -1), diagonal ones always equal (corr +1)
    np.testing.assert_allclose(out[2, 5, 6], 0.0, atol=1e-12)


def test_glcm_random_image_with_nodata_matches_brute_force():
    rng = np.random.default_rng(7)
    img = rng.normal(-15, 6, size=(13, 11))
    img[3, 4] = np.nan
    img[0:2, 9:] = np.nan
    out = polsar.glcm_features(img, window=5, levels=16, vmin=-30, vmax=0)
    ref = glcm_brute_force(img, 5, 16, -30, 0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, atol=1e-10)
    out3 = polsar.glcm_features(img, window=3, levels=32, vmin=-30, vmax=0, names=["glcm_correlation"])
    np.testing.assert_allclose(out3[0], glcm_brute_force(img, 3, 32, -30, 0)[2], atol=1e-10)


def test_glcm_rejects_bad_arguments():
    img = np.zeros((5, 5))
    with pytest.raises(ValueError, match="odd"):
        polsar.glcm_features(img, window=4, levels=8)
    with pytest.raises(ValueError, match="levels"):
        polsar.glcm_features(img, window=3, levels=1)
    with pytest.raises(ValueError, match="glcm_contrast"):
        polsar.glcm_features(img, window=3, levels=8, names=["glcm_contrast"])


@pytest.mark.parametrize("real, cplx", [(np.float64, np.complex128), (np.float32, np.complex128),
                                        (np.float32, np.complex64)])
def test_numba_features_agree_with_numpy_reference(real, cplx):
    c11, c22, c12 = random_c2(3000, seed=7)
    c12[:20] = 0.0  # diagonal: degenerate eigenvectors, pol = 0 possible
    c12[20] = np.sqrt(c11[20] * c22[20])  # rank one
    c11[30:35] = 0.0
    c22[35:40] = np.nan
    c12[40:45] = np.inf
    c11[45:50] = -1.0
    c11, c22, c12 = c11.astype(real).reshape(60, 50), c22.astype(real).reshape(60, 50), c12.astype(cplx).reshape(60, 50)
    for names in (list(polsar.FEATURES), ["rvi", "alpha", "vv_db"], ["entropy"], ["mchi_v", "dprvi"], []):
        got = polsar.compute_features(c11, c22, c12, names)
        want = polsar.compute_features_reference(c11, c22, c12, names)
        assert got.shape == want.shape == (len(names), 60, 50) and got.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_vectorised_ln_and_atan2_match_libm():
    rng = np.random.default_rng(2)
    x = np.concatenate([np.exp(rng.uniform(-740, 709, 20000)), rng.uniform(0.0, 1.0, 20000),
                        [5e-324, 1e-310, 2.2250738585072014e-308, 0.5, 1.0, 2.0, np.sqrt(2.0), 1.7976931348623157e308]])
    got = np.array([polsar._ln(v) for v in x])
    np.testing.assert_allclose(got, np.log(x), rtol=5e-16, atol=0)
    assert np.isfinite(polsar._ln(0.0))
    y = np.abs(rng.normal(size=20000)) * np.exp(rng.uniform(-20, 20, 20000))
    xs = rng.normal(size=20000) * np.exp(rng.uniform(-20, 20, 20000))
    y[:6], xs[:6] = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, -1.0, 0.0, np.tan(np.pi / 8), -1.0]
    got = np.array([polsar._atan2(a, b) for a, b in zip(y, xs)])
    np.testing.assert_allclose(got, np.arctan2(y, xs), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [1, 1023, 1025, 2049])
def test_compute_features_independent_of_block_and_thread_split(n):
    import numba

    c11, c22, c12 = random_c2(n, seed=4)
    c11[::11] = np.nan
    names = list(polsar.FEATURES)
    want = polsar.compute_features_reference(c11, c22, c12, names)
    before = numba.get_num_threads()
    try:
        for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(threads)
            got = polsar.compute_features(c11, c22, c12, names)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        numba.set_num_threads(before)
