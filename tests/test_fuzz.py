"""Fuzzing ingest and decode: 340 mutations of small valid clips, each accounted for, none hanging.

Each mutated file goes through ``ingest.probe`` and, where that succeeds, ``decode.decode_segment``
for every segment (the two stages that read untrusted bytes; tracking and rendering only see what
they produce). A file is accounted for when probe raises an ``IngestError`` with an error class,
or decode yields frames or raises a ``DecodeError`` with one of its documented classes. Any other
exception is a bug (it would end as a vague ``ingest_error``/``decode_error`` row at best).

The files run in worker processes supervised by the test (tests/_supervised_pool.py): each file has a
wall-clock limit kept by the parent, so a worker stuck inside native code, or killed by a crash, costs that
one file, which the test names as hung or crashed, and a fresh worker takes the rest. The workers are spawned,
not forked from the test process (which holds the session's Ray driver). The mutations come from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _supervised_pool import run_supervised

from anonray.decode.segment import DecodeError, decode_segment
from anonray.ingest.probe import IngestError, probe
from anonray.testing.samples import write_sample_video

SEED = 20240611
FILE_LIMIT_SECONDS = 10.0
DECODE_ERROR_CLASSES = {"missing_frames", "decode_failed", "non_monotonic", "input_vanished"}
"""The classes decode/segment.py documents (DecodeError); track/collect.py reports the first two as damaged_frames."""
MUTATIONS = ("bit_flips", "truncate", "header", "zero_range", "duplicate_range")


def exercise(path: str) -> tuple[str, str]:
    """(outcome, detail): outcome is 'ingest', 'decoded', 'decode' or 'escaped'."""
    try:
        return _ingest_and_decode(path, Path(path).name)
    except Exception as err:  # noqa: BLE001 - what the test is looking for
        return "escaped", f"{type(err).__module__}.{type(err).__name__}: {err}"


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


def test_fuzzed_inputs_are_all_accounted_for(tmp_path):
    paths = make_mutations(tmp_path / "fuzz")
    assert len(paths) >= 200 and len({p.name for p in paths}) == len(paths)
    outcomes = run_supervised(exercise, [str(p) for p in paths], item_limit=FILE_LIMIT_SECONDS)
    assert len(outcomes) == len(paths)
    failed = {Path(p).name: (o.status, o.value) for p, o in outcomes.items() if o.status != "ok"}
    assert not failed, f"files that hung (over {FILE_LIMIT_SECONDS} s) or crashed their worker: {failed}"
    results = {Path(p).name: o.value for p, o in outcomes.items()}
    escaped = {n: d for n, (o, d) in results.items() if o == "escaped"}
    assert not escaped, f"exceptions other than IngestError/DecodeError: {escaped}"
    for name, (outcome, detail) in results.items():
        assert outcome in ("ingest", "decode", "decoded"), (name, outcome, detail)
        if outcome == "ingest":
            assert detail, name
        if outcome == "decode":
            assert set(detail.split(",")) <= DECODE_ERROR_CLASSES, (name, detail)
    kinds = {o for o, _ in results.values()}
    assert {"ingest", "decoded"} <= kinds  # the mutations reach both stages
    slowest = max(o.seconds for o in outcomes.values())
    print(f"\n{len(paths)} fuzzed files, slowest {slowest:.2f} s:",
          {k: sum(1 for o, _ in results.values() if o == k) for k in sorted(kinds)})
