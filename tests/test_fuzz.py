"""Fuzzing ingest and decode: 340 mutations of small valid clips, each accounted for, none hanging.

Each mutated file goes through ``ingest.probe`` and, where that succeeds, ``decode.decode_segment``
for every segment (the two stages that read untrusted bytes; tracking and rendering only see what
they produce). A file is accounted for when probe raises an ``IngestError`` with an error class,
or decode yields frames or raises a ``DecodeError`` with one of its documented classes. Any other
exception is a bug (it would end as a vague ``ingest_error``/``decode_error`` row at best).

The files run in a pool of worker processes. In a worker each file has a time limit (SIGALRM
raising an exception, which fires as soon as FFmpeg hands control back to Python); a worker stuck
inside native code is caught by the overall deadline, after which the pool is killed and the test
fails naming the files that never came back. The mutations come from a fixed seed.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path

import numpy as np

from anonray.decode.segment import DecodeError, decode_segment
from anonray.ingest.probe import IngestError, probe
from anonray.testing.samples import write_sample_video

SEED = 20240611
FILE_LIMIT_SECONDS = 10.0
TOTAL_LIMIT_SECONDS = 120.0
DECODE_ERROR_CLASSES = {"missing_frames", "decode_failed", "non_monotonic", "input_vanished"}
"""The classes decode/segment.py documents (DecodeError); track/collect.py reports the first two as damaged_frames."""
MUTATIONS = ("bit_flips", "truncate", "header", "zero_range", "duplicate_range")


class _FileTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _FileTimeout


def exercise(path: str) -> tuple[str, str, str, float]:
    """(file name, outcome, detail, seconds): outcome is 'ingest', 'decoded', 'decode', 'timeout' or 'escaped'."""
    name = Path(path).name
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, FILE_LIMIT_SECONDS)
    try:
        outcome, detail = _ingest_and_decode(path, name)
    except _FileTimeout:
        outcome, detail = "timeout", f"over {FILE_LIMIT_SECONDS} s"
    except Exception as err:  # noqa: BLE001 - what the test is looking for
        outcome, detail = "escaped", f"{type(err).__module__}.{type(err).__name__}: {err}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return name, outcome, detail, time.perf_counter() - started


def _ingest_and_decode(path: str, name: str) -> tuple[str, str]:
    try:
        info, segments = probe(path, name)
    except IngestError as err:
        return "ingest", err.error_class
    frames, errors = 0, []
    for segment in segments:
        try:
            for _ in decode_segment(path, info, segment, (64, 48)):
                frames += 1
        except DecodeError as err:
            errors.append(err.error_class)
    if errors:
        return "decode", ",".join(sorted(set(errors)))
    return "decoded", f"{frames} frames"


def _mutate(data: bytes, kind: str, rng: np.random.Generator, moov: int) -> bytes:
    buf = bytearray(data)
    size = len(buf)
    if kind == "bit_flips":
        for offset in rng.integers(0, size, int(rng.integers(1, 33))):
            buf[offset] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        return bytes(buf[: int(rng.integers(0, size))])
    elif kind == "header":
        # damage the first 1-4 KiB, or (MP4, every other time) the index box
        start = moov if moov >= 0 and rng.random() < 0.5 else 0
        span = min(size - start, int(rng.integers(1024, 4097)))
        for offset in start + rng.integers(0, span, int(rng.integers(1, 17))):
            buf[offset] = int(rng.integers(0, 256))
    elif kind == "zero_range":
        start = int(rng.integers(0, size))
        end = min(size, start + int(rng.integers(16, max(17, size // 4))))
        buf[start:end] = bytes(end - start)
    elif kind == "duplicate_range":
        start = int(rng.integers(0, size))
        chunk = data[start: start + int(rng.integers(16, max(17, size // 8)))]
        at = int(rng.integers(0, size))
        buf[at:at] = chunk
    return bytes(buf)


def make_mutations(folder: Path) -> list[Path]:
    """340 mutated files: 150 of a 20-frame H.264 MP4, 90 of two 12-frame MPEG-2 transport streams, 50 each
    of a 12-frame VP9 WebM (Matroska) and MJPEG MOV (damaged headers there found the escapes fixed in ingest)."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = [(folder / "base.mp4", "h264_mp4", 20, 150), (folder / "base_a.ts", "mpeg2_ts", 12, 45),
             (folder / "base_b.ts", "interlaced_ts", 12, 45), (folder / "base.webm", "vp9_webm", 12, 50),
             (folder / "base.mov", "mjpeg_mov", 12, 50)]
    rng = np.random.default_rng(SEED)
    paths = []
    for base, fmt, frames, count in bases:
        write_sample_video(base, format=fmt, frames=frames, seed=3)
        data = base.read_bytes()
        moov = data.find(b"moov") - 4 if base.suffix == ".mp4" else -1
        for k in range(count):
            kind = MUTATIONS[k % len(MUTATIONS)]
            path = folder / f"{base.stem}-{k:03d}-{kind}{base.suffix}"
            path.write_bytes(_mutate(data, kind, rng, moov))
            paths.append(path)
    return paths


def run_all(paths: list[Path], processes: int = 2) -> tuple[dict[str, tuple[str, str, float]], list[str]]:
    """Every file's (outcome, detail, seconds); the names of files that never came back."""
    ctx = multiprocessing.get_context("fork")
    deadline = time.monotonic() + TOTAL_LIMIT_SECONDS
    results: dict[str, tuple[str, str, float]] = {}
    pool = ctx.Pool(processes, maxtasksperchild=50)
    try:
        pending = {p.name: pool.apply_async(exercise, (str(p),)) for p in paths}
        for name, job in pending.items():
            try:
                _, outcome, detail, seconds = job.get(timeout=max(0.1, deadline - time.monotonic()))
            except multiprocessing.TimeoutError:
                continue
            results[name] = (outcome, detail, seconds)
    finally:
        pool.terminate()
        pool.join()
    return results, [p.name for p in paths if p.name not in results]


def test_fuzzed_inputs_are_all_accounted_for(tmp_path):
    paths = make_mutations(tmp_path / "fuzz")
    assert len(paths) >= 200 and len({p.name for p in paths}) == len(paths)
    started = time.monotonic()
    results, lost = run_all(paths)
    wall = time.monotonic() - started
    assert not lost, f"no result within {TOTAL_LIMIT_SECONDS} s (hung): {lost}"
    escaped = {n: d for n, (o, d, _) in results.items() if o == "escaped"}
    assert not escaped, f"exceptions other than IngestError/DecodeError: {escaped}"
    slow = {n: round(s, 1) for n, (o, _, s) in results.items() if o == "timeout" or s > FILE_LIMIT_SECONDS}
    assert not slow, f"files over the {FILE_LIMIT_SECONDS} s limit: {slow}"
    for name, (outcome, detail, _) in results.items():
        assert outcome in ("ingest", "decode", "decoded"), (name, outcome, detail)
        if outcome == "ingest":
            assert detail, name
        if outcome == "decode":
            assert set(detail.split(",")) <= DECODE_ERROR_CLASSES, (name, detail)
    outcomes = {o for o, _, _ in results.values()}
    assert {"ingest", "decoded"} <= outcomes  # the mutations reach both stages
    print(f"\n{len(paths)} fuzzed files in {wall:.1f} s:",
          {o: sum(1 for r in results.values() if r[0] == o) for o in sorted(outcomes)})
