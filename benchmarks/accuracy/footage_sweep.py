"""Fast what-if on the labelled real footage: detect once, re-plan masks for many settings, count blobs.

    python -m benchmarks.accuracy.footage_sweep --work /tmp/anonray-real-sweep [--split tuning]
                                                [--set key=value ...] [--grid FILE] [--json OUT]

The real-footage twin of ``sweep.py``: each clip's detections (every frame, scores down to ``FLOOR``) are
cached in WORK/detections; each setting is replayed through the pipeline's own planner (``plan_setting``)
and mask geometry, and scored with the count-based measures of ``blobs.py`` (labelled frames) and blobs
per frame (every frame). ``real.py`` confirms the figures on the decoded output of a real run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from anonray.config import Config
from benchmarks.accuracy.blobs import FACE_HEIGHTS, BlobCounts, count_blobs, score_labelled_frame
from benchmarks.accuracy.datasets import DEFAULT_DATA
from benchmarks.accuracy.footage import LabelledClip, load_labels
from benchmarks.accuracy.sweep import detect_clip, parse_set, plan_setting, planned_masks


def score_clip_setting(config: Config, clip: Path, labels: LabelledClip, cache: Path) -> tuple[BlobCounts, float]:
    """Labelled-frame counts and blobs per frame (every frame) of one clip under one setting."""
    dets, signatures, size = detect_clip(clip, config, cache)
    plan = plan_setting(config, dets, signatures, size, labels.frame_count)
    counts = BlobCounts()
    blobs = 0
    for i, masked in enumerate(planned_masks(plan, size)):
        blobs += count_blobs(masked)
        if i in labels.frames:
            score_labelled_frame(masked, labels.frames[i], counts)
    return counts, blobs / max(labels.frame_count, 1)


def sweep(work: Path, videos: Path, settings: list[dict], split: str) -> list[dict]:
    """Score each setting (a mapping of dotted overrides) on the labelled clips of ``split``."""
    labels = {n: c for n, c in load_labels().items() if split in ("all", c.split)}
    results = []
    for overrides in settings:
        config = Config().with_overrides(**overrides) if overrides else Config()
        total = BlobCounts()
        clips = {}
        for name, lab in sorted(labels.items()):
            counts, blobs = score_clip_setting(config, videos / name, lab, work / "detections")
            total.add(counts)
            clips[name] = {**counts.as_dict(), "blobs_per_frame": blobs}
        results.append({"overrides": overrides, "total": total.as_dict(), "clips": clips})
    return results


def _f(v: float, pct: bool = False) -> str:
    return "–" if v != v else (f"{100 * v:.1f}%" if pct else f"{v:.2f}")


def markdown(results: list[dict], per_clip: bool) -> str:
    """One row per setting (and per clip with ``per_clip``)."""
    lines = ["| setting | clip | precision | false / frame | fragments | blobs / frame | face recall | "
             + " | ".join(f"faces {b[0]}" for b in FACE_HEIGHTS) + " | plates >=12 px |",
             "|" + " --- |" * (8 + len(FACE_HEIGHTS))]
    for r in results:
        rows = [("all", r["total"], None)] + ([(c, d, d["blobs_per_frame"]) for c, d in r["clips"].items()]
                                             if per_clip else [])
        for clip, d, blobs in rows:
            faces = " | ".join(f"{d['faces'][b[0]][1]}/{d['faces'][b[0]][0]}" for b in FACE_HEIGHTS)
            lines.append(f"| {r['overrides'] or 'default'} | {Path(clip).stem} | {_f(d['precision'])} | "
                         f"{_f(d['false_per_frame'])} | {_f(d['fragments'])} | "
                         f"{'' if blobs is None else _f(blobs)} | {_f(d['face_recall'], True)} | {faces} | "
                         f"{d['plates'][1]}/{d['plates'][0]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (the detection cache).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=("tuning", "report", "all"), default="tuning")
    parser.add_argument("--set", action="append", default=[], help="One setting: dotted.key=value (repeatable).")
    parser.add_argument("--grid", type=Path, help="YAML list of override mappings to score.")
    parser.add_argument("--per-clip", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = yaml.safe_load(args.grid.read_text()) if args.grid else [parse_set(args.set)]
    results = sweep(args.work, args.data / "videos", settings, args.split)
    print(markdown(results, args.per_clip))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
