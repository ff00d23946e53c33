"""Zones per camera (issue 18): always_mask areas on every frame, never_mask areas that drop still tracks only."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import decode_frames, mask_pixels, solid_config

from anonray.config import ConfigError, ZoneConfig, validate_config
from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import write_sample_video
from anonray.track.tracker import plan_masks
from anonray.track.zones import ZONE_CLASS, is_still_inside, with_always_mask, zones_for
from anonray.types import Detections, MaskPlan


def _zone(**kw) -> ZoneConfig:
    return ZoneConfig(**{"folder": "cam1", "action": "never_mask", "box": (0.5, 0.0, 1.0, 0.5), **kw})


def test_zones_apply_to_their_folder_and_its_subfolders_and_are_checked():
    zones = [_zone(), _zone(folder="cam2/"), _zone(folder=".")]
    assert [z.folder for z in zones_for(zones, "cam1/a.mp4")] == ["cam1", "."]
    assert [z.folder for z in zones_for(zones, "cam1/night/b.mp4")] == ["cam1", "."]
    assert [z.folder for z in zones_for(zones, "cam10/a.mp4")] == ["."]
    assert [z.folder for z in zones_for(zones, "a.mp4")] == ["."]
    for bad in ({"box": [0.5, 0.0, 0.4, 0.5]}, {"box": [0.0, 0.0, 1.2, 0.5]}, {"folder": "../cam1"},
                {"action": "blur"}):
        with pytest.raises(ConfigError):
            validate_config({"zones": [{"folder": "cam1", "action": "never_mask", "box": [0, 0, 1, 1], **bad}]})
    assert validate_config({}).config_hash() == validate_config({"zones": []}).config_hash()  # no zones, same hash


def test_a_still_track_inside_a_never_mask_zone_is_dropped_a_walking_one_is_not():
    zone = _zone()
    jitter = np.array([[300, 50, 340, 100]] * 20, float) + np.random.default_rng(0).normal(0, 1.5, (20, 4))
    assert is_still_inside(jitter, zone, 400, 300)
    walking = np.array([[200 + 6 * k, 50, 240 + 6 * k, 100] for k in range(20)], float)
    walking[:, [0, 2]] += 100  # centres 320..434: inside the zone's x range only at first
    assert not is_still_inside(walking, zone, 400, 300)
    moving_inside = np.array([[205 + 6 * k, 50, 245 + 6 * k, 100] for k in range(20)], float)
    assert not is_still_inside(moving_inside, zone, 400, 300)  # stays inside, but walks across most of it
    hopping = jitter + np.tile([[30, 20, 30, 20], [-30, -10, -30, -10]], (10, 1))  # a tracker hopping on a crest
    assert is_still_inside(hopping, zone, 400, 300)

    frames = np.concatenate([np.arange(20), np.arange(20)])
    dets = Detections(frames, np.concatenate([jitter, moving_inside]).astype(np.float32),
                      np.full(40, 0.9, np.float32), np.zeros(40, np.int64))
    config = solid_config()
    plan, summary = plan_masks(dets, 20, 400, 300, config, zones=[zone])
    assert summary.dropped_by_zone == 1 and summary.tracks["face"] == 1
    kept = plan.xyxy[plan.frame_index == 10]
    assert len(kept) == 1 and kept[0][0] > 240  # the walking face, not the poster
    _, without = plan_masks(dets, 20, 400, 300, config)
    assert without.tracks["face"] == 2 and without.dropped_by_zone == 0


def test_always_mask_adds_a_zone_box_on_every_frame():
    plan = with_always_mask(MaskPlan(5), [_zone(action="always_mask"), _zone()], 400, 300)
    assert sorted(plan.frame_index.tolist()) == [0, 1, 2, 3, 4] and set(plan.cls.tolist()) == {ZONE_CLASS}
    assert plan.xyxy[0].tolist() == [200, 0, 400, 150]


def test_a_run_masks_an_always_mask_zone_on_every_frame_of_its_camera_only(ray_session, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for name in ("cam1/a.mp4", "cam2/b.mp4"):
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        write_sample_video(inputs / name, format="h264_mp4", frames=20)
    zone = {"folder": "cam1", "action": "always_mask", "box": [0.0, 0.75, 0.25, 1.0], "label": "screen"}
    config = solid_config().with_overrides(zones=[zone])
    assert run(RunRequest([str(inputs)], out, config)).ok == 2
    _, frames_a, (w, h), _ = decode_frames(out / "cam1" / "a.mp4")
    _, frames_b, _, _ = decode_frames(out / "cam2" / "b.mp4")
    inner = (slice(int(0.75 * h) + 2, h - 2), slice(2, int(0.25 * w) - 2))
    assert all(mask_pixels(f)[inner].mean() > 0.98 for f in frames_a)
    assert all(mask_pixels(f)[inner].mean() < 0.5 for f in frames_b)
    regions = pq.read_table(out / "_anonray" / "regions").to_pandas()
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas().set_index("path")
    zone_rows = regions[regions.class_name == "zone"]
    assert set(zone_rows.video_id) == {videos.loc["cam1/a.mp4", "video_id"]} and len(zone_rows) == 20
    assert videos.loc["cam1/a.mp4", "tracks_dropped_by_zone"] == 0
    assert not videos.loc["cam1/a.mp4", "qa_flags"].size  # a zone is no anomaly
