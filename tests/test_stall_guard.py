"""The stall limit on reading inputs (anonray/stall_guard.py): a hung reader costs its file within the limit; a
slow reader that still makes progress, or a caller that is itself slow, never trips it; frames come through
whole; the decode actor and ingest's probe fail a hung file with their own error class."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from anonray.config import Config
from anonray.decode.segment import DecodeError, decode_segment
from anonray.ingest.probe import IngestError, probe
from anonray.runtime.actors import SegmentDecoder
from anonray.stall_guard import Abandoned, call_guarded, guarded, stall_message
from anonray.testing.faults import HANG_DECODE_ENV, HANG_READ_ENV


def _stalled(what: str = "segment 7", seconds: float = 0.5) -> Callable[[], DecodeError]:
    return lambda: DecodeError("decode_stalled", stall_message(what, seconds))


def test_a_hung_decoder_fails_its_segment_within_the_limit():
    released, unwound = threading.Event(), threading.Event()
    received = []

    def make(beat: Callable[[], None]) -> Iterator[int]:
        def items() -> Iterator[int]:
            yield from range(3)
            released.wait(60)  # the decoder stuck, until the test releases it
            try:
                beat()  # its next packet: the caller has gone
            except Abandoned:
                unwound.set()
                raise
            yield -1
        return items()
    started = time.monotonic()
    with pytest.raises(DecodeError) as caught:
        for item in guarded(make, 0.5, _stalled()):
            received.append(item)
    waited = time.monotonic() - started
    released.set()
    assert unwound.wait(2.0)  # the abandoned work stops at its next beat, without producing anything more
    assert received == [0, 1, 2]
    assert caught.value.error_class == "decode_stalled"
    assert caught.value.message.startswith("segment 7: ") and "0.5 s" in caught.value.message
    assert 0.5 <= waited < 2.0


def test_a_slow_decoder_that_keeps_reading_is_not_stalled():
    """Packets read without a frame of the segment (a seek fallback decoding from the file start): beats only."""
    def make(beat: Callable[[], None]) -> Iterator[str]:
        def items() -> Iterator[str]:
            for _ in range(15):
                time.sleep(0.1)
                beat()
            yield "late frame"
        return items()
    assert list(guarded(make, 0.5, _stalled())) == ["late frame"]


def test_a_slow_consumer_does_not_count_as_a_stall():
    out = []
    for item in guarded(lambda beat: iter(range(5)), 0.3, _stalled()):
        out.append(item)
        time.sleep(0.6)  # detection backpressure: the guard's own consumer is busy
    assert out == [0, 1, 2, 3, 4]


def test_an_item_counts_as_progress_for_work_without_beats():
    """Items every 0.6 s, no beat at all, under a 0.9 s limit: each item restarts the clock (1.8 s in all)."""
    def make(beat: Callable[[], None]) -> Iterator[int]:
        def items() -> Iterator[int]:
            for n in range(3):
                time.sleep(0.6)
                yield n
        return items()
    assert list(guarded(make, 0.9, _stalled())) == [0, 1, 2]


def test_errors_pass_through_and_an_early_stop_ends_the_producer():
    def failing(beat: Callable[[], None]) -> Iterator[int]:
        yield 1
        raise DecodeError("missing_frames", "segment 0: 3 of 4 frames could not be decoded")
    with pytest.raises(DecodeError) as caught:
        list(guarded(failing, 5.0, _stalled()))
    assert caught.value.error_class == "missing_frames"

    closed = threading.Event()

    def endless(beat: Callable[[], None]) -> Iterator[int]:
        def items() -> Iterator[int]:
            try:
                n = 0
                while True:
                    yield n
                    n += 1
            finally:
                closed.set()
        return items()
    stream = guarded(endless, 5.0, _stalled())
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(2.0)  # the producer closed its iterator (the decoder's container) on its own thread


def test_no_limit_runs_on_the_callers_thread():
    names = []

    def make(beat: Callable[[], None]) -> Iterator[str]:
        names.append(threading.current_thread().name)
        return iter(["a"])
    assert list(guarded(make, 0, _stalled())) == ["a"]
    assert names == [threading.current_thread().name]


def test_call_guarded_returns_the_result_or_raises_the_stall():
    assert call_guarded(lambda beat: 42, 1.0, _stalled()) == 42
    released = threading.Event()
    with pytest.raises(DecodeError):
        call_guarded(lambda beat: released.wait(60), 0.3, _stalled())
    released.set()


def test_guarded_decode_gives_the_same_frames(sample_clips: dict):
    path = sample_clips["mpeg2_ts"][0]
    info, segments = probe(path, "clip.ts", target_seconds=0.5)
    for segment in segments:
        plain = list(decode_segment(path, info, segment, (64, 48)))
        watched = list(guarded(lambda beat, s=segment: decode_segment(path, info, s, (64, 48), beat=beat),
                               5.0, _stalled()))
        assert [f[:2] for f in watched] == [f[:2] for f in plain] and len(plain) == segment.frame_count
        assert all(np.array_equal(a[2], b[2]) for a, b in zip(watched, plain, strict=True))


def _hung_and_fine(sample_clips: dict, tmp_path, monkeypatch, marker_env: str):
    """Two copies of a clip; the fault hook marker_env makes reading the first one hang."""
    source = sample_clips["h264_mp4"][0]
    hung, fine = tmp_path / "clip-hangs-here.mp4", tmp_path / "clip.mp4"
    hung.write_bytes(source.read_bytes())
    fine.write_bytes(source.read_bytes())
    monkeypatch.setenv(marker_env, "hangs-here")
    return hung, fine


def test_decode_actor_fails_a_hung_segment_and_goes_on(sample_clips: dict, tmp_path, monkeypatch):
    """Without Ray: the actor's end marker carries decode_stalled for the hung file; the next file decodes."""
    hung, fine = _hung_and_fine(sample_clips, tmp_path, monkeypatch, HANG_DECODE_ENV)
    decoder = SegmentDecoder(Config().with_overrides(**{"resources.stall_seconds": 0.5}).canonical_json())
    for path, expected in ((hung, "decode_stalled"), (fine, "")):
        info, segments = probe(path, path.name, target_seconds=0.5)
        assert len(segments) >= 2
        for segment in segments[:2]:
            started = time.monotonic()
            rows = list(decoder._decode(info, segment))
            marker = rows[-1]
            waited = time.monotonic() - started
            assert int(marker.frame_index[0]) == -1 and str(marker.decode_error_class[0]) == expected
            assert "hangs-here" not in str(marker.decode_error_message[0])
            if not expected:
                assert int(marker.frames_decoded[0]) == segment.frame_count
            elif segment.index == 0:  # stalls once: 0.5 s
                assert 0.5 <= waited < 3.0 and int(marker.frames_decoded[0]) == 0
            else:  # the video's later segments fail at once
                assert waited < 0.3 and "an earlier segment" in str(marker.decode_error_message[0])


def test_probe_fails_a_hung_read_as_ingest_stalled(sample_clips: dict, tmp_path, monkeypatch):
    hung, fine = _hung_and_fine(sample_clips, tmp_path, monkeypatch, HANG_READ_ENV)
    started = time.monotonic()
    with pytest.raises(IngestError) as caught:
        probe(hung, "cam/clip-hangs-here.mp4", stall_seconds=0.5)
    assert time.monotonic() - started < 3.0
    assert caught.value.error_class == "ingest_stalled"
    assert caught.value.message.startswith("cam/clip-hangs-here.mp4: reading the file: no progress for 0.5 s")
    guarded_info, guarded_segments = probe(fine, "clip.mp4", stall_seconds=5.0)
    assert (guarded_info, guarded_segments) == probe(fine, "clip.mp4")
