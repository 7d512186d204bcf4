import numpy as np
import pandas as pd
import pytest

from cropflow import selection
from cropflow.models.rf import flatten_inputs
from cropflow.sampleset import SampleSet

BANDS = ["red", "noise1", "swir", "red_copy", "noise2"]
CLASS_IDS = [11, 12, 13]


def synthetic(seed: int = 0, n_per_class: int = 150, t: int = 6) -> SampleSet:
    """Two class-bearing bands (red: class 12 has a stronger season; swir: class 13 is brighter), a near copy
    of red (rho about 0.99) and two noise bands, all but the noise sharing one seasonal curve."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASS_IDS)), n_per_class)
    n = y.size
    season = np.sin(np.linspace(0, np.pi, t))
    red = 2 * season + 1.5 * season * (y[:, None] == 1) + rng.normal(0, 0.5, (n, t))
    swir = 3 * season + 1.5 * (y[:, None] == 2) + rng.normal(0, 0.5, (n, t))
    red_copy = red + rng.normal(0, 0.15, (n, t))
    noise1 = rng.normal(0, 1, (n, t))
    noise2 = rng.gamma(2.0, 1.0, (n, t))
    x = np.stack([red, noise1, swir, red_copy, noise2], axis=2).astype(np.float32)
    return SampleSet(x={"s2": x}, y=np.asarray(CLASS_IDS)[y], parcel_id=np.arange(n), tile_index=np.zeros(n, int),
                     inputs={"s2": {"bands": BANDS, "times": [f"2023-{m + 4:02d}-01" for m in range(t)]}},
                     class_ids=CLASS_IDS)


@pytest.fixture(scope="module")
def samples() -> SampleSet:
    return synthetic()


@pytest.fixture(scope="module")
def result(samples) -> dict:
    return selection.select_bands(samples, seed=3, threshold=0.9, max_iter=40)


def test_boruta_rejects_noise_and_confirms_informative_bands(result):
    relevance = pd.DataFrame(result["relevance"]).set_index("band")
    assert list(relevance.columns[:4]) == ["input", "decision", "rank", "mean_importance"]
    assert relevance.loc[["noise1", "noise2"], "decision"].tolist() == ["rejected", "rejected"]
    assert relevance.loc[["red", "swir", "red_copy"], "decision"].tolist() == ["confirmed"] * 3
    assert (relevance.loc[["red", "swir"], "rank"] == 1).all()
    assert relevance.loc["noise1", "rank"] > 1 and relevance.loc["noise2", "rank"] > 1
    assert relevance.loc["red", "mean_importance"] > relevance.loc["noise1", "mean_importance"]
    assert relevance.loc["swir", "confirmed_times"]  # a band is relevant through its confirmed time steps


def test_duplicate_band_dropped_naming_the_band_it_duplicates(result):
    assert result["selected"] == {"s2": ["red", "swir"]}
    assert set(result["dropped"]) == {"s2/noise1", "s2/noise2", "s2/red_copy"}
    assert result["dropped"]["s2/noise1"].startswith("Boruta: rejected")
    assert result["dropped"]["s2/red_copy"].startswith("redundant with s2/red ")
    rho = result["correlation"]["s2/red"]["s2/red_copy"]
    assert 0.97 < rho < 0.999
    assert abs(result["correlation"]["s2/red"]["s2/swir"]) < 0.9


def test_selection_is_deterministic_for_a_seed(samples, result):
    again = selection.select_bands(samples, seed=3, threshold=0.9, max_iter=40)
    assert again["selected"] == result["selected"] and again["dropped"] == result["dropped"]
    pd.testing.assert_frame_equal(pd.DataFrame(again["relevance"]), pd.DataFrame(result["relevance"]))


def test_spearman_redundancy_keeps_bands_in_the_given_order(samples):
    kept, corr = selection.spearman_redundancy(samples, ["red_copy", "s2/red", ("s2", "swir")], threshold=0.9)
    assert kept == [("s2", "red_copy"), ("s2", "swir")]  # red_copy came first, so red is the redundant one
    assert list(corr.index) == ["s2/red_copy", "s2/red", "s2/swir"]
    np.testing.assert_allclose(np.diag(corr.to_numpy()), 1.0)
    np.testing.assert_allclose(corr.to_numpy(), corr.to_numpy().T)
    kept_all, _ = selection.spearman_redundancy(samples, ["red", "red_copy"], threshold=0.999)
    assert kept_all == [("s2", "red"), ("s2", "red_copy")]


def test_pooled_spearman_matches_pandas(samples):
    corr = selection.band_correlation(samples, BANDS)
    pooled = pd.DataFrame(samples.x["s2"].reshape(-1, len(BANDS)), columns=[f"s2/{b}" for b in BANDS])
    np.testing.assert_allclose(corr.to_numpy(), pooled.corr(method="spearman").to_numpy(), atol=1e-10)


def test_band_correlation_across_inputs_with_different_time_steps():
    rng = np.random.default_rng(1)
    n = 200
    a = rng.normal(size=(n, 6, 2))
    a[:, :, 1][:5, 0] = np.nan  # gaps are left out pairwise
    b = np.repeat(a[:, :, :1].mean(axis=1, keepdims=True), 3, axis=1) + rng.normal(0, 0.01, (n, 3, 1))
    s = SampleSet(x={"s1": a, "s2": b}, y=np.zeros(n, int), parcel_id=np.arange(n), tile_index=np.zeros(n, int),
                  inputs={"s1": {"bands": ["VV", "VH"]}, "s2": {"bands": ["VV"]}}, class_ids=[0])
    with pytest.raises(ValueError, match="2 inputs"):
        selection.band_correlation(s, ["VV"])
    corr = selection.band_correlation(s, ["s1/VV", "s1/VH", "s2/VV"])
    assert np.isfinite(corr.to_numpy()).all()
    assert corr.at["s1/VV", "s2/VV"] > 0.95  # per-sample temporal means agree
    assert abs(corr.at["s1/VH", "s2/VV"]) < 0.3


def test_feature_index_follows_rf_flattening():
    x = {"b": np.zeros((1, 2, 3)), "a": np.zeros((1, 4, 2))}
    for name, arr in x.items():
        t, c = arr.shape[1:]
        arr[0] = np.arange(t)[:, None] * 10 + np.arange(c)[None, :] + (100 if name == "b" else 0)
    s = SampleSet(x=x, y=np.zeros(1, int), parcel_id=np.zeros(1), tile_index=np.zeros(1, int),
                  inputs={"a": {"bands": ["p", "q"]}, "b": {}}, class_ids=[0])
    index = selection.feature_index(s)
    flat = flatten_inputs(x)[0]
    expected = [(100 if r.input == "b" else 0) + 10 * r.time_index + (["p", "q"].index(r.band) if r.input == "a"
                                                                       else int(r.band[1:]))
                for r in index.itertuples()]
    np.testing.assert_array_equal(flat, expected)
    assert index["band"].tolist()[-3:] == ["c0", "c1", "c2"]


def test_bad_arguments(samples):
    with pytest.raises(ValueError, match="threshold"):
        selection.spearman_redundancy(samples, ["red"], threshold=1.5)
    with pytest.raises(ValueError, match="not in the samples"):
        selection.spearman_redundancy(samples, ["s2/nir"])


def test_plot_correlation_writes_png_atomically(samples, tmp_path):
    corr = selection.band_correlation(samples, BANDS)
    out = selection.plot_correlation(corr, tmp_path / "figs" / "correlation.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["correlation.png"]
