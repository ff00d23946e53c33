"""Test support: synthetic sample footage (also the demo's), fault behaviours, videos without detectors."""
