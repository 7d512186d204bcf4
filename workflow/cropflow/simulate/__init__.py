"""Synthetic Sentinel-1 and Sentinel-2 inputs in the real product formats, for tests and the demo."""
