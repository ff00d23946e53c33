"""Outputs true to the archive: the source's codec family, bit depth and colour tags, its HDR metadata, a bounded
video bitrate, and the fidelity outside the masks (PSNR) measured and flagged. Asserted on decoded output."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from _clips import ClipSpec, write_clip
from _video_checks import analysed_video, solid_config

from anonray.config import Config
from anonray.ingest.hdr import content_light_level, mastering_display
from anonray.ingest.probe import probe
from anonray.qa.checks import OutputRead, inspect_output, picture_format_problems
from anonray.qa.fidelity import MAX_PSNR_DB, psnr_outside_masks, sampled_indices, source_luma
from anonray.records.rows import run_figures
from anonray.render.codec.settings import VBV_INITIAL_FULLNESS, encoder_for, encoder_options, rate_cap
from anonray.render.mask import rgb_to_yuv
from anonray.render.video import mask_plan, render_video
from anonray.types import SHAPE_BOX, Detections, MaskPlan

BOX = (64, 32, 128, 96)
"""A plate on every frame: a solid magenta box."""
HLG_BT2020 = (9, 18, 9, 1)
"""BT.2020 primaries, ARIB STD-B67 (HLG) transfer, BT.2020 non-constant matrix, limited range."""
PQ_BT2020 = (9, 16, 9, 1)
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
X265_QUIET = {"crf": "16", "x265-params": "log-level=error"}
"""A source of archive quality (CRF 16): the bitrate cap leaves its re-encode room."""


def with_plate(path: Path):
    video = analysed_video(path, path.name, target_seconds=0.4)
    n = video.info.frame_count
    video.detections = Detections(np.arange(n), np.tile(np.asarray(BOX, np.float32), (n, 1)),
                                  np.full(n, 0.9, np.float32), np.ones(n, np.int64))
    return video


def render(tmp_path: Path, spec: ClipSpec, name: str, **overrides):
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    src = write_clip(tmp_path / "in" / name, spec)
    video = with_plate(src)
    out = tmp_path / "out"
    result = render_video(video, solid_config(**overrides), out, out / "_anonray")
    return video, result, out / result.output_path


def first_frame(path: Path) -> tuple[av.VideoFrame, str, tuple[int, int, int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        cc = stream.codec_context
        return frame, cc.name, (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range)


def luma(frame: av.VideoFrame) -> np.ndarray:
    dtype = np.uint8 if frame.format.components[0].bits == 8 else np.dtype("<u2")
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype).reshape(plane.height, -1)
    return rows[:, : plane.width]


def test_10bit_hlg_hevc_comes_out_10bit_hevc_with_its_colour_tags(tmp_path: Path) -> None:
    spec = ClipSpec(fmt="mp4", vcodec="libx265", pix_fmt="yuv420p10le", width=192, height=128, frames=25,
                    acodec=None, colour=HLG_BT2020, options=X265_QUIET)
    video, result, out = render(tmp_path, spec, "hlg.mp4")
    assert video.info.bit_depth == 10 and result.video_codec_out == "hevc"
    frame, codec, colour = first_frame(out)
    assert codec == "hevc" and frame.format.name == "yuv420p10le" and colour == HLG_BT2020
    y = luma(frame)
    magenta_y = rgb_to_yuv((255, 0, 255), "bt2020", False, 10)[0]
    inside = y[BOX[1] + 4:BOX[3] - 4, BOX[0] + 4:BOX[2] - 4]
    assert np.abs(inside.astype(int) - magenta_y).max() <= 8  # 10-bit samples: 4x the 8-bit tolerance of 2
    assert y.max() > 255  # real 10-bit values, not 8-bit ones in 16-bit words
    assert result.pixel_format_out == "yuv420p10le"
    assert result.psnr_outside_masks is not None and result.psnr_outside_masks > 35
    assert "low_fidelity" not in result.qa_flags


def test_8bit_h264_comes_out_8bit_h264(tmp_path: Path) -> None:
    spec = ClipSpec(width=192, height=128, frames=25, acodec=None, colour=(1, 1, 1, 1))
    video, result, out = render(tmp_path, spec, "h264.mp4")
    frame, codec, colour = first_frame(out)
    assert codec == "h264" and frame.format.name == "yuv420p" and colour == (1, 1, 1, 1)
    assert result.video_codec_out == "h264" and result.psnr_outside_masks > 35


def test_other_codecs_and_forced_encoders() -> None:
    assert encoder_for("auto", "h264") == "libx264" and encoder_for("auto", "hevc") == "libx265"
    assert encoder_for("auto", "mpeg4") == encoder_for("auto", "vp9") == "libx264"
    assert encoder_for("libx265", "h264") == "libx265" and Config().encoder.codec == "auto"


def test_hdr10_metadata_is_carried_into_the_reencoded_video(tmp_path: Path) -> None:
    params = f"crf=16:log-level=error:master-display={MASTERING}:max-cll=1000,400"
    spec = ClipSpec(fmt="matroska", vcodec="libx265", pix_fmt="yuv420p10le", width=192, height=128, frames=25,
                    acodec=None, colour=PQ_BT2020, options={"x265-params": params})
    video, result, out = render(tmp_path, spec, "pq.mkv")
    assert video.info.mastering_display == MASTERING and video.info.content_light_level == "1000,400"
    frame, _, colour = first_frame(out)
    assert colour == PQ_BT2020
    assert mastering_display(frame) == MASTERING and content_light_level(frame) == "1000,400"


def test_qa_names_a_changed_bit_depth_and_colour_tag(tmp_path: Path) -> None:
    spec = ClipSpec(fmt="mp4", vcodec="libx265", pix_fmt="yuv420p10le", width=192, height=128, frames=10,
                    acodec=None, colour=HLG_BT2020, options=X265_QUIET)
    info, _ = probe(write_clip(tmp_path / "hlg.mp4", spec), "hlg.mp4", 2.0)
    same = OutputRead(pixel_format="yuv420p10le", colour=HLG_BT2020)
    assert picture_format_problems(same, info, "libx265") == []
    eight_bit_sdr = OutputRead(pixel_format="yuv420p", colour=(9, 1, 9, 1))
    problems = picture_format_problems(eight_bit_sdr, info, "libx265")
    assert len(problems) == 2
    assert "pixel format is yuv420p, yuv420p10le was expected" in problems[0] and "transfer" in problems[1]
    unset = OutputRead(pixel_format="yuv420p", colour=(2, 2, 2, 0))
    tagged_unset = info.__class__(**{**info.__dict__, "pixel_format": "yuv420p", "bit_depth": 8,
                                     "color_primaries": 2, "color_transfer": 2, "color_space": 2, "color_range": 1})
    assert picture_format_problems(unset, tagged_unset, "libx264") == []  # unspecified = limited range


def noisy_low_rate_clip(seconds: float) -> ClipSpec:
    """Noise coded at a low bitrate: a CRF 20 re-encode of its decoded frames comes out larger than it."""
    frames = int(seconds * 25)
    return ClipSpec(width=192, height=128, frames=frames, acodec=None, noise=40,
                    options={"b": "300k", "maxrate": "300k", "bufsize": "300k",
                             "x264-params": "keyint=25:min-keyint=25:log-level=error"})


def video_bitrate(path: Path) -> float:
    info, _ = probe(path, path.name, 2.0)
    assert info.video_bitrate is not None
    return info.video_bitrate


@pytest.mark.parametrize("seconds", [3.0, 5.0])
def test_bitrate_cap_holds_on_short_clips(tmp_path: Path, seconds: float) -> None:
    spec = noisy_low_rate_clip(seconds)
    video, capped, out = render(tmp_path / "capped", spec, "noisy.mp4")
    ratio = video_bitrate(out) / video.info.video_bitrate
    assert capped.video_bitrate_out == pytest.approx(video_bitrate(out), rel=1e-6)
    _, _, free_out = render(tmp_path / "free", spec, "noisy.mp4", **{"encoder.max_bitrate_ratio": None})
    free_ratio = video_bitrate(free_out) / video.info.video_bitrate
    assert free_ratio > 1.25, f"the clip does not test the cap: {free_ratio:.2f}x uncapped"
    assert ratio <= 1.25, f"{ratio:.3f}x the input's video bitrate"


def test_bitrate_cap_holds_over_chunks(tmp_path: Path) -> None:
    spec = noisy_low_rate_clip(6.0)
    video, result, out = render(tmp_path, spec, "noisy.mp4", **{"encoder.chunk_seconds": 2.0,
                                                                 "encoder.min_chunk_seconds": 0})
    assert result.encode_chunks >= 2
    assert video_bitrate(out) / video.info.video_bitrate <= 1.25
    assert result.psnr_outside_masks == pytest.approx(psnr_from_files(video, out), abs=1e-6)  # chunks kept them


def psnr_from_files(video, out: Path, count: int = 8) -> float:
    """The measure recomputed from the files: the source's sampled frames decoded anew, the output's too."""
    indices = sampled_indices(video.info.frame_count, count)
    source = source_luma(video.info.source_path, video.info, [s.segment for s in video.segments], indices)
    output = inspect_output(out, indices).luma
    plan = mask_plan(video, solid_config())[0]
    return psnr_outside_masks(source, output, plan, video.info.bit_depth)


def test_psnr_of_the_render_is_the_one_recomputed_from_the_files(tmp_path: Path) -> None:
    """The render takes the source frames from its mask hook (no second decode of the source)."""
    spec = ClipSpec(width=192, height=128, frames=40, acodec=None, noise=8)
    video, result, out = render(tmp_path, spec, "c.mp4")
    assert 30 < result.psnr_outside_masks == pytest.approx(psnr_from_files(video, out), abs=1e-6)


def test_a_target_bitrate_overrides_crf_and_cap(tmp_path: Path) -> None:
    info, _ = probe(write_clip(tmp_path / "c.mp4", ClipSpec(width=64, height=64, frames=5, acodec=None)), "c.mp4")
    capped = encoder_options(Config().encoder.model_copy(update={"codec": "libx264"}), info=info)
    assert {"crf", "maxrate", "bufsize"} <= capped.keys() and "b" not in capped
    enc = Config().encoder.model_copy(update={"codec": "libx264", "bitrate": 500_000})
    target = encoder_options(enc, info=info)
    assert rate_cap(enc, info) is None and target["b"] == "500000"
    assert not {"crf", "maxrate", "bufsize"} & target.keys()


@pytest.mark.parametrize("seconds", [0.2, 1.0, 3.0, 10.0, 300.0])
def test_rate_cap_bounds_the_bits_of_an_encode_of_any_length(tmp_path: Path, seconds: float) -> None:
    spec = ClipSpec(width=64, height=64, frames=5, acodec=None)
    info, _ = probe(write_clip(tmp_path / "c.mp4", spec), "c.mp4", 2.0)
    info = info.__class__(**{**info.__dict__, "duration_seconds": seconds, "video_packet_bytes": int(seconds * 1e5)})
    cap = rate_cap(Config().encoder, info)
    assert cap is not None
    worst = VBV_INITIAL_FULLNESS * cap.buffer_bits + cap.max_rate * seconds
    assert worst <= 1.25 * info.video_bitrate * seconds
    assert cap.buffer_bits >= 0.5 * cap.max_rate - 1  # room for an IDR picture


def plan_with(box: tuple[int, int, int, int], frames: int) -> MaskPlan:
    return MaskPlan(frame_index=np.arange(frames), xyxy=np.tile(np.asarray(box, np.float32), (frames, 1)),
                    shape=np.full(frames, SHAPE_BOX), cls=np.ones(frames, np.int64),
                    track_id=np.zeros(frames, np.int64), frame_count=frames)


def test_psnr_counts_only_the_pixels_outside_the_masks() -> None:
    rng = np.random.default_rng(0)
    src = {i: rng.integers(0, 1024, (64, 96)).astype(np.uint16) for i in range(3)}
    out = {i: a.copy() for i, a in src.items()}
    for a in out.values():
        a[10:30, 20:50] = 0  # the mask
    plan = plan_with((20, 10, 50, 30), 3)
    assert psnr_outside_masks(src, out, plan, 10) == MAX_PSNR_DB
    for a in out.values():
        a[40:, :] += 4  # an error of 4 levels on a third of the unmasked pixels
    unmasked = 64 * 96 - 20 * 30
    expected = 10 * np.log10(1023**2 / (16 * 24 * 96 / unmasked))
    assert psnr_outside_masks(src, out, plan, 10) == pytest.approx(expected)
    eight_bit = {i: (a >> 2).astype(np.uint8) for i, a in src.items()}  # an output of 8 bits, scaled to 10
    assert psnr_outside_masks(src, eight_bit, plan_with((0, 0, 0, 0), 3), 10, 8) < 60
    assert sampled_indices(100, 8) == [0, 14, 28, 42, 57, 71, 85, 99] and sampled_indices(3, 8) == [0, 1, 2]


def test_low_fidelity_flag_under_the_threshold(tmp_path: Path) -> None:
    spec = ClipSpec(width=192, height=128, frames=25, acodec=None)
    _, result, _ = render(tmp_path, spec, "c.mp4", **{"qa.min_psnr_outside_masks": 99.0})
    assert "low_fidelity" in result.qa_flags and result.psnr_outside_masks < 99
    _, off, _ = render(tmp_path / "off", spec, "c.mp4", **{"qa.psnr_frames": 0})
    assert off.psnr_outside_masks is None and "low_fidelity" not in off.qa_flags


def test_run_figures() -> None:
    figures = run_figures(footage_seconds=7200, wall_seconds=1800, ok=9, failed=1, gpus_reserved=0.5)
    assert figures == {"footage_hours_per_wall_hour": 4.0, "failure_rate": 0.1,
                       "gpu_hours_per_100h_footage": pytest.approx(12.5)}
    none = run_figures(0, 10, 0, 0, 0.0)
    assert none["failure_rate"] is None and none["gpu_hours_per_100h_footage"] is None



def test_a_12bit_source_libx264_writes_in_10_bits_is_measured_at_10(tmp_path: Path) -> None:
    """FFV1 4:4:4 12-bit with alpha in: libx264 (auto: neither H.264 nor HEVC in) holds 10 bits, QA expects
    exactly that, and the fidelity measure compares both sides at 10 bits (not against a 12-bit peak)."""
    spec = ClipSpec(fmt="matroska", vcodec="ffv1", pix_fmt="yuva444p12le", width=192, height=128, frames=20,
                    acodec=None, colour=(1, 1, 1, 1))
    video, result, out = render(tmp_path, spec, "master.mkv")
    assert video.info.bit_depth == 12 and result.pixel_format_out == "yuv444p10le"
    assert result.video_codec_out == "h264" and result.psnr_outside_masks > 35
    assert "low_fidelity" not in result.qa_flags
