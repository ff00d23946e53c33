"""Labelled folders of the evaluation data (``../shared/data``; see its README.md).

Each folder holds ``labels.json``: image path (relative to the folder) -> list of
``{"cls": "face" | "plate", "box": [x1, y1, x2, y2], "ignore": bool, ...}`` in source pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def find_eval_data() -> Path:
    """The evaluation data: $ANONRAY_EVAL_DATA, else ``../shared/data`` beside the repository, else the
    workspace's ``/work/shared/data`` (the first that exists; the first candidate when none does)."""
    candidates = [Path(p) for p in [os.environ.get("ANONRAY_EVAL_DATA")] if p]
    candidates += [Path(__file__).resolve().parents[3] / "shared" / "data", Path("/work/shared/data")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


DEFAULT_DATA = find_eval_data()
"""Where the labelled evaluation data is; ``--data`` overrides it."""


@dataclass(frozen=True)
class Dataset:
    """A labelled folder and how it may be scored."""

    name: str
    folder: str  # relative to the data root
    cls: str  # "face" | "plate"
    all_labelled: bool  # False: only some objects per image are labelled, so precision is meaningless


DATASETS = {
    d.name: d
    for d in (
        Dataset("wider_val", "faces/wider_val", "face", True),
        Dataset("ro_dashcam", "plates/ro_dashcam", "plate", True),
        Dataset("openalpr_us", "plates/openalpr_us", "plate", False),
        Dataset("openalpr_eu", "plates/openalpr_eu", "plate", False),
    )
}


@dataclass(frozen=True)
class Record:
    """One image's labels of one class: boxes (n, 4) float64 xyxy in source pixels, ignore (n,) bool."""

    image: Path
    boxes: np.ndarray
    ignore: np.ndarray
    cls: str


def load_labels(folder: Path, cls: str) -> list[Record]:
    """The records of one labelled folder, for one class, sorted by image path."""
    labels_path = folder / "labels.json"
    if not labels_path.is_file():
        raise FileNotFoundError(f"no labels.json in {folder} (see --data)")
    raw = json.loads(labels_path.read_text())
    records = []
    for rel in sorted(raw):
        objs = [o for o in raw[rel] if o["cls"] == cls]
        boxes = np.array([o["box"] for o in objs], np.float64).reshape(-1, 4)
        ignore = np.array([bool(o.get("ignore", False)) for o in objs], bool)
        records.append(Record(folder / rel, boxes, ignore, cls))
    return records


def load_dataset(name: str, data_root: Path = DEFAULT_DATA) -> list[Record]:
    ds = DATASETS[name]
    return load_labels(data_root / ds.folder, ds.cls)
