"""Decode throughput of one clip: CPU decode (what the decode actors do) against NVDEC, on a GPU host.

    python benchmarks/nvdec.py --input CLIP [--frames 500] [--width 1280 --height 720] [--json OUT.json]

CLIP is looped to ``--frames`` frames (``throughput.loop_clip``, a packet remux), then decoded once per mode:
``cpu_rgb`` (PyAV decode + reformat to the detection size in RGB, as a decode actor does), ``nvdec_rgb``
(NVDEC, frames copied back, the same reformat) and ``nvdec_on_gpu`` (NVDEC, frames left in GPU memory).
Prints each mode's fps and CPU seconds per frame as a markdown table; a mode the machine cannot run gets its
error instead. Each mode in detail: benchmarks/README.md, "GPU host".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonray.decode.segment import INTERPOLATION  # noqa: E402
from benchmarks.throughput import loop_clip  # noqa: E402


def _hwaccel(hw_owned: bool):
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type="cuda", allow_software_fallback=False, is_hw_owned=hw_owned)


def decode_fps(clip: Path, mode: str, size: tuple[int, int]) -> dict[str, Any]:
    """Decode every frame of ``clip`` in ``mode``; frames, wall seconds, fps and CPU seconds per frame."""
    hwaccel = None if mode == "cpu_rgb" else _hwaccel(mode == "nvdec_on_gpu")
    cpu0, started = time.process_time(), time.perf_counter()
    frames = 0
    with av.open(str(clip), hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if mode != "nvdec_on_gpu":
                frame.reformat(width=size[0], height=size[1], format="rgb24",
                               interpolation=INTERPOLATION).to_ndarray()
            frames += 1
        used_hw = bool(getattr(stream.codec_context, "is_hwaccel", False))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {"frames": frames, "seconds": wall, "fps": frames / wall, "cpu_ms_per_frame": 1000 * cpu / max(frames, 1),
            "hwaccel_used": used_hw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="anonray-nvdec-") as tmp:
        clip = Path(tmp) / f"looped{args.input.suffix}"
        loop_clip(args.input, clip, args.frames)
        for mode in ("cpu_rgb", "nvdec_rgb", "nvdec_on_gpu"):
            try:
                results[mode] = decode_fps(clip, mode, (args.width, args.height))
            except Exception as err:  # noqa: BLE001 - a mode this machine lacks is reported, not fatal
                results[mode] = {"error": f"{type(err).__name__}: {err}"}
    print("| mode | fps | CPU ms / frame | hwaccel used |\n| --- | --- | --- | --- |")
    for mode, r in results.items():
        if "error" in r:
            print(f"| {mode} | {r['error']} | | |")
        else:
            print(f"| {mode} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.2f} | {r['hwaccel_used']} |")
    if args.json:
        args.json.write_text(json.dumps({"input": args.input.name, "size": [args.width, args.height], **results},
                                        indent=2))


if __name__ == "__main__":
    main()
