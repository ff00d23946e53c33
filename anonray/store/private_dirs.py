"""Folders that hold personal data (staged inputs, a URI output's run state, Ray's scratch, regions): mode 0700."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from anonray.layout import PRIVATE_DIR_MODE


def new_private_dir(prefix: str, parent: Path | str | None = None, create_parent: bool = False) -> Path:
    """A fresh folder under ``parent`` (None: the system temp folder; ``create_parent``: made if missing), 0700."""
    if parent and create_parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mkdtemp creates it 0700 atomically, whatever the umask
    os.chmod(path, PRIVATE_DIR_MODE)  # stated for the reader and odd platforms
    return path


def ensure_private_dir(path: Path) -> Path:
    """``path`` and its missing parents; a folder made here is 0700 (an existing one is left as it is)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    return path
