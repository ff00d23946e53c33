"""Decode: one segment frame-exact, downscaled and upright for detection (PyAV, no Ray)."""
