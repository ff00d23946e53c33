"""Inputs on an S3-compatible object store: a local moto server stands in for MinIO/on-prem S3.

``python -m anonray run s3://bucket/in`` runs as a subprocess with the endpoint and credentials in the
standard AWS variables; the object store is read through pyarrow.fs, as anonray does.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_times, decode_frames

from anonray.samples import write_sample_video
from anonray.storage import is_uri

BUCKET = "archive"
CLIPS = {"cam_a/harbour_07.mp4": 0, "cam_b/gate_02.mp4": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on a free port (stopped by its pid) and the environment that points at it."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if server is None:
        pytest.skip("moto_server is not installed (pip install -e .[test])")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _fs(env: dict) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                             endpoint_override=env["AWS_ENDPOINT_URL"].split("://", 1)[1],
                             allow_bucket_creation=True)


def _get(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


@pytest.fixture(scope="module")
def s3_inputs(s3_env, tmp_path_factory):
    """Two clips uploaded under s3://archive/in (plus a text file that is ignored); name -> bytes."""
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    local = tmp_path_factory.mktemp("s3-clips")
    uploaded = {}
    for rel, seed in CLIPS.items():
        path = local / rel.replace("/", "_")
        write_sample_video(path, format="h264_mp4", frames=20, seed=seed)
        client.put_object(Bucket=BUCKET, Key=f"in/{rel}", Body=path.read_bytes())
        uploaded[rel] = path
    client.put_object(Bucket=BUCKET, Key="in/notes.txt", Body=b"not a video")
    return uploaded


def _anonray(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonray", *args], capture_output=True, text=True, env=env,
                          timeout=400, stdin=subprocess.DEVNULL)


def _inputs_unchanged(fs: pafs.FileSystem, uploaded: dict[str, Path]) -> None:
    for rel, path in uploaded.items():
        assert _get(fs, f"{BUCKET}/in/{rel}") == path.read_bytes(), rel


@pytest.mark.slow
def test_s3_inputs_to_a_local_output_and_resume(s3_env, s3_inputs, tmp_path):
    fs = _fs(s3_env)
    out = tmp_path / "out"
    uri = f"s3://{BUCKET}/in"
    result = _anonray(s3_env, "run", uri, "--output", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r": 2 ok, 0 failed, 0 skipped, 1 ignored; 40 frames", result.stdout), result.stdout
    assert uri not in result.stderr and BUCKET not in result.stderr  # logs never name the storage location
    for rel, path in s3_inputs.items():
        output = out / rel
        assert output.is_file(), rel
        src_times, _, src_size, _ = decode_frames(path)
        dst_times, _, dst_size, _ = decode_frames(output)
        assert len(dst_times) == len(src_times) == 20 and dst_size == src_size
        assert_same_times(src_times, dst_times)
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    assert sorted(videos.path) == sorted(CLIPS) and set(videos.status) == {"ok"}
    _inputs_unchanged(fs, s3_inputs)
    assert not fs.get_file_info(pafs.FileSelector(f"{BUCKET}/in/_anonray", allow_not_found=True))

    again = _anonray(s3_env, "run", uri, "--output", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r": 0 ok, 0 failed, 2 skipped", again.stdout), again.stdout
    _inputs_unchanged(fs, s3_inputs)


def test_uri_detection():
    assert is_uri("s3://bucket/in") and is_uri("gs://b/x")
    assert not is_uri("/mnt/archive") and not is_uri("relative/dir") and not is_uri(Path("s3://b"))
    assert not is_uri("file:///mnt/archive") and not is_uri("C:/footage")


def test_an_object_store_output_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "anonray", "run", str(tmp_path), "--output", "s3://bucket/out"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not supported yet" in result.stderr
    assert not (Path.cwd() / "s3:").exists()
