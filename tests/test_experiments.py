"""Experiments on trained models: decision fusion, comparison table, in-season windows, transfer learning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_models import DOUBLE, TINY_CNN, TINY_RF, sampleset

from cropflow import training
from cropflow.compare import comparison_table, write_comparison
from cropflow.fusion import alpha_grid, fuse, fusion_report, search_alpha
from cropflow.inseason import inseason_table, truncate, window_steps, write_inseason
from cropflow.models import load_trained
from cropflow.transfer import finetune

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def test_fusion_takes_the_ensemble_where_confident_else_the_fallback():
    pe = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    pf = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(fuse(pe, pf, 0.6), [[0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
    # the ensemble is right when confident, wrong on the uncertain middle sample: alpha between 0.55 and 0.8 wins
    alpha, grid = search_alpha(pe, pf, np.array([0, 1, 1]), alpha_grid(0.5, 0.95, 0.05))
    assert 0.55 < alpha <= 0.8 and max(r["oa"] for r in grid) == 1.0
    assert alpha == min(r["alpha"] for r in grid if r["oa"] == 1.0)
    assert alpha_grid(0.5, 0.6, 0.05) == [0.5, 0.55, 0.6]


def test_fusion_report_and_comparison_table(tmp_path):
    train, val, test = sampleset(DOUBLE, 20, 0), sampleset(DOUBLE, 8, 1), sampleset(DOUBLE, 8, 2)
    for name, params in (("rf", TINY_RF), ("tempcnn", TINY_CNN)):
        training.train(name, train, val, params, seed=1, out_dir=tmp_path / name)
    m = fusion_report([tmp_path / "tempcnn"], tmp_path / "rf", val, test, alpha_grid(0.3, 0.9, 0.1),
                      tmp_path / "fusion.json", tmp_path / "fusion.png")
    assert m["members"] == ["tempcnn"] and m["fallback"] == "rf" and 0.3 <= m["alpha"] <= 0.9
    assert (tmp_path / "fusion.png").stat().st_size > 0
    saved = json.loads((tmp_path / "fusion.json").read_text())
    assert saved["alpha"] == m["alpha"] and len(saved["alpha_grid"]) == 7
    table = comparison_table([tmp_path / "fusion.json"])
    assert table.loc[0, "model"] == "tempcnn+rf" and {"oa", "kappa", "miou", "f1_maize"} <= set(table.columns)
    write_comparison(table, tmp_path / "cmp.csv", tmp_path / "cmp.png")
    assert pd.read_csv(tmp_path / "cmp.csv").shape[0] == 1


def test_inseason_windows_cut_every_input_and_train(tmp_path):
    train, val, test = sampleset(DOUBLE, 15, 0), sampleset(DOUBLE, 6, 1), sampleset(DOUBLE, 6, 2)
    assert window_steps(["2023-06-01", "2023-06-05", "2023-07-01"], "06-30").tolist() == [0, 1]
    cut = truncate(train, "06-05")
    assert cut.x["s1"].shape[1] == 5 and cut.x["s2"].shape[1] == 3 and len(cut.inputs["s1"]["times"]) == 5
    with pytest.raises(ValueError, match="no input has an observation"):
        truncate(train, "05-01")
    table = inseason_table("rf", train, val, test, ["06-03", "06-10"], TINY_RF, seed=0)
    assert table["end"].tolist() == ["06-03", "06-10"] and table["steps_s1"].tolist() == [3, 10]
    write_inseason(table, tmp_path / "in.csv", tmp_path / "in.png", "rf")
    assert (tmp_path / "in.png").stat().st_size > 0


def test_transfer_freezes_layers_keeps_normalisation_and_trains_on_the_new_site(tmp_path):
    old = sampleset(DOUBLE, 20, 0)
    training.train("tempcnn", old, sampleset(DOUBLE, 6, 1), TINY_CNN, seed=0, out_dir=tmp_path / "pre")
    new_train, new_val = sampleset(DOUBLE, 20, 5), sampleset(DOUBLE, 6, 6)
    out = finetune(tmp_path / "pre", new_train, new_val, {"learning_rate": 1e-3, "frozen_layers": 2, "epochs": 3},
                   seed=0, out_dir=tmp_path / "tuned")
    tuned, pre = load_trained(out), load_trained(tmp_path / "pre")
    assert tuned.meta["name"] == "tempcnn_finetuned" and len(tuned.meta["frozen"]) == 2
    assert tuned.normalisation["s1"].min.tolist() == pre.normalisation["s1"].min.tolist()
    frozen = tuned.meta["frozen"][0]
    np.testing.assert_array_equal(tuned.model.get_layer(frozen).get_weights()[0],
                                  pre.model.get_layer(frozen).get_weights()[0])
    with pytest.raises(ValueError, match="neural network"):
        training.train("rf", old, sampleset(DOUBLE, 6, 1), TINY_RF, seed=0, out_dir=tmp_path / "rf")
        finetune(tmp_path / "rf", new_train, new_val, {}, seed=0, out_dir=tmp_path / "x")


def test_band_selection_cuts_cube_inputs_for_samples_and_maps(tmp_path):
    import xarray as xr

    from cropflow.inference import model_bands
    from cropflow.samples import select_cube_bands
    from cropflow.selection import load_selection

    cube = {"s1": xr.DataArray(np.zeros((2, 3, 4, 4)), dims=("time", "band", "y", "x"),
                               coords={"band": ["vv_db", "vh_db", "alpha"]}),
            "s2": xr.DataArray(np.zeros((2, 2, 4, 4)), dims=("time", "band", "y", "x"), coords={"band": ["B04", "B11"]})}
    (tmp_path / "sel.json").write_text(json.dumps({"selected": {"s1": ["vh_db", "alpha"], "s2": []}}))
    chosen = select_cube_bands(cube, load_selection(tmp_path / "sel.json"), "cube.zarr")
    assert list(chosen) == ["s1"] and chosen["s1"]["band"].values.tolist() == ["vh_db", "alpha"]
    with pytest.raises(ValueError, match=r"no bands \['B8A'\]"):
        select_cube_bands(cube, {"s2": ["B8A"]}, "cube.zarr")
    with pytest.raises(FileNotFoundError, match="samples.bands"):
        load_selection(tmp_path / "missing.json")
    meta = {"inputs": {"s1": {"bands": ["vh_db", "alpha"]}, "s2": {"bands": ["B04", "B11"]}}}
    mapped = model_bands(cube, meta)
    assert mapped["s1"]["band"].values.tolist() == ["vh_db", "alpha"] and mapped["s2"].equals(cube["s2"])


def test_select_rule_writes_bands_relevance_and_figure(tmp_path):
    from cropflow.selection import write_selection

    rng = np.random.default_rng(0)
    train = sampleset({"s2": (4, 3)}, 40, 0)
    train.x["s2"][:, :, 2] = rng.normal(size=train.x["s2"][:, :, 2].shape)  # band b2 is noise
    result = write_selection(train, 0, 0.9, 20, tmp_path / "b.json", tmp_path / "r.csv", tmp_path / "c.png")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["selected"] == result["selected"] and "s2/b2" in doc["dropped"]
    assert (tmp_path / "c.png").stat().st_size > 0 and len(pd.read_csv(tmp_path / "r.csv")) == 3


def test_interpretation_figures_per_model_family(tmp_path):
    from cropflow.interpret import interpret_model

    train, val, test = sampleset(DOUBLE, 15, 0), sampleset(DOUBLE, 6, 1), sampleset(DOUBLE, 6, 2)
    for name, params in (("rf", TINY_RF), ("tempcnn", TINY_CNN)):
        training.train(name, train, val, params, seed=0, out_dir=tmp_path / name)
    rf_figs = interpret_model(tmp_path / "rf", test, tmp_path / "out_rf", max_samples=10)
    cnn_figs = interpret_model(tmp_path / "tempcnn", test, tmp_path / "out_cnn", max_samples=10)
    assert [p.name for p in rf_figs] == ["importances.png"] and [p.name for p in cnn_figs] == ["saliency.png"]
    assert all(p.stat().st_size > 0 for p in rf_figs + cnn_figs)
