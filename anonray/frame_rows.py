"""The rows that stream through Ray Data: segments into the decode actors, frames into the detection
actors, boxes out to the driver's collector. One typed record per hop, converted to and from the column
dicts Ray Data batches are; pixels only ever travel in ``DecodedFrames``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from anonray.types import Detections, Segment, VideoInfo

Batch = dict[str, np.ndarray]
"""A Ray Data batch in numpy format: column name -> one array with a value per row."""


@dataclass(frozen=True)
class SegmentRow:
    """The decode stage's input: one segment of one video (no pixels)."""

    video_id: str
    video_json: str
    segment_index: int
    start_pts: int
    end_pts: int
    """-1 for the last segment (open-ended)."""
    first_frame_index: int
    frame_count: int
    keyframe_pts: int

    @classmethod
    def of(cls, info: VideoInfo, segment: Segment) -> SegmentRow:
        return cls(info.video_id, info.to_json(), segment.index, segment.start_pts,
                   -1 if segment.end_pts is None else segment.end_pts, segment.first_frame_index,
                   segment.frame_count, segment.keyframe_pts)

    @classmethod
    def from_batch(cls, batch: Batch, i: int) -> SegmentRow:
        """Row ``i`` of a batch of segment rows."""
        return cls(str(batch["video_id"][i]), str(batch["video_json"][i]), int(batch["segment_index"][i]),
                   int(batch["start_pts"][i]), int(batch["end_pts"][i]), int(batch["first_frame_index"][i]),
                   int(batch["frame_count"][i]), int(batch["keyframe_pts"][i]))

    def as_item(self) -> dict[str, Any]:
        """The row as Ray Data's ``from_items`` takes it."""
        return dataclasses.asdict(self)

    @property
    def info(self) -> VideoInfo:
        return VideoInfo.from_json(self.video_json)

    @property
    def segment(self) -> Segment:
        end = None if self.end_pts < 0 else self.end_pts
        return Segment(self.video_id, self.segment_index, self.start_pts, end, self.first_frame_index,
                       self.frame_count, self.keyframe_pts)


@dataclass
class FrameRows:
    """The columns every frame record carries, one array each with a value per row. A row with
    ``frame_index`` -1 is a segment's end marker, holding the decode counters (and error, if any)."""

    video_id: np.ndarray
    segment_index: np.ndarray
    frame_index: np.ndarray
    pts: np.ndarray
    signature: np.ndarray
    """Scene signature bytes per frame (track/scenes.py); empty on end markers."""
    source_width: np.ndarray
    source_height: np.ndarray
    rotation: np.ndarray
    frames_decoded: np.ndarray
    decode_seconds: np.ndarray
    decode_node_id: np.ndarray
    decode_error_class: np.ndarray
    decode_error_message: np.ndarray

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_batch(cls, batch: Batch) -> Self:
        """The record of a batch that has (at least) this record's columns."""
        return cls(**{name: batch[name] for name in cls.columns()})

    def to_batch(self) -> Batch:
        return {name: getattr(self, name) for name in self.columns()}

    def shared_columns(self) -> dict[str, np.ndarray]:
        """The columns every frame record carries, to build the next hop's record from."""
        return {name: getattr(self, name) for name in FrameRows.columns()}

    def __len__(self) -> int:
        return len(self.video_id)


@dataclass
class DecodedFrames(FrameRows):
    """Decode actor -> detection actor: frames downscaled for detection, upright, RGB."""

    image: np.ndarray
    """(rows, height, width, 3) uint8."""


@dataclass
class DetectedFrames(FrameRows):
    """Detection actor -> the driver's collector: the same rows with packed boxes instead of pixels."""

    boxes: np.ndarray
    """Per row the frame's boxes as bytes (``pack_boxes``)."""
    detect_seconds: np.ndarray
    detect_node_id: np.ndarray
    detect_error_class: np.ndarray
    detect_error_message: np.ndarray


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
