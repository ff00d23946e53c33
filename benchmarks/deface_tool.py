"""deface 1.5.0 (the open-source peer the benchmarks compare against), installed in a venv of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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


def magenta_ellipse(path: Path, size: int = 256) -> Path:
    """An RGBA image: magenta inside the inscribed ellipse, transparent outside. Handed to deface as its
    replacement image, it paints exactly the ellipse its ``solid`` mode paints black, in magenta: black
    cannot be told from the dark pixels deface's re-encode moves in and out of near-black, which the scorers
    counted as many tiny mask blobs."""
    import cv2

    image = np.zeros((size, size, 4), np.uint8)
    cv2.ellipse(image, (size // 2, size // 2), (size // 2, size // 2), 0, 0, 360, (255, 0, 255, 255), -1)
    cv2.imwrite(str(path), image)  # OpenCV's BGRA: (255, 0, 255) is magenta either way
    return path


def run_deface(clips: list[Path], out: Path) -> float:
    """deface (default threshold, ellipses filled magenta) on each clip into ``out/<stem>.mp4``, skipping
    outputs that exist; returns the seconds spent."""
    deface = deface_venv(default_cache())
    out.mkdir(parents=True, exist_ok=True)
    fill = magenta_ellipse(out / "magenta_ellipse.png")
    started = time.perf_counter()
    for clip in clips:
        target = out / f"{clip.stem}.mp4"
        if not target.exists():
            subprocess.run([str(deface), str(deface_input(clip, out)), "-o", str(target), "--replacewith", "img",
                            "--replaceimg", str(fill)], check=True, capture_output=True)
            if not target.exists():
                raise RuntimeError(f"deface wrote no output for {clip.name}")
    return time.perf_counter() - started
