"""Throughput of anonray end to end against the transcode floor, measured in one run on the same footage.

    python benchmarks/throughput.py --input CLIP --frames N --json OUT.json

CLIP is looped to N frames by remuxing its packets (no re-encode, so the footage is the source's),
then measured:

- ``anonray_fps``: frames / wall time of one cold ``anonray run`` subprocess with the default
  configuration (faces and plates), local Ray started by the command itself;
- ``transcode_fps``: a plain PyAV decode + libx264 encode at anonray's encoder settings (CRF, preset)
  with the audio copied: the floor anonray cannot beat while it re-encodes every frame.

Writes the raw timings and ratios to OUT.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av


def _loop_span_seconds(src: Path) -> tuple[int, float]:
    """Video frames in ``src`` and the time one loop spans (first pts to the end of the last frame)."""
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        pts = sorted(p.pts for p in inp.demux(vs) if p.size and p.pts is not None)
        frame = 1 / float(vs.average_rate or vs.guessed_rate)
        return len(pts), float((pts[-1] - pts[0]) * vs.time_base) + frame


def loop_clip(src: Path, dst: Path, frames: int) -> int:
    """Remux ``src`` repeatedly (video + first audio stream, timestamps shifted) up to ``frames`` frames."""
    per_loop, span = _loop_span_seconds(src)
    written = 0
    with av.open(str(dst), "w") as out:
        for k in range(-(-frames // per_loop)):
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


def run_anonray(clip: Path, workdir: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "anonray", "run", str(clip), "--output", str(workdir / "anon")]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"anonray run failed with exit code {proc.returncode}")
    import pyarrow.parquet as pq

    row = pq.read_table(workdir / "anon" / "_anonray" / "videos").to_pylist()[0]
    return {"wall_seconds": wall, **{k: row[k] for k in row if k.startswith("seconds_")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    from anonray.config import Config

    encoder = Config().encoder
    with tempfile.TemporaryDirectory(prefix="anonray-bench-") as tmp:
        work = Path(tmp)
        clip = work / f"looped{args.input.suffix}"
        frames = loop_clip(args.input, clip, args.frames)
        footage_seconds = _loop_span_seconds(clip)[1]

        started = time.perf_counter()
        transcoded = plain_transcode(clip, work / "floor.mp4", encoder.crf, encoder.preset)
        transcode_wall = time.perf_counter() - started
        assert transcoded == frames, (transcoded, frames)

        anon = run_anonray(clip, work)

    result = {
        "input": args.input.name,
        "frames": frames,
        "footage_seconds": footage_seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "encoder": {"codec": "libx264", "crf": encoder.crf, "preset": encoder.preset},
        "transcode_fps": frames / transcode_wall,
        "transcode_seconds": transcode_wall,
        "anonray_fps": frames / anon["wall_seconds"],
        "anonray_footage_seconds_per_second": footage_seconds / anon["wall_seconds"],
        "anonray_seconds": anon,
    }
    result["anonray_over_transcode"] = result["anonray_fps"] / result["transcode_fps"]
    args.json.write_text(json.dumps(result, indent=2))
    print(f"| measure | fps | ratio to transcode floor |\n| --- | --- | --- |\n"
          f"| plain PyAV decode + libx264 ({encoder.preset}, CRF {encoder.crf}) | "
          f"{result['transcode_fps']:.1f} | 1.00 |\n"
          f"| anonray run (cold, default config, faces + plates) | {result['anonray_fps']:.1f} | "
          f"{result['anonray_over_transcode']:.2f} |")


if __name__ == "__main__":
    main()
