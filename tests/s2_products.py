"""Small simulated Sentinel-2 products shared by the L1C, Sen2Cor and cloud-mask tests."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cropflow.grid import ProjectGrid
from cropflow.s2 import BAND_IDS, L1C_RESOLUTION
from cropflow.simulate.sentinel2 import write_l1c, write_l2a

#: 36 x 36 px at 10 m, bounds on the 60 m lattice (Level-1C has 60 m bands)
GRID60 = ProjectGrid("EPSG:32652", 10.0, (319980.0, 5349600.0, 320340.0, 5349960.0))
SENSING = datetime(2023, 5, 12, 2, 35, 51, tzinfo=timezone.utc)
L1C_NAME = "S2A_MSIL1C_20230512T023551_N0509_R089_T52UCU_20230512T043551"


def toa(grid: ProjectGrid = GRID60, seed: int = 0) -> dict[str, np.ndarray]:
    """Random TOA reflectance of all 13 bands at their native resolutions on ``grid``."""
    rng = np.random.default_rng(seed)
    return {b: rng.uniform(0.02, 0.4, (grid.height * 10 // L1C_RESOLUTION[b], grid.width * 10 // L1C_RESOLUTION[b]))
            for b in BAND_IDS}


def make_l1c(folder: Path, grid: ProjectGrid = GRID60, bands=None, **kw) -> Path:
    args = dict(platform="S2A", sensing_time=SENSING, mgrs_tile="52UCU", relative_orbit=89, baseline="05.09",
                grid10=grid, toa=bands if bands is not None else toa(grid), cloud_cover=12.5)
    args.update(kw)
    return write_l1c(folder, **args)


def l2a_reflectance(grid: ProjectGrid = GRID60, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {b: rng.uniform(0.01, 0.6, grid.shape) for b in ("B02", "B03", "B04", "B08")}
    half = (grid.height // 2, grid.width // 2)
    out.update({b: rng.uniform(0.01, 0.6, half) for b in ("B05", "B06", "B07", "B8A", "B11", "B12")})
    return out


def make_l2a(folder: Path, grid: ProjectGrid = GRID60, scl=None, **kw) -> Path:
    args = dict(platform="S2A", sensing_time=SENSING, mgrs_tile="52UCU", relative_orbit=89, baseline="05.09",
                grid10=grid, reflectance=l2a_reflectance(grid),
                scl=scl if scl is not None else np.full((grid.height // 2, grid.width // 2), 4, np.uint8))
    args.update(kw)
    return write_l2a(folder, **args)
