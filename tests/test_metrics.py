import json

import numpy as np
import pytest

from cropflow import metrics
from cropflow.sampleset import SampleSet
from cropflow.training import train

# Reference/prediction pairs of a 10-sample confusion over legend ids 1, 2, 3 (4 never occurs):
#            predicted 1  2  3  4
# reference 1         3  1  0  0
# reference 2         0  2  1  0
# reference 3         1  0  2  0
# reference 4         0  0  0  0
Y_TRUE = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 3])
Y_PRED = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 1])
IDS = [1, 2, 3, 4]
NAMES = ["maize", "soybean", "wheat", "other_crops"]


def test_hand_computed_scores():
    m = metrics.evaluate(Y_TRUE, Y_PRED, IDS, NAMES)
    assert m["n"] == 10
    assert m["confusion"] == [[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert m["oa"] == pytest.approx(0.7)
    # p_o = 0.7, p_e = (4*4 + 3*3 + 3*3) / 100 = 0.34
    assert m["kappa"] == pytest.approx((0.7 - 0.34) / (1 - 0.34))
    maize, soy = m["per_class"]["maize"], m["per_class"]["soybean"]
    assert maize["precision"] == pytest.approx(0.75) and maize["recall"] == pytest.approx(0.75)
    assert maize["f1"] == pytest.approx(0.75) and maize["iou"] == pytest.approx(3 / 5) and maize["support"] == 4
    assert soy["precision"] == pytest.approx(2 / 3) and soy["f1"] == pytest.approx(2 / 3)
    assert soy["iou"] == pytest.approx(2 / 4) and soy["support"] == 3
    assert m["mean_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert m["miou"] == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    np.testing.assert_allclose(m["confusion_norm"][0], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(m["confusion_norm"][2], [1 / 3, 0, 2 / 3, 0])


def test_absent_class_is_nan_and_not_averaged(tmp_path):
    m = metrics.evaluate(Y_TRUE, Y_PRED, IDS, NAMES)
    other = m["per_class"]["other_crops"]
    assert other["support"] == 0
    assert all(np.isnan(other[k]) for k in ("precision", "recall", "f1", "iou"))
    assert all(np.isnan(v) for v in m["confusion_norm"][3])
    path = metrics.write_metrics(m, tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["per_class"]["other_crops"]["f1"] is None and doc["confusion_norm"][3] == [None] * 4
    assert doc["oa"] == pytest.approx(0.7)


def test_class_predicted_but_absent_from_reference_excluded_from_means():
    y_pred = Y_PRED.copy()
    y_pred[0] = 4  # one maize sample predicted as other_crops
    m = metrics.evaluate(Y_TRUE, y_pred, IDS, NAMES)
    other = m["per_class"]["other_crops"]
    assert other["precision"] == 0.0 and other["f1"] == 0.0 and other["iou"] == 0.0 and other["support"] == 0
    maize_f1 = 2 * 2 / (2 * 2 + 1 + 2)  # TP 2, FP 1, FN 2
    assert m["mean_f1"] == pytest.approx((maize_f1 + 2 / 3 + 2 / 3) / 3)
    assert m["miou"] == pytest.approx((2 / 5 + 0.5 + 0.5) / 3)


def test_unknown_ids_and_length_mismatch():
    with pytest.raises(ValueError, match=r"reference class ids \[9\]"):
        metrics.evaluate(np.array([1, 9]), np.array([1, 1]), IDS, NAMES)
    with pytest.raises(ValueError, match="predictions"):
        metrics.evaluate(np.array([1, 2]), np.array([1]), IDS, NAMES)


def test_plot_written(tmp_path):
    m = metrics.evaluate(Y_TRUE, Y_PRED, IDS, NAMES)
    png = metrics.plot_confusion(m, tmp_path / "plots" / "confusion.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list((tmp_path / "plots").glob(".*part"))


def _samples(n_per_class, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 2, 3], n_per_class)
    profile = {1: np.linspace(0, 1, 6), 2: np.linspace(1, 0, 6), 3: np.full(6, 0.5)}
    x = np.stack([profile[c] for c in y])[:, :, None] + rng.normal(0, 0.05, (y.size, 6, 2))
    inputs = {"features": {"bands": ["vv_db", "B04"], "times": [f"2023-06-{d:02d}" for d in range(1, 7)]}}
    return SampleSet(x={"features": x.astype(np.float32)}, y=y, parcel_id=np.arange(y.size),
                     tile_index=np.zeros(y.size, int), inputs=inputs, class_ids=IDS, class_names=NAMES)


def test_evaluate_model_writes_json_and_png(tmp_path):
    bundle = train("rf", _samples(20, 0), _samples(5, 1), {"n_estimators": 20, "n_jobs": 1}, 3, tmp_path / "rf")
    test = _samples(10, 2)
    test.x["features"][0] = np.nan  # no observation at all: left out, counted
    m = metrics.evaluate_model(bundle, test, tmp_path / "eval" / "rf.json", tmp_path / "eval" / "rf.png")
    doc = json.loads((tmp_path / "eval" / "rf.json").read_text())
    assert doc["n"] == 29 and doc["n_unpredicted"] == 1 and doc["model"] == "rf"
    assert doc["oa"] == pytest.approx(m["oa"]) and m["oa"] > 0.9
    assert doc["per_class"]["other_crops"]["support"] == 0 and doc["per_class"]["other_crops"]["iou"] is None
    assert (tmp_path / "eval" / "rf.png").stat().st_size > 5000
