"""Licence-plate detector: a YOLOv8n checkpoint run through ultralytics, fully offline. The person network of
``detection.person`` (a YOLO pose checkpoint) runs through it too, its person boxes only (``class_count``).

ultralytics letterboxes every image to ``imgsz`` itself, upscaling small images too (``upscale``, the default
through ``detection.plate.upscale``), here at most ``max_upscale`` times (a 480x270 frame: 960, not 1280); with
it off the input is sized to the image instead (its long side rounded up to the network stride, at most
``input_size``), cheaper on small frames. Boxes come back in the coordinates of the image passed in. On the CPU
the network runs in OpenVINO (openvino_cpu.py, bf16 where the CPU has it: far faster than torch fp32) with
ultralytics' letterbox, NMS and box scaling redone in numpy and OpenCV around it (yolo.py), so both paths keep
the same geometry and the CPU path needs neither torch nor ultralytics once the network's OpenVINO IR is made
(``openvino_ir``, by ``prepare_cpu_runtime`` before a run).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from anonray.detect import yolo
from anonray.detect.calibration import calibration_frames
from anonray.detect.int8 import cpu_network
from anonray.detect.letterbox import check_rgb_uint8, chunks, is_cpu
from anonray.detect.openvino_cpu import CpuPrecision, core

if TYPE_CHECKING:
    import torch

Boxes = tuple[np.ndarray, np.ndarray]
IR_LAYOUT = "ir1"
"""Bumped when what openvino_ir writes changes, so that an IR made by an older anonray is made again."""
STRIDE_INFO = ("anonray", "stride")
"""Where the OpenVINO IR keeps the network's largest stride (the letterbox pads to a multiple of it)."""
CALIBRATION_INPUT_SIZE = 1280
"""The letterbox of the int8 calibration inputs (fixed, so that the int8 network does not depend on settings)."""


# ultralytics decides at import time whether it is online (a DNS probe) and, if so, may send
# analytics or fetch assets; forcing offline mode before its first import stops all of that.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_VERBOSE", "False")


def _offline_ultralytics():
    """Import ultralytics with its network features off."""
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    return YOLO


class PlateDetector:
    """Batched plate detection: ``detect(images) -> [(xyxy, score), ...]``."""

    def __init__(
        self,
        model_path: Path,
        *,
        input_size: int = 1280,
        threshold: float = 0.25,
        nms_iou: float = 0.5,
        device: str = "cpu",
        half: bool = False,
        batch_size: int = 8,
        backend: Literal["auto", "torch", "openvino"] = "auto",
        cpu_threads: int | None = None,
        cpu_precision: CpuPrecision = "auto",
        cpu_streams: int = 1,
        upscale: bool = True,
        max_upscale: float | None = None,
        class_count: int | None = None,
    ) -> None:
        """backend 'auto' = OpenVINO on the CPU, torch (through ultralytics) elsewhere; upscale: letterbox
        images smaller than ``input_size`` up to it (ultralytics' own behaviour) rather than to their size,
        at most ``max_upscale`` times their size (None: up to ``input_size`` whatever the factor); class_count:
        the network's class channels, where more channels follow them (a pose network's keypoints)."""
        self.class_count = class_count
        self.model = None
        self.input_size = input_size
        self.upscale = upscale
        self.max_upscale = max_upscale
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.device = str(device)
        on_cpu = is_cpu(self.device)
        self.half = bool(half and self.device.startswith("cuda"))
        self.batch_size = batch_size
        if backend == "auto":
            backend = "openvino" if on_cpu else "torch"
        if backend == "openvino" and not on_cpu:
            raise ValueError("the openvino backend runs on the CPU only")
        self.backend = backend
        self._openvino = None
        if backend == "openvino":  # the checkpoint is loaded only to convert it, once (openvino_ir)
            float_base = read_openvino_ir(openvino_ir(model_path))
            self.stride = stride = int(float_base.get_rt_info(list(STRIDE_INFO)).astype(int))
            self._openvino = cpu_network(model_path, float_base, cpu_precision, cpu_threads, cpu_streams, 255.0,
                                         lambda: calibration_inputs(stride), float_layers=int8_float_layers)
        else:
            # a .pt checkpoint names its own task (a pose network runs as one: its boxes are read, class_count
            # checked); "detect" only where a file leaves it open
            self.model = _offline_ultralytics()(str(model_path), task=None if class_count else "detect")
            if class_count is not None and len(self.model.names) != class_count:
                raise ValueError(f"{model_path.name} has {len(self.model.names)} classes, expected {class_count}")
            self.stride = int(self.model.model.stride.max())

    def network_size(self, image: np.ndarray) -> int:
        """The size an image's long side is letterboxed to (padded to that square, or only to the stride
        when a batch shares one shape): ``input_size``, but never more than the image's long side times
        ``max_upscale`` (with ``upscale`` off: times 1), rounded up to the stride."""
        if self.upscale and self.max_upscale is None:
            return self.input_size
        factor = self.max_upscale if self.upscale else 1.0
        return min(self.input_size, -(-math.ceil(max(image.shape[:2]) * factor) // self.stride) * self.stride)

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """Plates in each HxWx3 uint8 RGB image, in that image's pixel coordinates."""
        for img in images:
            check_rgb_uint8(img)
        if self._openvino is not None:
            return [box for part in chunks(len(images), self.batch_size)
                    for box in self._detect_openvino(images[part])]
        out: list[Boxes] = []
        for part in chunks(len(images), self.batch_size):
            bgr = [np.ascontiguousarray(img[:, :, ::-1]) for img in images[part]]
            results = self.model.predict(
                bgr,
                imgsz=max(self.network_size(img) for img in bgr),
                conf=self.threshold,
                iou=self.nms_iou,
                device=self.device,
                half=self.half,
                verbose=False,
                save=False,
            )
            for r in results:
                boxes = r.boxes
                out.append((
                    boxes.xyxy.float().cpu().numpy().astype(np.float32).reshape(-1, 4),
                    boxes.conf.float().cpu().numpy().astype(np.float32),
                ))
        return out

    def _detect_openvino(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """ultralytics' predict steps (letterbox, RGB 0..1, NMS, scale back; yolo.py) around the OpenVINO
        network."""
        same_shape = len({img.shape for img in images}) == 1
        size = max(self.network_size(img) for img in images)
        padded = np.stack([yolo.letterbox(img, size, self.stride, same_shape) for img in images])
        preds = self._openvino(padded)[0]  # uint8 NHWC in (RGB already: the network's order); /255 in the graph
        if self.class_count is not None:  # boxes and class scores only (a pose network's keypoints follow them)
            preds = preds[:, :4 + self.class_count]
        kept = yolo.non_max_suppression(preds, self.threshold, self.nms_iou)
        return [(yolo.scale_boxes(padded.shape[1:3], xyxy, img.shape), score)
                for img, (xyxy, score) in zip(images, kept, strict=True)]


def openvino_ir(model_path: Path) -> Path:
    """The plate network as an OpenVINO IR with a dynamic input shape, converted once (about 10 s) and
    kept beside the verified model file (per OpenVINO version); ``anonray models pull`` makes it."""
    import openvino as ov

    folder = f"openvino-{ov.get_version().split('-')[0]}-{IR_LAYOUT}"
    target = model_path.parent / folder / f"{model_path.stem}.xml"
    if target.is_file() and target.with_suffix(".bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    network = _offline_ultralytics()(str(model_path), task="detect").model
    model = _convert_to_openvino(network)
    model.set_rt_info(str(int(network.stride.max())), list(STRIDE_INFO))
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), target.with_suffix(".bin"))  # weights first, then the graph
        os.replace(staged, target)
    return target


def int8_float_layers(model) -> list[str]:
    """The layers the int8 plate network keeps in float (measured, models/README.md "int8 on the CPU"): its
    first convolution (int8 there cost a real dashcam plate 0.70 -> 0.52 in score) and the head's box branch
    and box decoding (int8 there shifted boxes: planted plates 83-89% covered; mean IoU with them 0.74 against
    fp32's 0.80, 0.81 with these in float). The head is the module of the network's last Sigmoid."""
    ops = model.get_ordered_ops()
    first = next(op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution")
    head = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"][-1].split("/", 1)[0]
    box = (f"{head}/", f"{head}.dfl", f"{head}.cv2")
    return [first] + [op.get_friendly_name() for op in ops
                      if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith(box)]


def calibration_inputs(stride: int) -> Iterator[np.ndarray]:
    """The network's inputs (NHWC uint8 batches of one) for the int8 calibration frames (calibration.py)."""
    for frame in calibration_frames():
        yield yolo.letterbox(frame, CALIBRATION_INPUT_SIZE, stride, True)[None]


def read_openvino_ir(path: Path):
    return core().read_model(str(path))


def _convert_to_openvino(network: torch.nn.Module):
    """Trace the YOLO network with a dynamic input (its head computing anchors from the feature shapes,
    as ultralytics' own dynamic export does) and convert it to an OpenVINO model."""
    import warnings

    import openvino as ov
    import torch

    class _PredictionsOnly(torch.nn.Module):
        """The YOLO network returning only its prediction tensor (B, 4 + classes, anchors), for tracing."""

        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.network(x)
            return out[0] if isinstance(out, (tuple, list)) else out

    network = network.float().eval()
    network.model[-1].dynamic = True
    example = torch.zeros(1, 3, 640, 640)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        return ov.convert_model(_PredictionsOnly(network), example_input=example, input=[-1, 3, -1, -1])
