"""The labelled real-footage set: which frames of ``../shared/data/videos`` are labelled, and how.

Labels live in ``real_footage_labels.json`` beside this file (the footage stays in ``../shared``):

    {"clips": {"<file name>": {"split": "tuning" | "report", "width": W, "height": H, "frames": N,
               "labelled": {"<frame index>": [{"cls": "face" | "head" | "plate", "box": [x1, y1, x2, y2]}, ...]}}}}

Frame indices count decoded frames in presentation order from 0, boxes are in source pixels; an empty list
means nobody in the frame. The classes and the fixed tuning/report split by clip: benchmarks/accuracy/README.md,
"Real footage". Evaluation data only: never train weights on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS_PATH = Path(__file__).with_name("real_footage_labels.json")
CLASSES = ("face", "head", "plate")

SPLIT = {
    "street_faces_1080p.mp4": "tuning",
    "car_park_topdown.mp4": "tuning",
    "bikes_272p.mp4": "tuning",
    "intel_head-pose-face-detection-female-and-male.mp4": "tuning",
    "speech_face_360p.mp4": "tuning",
    "intel_classroom.mp4": "report",
    "car_plate_720p.mp4": "report",
    "room_topdown_no_faces.mp4": "report",
    "carphone_qcif.mp4": "report",
    "intel_face-demographics-walking.mp4": "report",
}
"""Clip -> the half it belongs to."""

FRAMES_PER_CLIP = {"street_faces_1080p.mp4": 14, "intel_classroom.mp4": 12, "room_topdown_no_faces.mp4": 12}
"""Labelled frames per clip where more than ``DEFAULT_FRAMES`` (people move a lot, or a long clip)."""
DEFAULT_FRAMES = 10


def labelled_frame_indices(clip: str, frame_count: int) -> list[int]:
    """The frames of a clip to label: spread evenly over its whole length, first and last included."""
    k = min(FRAMES_PER_CLIP.get(clip, DEFAULT_FRAMES), frame_count)
    return sorted({int(round(v)) for v in np.linspace(0, frame_count - 1, k)})


@dataclass(frozen=True)
class LabelledClip:
    """One clip's labels: per labelled frame, boxes (n, 4) in source pixels and their classes."""

    name: str
    split: str
    width: int
    height: int
    frame_count: int
    frames: dict[int, list[dict]]


def load_labels(path: Path = LABELS_PATH) -> dict[str, LabelledClip]:
    """Every labelled clip, by file name."""
    raw = json.loads(path.read_text())["clips"]
    out = {}
    for name, clip in raw.items():
        frames = {int(k): list(v) for k, v in clip["labelled"].items()}
        for objs in frames.values():
            for o in objs:
                if o["cls"] not in CLASSES:
                    raise ValueError(f"{name}: unknown class {o['cls']!r}")
        out[name] = LabelledClip(name, clip["split"], int(clip["width"]), int(clip["height"]),
                                 int(clip["frames"]), frames)
    return out


def save_labels(clips: dict[str, LabelledClip], path: Path = LABELS_PATH) -> None:
    """Write the labels in a stable, diff-friendly order (one object per line)."""
    lines = ['{"clips": {']
    names = sorted(clips)
    for ci, name in enumerate(names):
        c = clips[name]
        lines.append(f'  {json.dumps(name)}: {{"split": {json.dumps(c.split)}, "width": {c.width}, '
                     f'"height": {c.height}, "frames": {c.frame_count}, "labelled": {{')
        keys = sorted(c.frames)
        for fi, frame in enumerate(keys):
            objs = sorted(c.frames[frame], key=lambda o: (o["cls"], o["box"]))
            body = ",\n      ".join(json.dumps({"cls": o["cls"], "box": [round(float(v), 1) for v in o["box"]]})
                                    for o in objs)
            tail = "," if fi < len(keys) - 1 else ""
            lines.append(f'    "{frame}": [' + (f"\n      {body}\n    ]" if objs else "]") + tail)
        lines.append("  }}" + ("," if ci < len(names) - 1 else ""))
    lines.append("}}")
    path.write_text("\n".join(lines) + "\n")
