"""apply with encoder.passthrough: only the current output's GOPs whose masks change are rendered again."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from _video_checks import analysed_video, decode_frames, mask_pixels, solid_config

from anonray.corrections.plan_edit import changed_frames
from anonray.render.codec.splice import SpliceSource
from anonray.render.video import render_video
from anonray.testing.samples import write_sample_video
from anonray.types import REGION_CLASS_NAMES, SHAPE_BOX, MaskPlan


def _encode_with_gops(source: Path, dst: Path, gop: int) -> None:
    """A stand-in for an earlier output: the source re-encoded with an IDR every ``gop`` frames, same pts."""
    with av.open(str(source)) as inp, av.open(str(dst), "w") as out:
        src = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=src.average_rate)
        stream.width, stream.height, stream.pix_fmt = src.width, src.height, "yuv420p"
        stream.time_base = src.time_base
        stream.codec_context.time_base = src.time_base
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0", "crf": "20"}
        for frame in inp.decode(src):
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _idr_frames(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    order = sorted(p.pts for p in packets)
    return sorted(order.index(p.pts) for p in packets if p.is_keyframe)


def test_only_the_gops_whose_masks_change_are_rendered_again(tmp_path):
    source = tmp_path / "in" / "clip.mp4"
    source.parent.mkdir()
    write_sample_video(source, format="h264_mp4", frames=100, audio=False)
    out = tmp_path / "out"
    out.mkdir()
    _encode_with_gops(source, out / "clip.mp4", gop=25)
    assert _idr_frames(out / "clip.mp4") == [0, 25, 50, 75]
    _, before, _, _ = decode_frames(out / "clip.mp4")

    video = analysed_video(source, "clip.mp4")
    old = MaskPlan(100)
    frames = np.arange(30, 35)
    new = MaskPlan(100, frames, np.tile(np.array([[0, 0, 60, 40]], np.float32), (5, 1)),
                   np.full(5, REGION_CLASS_NAMES.index("screen")), np.full(5, SHAPE_BOX), np.full(5, -1))
    changed = changed_frames(old, new)
    assert changed.tolist() == list(range(30, 35))
    config = solid_config(**{"encoder.passthrough": True})
    result = render_video(video, config, out, out / "_anonray", plan=new,
                          splice=SpliceSource(out / "clip.mp4", changed))
    assert (result.passthrough.gops_copied, result.passthrough.frames_copied) == (3, 75)

    _, after, _, _ = decode_frames(out / "clip.mp4")
    assert len(after) == 100
    for k in range(100):
        if not 25 <= k < 50:
            assert np.array_equal(after[k], before[k]), k  # copied bit-exact from the current output
        masked = mask_pixels(after[k])[2:38, 2:58].mean()
        assert (masked > 0.97) == (30 <= k <= 34), k
