"""The DAG at scale (bench/dag_scale.py's province, smaller): the per-tile plan, and one new Sentinel-1 scene reruns
only its own jobs and the ones it affects after every output of the plan is done."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from dag_scale import (add_s1_scene, dry_run, expected_rerun, mark_done, tiles_touched,  # noqa: E402
                       write_province)

pytestmark = pytest.mark.workflow


def test_new_scene_in_a_province_reruns_only_its_jobs(tmp_path):
    """In blocks of 2 x 2 tiles: the new scene restacks and resamples the blocks holding the tiles it touches."""
    province = write_province(tmp_path / "province", tiles_x=15, tiles_y=14, passes=4, slices=2, s2_dates=2,
                              block_tiles=2)
    plan = dry_run(province.workdir)
    models = plan.jobs["train"]
    # every tile is stacked, labelled and sampled in one of 8 x 7 blocks and mapped alone; 2 tracks x 4 passes x 2
    # slices, 2 pairs per track
    assert province.n_tiles == 210
    assert plan.jobs["stack"] == plan.jobs["labels_tile"] == plan.jobs["samples_tile"] == 8 * 7
    assert plan.jobs["infer"] == models * province.n_tiles
    assert plan.jobs["s1_import_scene"] == 16 and plan.jobs["s1_assemble"] == 8 and plan.jobs["s1_import_pair"] == 4
    # the placeholder L2A products are inventoried: 2 dates x 4 MGRS tiles, one layer per date
    assert plan.jobs["s2_ingest"] == 8 and plan.jobs["s2_layer"] == 2
    mark_done(province.workdir, plan.outputs)
    assert dry_run(province.workdir).jobs == {}
    scene, bounds = add_s1_scene(province)
    touched = tiles_touched(province, bounds)
    assert 0 < len(touched) < province.n_tiles, "the new slice covers part of the province"
    expected = expected_rerun(province.tile_ids, touched, province.block_tiles, models)
    assert len(touched) / 4 <= expected["samples_tile"] < 8 * 7  # the blocks holding the touched tiles
    expected = {k: v for k, v in expected.items() if k in plan.jobs}
    assert dry_run(province.workdir).jobs == expected, scene
