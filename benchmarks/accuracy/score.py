"""Score an anonymized clip from its output pixels alone, against the clip's per-frame truth.

A pixel counts as masked where the output shows the solid mask colour and the source frame does
not (so a black mask on a dark clip is not credited with pixels that were black already).

- frame miss rate: share of labelled object-frames (``ignore`` false) whose box is less than 60%
  covered by the mask; also for objects of 32 px and more (box height);
- flicker: covered-to-uncovered transitions per 100 object-frames (per object, frame to frame);
- collateral: share of the pixels outside every labelled box (ignored ones included) that are masked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from benchmarks.accuracy.blobs import COVERED, BlobCounts, score_labelled_frame

LARGE_PX = 32


@dataclass
class ClassScore:
    object_frames: int = 0
    missed: int = 0
    large_object_frames: int = 0
    large_missed: int = 0
    transitions: int = 0

    @property
    def miss_rate(self) -> float:
        return self.missed / self.object_frames if self.object_frames else float("nan")

    @property
    def large_miss_rate(self) -> float:
        return self.large_missed / self.large_object_frames if self.large_object_frames else float("nan")

    @property
    def flicker(self) -> float:
        return 100 * self.transitions / self.object_frames if self.object_frames else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "miss_rate": self.miss_rate, "large_miss_rate": self.large_miss_rate,
                "flicker_per_100": self.flicker}


@dataclass
class ClipScore:
    clip: str
    frames: int
    classes: dict[str, ClassScore]
    collateral_pixels: int
    background_pixels: int
    error: str = ""
    blobs: BlobCounts = field(default_factory=BlobCounts)
    """Count-based measures (blobs.py) over every frame: each frame of these clips is labelled."""

    @property
    def collateral(self) -> float:
        return self.collateral_pixels / self.background_pixels if self.background_pixels else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {"clip": self.clip, "frames": self.frames, "collateral": self.collateral, "error": self.error,
                "classes": {k: v.as_dict() for k, v in self.classes.items()}, "blobs": self.blobs.as_dict()}


def decoded_frames(path: Path):
    """Every frame of a file's first video stream as RGB arrays, in presentation order."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def is_colour(image: np.ndarray, color: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.array(color, np.int16)).max(axis=2) <= tol


def mask_pixels(output: np.ndarray, source: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Pixels the anonymizer painted: the mask colour in the output, not in the source."""
    return is_colour(output, color) & ~is_colour(source, color)


def score_frame(masked: np.ndarray, objects: list[dict], classes: dict[str, ClassScore],
                last_covered: dict[str, bool], eligible: np.ndarray | None = None) -> tuple[int, int]:
    """Score one frame's mask against its labelled objects; returns (collateral, background) pixels.

    ``eligible``: pixels that could show the mask at all (not the mask colour in the source); all
    pixels when None. ``classes`` and ``last_covered`` (per object, for flicker) are updated.
    """
    h, w = masked.shape
    outside = np.ones((h, w), bool)
    for obj in objects:
        x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        outside[y0:y1, x0:x1] = False
        if obj["ignore"]:
            last_covered.pop(obj["object"], None)
            continue
        region = masked[y0:y1, x0:x1]
        ok = eligible[y0:y1, x0:x1] if eligible is not None else np.ones_like(region)
        covered = bool(region[ok].mean() >= COVERED) if ok.any() else True
        score = classes[obj["cls"]]
        score.object_frames += 1
        score.missed += not covered
        if y1 - y0 >= LARGE_PX:
            score.large_object_frames += 1
            score.large_missed += not covered
        score.transitions += bool(last_covered.get(obj["object"]) and not covered)
        last_covered[obj["object"]] = covered
    return int(masked[outside].sum()), int(outside.sum())


def score_clip(source: Path, output: Path, truth_path: Path, color: tuple[int, int, int]) -> ClipScore:
    """Compare ``output`` with ``source`` frame by frame under the truth of ``truth_path``."""
    truth = json.loads(truth_path.read_text())["frames"]
    classes = {"face": ClassScore(), "plate": ClassScore()}
    last_covered: dict[str, bool] = {}
    blobs = BlobCounts()
    collateral = background = 0
    count = 0
    pairs = zip(decoded_frames(source), decoded_frames(output), strict=False)
    for i, (src, out) in enumerate(pairs):
        count += 1
        if src.shape != out.shape:
            # deface (imageio) pads to a multiple of 16 at the right and bottom: crop the padding away
            grow_h, grow_w = out.shape[0] - src.shape[0], out.shape[1] - src.shape[1]
            if not (0 <= grow_h < 16 and 0 <= grow_w < 16):
                return ClipScore(truth_path.stem, count, classes, 0, 0, error="output size differs")
            out = out[: src.shape[0], : src.shape[1]]
        masked = mask_pixels(out, src, color)
        eligible = ~is_colour(src, color)
        objects = truth[i] if i < len(truth) else []
        c, b = score_frame(masked, objects, classes, last_covered, eligible=eligible)
        score_labelled_frame(masked, objects, blobs, eligible=eligible)
        collateral, background = collateral + c, background + b
    error = "" if count == len(truth) else f"output has {count} frames, truth {len(truth)}"
    return ClipScore(truth_path.stem, count, classes, collateral, background, error, blobs)


def combine(scores: list[ClipScore]) -> dict[str, object]:
    """Totals over clips: miss rates, flicker and collateral pooled by object-frames and pixels."""
    out: dict[str, object] = {}
    for cls in ("face", "plate"):
        total = ClassScore()
        for s in scores:
            c = s.classes[cls]
            total.object_frames += c.object_frames
            total.missed += c.missed
            total.large_object_frames += c.large_object_frames
            total.large_missed += c.large_missed
            total.transitions += c.transitions
        out[cls] = total.as_dict()
    blobs = BlobCounts()
    for s in scores:
        blobs.add(s.blobs)
    out["blobs"] = blobs.as_dict()
    background = sum(s.background_pixels for s in scores)
    out["collateral"] = sum(s.collateral_pixels for s in scores) / background if background else float("nan")
    return out
