"""The review sheet: one self-contained HTML page per run, for a person to check the masks by eye.

It samples the run's ``ok`` outputs (``review.sample_share`` of them, at least ``review.min_files``, drawn
with a fixed ``review.seed``), decodes ``review.frames_per_file`` evenly spread frames of each sampled
OUTPUT file (never a source frame), outlines the regions that were masked in them (from the regions
table, see regions.py) and embeds them as base64 JPEGs. The page lives at
``DIR/_anonray/review/<run_id>.html``: it shows footage, so it is as restricted as the rest of
``_anonray``. No Ray here.
"""

from __future__ import annotations

import base64
import bisect
import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from anonray.config import ReviewConfig
from anonray.decode.orientation import to_display
from anonray.layout import REVIEW_DIR_NAME
from anonray.records.regions import read_regions
from anonray.store import storage
from anonray.types import CLASS_NAMES, REGION_CLASS_NAMES, SHAPE_BOX, MaskPlan

OUTLINE_BGR = {"face": (0, 255, 255), "plate": (255, 255, 0)}
"""Outline colours (BGR): faces yellow, plates cyan, each over a black rim so it shows on any picture."""
MANUAL_OUTLINE_BGR = (255, 0, 255)
"""Regions drawn by a reviewer or set as zones (every other class): magenta."""
RIM_BGR = (0, 0, 0)


# ---------------------------------------------------------------- what to show

def sample_size(ok_files: int, share: float, min_files: int) -> int:
    """How many of ``ok_files`` outputs to sample: ``ceil(share * n)``, at least ``min_files``, at most n."""
    if ok_files <= 0:
        return 0
    return min(ok_files, max(min_files, math.ceil(share * ok_files - 1e-9)))


def sample_outputs(video_rows: Iterable[Mapping[str, Any]], cfg: ReviewConfig) -> list[Mapping[str, Any]]:
    """The sampled ``ok`` rows: the same outputs and seed always give the same sample (ordered by output path)."""
    candidates = sorted((r for r in video_rows if r.get("status") == "ok" and r.get("output_path")),
                        key=lambda r: r["video_id"])
    n = sample_size(len(candidates), cfg.sample_share, cfg.min_files)
    if n == 0:
        return []
    picks = np.random.default_rng(cfg.seed).choice(len(candidates), size=n, replace=False)
    return sorted((candidates[int(i)] for i in picks), key=lambda r: r["output_path"])


def frame_indices(frame_count: int, per_file: int) -> list[int]:
    """``per_file`` frame indices evenly spread over ``frame_count`` frames (centres of equal slices)."""
    if frame_count <= 0 or per_file <= 0:
        return []
    k = min(per_file, frame_count)
    return sorted({min(frame_count - 1, int((j + 0.5) * frame_count / k)) for j in range(k)})


# ---------------------------------------------------------------- reading output frames

@dataclass
class OutputFrame:
    index: int
    """Presentation index in the output (the same as in the input: outputs keep every frame)."""
    seconds: float
    image: np.ndarray
    """BGR, as stored (not turned upright)."""


def _frame(index: int, frame: av.VideoFrame) -> OutputFrame:
    seconds = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else math.nan
    return OutputFrame(index, seconds, frame.to_ndarray(format="bgr24"))


def _packet_index(container: av.container.InputContainer,
                  stream: av.video.stream.VideoStream) -> tuple[list[int], list[tuple[int, int]]] | None:
    """Presentation-ordered pts of every frame and (pts, seek timestamp) of every keyframe, from demuxed
    packets (no decoding); None when some packet has no pts or pts repeat."""
    pts, keyframes = [], []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts is None:
            return None
        pts.append(int(packet.pts))
        if packet.is_keyframe:
            seek_ts = min(int(packet.pts), int(packet.dts)) if packet.dts is not None else int(packet.pts)
            keyframes.append((int(packet.pts), seek_ts))
    if not keyframes or len(set(pts)) != len(pts):
        return None
    return sorted(pts), sorted(keyframes)


def _read_by_seeking(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                     order: list[int], keyframes: list[tuple[int, int]],
                     wanted: list[int]) -> dict[int, OutputFrame] | None:
    """Seek to the keyframe before each wanted frame and decode up to it; None when that does not land
    exactly (the caller then decodes from the start)."""
    key_pts = [k[0] for k in keyframes]
    got: dict[int, OutputFrame] = {}
    for i in wanted:
        if i >= len(order):
            return None
        target = order[i]
        k = bisect.bisect_right(key_pts, target) - 1
        if k < 0:
            return None
        frame, _ = seek_and_decode(container, stream, keyframes[k], target)
        if frame is None:
            return None
        got[i] = _frame(i, frame)
    return got


def seek_and_decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    keyframe: tuple[int, int], target: int) -> tuple[av.VideoFrame | None, int]:
    """The frame with pts ``target``, decoded from ``keyframe`` (its pts, then its seek timestamp), and the
    number of frames decoded; None where neither seek lands at or before the target.

    Seeking to the keyframe's own pts lands on it in MP4 and Matroska; its decode timestamp (earlier, with
    B-frames) lands on the keyframe before it there, a whole GOP more to decode (1.45 s against 0.1 s for
    the review frames of a 20 s 1080p output), and is only the fallback for demuxers that seek by decode time.
    """
    decoded = 0
    for seek_ts in dict.fromkeys(keyframe):
        container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            decoded += 1
            if frame.pts is None or frame.pts > target:
                break
            if frame.pts == target:
                return frame, decoded
    return None, decoded


def read_sequentially(path: Path, wanted: list[int]) -> dict[int, OutputFrame]:
    got: dict[int, OutputFrame] = {}
    remaining = set(wanted)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: the driver's decode is the review sheet's whole cost
        for i, frame in enumerate(container.decode(stream)):
            if i in remaining:
                got[i] = _frame(i, frame)
                remaining.discard(i)
                if not remaining:
                    break
    return got


def _seeking_pays(order: list[int], keyframes: list[tuple[int, int]], wanted: list[int]) -> bool:
    """Whether seeking decodes clearly fewer frames than reading from the start to the last wanted one (a
    seek costs about as much as decoding a frame again from the keyframe; short files read straight through)."""
    key_pts = [k[0] for k in keyframes]
    by_seeking = 0
    for i in wanted:
        if i >= len(order):
            return True  # let the seeking reader report it cannot land
        k = bisect.bisect_right(key_pts, order[i]) - 1
        by_seeking += bisect.bisect_right(order, order[i]) - bisect.bisect_left(order, key_pts[max(k, 0)])
    return 2 * by_seeking < wanted[-1] + 1


def at_keyframes(indices: Sequence[int], frame_count: int, key_indices: Sequence[int]) -> list[int]:
    """Each of ``indices`` (slice centres from frame_indices) moved to the keyframe nearest to it inside its
    own slice of the file, where that slice has one: a keyframe decodes alone, so the sheet costs a few
    frame decodes per file instead of a pass through it. A slice without a keyframe gives its first frame,
    the one fewest decodes away from the keyframe before it (a 20 s output with keyframes at 0 and 10 s:
    its last third's first frame, not its middle). Without known keyframes the indices stay."""
    k = len(indices)
    keys = sorted(int(i) for i in key_indices)
    out = []
    for j, centre in enumerate(indices):
        lo, hi = j * frame_count / k, (j + 1) * frame_count / k
        inside = [i for i in keys[bisect.bisect_left(keys, math.ceil(lo)):] if i < hi]
        if inside:
            out.append(min(inside, key=lambda i: (abs(i - centre), i)))
        else:
            out.append(min(math.ceil(lo), frame_count - 1) if keys else int(centre))
    return sorted(set(out))


def review_frames(path: Path, per_file: int, frame_count: int) -> dict[int, OutputFrame]:
    """``per_file`` frames of a video file evenly spread, each at a keyframe where its slice has one
    (at_keyframes); presentation indices as keys. ``frame_count`` (what the run wrote) spreads them where
    the file has no usable packet index."""
    return _read_frames(path, lambda order, key_indices: at_keyframes(
        frame_indices(len(order), per_file), len(order), key_indices),
        lambda: frame_indices(frame_count, per_file))


def read_output_frames(path: Path, indices: Sequence[int]) -> dict[int, OutputFrame]:
    """The frames at presentation ``indices`` of a video file (seeking where the packet index allows)."""
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    return _read_frames(path, lambda *_: wanted, lambda: wanted) if wanted else {}


def _read_frames(path: Path, pick: Callable[[list[int], list[int]], list[int]],
                 pick_without_index: Callable[[], list[int]]) -> dict[int, OutputFrame]:
    """The frames ``pick(order, key_indices)`` chooses from the file's packet index (one demux pass), read by
    seeking where that pays, else from the start; ``pick_without_index()`` where there is no usable index."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = _packet_index(container, stream)
        if index is None:
            wanted = pick_without_index()
        else:
            order, keyframes = index
            wanted = sorted(set(pick(order, [bisect.bisect_left(order, pts) for pts, _ in keyframes])))
            if wanted and _seeking_pays(order, keyframes, wanted):
                got = _read_by_seeking(container, stream, order, keyframes, wanted)
                if got is not None:
                    return got
    return read_sequentially(path, wanted) if wanted else {}


# ---------------------------------------------------------------- drawing

def draw_regions(image: np.ndarray, boxes: np.ndarray, shapes: np.ndarray, classes: np.ndarray,
                 scale: float = 1.0) -> np.ndarray:
    """A copy of a BGR image with each region outlined (its box or ellipse, as masked), boxes scaled by ``scale``."""
    out = np.ascontiguousarray(image).copy()
    thick = max(2, round(min(out.shape[:2]) / 240))
    for box, shape, cls in zip(np.asarray(boxes, np.float64).reshape(-1, 4) * scale, shapes, classes, strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        colour = OUTLINE_BGR.get(REGION_CLASS_NAMES[int(cls)], MANUAL_OUTLINE_BGR)
        for c, t in ((RIM_BGR, thick + 2), (colour, thick)):
            if int(shape) == SHAPE_BOX:
                cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), c, t, cv2.LINE_AA)
            else:
                centre = ((x0 + x1) // 2, (y0 + y1) // 2)
                axes = (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2))
                cv2.ellipse(out, centre, axes, 0, 0, 360, c, t, cv2.LINE_AA)
    return out


def frame_picture(frame: OutputFrame, plan: MaskPlan | None, rotation: int, max_side: int) -> np.ndarray:
    """The picture shown for one output frame: scaled to ``max_side``, outlines drawn, turned upright."""
    image = frame.image
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if plan is not None:
        rows = plan.frame_index == frame.index
        image = draw_regions(image, plan.xyxy[rows], plan.shape[rows], plan.cls[rows], scale)
    return to_display(image, rotation)


def jpeg_data_uri(image: np.ndarray, quality: int) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# ---------------------------------------------------------------- the page

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f4f4f4;color:#111}
section{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.8em 1em;margin:1em 0}
h2{font-size:1.05em;margin:.2em 0} code{font-size:.95em}
.frames{display:flex;flex-wrap:wrap;gap:.8em} figure{margin:0}
img{max-width:100%;height:auto;border:1px solid #888;display:block}
figcaption{font-size:.85em;color:#333;margin-top:.2em} .warn{color:#a00}
.key{display:inline-block;width:1em;height:1em;border:2px solid #000;vertical-align:middle}
"""


def _hex(bgr: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*bgr[::-1])


def _file_section(number: int, row: Mapping[str, Any], manifest_index: int | None, frames: list[OutputFrame],
                  plan: MaskPlan | None, cfg: ReviewConfig, error: str | None) -> tuple[str, int]:
    e = html.escape
    head = (f'<section class="file" id="v-{e(str(row["video_id"]))}"><h2>{number}. video {e(str(row["video_id"]))}'
            + (f" (manifest file #{manifest_index})" if manifest_index is not None else "")
            + f' &middot; <code>{e(str(row["output_path"]))}</code></h2>')
    facts = (f'<p>{row.get("width")}&times;{row.get("height")} px stored, rotation {row.get("rotation") or 0}&deg;, '
             f'{row.get("frames_out")} frames, {row.get("frames_masked")} with masks; '
             f'sha256 of the output {e(str(row.get("sha256_out") or "")[:16])}&hellip;</p>')
    if error:
        return head + facts + f'<p class="warn">the output could not be read for review ({e(error)})</p></section>', 0
    if plan is None:
        facts += '<p class="warn">no regions kept for this output: frames shown without outlines</p>'
    figures = []
    for frame in frames:
        picture = frame_picture(frame, plan, int(row.get("rotation") or 0), cfg.max_side)
        if plan is not None:
            cls = plan.cls[plan.frame_index == frame.index]
            counts = ", ".join(f"{int((cls == i).sum())} {name}" for i, name in enumerate(CLASS_NAMES))
            note = f"{int(len(cls))} region(s): {counts}"
        else:
            note = "regions unknown"
        alt = f"output frame {frame.index} of video {row['video_id']}"
        figures.append(
            f'<figure><img src="{jpeg_data_uri(picture, cfg.jpeg_quality)}" width="{picture.shape[1]}" '
            f'height="{picture.shape[0]}" alt="{e(alt)}"><figcaption>frame {frame.index} &middot; '
            f'{frame.seconds:.3f} s &middot; {e(note)}</figcaption></figure>')
    return head + facts + '<div class="frames">' + "".join(figures) + "</div></section>", len(figures)


def _read_output(output_dir: Path | str, relative: str, per_file: int, frame_count: int) -> dict[int, OutputFrame]:
    """Review frames of one output: in the output folder, or from a private local copy of a URI output's object."""
    if not storage.is_uri(output_dir):
        return review_frames(Path(output_dir) / relative, per_file, frame_count)
    with storage.staged(storage.join(str(output_dir), relative)) as (local, _):
        return review_frames(local, per_file, frame_count)


def build_review_sheet(run_id: str, video_rows: Iterable[Mapping[str, Any]], output_dir: Path | str, state_dir: Path,
                       cfg: ReviewConfig, manifest_index: Mapping[str, int] | None = None,
                       config_hash: str = "") -> tuple[str, dict[str, Any]]:
    """The HTML page for one run and a summary of it (counts only)."""
    rows = list(video_rows)
    ok = [r for r in rows if r.get("status") == "ok" and r.get("output_path")]
    sampled = sample_outputs(rows, cfg)
    sections, frames_shown, unreadable = [], 0, 0
    for number, row in enumerate(sampled, 1):
        regions_run = row.get("output_run_id") or run_id  # a review-status row points at its output's run
        plan = read_regions(state_dir, regions_run, row["video_id"], int(row.get("frames_out") or 0))
        error, frames = None, []
        try:
            got = _read_output(output_dir, row["output_path"], cfg.frames_per_file, int(row.get("frames_out") or 0))
            frames = [got[i] for i in sorted(got)]
            if not frames:
                error = "no frame could be decoded"
        except (OSError, av.error.FFmpegError, IndexError, ValueError) as err:
            error = type(err).__name__
        unreadable += error is not None
        section, shown = _file_section(number, row, (manifest_index or {}).get(row["video_id"]), frames, plan, cfg,
                                       error)
        sections.append(section)
        frames_shown += shown
    e = html.escape
    legend = " ".join(f'<span class="key" style="background:{_hex(c)}"></span> {name}'
                      for name, c in OUTLINE_BGR.items())
    intro = (
        f"<h1>anonray review sheet: run {e(run_id)}</h1>"
        "<p>Frames decoded from the <strong>anonymized outputs</strong> (never from the sources), with the "
        f"regions that were masked outlined: {legend}. Check that every face and plate is covered.</p>"
        f"<p>{len(sampled)} of {len(ok)} ok output(s) of this run sampled (share {cfg.sample_share:g}, at least "
        f"{cfg.min_files}, seed {cfg.seed}), {cfg.frames_per_file} frame(s) per file evenly spread (each at the "
        "keyframe nearest to its place where its slice has one, else at the slice's first frame); "
        f"{frames_shown} frame(s) shown. Config hash {e(config_hash)}.</p>"
        "<p>This page shows footage: keep it in the restricted <code>_anonray</code> folder.</p>"
    )
    if not sampled:
        intro += "<p>No ok output in this run: nothing to review.</p>"
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>anonray review {e(run_id)}</title><style>{_STYLE}</style></head><body>\n"
            + intro + "\n" + "\n".join(sections) + "\n</body></html>\n")
    summary = {"ok_outputs": len(ok), "files_sampled": len(sampled), "frames_shown": frames_shown,
               "files_unreadable": unreadable, "seed": cfg.seed, "sample_share": cfg.sample_share,
               "sampled_video_ids": [r["video_id"] for r in sampled]}
    return page, summary


def review_sheet_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / REVIEW_DIR_NAME / f"{run_id}.html"
