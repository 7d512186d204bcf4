"""cropflow: crop-type maps from Sentinel-1 and Sentinel-2 with a reproducible Snakemake workflow."""

__version__ = "0.1.0"
