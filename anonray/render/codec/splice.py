"""Re-render only the GOPs of an existing output whose masks change (``anonray apply`` with encoder.passthrough).

The current output's GOPs (IDR periods) that hold no changed frame are copied from it bit-exact; the others are
rendered again from the **source** (the current output's pixels under a removed mask are gone), masked with the
new plan and encoded by a fresh encoder per run of GOPs, as passthrough.py does with a source's GOPs. Output
frame i is source frame i (outputs keep every frame in order); re-encoded frames keep the current output's pts.
Raises PassthroughUnsupported where it cannot run; the caller then renders the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from anonray.config import Config
from anonray.decode.segment import segment_frames
from anonray.render.codec.bitstream import FAMILY_OF_ENCODER
from anonray.render.codec.passthrough import (
    CopyPlan,
    PassthroughOutcome,
    PassthroughTranscoder,
    PassthroughUnsupported,
    ReencodedRun,
    SourceIndex,
    plan_copies,
    scan_source,
    static_reason,
)
from anonray.render.codec.settings import for_source
from anonray.render.codec.transcoder import FrameHook, TranscodeStats, run_job
from anonray.types import Segment, VideoInfo


@dataclass(frozen=True)
class SpliceSource:
    """What ``anonray apply`` splices into: the current output, and the frames whose masks change."""

    current: Path
    changed_frames: np.ndarray


class SourceFrames:
    """The source's frames by presentation index, read forward segment by segment (each seeks once)."""

    def __init__(self, path: Path, info: VideoInfo, segments: Sequence[Segment]) -> None:
        self.path, self.info, self.segments = path, info, list(segments)
        self._frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._next = -1

    def _from(self, index: int) -> Iterator[tuple[int, av.VideoFrame]]:
        for segment in self.segments:
            if segment.first_frame_index + segment.frame_count <= index:
                continue
            for k, frame in enumerate(segment_frames(self.path, self.info, segment)):
                yield segment.first_frame_index + k, frame

    def frame(self, index: int) -> av.VideoFrame:
        if self._frames is None or index < self._next:
            self._frames = self._from(index)
        for got, frame in self._frames:
            if got == index:
                self._next = index + 1
                return frame
        raise PassthroughUnsupported(f"source frame {index} could not be decoded")


class SpliceTranscoder(PassthroughTranscoder):
    """PassthroughTranscoder over the current output: copied GOPs from it, re-encoded ones from the source."""

    def __init__(self, inp: av.container.InputContainer, out: av.container.OutputContainer, info: VideoInfo,
                 cfg: Config, fmt_name: str, frame_hook: FrameHook | None, index: SourceIndex, plan: CopyPlan,
                 source: SourceFrames) -> None:
        super().__init__(inp, out, info, cfg, fmt_name, frame_hook, index, plan)
        self.source = source
        self.run_pts: list[int] = []

    def start_run(self) -> ReencodedRun:
        """An encoder only: the run's frames come from the source, not from this file's packets."""
        return ReencodedRun(None, self.new_encoder())

    def reencode_packet(self, packet: av.Packet) -> None:
        """Only noted: its frame is rendered from the source when the run ends."""
        self.run_pts.append(int(packet.pts))

    def end_run(self) -> None:
        """Render the run's frames from the source in presentation order, then flush its encoder."""
        if self.run_state is None:
            return
        for pts in sorted(self.run_pts):
            index = int(np.searchsorted(self.sorted_pts, pts))
            self.frames_in += 1
            frame = self.apply_hook(index, self.to_working(self.source.frame(index)))
            frame.pts = pts  # the current output's timestamp, in its time base
            self.encode(frame)
        self.encode(None)
        self.run_state, self.run_pts = None, []


def splice_transcode(current: Path, source: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook,
                     segments: Sequence[Segment],
                     changed_frames: np.ndarray) -> tuple[TranscodeStats, PassthroughOutcome]:
    """Write dst from the current output with the GOPs holding ``changed_frames`` rendered again from ``source``."""
    cfg = for_source(cfg, info)
    reason = static_reason(info, cfg)
    if reason is not None:
        raise PassthroughUnsupported(reason)
    index = scan_source(current, info, FAMILY_OF_ENCODER[cfg.encoder.codec])
    order = np.sort(index.pts)
    if order.size != info.frame_count or not index.idr.any():
        raise PassthroughUnsupported("the current output's frames do not line up with the source's")
    changed = np.asarray(changed_frames, np.int64)
    copies = plan_copies(index, order, order[changed[(changed >= 0) & (changed < order.size)]])
    if not copies.gops_copied:
        raise PassthroughUnsupported("every GOP of the current output holds a changed frame")
    jobs: list[SpliceTranscoder] = []

    def make_job(inp, out, fmt_name: str) -> SpliceTranscoder:
        jobs.append(SpliceTranscoder(inp, out, info, cfg, fmt_name, frame_hook, index, copies,
                                     SourceFrames(source, info, segments)))
        return jobs[-1]

    stats = run_job(current, dst, make_job)
    return stats, PassthroughOutcome(copies.gops_copied, copies.gops_reencoded, jobs[0].frames_copied)
