"""Mask application on synthetic YUV frames: solid colour, blur, pixelate, untouched surroundings."""

from __future__ import annotations

import av
import numpy as np
import pytest
from _clips import textured_rgb

from anonray.config import MaskConfig
from anonray.render.mask import enlarge_boxes, mask_frame, matrix_for, rgb_to_yuv
from anonray.types import SHAPE_BOX, SHAPE_ELLIPSE


def _frame(width: int, height: int, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(textured_rgb(width, height, seed=3), format="rgb24").reformat(
        format=pix_fmt
    )
    frame.pts = 1234
    return frame


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy()
        for p in frame.planes
    ]


def _ellipse_mask(box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24").astype(int)


@pytest.mark.parametrize(
    ("width", "height", "pix_fmt"),
    [(320, 240, "yuv420p"), (1280, 720, "yuv420p"), (320, 240, "yuv422p"), (321, 241, "yuv444p")],
)
def test_solid_ellipse_colour_and_untouched_outside(width: int, height: int, pix_fmt: str) -> None:
    frame = _frame(width, height, pix_fmt)
    before = _planes(frame)
    box = (61.0, 41.0, 201.0, 181.0)  # odd edges on purpose
    cfg = MaskConfig(style="solid", color="3080c0")
    out = mask_frame(frame, np.array([box]), np.array([SHAPE_ELLIPSE]), cfg)
    assert out.pts == 1234 and out.format.name == pix_fmt
    inside = _ellipse_mask(box, width, height)
    rgb = _to_rgb(out)
    close = np.abs(rgb[inside] - np.array(cfg.rgb())).max(axis=1) <= 6
    assert close.mean() >= 0.99
    after = _planes(out)
    # luma outside the ellipse: bit-identical; every plane outside the chroma-aligned box: identical
    assert np.array_equal(after[0][~inside], before[0][~inside])
    sub = {"yuv420p": 2, "yuv422p": 2, "yuv444p": 1}[pix_fmt]
    suby = 2 if pix_fmt == "yuv420p" else 1
    for b, a in zip(before[1:], after[1:], strict=True):
        outside = np.ones_like(b, dtype=bool)
        outside[40 // suby : -(-182 // suby), 60 // sub : -(-202 // sub)] = False
        assert np.array_equal(a[outside], b[outside])


def test_solid_box_exact_region() -> None:
    frame = _frame(160, 120)
    before = _planes(frame)
    cfg = MaskConfig(style="solid", color="ffffff")
    out = mask_frame(frame, np.array([[10.0, 20.0, 50.0, 60.0]]), np.array([SHAPE_BOX]), cfg)
    y = _planes(out)[0]
    assert (y[20:60, 10:50] == 235).all()
    keep = np.ones_like(y, dtype=bool)
    keep[20:60, 10:50] = False
    assert np.array_equal(y[keep], before[0][keep])


def test_blur_destroys_detail_inside_only() -> None:
    frame = _frame(320, 240)
    before = _planes(frame)
    box = (100.0, 60.0, 220.0, 200.0)
    out = mask_frame(frame, np.array([box]), np.array([SHAPE_ELLIPSE]), MaskConfig(style="blur"))
    after = _planes(out)
    inside = _ellipse_mask(box, 320, 240)
    # high-frequency energy (the 8-px checkerboard) must be gone inside
    def detail(plane: np.ndarray) -> float:
        return float(np.abs(np.diff(plane.astype(int), axis=1))[inside[:, 1:]].mean())
    assert detail(after[0]) < 0.1 * detail(before[0])
    assert np.array_equal(after[0][~inside], before[0][~inside])


def test_pixelate_gives_blocks() -> None:
    frame = _frame(320, 240)
    box = (64.0, 64.0, 192.0, 192.0)
    cfg = MaskConfig(style="pixelate", pixel_blocks=8)
    out = mask_frame(frame, np.array([box]), np.array([SHAPE_BOX]), cfg)
    y = _planes(out)[0][64:192, 64:192]
    blocks = y.reshape(8, 16, 8, 16)
    assert (blocks == blocks[:, :1, :, :1]).all()  # each 16x16 block is one value
    assert len(np.unique(blocks[:, 0, :, 0])) > 4


def test_boxes_outside_or_empty_are_no_ops() -> None:
    frame = _frame(64, 48)
    before = _planes(frame)
    boxes = np.array([[-50.0, -50.0, -10.0, -10.0], [30.0, 30.0, 30.0, 40.0]])
    out = mask_frame(frame, boxes, np.array([SHAPE_BOX, SHAPE_ELLIPSE]), MaskConfig(style="solid"))
    assert all(np.array_equal(a, b) for a, b in zip(_planes(out), before, strict=True))
    out = mask_frame(frame, np.zeros((0, 4)), np.zeros(0), MaskConfig())
    assert all(np.array_equal(a, b) for a, b in zip(_planes(out), before, strict=True))


def test_box_clipped_at_frame_edge() -> None:
    frame = _frame(64, 48)
    out = mask_frame(frame, np.array([[40.0, 30.0, 90.0, 80.0]]), np.array([SHAPE_BOX]),
                     MaskConfig(style="solid", color="000000"))
    y = _planes(out)[0]
    assert (y[30:, 40:] == 16).all()


def test_non_planar_input_is_converted() -> None:
    frame = av.VideoFrame.from_ndarray(textured_rgb(64, 48), format="rgb24")
    frame.pts = 7
    boxes = np.array([[8.0, 8.0, 24.0, 24.0]])
    out = mask_frame(frame, boxes, np.array([SHAPE_BOX]), MaskConfig(style="solid"))
    assert out.format.name == "yuv420p" and out.pts == 7


def test_colour_conversion_matrices() -> None:
    assert rgb_to_yuv((255, 255, 255), "bt601", False) == (235, 128, 128)
    assert rgb_to_yuv((0, 0, 0), "bt709", True) == (0, 128, 128)
    assert rgb_to_yuv((255, 0, 0), "bt601", False) == (81, 90, 240)
    assert rgb_to_yuv((255, 0, 0), "bt709", False) == (63, 102, 240)
    assert matrix_for(2, 1080) == "bt709" and matrix_for(2, 480) == "bt601"
    assert matrix_for(1, 480) == "bt709" and matrix_for(6, 1080) == "bt601"


def test_enlarge_boxes_scales_about_centre_and_clips() -> None:
    out = enlarge_boxes(np.array([[40.0, 40.0, 60.0, 50.0], [0.0, 0.0, 20.0, 20.0]]), 2.0, 100, 100)
    np.testing.assert_allclose(out[0], [30, 35, 70, 55])
    np.testing.assert_allclose(out[1], [0, 0, 30, 30])


def test_rasterize_regions_matches_what_masking_paints():
    from anonray.render.mask import rasterize_regions

    width, height = 96, 64
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv444p")
    boxes = np.array([[10.3, 5.2, 40.7, 30.9], [50, 20, 95.5, 70]], np.float32)
    shapes = np.array([SHAPE_ELLIPSE, SHAPE_BOX])
    cfg = MaskConfig(style="solid", color="ffffff")
    before = frame.to_ndarray(format="yuv444p")[0].copy()
    painted = mask_frame(frame, boxes, shapes, cfg).to_ndarray(format="yuv444p")[0] != before
    np.testing.assert_array_equal(painted, rasterize_regions(boxes, shapes, width, height))
