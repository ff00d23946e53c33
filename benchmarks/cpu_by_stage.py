"""Where an ``anonray run`` spends the CPU: CPU seconds by process title (Ray names its workers after the
actor class or task running in them: ``ray::render_task``, ``ray::MapWorker(MapBatches(SegmentDecoder))``, ...).

    python benchmarks/cpu_by_stage.py --input CLIP [--frames 300] [--copies 16] [--config C.yaml ...]
        [--json OUT.json]

CLIP is looped to ``--frames`` frames and linked ``--copies`` times into a folder (as throughput.py does);
then one cold ``anonray run`` per ``--config`` (none = the defaults; each file is one more run, in order)
processes that folder while every process's CPU time (``/proc/PID/stat``, all its threads) is sampled
each second and the growth since the last sample is charged to the title the process had then. GPU
utilisation (``nvidia-smi``) is sampled too, where there is one. Prints, per run: fps, wall seconds, CPU
core-seconds per frame in total and by title, mean GPU utilisation, and the render's CPU per frame (render and
chunk tasks) against the floor's: the CPU of one plain decode + libx264 transcode of the looped clip at
anonray's encoder settings (throughput.py's floor, in this process, measured first). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import link_copies, loop_clip, plain_transcode  # noqa: E402

RENDER_TITLES = ("ray::render_task", "ray::encode_chunk_task")
"""The processes that render (full-size decode, masks, encode, QA) as Ray titles them."""

_TICK = os.sysconf("SC_CLK_TCK")


def _title(pid: str) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    name = raw[0].decode(errors="replace") if raw and raw[0] else Path(f"/proc/{pid}/comm").read_text().strip()
    if name.startswith("ray::"):
        return name.split(" ")[0]
    base = Path(name).name
    args = " ".join(a.decode(errors="replace") for a in raw[1:3])
    if base.startswith("python"):
        return f"python {args}"[:60]
    return base[:40]


def _cpu_seconds(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime of every thread


class CpuSampler:
    """Charges each process's CPU growth to its current title, once a second, until stopped."""

    def __init__(self) -> None:
        self.by_title: dict[str, float] = defaultdict(float)
        self.gpu_util: list[float] = []
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._first = True

    def __enter__(self) -> CpuSampler:
        self._sample()  # what already ran before the run is the baseline, not charged
        self._first = False
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()
            if shutil.which("nvidia-smi"):
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                if out:
                    self.gpu_util.append(float(out[0]))

    def _sample(self) -> None:
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                cpu, title = _cpu_seconds(pid), _title(pid)
            except (OSError, IndexError, ValueError):
                continue
            grown = cpu - self._last.get(pid, 0.0)  # a process born since the last sample: all of its CPU
            self._last[pid] = cpu
            if grown > 0 and not self._first:
                self.by_title[title] += grown


def floor_cpu_ms_per_frame(clip: Path, work: Path) -> float:
    """CPU milliseconds per frame (every thread of this process) of the floor: decode + libx264 at anonray's
    default CRF and preset, the clip transcoded once."""
    from anonray.config import Config

    encoder = Config().encoder
    before = os.times()
    frames = plain_transcode(clip, work / "floor.mp4", encoder.crf, encoder.preset)
    after = os.times()
    return 1000 * ((after.user - before.user) + (after.system - before.system)) / max(frames, 1)


def profile_run(folder: Path, out_dir: Path, frames: int, config: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "anonray", "run", str(folder), "--output", str(out_dir)]
    if config:
        cmd += ["--config", str(config)]
    with CpuSampler() as sampler:
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    total = sum(sampler.by_title.values())
    render = sum(s for t, s in sampler.by_title.items() if t.startswith(RENDER_TITLES))
    top = sorted(sampler.by_title.items(), key=lambda kv: -kv[1])[:14]
    return {"config": str(config) if config else "defaults", "exit_code": proc.returncode, "frames": frames,
            "wall_seconds": wall, "fps": frames / wall, "cpu_seconds": total,
            "cpu_ms_per_frame": 1000 * total / frames,
            "by_title_ms_per_frame": {t: 1000 * s / frames for t, s in top},
            "render_cpu_ms_per_frame": 1000 * render / frames,
            "gpu_util_mean": sum(sampler.gpu_util) / len(sampler.gpu_util) if sampler.gpu_util else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--config", type=Path, action="append", default=[])
    parser.add_argument("--defaults", action=argparse.BooleanOptionalAction, default=True,
                        help="Run the defaults first (before the --config runs).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="anonray-cpu-") as tmp:
        work = Path(tmp)
        clip = work / f"looped{args.input.suffix}"
        per_copy = loop_clip(args.input, clip, args.frames)
        folder = link_copies(clip, work / "copies", args.copies)
        floor = floor_cpu_ms_per_frame(clip, work)
        print(f"floor (decode + libx264, one transcode): {floor:.1f} CPU ms/frame")
        configs = ([None] if args.defaults else []) + list(args.config)
        for k, config in enumerate(configs):
            r = profile_run(folder, work / f"out-{k}", per_copy * args.copies, config)
            r["floor_cpu_ms_per_frame"] = floor
            r["render_over_floor"] = r["render_cpu_ms_per_frame"] / floor if floor else None
            results.append(r)
            print(f"\n## {r['config']}: {r['fps']:.1f} fps, {r['wall_seconds']:.1f} s, exit {r['exit_code']}, "
                  f"{r['cpu_ms_per_frame']:.1f} CPU ms/frame, GPU util {r['gpu_util_mean']}")
            for title, ms in r["by_title_ms_per_frame"].items():
                print(f"  {ms:8.2f} ms/frame  {title}")
            print(f"  render {r['render_cpu_ms_per_frame']:.1f} CPU ms/frame against the floor's {floor:.1f}: "
                  f"{r['render_over_floor']:.2f}x (goal <= 1.1)")
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
