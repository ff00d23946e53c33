"""Precision and recall on real footage: anonray and deface on the labelled real clips, scored from pixels.

    python -m benchmarks.accuracy.real --work /tmp/anonray-real [--config FILE] [--set KEY=VALUE ...]
                                       [--split tuning|report|all] [--no-deface] [--reuse]

Runs the real ``anonray run`` over the labelled clips (footage.py) with a solid magenta mask (WORK/anonray) and
deface 1.5.0 with its ellipses filled magenta (WORK/deface, kept between runs: its version and the clips do not
change); scores every output from its pixels (blobs.py: the count-based measures of
benchmarks/accuracy/README.md); writes WORK/report.md and WORK/report.json, per clip and per split.
``--reuse`` scores the outputs already in WORK/anonray instead of running anonray again.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from benchmarks.accuracy.blobs import FACE_HEIGHTS, BlobCounts, count_blobs, score_labelled_frame
from benchmarks.accuracy.datasets import DEFAULT_DATA
from benchmarks.accuracy.footage import LabelledClip, load_labels
from benchmarks.accuracy.score import decoded_frames, is_colour, mask_pixels
from benchmarks.accuracy.video import MAGENTA, run_anonray
from benchmarks.deface_tool import DEFACE_VERSION, run_deface


def score_clip(source: Path, output: Path, labels: LabelledClip, colour: tuple[int, int, int]) -> dict:
    """One tool's output of one clip: counts on the labelled frames (``counts``, a BlobCounts, and
    ``labelled``, its figures), blobs per frame over every frame."""
    counts = BlobCounts()
    blobs_all = frames = 0
    for i, (src, out) in enumerate(zip(decoded_frames(source), decoded_frames(output), strict=False)):
        frames += 1
        if src.shape != out.shape:  # deface (imageio) pads to a multiple of 16 at the right and bottom
            out = out[: src.shape[0], : src.shape[1]]
        masked = mask_pixels(out, src, colour)
        blobs_all += count_blobs(masked)
        if i in labels.frames:
            score_labelled_frame(masked, labels.frames[i], counts, eligible=~is_colour(src, colour))
    error = "" if frames == labels.frame_count else f"output has {frames} frames, source {labels.frame_count}"
    return {"clip": labels.name, "split": labels.split, "frames": frames, "error": error,
            "blobs_per_frame": blobs_all / frames if frames else float("nan"), "labelled": counts.as_dict(),
            "counts": counts}


def totals(per_clip: list[dict]) -> dict:
    """Counts pooled over clips, and the mean of the clips' blobs per frame."""
    counts = BlobCounts()
    for c in per_clip:
        counts.add(c["counts"])
    return {**counts.as_dict(), "blobs_per_frame": float(np.mean([c["blobs_per_frame"] for c in per_clip]))}


def _num(v: float, digits: int = 2, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def _frac(pair: list[int]) -> str:
    return f"{pair[1]}/{pair[0]}" if pair[0] else "–"


def markdown(results: dict[str, dict]) -> str:
    """Per clip and per split: one row per tool."""
    head = ("| clip | split | tool | precision | false / frame | fragments / object | blobs / frame (all) | "
            "faces covered | " + " | ".join(f"faces {b[0]}" for b in FACE_HEIGHTS)
            + " | plates >=12 px | collateral |")
    lines = [head, "|" + " --- |" * (10 + len(FACE_HEIGHTS))]

    def row(name: str, split: str, tool: str, d: dict, blobs: float) -> str:
        faces = [d["faces"][b[0]] for b in FACE_HEIGHTS]
        all_faces = [sum(f[0] for f in faces), sum(f[1] for f in faces)]
        return (f"| {name} | {split} | {tool} | {_num(d['precision'])} | {_num(d['false_per_frame'])} | "
                f"{_num(d['fragments'])} | {_num(blobs)} | {_frac(all_faces)} | "
                + " | ".join(_frac(f) for f in faces)
                + f" | {_frac(d['plates'])} | {_num(d['collateral'], pct=True)} |")

    tools = list(results)
    clips = [c["clip"] for c in results[tools[0]]["clips"]]
    for split in ("tuning", "report"):
        for clip in clips:
            for tool in tools:
                c = next(x for x in results[tool]["clips"] if x["clip"] == clip)
                if c["split"] == split:
                    lines.append(row(Path(clip).stem, split, tool, c["labelled"], c["blobs_per_frame"]))
        for tool in tools:
            if split in results[tool]["splits"]:
                t = results[tool]["splits"][split]
                lines.append(row(f"**{split} set**", split, tool, t, t["blobs_per_frame"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the tools over the labelled clips, score them, write WORK/report.md and report.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, help="anonray config (YAML); the default config if absent.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a dotted config key (YAML value), e.g. detection.face.threshold=0.3.")
    parser.add_argument("--split", choices=("tuning", "report", "all"), default="all")
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="Score the anonray outputs already in WORK.")
    args = parser.parse_args(argv)

    import yaml

    labels = {n: c for n, c in load_labels().items() if args.split in ("all", c.split)}
    videos = args.data / "videos"
    work = args.work.resolve()
    clips_dir = work / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    for name in labels:  # the chosen clips only, as links (the footage is never copied)
        link = clips_dir / name
        if not link.exists():
            link.symlink_to((videos / name).resolve())
    config = yaml.safe_load(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    results: dict[str, dict] = {}
    tools = {"anonray": (work / "anonray", MAGENTA)}
    if not args.reuse:
        wall = run_anonray(clips_dir, work / "anonray", config)
        print(f"anonray run: {wall:.0f} s")
    if not args.no_deface:
        run_deface([clips_dir / n for n in labels], work / "deface")
        tools[f"deface {DEFACE_VERSION}"] = (work / "deface", MAGENTA)
    for tool, (out_dir, colour) in tools.items():
        per_clip = []
        for name, lab in sorted(labels.items(), key=lambda kv: (kv[1].split, kv[0])):
            outputs = [p for p in out_dir.glob(f"{Path(name).stem}.*") if p.is_file() and p.suffix != ".mpg"]
            per_clip.append(score_clip(videos / name, outputs[0], lab, colour))
        splits = {s: totals([c for c in per_clip if c["split"] == s]) for s in ("tuning", "report")
                  if any(c["split"] == s for c in per_clip)}
        results[tool] = {"clips": per_clip, "splits": splits}
    report = markdown(results)
    for r in results.values():
        for c in r["clips"]:
            c.pop("counts")
    (work / "report.json").write_text(json.dumps({"config": config, "results": results}, indent=1, default=float))
    (work / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
