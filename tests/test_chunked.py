"""Parallel encoding of one long video (render/codec/chunked.py): chunks encoded apart and joined, judged on
real decoded output against the single-task render of the same video (render/video.py without Ray, and the
pipeline on Ray)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from _clips import ClipSpec, write_clip
from _video_checks import analysed_video, assert_same_audio, decode_frames, mask_pixels, solid_config

from anonray.config import EncoderConfig
from anonray.handoff import RenderResult, VideoDetections
from anonray.qa.checks import check_output, inspect_output
from anonray.records.rows import RunContext, ok_video_row, utc_now
from anonray.records.tables import to_table
from anonray.render.codec.bitstream import parameter_sets
from anonray.render.codec.chunked import (
    ChunkError,
    ChunkPackets,
    EncodedChunks,
    chunk_count,
    chunk_ranges,
    join_chunks,
    joined_decode_timestamps,
    plan_chunks,
    plan_slice,
)
from anonray.render.codec.transcoder import EncodeError
from anonray.render.video import mask_plan, render_chunk, render_video
from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import write_sample_video
from anonray.types import SHAPE_BOX, Detections, MaskPlan, Segment

FRAMES = 125  # 5 s at 25 fps
GOP = 12
BOX = (64, 48, 128, 112)
"""A plate detected on every frame: masked as a solid magenta box (the default plate shape)."""
CHUNK_SECONDS = 1.5  # 5 s -> 3 chunks
X264 = {"x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=3:log-level=error"}


def write_source(path: Path, fmt: str = "mp4", pts: list[int] | None = None,
                 time_base: Fraction | None = None) -> Path:
    """A textured clip with a moving square, GOPs of 12 frames with B-frames, and AAC audio."""
    spec = ClipSpec(fmt=fmt, width=192, height=128, frames=FRAMES, options=dict(X264), pts=pts, time_base=time_base)
    return write_clip(path, spec)


def detected(path: Path) -> VideoDetections:
    """The video as detection hands it to render (segments of one GOP each), a plate on BOX in every frame."""
    video = analysed_video(path, path.name, target_seconds=0.4)
    n = video.info.frame_count
    video.detections = Detections(np.arange(n), np.tile(np.asarray(BOX, np.float32), (n, 1)),
                                  np.full(n, 0.9, np.float32), np.ones(n, np.int64))
    return video


def config(chunk_seconds: float, **overrides):
    return solid_config(**{"encoder.chunk_seconds": chunk_seconds, **overrides})


@dataclass
class Rendered:
    src: Path
    out: Path
    result: RenderResult


def render(src: Path, folder: Path, chunk_seconds: float, **overrides) -> Rendered:
    result = render_video(detected(src), config(chunk_seconds, **overrides), folder, folder / "_anonray")
    return Rendered(src, folder / result.output_path, result)


def video_packets(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(pts, dts) of the video packets in decode order, and the sample entry / codec tag."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        packets = [(p.pts, p.dts) for p in c.demux(vs) if p.size]
        return np.asarray([p for p, _ in packets]), np.asarray([d for _, d in packets]), vs.codec_context.codec_tag


@pytest.fixture(scope="module", params=["mp4", "matroska"])
def pair(request, tmp_path_factory) -> tuple[Rendered, Rendered]:
    """The same clip rendered by one task and in chunks (MP4 and Matroska)."""
    folder = tmp_path_factory.mktemp(f"chunked-{request.param}")
    (folder / "in").mkdir()
    src = write_source(folder / "in" / ("clip.mp4" if request.param == "mp4" else "clip.mkv"), request.param)
    return render(src, folder / "one", 0), render(src, folder / "chunked", CHUNK_SECONDS)


def test_split_into_chunks(pair) -> None:
    one, chunked = pair
    assert one.result.encode_chunks == 1 and chunked.result.encode_chunks == 3
    assert one.result.frames_out == chunked.result.frames_out == FRAMES
    assert chunked.out.suffix == one.out.suffix == chunked.src.suffix


def test_same_frames_and_timestamps(pair) -> None:
    one, chunked = pair
    src_times = decode_frames(one.src)[0]
    one_times, chunked_times = decode_frames(one.out)[0], decode_frames(chunked.out)[0]
    assert len(chunked_times) == len(one_times) == len(src_times) == FRAMES
    assert chunked_times == one_times
    assert np.array_equal(np.sort(video_packets(chunked.out)[0]), np.sort(video_packets(one.out)[0]))


def test_decode_timestamps_valid_across_joins(pair) -> None:
    """Strictly increasing and never after the pts (Matroska stores no dts: where its demuxer gives one)."""
    _, chunked = pair
    pts, dts, tag = video_packets(chunked.out)
    known = np.asarray([d is not None for d in dts])
    assert known.all() or chunked.out.suffix == ".mkv"
    pts, dts = pts[known].astype(np.int64), dts[known].astype(np.int64)
    assert np.all(np.diff(dts) > 0), "dts not strictly increasing"
    assert np.all(dts <= pts), "a packet decoded after it is shown"
    if chunked.out.suffix == ".mp4":
        assert tag == "avc1"  # identical parameter sets in every chunk: nothing in-band


def test_audio_copied_with_the_same_duration(pair) -> None:
    one, chunked = pair
    assert_same_audio(chunked.src, chunked.out)
    read_one, read_chunked = inspect_output(one.out), inspect_output(chunked.out)
    assert len(read_chunked.audio) == 1 and read_chunked.audio[0].duration_seconds is not None
    assert read_chunked.audio[0].duration_seconds == pytest.approx(read_one.audio[0].duration_seconds, abs=1e-3)


def test_masked_inside_unchanged_outside(pair) -> None:
    one, chunked = pair
    _, src, _, _ = decode_frames(chunked.src)
    _, images, _, _ = decode_frames(chunked.out)
    _, baseline, _, _ = decode_frames(one.out)
    x0, y0, x1, y1 = BOX
    outside = np.ones(src[0].shape[:2], bool)
    outside[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = False
    for i, (a, b, c) in enumerate(zip(src, images, baseline, strict=True)):
        assert mask_pixels(b[y0 + 2:y1 - 2, x0 + 2:x1 - 2]).mean() >= 0.95, f"frame {i} not masked"
        assert not mask_pixels(a[y0:y1, x0:x1]).any()
        diff = np.abs(a.astype(int) - b.astype(int))[outside].mean()
        noise = np.abs(a.astype(int) - c.astype(int))[outside].mean()
        assert diff <= noise * 1.25 + 0.5, f"frame {i}: {diff:.2f} from the source outside the mask ({noise:.2f})"


def test_decodes_end_to_end(pair) -> None:
    _, chunked = pair
    read = inspect_output(chunked.out)
    assert read.decode_error == "" and read.frames_decoded == FRAMES
    with av.open(str(chunked.out)) as c:  # strict decoding: any decoder error raises
        vs = c.streams.video[0]
        vs.codec_context.options = {"err_detect": "explode"}
        assert sum(1 for _ in c.decode(vs)) == FRAMES


def test_frames_at_each_join_present_and_in_order(pair) -> None:
    """The last frame of each chunk and the first of the next: both there, in order, each the source's own
    frame (the square moves 5 px a frame, so a neighbour would differ)."""
    _, chunked = pair
    video = detected(chunked.src)
    duration = video.info.duration_seconds
    ranges = chunk_ranges([s.segment for s in video.segments], video.info.time_base_fraction, duration,
                          chunk_count(duration, config(CHUNK_SECONDS).encoder))
    src_times, src, _, _ = decode_frames(chunked.src)
    out_times, out, _, _ = decode_frames(chunked.out)
    top = slice(0, 40)  # the square's rows, clear of the mask
    for r in ranges[1:]:
        first = r.first_frame_index
        for i in (first - 2, first - 1, first, first + 1):
            assert out_times[i] == src_times[i]
            own = np.abs(out[i][top].astype(int) - src[i][top].astype(int)).mean()
            for j in (i - 1, i + 1):
                other = np.abs(out[i][top].astype(int) - src[j][top].astype(int)).mean()
                assert own < other, f"output frame {i} looks like source frame {j}"
        assert out_times[first - 1] < out_times[first]


def test_variable_frame_rate(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    steps = rng.choice([2400, 3600, 4800], FRAMES)  # 90 kHz: 37.5 to 18.75 fps
    pts = np.concatenate([[0], np.cumsum(steps[:-1])]).tolist()
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "vfr.mp4", pts=pts, time_base=Fraction(1, 90000))
    one, chunked = render(src, tmp_path / "one", 0), render(src, tmp_path / "chunked", CHUNK_SECONDS)
    assert chunked.result.encode_chunks >= 3
    out_pts, dts, _ = video_packets(chunked.out)
    assert np.array_equal(np.sort(out_pts), np.sort(video_packets(one.out)[0]))
    assert np.array_equal(np.sort(out_pts), np.asarray(pts))
    assert np.all(np.diff(dts) > 0) and np.all(dts <= out_pts)


def test_hevc(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mp4")
    done = render(src, tmp_path / "out", CHUNK_SECONDS, **{"encoder.codec": "libx265"})
    assert done.result.encode_chunks == 3 and done.result.video_codec_out == "hevc"
    pts, dts, tag = video_packets(done.out)
    assert tag in ("hvc1", "hev1") and np.all(np.diff(dts) > 0) and np.all(dts <= pts)
    assert decode_frames(done.out)[0] == decode_frames(src)[0]


def test_differing_parameter_sets_go_in_band(tmp_path: Path) -> None:
    """A chunk coded with other settings (ultrafast: CAVLC, one reference) has other SPS/PPS: they travel
    in-band before its first picture and the MP4 sample entry becomes avc3; the output still decodes."""
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mp4")
    video = detected(src)
    cfg = config(CHUNK_SECONDS)
    plan = mask_plan(video, cfg)[0]
    jobs = plan_chunks(video, plan, cfg, "mp4")
    other = cfg.with_overrides(**{"encoder.preset": "ultrafast"})
    encoded = [render_chunk(job, other if job.index == 1 else cfg, src) for job in jobs]
    assert encoded[0][0].extradata == encoded[2][0].extradata != encoded[1][0].extradata
    out = tmp_path / "joined.mp4"
    join_chunks(src, out, video.info, cfg, EncodedChunks([p for p, _ in encoded], lambda i: encoded[i][1]),
                jobs[0].cap_seconds)
    check_output(out, video.info, video.frame_pts, "keep")  # every frame, timestamp and the audio
    assert video_packets(out)[2] == "avc3"
    assert inspect_output(out).decode_error == ""


def test_identical_settings_give_identical_parameter_sets(tmp_path: Path) -> None:
    """Also with another thread count per chunk (nodes of other sizes): x265 then names other frame-threads in
    the SEI of its extradata, but its VPS/SPS/PPS stay the same."""
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mkv", "matroska")
    video = detected(src)
    for codec, family in (("libx264", "h264"), ("libx265", "hevc")):
        cfg = config(CHUNK_SECONDS, **{"encoder.codec": codec})
        jobs = plan_chunks(video, mask_plan(video, cfg)[0], cfg, "matroska")
        extradata = [render_chunk(job, cfg.with_overrides(**{"encoder.threads": 1 + job.index}), src)[0].extradata
                     for job in jobs]
        sets = {parameter_sets(e, family) for e in extradata}
        assert len(sets) == 1, f"{codec}: chunks differ in their parameter sets"
        assert len(next(iter(sets))) == (2 if family == "h264" else 3)


def test_a_failed_chunk_fails_the_video_and_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mp4")
    video = detected(src)
    video.frame_pts[FRAMES // 2] = -1  # a frame detection never saw, in the middle chunk
    out = tmp_path / "out"
    with pytest.raises(ChunkError, match="chunk 2 of 3: .*not seen by detection") as caught:
        render_video(video, config(CHUNK_SECONDS), out, out / "_anonray")
    assert caught.value.error_class == "mask"  # as the single-task render reports it
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_passthrough_and_short_videos_are_not_chunked(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mp4")
    assert render(src, tmp_path / "a", CHUNK_SECONDS, **{"encoder.passthrough": True}).result.encode_chunks == 1
    assert render(src, tmp_path / "b", 4.0).result.encode_chunks == 1  # 5 s < 1.5 x 4 s


def test_the_videos_row_records_the_chunks(pair) -> None:
    _, chunked = pair
    cfg = config(CHUNK_SECONDS)
    row = ok_video_row(RunContext("run", cfg, {}), detected(chunked.src), chunked.result, started=utc_now(),
                       seconds_ingest=0.0)
    assert row["encode_chunks"] == 3
    assert to_table("videos", [row]).column("encode_chunks").to_pylist() == [3]


def _segments(starts: list[int], frames: list[int]) -> list[Segment]:
    firsts = np.concatenate([[0], np.cumsum(frames[:-1])]).tolist()
    ends = [*starts[1:], None]
    return [Segment("v", i, s, e, f, n, s) for i, (s, e, f, n) in enumerate(zip(starts, ends, firsts, frames,
                                                                                strict=True))]


def test_chunk_ranges() -> None:
    segments = _segments(list(range(0, 1000, 100)), [4] * 10)  # 10 segments of 1 s at time base 1/100
    tb = Fraction(1, 100)
    assert chunk_ranges(segments, tb, 10.0, 1) == []
    assert chunk_ranges(segments[:1], tb, 1.0, 2) == []  # one segment cannot be cut
    ranges = chunk_ranges(segments, tb, 10.0, 3)
    assert [r.start_pts for r in ranges] == [0, 300, 700] or [r.start_pts for r in ranges] == [0, 300, 600]
    assert [r.index for r in ranges] == [0, 1, 2]
    assert [r.end_pts for r in ranges] == [r.start_pts for r in ranges[1:]] + [None]
    assert sum(r.frame_count for r in ranges) == 40 and ranges[1].first_frame_index == ranges[0].frame_count
    assert all(r.keyframe_pts == r.start_pts for r in ranges)  # each starts at a segment's keyframe
    assert len(chunk_ranges(segments, tb, 10.0, 20)) == 10  # never more chunks than segments


def test_chunk_count() -> None:
    def count(duration: float, spread: int = 1, **settings) -> int:
        return chunk_count(duration, EncoderConfig(**settings), spread)

    assert count(10.0, chunk_seconds=0) == 1 and count(10.0, 8, chunk_seconds=0) == 1  # 0 turns both rules off
    assert count(10.0, chunk_seconds=7.0) == 1  # under 1.5 x chunk_seconds
    assert count(10.0, chunk_seconds=3.0) == 3 and count(1000.0) == 3  # round(duration / chunk_seconds)
    # a small run: up to `spread` chunks, each at least min_chunk_seconds (10 s by default)
    assert count(20.0, 2) == 2 and count(19.9, 2) == 1 and count(45.0, 8) == 4 and count(45.0, 3) == 3
    assert count(20.0, 2, min_chunk_seconds=0) == 1 and count(20.0, 1) == 1
    assert count(1000.0, 2) == 3 and count(1000.0, 16) == 16  # whichever rule cuts more


def test_plan_slice() -> None:
    plan = MaskPlan(10, np.asarray([1, 4, 5, 9]), np.arange(16, dtype=np.float32).reshape(4, 4),
                    np.asarray([0, 1, 0, 1]), np.full(4, SHAPE_BOX), np.asarray([7, 8, 9, 7]))
    part = plan_slice(plan, 4, 3)
    assert part.frame_count == 3 and part.frame_index.tolist() == [0, 1]
    assert part.track_id.tolist() == [8, 9] and part.xyxy[0].tolist() == [4, 5, 6, 7]


def _described(index: int, pts: list[int], dts: list[int]) -> ChunkPackets:
    n = len(pts)
    return ChunkPackets(index, np.asarray(pts), np.asarray(dts), np.zeros(n, np.int64), np.zeros(n, bool),
                        np.ones(n, np.int64), b"", n, 0.0)


def test_joined_decode_timestamps() -> None:
    # two chunks of I P B B coded with a reorder delay of 1 frame: the encoders' dts are kept
    a = _described(0, [0, 3, 1, 2], [-1, 0, 1, 2])
    b = _described(1, [4, 7, 5, 6], [3, 4, 5, 6])
    assert joined_decode_timestamps([a, b]).tolist() == [-1, 0, 1, 2, 3, 4, 5, 6]
    # chunk b's encoder used a deeper delay: its dts collide with a's, so they are derived from the pts
    b = _described(1, [4, 7, 5, 6], [2, 3, 5, 6])
    dts = joined_decode_timestamps([a, b])
    pts = np.asarray([0, 3, 1, 2, 4, 7, 5, 6])
    assert np.all(np.diff(dts) > 0) and np.all(dts <= pts)
    with pytest.raises(EncodeError, match="starts before"):
        joined_decode_timestamps([a, _described(1, [3, 4], [2, 3])])


@pytest.mark.usefixtures("ray_session")
def test_pipeline_splits_a_long_video_into_chunks(tmp_path: Path) -> None:
    """Through the real pipeline on Ray: chunk tasks plus the join give the unsplit run's frames and timestamps,
    masked alike; the videos table records the chunks."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    clip = inputs / "long.mp4"
    truth = write_sample_video(clip, format="h264_mp4", frames=90)  # 3.6 s, GOPs of 15 frames
    outputs = {}
    for chunk_seconds in (0, 1.2):
        out = tmp_path / f"out-{chunk_seconds}"
        cfg = solid_config(**{"segment.target_seconds": 0.5, "encoder.chunk_seconds": chunk_seconds})
        summary = run(RunRequest([str(inputs)], out, cfg))
        videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
        assert summary.ok == 1 and summary.failed == 0, videos[["error_class", "error_message"]].to_dict("records")
        outputs[chunk_seconds] = (out / "long.mp4", int(videos.encode_chunks.iloc[0]))
        assert not list((out / "_anonray" / "tmp").iterdir())
    (one, one_chunks), (split, split_chunks) = outputs[0], outputs[1.2]
    assert (one_chunks, split_chunks) == (1, 3)
    one_times, one_images, _, _ = decode_frames(one)
    split_times, split_images, _, _ = decode_frames(split)
    assert split_times == one_times and len(split_times) == truth.frame_count
    assert_same_audio(clip, split)
    for i, (a, b) in enumerate(zip(one_images, split_images, strict=True)):
        x0, y0, x1, y1 = truth.plate_boxes[i]
        assert mask_pixels(b[y0:y1, x0:x1]).mean() >= 0.9, f"frame {i}: plate not masked in the split run"
        same_mask = (mask_pixels(a) == mask_pixels(b)).mean()
        assert same_mask >= 0.99, f"frame {i}: the masks differ ({same_mask:.1%} alike)"
    shutil.rmtree(tmp_path / "out-0")


@pytest.mark.usefixtures("ray_session")
def test_a_small_run_splits_a_short_video(tmp_path: Path) -> None:
    """One video on a 2-CPU Ray: its render is cut into two chunks (min_chunk_seconds permitting), so that both
    CPUs encode; the frames and timestamps are the source's and the plate is masked on every frame."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    clip = inputs / "short.mp4"
    truth = write_sample_video(clip, format="h264_mp4", frames=90)  # 3.6 s, GOPs of 15 frames
    out = tmp_path / "out"
    cfg = solid_config(**{"segment.target_seconds": 0.5, "encoder.min_chunk_seconds": 1.5})
    summary = run(RunRequest([str(inputs)], out, cfg))
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    assert summary.ok == 1, videos[["error_class", "error_message"]].to_dict("records")
    assert int(videos.encode_chunks.iloc[0]) == 2  # 2 render slots for 1 video; 3.6 s // 1.5 s allows 2
    src_times, _, _, _ = decode_frames(clip)
    times, images, _, _ = decode_frames(out / "short.mp4")
    assert times == src_times and len(times) == truth.frame_count
    for i, image in enumerate(images):
        x0, y0, x1, y1 = truth.plate_boxes[i]
        assert mask_pixels(image[y0:y1, x0:x1]).mean() >= 0.9, f"frame {i}: plate not masked"


@pytest.mark.usefixtures("ray_session")
def test_chunk_tasks_on_ray(tmp_path: Path) -> None:
    """The driver's runner: one Ray task per chunk, joined here; a failing chunk raises ChunkError naming it."""
    from anonray.runtime.tasks import chunks_on_ray

    (tmp_path / "in").mkdir()
    src = write_source(tmp_path / "in" / "clip.mp4")
    video = detected(src)
    cfg = config(CHUNK_SECONDS)
    jobs = plan_chunks(video, mask_plan(video, cfg)[0], cfg, "mp4")
    chunks = chunks_on_ray(1.0, 0)(src, jobs, cfg)
    assert [c.index for c in chunks.packets] == [0, 1, 2]
    join_chunks(src, tmp_path / "joined.mp4", video.info, cfg, chunks, jobs[0].cap_seconds)
    check_output(tmp_path / "joined.mp4", video.info, video.frame_pts, "keep")
    video.frame_pts[-1] = -1  # the last frame, in chunk 3, was never analysed
    jobs = plan_chunks(video, mask_plan(video, cfg)[0], cfg, "mp4")
    with pytest.raises(ChunkError, match="chunk 3 of 3: .*not seen by detection") as caught:
        chunks_on_ray(1.0, 0)(src, jobs, cfg)
    assert caught.value.error_class == "mask"


@pytest.mark.parametrize("name", ["h264_mp4", "hevc_mkv", "mpeg2_ts", "mpeg4_avi", "mjpeg_mov", "vp9_webm",
                                  "vfr_mp4", "rotated_mp4", "interlaced_ts"])
def test_every_sample_format(sample_clips, name, tmp_path: Path) -> None:
    """Open GOPs (HEVC CRA), imprecise seeking (MPEG-TS), intra-only and interlaced sources: the chunks join
    into an output that passes render's QA with the one-task render's frames and timestamps."""
    clip, truth = sample_clips[name]
    (tmp_path / "in").mkdir()
    src = shutil.copy(clip, tmp_path / "in" / clip.name)
    video = analysed_video(Path(src), clip.name, target_seconds=0.3)
    # Uncapped: the bitrate cap of a 0.6 s chunk is far tighter than the whole clip's (each chunk's encoder
    # may start with a full VBV buffer; settings.rate_cap), so capped chunks would not match the one task's
    # quality. Chunks with the cap: test_bitrate_cap_holds_over_chunks.
    uncapped = {"encoder.max_bitrate_ratio": None}
    one = render_video(video, config(0, **uncapped), tmp_path / "one", tmp_path / "one" / "_anonray")
    split = render_video(video, config(0.6, **uncapped), tmp_path / "split", tmp_path / "split" / "_anonray")
    assert split.encode_chunks >= 2, f"{len(video.segments)} segments"
    one_times, one_images, _, _ = decode_frames(tmp_path / "one" / one.output_path)
    split_times, split_images, _, _ = decode_frames(tmp_path / "split" / split.output_path)
    assert split_times == one_times and len(split_times) == truth.frame_count
    src_images = decode_frames(Path(src))[1]
    for i, (a, b, c) in enumerate(zip(src_images, split_images, one_images, strict=True)):
        diff, noise = (np.abs(a.astype(int) - x.astype(int)).mean() for x in (b, c))
        assert diff <= noise * 1.25 + 0.5, f"frame {i}: {diff:.2f} from the source (one task: {noise:.2f})"
