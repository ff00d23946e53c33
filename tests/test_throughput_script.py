"""benchmarks/throughput.py: the pure helpers (no benchmark run)."""

import json

import pytest

from benchmarks import machine
from benchmarks import throughput as tp
from benchmarks.deface_tool import DEFACE_VERSION, deface_input


def _result(**over):
    kwargs = dict(name="clip.mp4", frames=500, footage_seconds=20.0, crf=20, preset="veryfast",
                  transcode_frames=500, transcode_wall=10.0, parallel=1,
                  anon={"wall_seconds": 40.0, "seconds_detect": 5.0, "cluster_gpus": 0.0},
                  deface={"version": DEFACE_VERSION, "command": ["deface", "x.mp4"], "wall_seconds": 160.0,
                          "output_frames": 500},
                  gpu_host=False, gpus=0)
    kwargs.update(over)
    return tp.build_result(**kwargs)


def test_loops_needed_rounds_up():
    assert tp.loops_needed(500, 250) == 2
    assert tp.loops_needed(500, 251) == 2
    assert tp.loops_needed(500, 249) == 3
    assert tp.loops_needed(30, 250) == 1
    with pytest.raises(ValueError):
        tp.loops_needed(10, 0)


def test_hours_per_100h():
    # 1 GPU for 36 s on 3600 s of footage: 0.01 GPU-hours per hour, 1 per 100 h
    assert tp.hours_per_100h(1, 36.0, 3600.0) == pytest.approx(1.0)
    # 8 GPUs, wall = footage / 10: 80 GPU-hours per 100 h
    assert tp.hours_per_100h(8, 360.0, 3600.0) == pytest.approx(80.0)


def test_default_parallel():
    assert tp.default_parallel(False, 16) == 1
    assert tp.default_parallel(True, 16) == 16
    assert tp.default_parallel(True, None) == 1


def test_result_keys_and_ratios():
    r = _result()
    assert set(tp.RESULT_KEYS) <= set(r)
    json.dumps(r)  # serialisable
    assert r["transcode_fps"] == pytest.approx(50.0)
    assert r["anonray_fps"] == pytest.approx(12.5)
    assert r["deface_fps"] == pytest.approx(500 / 160)
    assert r["anonray_over_transcode"] == pytest.approx(0.25)
    assert r["anonray_over_deface"] == pytest.approx(4.0)
    assert r["anonray_footage_seconds_per_wall_second"] == pytest.approx(0.5)
    assert r["machine_hours_per_100h_footage"] == pytest.approx(200.0)
    assert r["gpu_hours_per_100h_footage"] is None and r["gpus"] == 0


def test_parallel_floor_and_gpu_hours():
    r = _result(transcode_frames=16 * 500, transcode_wall=20.0, parallel=16, gpu_host=True, gpus=1)
    assert r["transcode_fps"] == pytest.approx(400.0)
    assert r["gpu_hours_per_100h_footage"] == pytest.approx(200.0)
    table = tp.markdown_table(r)
    assert "16 in parallel" in table and "GPU-hours per 100 h" in table


def test_skip_deface_gives_nulls_and_table_says_na():
    r = _result(deface=None)
    assert r["deface_fps"] is None and r["anonray_over_deface"] is None and r["deface_seconds"] is None
    table = tp.markdown_table(r)
    deface_row = next(line for line in table.splitlines() if line.startswith("| deface"))
    assert "n/a" in deface_row


def test_markdown_table_rows():
    lines = tp.markdown_table(_result()).splitlines()
    assert lines[0].startswith("| measure | fps |") and lines[1].startswith("| --- |")
    floor, anon, deface = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:5])
    assert floor[1:] == ["50.0", "2.00", "1.00", "0.25"]
    assert anon[1:] == ["12.5", "0.50", "0.25", "1.00"]
    assert deface[1:] == ["3.1", "0.12", "0.06", "4.00"]
    assert "200.00 machine-hours per 100 h" in lines[-1]


def test_deface_input_links_ts(tmp_path):
    ts = tmp_path / "a.ts"
    ts.write_bytes(b"x")
    scratch = tmp_path / "s"
    scratch.mkdir()
    link = deface_input(ts, scratch)
    assert link.suffix == ".mpg" and link.read_bytes() == b"x"
    mp4 = tmp_path / "b.mp4"
    assert deface_input(mp4, scratch) == mp4


def test_copies_count_every_frame_anonray_processed():
    # 16 copies of 500 frames in one 80 s run against 16 parallel transcodes in 40 s: half the floor
    r = _result(transcode_frames=16 * 500, transcode_wall=40.0, parallel=16, gpu_host=True, gpus=1,
                anon={"wall_seconds": 80.0, "cluster_gpus": 1.0}, deface=None, copies=16)
    assert r["anonray_copies"] == 16
    assert r["anonray_fps"] == pytest.approx(100.0)
    assert r["anonray_over_transcode"] == pytest.approx(0.5)
    assert r["anonray_footage_seconds_per_wall_second"] == pytest.approx(4.0)
    # 1 GPU for 80 s over 320 s of footage: 25 GPU-hours per 100 h
    assert r["gpu_hours_per_100h_footage"] == pytest.approx(25.0)
    assert "16 copies in one run" in tp.markdown_table(r)


def test_link_copies(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"frames")
    folder = tp.link_copies(clip, tmp_path / "copies", 3)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["copy-000.mp4", "copy-001.mp4", "copy-002.mp4"]
    assert all((folder / n).read_bytes() == b"frames" for n in names)


def test_peak_memory_counts_the_whole_process_tree():
    """A child that holds 150 MB itself and starts a grandchild holding 150 MB more: both are counted."""
    import subprocess
    import sys

    from benchmarks.memory import PeakMemory

    hold = "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep({})"
    code = ("import subprocess, sys\n"
            f"g = subprocess.Popen([sys.executable, '-c', {hold.format(1.5)!r}])\n"
            f"{hold.format(1.5)}\n"
            "g.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with PeakMemory(proc.pid, interval=0.1) as peak:
        proc.wait()
    assert proc.returncode == 0
    assert peak.result()["peak_rss_mb"] >= 300


def test_result_names_the_cpu_and_the_precision_the_run_recorded():
    r = _result(anon={"wall_seconds": 40.0, "cluster_gpus": 0.0, "detection_precision": "bf16"})
    assert r["detection_precision"] == "bf16"
    assert isinstance(r["cpu_model"], str) and r["cpu_model"]
    assert set(r["machine"]["cpu_flags"]) <= set(machine.CPU_FLAGS_OF_INTEREST)


def test_cpu_model_and_flags_are_read_from_cpuinfo():
    cpuinfo = ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f avx512_bf16 "
               "avx512_vnni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert machine.cpu_model(cpuinfo) == "AMD EPYC 9B14"
    assert machine.cpu_flags(cpuinfo) == ["avx512_bf16", "avx512_vnni", "avx512f", "avx2"]
    assert machine.cpu_flags("flags\t: fpu sse2\n") == []
