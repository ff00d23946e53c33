"""The small, typed records that flow between stages.

Every stage after ingest speaks in these types. Rows that cross Ray are plain columns built from
them (numbers and short strings); pixels never travel in these records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("face", "plate")
"""Detector class ids index into this tuple: 0 = face, 1 = plate."""

PERSON_CLASS = -1
"""Class id of person detections (detection.person): context for the face tracker, never masked, never counted."""
REGION_CLASS_NAMES: tuple[str, ...] = (*CLASS_NAMES, "document", "screen", "badge", "tattoo", "other", "zone")
"""A MaskPlan's class ids index into this tuple: the detector classes first (same ids), then the labels of
regions a reviewer draws (corrections) and of configured zones."""



def ratio_text(value: Fraction | None) -> str:
    """A ratio (a sample aspect ratio) as ``num:den``; ``1:1`` where it is unknown (None, 0 or negative)."""
    if not value or value <= 0:
        return "1:1"
    return f"{value.numerator}:{value.denominator}"

@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of an input file."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    duration_seconds: float | None
    packets: int


def video_bitrate(packet_bytes: int, seconds: float) -> float | None:
    """A video stream's average bitrate (bit/s): its packets' bytes x 8 / the duration; None where either is
    unknown (0)."""
    if packet_bytes <= 0 or seconds <= 0:
        return None
    return packet_bytes * 8 / seconds


@dataclass(frozen=True)
class VideoInfo:
    """What ingest learned about one input file (no pixels, no personal data but the path)."""

    video_id: str
    """Short stable id: the first 12 hex digits of sha256(relative path); used in logs instead of paths."""
    source_path: str
    """Absolute path of the input file."""
    relative_path: str
    """Path relative to its input root (mirrored under the output folder)."""
    size_bytes: int
    sha256: str
    container: str
    video_codec: str
    pixel_format: str
    width: int
    height: int
    sample_aspect_ratio: str
    """As 'num:den'; '1:1' where the file declares none."""
    fps: float
    time_base: str
    """Video stream time base as 'num/den'."""
    start_pts: int
    duration_seconds: float
    frame_count: int
    """Frames by the packet index (one packet per frame)."""
    rotation: int
    """Display rotation in degrees, counter-clockwise, as PyAV reports it."""
    field_order: str
    """'progressive', 'tt', 'bb', 'tb', 'bt' or 'unknown'."""
    variable_frame_rate: bool
    audio: tuple[AudioStreamInfo, ...] = ()
    video_stream_index: int = 0
    mtime_ns: int = 0
    """Modification time and inode at ingest: with size and path, how a rerun recognises the input."""
    inode: int = 0
    timecode: str | None = None
    """SMPTE start timecode, canonical 'hh:mm:ss:ff' (';' before ff for drop-frame); None where the file
    has no valid one (see timecode.py). Absent from JSON written before it existed, hence the default."""
    bit_depth: int = 8
    """Bits per sample of the video (8, 10, 12...)."""
    color_primaries: int = 2
    """Colour tags as FFmpeg numbers them (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace,
    AVColorRange; 2 / 2 / 2 / 0 = unspecified): what the output keeps and QA compares."""
    color_transfer: int = 2
    color_space: int = 2
    color_range: int = 0
    mastering_display: str | None = None
    """HDR mastering display metadata in x265's ``master-display`` syntax (ingest/hdr.py), None where absent."""
    content_light_level: str | None = None
    """HDR 'MaxCLL,MaxFALL' (cd/m2), None where absent."""
    video_packet_bytes: int = 0
    """Bytes of every video packet: with duration_seconds, the video bitrate (video_bitrate)."""

    @property
    def video_bitrate(self) -> float | None:
        """The video stream's average bitrate (bit/s) over the whole file; None where unknown."""
        return video_bitrate(self.video_packet_bytes, self.duration_seconds)

    @property
    def time_base_fraction(self) -> Fraction:
        return Fraction(self.time_base)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoInfo:
        raw = json.loads(text)
        raw["audio"] = tuple(AudioStreamInfo(**a) for a in raw.get("audio", ()))
        return cls(**raw)


@dataclass(frozen=True)
class Segment:
    """One GOP-aligned slice of a video in presentation order: frames with start_pts <= pts < end_pts.

    end_pts is None for the last segment (to the end of the stream).
    """

    video_id: str
    index: int
    start_pts: int
    end_pts: int | None
    first_frame_index: int
    """Presentation index of the segment's first frame within the video."""
    frame_count: int
    """Frames expected from the packet index."""
    keyframe_pts: int
    """The keyframe to seek to before decoding (its pts)."""


@dataclass
class Detections:
    """Boxes for a set of frames, as parallel arrays, in source-pixel coordinates.

    One row per box: frame index (presentation order within the video), xyxy box, score, class id.
    """

    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        return cls(
            frame_index=np.concatenate([p.frame_index for p in parts]).astype(np.int64),
            xyxy=np.concatenate([p.xyxy for p in parts]).astype(np.float32).reshape(-1, 4),
            score=np.concatenate([p.score for p in parts]).astype(np.float32),
            cls=np.concatenate([p.cls for p in parts]).astype(np.int64),
        )

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.frame_index[keep], self.xyxy[keep], self.score[keep], self.cls[keep])

    def count_by_class(self) -> dict[str, int]:
        return {name: int((self.cls == i).sum()) for i, name in enumerate(CLASS_NAMES)}


SHAPE_ELLIPSE = 0
SHAPE_BOX = 1


@dataclass
class MaskPlan:
    """Per video: the regions to mask, one row per (frame, region), already enlarged by the margins.

    frame_index: presentation index; xyxy in source pixels (clipped to the frame); cls: class id;
    shape: SHAPE_ELLIPSE or SHAPE_BOX; track_id: the track the region came from.
    """

    frame_count: int
    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shape: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    track_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    def regions_by_frame(self) -> dict[int, np.ndarray]:
        """Map frame index -> row indices of its regions (frames without regions are absent)."""
        order = np.argsort(self.frame_index, kind="stable")
        frames, starts = np.unique(self.frame_index[order], return_index=True)
        bounds = [*starts[1:], len(order)] if len(order) else []
        return {int(f): order[s:e] for f, s, e in zip(frames, starts, bounds, strict=True)}

    def frames_masked(self) -> int:
        return int(np.unique(self.frame_index).shape[0])
