"""Fast parameter sweeps on the annotated clips: detect once, re-plan masks for many settings.

    python -m benchmarks.accuracy.sweep --work /tmp/anonray-acc [--set key=value ...] [--grid FILE]

Detection runs once per clip (thresholds floored at ``FLOOR`` so lower settings can be replayed) and is
cached in WORK/detections/. Each setting filters the cached detections by its class thresholds, runs the
pipeline's scene-cut finder and mask planner (``plan_masks``), rasterises the plan with the masking code's
geometry (``rasterize_regions``) and scores it as the video harness scores pixels (benchmarks/accuracy/README.md).
It predicts the real run's figures; ``video.py`` confirms them on decoded output of the real ``anonray run``.

A grid file is YAML: a list of override mappings (dotted keys), each one setting to score.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import yaml

from anonray.config import Config
from anonray.decode.segment import INTERPOLATION
from anonray.detect.frame_detector import FrameDetector, detection_image_size, passes_threshold
from anonray.detect.low_light import LUMA_WEIGHTS
from anonray.render.mask import rasterize_regions
from anonray.track.scenes import find_cuts, frame_signature
from anonray.track.tracker import plan_masks
from anonray.types import CLASS_NAMES, PERSON_CLASS, Detections, MaskPlan
from benchmarks.accuracy.score import ClassScore, score_frame

FLOOR = 0.05


def _class_key(config: Config, cls: str, image_size: tuple[int, int]) -> str:
    """What changes one class's detections (its threshold excluded: it is replayed)."""
    d = getattr(config.detection, cls)
    runtime = config.detection.cpu_runtime
    if runtime == "openvino":
        from anonray.detect.openvino_cpu import float_precision, resolve_precision

        precision = float_precision if cls == "person" else resolve_precision  # people run in float
        runtime += "-" + precision(config.detection.cpu_precision)
    if cls == "person":  # the person threshold is not replayed
        runtime += f"-t{d.threshold:g}-iou{d.nms_iou:g}"
    low_light = ""
    if getattr(d, "low_light_model", None):  # stacks never reach past one detector call
        stack = min(d.low_light_stack, config.detection.batch_size)
        low_light = f"-dark-{d.low_light_model}-{d.low_light_luma:g}-{d.low_light_input_size}-x{stack}"
        low_light += "-raw" if d.low_light_unbrightened else ""
    sized_to_frame = "-fit" if getattr(d, "upscale", True) is False else ""  # plates not upscaled to the input
    if getattr(d, "upscale", False) and getattr(d, "max_upscale", None) is not None:
        sized_to_frame = f"-up{d.max_upscale:g}"  # upscaled at most this many times
    coarse = ""
    if getattr(d, "coarse_input_size", None):  # the shrunk look's boxes are filtered as they are found
        coarse = f"-coarse{d.coarse_input_size}-h{d.coarse_min_height:g}-t{d.coarse_threshold:g}"
        coarse += f"-f{d.coarse_max_frame_share:g}" if d.coarse_max_frame_share < 1 else ""
    return (f"{cls}-{d.model}-{d.input_size}{sized_to_frame}{coarse}-{image_size[0]}x{image_size[1]}-{runtime}"
            f"{low_light}")


def _decode_for_detection(clip: Path, size_of) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int]]:
    images, signatures = [], []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        width, height = stream.width, stream.height
        size = size_of(width, height)
        for frame in container.decode(stream):
            image = frame.reformat(size[0], size[1], format="rgb24", interpolation=INTERPOLATION).to_ndarray()
            signatures.append(np.frombuffer(frame_signature(image), np.uint8))
            images.append(image)
    return images, np.stack(signatures), (width, height)


def detect_clip(clip: Path, config: Config, cache: Path) -> tuple[Detections, np.ndarray, tuple[int, int]]:
    """Detections (scores down to FLOOR) and scene signatures for every frame of ``clip``.

    Frames are downscaled exactly as the pipeline's decode stage does (one size for all classes,
    from the whole config); each class's detections are cached on their own.
    """
    cache.mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] | None = None
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        width, height = stream.width, stream.height
    image_size = detection_image_size(width, height, config)
    signature_file = cache / f"{clip.stem}__signatures-{image_size[0]}x{image_size[1]}.npy"
    parts = []
    for cls in [*config.classes, *(["person"] if config.detects_people else [])]:
        target = cache / f"{clip.stem}__{_class_key(config, cls, image_size)}.npz"
        if not target.exists():
            if images is None:
                images, signatures, _ = _decode_for_detection(clip, lambda w, h: image_size)
                np.save(signature_file, signatures)
            # thresholds and strides are replayed (plan_setting), so the cache holds every box
            if cls == "person":  # people on every frame; faces only where a 25-frame stride falls, then dropped
                single = config.with_overrides(**{"classes": ["face"], "detection.face.stride": 25,
                                                  "detection.person.stride": 1})
            else:
                single = config.with_overrides(**{"classes": [cls], f"detection.{cls}.threshold": FLOOR,
                                                  f"detection.{cls}.small_threshold": None,
                                                  f"detection.{cls}.stride": 1})
            detector = FrameDetector(single)
            batch = config.detection.batch_size
            found = Detections.concat([
                detector.detect(images[i:i + batch], list(range(i, min(i + batch, len(images)))), (width, height))
                for i in range(0, len(images), batch)])
            if cls == "person":
                found = found.select(found.cls == PERSON_CLASS)
            np.savez(target, frame_index=found.frame_index, xyxy=found.xyxy, score=found.score, cls=found.cls)
        z = np.load(target)
        parts.append(Detections(z["frame_index"], z["xyxy"], z["score"], z["cls"]))
    if not signature_file.exists():
        _, signatures, _ = _decode_for_detection(clip, lambda w, h: image_size)
        np.save(signature_file, signatures)
    return Detections.concat(parts), np.load(signature_file), (width, height)


def dark_frames(signatures: np.ndarray, max_luma: float) -> np.ndarray:
    """Per frame, whether the low-light looks run on it: its mean luma (from its 4x4 RGB signature, the area
    average of the frame, as low_light.frame_luma averages a grid of it) is below ``max_luma``."""
    rgb = signatures.reshape(len(signatures), -1, 3).astype(np.float32).mean(axis=1)
    return rgb @ LUMA_WEIGHTS < max_luma


def plan_setting(config: Config, dets: Detections, signatures: np.ndarray, size: tuple[int, int],
                 frame_count: int) -> MaskPlan:
    """The mask plan the pipeline would make from detections cached on every frame at ``FLOOR``.

    Strides are replayed on detections made on every frame: a class keeps its boxes on the frames a stride
    runs on; plates also on every dark frame where a low-light model is set (the pipeline gives each dark
    frame the low-light looks, stride or not; there the cached boxes include the main model's too, which
    the pipeline would not run: slightly optimistic on those frames)."""
    keep = np.ones(len(dets), bool)
    for cls_id, name in enumerate(CLASS_NAMES):
        if name in config.classes:
            cfg = getattr(config.detection, name)
            due = dets.frame_index % cfg.stride == 0  # the frames a detection stride would run on
            if getattr(cfg, "low_light_model", None) and len(signatures):
                dark = dark_frames(signatures, cfg.low_light_luma)
                due |= dark[np.clip(dets.frame_index, 0, len(dark) - 1)]
            keep &= (dets.cls != cls_id) | (passes_threshold(dets.xyxy, dets.score, cfg) & due)
        else:
            keep &= dets.cls != cls_id
    person_due = dets.frame_index % config.detection.person.stride == 0
    keep &= (dets.cls != PERSON_CLASS) | (person_due & config.detects_people)
    width, height = size
    cuts = find_cuts(signatures, config.tracking.scene_cut_threshold)
    plan, _ = plan_masks(dets.select(keep), frame_count, width, height, config, cuts)
    return plan


def planned_masks(plan: MaskPlan, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Per frame index, the masked pixels of ``plan`` (bool (h, w)), in frame order."""
    width, height = size
    regions = plan.regions_by_frame()
    for i in range(plan.frame_count):
        rows = regions.get(i)
        yield (rasterize_regions(plan.xyxy[rows], plan.shape[rows], width, height) if rows is not None
               else np.zeros((height, width), bool))


def score_setting(config: Config, dets: Detections, signatures: np.ndarray, size: tuple[int, int],
                  truth: list[list[dict]]) -> tuple[dict[str, ClassScore], int, int]:
    """Plan masks as the pipeline would (``plan_setting``) and score them against the per-frame truth."""
    plan = plan_setting(config, dets, signatures, size, len(truth))
    classes = {name: ClassScore() for name in CLASS_NAMES}
    last: dict[str, bool] = {}
    collateral = background = 0
    for masked, objects in zip(planned_masks(plan, size), truth, strict=True):
        c, b = score_frame(masked, objects, classes, last)
        collateral, background = collateral + c, background + b
    return classes, collateral, background


def sweep(work: Path, settings: list[dict[str, object]]) -> list[dict[str, object]]:
    clips = sorted((work / "clips").iterdir())
    results = []
    for overrides in settings:
        config = Config().with_overrides(**overrides) if overrides else Config()
        totals = {name: ClassScore() for name in CLASS_NAMES}
        collateral = background = 0
        for clip in clips:
            truth = json.loads((work / "truth" / f"{clip.stem}.json").read_text())["frames"]
            dets, signatures, size = detect_clip(clip, config, work / "detections")
            classes, c, b = score_setting(config, dets, signatures, size, truth)
            collateral, background = collateral + c, background + b
            for name, s in classes.items():
                t = totals[name]
                for field in ("object_frames", "missed", "large_object_frames", "large_missed", "transitions"):
                    setattr(t, field, getattr(t, field) + getattr(s, field))
        results.append({"overrides": overrides, "collateral": collateral / max(background, 1),
                        **{name: t.as_dict() for name, t in totals.items()}})
    return results


def parse_set(items: list[str]) -> dict[str, object]:
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Folder with clips/ and truth/ (see video.py).")
    parser.add_argument("--set", action="append", default=[], help="One setting: dotted.key=value (repeatable).")
    parser.add_argument("--grid", type=Path, help="YAML list of override mappings to score.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = yaml.safe_load(args.grid.read_text()) if args.grid else [parse_set(args.set)]
    results = sweep(args.work, settings)
    print("| setting | face miss | face miss >=32 | face flicker | plate miss | plate miss >=32 | "
          "plate flicker | collateral |\n" + "| --- " * 8 + "|")
    for r in results:
        f, p = r["face"], r["plate"]
        print(f"| {r['overrides'] or 'default'} | {100 * f['miss_rate']:.1f}% | {100 * f['large_miss_rate']:.1f}% | "
              f"{f['flicker_per_100']:.2f} | {100 * p['miss_rate']:.1f}% | {100 * p['large_miss_rate']:.1f}% | "
              f"{p['flicker_per_100']:.2f} | {100 * r['collateral']:.2f}% |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
