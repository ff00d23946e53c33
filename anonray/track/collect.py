"""Group the streamed detection rows back per video (the driver side of the pipeline).

Only small rows arrive here (frame index, pts, boxes as bytes, per-segment counters); decoded pixels
never do. A video is complete once every segment's end marker arrived together with as many frame
rows as that marker says were decoded. Grouping as rows stream in (rather than with an all-to-all
``groupby``) lets a video's output be rendered while later videos are still being detected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anonray.track.scenes import SIGNATURE_BYTES
from anonray.types import CLASS_NAMES, Detections, Segment, VideoInfo

DAMAGE_CLASSES = frozenset({"missing_frames", "decode_failed"})
"""Segment errors that mean damaged video data (reported per video as ``damaged_frames``)."""

BOX_FIELDS = 6
"""Each detected box travels as float32 x1, y1, x2, y2, score, class id."""


def pack_boxes(dets: Detections, frame_index: int) -> bytes:
    """The boxes of one frame as bytes (float32 rows of BOX_FIELDS)."""
    keep = dets.frame_index == frame_index
    rows = np.concatenate(
        [dets.xyxy[keep], dets.score[keep, None], dets.cls[keep, None].astype(np.float32)], 1
    ).astype(np.float32)
    return rows.tobytes()


def unpack_boxes(blob: bytes, frame_index: int) -> Detections:
    rows = np.frombuffer(blob, np.float32).reshape(-1, BOX_FIELDS)
    return Detections(
        frame_index=np.full(len(rows), frame_index, np.int64),
        xyxy=rows[:, :4].copy(),
        score=rows[:, 4].copy(),
        cls=rows[:, 5].astype(np.int64),
    )


@dataclass
class SegmentStats:
    """Counters for one segment (the segments table row, without run id)."""

    segment: Segment
    frames_decoded: int = 0
    frames_received: int = 0
    decode_seconds: float = 0.0
    detect_seconds: float = 0.0
    detections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))
    decode_node_id: str = ""
    detect_node_id: str = ""
    error_class: str = ""
    error_message: str = ""
    ended: bool = False

    @property
    def complete(self) -> bool:
        return self.ended and self.frames_received >= self.frames_decoded


@dataclass
class VideoDetections:
    """Everything detection produced for one video, ready for tracking and rendering."""

    info: VideoInfo
    segments: list[SegmentStats]
    detections: Detections
    frame_pts: np.ndarray
    """pts of every analysed frame, indexed by presentation frame index (-1 where none arrived)."""
    signatures: np.ndarray
    """(frames, SIGNATURE_BYTES) uint8 scene signatures (zeros where none arrived)."""

    @property
    def damaged(self) -> bool:
        """Whether a segment lost frames to damaged data (an error in DAMAGE_CLASSES)."""
        return any(s.error_class in DAMAGE_CLASSES for s in self.segments)

    @property
    def frames_not_analysed(self) -> int:
        """Presentation indices detection never saw (frame_pts -1)."""
        return int((np.asarray(self.frame_pts) < 0).sum())

    def failure(self, on_damage: str = "fail") -> tuple[str, str] | None:
        """The video's failure under the ``input.on_damage`` policy: ``error``, except that with
        ``mask_whole_frame`` damage alone is no failure (render masks the frames not analysed whole)."""
        error = self.error
        if error is not None and error[0] == "damaged_frames" and on_damage == "mask_whole_frame":
            return None
        return error

    @property
    def error(self) -> tuple[str, str] | None:
        """The video's failure, if any: the first segment error that is not damage, else the damage.

        Damaged data (frames the decoder could not produce) fails the whole video as
        ``damaged_frames`` with the number of frames lost: by default a frame that was never analysed
        is never written, masked or not (``failure`` applies the ``input.on_damage`` policy).
        """
        damaged = [s for s in self.segments if s.error_class in DAMAGE_CLASSES]
        for s in self.segments:
            if s.error_class and s.error_class not in DAMAGE_CLASSES:
                prefix = f"segment {s.segment.index}: "
                return s.error_class, s.error_message if s.error_message.startswith(prefix) else (
                    prefix + s.error_message)
        if not damaged:
            return None
        missing = sum(max(0, s.segment.frame_count - s.frames_decoded) for s in damaged)
        return "damaged_frames", (
            f"{missing} of {self.info.frame_count} frames could not be decoded (damaged data in "
            f"{len(damaged)} of {len(self.segments)} segments); no output was written, since frames "
            "that could not be checked for faces and plates are never published"
        )


class DetectionCollector:
    """Accumulates detection rows per video and hands out videos as they complete."""

    def __init__(self, videos: list[tuple[VideoInfo, list[Segment]]]):
        self._info = {info.video_id: info for info, _ in videos}
        self._segments = {info.video_id: {s.index: SegmentStats(s) for s in segs} for info, segs in videos}
        self._parts: dict[str, list[Detections]] = {info.video_id: [] for info, _ in videos}
        self._pts = {info.video_id: np.full(info.frame_count, -1, np.int64) for info, _ in videos}
        self._signatures = {info.video_id: np.zeros((info.frame_count, SIGNATURE_BYTES), np.uint8)
                            for info, _ in videos}
        self.frames_received = 0

    def pending(self) -> list[str]:
        return list(self._info)

    def add_batch(self, batch: dict[str, np.ndarray]) -> list[VideoDetections]:
        """Take one batch of detection rows; return the videos this batch completed."""
        touched: set[str] = set()
        for i in range(len(batch["video_id"])):
            video_id = str(batch["video_id"][i])
            if video_id not in self._info:
                continue
            stats = self._segments[video_id][int(batch["segment_index"][i])]
            frame_index = int(batch["frame_index"][i])
            touched.add(video_id)
            if frame_index < 0:
                self._end_segment(stats, batch, i)
                continue
            stats.frames_received += 1
            stats.detect_seconds += float(batch["detect_seconds"][i])
            stats.detect_node_id = str(batch["detect_node_id"][i])
            if str(batch["detect_error_class"][i]) and not stats.error_class:
                stats.error_class = str(batch["detect_error_class"][i])
                stats.error_message = str(batch["detect_error_message"][i])
            pts = self._pts[video_id]
            if 0 <= frame_index < len(pts):
                pts[frame_index] = int(batch["pts"][i])
                signature = bytes(batch["signature"][i])
                if len(signature) == SIGNATURE_BYTES:
                    self._signatures[video_id][frame_index] = np.frombuffer(signature, np.uint8)
            dets = unpack_boxes(bytes(batch["boxes"][i]), frame_index)
            for cls_id, name in enumerate(CLASS_NAMES):
                stats.detections[name] += int((dets.cls == cls_id).sum())
            if len(dets):
                self._parts[video_id].append(dets)
            self.frames_received += 1
        return [self._pop(v) for v in sorted(touched) if self._is_complete(v)]

    def drain_incomplete(self) -> list[VideoDetections]:
        """After the stream ended: every video still open (a segment never reported back)."""
        return [self._pop(v) for v in list(self._info)]

    @staticmethod
    def _end_segment(stats: SegmentStats, batch: dict[str, np.ndarray], i: int) -> None:
        stats.ended = True
        stats.frames_decoded = int(batch["frames_decoded"][i])
        stats.decode_seconds = float(batch["decode_seconds"][i])
        stats.decode_node_id = str(batch["decode_node_id"][i])
        if str(batch["decode_error_class"][i]):
            stats.error_class = str(batch["decode_error_class"][i])
            stats.error_message = str(batch["decode_error_message"][i])

    def _is_complete(self, video_id: str) -> bool:
        return all(s.complete for s in self._segments[video_id].values())

    def _pop(self, video_id: str) -> VideoDetections:
        info = self._info.pop(video_id)
        segments = sorted(self._segments.pop(video_id).values(), key=lambda s: s.segment.index)
        for s in segments:
            if not s.ended and not s.error_class:
                s.error_class = "segment_lost"
                s.error_message = "the segment never came back from decoding"
        return VideoDetections(info, segments, Detections.concat(self._parts.pop(video_id)),
                               self._pts.pop(video_id), self._signatures.pop(video_id))


def analysed_without_detections(path: Path, relative_path: str, target_seconds: float = 2.0) -> VideoDetections:
    """A local video as detection hands it to render, every frame analysed and nothing found: for running the
    render stages (tests, benchmarks) without the detectors. Probes and decodes the file (tiny frames)."""
    from anonray.decode.segment import decode_segment
    from anonray.ingest.probe import probe

    info, segments = probe(path, relative_path, target_seconds)
    collector = DetectionCollector([(info, segments)])
    pts = [p for s in segments for _, p, _ in decode_segment(path, info, s, (96, 54))]
    video = collector.drain_incomplete()[0]
    video.frame_pts[:] = pts
    for s in video.segments:
        s.error_class, s.error_message, s.ended = "", "", True
    return video
