"""The library API: any registered model on plain in-memory arrays."""

from __future__ import annotations

import numpy as np
import pytest

from cropflow.classifier import Classifier

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def data(n: int, seed: int, patch: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.choice([10, 20, 30], n)
    x = rng.normal(size=(n, 6, 3)).astype(np.float32)
    x[:, 2, 1] += (y / 10 - 2) * 3  # the class sits in band 1 at time step 2
    if patch:
        x = np.broadcast_to(x[:, None, None], (n, 5, 5, 6, 3)).copy()
        x += rng.normal(scale=0.1, size=x.shape).astype(np.float32)
    return x, y


@pytest.mark.parametrize("model,params", [("rf", {"n_estimators": 30, "n_jobs": 1}),
                                          ("tempcnn", {"filters": 8, "dense": 16, "epochs": 6, "batch_size": 32,
                                                       "learning_rate": 0.01, "patience": 3})])
def test_fit_predict_save_load_on_arrays(model, params, tmp_path):
    (x, y), (xv, yv), (xt, yt) = data(300, 0), data(90, 1), data(90, 2)
    clf = Classifier(model, params, seed=0).fit(x, y, xv, yv)
    assert clf.classes_ == [10, 20, 30]
    proba = clf.predict_proba(xt)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.mean(clf.predict(xt) == yt) > 0.8
    clf.save(tmp_path / "m")
    np.testing.assert_array_equal(Classifier.load(tmp_path / "m").predict_proba(xt), proba)


def test_patch_model_and_named_inputs():
    (x, y), (xv, yv) = data(120, 0, patch=True), data(40, 1, patch=True)
    clf = Classifier("cnn3d", {"epochs": 2, "batch_size": 32}, seed=0).fit({"s2": x}, y, {"s2": xv}, yv)
    assert clf.predict_proba({"s2": xv}).shape == (40, 3)


def test_bad_arrays_are_named():
    x, y = data(50, 0)
    with pytest.raises(ValueError, match=r"input 'x' must be \(N, T, C\)"):
        Classifier("rf").fit(x[:, 0], y, x, y)
    with pytest.raises(ValueError, match="at least 2"):
        Classifier("rf").fit(x, np.zeros(50), x, np.zeros(50))
    with pytest.raises(ValueError, match="unknown model"):
        Classifier("resnet")
