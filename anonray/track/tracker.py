"""Tracking per class over a whole video, gap filling, smoothing, and the mask plan built from tracks.

Pure numpy + lap: no Ray, no video. Detections in, MaskPlan out. Masks come from confirmed tracks, never
from raw detections: a track no detection confirmed (``confirm_threshold``, ``weak_track_hits``) is not
masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import lap
import numpy as np

from anonray.box_overlap import iou_matrix
from anonray.config import Config, ZoneConfig
from anonray.config_tracking import ClassTracking, FaceTracking
from anonray.decode.orientation import boxes_to_display
from anonray.height_ramp import ramp_by_height
from anonray.render.mask import enlarge_boxes
from anonray.track.crowd import ConfirmedFaces, CrowdRule
from anonray.track.people import PeopleSeen
from anonray.track.zones import dropped_by_zones, with_always_mask
from anonray.types import CLASS_NAMES, SHAPE_BOX, SHAPE_ELLIPSE, Detections, MaskPlan


@dataclass
class Track:
    """One object over time: observed (frame, box, score) triples in frame order."""

    track_id: int
    cls: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    shot: int = 0
    """The scene (between cuts) the track lives in."""
    strong_hits: int = 0
    """Detections that reached the confirming score for their size (``confirm_threshold``)."""

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    def predict(self, frame: int) -> np.ndarray:
        """Constant-velocity prediction of the box at ``frame`` from the last two observations."""
        last = self.boxes[-1]
        if len(self.frames) < 2:
            return last
        dt = self.frames[-1] - self.frames[-2]
        velocity = (self.boxes[-1] - self.boxes[-2]) / max(dt, 1)
        return last + velocity * (frame - self.frames[-1])


def grow_boxes(boxes: np.ndarray, share: float) -> np.ndarray:
    """Boxes (n,4) grown by ``share`` of their width and height on every side (buffered IoU's boxes)."""
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1) * share
    return boxes + size * np.array([-1, -1, 1, 1], np.float32)


def associate(track_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian assignment (lap.lapjv) of detections to tracks on 1 - IoU, pairs below min_iou refused."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return []
    cost = 1.0 - iou_matrix(track_boxes, det_boxes)
    _, track_to_det, _ = lap.lapjv(cost.astype(np.float64), extend_cost=True, cost_limit=1.0 - min_iou)
    return [(t, int(d)) for t, d in enumerate(track_to_det) if d >= 0]


def shot_index(frames: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """For each frame index, the shot it belongs to (cuts: sorted first frames of new shots)."""
    return np.searchsorted(cuts, frames, side="right")


def _extend(track: Track, frame: int, box: np.ndarray, score: float, strong: bool) -> None:
    track.frames.append(frame)
    track.boxes.append(box.astype(np.float32))
    track.scores.append(float(score))
    track.strong_hits += int(strong)


def track_class(dets: Detections, cls: int, params: ClassTracking,
                cuts: np.ndarray | None = None, people: PeopleSeen | None = None) -> list[Track]:
    """Link one class's detections into tracks, frame by frame (ByteTrack-style, two stages).

    Strong detections (reaching ``confirm_threshold`` for their height) are matched first, weaker ones
    (down to the detector's threshold) then continue the tracks left unmatched, the tracks confirmed so
    far first, so a tentative track born beside a confirmed one never takes its weak detections away.
    With ``motion_buffer``, a last stage matches the strong detections left to the tracks seen within
    ``motion_buffer_gap`` frames, on boxes grown by that share of their size (buffered IoU, after C-BIoU).
    Every unmatched detection starts a tentative track. A track is masked only once
    confirmed (``_confirmed``), and then over its whole life: a face first seen small and weak is masked
    from its first frame once it is seen strong. No track crosses a scene cut. With ``people`` (faces), a track
    no person supports must also reach ``alone_track_threshold``, on enough of its detections (``_confirmed``).
    """
    mine = dets.select(dets.cls == cls)
    mine = mine.select(np.argsort(mine.frame_index, kind="stable"))
    cuts = np.zeros(0, np.int64) if cuts is None else np.asarray(cuts, np.int64)
    active: list[Track] = []
    finished: list[Track] = []
    next_id = 0
    frames, starts = np.unique(mine.frame_index, return_index=True)
    bounds = [*starts[1:], len(mine)] if len(mine) else []
    shots = shot_index(frames, cuts)
    for frame, shot, start, end in zip(frames, shots, starts, bounds, strict=True):
        frame = int(frame)
        alive = [t for t in active if frame - t.last_frame <= params.max_gap + 1 and t.shot == shot]
        finished.extend(t for t in active if t not in alive)
        active = alive
        boxes, scores = mine.xyxy[start:end], mine.score[start:end]
        is_strong = scores >= confirm_threshold(boxes[:, 3] - boxes[:, 1], params)
        strong, weak = np.flatnonzero(is_strong), np.flatnonzero(~is_strong)
        predicted = np.array([t.predict(frame) for t in active], np.float32).reshape(-1, 4)
        confirmed = [i for i, t in enumerate(active) if _confirmed(t, params)]
        tentative = sorted(set(range(len(active))) - set(confirmed))
        taken: set[int] = set()
        used: set[int] = set()
        # Strong detections confirm whichever track takes them: one assignment over all tracks, because in
        # crowds of small faces letting confirmed tracks pick first cost 1-5 points of face misses.
        # Weak ones cannot: the tracks confirmed so far pick first. Last, with ``motion_buffer``, the strong
        # detections left are matched on grown boxes to the tracks seen within ``motion_buffer_gap`` frames (an
        # object that moved further than its size since the last look; older tracks or weak detections took
        # other objects' looks: measured).
        everyone = list(range(len(active)))
        stages = [(strong, params.match_iou, (everyone,), 0.0),
                  (weak, params.weak_match_iou, (confirmed, tentative), 0.0)]
        if params.motion_buffer > 0:  # strong detections only, tracks seen at the last look only
            recent = [i for i, t in enumerate(active) if frame - t.last_frame <= params.motion_buffer_gap]
            stages.append((strong, params.match_iou, (recent,), params.motion_buffer))
        for stage, min_iou, groups, grow in stages:
            for group in groups:
                tracks = [i for i in group if i not in taken]
                free = [int(d) for d in stage if d not in used]
                for j, k in associate(grow_boxes(predicted[tracks], grow), grow_boxes(boxes[free], grow), min_iou):
                    _extend(active[tracks[j]], frame, boxes[free[k]], scores[free[k]], is_strong[free[k]])
                    taken.add(tracks[j])
                    used.add(free[k])
        for d in [*strong, *weak]:
            if d not in used:
                track = Track(next_id, cls, shot=int(shot))
                _extend(track, frame, boxes[d], scores[d], is_strong[d])
                active.append(track)
                next_id += 1
    finished.extend(active)
    verdicts = [_verdict(t, params, people) for t in finished]
    return _with_faces_around(finished, verdicts, params, people)


def _with_faces_around(tracks: list[Track], verdicts: list[bool | None], params: ClassTracking,
                       people: PeopleSeen | None) -> list[Track]:
    """The tracks confirmed on their own (``verdicts``, as ``_verdict`` gives them) and, of the others (faces),
    those the faces confirmed on their own confirm (crowd.py): a track in a crowd (``crowd_*``, where people
    were looked for; only a track that lacks nothing but a person under it) and a fragment of a confirmed face
    (``fragment_iou``)."""
    kept = [t for t, verdict in zip(tracks, verdicts, strict=True) if verdict]
    rule = _crowd_rule(params) if people is not None else None
    fragment_iou = getattr(params, "fragment_iou", 0.0)
    if rule is None and not fragment_iou:
        return kept
    around = ConfirmedFaces([t.frames for t in kept], [_upright(t.boxes, people) for t in kept])  # on their own

    def in_crowd(t: Track, verdict: bool | None) -> bool:
        return rule is not None and verdict is None and around.supports_track(
            t.frames, _upright(t.boxes, people), rule)

    def fragment(t: Track) -> bool:
        return bool(fragment_iou) and len(t.frames) >= params.low_score_min_hits and around.overlap_share(
            t.frames, _upright(t.boxes, people), fragment_iou) >= params.fragment_share

    return [t for t, verdict in zip(tracks, verdicts, strict=True) if verdict or in_crowd(t, verdict) or fragment(t)]


def _upright(boxes: list[np.ndarray], people: PeopleSeen | None) -> list[np.ndarray]:
    """A track's boxes (stored-frame pixels) turned upright by the video's display rotation, as people.py turns
    them (a row of heads in a phone clip stored sideways is a column of stored pixels)."""
    if people is None or not people.rotation or not len(boxes):
        return boxes
    return list(boxes_to_display(np.asarray(boxes, np.float32).reshape(-1, 4), people.rotation, *people.stored_size))


def _crowd_rule(params: ClassTracking) -> CrowdRule | None:
    """The crowd rule of a face tracking section (``crowd_neighbours`` set), else None."""
    neighbours = getattr(params, "crowd_neighbours", 0)
    if not neighbours:
        return None
    return CrowdRule(neighbours, params.crowd_reach, params.crowd_rise, params.crowd_share, params.crowd_min_hits)


def _confirmed(track: Track, params: ClassTracking, people: PeopleSeen | None = None) -> bool:
    """Masked tracks: ``min_hits`` detections (``low_score_min_hits`` where no score reaches ``track_threshold``),
    and one detection reaching the confirming score for its size (``confirm_threshold``) or ``weak_track_hits``
    weak ones; where people were looked for (``people``), a track whose best score stays below
    ``alone_track_threshold`` also needs a person under it (people.py), as does a long one that reached it on
    fewer than ``alone_repeat_share`` of its detections and never reached ``alone_sure_threshold``.

    Decided on the whole track (the video is processed offline), so a confirmed weak track is masked
    from its first frame, not from the frame that confirmed it.
    """
    return bool(_verdict(track, params, people))


def _verdict(track: Track, params: ClassTracking, people: PeopleSeen | None) -> bool | None:
    """``_confirmed``'s answer, with None for a track that lacks nothing but a person under it (where the faces
    around it may stand in for the person: crowd.py)."""
    if len(track.frames) < params.min_hits:
        return False
    if len(track.frames) < params.low_score_min_hits and max(track.scores) < params.track_threshold:
        return False
    if not track.strong_hits and not (params.weak_track_hits and len(track.frames) >= params.weak_track_hits):
        return False
    alone = getattr(params, "alone_track_threshold", None)  # faces only
    if people is None or alone is None or _confirmed_alone(track.scores, params):
        return True
    return True if people.supports_track(track.frames, track.boxes) else None


def _confirmed_alone(scores: Sequence[float], params: FaceTracking) -> bool:
    """Whether a face track's own scores confirm it without a person: one detection at ``alone_sure_threshold``,
    or ``alone_repeat_share`` of its detections at ``alone_track_threshold`` (a mirror peaks once or twice)."""
    alone = params.alone_track_threshold
    best = max(scores)
    if best >= max(alone, params.alone_sure_threshold):
        return True
    if best < alone:
        return False
    reaching = sum(score >= alone for score in scores)
    return reaching >= params.alone_repeat_share * len(scores)


def confirm_threshold(heights: np.ndarray, params: ClassTracking) -> np.ndarray:
    """The score that confirms a track, per detection height (px): ``small_track_threshold`` up to
    ``small_track_height``, ramping linearly to ``track_threshold`` at ``large_track_height``. Never above
    ``track_threshold`` (so ``track_threshold: 0`` confirms every detection, whatever the small setting)."""
    large = params.track_threshold
    if params.small_track_threshold is None:
        return np.full(len(heights), large, np.float32)
    return ramp_by_height(heights, min(params.small_track_threshold, large), large, params.small_track_height,
                          params.large_track_height)


def _smooth(boxes: np.ndarray, weight: float) -> np.ndarray:
    """Zero-phase exponential smoothing (forward then backward) of a (n,4) box sequence."""
    if weight <= 0 or len(boxes) < 3:
        return boxes
    fwd = boxes.copy()
    for i in range(1, len(fwd)):
        fwd[i] = weight * fwd[i - 1] + (1 - weight) * boxes[i]
    out = fwd.copy()
    for i in range(len(out) - 2, -1, -1):
        out[i] = weight * out[i + 1] + (1 - weight) * fwd[i]
    return out


def dense_track_boxes(track: Track, params: ClassTracking, frame_count: int, cuts: np.ndarray | None = None,
                      frame_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames and boxes a track covers: observations, interpolated gaps, pre- and post-roll.

    Roll stops at the scene cuts around the track. Smoothing never shrinks coverage: at observed
    frames the box is the union of raw and smoothed. With ``roll_follows_motion`` the roll moves along the
    track's velocity at that end and, given ``frame_size``, where that motion takes the box to the frame's
    border within ``max_gap`` frames, lasts until it has left (at most ``max_gap`` frames): detectors lose
    objects half out of view.
    """
    obs_frames = np.asarray(track.frames, np.int64)
    raw = np.asarray(track.boxes, np.float32)
    smooth = _smooth(raw, params.smoothing)
    union = np.concatenate([np.minimum(raw[:, :2], smooth[:, :2]), np.maximum(raw[:, 2:], smooth[:, 2:])], 1)
    cuts = np.zeros(0, np.int64) if cuts is None else np.asarray(cuts, np.int64)
    shot_start = int(cuts[track.shot - 1]) if track.shot > 0 else 0
    shot_end = int(cuts[track.shot]) - 1 if track.shot < len(cuts) else frame_count - 1
    pre_roll, post_roll = params.pre_roll, params.post_roll
    moving = params.roll_follows_motion and len(obs_frames) >= 2
    steps = {end: _centre_step(obs_frames, raw, end) for end in (0, -1)} if moving else {}
    if moving and frame_size is not None:
        pre_roll = max(pre_roll, frames_to_leave(raw[0], -steps[0], frame_size, params.max_gap))
        post_roll = max(post_roll, frames_to_leave(raw[-1], steps[-1], frame_size, params.max_gap))
    first = max(shot_start, int(obs_frames[0]) - pre_roll)
    last = min(shot_end, int(obs_frames[-1]) + post_roll)
    frames = np.arange(first, last + 1, dtype=np.int64)
    boxes = np.stack([np.interp(frames, obs_frames, union[:, k]) for k in range(4)], 1).astype(np.float32)
    for end, step in steps.items():
        roll = frames < obs_frames[0] if end == 0 else frames > obs_frames[-1]
        boxes[roll] += np.outer(frames[roll] - obs_frames[end], step).astype(np.float32)
    return frames, boxes


VELOCITY_FRAMES = 6
"""A roll's velocity is measured between a track's end and its first observation this many frames or more away:
three plate looks at stride 3; on dark frames, looked at every frame, seven observations (synthetic seed
1000's plate miss, its night clip's plate leaving the view: 8.2% measured over 4 frames, 2.4% over 6)."""
MAX_SPEED = 2.0
"""A roll moves at most this many box sizes a frame along each axis (a wrong link cannot fling it away)."""


STEADY_LOOKS = 3
"""A roll follows motion only where the velocity rests on at least this many observations..."""
STEADY_OFFSET = 0.25
"""...each within this share of the box's size (per axis) of the straight path between the two it is measured
on: linked false looks (logos, a sign) jump about and must not fling a mask across the frame."""


def _centre_step(frames: np.ndarray, boxes: np.ndarray, end: int) -> np.ndarray:
    """The per-frame shift (x, y, x, y) of a track's box centre at one end (``end``: 0 or -1), measured over
    at least VELOCITY_FRAMES frames where the track lasts that long, at most MAX_SPEED box sizes a frame; zero
    where the motion is not steady (STEADY_LOOKS, STEADY_OFFSET)."""
    far = np.flatnonzero(np.abs(frames - frames[end]) >= VELOCITY_FRAMES)
    near = (far[0] if len(far) else len(frames) - 1) if end == 0 else (far[-1] if len(far) else 0)
    step = (boxes[end] - boxes[near]) / (frames[end] - frames[near])
    velocity = (step[:2] + step[2:]) / 2
    size = boxes[end, 2:] - boxes[end, :2]
    if not _steady(frames, boxes, end, near, velocity, size):
        return np.zeros(4, np.float32)
    return np.tile(np.clip(velocity, -MAX_SPEED * size, MAX_SPEED * size), 2)


def _steady(frames: np.ndarray, boxes: np.ndarray, end: int, near: int, velocity: np.ndarray,
            size: np.ndarray) -> bool:
    """Whether the observations from ``near`` to ``end`` lie along the straight path at ``velocity``."""
    lo, hi = sorted((int(near), int(end) % len(frames)))
    window = slice(lo, hi + 1)
    if hi - lo + 1 < STEADY_LOOKS:
        return False
    centres = (boxes[window, :2] + boxes[window, 2:]) / 2
    origin = (boxes[end, :2] + boxes[end, 2:]) / 2
    path = origin + np.outer(frames[window] - frames[end], velocity)
    return bool(np.all(np.abs(centres - path) <= STEADY_OFFSET * np.maximum(size, 1.0)))


EDGE_SPEED = 0.01
"""The least speed (a share of the box's size per frame, along one axis) that takes a roll on to the frame's
border: slower is jitter (a false plate box half the frame tall drifting 0.4% a frame was rolled 25 frames)."""
EDGE_SPEED_PX = 0.5
"""And never below this many pixels a frame (a small still plate at the border jitters more than 1%)."""


def frames_to_leave(box: np.ndarray, step: np.ndarray, frame_size: tuple[int, int], limit: int) -> int:
    """For a ``box`` moving ``step`` a frame: the frames until it lies wholly outside the frame, at most
    ``limit``; 0 when its leading edge does not reach the frame's border within ``limit`` frames at a speed of
    at least EDGE_SPEED of its size and EDGE_SPEED_PX."""
    width, height = frame_size
    reach, leave = [], []
    for lo, hi, v, size in ((box[0], box[2], step[0], width), (box[1], box[3], step[1], height)):
        if v == 0 or abs(v) < max(EDGE_SPEED * (hi - lo), EDGE_SPEED_PX):
            continue
        if v > 0:
            reach.append((size - hi) / v)
            leave.append((size - lo) / v)
        else:
            reach.append(lo / -v)
            leave.append(hi / -v)
    if not reach or min(reach) > limit:
        return 0
    return int(min(np.ceil(min(leave)), limit))


@dataclass
class TrackingSummary:
    """Counts only (no coordinates): what tracking produced for one video."""

    tracks: dict[str, int]
    regions: int
    frames_masked: int
    dropped_by_zone: int = 0
    """Tracks not masked because they stayed still inside a never_mask zone (zones.py)."""


def plan_masks(dets: Detections, frame_count: int, width: int, height: int, config: Config,
               cuts: np.ndarray | None = None, zones: Sequence[ZoneConfig] = (),
               rotation: int = 0) -> tuple[MaskPlan, TrackingSummary]:
    """Track every enabled class and turn the tracks into a MaskPlan with margins and shapes.

    ``cuts``: first frame indices of new scenes (tracks, gap filling and roll never cross them). ``zones``: the
    file's zones (zones.py): tracks still inside a never_mask zone are left out, always_mask zones added.
    ``rotation``: the video's display rotation (boxes are in stored pixels; people.py looks at them upright).
    """
    parts: list[tuple[np.ndarray, np.ndarray, int, int, int]] = []
    track_counts: dict[str, int] = {}
    next_track = dropped = 0
    for cls, name in enumerate(CLASS_NAMES):
        if name not in config.classes:
            continue
        params: ClassTracking = getattr(config.tracking, name)
        stride = getattr(config.detection, name).stride  # the grown-box stage reaches back one look at least
        params = params.model_copy(update={"motion_buffer_gap": max(params.motion_buffer_gap, stride)})
        margin = config.mask.face_margin if name == "face" else config.mask.plate_margin
        shape_name = config.mask.face_shape if name == "face" else config.mask.plate_shape
        shape = SHAPE_ELLIPSE if shape_name == "ellipse" else SHAPE_BOX
        people = PeopleSeen.from_detections(dets, config.detection.person.stride, rotation, (width, height)) if (
            name == "face" and config.detects_people) else None
        tracks = track_class(dets, cls, params, cuts, people)
        track_counts[name] = 0
        for track in tracks:
            frames, boxes = dense_track_boxes(track, params, frame_count, cuts, (width, height))
            if zones and dropped_by_zones(boxes, zones, width, height):
                dropped += 1
                continue
            parts.append((frames, enlarge_boxes(boxes, margin, width, height), cls, shape, next_track))
            next_track += 1
            track_counts[name] += 1
    if not parts:
        plan = MaskPlan(frame_count=frame_count)
    else:
        plan = MaskPlan(
            frame_count=frame_count,
            frame_index=np.concatenate([p[0] for p in parts]),
            xyxy=np.concatenate([p[1] for p in parts]),
            cls=np.concatenate([np.full(len(p[0]), p[2], np.int64) for p in parts]),
            shape=np.concatenate([np.full(len(p[0]), p[3], np.int64) for p in parts]),
            track_id=np.concatenate([np.full(len(p[0]), p[4], np.int64) for p in parts]),
        )
        valid = (plan.xyxy[:, 2] > plan.xyxy[:, 0]) & (plan.xyxy[:, 3] > plan.xyxy[:, 1])
        plan = MaskPlan(frame_count, plan.frame_index[valid], plan.xyxy[valid], plan.cls[valid],
                        plan.shape[valid], plan.track_id[valid])
    plan = with_always_mask(plan, zones, width, height)
    return plan, TrackingSummary(track_counts, len(plan), plan.frames_masked(), dropped)


def summary_of(plan: MaskPlan, dropped_by_zone: int = 0) -> TrackingSummary:
    """The counts of a plan made or edited elsewhere (a reviewed one): tracks per detector class, regions, frames."""
    tracks = {name: len(np.unique(plan.track_id[plan.cls == cls])) for cls, name in enumerate(CLASS_NAMES)}
    return TrackingSummary(tracks, len(plan), plan.frames_masked(), dropped_by_zone)
