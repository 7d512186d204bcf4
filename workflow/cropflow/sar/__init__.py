"""Native Sentinel-1 SLC processing engine: reading, TOPS deramping, coherence, speckle filtering, geometry."""
