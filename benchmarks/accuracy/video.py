"""Video accuracy harness: anonray (tracking on and off) and deface 1.5.0 on the same annotated clips.

    python -m benchmarks.accuracy.video --work /tmp/anonray-acc [--config FILE] [--no-deface]

1. builds the annotated clips (``clips.py``) once into WORK/clips and WORK/truth;
2. runs the real ``anonray run`` over WORK/clips with a solid magenta mask, with the given config
   (tracking on) and with tracking off (no gap filling, no roll, no smoothing);
3. runs deface (its default threshold and ellipses, filled magenta: ``deface_tool.run_deface``) from its own
   venv on each clip;
4. scores every output from its pixels (``score.py``) and writes WORK/report.md and WORK/report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.accuracy.clips import CLIP_SPECS, build_all
from benchmarks.accuracy.datasets import DEFAULT_DATA
from benchmarks.accuracy.score import ClipScore, combine, score_clip
from benchmarks.deface_tool import DEFACE_VERSION, run_deface

MAGENTA = (255, 0, 255)
TRACKING_OFF = {"max_gap": 0, "pre_roll": 0, "post_roll": 0, "smoothing": 0.0}


def run_anonray(clips: Path, out: Path, config: dict) -> float:
    out.mkdir(parents=True, exist_ok=True)
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "anonray", "run", str(clips), "--output", str(out),
                           "--config", str(config_path), "--mask", "solid", "--mask-color", "ff00ff"],
                          env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"anonray run failed ({proc.returncode})")
    return time.perf_counter() - started


def _anonray_output(out: Path, clip: Path) -> Path:
    matches = [p for p in out.glob(f"{clip.stem}.*") if p.is_file()]
    if len(matches) != 1:
        raise FileNotFoundError(f"no single anonray output for {clip.name}")
    return matches[0]


def score_tool(name: str, clips: list[Path], truth: Path, out: Path, color: tuple[int, int, int],
               output_for) -> dict:
    per_clip: list[ClipScore] = []
    for clip in clips:
        per_clip.append(score_clip(clip, output_for(out, clip), truth / f"{clip.stem}.json", color))
    return {"tool": name, "total": combine(per_clip), "clips": [s.as_dict() for s in per_clip]}


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def markdown(results: list[dict]) -> str:
    lines = ["| tool | face miss | face miss >=32px | face flicker /100 | plate miss | plate miss >=32px | "
             "plate flicker /100 | collateral | wall s |", "| --- " * 9 + "|"]
    for r in results:
        t = r["total"]
        f, p = t["face"], t["plate"]
        lines.append(f"| {r['tool']} | {_pct(f['miss_rate'])} | {_pct(f['large_miss_rate'])} | "
                     f"{f['flicker_per_100']:.2f} | {_pct(p['miss_rate'])} | {_pct(p['large_miss_rate'])} | "
                     f"{p['flicker_per_100']:.2f} | {_pct(t['collateral'])} | {r.get('wall_seconds', 0):.0f} |")
    lines += ["", "Count-based (blobs.py; every frame is labelled):", "",
              "| tool | mask precision | false masks / frame | fragments / object | blobs / frame |",
              "| --- " * 5 + "|"]
    for r in results:
        b = r["total"]["blobs"]
        lines.append(f"| {r['tool']} | {b['precision']:.2f} | {b['false_per_frame']:.2f} | {b['fragments']:.2f} | "
                     f"{b['blobs'] / max(b['frames'], 1):.2f} |")
    lines += ["", "Per clip (face miss / plate miss / collateral / mask precision):", ""]
    for r in results:
        cells = ", ".join(f"{c['clip']} {_pct(c['classes']['face']['miss_rate'])} / "
                          f"{_pct(c['classes']['plate']['miss_rate'])} / {_pct(c['collateral'])} / "
                          f"{c['blobs']['precision']:.2f}" for c in r["clips"])
        lines.append(f"- {r['tool']}: {cells}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (clips, outputs, report).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, help="anonray config (YAML) to evaluate; default config if absent.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Clip set (stills and camera moves) to build; tune on one seed, report on another.")
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--no-tracking-off", action="store_true", help="Skip the tracking-off run.")
    args = parser.parse_args(argv)

    work = args.work.resolve()
    if not (work / "truth").exists():
        build_all(args.data, work, seed=args.seed)
    clips = sorted(p for p in (work / "clips").iterdir() if p.stem in {s.name for s in CLIP_SPECS})
    config = yaml.safe_load(args.config.read_text()) if args.config else {}
    results = []
    wall = run_anonray(work / "clips", work / "anonray", config)
    results.append({**score_tool("anonray", clips, work / "truth", work / "anonray", MAGENTA, _anonray_output),
                    "wall_seconds": wall})
    if not args.no_tracking_off:
        off = json.loads(json.dumps(config))
        tracking = off.setdefault("tracking", {})
        for cls in ("face", "plate"):
            tracking.setdefault(cls, {}).update(TRACKING_OFF)
        wall = run_anonray(work / "clips", work / "anonray-tracking-off", off)
        results.append({**score_tool("anonray, tracking off", clips, work / "truth",
                                     work / "anonray-tracking-off", MAGENTA, _anonray_output),
                        "wall_seconds": wall})
    if not args.no_deface:
        wall = run_deface(clips, work / "deface")
        results.append({**score_tool(f"deface {DEFACE_VERSION}", clips, work / "truth", work / "deface", MAGENTA,
                                     lambda out, clip: out / f"{clip.stem}.mp4"), "wall_seconds": wall})
    (work / "report.json").write_text(json.dumps({"config": config, "results": results}, indent=2))
    report = markdown(results)
    (work / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
