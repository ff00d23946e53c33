"""Per-frame time of each detector network at each CPU precision (fp32, bf16, int8), on this CPU.

    python benchmarks/cpu_precision.py [--size 1280x720] [--frames 20] [--threads 2] [--json OUT.json]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_precision.py    # as a CPU without AVX-512 (or VNNI) runs it

What ``detection.cpu_precision: auto`` picks rests on these figures (models/README.md, "int8"). Each
detector (FrameDetector's own classes, OpenVINO runtime) runs ``--frames`` times on one synthetic frame of
``--size`` after one warm-up call (the compile); the figure is the mean wall time per frame. A precision the
CPU cannot run (bf16 without AVX-512 or AMX) is reported as its error. The JSON names the CPU model, its
flags and the ISA cap, since every figure depends on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonray.detect.centerface import CenterFace  # noqa: E402
from anonray.detect.models import model_path  # noqa: E402
from anonray.detect.openvino_cpu import resolve_precision  # noqa: E402
from anonray.detect.plates import PlateDetector  # noqa: E402
from anonray.synthetic_scene import make_scene  # noqa: E402
from benchmarks.machine import cpu_flags, cpu_model  # noqa: E402

NETWORKS = {"face": ("centerface", CenterFace), "plate": ("plate-yolov8n-pyplatex", PlateDetector)}
PRECISIONS = ("fp32", "bf16", "int8")


def time_network(name: str, precision: str, frame, frames: int, threads: int) -> float:
    """Mean milliseconds per ``detect([frame])`` call after one warm-up."""
    model, detector_class = NETWORKS[name]
    detector = detector_class(model_path(model), input_size=1280, backend="openvino",
                              cpu_precision=precision, cpu_threads=threads)
    detector.detect([frame])
    start = time.perf_counter()
    for _ in range(frames):
        detector.detect([frame])
    return (time.perf_counter() - start) / frames * 1000


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="Frame size WxH (detection size of a 1080p source).")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    frame = make_scene(width, height, 10, seed=7).frame(5)
    results: dict[str, dict[str, float | str]] = {}
    for name in NETWORKS:
        results[name] = {}
        for precision in PRECISIONS:
            try:
                results[name][precision] = round(time_network(name, precision, frame, args.frames, args.threads), 1)
            except Exception as err:  # noqa: BLE001 - a precision this CPU cannot run is a result too
                results[name][precision] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            print(name, precision, results[name][precision], flush=True)
    report = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA"),
              "auto": resolve_precision("auto"), "size": args.size, "threads": args.threads,
              "ms_per_frame": results}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
