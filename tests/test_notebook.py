"""notebooks/metrics.ipynb executes headless on a real run; the metrics it shows (records/metrics.py) are right.

The unit tests build small tables with the real schemas (``anonray.records.tables.to_table``); the notebook test makes a
run of two tiny clips and a broken file through Ray and executes the notebook with nbclient in a python3 kernel
from this interpreter's environment, with ``ANONRAY_RUN_DIR`` pointing at the run.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anonray.records import metrics
from anonray.records.tables import to_table, write_part

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "metrics.ipynb"
T0 = datetime(2025, 1, 1, 12, 0, 5, tzinfo=UTC)


def _video(video_id: str, status: str = "ok", minute: int = 0, **extra) -> dict:
    row = {"run_id": "r1", "video_id": video_id, "path": f"case/{video_id}.mp4", "status": status,
           "started_utc": T0 + timedelta(minutes=minute) - timedelta(seconds=3),
           "finished_utc": T0 + timedelta(minutes=minute), "retries": 0}
    if status == "ok":
        row.update(frames_out=250, duration_seconds=10.0, detections_face=20, detections_plate=5, tracks_face=2,
                   tracks_plate=1, seconds_ingest=0.1, seconds_decode=1.0, seconds_detect=2.0, seconds_track=0.5,
                   seconds_encode=3.0, seconds_qa=1.0)
    row.update(extra)
    return row


def _videos(rows: list[dict]) -> pd.DataFrame:
    return to_table("videos", rows).to_pandas()


def _runs(**extra) -> pd.DataFrame:
    row = {"run_id": "r1", "cluster_gpus": 0.0, "wall_seconds": 1800.0, "footage_seconds": 36000.0,
           "config_json": json.dumps({"resources": {"gpus_per_detector": 0.25}})}
    row.update(extra)
    return to_table("runs", [row]).to_pandas()


def test_throughput_bins_finished_files_per_interval():
    videos = _videos([_video("a", minute=0), _video("b", minute=0), _video("c", minute=2),
                      _video("d", "failed", minute=1, error_class="not_a_video"),
                      _video("e", "skipped", minute=1)])
    out = metrics.throughput(videos, "1min")
    assert list(out.videos) == [2, 0, 1]  # the empty minute is there, failed and skipped rows are not counted
    assert list(out.frames) == [500, 0, 250]
    assert list(out.footage_seconds) == [20.0, 0.0, 10.0]
    assert out.index[0] == pd.Timestamp("2025-01-01 12:00", tz="UTC")
    assert metrics.throughput(_videos([_video("x", "failed")])).empty


def test_stage_seconds_split_qa_out_of_encode_and_skip_skipped_rows():
    videos = _videos([_video("a"), _video("b"), _video("c", "skipped", seconds_decode=100.0),
                      _video("d", "failed", error_class="damaged_frames", seconds_decode=1.0)])
    stages = metrics.stage_seconds(videos)
    assert list(stages.index) == list(metrics.STAGES)
    assert stages.seconds.to_dict() == pytest.approx(
        {"ingest": 0.2, "decode": 3.0, "detect": 4.0, "track": 1.0, "encode": 4.0, "qa": 2.0})
    assert stages.share.sum() == pytest.approx(1.0)
    assert stages.per_footage_second["detect"] == pytest.approx(4.0 / 20.0)


def test_failure_counts_most_frequent_first():
    videos = _videos([_video("a"), _video("b", "failed", error_class="truncated"),
                      _video("c", "failed", error_class="not_a_video"), _video("d", "failed", error_class="truncated"),
                      _video("e", "failed", error_class="empty_file")])
    counts = metrics.failure_counts(videos)
    assert counts.to_dict() == {"truncated": 2, "empty_file": 1, "not_a_video": 1}
    assert list(counts.index) == ["truncated", "empty_file", "not_a_video"]
    assert metrics.failure_counts(_videos([_video("a")])).empty
    failed = metrics.failed_videos(videos)
    assert list(failed.columns) == ["error_class", "retries"] and set(failed.index) == {"b", "c", "d", "e"}


def test_detections_per_footage_hour():
    videos = _videos([_video("a"), _video("b", duration_seconds=30.0, detections_face=0, detections_plate=0),
                      _video("c", "failed", error_class="truncated", detections_face=1000)])
    per_hour = metrics.detections_per_footage_hour(videos)
    assert per_hour.loc["face", "detections"] == 20 and per_hour.loc["plate", "tracks"] == 2
    assert per_hour.loc["face", "detections_per_hour"] == pytest.approx(20 / (40 / 3600))
    assert per_hour.loc["plate", "tracks_per_hour"] == pytest.approx(2 / (40 / 3600))
    per_video = metrics.detections_per_video(videos)
    assert list(per_video.index) == ["a", "b"]
    assert per_video.loc["a", "detections_per_hour_face"] == pytest.approx(20 * 360)
    assert "path" not in per_video.columns
    assert math.isnan(metrics.detections_per_footage_hour(_videos([])).loc["face", "detections_per_hour"])


def test_gpu_hours_reserved_busy_and_cpu_only():
    videos = _videos([_video("a", seconds_detect=3600.0), _video("b", seconds_detect=3600.0)])
    gpu = metrics.gpu_hours(_runs(cluster_gpus=2.0), videos)
    # reserved: 2 GPUs x 0.5 h = 1 GPU-hour for 10 h of footage -> 10 per 100 h
    assert gpu["gpu_hours_reserved"] == pytest.approx(1.0)
    assert gpu["gpu_hours_per_100h_reserved"] == pytest.approx(10.0)
    # busy: 0.25 GPU share x 2 h of detection = 0.5 GPU-hours -> 5 per 100 h
    assert gpu["gpu_hours_busy"] == pytest.approx(0.5)
    assert gpu["gpu_hours_per_100h_busy"] == pytest.approx(5.0)
    assert gpu["note"] == ""
    cpu = metrics.gpu_hours(_runs(), videos)
    assert cpu["gpu_hours_per_100h_reserved"] == 0.0 and cpu["gpu_hours_per_100h_busy"] == 0.0
    assert "CPU-only" in cpu["note"]
    summary = metrics.run_summary(_runs(cluster_gpus=2.0), videos)
    assert summary["videos_ok"] == 2 and summary["gpu_hours_per_100h_reserved"] == pytest.approx(10.0)


def test_tables_select_latest_run_and_dedupe_parts(tmp_path):
    state = tmp_path / "out" / "_anonray"
    older = [_video("a", run_id="20250101T000000Z-aaaa")]
    newer = [_video("a", run_id="20250102T000000Z-bbbb"), _video("b", run_id="20250102T000000Z-bbbb")]
    write_part(state, "videos", "20250101T000000Z-aaaa", older)
    write_part(state, "runs", "20250101T000000Z-aaaa", [{"run_id": "20250101T000000Z-aaaa"}])
    write_part(state, "videos", "20250102T000000Z-bbbb", newer)
    write_part(state, "videos", "20250102T000000Z-bbbb-1", newer[:1])  # an in-progress part beside the merged one
    assert metrics.resolve_state_dir(tmp_path / "out") == state
    tables = metrics.load_tables(metrics.resolve_state_dir(state))
    run_id, picked = metrics.select_run(tables)
    assert run_id == "20250102T000000Z-bbbb"  # still going on: videos rows, no runs row yet
    assert sorted(picked["videos"].video_id) == ["a", "b"] and picked["runs"].empty
    assert metrics.gpu_hours(picked["runs"], picked["videos"])["note"].startswith("no runs row")
    with pytest.raises(ValueError):
        metrics.select_run(tables, "nope")
    with pytest.raises(FileNotFoundError) as err:
        metrics.resolve_state_dir(tmp_path / "missing-case-name")
    assert "missing-case-name" not in str(err.value)


def test_fidelity_per_video_and_the_summary_figures():
    videos = _videos([_video("a", video_bitrate_in=1e6, video_bitrate_out=1.2e6, psnr_outside_masks=41.0,
                             latency_seconds=30.0),
                      _video("b", video_bitrate_in=2e6, video_bitrate_out=1e6, psnr_outside_masks=38.0,
                             latency_seconds=90.0),
                      _video("c", "failed", error_class="truncated")])
    per_video = metrics.fidelity_per_video(videos)
    assert list(per_video.index) == ["a", "b"]
    assert per_video.bitrate_ratio.tolist() == pytest.approx([1.2, 0.5])
    summary = metrics.run_summary(_runs(), videos)
    assert summary["failure_rate"] == pytest.approx(1 / 3) and summary["latency_median_seconds"] == 60.0
    assert summary["bitrate_ratio_max"] == pytest.approx(1.2) and summary["psnr_outside_masks_min"] == 38.0
    metrics.plot_fidelity(per_video).canvas.draw()
    metrics.plot_fidelity(metrics.fidelity_per_video(_videos([]))).canvas.draw()


def test_figures_render_headless():
    videos = _videos([_video("a"), _video("b", "failed", error_class="truncated")])
    figures = [metrics.plot_throughput(metrics.throughput(videos)), metrics.plot_stage_seconds(
        metrics.stage_seconds(videos)), metrics.plot_failures(metrics.failure_counts(videos)),
        metrics.plot_detections(metrics.detections_per_footage_hour(videos)),
        metrics.plot_gpu_hours(metrics.gpu_hours(_runs(), videos)),
        metrics.plot_gpu_hours(metrics.gpu_hours(_runs(cluster_gpus=1.0), videos)),
        metrics.plot_failures(metrics.failure_counts(_videos([]))), metrics.plot_throughput(
            metrics.throughput(_videos([])))]
    for fig in figures:
        fig.canvas.draw()  # matplotlib.figure.Figure without pyplot: no GUI backend involved


# ------------------------------------------------------------------------------------- the notebook, on a real run


@pytest.fixture(scope="module")
def real_run(ray_session, tmp_path_factory):
    from _video_checks import solid_config

    from anonray.runtime.driver import RunRequest, run
    from anonray.testing.samples import write_sample_video

    root = tmp_path_factory.mktemp("notebook-case")
    inputs, out = root / "secret-case-name", root / "out"
    inputs.mkdir()
    for i, name in enumerate(("street-a.mp4", "street-b.mp4")):
        write_sample_video(inputs / name, format="h264_mp4", frames=20, seed=i)
    (inputs / "broken-evidence.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    summary = run(RunRequest([str(inputs)], out, solid_config()))
    assert (summary.ok, summary.failed) == (2, 1)
    return out, summary


def _outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


def _texts(cell) -> list[str]:
    texts = []
    for output in _outputs(cell):
        if output.get("output_type") == "stream":
            texts.append(output.get("text", ""))
        elif "data" in output and "text/plain" in output["data"]:
            texts.append(output["data"]["text/plain"])
    return texts


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, tag
    return cells[0]


def _pairs(text: str) -> dict[str, str]:
    """``name   value`` lines of a displayed one-column DataFrame."""
    return {m[1]: m[2] for m in re.finditer(r"^(\S+)\s+(\S+)\s*$", text, flags=re.MULTILINE)}


@pytest.mark.slow
def test_notebook_executes_on_a_real_run(real_run, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    out, summary = real_run
    monkeypatch.setenv(metrics.RUN_DIR_ENV, str(out))
    monkeypatch.delenv(metrics.RUN_ID_ENV, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as in CI: the notebook's %matplotlib inline still renders PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(_outputs(c) for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in _outputs(c)]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # throughput, stages, failures, fidelity, detections, GPU-hours

    tables = metrics.load_tables(out / "_anonray")
    videos, runs = tables["videos"], tables["runs"]
    expected_failures = videos[videos.status == "failed"].error_class.value_counts().to_dict()
    assert expected_failures == {"not_a_video": 1}
    failure_text = _texts(_tagged(nb, "failures"))[0]
    shown = {k: int(v) for k, v in _pairs(failure_text).items() if v.isdigit()}
    assert shown == expected_failures

    summary_shown = _pairs(_texts(_tagged(nb, "summary"))[0])
    assert int(summary_shown["videos_ok"]) == summary.ok == (videos.status == "ok").sum()
    assert int(summary_shown["videos_failed"]) == summary.failed
    assert int(summary_shown["frames"]) == int(videos[videos.status == "ok"].frames_out.sum()) == 40

    gpu_shown = _pairs(next(t for t in _texts(_tagged(nb, "gpu")) if "gpu_hours_per_100h_reserved" in t))
    row = runs.iloc[0]
    reserved = row.cluster_gpus * row.wall_seconds / 3600 / (row.footage_seconds / 3600) * 100
    assert float(gpu_shown["gpu_hours_per_100h_reserved"]) == pytest.approx(reserved, rel=1e-3)

    fidelity_text = _texts(_tagged(nb, "fidelity"))[0]
    assert "bitrate_ratio" in fidelity_text and "psnr_outside_masks" in fidelity_text
    ok = videos[videos.status == "ok"]
    assert (ok.video_bitrate_out <= 1.25 * ok.video_bitrate_in).all() and (ok.psnr_outside_masks > 35).all()
    assert float(summary_shown["failure_rate"]) == pytest.approx(1 / 3) == runs.iloc[0].failure_rate

    per_hour_text = _texts(_tagged(nb, "detections"))[0]
    assert "face" in per_hour_text and "plate" in per_hour_text

    # no personal data: neither the run folder nor a file or folder name of the case shows anywhere
    everything = json.dumps([o for o in outputs if "image/png" not in o.get("data", {})])
    for secret in (str(out), "secret-case-name", "street-a", "broken-evidence"):
        assert secret not in everything
    assert videos.video_id.iloc[0] in everything
