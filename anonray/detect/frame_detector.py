"""Per-frame detection of faces and plates, and of people as context (no Ray in here): ``FrameDetector`` takes
downscaled RGB frames of one video (all the same size; see ``detection_image_size``) and returns ``Detections``
in source pixels; people (``detection.person``) as class PERSON_CLASS, for the face tracker only.

On the CPU with OpenVINO (``detection.cpu_runtime: openvino``) and ``device="cpu"`` given, nothing here
imports torch or ultralytics (once ``prepare_cpu_runtime`` has made the YOLO networks' IR).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anonray.config import ClassDetection, Config
from anonray.detect.centerface import CenterFace
from anonray.detect.coarse import CoarseLook
from anonray.detect.letterbox import is_cpu
from anonray.detect.low_light import Ensemble, with_low_light_pass
from anonray.detect.models import model_ids, model_path
from anonray.detect.openvino_cpu import float_precision, resolve_precision
from anonray.detect.plates import PlateDetector
from anonray.detect.selection import low_light_model_name, model_name_for, model_spec_for
from anonray.height_ramp import ramp_by_height
from anonray.types import CLASS_NAMES, PERSON_CLASS, Detections


def default_device() -> str:
    """CUDA where torch sees a GPU, else the CPU. Imports torch (about 2 s): callers that know they run on
    the CPU pass ``device="cpu"`` instead."""
    import torch  # here, not at the top: the driver imports this package and never needs torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def detection_precision(config: Config, device: str) -> str:
    """The number format detection runs in on ``device``: on a GPU fp16 (``detection.half_precision``) or fp32;
    on the CPU the OpenVINO precision (``detection.cpu_precision``, ``auto`` resolved for this CPU), or fp32
    with the native runtimes."""
    if not is_cpu(device):
        return "fp16" if config.detection.half_precision else "fp32"
    if config.detection.cpu_runtime == "openvino":
        return resolve_precision(config.detection.cpu_precision)
    return "fp32"


def detection_image_size(source_w: int, source_h: int, config: Config) -> tuple[int, int]:
    """The (w, h) decode should downscale frames to: long side = the largest enabled input size,
    never larger than the source, aspect kept, even numbers (at least 2)."""
    sizes = [getattr(config.detection, c).input_size for c in config.classes
             if getattr(config.detection, c).enabled]
    target = max(sizes) if sizes else max(source_w, source_h)
    scale = min(1.0, target / max(source_w, source_h))

    def even(v: int) -> int:
        return max(2, min(2 * round(v * scale / 2), v // 2 * 2))

    return even(source_w), even(source_h)


def passes_threshold(xyxy: np.ndarray, score: np.ndarray, cfg: ClassDetection) -> np.ndarray:
    """Which boxes (source pixels) reach their class's score threshold for their height.

    With ``small_threshold`` set, the threshold ramps linearly from it at ``small_height`` to
    ``threshold`` at ``large_height``; otherwise it is ``threshold`` at every size.
    """
    if cfg.small_threshold is None:
        return score >= cfg.threshold
    return score >= ramp_by_height(xyxy[:, 3] - xyxy[:, 1], cfg.small_threshold, cfg.threshold,
                                   cfg.small_height, cfg.large_height)


class FrameDetector:
    """The detectors for ``config.classes``, loaded once, run on batches of frames."""

    def __init__(self, config: Config, device: str | None = None, cpu_threads: int | None = None) -> None:
        """cpu_threads: the threads a CPU runtime may use (the CPUs the caller holds); None = its default."""
        self.config = config
        self.device = device or default_device()
        on_cpu = is_cpu(self.device)
        half = config.detection.half_precision and not on_cpu
        runtime = {}
        if on_cpu:
            native = {"face": "onnxruntime", "plate": "torch", "person": "torch"}
            runtime = dict(cpu_threads=cpu_threads, cpu_precision=config.detection.cpu_precision,
                           cpu_streams=config.resources.cpu_inference_streams)
        self.detectors: dict[int, object] = {}
        self.low_light: dict[int, tuple] = {}
        """Per class, what looks at dark frames a second time (low_light.py): the low-light model on each dark
        frame, and the main and the low-light model (as one detector) at the low-light input size on stacks."""
        for name in config.classes:
            cfg = getattr(config.detection, name)
            if not cfg.enabled:
                continue
            common = dict(
                input_size=cfg.input_size,
                threshold=cfg.score_floor,
                nms_iou=cfg.nms_iou,
                device=self.device,
                half=half,
                batch_size=config.detection.batch_size,
            )
            if on_cpu:
                common.update(_cpu_backend(config, runtime, native[name]))
            path = model_path(model_spec_for(config, name).name)
            if name == "face":
                det: object = CenterFace(path, **common)
            else:
                common.update(upscale=cfg.upscale, max_upscale=cfg.max_upscale)
                det = PlateDetector(path, **common)
                if cfg.coarse_input_size:  # close-up plates
                    coarse = PlateDetector(path, **dict(common, input_size=cfg.coarse_input_size, upscale=False))
                    det = CoarseLook(det, coarse, cfg.coarse_min_height, cfg.coarse_threshold, cfg.nms_iou,
                                     cfg.coarse_max_frame_share)
                if low_light_model_name(config):
                    dark_path = model_path(model_spec_for(config, name, "low_light_model").name)
                    if on_cpu:  # measured: in int8 the stacked look lost a dark dashcam plate it finds in bf16
                        common = dict(common, cpu_precision=float_precision(config.detection.cpu_precision))
                    small = dict(common, input_size=cfg.low_light_input_size)
                    stacked = Ensemble([PlateDetector(p, **small) for p in dict.fromkeys([path, dark_path])],
                                       cfg.nms_iou) if cfg.low_light_stack else None
                    self.low_light[CLASS_NAMES.index(name)] = (PlateDetector(dark_path, **common), stacked)
            self.detectors[CLASS_NAMES.index(name)] = det
        self.persons: PlateDetector | None = None
        """People (``detection.person``, class PERSON_CLASS): context for the face tracker, never masked."""
        if config.detects_people:
            person = config.detection.person
            settings = dict(input_size=person.input_size, threshold=person.threshold, nms_iou=person.nms_iou,
                            device=self.device, half=half, batch_size=config.detection.batch_size, class_count=1,
                            upscale=person.upscale, max_upscale=None)
            if on_cpu:  # in float (bf16 where native, else fp32): not quantized
                settings.update(_cpu_backend(config, runtime, native["person"]),
                                cpu_precision=float_precision(config.detection.cpu_precision))
            self.persons = PlateDetector(model_path(model_spec_for(config, "person").name), **settings)

    def model_ids(self) -> dict[str, str]:
        """The ids of the models in use, for the result record."""
        names = [model_name_for(self.config, CLASS_NAMES[c]) for c in self.detectors]
        if self.low_light:
            names.append(self.config.detection.plate.low_light_model)
        if self.persons is not None:
            names.append(self.config.detection.person.model)
        return model_ids(names)

    def detect(
        self,
        images: Sequence[np.ndarray],
        frame_indices: Sequence[int] | np.ndarray,
        source_size: tuple[int, int],
    ) -> Detections:
        """Detect every enabled class in equal-size RGB frames; boxes in source pixels, clipped."""
        if len(images) != len(frame_indices):
            raise ValueError("images and frame_indices differ in length")
        if not len(images):
            return Detections()
        src_w, src_h = source_size
        img_h, img_w = images[0].shape[:2]
        sx, sy = src_w / img_w, src_h / img_h
        frames = np.asarray(frame_indices, dtype=np.int64)
        parts = []
        for cls_id, det in self.detectors.items():
            due = frames % getattr(self.config.detection, CLASS_NAMES[cls_id]).stride == 0
            found: list = [None] * len(images)  # per image: its boxes, or None where the class is not due
            if due.any():
                due_at = np.flatnonzero(due)
                for i, boxes in zip(due_at, det.detect([images[i] for i in due_at]), strict=True):  # type: ignore[attr-defined]
                    found[i] = boxes
            if cls_id in self.low_light:  # every dark frame, due or not: the hard cases get every look
                cfg = self.config.detection.plate
                found = with_low_light_pass(images, frames, found, self.low_light[cls_id], cfg.low_light_luma,
                                            cfg.nms_iou, cfg.low_light_input_size, cfg.low_light_stack,
                                            cfg.low_light_unbrightened)
            for frame, boxes in zip(frames, found, strict=True):
                if boxes is None or not len(boxes[0]):
                    continue
                xyxy, score = boxes
                xyxy, keep = _in_source(xyxy, (sx, sy), source_size)
                keep &= passes_threshold(xyxy, score, getattr(self.config.detection, CLASS_NAMES[cls_id]))
                n = int(keep.sum())
                parts.append(Detections(
                    frame_index=np.full(n, frame, np.int64),
                    xyxy=xyxy[keep].astype(np.float32),
                    score=score[keep].astype(np.float32),
                    cls=np.full(n, cls_id, np.int64),
                ))
        if self.persons is not None:
            parts.append(self._people(images, frames, (sx, sy), source_size))
        return Detections.concat(parts)

    def _people(self, images: Sequence[np.ndarray], frames: np.ndarray, scale: tuple[float, float],
                source_size: tuple[int, int]) -> Detections:
        """Person boxes (class PERSON_CLASS, source pixels) on the frames ``detection.person.stride`` picks."""
        due_at = np.flatnonzero(frames % self.config.detection.person.stride == 0)
        if not len(due_at):
            return Detections()
        found = self.persons.detect([images[i] for i in due_at])  # type: ignore[union-attr]
        xyxy, keep = _in_source(np.concatenate([b for b, _ in found]).reshape(-1, 4), scale, source_size)
        people = Detections(frame_index=np.repeat(frames[due_at], [len(s) for _, s in found]).astype(np.int64),
                            xyxy=xyxy.astype(np.float32),
                            score=np.concatenate([s for _, s in found]).astype(np.float32),
                            cls=np.full(len(xyxy), PERSON_CLASS, np.int64))
        return people.select(keep)


def _cpu_backend(config: Config, runtime: dict, native: str) -> dict:
    """The CPU runtime settings of one detector: OpenVINO (``detection.cpu_runtime``) or its ``native`` backend,
    which takes no ``cpu_streams``."""
    backend = "openvino" if config.detection.cpu_runtime == "openvino" else native
    settings = dict(runtime, backend=backend)
    if backend != "openvino":
        settings.pop("cpu_streams")
    return settings


def _in_source(xyxy: np.ndarray, scale: tuple[float, float], source_size: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes on the detection image scaled to source pixels and clipped to the frame, and which of them still
    have an area."""
    sx, sy = scale
    xyxy = xyxy * np.array([sx, sy, sx, sy], np.float32)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, source_size[0])
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, source_size[1])
    return xyxy, (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
