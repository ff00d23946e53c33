"""The records one stage hands to the next about a whole video: what detection found (``VideoDetections``,
grouped by the collector) and what rendering made of it (``RenderResult``), counts and hashes only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from anonray.corrections.carry import CarrySource
from anonray.errors import Failure
from anonray.types import CLASS_NAMES, Detections, Segment, VideoInfo

if TYPE_CHECKING:
    from anonray.render.codec.passthrough import PassthroughOutcome

DAMAGE_CLASSES = frozenset({"missing_frames", "decode_failed"})
"""Segment errors that mean damaged video data (reported per video as ``damaged_frames``)."""


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
    carry: CarrySource | None = None
    """A reviewer's corrections of the file's current output, to carry into this render (corrections/carry.py)."""

    @property
    def damaged(self) -> bool:
        """Whether a segment lost frames to damaged data (an error in DAMAGE_CLASSES)."""
        return any(s.error_class in DAMAGE_CLASSES for s in self.segments)

    @property
    def frames_not_analysed(self) -> int:
        """Presentation indices detection never saw (frame_pts -1)."""
        return int((np.asarray(self.frame_pts) < 0).sum())

    def failure(self, on_damage: str = "fail") -> Failure | None:
        """The video's failure under the ``input.on_damage`` policy: ``error``, except that with
        ``mask_whole_frame`` damage alone is no failure (render masks the frames not analysed whole)."""
        error = self.error
        if error is not None and error.error_class == "damaged_frames" and on_damage == "mask_whole_frame":
            return None
        return error

    @property
    def error(self) -> Failure | None:
        """The video's failure, if any: the first segment error that is not damage, else the damage.

        Damaged data (frames the decoder could not produce) fails the whole video as
        ``damaged_frames`` with the number of frames lost: by default a frame that was never analysed
        is never written, masked or not (``failure`` applies the ``input.on_damage`` policy).
        """
        damaged = [s for s in self.segments if s.error_class in DAMAGE_CLASSES]
        for s in self.segments:
            if s.error_class and s.error_class not in DAMAGE_CLASSES:
                prefix = f"segment {s.segment.index}: "
                message = s.error_message if s.error_message.startswith(prefix) else prefix + s.error_message
                return Failure(s.error_class, message)
        if not damaged:
            return None
        missing = sum(max(0, s.segment.frame_count - s.frames_decoded) for s in damaged)
        return Failure("damaged_frames", (
            f"{missing} of {self.info.frame_count} frames could not be decoded (damaged data in "
            f"{len(damaged)} of {len(self.segments)} segments); no output was written, since frames "
            "that could not be checked for faces and plates are never published"
        ))


@dataclass(frozen=True)
class MaskStatistics:
    """Share of frames with a mask, and regions per frame per class (mean over all frames, max)."""

    share_frames_masked: float
    regions_per_frame_mean: dict[str, float]
    regions_per_frame_max: dict[str, int]


@dataclass
class RenderResult:
    """What rendering one video produced (counts, hashes, timings; no coordinates)."""

    output_path: str
    sha256_out: str
    size_bytes_out: int
    frames_out: int
    video_codec_out: str
    container_out: str
    tracks: dict[str, int]
    frames_masked: int
    seconds_track: float
    seconds_encode: float
    audio_packets_copied: int = 0
    mask_statistics: MaskStatistics | None = None
    qa_flags: tuple[str, ...] = ()
    seconds_qa: float = 0.0
    frames_masked_whole: int = 0
    """Frames written filled whole with the mask colour: not analysed by detection (damaged data)."""
    frames_lost: int = 0
    """Input frames not written: the render-time decode could not produce them (damaged data)."""
    passthrough: PassthroughOutcome | None = None
    """GOPs copied / re-encoded (or why not) with encoder.passthrough on; None with it off."""
    encode_chunks: int = 1
    """Chunks the video was encoded in (encoder.chunk_seconds, chunked.py); 1 = one task."""
    pixel_format_out: str = ""
    video_bitrate_out: float | None = None
    """The output's video bitrate (bit/s): video packet bytes x 8 / the input's duration."""
    psnr_outside_masks: float | None = None
    """Luma PSNR (dB) against the source outside the masks on qa.psnr_frames frames (qa/fidelity.py)."""
    corrections: tuple[str, ...] = ()
    """Ids of the reviewers' corrections carried into this output (corrections/carry.py)."""
    tracks_dropped_by_zone: int = 0
    """Tracks left unmasked because they stayed still inside a never_mask zone (track/zones.py)."""
