"""Improved Dense Trajectories: extractor, tracking, pyramid flow, camera motion, descriptors, the stage."""
