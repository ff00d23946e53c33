"""Opening media files for reading the same way with every supported PyAV version."""

from __future__ import annotations

from pathlib import Path

import av

_TAKES_METADATA_ERRORS = int(av.__version__.split(".")[0]) < 19
"""PyAV 18 takes ``metadata_errors`` (damaged tags are not UTF-8); PyAV 19 dropped the argument."""


def open_input(path: str | Path) -> av.container.InputContainer:
    """``av.open(path, "r")``, telling PyAV versions that decode tags strictly to replace undecodable bytes."""
    if _TAKES_METADATA_ERRORS:
        return av.open(str(path), "r", metadata_errors="replace")
    return av.open(str(path), "r")
