"""Rerunning the same command skips what is done; changed inputs, settings and lost outputs are redone."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
from _video_checks import solid_config

from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import write_sample_video


def _statuses(out, run_id):
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    rows = videos[videos.run_id == run_id]
    return dict(zip(rows.path, rows.status, strict=True))


def test_rerun_skips_done_files_and_redoes_changed_ones(ray_session, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i, name in enumerate(("a.mp4", "b.mp4")):
        write_sample_video(inputs / name, format="h264_mp4", frames=20, seed=i)
    config = solid_config()

    first = run(RunRequest([str(inputs)], out, config))
    assert first.ok == 2
    output_a = out / "a.mp4"
    written = output_a.stat().st_mtime_ns

    again = run(RunRequest([str(inputs)], out, config))
    assert (again.ok, again.skipped, again.exit_code) == (0, 2, 0)
    assert _statuses(out, again.run_id) == {"a.mp4": "skipped", "b.mp4": "skipped"}
    assert output_a.stat().st_mtime_ns == written  # not rewritten

    os.utime(inputs / "b.mp4", ns=(1, 1))  # b looks changed; a's output is lost
    output_a.unlink()
    third = run(RunRequest([str(inputs)], out, config, verify_inputs=True))
    assert _statuses(out, third.run_id) == {"a.mp4": "ok", "b.mp4": "ok"}

    other_settings = run(RunRequest([str(inputs)], out, solid_config(**{"mask.color": "00ff00"})))
    assert other_settings.ok == 2
    forced = run(RunRequest([str(inputs)], out, solid_config(**{"mask.color": "00ff00"}), force=True))
    assert forced.ok == 2 and forced.skipped == 0
    assert len(pq.read_table(out / "_anonray" / "runs")) == 5
