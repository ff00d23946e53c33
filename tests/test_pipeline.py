"""End to end through Ray: every sample format, a broken file and an ignored file, masked in solid magenta.

Runs the real pipeline on a local Ray instance with a logical GPU, so the fractional-GPU detection
actors are scheduled (they fall back to the CPU inside). Everything is judged from decoded output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_audio, decode_frames, mask_pixels, solid_config

from anonray.ingest.probe import probe
from anonray.render.codec.transcoder import transcode
from anonray.render.outputs import output_relative_path
from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import SampleTruth


@pytest.fixture(scope="module")
def e2e(ray_session, sample_clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    inputs = root / "in"
    for name, (path, _) in sample_clips.items():
        target = inputs / ("nested" if name.endswith("ts") else "") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (inputs / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (inputs / "notes.txt").write_text("not a video")
    before = {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()}
    out = root / "out"
    summary = run(RunRequest([str(inputs)], out, solid_config()))
    return inputs, out, summary, before


def _output_and_baseline(inputs: Path, out: Path, path: Path, scratch: Path) -> tuple[Path, Path]:
    """The anonymized output of ``path`` and a plain transcode of it at the same encoder settings."""
    rel = path.relative_to(inputs).as_posix()
    info, _ = probe(path, rel)
    output = out / output_relative_path(rel, info, "keep")
    baseline = scratch / ("baseline" + output.suffix)
    transcode(path, baseline, info, solid_config(), None)
    return output, baseline


def test_statuses_exit_code_and_tables(e2e, sample_clips):
    inputs, out, summary, _ = e2e
    assert summary.ok == len(sample_clips) and summary.failed == 1 and summary.ignored == 1
    assert summary.exit_code == 1
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    assert len(videos) == len(sample_clips) + 1
    broken = videos[videos.path == "broken.mp4"].iloc[0]
    assert broken.status == "failed" and broken.error_class == "not_a_video" and broken.error_message
    ok = videos[videos.status == "ok"]
    assert (ok.frames_in == ok.frames_out).all()
    assert (ok.detections_face > 0).all() and (ok.frames_masked > 0).all()
    assert ok.model_ids.str.contains("centerface@").all() and ok.config_hash.nunique() == 1
    segments = pq.read_table(out / "_anonray" / "segments").to_pandas()
    per_video = segments.groupby("video_id").frames_decoded.sum()
    assert (per_video.loc[ok.video_id].values == ok.frames_in.values).all()
    runs = pq.read_table(out / "_anonray" / "runs").to_pandas()
    assert len(runs) == 1 and runs.iloc[0].videos_ok == len(sample_clips) and runs.iloc[0].files_ignored == 1
    # beside the outputs only _anonray/, and no temporary file left behind
    assert not list((out / "_anonray" / "tmp").iterdir())
    stems = {p.stem for p in out.rglob("*") if p.is_file() and "_anonray" not in p.parts}
    assert stems == {p.stem for p, _ in sample_clips.values()}


def test_inputs_untouched(e2e):
    inputs, _, _, before = e2e
    assert {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["h264_mp4", "hevc_mkv", "mpeg2_ts", "mpeg4_avi", "mjpeg_mov", "vp9_webm",
                                  "vfr_mp4", "rotated_mp4", "interlaced_ts"])
def test_output_matches_input_and_targets_are_masked(e2e, sample_clips, name, tmp_path):
    inputs, out, _, _ = e2e
    src_clip, truth = sample_clips[name]
    src = next(inputs.rglob(src_clip.name))
    dst, baseline = _output_and_baseline(inputs, out, src, tmp_path)
    src_times, src_images, src_size, src_rot = decode_frames(src)
    dst_times, dst_images, dst_size, dst_rot = decode_frames(dst)
    assert len(dst_images) == len(src_images) == truth.frame_count
    assert dst_size == src_size and dst_rot == src_rot
    assert max(abs(float(a - b)) for a, b in zip(src_times, dst_times, strict=True)) <= 0.001
    assert_same_audio(src, dst)
    _assert_masked(truth, dst_images)
    _assert_rest_unchanged(truth, src_images, dst_images, decode_frames(baseline)[1])


def _assert_masked(truth: SampleTruth, images: list[np.ndarray]) -> None:
    """Solid mode, every frame: >= 90% of each planted plate's pixels are the mask colour; a face is masked
    by an ellipse the size of the detector's box (the default margin 1.0), which leaves the box's corners:
    >= 60% of the face box (the accuracy harness's "covered") and >= 95% of its central half."""
    for i, image in enumerate(images):
        x0, y0, x1, y1 = truth.plate_boxes[i]
        is_mask = mask_pixels(image[y0:y1, x0:x1].astype(int)).mean()
        assert is_mask >= 0.9, f"frame {i}: only {is_mask:.0%} of the plate masked"
        x0, y0, x1, y1 = truth.face_boxes[i]
        is_mask = mask_pixels(image[y0:y1, x0:x1].astype(int)).mean()
        assert is_mask >= 0.6, f"frame {i}: only {is_mask:.0%} of the face masked"
        qx, qy = (x1 - x0) // 4, (y1 - y0) // 4
        centre = mask_pixels(image[y0 + qy:y1 - qy, x0 + qx:x1 - qx].astype(int)).mean()
        assert centre >= 0.95, f"frame {i}: only {centre:.0%} of the face's centre masked"


def _assert_rest_unchanged(truth: SampleTruth, src: list[np.ndarray], dst: list[np.ndarray],
                           baseline: list[np.ndarray]) -> None:
    """Far from the targets the picture is the input's, up to codec noise: no further from the input
    than a plain transcode at the same settings is (with a small allowance for rate control).

    Pixels masked there (false positives) are collateral: counted, bounded, and left out of the
    noise comparison.
    """
    h, w = src[0].shape[:2]
    collateral = []
    for i in range(0, len(src), 7):
        far = np.ones((h, w), bool)
        for x0, y0, x1, y1 in (truth.face_boxes[i], truth.plate_boxes[i]):
            mx, my = (x1 - x0) // 2 + 8, (y1 - y0) // 2 + 8
            far[max(0, y0 - my):y1 + my, max(0, x0 - mx):x1 + mx] = False
        masked = mask_pixels(dst[i])
        collateral.append(masked[far].mean())
        keep = far & ~masked
        noise = np.abs(src[i].astype(int) - baseline[i].astype(int))[keep].mean()
        diff = np.abs(src[i].astype(int) - dst[i].astype(int))[keep].mean()
        assert diff <= noise * 1.25 + 0.5, f"frame {i}: mean difference {diff:.2f} (codec noise {noise:.2f})"
    assert np.mean(collateral) <= 0.02, f"{np.mean(collateral):.1%} of the picture away from targets masked"


def test_a_broken_detection_stage_fails_its_videos_not_the_run(ray_session, sample_clips, tmp_path, monkeypatch):
    import anonray.runtime.driver as pipeline

    class Broken:
        def iter_batches(self, **_):
            raise RuntimeError("actor could not start")
            yield  # pragma: no cover

    monkeypatch.setattr(pipeline, "detection_dataset", lambda *a, **k: Broken())
    clip, _ = sample_clips["h264_mp4"]
    summary = run(RunRequest([str(clip)], tmp_path / "out", solid_config()))
    assert summary.failed == 1 and summary.exit_code == 1
    videos = pq.read_table(tmp_path / "out" / "_anonray" / "videos").to_pandas()
    assert videos.iloc[0].error_class == "detection_stage_failed"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "_anonray"]


def test_decoded_frames_in_flight_are_bounded_and_every_frame_is_detected(ray_session, sample_clips):
    """The detection dataset caps the object store bytes its decoded frames may hold (the decode actors
    otherwise run ahead of detection), on its own context only, and still detects every frame."""
    import ray

    from anonray.config import Config
    from anonray.runtime.datasets import detection_dataset
    from anonray.runtime.resources import FRAME_BUFFER_MIN, plan_resources

    path, _ = sample_clips["h264_mp4"]
    info, segments = probe(path, path.name)
    config = Config()
    plan = plan_resources({"CPU": 2.0}, config)
    assert plan.frame_buffer_bytes == FRAME_BUFFER_MIN
    ds = detection_dataset([(info, segments)], config, plan)
    assert ds.context.execution_options.resource_limits.object_store_memory == plan.frame_buffer_bytes
    assert ray.data.DataContext.get_current().execution_options.resource_limits.object_store_memory == float("inf")
    rows = ds.take_all()
    frames = sorted(int(r["frame_index"]) for r in rows if int(r["frame_index"]) >= 0)
    assert frames == list(range(info.frame_count))
    assert sum(int(r["frame_index"]) < 0 for r in rows) == len(segments)  # one end marker per segment
