"""Synthetic Sentinel-1 and Sentinel-2 inputs in the real product formats, for tests and the demo."""

from cropflow.simulate.parcels import LandscapeParams
from cropflow.simulate.scene import simulate

__all__ = ["LandscapeParams", "simulate"]
