"""The corrections file (YAML or JSON): what a reviewer asks of one output folder, parsed and checked for shape.

A ``reviewer`` and a list of ``corrections``, each naming a ``file`` (``videos.path``) and an ``action``:
``remove_track`` (class, track_id, frames), ``add_region`` (box, frames, shape, label, follow), ``approve``
or ``reject`` (comment); the README's "Corrections" section has the full format. Coordinates are
stored-frame pixels (as in the regions table); frame ranges are inclusive, 0-based presentation indices.
A file that breaks any rule is refused whole (``CorrectionsError`` names the entry); the checks against
the output folder (known files, tracks, frame sizes) are in check.py. No Ray here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from anonray.types import REGION_CLASS_NAMES

ACTIONS = ("remove_track", "add_region", "approve", "reject")
PIXEL_ACTIONS = ("remove_track", "add_region")
"""Actions that change the masks, so the output is rendered again; approve and reject change no pixel."""
LABELS = tuple(name for name in REGION_CLASS_NAMES if name != "zone")
"""Labels of an added region: face, plate, document, screen, badge, tattoo, other."""
SHAPES = ("box", "ellipse")

_FIELDS = {
    "remove_track": {"file", "action", "class", "track_id", "frames", "reason", "comment"},
    "add_region": {"file", "action", "box", "frames", "shape", "label", "follow", "reason", "comment"},
    "approve": {"file", "action", "comment", "reason"},
    "reject": {"file", "action", "comment", "reason"},
}


class CorrectionsError(ValueError):
    """A corrections file that cannot be applied; the message names the entry (nothing was applied)."""


@dataclass(frozen=True)
class Correction:
    """One entry of a corrections file (or one action of the review page)."""

    file: str
    """The output's input path relative to its root, as in ``videos.path``."""
    action: str
    class_name: str | None = None
    """remove_track: the class of the track (face, plate, or an added region's label)."""
    track_id: int | None = None
    frames: tuple[int, int] | None = None
    """Inclusive range of presentation indices; None: the whole track (remove_track only)."""
    box: tuple[float, float, float, float] | None = None
    shape: str = "box"
    label: str = "other"
    follow: bool = False
    reason: str = ""
    comment: str = ""
    reviewer: str = ""
    """Who asked for it, where a set gathers several reviewers' actions (the review page); else the set's."""

    @property
    def changes_pixels(self) -> bool:
        return self.action in PIXEL_ACTIONS


@dataclass(frozen=True)
class CorrectionSet:
    reviewer: str
    corrections: tuple[Correction, ...]

    def files(self) -> list[str]:
        """The files named, in order of first mention."""
        return list(dict.fromkeys(c.file for c in self.corrections))


def _entry_error(index: int, entry: Mapping[str, Any] | Any, why: str) -> CorrectionsError:
    file = entry.get("file") if isinstance(entry, Mapping) else None
    named = f" ({file})" if isinstance(file, str) else ""
    return CorrectionsError(f"corrections entry {index + 1}{named}: {why}")


def _text(entry: Mapping[str, Any], key: str, default: str = "") -> str:
    value = entry.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text")
    return value


def _frames(entry: Mapping[str, Any]) -> tuple[int, int] | None:
    value = entry.get("frames")
    if value is None:
        return None
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError("frames must be two whole numbers [first, last]")
    first, last = int(value[0]), int(value[1])
    if first < 0 or last < first:
        raise ValueError(f"frames [{first}, {last}] is not a range of 0-based frame indices (first <= last)")
    return first, last


def _box(entry: Mapping[str, Any]) -> tuple[float, float, float, float]:
    value = entry.get("box")
    if (not isinstance(value, list | tuple) or len(value) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise ValueError("box must be four numbers [x0, y0, x1, y1] in stored-frame pixels")
    x0, y0, x1, y1 = (float(v) for v in value)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("box must have x1 > x0 and y1 > y0")
    return x0, y0, x1, y1


def _choice(entry: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _text(entry, key, default)
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)} (not {value!r})")
    return value


def _correction(entry: Mapping[str, Any]) -> Correction:
    action = entry.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)} (not {action!r})")
    unknown = sorted(set(entry) - _FIELDS[action])
    if unknown:
        raise ValueError(f"{action} does not take {', '.join(unknown)}")
    file = _text(entry, "file")
    if not file or file.startswith("/") or ".." in file.split("/"):
        raise ValueError("file must be the input's path relative to its root, as in videos.path")
    common = {"file": file, "action": action, "reason": _text(entry, "reason"), "comment": _text(entry, "comment")}
    if action == "remove_track":
        track = entry.get("track_id")
        if not isinstance(track, int) or isinstance(track, bool):
            raise ValueError("remove_track needs a whole-number track_id")
        # zones come from the config (zones:), not from a track: a removal of one would not survive a rerun
        return Correction(**common, class_name=_choice(entry, "class", LABELS, ""), track_id=track,
                          frames=_frames(entry))
    if action == "add_region":
        if entry.get("frames") is None:
            raise ValueError("add_region needs frames [first, last]")
        follow = entry.get("follow", False)
        if not isinstance(follow, bool):
            raise ValueError("follow must be true or false")
        return Correction(**common, box=_box(entry), frames=_frames(entry),
                          shape=_choice(entry, "shape", SHAPES, "box"), label=_choice(entry, "label", LABELS, "other"),
                          follow=follow)
    return Correction(**common)


def parse_corrections(text: str, name: str = "corrections file") -> CorrectionSet:
    """Parse and check a corrections file's text (YAML, of which JSON is a subset); raise CorrectionsError."""
    try:
        document = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CorrectionsError(f"{name}: not valid YAML or JSON{where}") from None
    if not isinstance(document, Mapping):
        raise CorrectionsError(f"{name}: expected a mapping with 'reviewer' and 'corrections'")
    unknown = sorted(set(document) - {"reviewer", "corrections"})
    if unknown:
        raise CorrectionsError(f"{name}: unknown top-level key(s) {', '.join(map(str, unknown))}")
    reviewer = document.get("reviewer")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise CorrectionsError(f"{name}: 'reviewer' must name who reviewed")
    entries = document.get("corrections")
    if not isinstance(entries, list) or not entries:
        raise CorrectionsError(f"{name}: 'corrections' must be a non-empty list")
    parsed = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise _entry_error(index, entry, "must be a mapping")
        try:
            parsed.append(_correction(entry))
        except ValueError as err:
            raise _entry_error(index, entry, str(err)) from None
    return CorrectionSet(reviewer.strip(), tuple(parsed))


def correction_json(correction: Correction) -> str:
    """The action's own fields as JSON (the corrections table's ``fields`` column)."""
    fields: dict[str, Any] = {}
    if correction.action == "remove_track":
        fields = {"class": correction.class_name, "track_id": correction.track_id, "frames": correction.frames}
    elif correction.action == "add_region":
        fields = {"box": correction.box, "frames": correction.frames, "shape": correction.shape,
                  "label": correction.label, "follow": correction.follow}
    return json.dumps(fields, sort_keys=True)
