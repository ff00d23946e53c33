"""Throughput of anonray end to end against the transcode floor and deface, measured in one run on the same footage.

    python benchmarks/throughput.py --input CLIP --frames N --json OUT.json [--skip-deface]
        [--gpu-host] [--gpus G] [--parallel P] [--copies K]

CLIP is looped to N frames by remuxing its packets (no re-encode), then measured, one after the other:
``transcode_fps`` (PyAV decode + libx264 at anonray's encoder settings: the floor; P at once with
``--parallel P``), ``anonray_fps`` (one cold ``anonray run``, default configuration, over K copies of the clip
with ``--copies K``) and ``deface_fps`` (one cold deface 1.5.0, installed in its own venv on first use, which
needs network; ``--skip-deface`` leaves it out). Writes the keys, raw timings and ratios to OUT.json and prints
a markdown table. GPU host mode (default when ``nvidia-smi -L`` lists a GPU) adds ``gpu_hours_per_100h_footage``.
Every key and option: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av

# keys OUT.json always has (values may be null where a measure was skipped)
RESULT_KEYS = (
    "input", "frames", "footage_seconds", "machine", "cpu_model", "detection_precision", "encoder", "gpu_host", "gpus",
    "transcode_fps", "transcode_seconds", "transcode_parallel",
    "anonray_fps", "anonray_footage_seconds_per_wall_second", "anonray_seconds",
    "deface_fps", "deface_seconds", "deface",
    "anonray_over_transcode", "anonray_over_deface",
    "machine_hours_per_100h_footage", "gpu_hours_per_100h_footage",
)


def _loop_span_seconds(src: Path) -> tuple[int, float]:
    """Video frames in ``src`` and the time one loop spans (first pts to the end of the last frame)."""
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        pts = sorted(p.pts for p in inp.demux(vs) if p.size and p.pts is not None)
        frame = 1 / float(vs.average_rate or vs.guessed_rate)
        return len(pts), float((pts[-1] - pts[0]) * vs.time_base) + frame


def loops_needed(frames: int, per_loop: int) -> int:
    """How many copies of a ``per_loop``-frame clip it takes to reach ``frames`` frames (the last one cut)."""
    if per_loop <= 0:
        raise ValueError("the clip has no video frames")
    return -(-frames // per_loop)


def loop_clip(src: Path, dst: Path, frames: int) -> int:
    """Remux ``src`` repeatedly (video + first audio stream, timestamps shifted) up to ``frames`` frames."""
    per_loop, span = _loop_span_seconds(src)
    written = 0
    with av.open(str(dst), "w") as out:
        for k in range(loops_needed(frames, per_loop)):
            with av.open(str(src)) as inp:
                wanted = [inp.streams.video[0], *inp.streams.audio[:1]]
                if k == 0:
                    streams = {s.index: out.add_stream_from_template(s) for s in wanted}
                for packet in inp.demux(wanted):
                    if not packet.size or packet.pts is None:
                        continue
                    is_video = packet.stream.type == "video"
                    if is_video and written >= frames:
                        continue
                    shift = round(k * span / packet.time_base)
                    packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
                    written += is_video
    return written


def plain_transcode(src: Path, dst: Path, crf: int, preset: str) -> int:
    """Decode every frame with PyAV and encode it with libx264 (audio copied): the floor."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        vout.options = {"crf": str(crf), "preset": preset}
        audio = {a.index: out.add_stream_from_template(a) for a in inp.streams.audio}
        frames = 0
        for packet in inp.demux(vin, *inp.streams.audio):
            if packet.stream.type == "audio":
                if packet.size:
                    packet.stream = audio[packet.stream.index]
                    out.mux(packet)
                continue
            for frame in packet.decode():
                frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(vout.encode(frame))
                frames += 1
        out.mux(vout.encode(None))
    return frames


def parallel_transcodes(src: Path, workdir: Path, crf: int, preset: str, parallel: int) -> tuple[int, float]:
    """``parallel`` plain transcodes of ``src`` at once (one process each; in-process when 1):
    total frames encoded and the wall seconds until the last one finished."""
    if parallel <= 1:
        started = time.perf_counter()
        frames = plain_transcode(src, workdir / "floor.mp4", crf, preset)
        return frames, time.perf_counter() - started
    with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
        # start the workers (and their imports) before the clock does
        list(pool.map(math.sqrt, range(parallel)))
        started = time.perf_counter()
        futures = [pool.submit(plain_transcode, src, workdir / f"floor-{i}.mp4", crf, preset)
                   for i in range(parallel)]
        frames = sum(f.result() for f in futures)
        return frames, time.perf_counter() - started


def count_gpus() -> int:
    """GPUs ``nvidia-smi -L`` lists (restricted to ``CUDA_VISIBLE_DEVICES`` when set); 0 without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    listed = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return min(listed, len(ids))
    return listed


def hours_per_100h(units: float, wall_seconds: float, footage_seconds: float) -> float:
    """(units x wall / 3600) / (footage / 3600) x 100: e.g. GPU-hours per 100 h of footage."""
    return (units * wall_seconds / 3600.0) / (footage_seconds / 3600.0) * 100.0


def default_parallel(gpu_host: bool, cpus: int | None) -> int:
    return max(1, cpus or 1) if gpu_host else 1


def link_copies(clip: Path, folder: Path, copies: int) -> Path:
    """``copies`` names for ``clip`` in ``folder`` (hard links where the file system allows, else copies):
    the input of an anonray run that does the same work as ``copies`` parallel transcodes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        target = folder / f"copy-{i:03d}{clip.suffix}"
        try:
            os.link(clip, target)
        except OSError:
            shutil.copyfile(clip, target)
    return folder


def run_anonray(clip: Path, workdir: Path, copies: int = 1, config: Path | None = None) -> dict[str, Any]:
    """One cold ``anonray run`` subprocess on ``clip`` (or on a folder of ``copies`` of it), with ``config``
    (a YAML file) where given: its wall time, the per-stage seconds of its ``videos`` table (summed over the
    videos) and the cluster it had."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    source = clip if copies <= 1 else link_copies(clip, workdir / "copies", copies)
    cmd = [sys.executable, "-m", "anonray", "run", str(source), "--output", str(workdir / "anon")]
    cmd += ["--config", str(config)] if config else []
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        with _benchmarks_module("memory").PeakMemory(proc.pid) as peak:
            proc.wait()
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read()[-4000:])
            raise SystemExit(f"anonray run failed with exit code {proc.returncode}")
    import pyarrow.parquet as pq

    state = workdir / "anon" / "_anonray"
    rows = pq.read_table(state / "videos").to_pylist()
    not_ok = sorted({str(r.get("status")) for r in rows if r.get("status") != "ok"})
    if len(rows) != max(1, copies) or not_ok:
        raise SystemExit(f"anonray run: {len(rows)} video rows for {max(1, copies)} inputs, statuses {not_ok}")
    run = pq.read_table(state / "runs").to_pylist()[0]
    stages = {k: sum(float(r[k] or 0.0) for r in rows) for k in rows[0] if k.startswith("seconds_")}
    return {"wall_seconds": wall, "videos": len(rows), **stages, **peak.result(),
            "run_wall_seconds": run.get("wall_seconds"), "cluster_cpus": run.get("cluster_cpus"),
            "cluster_gpus": run.get("cluster_gpus"), "detection_precision": run.get("detection_precision")}


def _benchmarks_module(name: str):
    """``benchmarks.<name>``, importable whether this file runs as a script or as a module."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"benchmarks.{name}")


def run_deface(clip: Path, workdir: Path) -> dict[str, Any]:
    """One cold ``deface`` subprocess with its defaults on ``clip``, output to a file in ``workdir``."""
    tool = _benchmarks_module("deface_tool")
    try:
        deface = tool.deface_venv(tool.default_cache())
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"could not install deface {tool.DEFACE_VERSION} ({exc}); "
                         "run with --skip-deface on a machine without network") from exc
    target = workdir / "deface.mp4"
    cmd = [str(deface), str(tool.deface_input(clip, workdir)), "-o", str(target)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not target.exists():
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"deface failed with exit code {proc.returncode}")
    with av.open(str(target)) as out:
        vs = out.streams.video[0]
        frames_out = sum(1 for p in out.demux(vs) if p.size)
    # output_frames may exceed the clip's frames: deface writes at a constant rate, filling pts gaps
    return {"version": tool.DEFACE_VERSION, "command": ["deface", Path(cmd[1]).name, "-o", target.name],
            "wall_seconds": wall, "output_frames": frames_out}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_result(*, name: str, frames: int, footage_seconds: float, crf: int, preset: str, transcode_frames: int,
                 transcode_wall: float, parallel: int, anon: dict[str, Any], deface: dict[str, Any] | None,
                 gpu_host: bool, gpus: float, copies: int = 1) -> dict[str, Any]:
    """OUT.json's content from the raw measures (anonray processed ``copies`` copies of the clip in one run)."""
    anon_wall = anon["wall_seconds"]
    copies = max(1, copies)
    transcode_fps = transcode_frames / transcode_wall
    anonray_fps = frames * copies / anon_wall
    deface_fps = frames / deface["wall_seconds"] if deface else None
    return {
        "input": name,
        "frames": frames,
        "footage_seconds": footage_seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node(),
                    "cpu_flags": _benchmarks_module("machine").cpu_flags()},
        "cpu_model": _benchmarks_module("machine").cpu_model(),
        "detection_precision": anon.get("detection_precision"),
        "encoder": {"codec": "libx264", "crf": crf, "preset": preset},
        "gpu_host": gpu_host,
        "gpus": gpus if gpu_host else 0,
        "transcode_fps": transcode_fps,
        "transcode_seconds": transcode_wall,
        "transcode_parallel": parallel,
        "transcode_frames": transcode_frames,
        "anonray_copies": copies,
        "anonray_fps": anonray_fps,
        "anonray_footage_seconds_per_wall_second": footage_seconds * copies / anon_wall,
        "anonray_footage_seconds_per_second": footage_seconds * copies / anon_wall,  # older name of the key above
        "anonray_seconds": anon,
        "deface_fps": deface_fps,
        "deface_seconds": deface["wall_seconds"] if deface else None,
        "deface": deface,
        "anonray_over_transcode": _ratio(anonray_fps, transcode_fps),
        "anonray_over_deface": _ratio(anonray_fps, deface_fps),
        "machine_hours_per_100h_footage": hours_per_100h(1, anon_wall, footage_seconds * copies),
        "gpu_hours_per_100h_footage": hours_per_100h(gpus, anon_wall, footage_seconds * copies) if gpu_host else None,
    }


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown_table(result: dict[str, Any]) -> str:
    """The markdown table printed at the end of a run: fps, footage speed and ratios per measure."""
    enc, footage, frames = result["encoder"], result["footage_seconds"], result["frames"]
    parallel = result["transcode_parallel"]
    floor_fps, anon_fps, deface_fps = result["transcode_fps"], result["anonray_fps"], result["deface_fps"]
    floor_name = f"plain PyAV decode + libx264 ({enc['preset']}, CRF {enc['crf']})"
    if parallel > 1:
        floor_name += f", {parallel} in parallel (total)"
    speed = footage / frames  # footage seconds per frame
    copies = result.get("anonray_copies", 1)
    anon_name = "anonray run (cold, default config, faces + plates)"
    if copies > 1:
        anon_name += f", {copies} copies in one run (total)"
    rows = [
        (floor_name, floor_fps),
        (anon_name, anon_fps),
        (f"deface {(result['deface'] or {}).get('version', '1.5.0')} (cold, defaults, faces only)", deface_fps),
    ]
    lines = ["| measure | fps | footage s / wall s | ratio to transcode floor | anonray / this |",
             "| --- | --- | --- | --- | --- |"]
    for label, fps in rows:
        lines.append(f"| {label} | {_num(fps, '.1f')} | {_num(None if fps is None else fps * speed)} | "
                     f"{_num(_ratio(fps, floor_fps))} | {_num(_ratio(anon_fps, fps))} |")
    lines.append("")
    lines.append(f"{frames} frames, {footage:.1f} s of footage; anonray: "
                 f"{result['machine_hours_per_100h_footage']:.2f} machine-hours per 100 h of footage")
    if result["gpu_host"]:
        lines[-1] += (f", {_num(result['gpu_hours_per_100h_footage'])} GPU-hours per 100 h of footage "
                      f"({_num(result['gpus'], 'g')} GPUs)")
    anon = result.get("anonray_seconds") or {}
    if anon.get("peak_rss_mb") is not None:
        lines.append(f"anonray peak memory: {anon['peak_rss_mb']:.0f} MB resident (process tree, shared pages "
                     f"counted per process), {_num(anon.get('peak_shm_mb'), '.0f')} MB object store (/dev/shm)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--skip-deface", action="store_true", help="Leave deface out (no network to install it).")
    parser.add_argument("--config", type=Path, help="anonray config (YAML) for its run, e.g. to force a precision; "
                        "the default configuration if absent.")
    parser.add_argument("--gpu-host", action=argparse.BooleanOptionalAction, default=None,
                        help="GPU host mode (default: on when nvidia-smi lists a GPU).")
    parser.add_argument("--gpus", type=float, default=None,
                        help="GPUs the anonray run used, for GPU-hours (default: the run's cluster_gpus).")
    parser.add_argument("--parallel", type=int, default=None,
                        help="Transcodes run at once for the floor (default: os.cpu_count() on a GPU host, else 1).")
    parser.add_argument("--copies", type=int, default=None,
                        help="Copies of the looped clip anonray processes in its one run, so that it does the "
                             "floor's work (default: --parallel).")
    args = parser.parse_args(argv)

    from anonray.config import Config

    encoder = Config().encoder
    listed_gpus = count_gpus()
    gpu_host = args.gpu_host if args.gpu_host is not None else listed_gpus > 0
    parallel = args.parallel if args.parallel is not None else default_parallel(gpu_host, os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="anonray-bench-") as tmp:
        work = Path(tmp)
        clip = work / f"looped{args.input.suffix}"
        frames = loop_clip(args.input, clip, args.frames)
        footage_seconds = _loop_span_seconds(clip)[1]

        transcoded, transcode_wall = parallel_transcodes(clip, work, encoder.crf, encoder.preset, parallel)
        assert transcoded == frames * max(1, parallel), (transcoded, frames, parallel)

        copies = max(1, args.copies if args.copies is not None else parallel)
        anon = run_anonray(clip, work, copies, args.config)
        deface = None if args.skip_deface else run_deface(clip, work)

    gpus = args.gpus if args.gpus is not None else (anon.get("cluster_gpus") or listed_gpus)
    result = build_result(name=args.input.name, frames=frames, footage_seconds=footage_seconds, crf=encoder.crf,
                          preset=encoder.preset, transcode_frames=transcoded, transcode_wall=transcode_wall,
                          parallel=max(1, parallel), anon=anon, deface=deface, gpu_host=gpu_host, gpus=gpus,
                          copies=copies)
    args.json.write_text(json.dumps(result, indent=2))
    print(markdown_table(result))


if __name__ == "__main__":
    main()
