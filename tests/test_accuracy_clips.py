"""The video harness's clip builder: a labelled still that shows nothing gives ignore labels, not misses."""

from __future__ import annotations

import json

import cv2
import numpy as np

from benchmarks.accuracy.clips import ClipSpec, Still, build_clip, is_blank


def _still(path, image, cls, box) -> Still:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return Still(path, cls, np.array([box], np.float64), np.array([False]))


def test_is_blank():
    assert is_blank(np.zeros((8, 8, 3), np.uint8))
    assert is_blank(np.full((8, 8, 3), 130, np.uint8) + np.eye(8, dtype=np.uint8)[:, :, None] * 2)
    textured = np.zeros((8, 8, 3), np.uint8)
    textured[2:4, 2:4] = 40
    assert not is_blank(textured)


def test_labels_of_a_blank_still_are_ignored(tmp_path):
    rng = np.random.default_rng(0)
    face = _still(tmp_path / "data" / "faces" / "a" / "face.png",
                  rng.integers(0, 255, (96, 128, 3), np.uint8), "face", [40, 30, 80, 70])
    black = _still(tmp_path / "data" / "plates" / "b" / "black.png", np.zeros((96, 128, 3), np.uint8), "plate",
                   [20, 40, 60, 55])
    spec = ClipSpec("tiny", "mp4", "libx264", (128, 96), options={"preset": "ultrafast"}, faces=1, plates=1,
                    seconds_per_still=0.2)
    build_clip(spec, [face], [black], tmp_path / "out", seed=0)
    meta = json.loads((tmp_path / "out" / "truth" / "tiny.json").read_text())
    assert meta["blank_stills"] == ["plates/b/black.png"]
    labels = [label for frame in meta["frames"] for label in frame]
    assert len(meta["frames"]) == 10
    plates = [label for label in labels if label["cls"] == "plate"]
    faces = [label for label in labels if label["cls"] == "face"]
    assert plates and all(label["ignore"] for label in plates)
    assert faces and not any(label["ignore"] for label in faces)
