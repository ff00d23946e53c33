"""Encode stage with smart passthrough (encoder.passthrough) against the full re-encode, in one run on one clip.

    python benchmarks/passthrough.py [--input CLIP] [--frames N] [--share 0.25] [--json OUT.json]
        [--no-pixel-check]

CLIP (default ``../shared/data/videos/street_faces_1080p.mp4``) is looped to N frames (one GOP per loop) and a
synthetic mask plan puts one box on every frame of ``share`` of the GOPs. ``full`` (every frame re-encoded) and
``passthrough`` (GOPs without masks copied) then run ``--repeat`` times each in ABBA order, the fastest counting;
each output passes qa.check_output, and with the pixel check every frame of a copied GOP must be bit-identical
to the source. Prints a markdown table; ``--json`` writes the numbers. Details: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "videos" / "street_faces_1080p.mp4"


def _throughput():
    """``benchmarks.throughput`` (loop_clip), importable whether this file runs as a script or as a module."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import throughput

    return throughput


def masked_gops(gops: int, share: float) -> list[int]:
    """``share`` of ``gops`` GOP numbers (at least one), evenly spread, never the first."""
    count = max(1, round(gops * share))
    return sorted({min(gops - 1, 1 + round(i * gops / count)) for i in range(count)})


def synthetic_plan(gop_of_frame: np.ndarray, chosen: list[int], width: int, height: int):
    """A MaskPlan with one box (a fifth of the frame, drifting) on every frame of the chosen GOPs."""
    from anonray.types import SHAPE_BOX, MaskPlan

    frames = np.flatnonzero(np.isin(gop_of_frame, chosen)).astype(np.int64)
    w, h = width / 5, height / 5
    x0 = (frames * 4) % max(1, int(width - w))
    boxes = np.stack([x0, np.full(frames.size, height / 3), x0 + w, np.full(frames.size, height / 3 + h)], axis=1)
    n = frames.size
    return MaskPlan(gop_of_frame.size, frames, boxes.astype(np.float32), np.zeros(n, np.int64),
                    np.full(n, SHAPE_BOX, np.int64), np.zeros(n, np.int64))


def gop_of_frames(index) -> np.ndarray:
    """GOP number of every frame in presentation order (GOP = IDR period, as passthrough.py defines it)."""
    gop_of_packet = np.cumsum(index.idr) - (1 if index.idr[0] else 0)
    order = np.argsort(index.pts, kind="stable")
    return gop_of_packet[order]


def copied_frames_identical(src: Path, out: Path, copied_pts: set[int]) -> tuple[int, int]:
    """(identical, compared): the frames of copied GOPs, decoded side by side from both files (presentation
    order, frame by frame), compared bit for bit."""
    identical = compared = 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        va.thread_type = vb.thread_type = "AUTO"
        for mine, theirs in zip(a.decode(va), b.decode(vb), strict=True):
            if mine.pts not in copied_pts:
                continue
            compared += 1
            same_time = mine.pts * va.time_base == theirs.pts * vb.time_base
            identical += same_time and np.array_equal(mine.to_ndarray(), theirs.to_ndarray())
    return identical, compared


def _encode(mode: str, clip: Path, out: Path, info, cfg, plan, frame_pts: np.ndarray) -> tuple[float, Any]:
    """One timed encode stage: (wall seconds, passthrough outcome or None)."""
    from anonray.render.codec.passthrough import passthrough_transcode
    from anonray.render.codec.transcoder import transcode
    from anonray.render.video import MaskHook

    hook = MaskHook(plan, frame_pts, cfg)
    started = time.perf_counter()
    if mode == "full":
        stats, outcome = transcode(clip, out, info, cfg, hook), None
    else:
        stats, outcome = passthrough_transcode(clip, out, info, cfg, hook, plan, frame_pts)
    seconds = time.perf_counter() - started
    assert stats.frames_out == frame_pts.size, (mode, stats.frames_out, frame_pts.size)
    return seconds, outcome


def measure(clip: Path, work: Path, share: float, pixel_check: bool, repeat: int = 2) -> dict[str, Any]:
    """Time both encode stages ``repeat`` times in ABBA order (drift on a shared machine cancels), keep the
    fastest of each; QA and the pixel check run once on the outputs."""
    from anonray.config import Config
    from anonray.ingest.probe import probe
    from anonray.qa.checks import check_output
    from anonray.render.codec.bitstream import FAMILY_OF_ENCODER
    from anonray.render.codec.passthrough import scan_source
    from anonray.render.codec.settings import for_source

    info, _ = probe(clip, clip.name)
    cfg = for_source(Config().with_overrides(**{"encoder.passthrough": True}), info)
    index = scan_source(clip, info, FAMILY_OF_ENCODER[cfg.encoder.codec])
    frame_pts = np.sort(index.pts)
    gop_of_frame = gop_of_frames(index)
    chosen = masked_gops(int(gop_of_frame.max()) + 1, share)
    plan = synthetic_plan(gop_of_frame, chosen, info.width, info.height)
    result: dict[str, Any] = {"input": clip.name, "frames": int(frame_pts.size), "gops": int(gop_of_frame.max()) + 1,
                              "gops_masked": chosen, "frames_masked": int(np.unique(plan.frame_index).size),
                              "encoder": f"{cfg.encoder.codec} crf {cfg.encoder.crf} {cfg.encoder.preset}",
                              "repeat": repeat, "full_runs": [], "passthrough_runs": []}
    for r in range(repeat):
        for mode in ("full", "passthrough") if r % 2 == 0 else ("passthrough", "full"):
            seconds, outcome = _encode(mode, clip, work / f"{mode}{clip.suffix}", info, cfg, plan, frame_pts)
            result[f"{mode}_runs"].append(seconds)
            if outcome is not None:
                result["gops_copied"], result["frames_copied"] = outcome.gops_copied, outcome.frames_copied
    for mode in ("full", "passthrough"):
        out = work / f"{mode}{clip.suffix}"
        result[f"{mode}_seconds"] = min(result[f"{mode}_runs"])
        started = time.perf_counter()
        check_output(out, info, frame_pts, cfg.audio, codec=cfg.encoder.codec)  # raises when not frame-exact
        result[f"{mode}_qa_seconds"] = time.perf_counter() - started
        result[f"{mode}_bytes"] = out.stat().st_size
    result["speedup"] = result["full_seconds"] / result["passthrough_seconds"]
    result["speedup_with_qa"] = ((result["full_seconds"] + result["full_qa_seconds"])
                                 / (result["passthrough_seconds"] + result["passthrough_qa_seconds"]))
    result["frame_exact"] = True  # check_output passed for both
    if pixel_check:
        copied = {int(p) for p, g in zip(frame_pts, gop_of_frame, strict=True) if g not in chosen}
        result["copied_identical"], result["copied_compared"] = copied_frames_identical(
            clip, work / f"passthrough{clip.suffix}", copied)
    return result


def markdown_table(r: dict[str, Any]) -> str:
    fps = {m: r["frames"] / r[f"{m}_seconds"] for m in ("full", "passthrough")}
    lines = [
        "| encode stage | seconds (fastest) | fps | + QA decode, s | output MB | speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| full re-encode ({r['encoder']}) | {r['full_seconds']:.2f} | {fps['full']:.1f} | "
        f"{r['full_qa_seconds']:.2f} | {r['full_bytes'] / 1e6:.2f} | 1.00 |",
        f"| passthrough ({r['gops_copied']} of {r['gops']} GOPs copied) | {r['passthrough_seconds']:.2f} | "
        f"{fps['passthrough']:.1f} | {r['passthrough_qa_seconds']:.2f} | {r['passthrough_bytes'] / 1e6:.2f} | "
        f"{r['speedup']:.2f} ({r['speedup_with_qa']:.2f} with QA) |",
        "",
        f"{r['input']}: {r['frames']} frames in {r['gops']} GOPs, masks on every frame of GOPs {r['gops_masked']} "
        f"({r['frames_masked']} frames); fastest of {r['repeat']} runs each (ABBA). Frame-exact "
        f"(qa.check_output: frame count and every timestamp): {'yes' if r['frame_exact'] else 'no'} for both.",
    ]
    if "copied_compared" in r:
        lines[-1] += (f" Copied frames bit-identical to the source: {r['copied_identical']} of "
                      f"{r['copied_compared']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--frames", type=int, default=840, help="Loop the clip to this many frames.")
    parser.add_argument("--share", type=float, default=0.25, help="Share of the GOPs that get masks.")
    parser.add_argument("--repeat", type=int, default=2,
                        help="Timed runs per mode, in ABBA order; the fastest counts (default 2).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-pixel-check", dest="pixel_check", action="store_false",
                        help="Skip the bit-for-bit comparison of the copied GOPs (two more decodes).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anonray-passthrough-") as tmp:
        work = Path(tmp)
        clip = work / f"looped{args.input.suffix}"
        _throughput().loop_clip(args.input, clip, args.frames)
        result = measure(clip, work, args.share, args.pixel_check, max(1, args.repeat))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    print(markdown_table(result))


if __name__ == "__main__":
    main()
