"""Opening media files for reading the same way with every supported PyAV version."""

from __future__ import annotations

from pathlib import Path

import av

from anonray.store import storage

_TAKES_METADATA_ERRORS = int(av.__version__.split(".")[0]) < 19
"""PyAV 18 takes ``metadata_errors`` (damaged tags are not UTF-8); PyAV 19 dropped the argument."""


def open_input(path: str | Path, container: str | None = None) -> av.container.InputContainer:
    """``av.open(path, "r")``, telling PyAV versions that decode tags strictly to replace undecodable bytes.

    A URI (storage.py) is read by ranges, in memory; ``container`` (``VideoInfo.container``, FFmpeg's names of
    the format) then tells FFmpeg the format that probing by file name would have found.
    """
    source: object = str(path)
    options: dict = {"metadata_errors": "replace"} if _TAKES_METADATA_ERRORS else {}
    if storage.is_uri(path):
        source = storage.open_ranged(str(path))
        options.update(buffer_size=storage.RANGE_READ_BYTES, format=container.split(",")[0] if container else None)
    return av.open(source, "r", **options)
