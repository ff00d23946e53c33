"""Batching helpers: letterbox geometry, batch tensors on the device, chunking."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Letterbox:
    """How an image of (w, h) maps into a detector input: resized to (new_w, new_h), padded right and
    bottom to (pad_w, pad_h); detector coordinates / scale = image coordinates."""

    w: int
    h: int
    new_w: int
    new_h: int
    pad_w: int
    pad_h: int

    @property
    def scale_x(self) -> float:
        return self.new_w / self.w

    @property
    def scale_y(self) -> float:
        return self.new_h / self.h


def letterbox(w: int, h: int, input_size: int, *, upscale: bool = False, stride: int = 32) -> Letterbox:
    """Long side -> input_size (aspect kept; never above the image size unless upscale), padded to stride."""
    scale = input_size / max(w, h)
    if not upscale:
        scale = min(scale, 1.0)
    new_w = max(1, round(w * scale))
    new_h = max(1, round(h * scale))
    pad_w = -(-new_w // stride) * stride
    pad_h = -(-new_h // stride) * stride
    return Letterbox(w, h, new_w, new_h, pad_w, pad_h)


def batch_tensor(
    images: Sequence[np.ndarray], box: Letterbox, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Stack equal-size HxWx3 uint8 images into an NCHW float tensor (0..255) laid out per ``box``.

    The resize runs on the device (bilinear, antialiased when shrinking); padding is zeros.
    """
    import torch
    import torch.nn.functional as F

    arr = np.stack(images) if len(images) > 1 else images[0][None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(torch.float32)
    if (box.new_w, box.new_h) != (box.w, box.h):
        shrink = box.new_w < box.w or box.new_h < box.h
        x = F.interpolate(x, size=(box.new_h, box.new_w), mode="bilinear", align_corners=False,
                          antialias=shrink)
        x = x.clamp_(0.0, 255.0)
    if (box.pad_w, box.pad_h) != (box.new_w, box.new_h):
        x = F.pad(x, (0, box.pad_w - box.new_w, 0, box.pad_h - box.new_h))
    return x.to(dtype).contiguous()


def group_by_shape(images: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the images grouped by their shape (batches need equal shapes)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    return groups


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in steps of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def is_cpu(device: str) -> bool:
    """Whether a torch-style device string ("cpu", "cuda:1", ...) names the CPU."""
    return str(device).split(":")[0] == "cpu"


def check_rgb_uint8(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
