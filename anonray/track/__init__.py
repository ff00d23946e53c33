"""Tracking: per-video grouping of the streamed detections, scene cuts, tracks and the mask plan (no Ray)."""
