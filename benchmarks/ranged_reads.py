"""Bytes a chunk task fetches when it reads an object-store input by ranges (storage.open_ranged).

    python benchmarks/ranged_reads.py [--input CLIP] [--frames 500] [--chunk-seconds 5] [--read-kib 1024 256]

CLIP (default ``../shared/data/videos/street_faces_1080p.mp4``) is looped to ``--frames`` frames
(``throughput.loop_clip``) and put on a local moto S3 server (``moto_server``, from the test extra). Its
chunks (``encoder.chunk_seconds``) are rendered by ``render.render_chunk`` from the object, one box masked on
every frame, with every read counted, once per ``--read-kib`` size of FFmpeg's I/O buffer. Prints, per chunk,
the bytes and requests fetched against the object's size, and the render's wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonray.config import validate_config  # noqa: E402
from anonray.render.codec.chunked import plan_chunks  # noqa: E402
from anonray.render.video import mask_plan, render_chunk  # noqa: E402
from anonray.store import storage  # noqa: E402
from anonray.testing.detections import analysed_without_detections  # noqa: E402
from anonray.types import Detections  # noqa: E402
from benchmarks.throughput import loop_clip  # noqa: E402

BUCKET = "ranged-reads"


class _CountingReader:
    """A pyarrow file that counts what is read through it."""

    def __init__(self, inner) -> None:
        self.inner, self.bytes, self.reads = inner, 0, 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.bytes += len(data)
        self.reads += 1
        return data

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _moto(port: int) -> subprocess.Popen:
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if server is None:
        raise SystemExit("moto_server is not installed (pip install -e .[test])")
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.2)


def _video(clip: Path):
    """The clip as detection hands it to render, with one box on every frame."""
    video = analysed_without_detections(clip, clip.name)
    n = video.info.frame_count
    video.detections = Detections(np.arange(n), np.tile(np.asarray([100, 100, 300, 300], np.float32), (n, 1)),
                                  np.full(n, 0.9, np.float32), np.zeros(n, np.int64))
    return video


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("../shared/data/videos/street_faces_1080p.mp4"))
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--read-kib", type=int, nargs="+", default=[storage.RANGE_READ_BYTES // 1024])
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    server = _moto(port)
    try:
        import boto3

        with tempfile.TemporaryDirectory(prefix="anonray-ranged-") as tmp:
            clip = Path(tmp) / f"looped{args.input.suffix}"
            loop_clip(args.input, clip, args.frames)
            client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key=clip.name, Body=clip.read_bytes())
            uri = f"s3://{BUCKET}/{clip.name}"
            video = _video(clip)
            config = validate_config({"encoder": {"chunk_seconds": args.chunk_seconds}})
            plan = mask_plan(video, config)[0]
            video.info = dataclasses.replace(video.info, source_path=uri, mtime_ns=storage.stat(uri).mtime_ns)
            jobs = plan_chunks(video, plan, config, "mp4")
            size = clip.stat().st_size
            opened: list[_CountingReader] = []
            plain_open = storage.open_ranged
            storage.open_ranged = lambda u: opened.append(_CountingReader(plain_open(u))) or opened[-1]
            print("| read size | chunk | frames | fetched MiB (object MiB) | requests | render s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for kib in args.read_kib:
                storage.RANGE_READ_BYTES = kib * 1024
                for job in jobs:
                    opened.clear()
                    started = time.perf_counter()
                    render_chunk(job, config)
                    print(f"| {kib} KiB | {job.index} | {job.frames.frame_count} | "
                          f"{sum(r.bytes for r in opened) / 2**20:.1f} ({size / 2**20:.1f}) | "
                          f"{sum(r.reads for r in opened)} | {time.perf_counter() - started:.1f} |")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
