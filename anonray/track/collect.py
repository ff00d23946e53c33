"""Group the streamed detection rows back per video (the driver side of the pipeline).

Only small rows arrive here (frame index, pts, boxes as bytes, per-segment counters); decoded pixels
never do. A video is complete once every segment's end marker arrived together with as many frame
rows as that marker says were decoded. Grouping as rows stream in (rather than with an all-to-all
``groupby``) lets a video's output be rendered while later videos are still being detected.
"""

from __future__ import annotations

import numpy as np

from anonray.frame_rows import Batch, DetectedFrames, unpack_boxes
from anonray.handoff import SegmentStats, VideoDetections
from anonray.track.scenes import SIGNATURE_BYTES
from anonray.types import CLASS_NAMES, Detections, Segment, VideoInfo


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

    def add_batch(self, batch: Batch) -> list[VideoDetections]:
        """Take one batch of detection rows (DetectedFrames columns); return the videos it completed."""
        rows = DetectedFrames.from_batch(batch)
        touched: set[str] = set()
        for i in range(len(rows)):
            video_id = str(rows.video_id[i])
            if video_id not in self._info:
                continue
            touched.add(video_id)
            stats = self._segments[video_id][int(rows.segment_index[i])]
            if int(rows.frame_index[i]) < 0:
                self._end_segment(stats, rows, i)
            else:
                self._add_frame(video_id, stats, rows, i)
        return [self._pop(v) for v in sorted(touched) if self._is_complete(v)]

    def _add_frame(self, video_id: str, stats: SegmentStats, rows: DetectedFrames, i: int) -> None:
        frame_index = int(rows.frame_index[i])
        stats.frames_received += 1
        stats.detect_seconds += float(rows.detect_seconds[i])
        stats.detect_node_id = str(rows.detect_node_id[i])
        if str(rows.detect_error_class[i]) and not stats.error_class:
            stats.error_class = str(rows.detect_error_class[i])
            stats.error_message = str(rows.detect_error_message[i])
        pts = self._pts[video_id]
        if 0 <= frame_index < len(pts):
            pts[frame_index] = int(rows.pts[i])
            signature = bytes(rows.signature[i])
            if len(signature) == SIGNATURE_BYTES:
                self._signatures[video_id][frame_index] = np.frombuffer(signature, np.uint8)
        dets = unpack_boxes(bytes(rows.boxes[i]), frame_index)
        for cls_id, name in enumerate(CLASS_NAMES):
            stats.detections[name] += int((dets.cls == cls_id).sum())
        if len(dets):
            self._parts[video_id].append(dets)
        self.frames_received += 1

    def drain_incomplete(self) -> list[VideoDetections]:
        """After the stream ended: every video still open (a segment never reported back)."""
        return [self._pop(v) for v in list(self._info)]

    @staticmethod
    def _end_segment(stats: SegmentStats, rows: DetectedFrames, i: int) -> None:
        stats.ended = True
        stats.frames_decoded = int(rows.frames_decoded[i])
        stats.decode_seconds = float(rows.decode_seconds[i])
        stats.decode_node_id = str(rows.decode_node_id[i])
        if str(rows.decode_error_class[i]):
            stats.error_class = str(rows.decode_error_class[i])
            stats.error_message = str(rows.decode_error_message[i])

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
