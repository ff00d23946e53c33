"""Thin Ray Data adapters around the decode and detection stages.

Each class loads what it needs once in ``__init__`` and turns batches of rows (anonray/frame_rows.py) into
batches of rows; the work itself lives in decode/ and detect/. Per-segment failures become row values
(error class and message), never exceptions that would stop the dataset.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ray

from anonray.config import Config, validate_config
from anonray.decode.orientation import boxes_to_stored, display_size, to_display
from anonray.decode.segment import STALL_CLASS, DecodeError, decode_segment
from anonray.detect.frame_detector import FrameDetector, detection_image_size
from anonray.errors import Failure, FileFailure
from anonray.fault_hooks import fault_point
from anonray.frame_rows import Batch, DecodedFrames, DetectedFrames, SegmentRow, pack_boxes
from anonray.stall_guard import Heartbeat, guarded, stall_message
from anonray.store import storage
from anonray.track.scenes import frame_signature
from anonray.types import Detections, Segment, VideoInfo

NO_FAILURE = Failure("", "")
"""The error columns of a row without one."""


def current_node_id() -> str:
    """The Ray node this process runs on ("" outside Ray, as in unit tests: asking Ray for its runtime context
    there would start a local Ray instance)."""
    if not ray.is_initialized():
        return ""
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


class RestartReport:
    """Tells the run's RestartLog (runtime/tasks.py) when Ray restarted this actor after its process died,
    and which videos were in the first batch it then processed (most likely the batch being retried)."""

    def __init__(self, restarts, stage: str):
        self._log = restarts
        self._pending = False
        if restarts is None:
            return
        try:
            with warnings.catch_warnings():  # Ray's own property reads a deprecated attribute (2.60)
                warnings.simplefilter("ignore", DeprecationWarning)
                self._pending = ray.get_runtime_context().was_current_actor_reconstructed
        except Exception:  # noqa: BLE001 - outside Ray (unit tests)
            return
        if self._pending:
            restarts.restarted.remote(stage)

    def first_batch(self, video_ids) -> None:
        if self._pending:
            self._pending = False
            self._log.retried.remote(sorted({str(v) for v in video_ids}))


def frame_rows(info: VideoInfo, segment: Segment, frames: list[tuple[int, int, np.ndarray]]) -> DecodedFrames:
    """Decoded frames (frame index, pts, image) of one segment as rows for the detection actors."""
    n = len(frames)
    return DecodedFrames(
        video_id=np.array([info.video_id] * n),
        segment_index=np.full(n, segment.index, np.int64),
        frame_index=np.array([f[0] for f in frames], np.int64),
        pts=np.array([f[1] for f in frames], np.int64),
        signature=np.array([frame_signature(f[2]) if f[0] >= 0 else b"" for f in frames], dtype=object),
        source_width=np.full(n, info.width, np.int64),
        source_height=np.full(n, info.height, np.int64),
        rotation=np.full(n, info.rotation, np.int64),
        frames_decoded=np.zeros(n, np.int64),
        decode_seconds=np.zeros(n, np.float64),
        decode_node_id=np.array([""] * n),
        decode_error_class=np.array([""] * n),
        decode_error_message=np.array([""] * n),
        image=np.stack([f[2] for f in frames]),
    )


def end_marker(info: VideoInfo, segment: Segment, decoded: int, seconds: float, error: Failure,
               image_shape: tuple[int, ...]) -> DecodedFrames:
    """The row that closes a segment: frame_index -1 with the decode counters (and error, if any)."""
    rows = frame_rows(info, segment, [(-1, 0, np.zeros(image_shape, np.uint8))])
    rows.frames_decoded[0] = decoded
    rows.decode_seconds[0] = seconds
    rows.decode_node_id = np.array([current_node_id()])
    rows.decode_error_class = np.array([error.error_class])
    rows.decode_error_message = np.array([error.message])
    return rows


class SegmentDecoder:
    """Decode actor: one segment row in, batches of downscaled upright RGB frames out, then an end marker."""

    def __init__(self, config_json: str, restarts=None):
        self.config: Config = validate_config(json.loads(config_json))
        self.restart_report = RestartReport(restarts, "decode")
        self._staged: tuple[tuple[str, str], contextlib.ExitStack, Path] | None = None
        """The last URI input's private local copy (store/storage.py), kept for its next segments."""
        self._stalled: set[str] = set()
        """Videos whose decode stalled here: their later segments fail at once instead of stalling again."""

    def _local_source(self, info: VideoInfo) -> Path:
        """The input to decode: a local path as is; a URI input staged once per video, then reused."""
        if not storage.is_uri(info.source_path):
            return Path(info.source_path)
        key = (info.source_path, info.sha256)
        if self._staged is None or self._staged[0] != key:
            self._release()
            stack = contextlib.ExitStack()
            try:
                local, remote = stack.enter_context(storage.staged(info.source_path))
            except BaseException:
                stack.close()
                raise
            self._staged = (key, stack, local)
            if (remote.size, remote.mtime_ns) != (info.size_bytes, info.mtime_ns):
                self._release()
                raise FileFailure("input_changed", f"{info.relative_path}: the input changed after it was ingested")
        return self._staged[2]

    def _release(self) -> None:
        if self._staged is not None:
            self._staged[1].close()
            self._staged = None

    def __del__(self):
        self._release()

    def _stall(self, info: VideoInfo, segment: Segment) -> DecodeError:
        """The error of a segment whose decoder stalled; the video's later segments will not be tried here."""
        self._stalled.add(info.video_id)
        what = f"segment {segment.index}: the decoder"
        return DecodeError(STALL_CLASS, stall_message(what, self.config.resources.stall_seconds))

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        self.restart_report.first_batch(batch["video_id"])
        fault_point("decode")
        for i in range(len(batch["video_id"])):
            row = SegmentRow.from_batch(batch, i)
            for rows in self._decode(row.info, row.segment):
                yield rows.to_batch()

    def _decode(self, info: VideoInfo, segment: Segment) -> Iterator[DecodedFrames]:
        size = detection_image_size(info.width, info.height, self.config)
        chunk: list[tuple[int, int, np.ndarray]] = []
        decoded, error = 0, NO_FAILURE
        started = time.perf_counter()
        shape = (size[1], size[0], 3)
        try:
            if info.video_id in self._stalled:
                raise DecodeError(STALL_CLASS, f"segment {segment.index}: not decoded, since the decoder stalled "
                                  "on an earlier segment of this video")
            source = self._local_source(info)

            def frames(beat: Heartbeat) -> Iterator[tuple[int, int, np.ndarray]]:
                fault_point("decode_source", source)
                return decode_segment(source, info, segment, size, beat=beat)

            for frame_index, pts, image in guarded(frames, self.config.resources.stall_seconds,
                                                   lambda: self._stall(info, segment)):
                upright = to_display(image, info.rotation)
                shape = upright.shape
                chunk.append((frame_index, pts, upright))
                decoded += 1
                if len(chunk) >= self.config.detection.batch_size:
                    yield frame_rows(info, segment, chunk)
                    chunk = []
        except Exception as err:  # noqa: BLE001 - every failure becomes a value on the marker row
            error = Failure.of(err, "decode_error")
        if chunk:
            yield frame_rows(info, segment, chunk)
        yield end_marker(info, segment, decoded, time.perf_counter() - started, error, shape)


class FrameDetectorActor:
    """Detection actor: frame rows in, the same rows out with boxes (bytes) instead of pixels."""

    def __init__(self, config_json: str, threads: int = 0, restarts=None, device: str | None = None):
        """threads: the CPUs held (0 = leave the runtimes' pools alone); device: None = CUDA where torch sees
        it, else the CPU (a CPU-only plan says "cpu", so that the OpenVINO path never imports torch)."""
        self.config = validate_config(json.loads(config_json))
        self.detector = FrameDetector(self.config, device=device, cpu_threads=threads or None)
        if threads and "torch" in sys.modules:  # a model runs in torch here (the native CPU runtime)
            import torch

            torch.set_num_threads(threads)
        self.node_id = current_node_id()
        self.restart_report = RestartReport(restarts, "detect")

    def __call__(self, batch: Batch) -> Batch:
        self.restart_report.first_batch(batch["video_id"])
        fault_point("detect")
        frames = DecodedFrames.from_batch(batch)
        n = len(frames)
        boxes = [b""] * n
        errors = [NO_FAILURE] * n
        started = time.perf_counter()
        analysed = [i for i in range(n) if int(frames.frame_index[i]) >= 0]
        by_video: dict[str, list[int]] = {}
        for i in analysed:
            by_video.setdefault(str(frames.video_id[i]), []).append(i)
        for rows in by_video.values():
            try:
                for i, packed in zip(rows, self._detect(frames, rows), strict=True):
                    boxes[i] = packed
            except Exception as err:  # noqa: BLE001 - a failed batch marks its frames, the video fails safe
                for i in rows:
                    errors[i] = Failure("detect_error", str(err) or type(err).__name__)
        per_frame = (time.perf_counter() - started) / max(len(analysed), 1)
        return DetectedFrames(
            **frames.shared_columns(),
            boxes=np.array(boxes, dtype=object),
            detect_seconds=np.where(np.asarray(frames.frame_index) >= 0, per_frame, 0.0),
            detect_node_id=np.array([self.node_id] * n),
            detect_error_class=np.array([e.error_class for e in errors]),
            detect_error_message=np.array([e.message for e in errors]),
        ).to_batch()

    def _detect(self, frames: DecodedFrames, rows: list[int]) -> list[bytes]:
        """The packed boxes, in stored-frame pixels, of rows of one video."""
        first = rows[0]
        width, height = int(frames.source_width[first]), int(frames.source_height[first])
        rotation = int(frames.rotation[first])
        frame_indices = [int(frames.frame_index[i]) for i in rows]
        dets = self.detector.detect([np.asarray(frames.image[i]) for i in rows], frame_indices,
                                    display_size(width, height, rotation))
        dets = Detections(dets.frame_index, boxes_to_stored(dets.xyxy, rotation, width, height), dets.score,
                          dets.cls)
        return [pack_boxes(dets, frame_index) for frame_index in frame_indices]
