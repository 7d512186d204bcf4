"""cropflow: crop-type maps from Sentinel-1 and Sentinel-2 with a reproducible Snakemake workflow."""

__version__ = "0.1.0"

import warnings

# Snakemake marks directory outputs (Zarr stores) with a timestamp file that zarr does not know.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")
