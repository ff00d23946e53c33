"""An archive of short clips (a CCTV export): anonray's whole wall time against a plain transcode of the files.

    python benchmarks/short_clips.py --count 200 --json OUT.json [--work DIR] [--parallel 2]

Writes ``--count`` H.264 clips of 480x270, 25 frames each, in 10 folders, from the project's own synthetic
sample footage (anonray.testing.samples, a seed per clip). The baseline transcodes every clip with PyAV
(libx264 veryfast, CRF 20, one thread each, ``--parallel`` at a time: ``ffmpeg -threads 1 -i IN -c:v libx264
-preset veryfast -crf 20 OUT``); anonray is one cold ``anonray run DIR --output OUT`` at the default
configuration, its whole wall time. Prints and writes the ratio, the CPU model and the run's latencies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonray.testing.samples import write_sample_video  # noqa: E402
from benchmarks.machine import cpu_flags, cpu_model  # noqa: E402

FOLDERS = 10
FRAMES = 25
SIZE = (480, 270)


def write_clips(folder: Path, count: int) -> list[Path]:
    """``count`` short H.264 clips in FOLDERS sub-folders (cam00 .. cam09), each from its own seed."""
    paths = []
    for i in range(count):
        path = folder / f"cam{i % FOLDERS:02d}" / f"clip-{i:04d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sample_video(path, format="h264_mp4", frames=FRAMES, size=SIZE, audio=False, seed=i)
        paths.append(path)
    return paths


def transcode_one(src: Path, dst: Path) -> int:
    """libx264 veryfast CRF 20, one thread for decoding and one for encoding: frames written."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.codec_context.thread_count = 1
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.time_base = vout.codec_context.time_base = vin.time_base
        vout.codec_context.thread_count = 1
        vout.options = {"crf": "20", "preset": "veryfast"}
        frames = 0
        for frame in inp.decode(vin):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(vout.encode(frame))
            frames += 1
        out.mux(vout.encode(None))
    return frames


def baseline(clips: list[Path], out: Path, parallel: int) -> tuple[float, int]:
    """Wall seconds to transcode every clip, ``parallel`` at a time (processes started before the clock)."""
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
        list(pool.map(abs, range(parallel)))
        started = time.perf_counter()
        frames = sum(pool.map(transcode_one, clips, [out / f"{k:04d}.mp4" for k in range(len(clips))]))
        return time.perf_counter() - started, frames


def run_anonray(source: Path, out: Path, config: Path | None = None) -> dict[str, Any]:
    """One cold ``anonray run`` on the folder (with ``config``, a YAML file, where given): its wall time,
    statuses and per-file latencies."""
    import pyarrow.parquet as pq

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "anonray", "run", str(source), "--output", str(out)]
    proc = subprocess.run(cmd + (["--config", str(config)] if config else []), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"anonray run failed with exit code {proc.returncode}")
    videos = pq.read_table(out / "_anonray" / "videos").to_pylist()
    run = pq.read_table(out / "_anonray" / "runs").to_pylist()[0]
    latencies = sorted((v["finished_utc"] - run["started_utc"]).total_seconds() for v in videos)
    stages = {k: sum(float(v[k] or 0.0) for v in videos) for k in videos[0] if k.startswith("seconds_")}
    return {"wall_seconds": wall, "run_wall_seconds": run["wall_seconds"], "videos": len(videos),
            "ok": sum(v["status"] == "ok" for v in videos), "frames": sum(int(v["frames_out"] or 0) for v in videos),
            "latency_median_seconds": statistics.median(latencies), "latency_first_seconds": latencies[0],
            "latency_last_seconds": latencies[-1], "stage_seconds": stages,
            "detection_precision": run.get("detection_precision"), "cluster_cpus": run.get("cluster_cpus")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--parallel", type=int, default=2, help="Baseline transcodes at once.")
    parser.add_argument("--config", type=Path, help="anonray config (YAML) for its run; the defaults if absent.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anonray-short-") as tmp:
        work = args.work or Path(tmp)
        clips = write_clips(work / "archive", args.count)
        base_wall, base_frames = baseline(clips, work / "baseline", args.parallel)
        anon = run_anonray(work / "archive", work / "anon", args.config)
    if anon["ok"] != args.count or base_frames != args.count * FRAMES:
        raise SystemExit(f"incomplete: anonray {anon['ok']} of {args.count} ok, baseline {base_frames} frames")
    result = {
        "clips": args.count, "frames_per_clip": FRAMES, "size": list(SIZE), "folders": FOLDERS,
        "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "baseline_parallel": args.parallel,
        "baseline_seconds": base_wall, "anonray_seconds": anon["wall_seconds"], "anonray": anon,
        "anonray_over_baseline_seconds": anon["wall_seconds"] / base_wall,
        "detection_precision": anon["detection_precision"],
    }
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"| clips | baseline s ({args.parallel} at a time) | anonray s | ratio (goal <= 5) | median latency s |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.count} | {base_wall:.1f} | {anon['wall_seconds']:.1f} | "
          f"{result['anonray_over_baseline_seconds']:.1f} | {anon['latency_median_seconds']:.1f} |")
    print(f"CPU: {result['cpu_model']} ({os.cpu_count()} CPUs), detection precision {result['detection_precision']}")


if __name__ == "__main__":
    main()
