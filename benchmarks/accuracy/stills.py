"""Detection accuracy on labelled stills, with the detectors run exactly as the pipeline runs them.

    python -m benchmarks.accuracy.stills [--config FILE] [--set KEY=VALUE ...] [--datasets a,b]
                                         [--json OUT] [--md OUT] [--limit N] [--data DIR]

Each image is downscaled as decode does (``detection_image_size`` for the whole configuration, by
swscale's default bilinear filter through PyAV), passed to ``FrameDetector`` for the dataset's class
only, and the boxes come back in source pixels. The score threshold is lowered to ``--floor`` (0.05)
to trace the precision/recall curve for AP50; recall and precision are read at the configured
threshold. Beside the VOC match (IoU 0.5) a looser pool matches at IoU 0.3 (``overall_iou30``): a detector whose
boxes are shaped unlike the labels' (CenterFace's squarer face boxes against WIDER's) loses matches at 0.5 that
still mask the face. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy.datasets import DATASETS, DEFAULT_DATA, load_dataset
from benchmarks.accuracy.matching import SIZE_BUCKETS, Accumulator, size_bucket

LOOSE_IOU = 0.3
"""The looser match of ``overall_iou30``."""


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def downscale(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize like decode: swscale through PyAV with its default (bilinear) filter."""
    import av

    h, w = rgb.shape[:2]
    if (w, h) == tuple(size):
        return rgb
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()


def evaluate(name: str, config, data_root: Path, floor: float, limit: int | None, device: str) -> dict:
    from anonray.detect.frame_detector import FrameDetector, detection_image_size, passes_threshold

    ds = DATASETS[name]
    records = load_dataset(name, data_root)[:limit]
    cfg_cls = getattr(config.detection, ds.cls)
    threshold = cfg_cls.threshold
    low = config.with_overrides(**{"classes": [ds.cls], f"detection.{ds.cls}.threshold": min(floor, threshold),
                                   f"detection.{ds.cls}.small_threshold": None, f"detection.{ds.cls}.enabled": True})
    detector = FrameDetector(low, device=device)
    overall, loose = Accumulator(), Accumulator(iou_threshold=LOOSE_IOU)
    buckets = [Accumulator() for _ in SIZE_BUCKETS] if ds.cls == "face" else []
    started = time.perf_counter()
    for rec in records:
        rgb = load_rgb(rec.image)
        h, w = rgb.shape[:2]
        size = detection_image_size(w, h, config)  # the whole config's decode size, as the pipeline
        dets = detector.detect([downscale(rgb, size)], [0], (w, h))
        kept = passes_threshold(dets.xyxy, dets.score, cfg_cls)
        overall.add(dets.xyxy, dets.score, rec.boxes, rec.ignore, kept)
        loose.add(dets.xyxy, dets.score, rec.boxes, rec.ignore, kept)
        if buckets:
            which = size_bucket(rec.boxes)
            for b, acc in enumerate(buckets):
                acc.add(dets.xyxy, dets.score, rec.boxes, rec.ignore | (which != b), kept)
    elapsed = time.perf_counter() - started
    out = {
        "class": ds.cls,
        "model": next(iter(detector.model_ids().values())),
        "input_size": cfg_cls.input_size,
        "threshold": threshold if cfg_cls.small_threshold is None else
        f"{cfg_cls.small_threshold}@{cfg_cls.small_height}px..{threshold}@{cfg_cls.large_height}px",
        "images": len(records),
        "all_labelled": ds.all_labelled,
        "seconds_per_image": elapsed / max(len(records), 1),
        "overall": overall.scores(None).as_dict(),
        "overall_iou30": loose_scores(loose),
    }
    if not ds.all_labelled:
        # Unlabelled plates would count as false positives: precision and AP would be biased low.
        out["overall"].update(precision=None, fp=None, ap50=None)
        out["overall_iou30"].update(precision=None, fp=None, ap30=None)
    if buckets:
        out["by_height"] = {b[0]: acc.scores(None).as_dict() for b, acc in zip(SIZE_BUCKETS, buckets, strict=True)}
        for v in out["by_height"].values():
            v["precision"], v["fp"] = None, None  # other buckets' faces are ignored: not a precision
    return out


def loose_scores(pool: Accumulator) -> dict:
    """The looser pool's figures, its AP named for its IoU (``ap30``)."""
    scores = pool.scores(None).as_dict()
    scores["ap30"] = scores.pop("ap50")
    return scores


def _fmt(v, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else str(v)


def markdown(result: dict) -> str:
    lines = [
        f"config {result['config_hash']}, device {result['device']}, AP floor {result['floor']}",
        "",
        "| dataset | class | model | input | thr | images | labels | recall % | precision % | AP50 % "
        "| recall % (IoU 0.3) | AP30 % | s/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["datasets"].items():
        o, loose = r["overall"], r["overall_iou30"]
        lines.append(
            f"| {name} | {r['class']} | {r['model']} | {r['input_size']} | {r['threshold']} | {r['images']} "
            f"| {o['n_labels']} | {_fmt(o['recall'])} | {_fmt(o['precision'])} | {_fmt(o['ap50'])} "
            f"| {_fmt(loose['recall'])} | {_fmt(loose['ap30'])} | {r['seconds_per_image']:.2f} |"
        )
    for name, r in result["datasets"].items():
        if "by_height" not in r:
            continue
        lines += ["", f"{name}: faces by label box height (px)", "",
                  "| height | labels | recall % | AP50 % |", "|---|---|---|---|"]
        for b, s in r["by_height"].items():
            lines.append(f"| {b} | {s['n_labels']} | {_fmt(s['recall'])} | {_fmt(s['ap50'])} |")
    return "\n".join(lines) + "\n"


def _parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from anonray.config import load_config

    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy.stills", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, help="anonray YAML config (default: the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. detection.plate.model=plate-yolov8n-fastanpr")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data root (default {DEFAULT_DATA})")
    p.add_argument("--limit", type=int, help="first N images of each dataset (smoke runs)")
    p.add_argument("--floor", type=float, default=0.05, help="score threshold used to trace AP (default 0.05)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--md", type=Path, help="write the Markdown tables here")
    args = p.parse_args(argv)

    config = load_config(args.config)
    if args.set:
        config = config.with_overrides(**_parse_set(args.set))
    names = [n for n in args.datasets.split(",") if n]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}")
    result = {
        "config_hash": config.config_hash(),
        "overrides": args.set,
        "device": args.device,
        "floor": args.floor,
        "iou": 0.5,
        "datasets": {},
    }
    for name in names:
        result["datasets"][name] = evaluate(name, config, args.data, args.floor, args.limit, args.device)
        print(f"{name}: {json.dumps(result['datasets'][name]['overall'])}", file=sys.stderr)
    md = markdown(result)
    sys.stdout.write(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        args.md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
