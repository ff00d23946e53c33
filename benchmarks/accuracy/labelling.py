"""A small labelling helper for the real-footage set (footage.py): candidates first, then a whole-frame pass.

    # 1. decode the frames to label, run a high-recall detection, draw what a labeller looks at
    python -m benchmarks.accuracy.labelling prepare --work W [--clips a.mp4,b.mp4]
    #    W/<clip>/f<frame>_crops.png   every candidate as a numbered crop (context around it, score)
    #    W/<clip>/f<frame>_frame*.png  the whole frame with the numbered candidates and a pixel grid
    # 2. accept or reject candidates, add what no candidate caught, in W/<clip>/decisions.json:
    #    {"<frame>": {"accept": {"<id>": "face" | "head" | "plate"}, "add": [{"cls": "face", "box": [x1,y1,x2,y2]}]}}
    python -m benchmarks.accuracy.labelling zoom --work W CLIP FRAME X0 Y0 X1 Y1 [--box face:x1,y1,x2,y2 ...]
    # 3. merge every clip's decisions into real_footage_labels.json, then look at the result
    python -m benchmarks.accuracy.labelling apply --work W
    python -m benchmarks.accuracy.labelling show --work W CLIP FRAME
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import av
import cv2
import numpy as np

from benchmarks.accuracy.datasets import DEFAULT_DATA
from benchmarks.accuracy.footage import (
    LABELS_PATH,
    SPLIT,
    LabelledClip,
    labelled_frame_indices,
    load_labels,
    save_labels,
)

HIGH_RECALL = {"detection.face.threshold": 0.1, "detection.face.small_threshold": 0.03,
               "detection.plate.threshold": 0.05, "detection.plate.stride": 1}
"""Detector settings for candidates: far below the defaults, so a labeller sees nearly everything scored."""
MAX_CANDIDATES = 60
"""Per frame and class, the best-scoring candidates offered (the rest score lower still)."""
COLOURS = {"face": (0, 255, 0), "head": (255, 200, 0), "plate": (0, 160, 255)}


def decode_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames (presentation order, from 0) as RGB arrays."""
    with av.open(str(path)) as container:
        return {i: frame.to_ndarray(format="rgb24") for i, frame in enumerate(container.decode(video=0))
                if i in wanted}


def frame_count(path: Path) -> int:
    """Frames the clip decodes to (what the labelled frame indices count)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def candidates(frames: dict[int, np.ndarray]) -> dict[int, list[dict]]:
    """High-recall detections per frame (pipeline geometry: decode-size downscale, boxes in source pixels)."""
    from anonray.config import Config
    from anonray.detect.frame_detector import FrameDetector, detection_image_size
    from benchmarks.accuracy.stills import downscale

    config = Config().with_overrides(**HIGH_RECALL)
    detector = FrameDetector(config, device="cpu")
    out: dict[int, list[dict]] = {}
    for index, rgb in frames.items():
        h, w = rgb.shape[:2]
        dets = detector.detect([downscale(rgb, detection_image_size(w, h, config))], [index], (w, h))
        found = []
        for cls_id, name in enumerate(("face", "plate")):
            sel = np.flatnonzero(dets.cls == cls_id)
            sel = sel[np.argsort(-dets.score[sel])][:MAX_CANDIDATES]
            found += [{"cls": name, "box": [round(float(v), 1) for v in dets.xyxy[k]],
                       "score": round(float(dets.score[k]), 3)} for k in sel]
        out[index] = [{"id": i, **c} for i, c in enumerate(found)]
    return out


def _put_text(img: np.ndarray, text: str, xy: tuple[int, int], colour=(255, 255, 0), scale: float = 0.45) -> None:
    cv2.putText(img, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def crop_sheet(rgb: np.ndarray, cands: list[dict], tile: int = 128, columns: int = 8) -> np.ndarray:
    """Every candidate as a tile: the box with as much context again around it, its id, class and score."""
    h, w = rgb.shape[:2]
    rows = max(1, math.ceil(len(cands) / columns))
    sheet = np.full((rows * (tile + 18), columns * tile, 3), 40, np.uint8)
    for n, c in enumerate(cands):
        x0, y0, x1, y1 = c["box"]
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0, 4) * 2
        a0, b0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        a1, b1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        crop = rgb[b0:b1, a0:a1].copy()
        cv2.rectangle(crop, (int(x0 - a0), int(y0 - b0)), (int(x1 - a0), int(y1 - b0)), COLOURS[c["cls"]], 1)
        scale = tile / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
        r, col = divmod(n, columns)
        y, x = r * (tile + 18) + 18, col * tile
        sheet[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
        _put_text(sheet, f"{c['id']} {c['cls'][0]} {c['score']:.2f} h{int(y1 - y0)}", (x + 2, y - 5),
                  scale=0.4)
    return sheet


def grid_view(rgb: np.ndarray, boxes: list[dict], origin: tuple[int, int] = (0, 0), step: int | None = None,
              target: int = 1280) -> np.ndarray:
    """An image (or a region of one, at ``origin``) scaled to about ``target`` px wide, with a labelled
    grid in source pixels and the boxes (``cls``, ``box`` in source pixels, optional ``id``) drawn."""
    h, w = rgb.shape[:2]
    scale = target / w
    view = cv2.resize(rgb, (int(w * scale), int(h * scale)),
                      interpolation=cv2.INTER_NEAREST if scale > 2 else cv2.INTER_AREA if scale < 1
                      else cv2.INTER_LINEAR)
    step = step or max(10, int(round(w / 12 / 10)) * 10)
    ox, oy = origin
    for gx in range(int(math.ceil(ox / step)) * step, ox + w, step):
        x = int((gx - ox) * scale)
        cv2.line(view, (x, 0), (x, view.shape[0]), (255, 255, 255), 1)
        _put_text(view, str(gx), (x + 2, 12), scale=0.38)
    for gy in range(int(math.ceil(oy / step)) * step, oy + h, step):
        y = int((gy - oy) * scale)
        cv2.line(view, (0, y), (view.shape[1], y), (255, 255, 255), 1)
        _put_text(view, str(gy), (2, y - 2), scale=0.38)
    for b in boxes:
        x0, y0, x1, y1 = ((v - o) * scale for v, o in zip(b["box"], (ox, oy, ox, oy), strict=True))
        colour = COLOURS.get(b["cls"], (255, 0, 255))
        cv2.rectangle(view, (int(x0), int(y0)), (int(x1), int(y1)), colour, 1)
        if "id" in b:
            _put_text(view, str(b["id"]), (int(x0), max(10, int(y0) - 2)), colour, 0.4)
    return view


def _save(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def frame_views(folder: Path, index: int, rgb: np.ndarray, boxes: list[dict], suffix: str) -> list[Path]:
    """The whole frame with grid and boxes; frames wider than 960 px also as four overlapping quarters."""
    h, w = rgb.shape[:2]
    paths = [folder / f"f{index}_{suffix}.png"]
    _save(paths[0], grid_view(rgb, boxes, target=max(960, min(1280, w))))
    if w > 960:
        qw, qh = int(w * 0.55), int(h * 0.55)
        for name, (x, y) in {"tl": (0, 0), "tr": (w - qw, 0), "bl": (0, h - qh), "br": (w - qw, h - qh)}.items():
            inside = [b for b in boxes if b["box"][2] > x and b["box"][0] < x + qw and b["box"][3] > y
                      and b["box"][1] < y + qh]
            path = folder / f"f{index}_{suffix}_{name}.png"
            _save(path, grid_view(rgb[y:y + qh, x:x + qw], inside, origin=(x, y), target=1280))
            paths.append(path)
    return paths


def prepare(work: Path, videos: Path, clips: list[str]) -> None:
    """Per clip: decode the frames to label, find candidates, write the crops sheet and frame views."""
    for clip in clips:
        folder = work / clip
        folder.mkdir(parents=True, exist_ok=True)
        count = frame_count(videos / clip)
        wanted = labelled_frame_indices(clip, count)
        frames = decode_frames(videos / clip, set(wanted))
        cands = candidates(frames)
        h, w = next(iter(frames.values())).shape[:2]
        (folder / "candidates.json").write_text(json.dumps(
            {"clip": clip, "width": w, "height": h, "frames": count, "candidates": cands}, indent=1))
        for index, rgb in frames.items():
            np.save(folder / f"f{index}.npy", rgb)
            _save(folder / f"f{index}_crops.png", crop_sheet(rgb, cands[index]))
            frame_views(folder, index, rgb, cands[index], "frame")
        print(f"{clip}: frames {wanted}, candidates {sum(len(c) for c in cands.values())}")


def _parse_box(text: str) -> dict:
    cls, coords = text.split(":")
    return {"cls": cls, "box": [float(v) for v in coords.split(",")]}


def zoom(work: Path, clip: str, index: int, region: list[float], boxes: list[str]) -> Path:
    """A region of a prepared frame enlarged with a fine grid and the given boxes, as WORK/<clip>/zoom.png."""
    rgb = np.load(work / clip / f"f{index}.npy")
    x0, y0, x1, y1 = (int(v) for v in region)
    part = rgb[max(0, y0):y1, max(0, x0):x1]
    span = max(x1 - x0, 1)
    step = 5 if span <= 80 else 10 if span <= 200 else 20 if span <= 400 else 50
    path = work / clip / "zoom.png"
    _save(path, grid_view(part, [_parse_box(b) for b in boxes], origin=(max(0, x0), max(0, y0)), step=step,
                          target=960))
    return path


def labels_from_decisions(work: Path, clip: str) -> LabelledClip:
    """One clip's labels: the accepted candidates and the added boxes of every prepared frame."""
    folder = work / clip
    cands = json.loads((folder / "candidates.json").read_text())
    decisions = json.loads((folder / "decisions.json").read_text())
    frames: dict[int, list[dict]] = {}
    for key, found in cands["candidates"].items():
        if key not in decisions:
            raise ValueError(f"{clip}: frame {key} has no decision (an empty entry says nobody is there)")
        by_id = {str(c["id"]): c for c in found}
        d = decisions[key]
        objs = [{"cls": cls, "box": by_id[i]["box"]} for i, cls in d.get("accept", {}).items()]
        objs += [{"cls": o["cls"], "box": o["box"]} for o in d.get("add", [])]
        frames[int(key)] = objs
    return LabelledClip(clip, SPLIT[clip], cands["width"], cands["height"], cands["frames"], frames)


def apply(work: Path) -> None:
    """Merge every clip's decisions into real_footage_labels.json (clips without decisions are kept)."""
    clips = load_labels() if LABELS_PATH.exists() else {}
    for folder in sorted(p for p in work.iterdir() if (p / "decisions.json").is_file()):
        clips[folder.name] = labels_from_decisions(work, folder.name)
        n = sum(len(v) for v in clips[folder.name].frames.values())
        print(f"{folder.name}: {len(clips[folder.name].frames)} frames, {n} objects")
    save_labels(clips)


def show(work: Path, clip: str, index: int) -> list[Path]:
    """Draw a frame's committed labels (WORK/<clip>/f<frame>_labels*.png) to check them."""
    labelled = load_labels()[clip]
    rgb = np.load(work / clip / f"f{index}.npy")
    return frame_views(work / clip, index, rgb, labelled.frames[index], "labels")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--clips", default=",".join(SPLIT))
    z = sub.add_parser("zoom")
    z.add_argument("--work", type=Path, required=True)
    z.add_argument("clip")
    z.add_argument("frame", type=int)
    z.add_argument("region", type=float, nargs=4)
    z.add_argument("--box", action="append", default=[], help="cls:x1,y1,x2,y2 to draw (source pixels)")
    a = sub.add_parser("apply")
    a.add_argument("--work", type=Path, required=True)
    s = sub.add_parser("show")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("clip")
    s.add_argument("frame", type=int)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.work, args.data / "videos", args.clips.split(","))
    elif args.command == "zoom":
        print(zoom(args.work, args.clip, args.frame, args.region, args.box))
    elif args.command == "apply":
        apply(args.work)
    else:
        print("\n".join(str(p) for p in show(args.work, args.clip, args.frame)))


if __name__ == "__main__":
    main()
