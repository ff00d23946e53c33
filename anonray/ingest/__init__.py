"""Ingest: find the input files, hash and probe each one, cut it into GOP-aligned segments (PyAV, no Ray)."""
