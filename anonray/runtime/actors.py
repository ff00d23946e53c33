"""Thin Ray Data adapters around the decode and detection stages.

Each class loads what it needs once in ``__init__`` and turns batches of rows into batches of rows;
the work itself lives in ``decode.py`` and ``detect/``. Per-segment failures become row values
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

from anonray.config import Config, validate_config
from anonray.store import storage
from anonray.testing import faults as fault_injection
from anonray.track.collect import pack_boxes
from anonray.track.scenes import frame_signature
from anonray.types import Detections, Segment, VideoInfo


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (unit tests)
        return ""


class _RestartReport:
    """Tells the run's RestartLog (pipeline.py) when Ray restarted this actor after its process died, and
    which videos were in the first batch it then processed (most likely the batch being retried)."""

    def __init__(self, restarts, stage: str):
        self._log = restarts
        self._pending = False
        if restarts is None:
            return
        try:
            import ray

            with warnings.catch_warnings():  # Ray's own property reads a deprecated attribute (2.60)
                warnings.simplefilter("ignore", DeprecationWarning)
                self._pending = ray.get_runtime_context().was_current_actor_reconstructed
        except Exception:  # outside Ray (unit tests)
            return
        if self._pending:
            restarts.restarted.remote(stage)

    def first_batch(self, video_ids) -> None:
        if self._pending:
            self._pending = False
            self._log.retried.remote(sorted({str(v) for v in video_ids}))


def segment_row(info: VideoInfo, segment: Segment) -> dict[str, object]:
    """The input row of the decode stage: one per segment (small: no pixels)."""
    return {
        "video_id": info.video_id,
        "video_json": info.to_json(),
        "segment_index": segment.index,
        "start_pts": segment.start_pts,
        "end_pts": -1 if segment.end_pts is None else segment.end_pts,
        "first_frame_index": segment.first_frame_index,
        "frame_count": segment.frame_count,
        "keyframe_pts": segment.keyframe_pts,
    }


def _segment_from_row(row: dict[str, object]) -> Segment:
    end = int(row["end_pts"])
    return Segment(str(row["video_id"]), int(row["segment_index"]), int(row["start_pts"]),
                   None if end < 0 else end, int(row["first_frame_index"]), int(row["frame_count"]),
                   int(row["keyframe_pts"]))


def _frame_batch(info: VideoInfo, segment: Segment, frames: list[tuple[int, int, np.ndarray]]) -> dict:
    n = len(frames)
    return {
        "video_id": np.array([info.video_id] * n),
        "segment_index": np.full(n, segment.index, np.int64),
        "frame_index": np.array([f[0] for f in frames], np.int64),
        "pts": np.array([f[1] for f in frames], np.int64),
        "image": np.stack([f[2] for f in frames]),
        "signature": np.array([frame_signature(f[2]) if f[0] >= 0 else b"" for f in frames], dtype=object),
        "source_width": np.full(n, info.width, np.int64),
        "source_height": np.full(n, info.height, np.int64),
        "rotation": np.full(n, info.rotation, np.int64),
        "frames_decoded": np.zeros(n, np.int64),
        "decode_seconds": np.zeros(n, np.float64),
        "decode_node_id": np.array([""] * n),
        "decode_error_class": np.array([""] * n),
        "decode_error_message": np.array([""] * n),
    }


def _end_marker(info: VideoInfo, segment: Segment, decoded: int, seconds: float,
                error: tuple[str, str], image_shape: tuple[int, ...]) -> dict:
    """The row that closes a segment: frame_index -1 with the decode counters (and error, if any)."""
    batch = _frame_batch(info, segment, [(-1, 0, np.zeros(image_shape, np.uint8))])
    batch["frames_decoded"][0] = decoded
    batch["decode_seconds"][0] = seconds
    batch["decode_node_id"] = np.array([_node_id()])
    batch["decode_error_class"] = np.array([error[0]])
    batch["decode_error_message"] = np.array([error[1]])
    return batch


class SegmentDecoder:
    """Decode actor: one segment row in, batches of downscaled upright RGB frames out, then an end marker."""

    def __init__(self, config_json: str, restarts=None):
        self.config: Config = validate_config(json.loads(config_json))
        self.restart_report = _RestartReport(restarts, "decode")
        self._staged: tuple[tuple[str, str], contextlib.ExitStack, Path] | None = None
        """The last URI input's private local copy (storage.py), kept for its next segments."""

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
                err = RuntimeError(f"{info.relative_path}: the input changed after it was ingested")
                err.error_class = "input_changed"
                raise err
        return self._staged[2]

    def _release(self) -> None:
        if self._staged is not None:
            self._staged[1].close()
            self._staged = None

    def __del__(self):
        self._release()

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict]:
        from anonray.decode.orientation import to_display
        from anonray.decode.segment import decode_segment
        from anonray.detect import detection_image_size

        self.restart_report.first_batch(batch["video_id"])
        fault_injection.pause("decode")
        for i in range(len(batch["video_id"])):
            row = {k: v[i] for k, v in batch.items()}
            info = VideoInfo.from_json(str(row["video_json"]))
            segment = _segment_from_row(row)
            size = detection_image_size(info.width, info.height, self.config)
            chunk: list[tuple[int, int, np.ndarray]] = []
            decoded, error = 0, ("", "")
            started = time.perf_counter()
            shape = (size[1], size[0], 3)
            try:
                source = self._local_source(info)
                for frame_index, pts, image in decode_segment(source, info, segment, size):
                    upright = to_display(image, info.rotation)
                    shape = upright.shape
                    chunk.append((frame_index, pts, upright))
                    decoded += 1
                    if len(chunk) >= self.config.detection.batch_size:
                        yield _frame_batch(info, segment, chunk)
                        chunk = []
            except Exception as err:  # noqa: BLE001 - every failure becomes a value on the marker row
                error = (getattr(err, "error_class", "decode_error"), str(err) or type(err).__name__)
            if chunk:
                yield _frame_batch(info, segment, chunk)
            yield _end_marker(info, segment, decoded, time.perf_counter() - started, error, shape)


class FrameDetectorActor:
    """Detection actor: frame rows in, the same rows out with boxes (bytes) instead of pixels."""

    def __init__(self, config_json: str, threads: int = 0, restarts=None, device: str | None = None):
        """threads: the CPUs held (0 = leave the runtimes' pools alone); device: None = CUDA where torch sees
        it, else the CPU (a CPU-only plan says "cpu", so that the OpenVINO path never imports torch)."""
        from anonray.detect import FrameDetector

        self.config = validate_config(json.loads(config_json))
        self.detector = FrameDetector(self.config, device=device, cpu_threads=threads or None)
        if threads and "torch" in sys.modules:  # a model runs in torch here (the native CPU runtime)
            import torch

            torch.set_num_threads(threads)
        self.node_id = _node_id()
        self.restart_report = _RestartReport(restarts, "detect")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from anonray.decode.orientation import boxes_to_stored, display_size

        self.restart_report.first_batch(batch["video_id"])
        fault_injection.pause("detect")
        n = len(batch["video_id"])
        boxes = [b""] * n
        errors = [("", "")] * n
        started = time.perf_counter()
        frame_rows = [i for i in range(n) if int(batch["frame_index"][i]) >= 0]
        by_video: dict[str, list[int]] = {}
        for i in frame_rows:
            by_video.setdefault(str(batch["video_id"][i]), []).append(i)
        for rows in by_video.values():
            first = rows[0]
            width, height = int(batch["source_width"][first]), int(batch["source_height"][first])
            rotation = int(batch["rotation"][first])
            frame_indices = [int(batch["frame_index"][i]) for i in rows]
            try:
                dets = self.detector.detect([np.asarray(batch["image"][i]) for i in rows], frame_indices,
                                            display_size(width, height, rotation))
                dets = Detections(dets.frame_index, boxes_to_stored(dets.xyxy, rotation, width, height),
                                  dets.score, dets.cls)
                for i, frame_index in zip(rows, frame_indices, strict=True):
                    boxes[i] = pack_boxes(dets, frame_index)
            except Exception as err:  # noqa: BLE001 - a failed batch marks its frames, the video fails safe
                for i in rows:
                    errors[i] = ("detect_error", str(err) or type(err).__name__)
        per_frame = (time.perf_counter() - started) / max(len(frame_rows), 1)
        out = {k: v for k, v in batch.items() if k != "image"}
        out["boxes"] = np.array(boxes, dtype=object)
        out["detect_seconds"] = np.where(np.asarray(batch["frame_index"]) >= 0, per_frame, 0.0)
        out["detect_node_id"] = np.array([self.node_id] * n)
        out["detect_error_class"] = np.array([e[0] for e in errors])
        out["detect_error_message"] = np.array([e[1] for e in errors])
        return out
