"""Corrections (issue 18): the file format, the plan edits, and `anonray apply` on a real run's output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import decode_frames, mask_pixels, solid_config

from anonray.corrections.apply import apply_corrections
from anonray.corrections.plan_edit import add_region, edit_plan, remove_track
from anonray.corrections.spec import Correction, CorrectionsError, parse_corrections
from anonray.runtime.driver import RunRequest, run
from anonray.store.output_lock import OutputLocked, output_lock
from anonray.testing.samples import write_sample_video
from anonray.types import REGION_CLASS_NAMES, SHAPE_BOX, SHAPE_ELLIPSE, MaskPlan

GOOD = """
reviewer: dpo-office
corrections:
  - {file: cam1/a.mp4, action: remove_track, class: plate, track_id: 3, frames: [0, 120], reason: poster}
  - {file: cam1/a.mp4, action: add_region, box: [1, 2, 30, 40], frames: [10, 40], shape: ellipse, label: document}
  - {file: cam1/b.mp4, action: approve, comment: checked}
  - {file: cam1/b.mp4, action: reject, comment: masks late on the left}
"""


def test_a_corrections_file_parses_with_its_defaults():
    parsed = parse_corrections(GOOD)
    assert parsed.reviewer == "dpo-office" and parsed.files() == ["cam1/a.mp4", "cam1/b.mp4"]
    remove, add, approve, reject = parsed.corrections
    assert (remove.class_name, remove.track_id, remove.frames, remove.reason) == ("plate", 3, (0, 120), "poster")
    assert (add.box, add.frames, add.shape, add.label, add.follow) == ((1, 2, 30, 40), (10, 40), "ellipse",
                                                                      "document", False)
    assert approve.comment == "checked" and not approve.changes_pixels and remove.changes_pixels
    whole = parse_corrections('{"reviewer": "r", "corrections": [{"file": "a.mp4", "action": "remove_track", '
                              '"class": "face", "track_id": 0}]}')  # JSON, and a whole-track removal
    assert whole.corrections[0].frames is None
    assert parse_corrections("reviewer: r\ncorrections: [{file: a.mp4, action: add_region, box: [0, 0, 5, 5], "
                             "frames: [0, 0]}]").corrections[0].label == "other"


@pytest.mark.parametrize(("text", "message"), [
    ("reviewer: r\ncorrections: [{file: a.mp4, action: erase}]", "entry 1 (a.mp4): action must be one of"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: approve}, {file: b.mp4, action: add_region, "
     "box: [5, 5, 1, 1], frames: [0, 1]}]", "entry 2 (b.mp4): box must have x1 > x0"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: add_region, box: [0, 0, 5, 5]}]", "needs frames"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: add_region, box: [0, 0, 5, 5], frames: null}]", "needs frames"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: remove_track, class: zone, track_id: 1000000}]",
     "class must be one of"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: remove_track, class: face, track_id: 1, frames: [9, 2]}]",
     "is not a range"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: remove_track, class: car, track_id: 1}]", "class must be"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: approve, box: [0, 0, 1, 1]}]", "approve does not take box"),
    ("reviewer: r\ncorrections: [{file: ../a.mp4, action: approve}]", "relative to its root"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: add_region, box: [0, 0, 5, 5], frames: [0, 1], "
     "shape: star}]", "shape must be one of"),
    ("corrections: [{file: a.mp4, action: approve}]", "'reviewer' must name"),
    ("reviewer: r\ncorrections: []", "non-empty list"),
    ("reviewer: r\ncorrections: [{file: a.mp4, action: approve}\n", "not valid YAML or JSON"),
])
def test_a_malformed_corrections_file_is_refused_naming_the_entry(text, message):
    with pytest.raises(CorrectionsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_corrections(text)


def _plan() -> MaskPlan:
    frames = np.repeat(np.arange(5), 2)
    return MaskPlan(5, frames, np.tile(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), (5, 1)),
                    np.tile([0, 1], 5), np.full(10, SHAPE_ELLIPSE), np.tile([0, 1], 5))


def test_plan_edits_remove_a_track_on_its_range_and_add_regions_under_new_ids():
    plan = remove_track(_plan(), Correction("a", "remove_track", class_name="plate", track_id=1, frames=(1, 3)))
    assert sorted(plan.frame_index[plan.track_id == 1].tolist()) == [0, 4]
    assert len(plan.frame_index[plan.track_id == 0]) == 5  # the face track keeps every frame
    added = add_region(plan, Correction("a", "add_region", box=(-5, 2, 50, 8), frames=(2, 3), label="screen"),
                       width=40, height=30)
    new = added.track_id < 0
    assert added.frame_index[new].tolist() == [2, 3] and set(added.track_id[new].tolist()) == {-1}
    assert added.xyxy[new].tolist() == [[0, 2, 40, 8]] * 2  # clipped to the frame
    assert set(added.shape[new].tolist()) == {SHAPE_BOX} and REGION_CLASS_NAMES[int(added.cls[new][0])] == "screen"
    twice = edit_plan(added, [Correction("a", "add_region", box=(0, 0, 1, 1), frames=(0, 0)),
                              Correction("a", "approve")], 40, 30)
    assert set(twice.track_id[twice.track_id < 0].tolist()) == {-1, -2}


@pytest.fixture(scope="module")
def corrected_run(ray_session, tmp_path_factory):
    """One real run over two sample clips, its output kept as a template each test copies."""
    root = tmp_path_factory.mktemp("corrections")
    inputs, out = root / "in", root / "out"
    (inputs / "cam1").mkdir(parents=True)
    truth = {name: write_sample_video(inputs / "cam1" / name, format="h264_mp4", frames=30, seed=i)
             for i, name in enumerate(("a.mp4", "b.mp4"))}
    summary = run(RunRequest([str(inputs)], out, solid_config()))
    assert summary.ok == 2
    return inputs, out, truth


def _copy(template, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(template, out)
    return out


def _regions(out, run_id):
    table = pq.read_table(out / "_anonray" / "regions").to_pandas()
    return table[table.run_id == run_id]


def _latest(out, path):
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas().sort_values("finished_utc")
    return videos[videos.path == path].iloc[-1]


def test_apply_redraws_only_what_the_corrections_change(corrected_run, tmp_path):
    inputs, template, truth = corrected_run
    out = _copy(template, tmp_path)
    first_run = _latest(out, "cam1/a.mp4").run_id
    regions = _regions(out, first_run)
    plate = regions[(regions.video_id == _latest(out, "cam1/a.mp4").video_id) & (regions.class_name == "plate")]
    track = int(plate.track_id.iloc[0])
    _, before, (width, height), _ = decode_frames(out / "cam1" / "a.mp4")
    text = ("reviewer: dpo\ncorrections:\n"
            f"  - {{file: cam1/a.mp4, action: remove_track, class: plate, track_id: {track}, frames: [0, 14]}}\n"
            "  - {file: cam1/a.mp4, action: add_region, box: [0, 0, 40, 30], frames: [5, 9], label: screen}\n"
            "  - {file: cam1/b.mp4, action: approve, comment: checked}\n")
    summary = apply_corrections(out, parse_corrections(text))
    assert (summary.corrected, summary.reviewed, summary.failed) == (1, 1, 0)

    _, after, size, _ = decode_frames(out / "cam1" / "a.mp4")
    assert size == (width, height) and len(after) == len(before) == 30
    for k in range(30):
        corner = mask_pixels(after[k])[:30, :40]
        assert corner.mean() > 0.97 if 5 <= k <= 9 else corner.mean() < 0.5, k
        x0, y0, x1, y1 = (int(v) for v in truth["a.mp4"].plate_boxes[k])
        inner = (slice(y0 + 2, y1 - 2), slice(x0 + 2, x1 - 2))
        plate_masked = mask_pixels(after[k])[inner].mean() > 0.9
        assert plate_masked == (k >= 15), k  # the plate is unmasked on frames 0-14 only
    faces = mask_pixels(before[20]) & ~mask_pixels(after[20])  # elsewhere the masks stay where they were
    assert faces.sum() < 50

    row = _latest(out, "cam1/a.mp4")
    assert row.run_id == summary.run_id and row.status == "ok" and len(row.corrections) == 2
    assert _latest(out, "cam1/b.mp4").review_status == "approved"
    corrections = pq.read_table(out / "_anonray" / "corrections").to_pandas()
    assert corrections.action.tolist() == ["remove_track", "add_region", "approve"]
    assert set(corrections.reviewer) == {"dpo"} and set(corrections.corrects_run_id) == {first_run}
    assert os.stat(out / "_anonray" / "corrections").st_mode & 0o777 == 0o700
    added = _regions(out, summary.run_id)
    assert set(added[added.track_id < 0].class_name) == {"screen"}


def test_verify_rerun_and_a_second_apply_after_corrections(corrected_run, tmp_path):
    inputs, template, _ = corrected_run
    out = _copy(template, tmp_path)
    first_run = _latest(out, "cam1/a.mp4").run_id
    text = ("reviewer: dpo\ncorrections:\n"
            "  - {file: cam1/a.mp4, action: add_region, box: [0, 0, 20, 20], frames: [0, 29], shape: ellipse}\n"
            "  - {file: cam1/b.mp4, action: reject, comment: late}\n")
    applied = apply_corrections(out, parse_corrections(text))
    cli = [sys.executable, "-m", "anonray", "verify"]
    latest = subprocess.run([*cli, str(out)], capture_output=True, text=True)
    assert latest.returncode == 0 and "2 output(s) checked, 2 match" in latest.stdout
    earlier = subprocess.run([*cli, str(out), "--run", first_run], capture_output=True, text=True)
    assert earlier.returncode == 0, earlier.stdout
    assert "SUPERSEDED" in earlier.stdout and "1 superseded by a later run or apply" in earlier.stdout

    corrected = (out / "cam1" / "a.mp4").read_bytes()
    again = run(RunRequest([str(inputs)], out, solid_config()))
    assert again.skipped == 2 and (out / "cam1" / "a.mp4").read_bytes() == corrected  # the correction stands
    assert _latest(out, "cam1/b.mp4").review_status == "rejected"  # a skipped row keeps the status

    # a later apply corrects the corrected output: the drawn region (track -1) is removed again
    undo = apply_corrections(out, parse_corrections(
        "reviewer: dpo\ncorrections: [{file: cam1/a.mp4, action: remove_track, class: other, track_id: -1}]"))
    assert undo.corrected == 1 and _regions(out, undo.run_id).track_id.min() >= 0
    assert _latest(out, "cam1/a.mp4").corrections.tolist() == [f"{undo.run_id}-0001"]
    assert applied.run_id < undo.run_id


@pytest.mark.parametrize(("entry", "message"), [
    ("{file: cam1/zzz.mp4, action: approve}", "no ok output of this file"),
    ("{file: cam1/a.mp4, action: remove_track, class: face, track_id: 99}", "has no face track 99"),
    ("{file: cam1/a.mp4, action: add_region, box: [0, 0, 5000, 10], frames: [0, 1]}", "lies outside"),
    ("{file: cam1/a.mp4, action: add_region, box: [0, 0, 5, 10], frames: [0, 30]}", "run past the end"),
])
def test_a_bad_entry_refuses_the_whole_file_and_nothing_changes(corrected_run, tmp_path, entry, message):
    _, template, _ = corrected_run
    out = _copy(template, tmp_path)
    before = {p: p.read_bytes() for p in (out / "cam1").iterdir()}
    text = f"reviewer: r\ncorrections:\n  - {{file: cam1/b.mp4, action: approve}}\n  - {entry}\n"
    with pytest.raises(CorrectionsError, match=f"entry 2 .*{message}"):
        apply_corrections(out, parse_corrections(text))
    assert {p: p.read_bytes() for p in (out / "cam1").iterdir()} == before
    assert not (out / "_anonray" / "corrections").exists()
    assert len(pq.read_table(out / "_anonray" / "runs")) == 1


def test_a_changed_source_or_a_held_lock_refuses_apply(corrected_run, tmp_path):
    inputs, template, _ = corrected_run
    out = _copy(template, tmp_path)
    text = "reviewer: r\ncorrections: [{file: cam1/a.mp4, action: add_region, box: [0, 0, 5, 5], frames: [0, 0]}]"
    moved = tmp_path / "moved"
    shutil.copytree(inputs, moved)
    with (moved / "cam1" / "a.mp4").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CorrectionsError, match="cam1/a.mp4: its source has changed"):
        apply_corrections(out, parse_corrections(text), [moved])
    with pytest.raises(CorrectionsError, match="cam1/a.mp4: its source is missing under the --input"):
        apply_corrections(out, parse_corrections(text), [tmp_path / "nowhere"])

    corrections = tmp_path / "c.yaml"
    corrections.write_text(text)
    with output_lock(out / "_anonray", "run"):
        with pytest.raises(OutputLocked, match="being written by anonray run"):
            apply_corrections(out, parse_corrections(text))
        held = subprocess.run([sys.executable, "-m", "anonray", "apply", str(out), "--corrections", str(corrections)],
                              capture_output=True, text=True)
    assert held.returncode == 2 and "being written by anonray run" in held.stderr
    done = subprocess.run([sys.executable, "-m", "anonray", "apply", str(out), "--corrections", str(corrections),
                           "--input", str(inputs)], capture_output=True, text=True)
    assert done.returncode == 0 and "1 corrected" in done.stdout


def test_a_review_status_row_keeps_pointing_at_the_output_and_its_regions(corrected_run, tmp_path):
    """After an approve (no pixels), the next pixel correction still finds the regions of the run that wrote it."""
    _, template, _ = corrected_run
    out = _copy(template, tmp_path)
    first_run = _latest(out, "cam1/b.mp4").run_id
    approve = "reviewer: r\ncorrections: [{file: cam1/b.mp4, action: approve}]"
    approved = apply_corrections(out, parse_corrections(approve))
    row = _latest(out, "cam1/b.mp4")
    assert (row.run_id, row.output_run_id, row.review_status) == (approved.run_id, first_run, "approved")
    regions = _regions(out, first_run)
    region = regions[regions.video_id == row.video_id].iloc[0]
    text = ("reviewer: r\ncorrections: [{file: cam1/b.mp4, action: remove_track, "
            f"class: {region.class_name}, track_id: {int(region.track_id)}}}]")
    fixed = apply_corrections(out, parse_corrections(text))
    assert fixed.corrected == 1
    after = _latest(out, "cam1/b.mp4")
    assert after.output_run_id == fixed.run_id and after.review_status == "approved"  # the approval stands


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_followed_region_moves_with_what_it_covers(corrected_run, tmp_path):
    """add_region with follow: true, drawn on the first frame around the moving plate, stays on it."""
    _, template, truth = corrected_run
    out = _copy(template, tmp_path)
    plate = truth["a.mp4"].plate_boxes
    assert abs(plate[29][0] - plate[0][0]) >= 10  # the plate moves
    box = [float(v) for v in plate[0]]
    text = ("reviewer: r\ncorrections:\n"
            f"  - {{file: cam1/a.mp4, action: add_region, box: {box}, frames: [0, 29], follow: true, label: other}}\n")
    summary = apply_corrections(out, parse_corrections(text))
    assert summary.corrected == 1
    added = _regions(out, summary.run_id).query("track_id < 0").sort_values("frame_index")
    assert added.frame_index.tolist() == list(range(30))
    last = added.iloc[-1][["x0", "y0", "x1", "y1"]].astype(float).tolist()
    assert _iou(last, plate[29]) > 0.8 and _iou(last, plate[29]) > _iou(box, plate[29]), _iou(last, plate[29])
    fields = pq.read_table(out / "_anonray" / "corrections").to_pandas().fields_json.iloc[0]
    assert '"follow": true' in fields
    again = _copy(template, tmp_path / "again")  # deterministic: the same region lands in the same place
    second = apply_corrections(again, parse_corrections(text))
    boxes = _regions(again, second.run_id).query("track_id < 0").sort_values("frame_index")
    corners = ["x0", "y0", "x1", "y1"]
    np.testing.assert_array_equal(boxes[corners].to_numpy(), added[corners].to_numpy())


def _assert_corrected(out, truth, drawn):
    """a.mp4's plate unmasked on frames 0-14 only; each drawn (rows, cols, frames) region masked on its frames only."""
    _, after, _, _ = decode_frames(out / "cam1" / "a.mp4")
    for k in range(30):
        for rows, cols, frames in drawn:
            assert (mask_pixels(after[k])[rows, cols].mean() > 0.97) == (k in frames), k
        x0, y0, x1, y1 = (int(v) for v in truth["a.mp4"].plate_boxes[k])
        assert (mask_pixels(after[k])[y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean() > 0.9) == (k >= 15), k


def test_a_forced_rerun_carries_the_corrections_to_the_new_tracks(corrected_run, tmp_path):
    inputs, template, truth = corrected_run
    out = _copy(template, tmp_path)
    first = _latest(out, "cam1/a.mp4")
    regions = _regions(out, first.run_id)
    track = int(regions[(regions.video_id == first.video_id) & (regions.class_name == "plate")].track_id.iloc[0])
    text = ("reviewer: dpo\ncorrections:\n"
            f"  - {{file: cam1/a.mp4, action: remove_track, class: plate, track_id: {track}, frames: [0, 14]}}\n"
            "  - {file: cam1/a.mp4, action: add_region, box: [0, 0, 40, 30], frames: [5, 9], label: screen}\n")
    applied = apply_corrections(out, parse_corrections(text))
    screen = (slice(0, 30), slice(0, 40), range(5, 10))

    forced = run(RunRequest([str(inputs)], out, solid_config(), force=True))
    assert forced.ok == 2
    row = _latest(out, "cam1/a.mp4")
    assert row.run_id == forced.run_id and list(row.qa_flags) == []
    assert row.corrections.tolist() == [f"{applied.run_id}-0001", f"{applied.run_id}-0002"]
    _assert_corrected(out, truth, [screen])
    assert _latest(out, "cam1/b.mp4").corrections is None  # b had none

    # approved, then forced again: the corrections still come along (the approval row points at the output)
    approve = "reviewer: dpo\ncorrections: [{file: cam1/a.mp4, action: approve}]"
    approved = apply_corrections(out, parse_corrections(approve))
    assert run(RunRequest([str(inputs)], out, solid_config(), force=True)).ok == 2
    _assert_corrected(out, truth, [screen])

    # corrected again on the rerun's output, then forced: both applies' corrections come along
    second = apply_corrections(out, parse_corrections(
        "reviewer: dpo\ncorrections: [{file: cam1/a.mp4, action: add_region, box: [340, 0, 384, 30], "
        "frames: [20, 24], label: badge}]"))
    badge = (slice(0, 30), slice(342, 384), range(20, 25))
    assert run(RunRequest([str(inputs)], out, solid_config(), force=True)).ok == 2
    _assert_corrected(out, truth, [screen, badge])
    row = _latest(out, "cam1/a.mp4")
    assert {c.rsplit("-", 1)[0] for c in row.corrections} == {applied.run_id, approved.run_id, second.run_id}

    # the regions the corrections are read from are gone: the file is masked as detected, and flagged
    for part in (out / "_anonray" / "regions").glob(f"part-{first.run_id}-*"):
        part.unlink()
    again = run(RunRequest([str(inputs)], out, solid_config(), force=True))
    assert list(_latest(out, "cam1/a.mp4").qa_flags) == ["corrections_unmapped"] and again.ok == 2


def test_apply_and_review_refuse_an_object_store_output(tmp_path):
    corrections = tmp_path / "c.yaml"
    corrections.write_text("reviewer: r\ncorrections: [{file: a.mp4, action: approve}]")
    for command in (["apply", "s3://bucket/out", "--corrections", str(corrections)], ["review", "gs://bucket/out"]):
        done = subprocess.run([sys.executable, "-m", "anonray", *command], capture_output=True, text=True)
        assert done.returncode == 2 and "not an object-store URI" in done.stderr


def test_the_apply_command_names_the_bad_entry_of_a_malformed_file(corrected_run, tmp_path):
    _, template, _ = corrected_run
    out = _copy(template, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("reviewer: r\ncorrections:\n  - {file: cam1/a.mp4, action: approve}\n  - {file: cam1/a.mp4, "
                   "action: add_region, box: [0, 0, 10, 10]}\n")
    done = subprocess.run([sys.executable, "-m", "anonray", "apply", str(out), "--corrections", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "corrections entry 2 (cam1/a.mp4): add_region needs frames" in done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("reviewer: r\ncorrections: [{file: a.mp4\n")
    done = subprocess.run([sys.executable, "-m", "anonray", "apply", str(out), "--corrections", str(broken)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not valid YAML or JSON" in done.stderr
    assert not (out / "_anonray" / "corrections").exists()


def test_renders_record_frame_timestamps_that_apply_reads_instead_of_decoding(corrected_run, tmp_path):
    from anonray.corrections.source_video import undetected_video
    from anonray.records.frame_times import read_frame_pts

    inputs, template, _ = corrected_run
    out = _copy(template, tmp_path)
    row = _latest(out, "cam1/a.mp4")
    recorded = read_frame_pts(out / "_anonray", row.run_id, row.video_id)
    decoded = undetected_video(inputs / "cam1" / "a.mp4", "cam1/a.mp4")
    assert recorded is not None and recorded.tolist() == decoded.frame_pts.tolist()
    given = undetected_video(inputs / "cam1" / "a.mp4", "cam1/a.mp4", frame_pts=recorded)
    assert given.frame_pts.tolist() == recorded.tolist()
    short = undetected_video(inputs / "cam1" / "a.mp4", "cam1/a.mp4", frame_pts=recorded[:-1])
    assert short.frame_pts.tolist() == recorded.tolist()  # does not fit: decoded instead
    assert os.stat(out / "_anonray" / "frame_pts").st_mode & 0o777 == 0o700
    applied = apply_corrections(out, parse_corrections(
        "reviewer: r\ncorrections: [{file: cam1/a.mp4, action: add_region, box: [0, 0, 9, 9], frames: [0, 0]}]"))
    assert read_frame_pts(out / "_anonray", applied.run_id, row.video_id).tolist() == recorded.tolist()
