"""Streamed sha256 of files (inputs, outputs, model weights)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 4 << 20, progress: Callable[[], None] | None = None) -> str:
    """sha256 of a file's bytes, read in chunks (never the whole file in memory); progress is called after each
    chunk read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if progress is not None:
                progress()
    return digest.hexdigest()
