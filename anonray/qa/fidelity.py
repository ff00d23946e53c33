"""Fidelity outside the masks (``qa.psnr_frames``): the luma PSNR of an output against its source at the
source's bit depth, over the pixels no mask region covers (the regions as masked: margins included), pooled over
a few frames spread over the file (videos.psnr_outside_masks; under ``qa.min_psnr_outside_masks`` the output is
flagged low_fidelity). It measures what the encode did to the picture people keep: the masks themselves are
meant to differ.

The output's frames come from QA's decode of the whole output (checks.inspect_output, with the loop filter on
so they are the frames a player shows); the source's from the render's mask hook as it decodes them
(render/video.py), and where it never saw a frame (GOPs passthrough copied) from ``source_luma``, which decodes
only the segments that hold one, each up to its last sampled frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from anonray.decode.segment import segment_frames
from anonray.render.mask import luma_samples, rasterize_regions
from anonray.types import MaskPlan, Segment, VideoInfo

FLAG_LOW_FIDELITY = "low_fidelity"
MAX_PSNR_DB = 100.0
"""Reported where the sampled pixels are identical (the PSNR is infinite)."""


def sampled_indices(frame_count: int, count: int) -> list[int]:
    """``count`` presentation indices spread evenly over the file, first and last frame included."""
    if frame_count <= 0 or count <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, frame_count - 1, min(count, frame_count))})


def source_luma(source: Path | str, info: VideoInfo, segments: Sequence[Segment],
                indices: Sequence[int], pixel_format: str | None = None) -> dict[int, np.ndarray]:
    """The source's luma at the given presentation indices, decoding each segment that holds one only up to its
    last, in ``pixel_format`` (the output's, so both sides have one bit depth; default: as mask.luma_samples).
    Indices whose frame does not decode are left out."""
    wanted = set(indices)
    out: dict[int, np.ndarray] = {}
    for segment in segments:
        first, end = segment.first_frame_index, segment.first_frame_index + segment.frame_count
        last = max((i for i in wanted if first <= i < end), default=None)
        if last is None:
            continue
        for index, frame in enumerate(segment_frames(source, info, segment), start=first):
            if index in wanted:
                out[index] = luma_samples(frame, pixel_format)
            if index >= last:
                break
    return out


def psnr_outside_masks(source: Mapping[int, np.ndarray], output: Mapping[int, np.ndarray], plan: MaskPlan,
                       depth: int, output_depth: int | None = None) -> float | None:
    """PSNR (dB) of ``output`` against ``source`` luma over the pixels outside every mask region, pooled over
    the frames both hold; None where no such pixel was compared. ``depth``: the bits per sample of the
    ``source`` arrays; ``output_depth`` the output's where it differs (its samples are scaled to ``depth``)."""
    rows_of = plan.regions_by_frame()
    squared, pixels = 0.0, 0
    for index in sorted(source.keys() & output.keys()):
        src, out = source[index].astype(np.float64), output[index].astype(np.float64)
        if src.shape != out.shape:
            continue
        if output_depth is not None and output_depth != depth:
            out *= 2.0 ** (depth - output_depth)
        rows = rows_of.get(index)
        keep = np.ones(src.shape, bool) if rows is None else ~rasterize_regions(
            plan.xyxy[rows], plan.shape[rows], src.shape[1], src.shape[0])
        diff = (src - out)[keep]
        squared += float(np.dot(diff, diff))
        pixels += diff.size
    if not pixels:
        return None
    mse = squared / pixels
    if mse == 0:
        return MAX_PSNR_DB
    return min(MAX_PSNR_DB, float(10 * np.log10(((1 << depth) - 1) ** 2 / mse)))
