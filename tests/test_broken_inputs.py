"""Per-file isolation of broken inputs: every kind of broken file ends as a specific failure.

Unit level (no Ray): each kind is fed to the stage that must recognise it (ingest for what a probe
can see, decode/collect for damaged data, render for inputs that vanish or change during the run).
Then one batch through ``anonray.runtime.driver.run`` mixes every kind with two good clips.

How the broken files are made:

- unsupported codec: the H.264 sample entry of an MP4 renamed from ``avc1`` to ``zzzz``; the MP4
  demuxer still finds the video stream, but no decoder exists for it (PyAV gives it no codec context).
- absurd dimensions: a YUV4MPEG2 header claiming 12000x12000, named .mkv (.y4m is not in
  input.include; FFmpeg probes the content). FFmpeg itself refuses frames above about 16K x 16K at
  open; anonray refuses anything above 16384 px per side or 8K x 8K pixels.
- damaged data: 30% of an H.264 MP4's media data overwritten with random bytes in the middle.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import analysed_video
from conftest import DENY_READ_MARKER, HANG_DECODE_MARKER, HANG_READ_MARKER

import anonray.ingest.probe
from anonray.config import Config
from anonray.decode.segment import DecodeError, decode_segment
from anonray.handoff import SegmentStats, VideoDetections
from anonray.ingest.probe import IngestError, probe
from anonray.render.video import RenderError, render_video
from anonray.runtime.driver import RunRequest, run
from anonray.runtime.progress import NullProgress
from anonray.testing.samples import write_sample_video
from anonray.track.scenes import SIGNATURE_BYTES
from anonray.types import Detections


def _faststart(src: Path, dst: Path) -> None:
    """Remux with the index (moov) at the front."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, k * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_broken_files(folder: Path, scratch: Path) -> dict[str, str]:
    """Write one file per probe-level kind of breakage into folder: file name -> expected error_class."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    plain, fast = scratch / "plain.mp4", scratch / "fast.mp4"
    write_sample_video(plain, format="h264_mp4", frames=25)
    _faststart(plain, fast)
    data, front = plain.read_bytes(), fast.read_bytes()
    mdat = front.find(b"mdat")
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "half.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: lost
    (folder / "half_faststart.mp4").write_bytes(front[: len(front) // 2])  # moov kept, frames lost
    (folder / "header_only.mp4").write_bytes(front[:mdat + 2048])
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "text.mkv").write_text("This is a shopping list, not a video.\n" * 40)
    _audio_only(folder / "audio_only.mp4")
    entry = front.find(b"avc1", front.find(b"stsd"))
    unsupported = bytearray(front)
    unsupported[entry:entry + 4] = b"zzzz"
    (folder / "unsupported_codec.mp4").write_bytes(bytes(unsupported))
    (folder / "huge.mkv").write_bytes(b"YUV4MPEG2 W12000 H12000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    damaged = bytearray(front)
    span = (len(front) - mdat) * 3 // 10
    middle = mdat + (len(front) - mdat) // 2
    damaged[middle:middle + span] = np.random.default_rng(1).bytes(span)
    (folder / "damaged.mp4").write_bytes(bytes(damaged))
    return {
        "zero.mp4": "empty_file",
        "half.mp4": "truncated",
        "half_faststart.mp4": "truncated",
        "header_only.mp4": "header_only",
        "random.mp4": "not_a_video",
        "text.mkv": "text_file",
        "audio_only.mp4": "no_video_stream",
        "unsupported_codec.mp4": "unsupported_codec",
        "huge.mkv": "absurd_dimensions",
        "damaged.mp4": "damaged_frames",
    }


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("broken")
    return root / "in", make_broken_files(root / "in", root / "scratch")


PROBE_KINDS = ["zero.mp4", "half.mp4", "half_faststart.mp4", "header_only.mp4", "random.mp4", "text.mkv",
               "audio_only.mp4", "unsupported_codec.mp4", "huge.mkv"]


@pytest.mark.parametrize("name", PROBE_KINDS)
def test_ingest_names_the_breakage(broken, name):
    folder, expected = broken
    with pytest.raises(IngestError) as caught:
        probe(folder / name, f"sub/{name}")
    assert caught.value.error_class == expected[name]
    message = str(caught.value)
    assert message.startswith(f"sub/{name}: ") and str(folder) not in message and "/tmp" not in message


def test_permission_denied(broken, monkeypatch):
    folder, _ = broken

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder / "x.mp4"))

    monkeypatch.setattr(anonray.ingest.probe, "open", refuse, raising=False)
    with pytest.raises(IngestError) as caught:
        probe(folder / "damaged.mp4", "x.mp4")
    assert caught.value.error_class == "permission_denied"
    assert str(caught.value) == "x.mp4: no permission to read the file"


def test_permission_denied_by_ffmpeg(broken, monkeypatch):
    folder, _ = broken

    def refuse(*args, **kwargs):
        raise av.error.PermissionError(13, "Permission denied", str(folder / "x.mp4"))

    monkeypatch.setattr(anonray.ingest.probe.av, "open", refuse)
    with pytest.raises(IngestError) as caught:
        probe(folder / "damaged.mp4", "x.mp4")
    assert caught.value.error_class == "permission_denied"


def test_vanished_before_ingest(tmp_path):
    with pytest.raises(IngestError) as caught:
        probe(tmp_path / "gone.mp4", "gone.mp4")
    assert caught.value.error_class == "input_vanished"


def _decode_all(path: Path, info, segments) -> list[SegmentStats]:
    stats = []
    for segment in segments:
        s = SegmentStats(segment, ended=True)
        try:
            for _ in decode_segment(path, info, segment, (96, 72)):
                s.frames_decoded += 1
                s.frames_received += 1
        except DecodeError as err:
            s.error_class, s.error_message = err.error_class, err.message
        stats.append(s)
    return stats


def test_damaged_data_decodes_what_it_can_and_fails_the_video(broken):
    folder, _ = broken
    path = folder / "damaged.mp4"
    info, segments = probe(path, "damaged.mp4")  # the demuxer sees every packet
    stats = _decode_all(path, info, segments)
    decoded = sum(s.frames_decoded for s in stats)
    assert 0 < decoded < info.frame_count  # frames after the damage still come out
    assert {s.error_class for s in stats} <= {"", "missing_frames"}
    video = VideoDetections(info, stats, Detections.concat([]), np.zeros(info.frame_count, np.int64),
                            np.zeros((info.frame_count, SIGNATURE_BYTES), np.uint8))
    error_class, message = video.error.error_class, video.error.message
    assert error_class == "damaged_frames"
    assert message.startswith(f"{info.frame_count - decoded} of {info.frame_count} frames could not be decoded")


def test_decode_of_a_vanished_input(tmp_path):
    path = tmp_path / "clip.mp4"
    write_sample_video(path, format="h264_mp4", frames=10, audio=False)
    info, segments = probe(path, "clip.mp4")
    path.unlink()
    with pytest.raises(DecodeError) as caught:
        list(decode_segment(path, info, segments[0], (96, 72)))
    assert caught.value.error_class == "input_vanished"


# ---------------------------------------------------------------- render: vanish and change

_analysed = analysed_video


@pytest.mark.parametrize("mutation", ["delete", "append", "flip_byte"])
def test_render_refuses_an_input_that_vanished_or_changed(tmp_path, mutation):
    src = tmp_path / "in" / "clip.mp4"
    src.parent.mkdir()
    write_sample_video(src, format="h264_mp4", frames=10, audio=False)
    video = _analysed(src, "clip.mp4")
    if mutation == "delete":
        src.unlink()
    elif mutation == "append":
        with open(src, "ab") as fh:
            fh.write(b"\0" * 100)
    else:  # same size, different bytes: only the re-hash at render time notices
        data = bytearray(src.read_bytes())
        mdat = data.find(b"mdat")
        data[mdat + 200] ^= 0xFF
        src.write_bytes(bytes(data))
    out, state = tmp_path / "out", tmp_path / "out" / "_anonray"
    with pytest.raises(RenderError) as caught:
        render_video(video, Config(), out, state)
    assert caught.value.error_class == ("input_vanished" if mutation == "delete" else "input_changed")
    assert str(caught.value).startswith("clip.mp4: ") and str(tmp_path) not in str(caught.value)
    assert not (out / "clip.mp4").exists()
    assert not list((state / "tmp").iterdir())


# ---------------------------------------------------------------- one batch through Ray

class _Saboteur(NullProgress):
    """On the first detected frames (before any video can be complete), delete one input and
    append to another: render must then refuse both."""

    def __init__(self, vanish: Path, change: Path):
        self.vanish, self.change, self.done = vanish, change, False

    def frames_detected(self, frames: int) -> None:
        if not self.done:
            self.done = True
            self.vanish.unlink()
            with open(self.change, "ab") as fh:
                fh.write(b"\0" * 64)


@pytest.mark.slow
def test_batch_with_every_kind_of_broken_file(ray_session, tmp_path):
    inputs = tmp_path / "in"
    expected = make_broken_files(inputs / "broken", tmp_path / "scratch")
    expected = {f"broken/{k}": v for k, v in expected.items()}
    for name in ("good_a.mp4", "good_b.mp4"):
        write_sample_video(inputs / name, format="h264_mp4", frames=25)
    for name in ("vanish.mp4", "change.mp4"):
        write_sample_video(inputs / name, format="h264_mp4", frames=50)
    denied = f"{DENY_READ_MARKER}.mp4"  # conftest: the session's Ray workers refuse to read it
    write_sample_video(inputs / denied, format="h264_mp4", frames=25)
    hangs_decode, hangs_read = f"{HANG_DECODE_MARKER}.mp4", f"{HANG_READ_MARKER}.mp4"  # conftest: they hang
    for name in (hangs_decode, hangs_read):
        write_sample_video(inputs / name, format="h264_mp4", frames=25)
    expected.update({"vanish.mp4": "input_vanished", "change.mp4": "input_changed", denied: "permission_denied",
                     hangs_decode: "decode_stalled", hangs_read: "ingest_stalled"})
    assert len(set(expected.values())) >= 14
    out = tmp_path / "out"
    config = Config().with_overrides(**{"resources.stall_seconds": 10.0})
    summary = run(RunRequest([str(inputs)], out, config),
                  _Saboteur(inputs / "vanish.mp4", inputs / "change.mp4"))
    assert summary.exit_code == 1 and summary.ok == 2 and summary.failed == len(expected)
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas().set_index("path")
    for path, error_class in expected.items():
        row = videos.loc[path]
        assert (row.status, row.error_class) == ("failed", error_class), (path, row.error_message)
        assert row.error_message and str(tmp_path) not in row.error_message
        assert not (out / path).exists() and not (out / Path(path).with_suffix(".mkv")).exists()
    for name in ("good_a.mp4", "good_b.mp4"):
        row = videos.loc[name]
        assert row.status == "ok" and row.frames_in == row.frames_out == 25
        with av.open(str(out / name)) as c:
            assert sum(1 for _ in c.decode(c.streams.video[0])) == 25
    published = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                       if p.is_file() and "_anonray" not in p.parts)
    assert published == ["good_a.mp4", "good_b.mp4"]
    assert not list((out / "_anonray" / "tmp").iterdir())

    # The rerun skips what is done and tries every failed file again (which fails again).
    write_sample_video(inputs / "vanish.mp4", format="h264_mp4", frames=50)
    again = run(RunRequest([str(inputs)], out, config))
    assert again.exit_code == 1 and again.ok == 2 and again.skipped == 2
    assert again.failed == len(expected) - 2  # vanish.mp4 and change.mp4 are fine now

