"""Apply masks to decoded frames, directly on the planar YUV planes (no RGB round trip).

Styles: ``blur`` (a stack blur kept inside the region), ``pixelate`` (area-averaged blocks) and ``solid``
(the RGB colour converted with the frame's own matrix and range). Each region is masked per plane with that
plane's subsampling, erring on the safe side at chroma edges; every value outside the (chroma-aligned)
region stays bit-identical. Details: docs/design.md, "render/mask.py".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import cv2
import numpy as np

from anonray.config import MaskConfig
from anonray.render.codec.transcoder import working_pixel_format
from anonray.types import SHAPE_BOX

PLANAR_8BIT = {
    "yuv420p": (2, 2),
    "yuvj420p": (2, 2),
    "yuv422p": (2, 1),
    "yuvj422p": (2, 1),
    "yuv444p": (1, 1),
    "yuvj444p": (1, 1),
    "yuv440p": (1, 2),
    "yuvj440p": (1, 2),
    "yuv411p": (4, 1),
    "yuvj411p": (4, 1),
}
"""8-bit pixel formats mask_frame works on in place: name -> chroma subsampling (x, y)."""
PLANAR_DEEP = {f"{name}{depth}le": sub for name, sub in PLANAR_8BIT.items() if not name.startswith("yuvj")
               for depth in (10, 12)}
"""10- and 12-bit little-endian planar formats (16-bit samples, the value in the low bits), edited the same way."""
PLANAR = PLANAR_8BIT | PLANAR_DEEP

# AVColorSpace / AVColorRange values (libavutil/pixfmt.h).
_SPC_BT709 = 1
_SPC_BT470BG = 5
_SPC_SMPTE170M = 6
_SPC_BT2020 = (9, 10)
_RANGE_JPEG = 2

_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


@dataclass(frozen=True)
class _Region:
    """A region aligned to the chroma grid, in luma pixels: [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int
    luma_mask: np.ndarray
    """bool (y1-y0, x1-x0): luma pixels inside the shape."""


def enlarge_boxes(xyxy: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """Scale xyxy boxes about their centres by ``factor`` and clip them to the frame."""
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) * factor / 2
    hh = (boxes[:, 3] - boxes[:, 1]) * factor / 2
    out = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out.astype(np.float32)


def matrix_for(colorspace: int, height: int) -> str:
    """The Y'CbCr matrix name for a frame: its own tag where known, else by size (HD = BT.709)."""
    if colorspace == _SPC_BT709:
        return "bt709"
    if colorspace in _SPC_BT2020:
        return "bt2020"
    if colorspace in (_SPC_BT470BG, _SPC_SMPTE170M):
        return "bt601"
    return "bt709" if height >= 720 else "bt601"


def rgb_to_yuv(rgb: tuple[int, int, int], matrix: str, full_range: bool, depth: int = 8) -> tuple[int, int, int]:
    """Convert an 8-bit R'G'B' colour to Y'CbCr samples of ``depth`` bits with the given matrix and range."""
    kr, kb = _KR_KB[matrix]
    r, g, b = (c / 255.0 for c in rgb)
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - y) / (2 * (1 - kb))
    cr = (r - y) / (2 * (1 - kr))
    top = (1 << depth) - 1
    if full_range:
        vals = (y * top, (1 << (depth - 1)) + cb * top, (1 << (depth - 1)) + cr * top)
    else:
        unit = 1 << (depth - 8)  # limited range: 8-bit levels 16..235 / 16..240, scaled (BT.2100)
        vals = ((16 + y * 219) * unit, (128 + cb * 224) * unit, (128 + cr * 224) * unit)
    return tuple(int(np.clip(round(v), 0, top)) for v in vals)  # type: ignore[return-value]


def is_full_range(frame: av.VideoFrame) -> bool:
    """True for full-range (JPEG) frames: yuvj* formats or a frame flagged full range."""
    return frame.format.name.startswith("yuvj") or frame.color_range == _RANGE_JPEG


def sample_depth(frame: av.VideoFrame) -> int:
    """Bits per sample of a planar frame (8, 10 or 12)."""
    return int(frame.format.components[0].bits)


def sample_depth_of(pixel_format: str) -> int | None:
    """Bits per luma sample of a pixel format by name; None for an unknown name."""
    try:
        return int(av.VideoFormat(pixel_format, 2, 2).components[0].bits)
    except (ValueError, av.error.FFmpegError):
        return None


def _plane_view(plane: av.video.plane.VideoPlane, depth: int = 8) -> np.ndarray:
    """A writable (height, width) view on a plane's memory (line padding cut off): uint8 samples, or uint16
    for deeper ones."""
    dtype = np.dtype(np.uint8 if depth <= 8 else "<u2")
    buf = np.frombuffer(plane, dtype=dtype)
    return buf.reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width]


def _region(box: np.ndarray, shape: int, width: int, height: int, sub: tuple[int, int]) -> _Region | None:
    """Rasterise one box/ellipse in luma pixels over a chroma-aligned bounding rectangle."""
    bx0, by0, bx1, by1 = (float(v) for v in box)
    bx0, bx1 = max(0.0, bx0), min(float(width), bx1)
    by0, by1 = max(0.0, by0), min(float(height), by1)
    if not (bx1 > bx0 and by1 > by0):
        return None
    sx, sy = sub
    x0 = (int(math.floor(bx0)) // sx) * sx
    y0 = (int(math.floor(by0)) // sy) * sy
    x1 = min(-(-int(math.ceil(bx1)) // sx) * sx, -(-width // sx) * sx)
    y1 = min(-(-int(math.ceil(by1)) // sy) * sy, -(-height // sy) * sy)
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    if shape == SHAPE_BOX:
        inx = (xs > math.floor(bx0)) & (xs < math.ceil(bx1))
        iny = (ys > math.floor(by0)) & (ys < math.ceil(by1))
        mask = iny[:, None] & inx[None, :]
    else:
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        rx, ry = max((bx1 - bx0) / 2, 0.5), max((by1 - by0) / 2, 0.5)
        mask = ((ys[:, None] - cy) / ry) ** 2 + ((xs[None, :] - cx) / rx) ** 2 <= 1.0
    mask &= (xs[None, :] < width) & (ys[:, None] < height)
    if not mask.any():
        return None
    return _Region(x0, y0, x1, y1, mask)


def _subsample_mask(mask: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """A chroma mask: a sample is in when any luma pixel it covers is in."""
    if fx == 1 and fy == 1:
        return mask
    out = mask[0::fy, 0::fx].copy()  # an OR of strided views: much faster than reshape(...).any()
    for dy in range(fy):
        for dx in range(fx):
            if dy or dx:
                out |= mask[dy::fy, dx::fx]
    return out


def _odd(n: float) -> int:
    k = max(3, int(n))
    return k if k % 2 else k + 1


def _blur(crop: np.ndarray) -> np.ndarray:
    k = _odd(max(crop.shape) / 2)
    out = cv2.stackBlur(crop, (k, k))
    return cv2.stackBlur(out, (k, k))


def _pixelate(crop: np.ndarray, blocks: int) -> np.ndarray:
    h, w = crop.shape
    long_side = max(h, w)
    nx = max(1, round(blocks * w / long_side))
    ny = max(1, round(blocks * h / long_side))
    small = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _fill_plane(plane: np.ndarray, region: _Region, mask: np.ndarray, fx: int, fy: int,
                style: str, value: int, blocks: int) -> None:
    """Mask one region in one plane (plane coordinates = luma // subsampling)."""
    px0, py0 = region.x0 // fx, region.y0 // fy
    ph, pw = mask.shape
    view = plane[py0 : py0 + ph, px0 : px0 + pw]
    mask = mask[: view.shape[0], : view.shape[1]]
    if style == "solid":
        np.copyto(view, value, where=mask)
        return
    crop = np.ascontiguousarray(view)
    done = _blur(crop) if style == "blur" else _pixelate(crop, blocks)
    np.copyto(view, done, where=mask)


def working_frame(frame: av.VideoFrame, pixel_format: str | None = None) -> av.VideoFrame:
    """The frame in a planar YUV format mask_frame edits in place (PLANAR; converted only if needed), or in
    ``pixel_format`` (one of PLANAR) when given."""
    if frame.format.name == pixel_format or (pixel_format is None and frame.format.name in PLANAR):
        return frame
    fmt, full = working_pixel_format(frame.format.name, frame.width, frame.height)
    fmt = pixel_format or fmt
    rng = "JPEG" if full or frame.color_range == _RANGE_JPEG else "MPEG"
    out = frame.reformat(format=fmt, src_color_range=rng, dst_color_range=rng)
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


def luma_samples(frame: av.VideoFrame, pixel_format: str | None = None) -> np.ndarray:
    """A copy of the frame's luma plane (uint8, or uint16 above 8 bits) in ``pixel_format`` (a PLANAR name; by
    default the frame's own planar format, or the working one where it is in another)."""
    frame = working_frame(frame, pixel_format)
    return _plane_view(frame.planes[0], sample_depth(frame)).copy()


def mask_frame(frame: av.VideoFrame, boxes: np.ndarray, shapes: np.ndarray, cfg: MaskConfig) -> av.VideoFrame:
    """Mask every region of one frame; pts/time_base are kept and pixels outside are untouched.

    boxes: (n, 4) xyxy in source pixels (already margin-enlarged); shapes: (n,) SHAPE_ELLIPSE or
    SHAPE_BOX. The frame is edited in place where its buffer allows (made writable first).
    """
    frame = working_frame(frame)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    shapes = np.asarray(shapes).reshape(-1)
    if len(boxes) == 0:
        return frame
    sub = PLANAR[frame.format.name]
    regions = [_region(b, int(s), frame.width, frame.height, sub) for b, s in zip(boxes, shapes, strict=True)]
    regions = [r for r in regions if r is not None]
    if not regions:
        return frame
    frame.make_writable()
    depth = sample_depth(frame)
    yuv = rgb_to_yuv(cfg.rgb(), matrix_for(frame.colorspace, frame.height), is_full_range(frame), depth)
    chroma_masks = [_subsample_mask(region.luma_mask, *sub) for region in regions]  # the same for U and V
    for idx, plane in enumerate(frame.planes[:3]):
        fx, fy = (1, 1) if idx == 0 else sub
        view = _plane_view(plane, depth)
        for region, chroma in zip(regions, chroma_masks, strict=True):
            mask = region.luma_mask if idx == 0 else chroma
            _fill_plane(view, region, mask, fx, fy, cfg.style, yuv[idx], cfg.pixel_blocks)
    return frame


def fill_whole_frame(frame: av.VideoFrame, cfg: MaskConfig) -> av.VideoFrame:
    """Fill the whole picture with the solid mask colour (``cfg.color``, whatever ``cfg.style``).

    For frames that detection never analysed (input.on_damage = mask_whole_frame): nothing of the
    picture survives, not even blurred; pts/time_base are kept.
    """
    frame = working_frame(frame)
    frame.make_writable()
    depth = sample_depth(frame)
    yuv = rgb_to_yuv(cfg.rgb(), matrix_for(frame.colorspace, frame.height), is_full_range(frame), depth)
    for idx, plane in enumerate(frame.planes[:3]):
        _plane_view(plane, depth)[:] = yuv[idx]
    return frame


def rasterize_regions(boxes: np.ndarray, shapes: np.ndarray, width: int, height: int) -> np.ndarray:
    """bool (height, width): the luma pixels the given regions cover (the same geometry masking uses)."""
    out = np.zeros((height, width), bool)
    for box, shape in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(shapes).reshape(-1), strict=True):
        region = _region(box, int(shape), width, height, (1, 1))
        if region is not None:
            out[region.y0:region.y1, region.x0:region.x1] |= region.luma_mask
    return out
