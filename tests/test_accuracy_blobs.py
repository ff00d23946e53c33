"""benchmarks/accuracy/blobs.py and footage.py: count-based mask measures and the real-footage labels."""

import json

import numpy as np
import pytest

from benchmarks.accuracy.blobs import BlobCounts, count_blobs, grow_box, score_labelled_frame
from benchmarks.accuracy.footage import SPLIT, LabelledClip, labelled_frame_indices, load_labels, save_labels

FACE = {"cls": "face", "box": [20, 20, 40, 44]}


def _masked(*rects, shape=(100, 120)) -> np.ndarray:
    out = np.zeros(shape, bool)
    for x0, y0, x1, y1 in rects:
        out[y0:y1, x0:x1] = True
    return out


def test_a_mask_on_the_face_is_one_hit_and_covers_it() -> None:
    counts = BlobCounts()
    score_labelled_frame(_masked((18, 18, 42, 46)), [FACE], counts)
    assert (counts.blobs, counts.hits, counts.false_masks) == (1, 1, 0)
    assert counts.precision == 1.0 and counts.fragments == 1.0
    assert counts.faces["16-32"] == [1, 1] and counts.face_recall == 1.0


def test_blobs_away_from_labels_are_false_masks_and_tiny_specks_are_not_blobs() -> None:
    counts = BlobCounts()
    masked = _masked((18, 18, 42, 46), (90, 70, 100, 80), (5, 90, 8, 92))  # face, false mask, 6 px speck
    masked[0, 0] = True  # a 1 px speck: below MIN_BLOB_PX
    score_labelled_frame(masked, [FACE], counts)
    assert (counts.blobs, counts.hits, counts.false_masks) == (3, 1, 2)
    assert counts.false_per_frame == 2.0
    assert count_blobs(masked) == 3


def test_diagonal_neighbours_are_one_blob() -> None:
    masked = _masked((10, 10, 14, 14), (14, 14, 18, 18))
    assert count_blobs(masked) == 1


def test_a_blob_is_a_hit_inside_the_grown_box_only_when_half_of_it_is_inside() -> None:
    x0, y0, x1, y1 = grow_box(FACE["box"], 1.5, 120, 100)
    assert (x0, y0, x1, y1) == (15, 14, 45, 50)
    half_in = BlobCounts()
    score_labelled_frame(_masked((x1 - 5, 30, x1 + 5, 34)), [FACE], half_in)  # 5 of 10 columns inside
    assert half_in.hits == 1
    mostly_out = BlobCounts()
    score_labelled_frame(_masked((x1 - 4, 30, x1 + 6, 34)), [FACE], mostly_out)
    assert mostly_out.hits == 0


def test_a_head_is_never_a_miss_but_a_mask_on_it_is_a_hit() -> None:
    head = {"cls": "head", "box": [60, 20, 80, 44]}
    unmasked = BlobCounts()
    score_labelled_frame(_masked(), [head], unmasked)
    assert unmasked.face_recall != unmasked.face_recall  # nan: no face to cover
    masked = BlobCounts()
    score_labelled_frame(_masked((60, 20, 80, 44)), [head], masked)
    assert (masked.hits, masked.false_masks) == (1, 0)


def test_fragments_count_the_blobs_of_one_object() -> None:
    counts = BlobCounts()
    score_labelled_frame(_masked((20, 20, 28, 30), (32, 20, 40, 30), (20, 36, 40, 44)), [FACE], counts)
    assert (counts.blobs, counts.hits, counts.masked_objects) == (3, 3, 1)
    assert counts.fragments == 3.0
    assert counts.faces["16-32"] == [1, 1]  # 3 fragments together cover 0.67 of the face


def test_a_face_under_60_percent_covered_is_missed_and_plates_split_at_12_px() -> None:
    counts = BlobCounts()
    plates = [{"cls": "plate", "box": [60, 60, 90, 72]}, {"cls": "plate", "box": [60, 80, 80, 88]}]
    score_labelled_frame(_masked((20, 20, 40, 32), (60, 60, 90, 72)), [FACE, *plates], counts)
    assert counts.faces["16-32"] == [1, 0]  # half covered
    assert counts.plates == [1, 1] and counts.plates_small == [1, 0]
    pooled = BlobCounts()
    pooled.add(counts)
    pooled.add(counts)
    assert pooled.plates == [2, 2] and pooled.frames == 2


def test_pixels_that_cannot_show_the_mask_do_not_count_against_coverage() -> None:
    counts = BlobCounts()
    eligible = np.ones((100, 120), bool)
    eligible[20:32, 20:40] = False  # already the mask colour in the source
    score_labelled_frame(_masked((20, 32, 40, 44)), [FACE], counts, eligible=eligible)
    assert counts.faces["16-32"] == [1, 1]


def test_labelled_frames_spread_over_the_clip() -> None:
    assert labelled_frame_indices("x.mp4", 105)[0] == 0
    assert labelled_frame_indices("x.mp4", 105)[-1] == 104
    assert len(labelled_frame_indices("x.mp4", 105)) == 10
    assert labelled_frame_indices("x.mp4", 5) == [0, 1, 2, 3, 4]


def test_labels_round_trip_and_reject_unknown_classes(tmp_path) -> None:
    clip = LabelledClip("a.mp4", "tuning", 64, 48, 10, {0: [{"cls": "face", "box": [1, 2, 3, 4]}], 9: []})
    path = tmp_path / "labels.json"
    save_labels({"a.mp4": clip}, path)
    back = load_labels(path)["a.mp4"]
    assert back.frames == clip.frames and back.split == "tuning"
    raw = json.loads(path.read_text())
    raw["clips"]["a.mp4"]["labelled"]["0"][0]["cls"] = "hand"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="unknown class"):
        load_labels(path)


def test_the_committed_labels_cover_every_real_clip_with_both_halves() -> None:
    clips = load_labels()
    assert set(clips) == set(SPLIT)
    for name, clip in clips.items():
        assert clip.split == SPLIT[name]
        assert len(clip.frames) >= 8, name
        for objects in clip.frames.values():
            for o in objects:
                x0, y0, x1, y1 = o["box"]
                assert 0 <= x0 < x1 <= clip.width and 0 <= y0 < y1 <= clip.height, name
    faces = {s: sum(o["cls"] == "face" for c in clips.values() if c.split == s for f in c.frames.values()
                    for o in f) for s in ("tuning", "report")}
    plates = {s: sum(o["cls"] == "plate" for c in clips.values() if c.split == s for f in c.frames.values()
                     for o in f) for s in ("tuning", "report")}
    assert min(faces.values()) > 0 and min(plates.values()) > 0
