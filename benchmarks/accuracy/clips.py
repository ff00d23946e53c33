"""Annotated evaluation clips made from labelled stills: slow pan/zoom camera moves, hard cuts.

Each clip strings several stills together (a hard cut between them). On each still the virtual
camera moves slowly from one crop to another; every labelled box is moved with the same affine map,
so every frame has exact ground truth. Clips are encoded in the codecs an archive holds.

Still selection (documented, deterministic): faces come from WIDER FACE validation photos with at
most ``MAX_FACES_PER_STILL`` valid faces (crowd photos with hundreds of tiny faces are left to the
stills benchmark); plates come from the dashcam set, where every plate is labelled. Stills are
drawn with a fixed seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

MAX_FACES_PER_STILL = 40
CLASS_IDS = {"face": 0, "plate": 1}


@dataclass(frozen=True)
class ClipSpec:
    """One evaluation clip: how it is encoded and what it shows."""

    name: str
    container_ext: str
    codec: str
    size: tuple[int, int]
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=dict)
    bit_rate: int | None = None
    fps: int = 25
    faces: int = 2
    """Face stills in the clip."""
    plates: int = 1
    """Plate stills in the clip."""
    seconds_per_still: float = 2.0
    dark_noisy: bool = False


CLIP_SPECS: tuple[ClipSpec, ...] = (
    ClipSpec("h264_mp4", "mp4", "libx264", (1280, 720), options={"crf": "23", "preset": "veryfast"}),
    ClipSpec("hevc_mkv", "mkv", "libx265", (1280, 720),
             options={"crf": "28", "preset": "ultrafast", "x265-params": "log-level=error"}),
    ClipSpec("mpeg2_ts_sd", "ts", "mpeg2video", (720, 576), bit_rate=4_000_000),
    ClipSpec("mpeg4_avi_lowrate", "avi", "mpeg4", (640, 360), bit_rate=400_000),
    ClipSpec("mjpeg_mov", "mov", "mjpeg", (960, 540), pix_fmt="yuvj420p", options={"q:v": "6"}),
    ClipSpec("dark_noisy_h264", "mp4", "libx264", (1280, 720), options={"crf": "23", "preset": "veryfast"},
             dark_noisy=True),
)


@dataclass
class Still:
    path: Path
    cls: str
    boxes: np.ndarray
    """(n, 4) xyxy in still pixels."""
    ignore: np.ndarray


BLANK_RANGE = 2
"""A still whose pixels all lie within this many levels of each other shows nothing (one such labelled file
is in ro_dashcam: all black): its labels are kept in the truth but as ``ignore`` (nobody can mask what no
pixel shows), so that the clips drawn for a seed stay the same."""


def is_blank(image: np.ndarray) -> bool:
    """Whether an image is one flat colour (to within BLANK_RANGE levels)."""
    return int(image.max()) - int(image.min()) <= BLANK_RANGE


def load_stills(data: Path, cls: str) -> list[Still]:
    """Every usable still of a class, in label-file order."""
    folder = data / ("faces/wider_val" if cls == "face" else "plates/ro_dashcam")
    labels = json.loads((folder / "labels.json").read_text())
    stills = []
    for rel, objects in labels.items():
        objs = [o for o in objects if o["cls"] == cls]
        valid = [o for o in objs if not o["ignore"]]
        if not valid or (cls == "face" and len(valid) > MAX_FACES_PER_STILL):
            continue
        stills.append(Still(folder / rel, cls, np.array([o["box"] for o in objs], np.float64).reshape(-1, 4),
                            np.array([o["ignore"] for o in objs], bool)))
    return stills


def camera_path(still_size: tuple[int, int], out_size: tuple[int, int], frames: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """Per-frame 2x3 affine maps (still -> frame): a slow zoom and pan across the still."""
    sw, sh = still_size
    ow, oh = out_size
    aspect = ow / oh
    full_w = min(sw, sh * aspect)  # the largest crop of the output's aspect that fits the still
    zoom_from, zoom_to = rng.uniform(1.0, 1.1), rng.uniform(1.15, 1.35)
    if rng.random() < 0.5:
        zoom_from, zoom_to = zoom_to, zoom_from
    maps = []
    cx0, cy0 = rng.uniform(0.45, 0.55) * sw, rng.uniform(0.45, 0.55) * sh
    cx1, cy1 = cx0 + rng.uniform(-0.06, 0.06) * sw, cy0 + rng.uniform(-0.04, 0.04) * sh
    for i in range(frames):
        t = i / max(frames - 1, 1)
        crop_w = full_w / (zoom_from + (zoom_to - zoom_from) * t)
        crop_h = crop_w / aspect
        cx = np.clip(cx0 + (cx1 - cx0) * t, crop_w / 2, sw - crop_w / 2)
        cy = np.clip(cy0 + (cy1 - cy0) * t, crop_h / 2, sh - crop_h / 2)
        s = ow / crop_w
        maps.append(np.array([[s, 0, -s * (cx - crop_w / 2)], [0, s, -s * (cy - crop_h / 2)]], np.float64))
    return maps


def transform_boxes(boxes: np.ndarray, affine: np.ndarray, out_size: tuple[int, int]) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Boxes under the affine map, clipped to the frame; also the visible share of each box."""
    s, tx, ty = affine[0, 0], affine[0, 2], affine[1, 2]
    moved = boxes * s + np.array([tx, ty, tx, ty])
    clipped = moved.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, out_size[0])
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, out_size[1])
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, np.where(area > 0, visible / np.maximum(area, 1e-9), 0.0)


def _darken(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = frame.astype(np.float32) * 0.35 + rng.normal(0, 8, frame.shape)
    return noisy.clip(0, 255).astype(np.uint8)


def _open_stream(container: av.container.OutputContainer, spec: ClipSpec) -> av.VideoStream:
    stream = container.add_stream(spec.codec, rate=spec.fps)
    stream.width, stream.height = spec.size
    stream.pix_fmt = spec.pix_fmt
    stream.time_base = Fraction(1, spec.fps)
    if spec.bit_rate:
        stream.bit_rate = spec.bit_rate
    if spec.options:
        stream.options = dict(spec.options)
    if spec.codec == "mpeg2video":
        stream.codec_context.gop_size = 12
    return stream


def build_clip(spec: ClipSpec, faces: list[Still], plates: list[Still], out_dir: Path,
               seed: int) -> Path:
    """Encode one clip into ``out_dir/clips`` and its per-frame truth into ``out_dir/truth/<name>.json``."""
    rng = np.random.default_rng(seed)
    chosen = [faces[i] for i in rng.choice(len(faces), spec.faces, replace=False)]
    chosen += [plates[i] for i in rng.choice(len(plates), spec.plates, replace=False)]
    order = rng.permutation(len(chosen))
    frames_per_still = round(spec.seconds_per_still * spec.fps)
    path = out_dir / "clips" / f"{spec.name}.{spec.container_ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    truth: list[list[dict]] = []
    blank_stills: list[str] = []
    with av.open(str(path), "w") as container:
        stream = _open_stream(container, spec)
        index = 0
        for object_base, k in enumerate(order):
            still = chosen[k]
            image = cv2.cvtColor(cv2.imread(str(still.path)), cv2.COLOR_BGR2RGB)
            blank = is_blank(image)
            if blank:
                blank_stills.append(str(still.path.relative_to(still.path.parents[2])))
            for affine in camera_path((image.shape[1], image.shape[0]), spec.size, frames_per_still, rng):
                frame = cv2.warpAffine(image, affine[:2], spec.size, flags=cv2.INTER_AREA,
                                       borderMode=cv2.BORDER_REFLECT)
                if spec.dark_noisy:
                    frame = _darken(frame, rng)
                boxes, visible = transform_boxes(still.boxes, affine, spec.size)
                truth.append([
                    {"object": f"{object_base}:{j}", "cls": still.cls,
                     "box": [round(v, 2) for v in box.tolist()],
                     "ignore": bool(still.ignore[j] or visible[j] < 0.5 or blank)}
                    for j, box in enumerate(boxes) if visible[j] > 0
                ])
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = index
                index += 1
                for packet in stream.encode(video_frame):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    meta = {"clip": asdict(spec), "seed": seed, "frames": truth,
            "stills": [str(chosen[k].path.relative_to(chosen[k].path.parents[2])) for k in order],
            "blank_stills": blank_stills}
    truth_path = out_dir / "truth" / f"{spec.name}.json"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps(meta))
    return path


def build_all(data: Path, out_dir: Path, seed: int = 0,
              specs: tuple[ClipSpec, ...] = CLIP_SPECS) -> list[Path]:
    """Build every clip into ``out_dir/clips`` with its truth in ``out_dir/truth``."""
    faces, plates = load_stills(data, "face"), load_stills(data, "plate")
    return [build_clip(spec, faces, plates, out_dir, seed + i) for i, spec in enumerate(specs)]
