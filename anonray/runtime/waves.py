"""The detection waves of a run: consecutive input files, ingested together and then decoded and detected by
one Ray Data pipeline (whose decode and detection actors start once per wave, several seconds on a small node).

A wave closes at ``resources.wave_videos`` files or once it holds ``resources.wave_bytes`` of input, whichever
comes first, and always holds at least one file: an archive of short clips shares a few waves (measured on 200
one-second clips: 13 waves of 16 took 226 s, one wave 157 s), while large files get a wave each, so that the
first outputs of a large archive still appear early. No setting depends on the kind of archive.
"""

from __future__ import annotations

from collections.abc import Sequence

from anonray.ingest.discover import InputFile


def plan_waves(files: Sequence[InputFile], max_videos: int, max_bytes: int) -> list[list[InputFile]]:
    """``files`` cut, in order, into waves of at most ``max_videos`` files and ``max_bytes`` of input (a file
    larger than that is a wave of its own; a size of 0, unknown, counts as nothing)."""
    waves: list[list[InputFile]] = []
    current: list[InputFile] = []
    held = 0
    for file in files:
        if current and (len(current) >= max_videos or held + file.size_bytes > max_bytes):
            waves.append(current)
            current, held = [], 0
        current.append(file)
        held += file.size_bytes
    if current:
        waves.append(current)
    return waves
