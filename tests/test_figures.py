"""Report figures (cropflow.figures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from cropflow.figures import nice_length, quicklook, temporal_profiles
from cropflow.grid import ProjectGrid
from cropflow.legend import Legend
from cropflow.raster import write_raster
from cropflow.sampleset import SampleSet

LEGEND = Path(__file__).parents[1] / "resources" / "legend.yaml"


def sample_set(n_per_class: int = 60) -> SampleSet:
    """Two inputs (separate mode) with class-dependent seasonal curves."""
    rng = np.random.default_rng(0)
    class_ids = [1, 2, 5]
    y = np.repeat(class_ids, n_per_class)
    t_s1, t_s2 = 8, 3
    phase = {1: 0.0, 2: 1.0, 5: 2.0}
    s1 = np.stack([np.sin(np.linspace(0, 3, t_s1) + phase[c]) for c in y])[:, :, None] * [1.0, 0.5]
    s1 = (s1 + rng.normal(0, 0.1, s1.shape)).astype(np.float32)
    s2 = rng.random((y.size, t_s2, 3)).astype(np.float32) * y[:, None, None]
    s2[0, 1, 2] = np.nan  # a gap must not break the statistics
    inputs = {
        "s1": {"bands": ["vv_db", "vh_db"], "times": [f"2023-05-{d:02d}" for d in range(6, 6 + 3 * t_s1, 3)]},
        "s2": {"bands": ["B04", "B8A", "B11"], "times": ["2023-06-01", "2023-07-15", "2023-08-20"]},
    }
    return SampleSet(x={"s1": s1, "s2": s2}, y=y, parcel_id=np.arange(y.size), tile_index=np.zeros(y.size),
                     inputs=inputs, class_ids=class_ids)


def test_temporal_profiles_png_has_a_panel_per_band_and_class_colours(tmp_path):
    out = tmp_path / "report" / "profiles.png"
    temporal_profiles(sample_set(), LEGEND, out)
    assert out.is_file() and out.stat().st_size > 10_000
    img = matplotlib.image.imread(out)
    assert img.shape[1] > img.shape[0]  # three band columns, two input rows
    rgb = np.round(img[..., :3] * 255).astype(int).reshape(-1, 3)
    legend = Legend.load(str(LEGEND))
    for cid in (1, 2, 5):  # each class is drawn in its legend colour
        colour = np.array(legend.colormap()[cid][:3])
        assert (np.abs(rgb - colour).max(axis=1) <= 3).any(), f"class {cid} colour not in the figure"
    assert not (np.abs(rgb - np.array(legend.colormap()[6][:3])).max(axis=1) <= 3).any()  # water: no samples


def test_temporal_profiles_subsamples_large_classes(tmp_path):
    out = tmp_path / "profiles.png"
    temporal_profiles(sample_set(200), LEGEND, out, max_samples=50)
    assert out.stat().st_size > 10_000


def test_quicklook_png_decimated_in_legend_colours(tmp_path):
    grid = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 340000.0, 5340000.0))  # 2000 x 1000 px
    classes = np.zeros(grid.shape, dtype=np.uint8)
    classes[:, :1000] = 1
    classes[:500, 1000:] = 6
    path = tmp_path / "mosaic.tif"
    legend = Legend.load(str(LEGEND))
    write_raster(path, classes, grid, nodata=0, colormap=legend.colormap(), cog=True)
    out = tmp_path / "quicklook.png"
    quicklook(path, legend, out, max_size=400)
    assert out.is_file() and out.stat().st_size > 5_000
    rgb = np.round(matplotlib.image.imread(out)[..., :3] * 255).astype(int).reshape(-1, 3)
    for cid in (1, 6):
        assert (np.abs(rgb - np.array(legend.colormap()[cid][:3])).max(axis=1) <= 3).sum() > 500


def test_quicklook_missing_map_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.tif"):
        quicklook(tmp_path / "nothere.tif", LEGEND, tmp_path / "q.png")


@pytest.mark.parametrize("span, expected", [(20.0, 2.0), (7.0, 1.0), (120.0, 20.0), (3.0, 0.5)])
def test_nice_length(span, expected):
    assert nice_length(span) == pytest.approx(expected)


def test_uncertainty_quicklook_has_a_panel_per_band(tmp_path):
    from cropflow.figures import uncertainty_quicklook

    grid = ProjectGrid("EPSG:32652", 10.0, (320000.0, 5330000.0, 330000.0, 5335000.0))
    values = np.broadcast_to(np.linspace(0, 254, grid.width).astype(np.uint8), (3, *grid.shape)).copy()
    values[:, :100] = 255
    path = tmp_path / "mosaic_uncertainty.tif"
    write_raster(path, values, grid, nodata=255, band_names=["confidence", "margin", "entropy"], cog=True)
    out = tmp_path / "uncertainty.png"
    uncertainty_quicklook(path, out, max_size=200)
    image = matplotlib.image.imread(out)
    assert image.shape[1] > 2 * image.shape[0], "three panels side by side"
    with pytest.raises(FileNotFoundError, match="nothere.tif"):
        uncertainty_quicklook(tmp_path / "nothere.tif", tmp_path / "u.png")
