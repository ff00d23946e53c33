"""deface 1.5.0 (the open-source peer the benchmarks compare against), installed in a venv of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFACE_VERSION = "1.5.0"


def default_cache() -> Path:
    """Where the deface venv lives: ``$ANONRAY_CACHE`` or ``~/.cache/anonray``."""
    return Path(os.environ.get("ANONRAY_CACHE", Path.home() / ".cache" / "anonray"))


def deface_venv(cache: Path) -> Path:
    """deface 1.5.0 with onnxruntime in a venv of its own (its pins must not touch ours)."""
    venv = cache / f"deface-{DEFACE_VERSION}-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "deface").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"deface=={DEFACE_VERSION}", "onnxruntime"],
                       check=True)
    return venv / "bin" / "deface"


def deface_input(clip: Path, scratch: Path) -> Path:
    """The path to hand deface for ``clip``. deface skips files by guessed MIME type and guesses ``.ts`` as a
    Qt translation file: MPEG-TS clips go to it through a ``.mpg`` link in ``scratch`` (same bytes)."""
    if clip.suffix != ".ts":
        return clip
    link = scratch / f"{clip.stem}.input.mpg"
    link.unlink(missing_ok=True)
    link.symlink_to(clip.resolve())
    return link
