"""Inputs and outputs on an S3-compatible object store: a local moto server stands in for MinIO/on-prem S3.

``python -m anonray run s3://bucket/in [--output s3://bucket/out]`` runs as a subprocess with the endpoint
and credentials in the standard AWS variables; the object store is read through pyarrow.fs, as anonray
does. moto 5.2.1 mis-answers multipart uploads for pyarrow (see ``anonray.store.storage.upload``): every object
written here stays under 10 MiB, which goes up in one PutObject.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_times, decode_frames

from anonray.store import storage
from anonray.store.checksums import sha256_file
from anonray.store.storage import is_uri
from anonray.testing.faults import FAIL_UPLOAD_ENV
from anonray.testing.samples import write_sample_video

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
                             allow_bucket_creation=True, allow_delayed_open=True)  # see the module docstring


def _get(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def _client(env: dict):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def s3_inputs(s3_env, tmp_path_factory):
    """Two clips uploaded under s3://archive/in (plus a text file that is ignored); name -> local copy."""
    client = _client(s3_env)
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


UPLOAD_BREAKS = "cam_c/upload_breaks.mp4"
BROKEN = "cam_d/broken.mp4"


@pytest.fixture(scope="module")
def s3_extra(s3_env, s3_inputs, tmp_path_factory):
    """Under s3://archive/extra: a clip whose output upload a test breaks, and a file that is no video."""
    client = _client(s3_env)
    path = tmp_path_factory.mktemp("s3-extra") / "upload_breaks.mp4"
    write_sample_video(path, format="h264_mp4", frames=20, seed=2)
    client.put_object(Bucket=BUCKET, Key=f"extra/{UPLOAD_BREAKS}", Body=path.read_bytes())
    client.put_object(Bucket=BUCKET, Key=f"extra/{BROKEN}", Body=b"\0garbage" * 1000)
    return {UPLOAD_BREAKS: path}


def _keys(fs: pafs.FileSystem, prefix: str) -> list[str]:
    found = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + len(prefix) + 2:] for i in found if i.type == pafs.FileType.File)


def _local_copy(fs: pafs.FileSystem, rel: str, tmp_path: Path) -> Path:
    local = tmp_path / f"copy-{rel.replace('/', '_')}"
    local.write_bytes(_get(fs, f"{BUCKET}/out/{rel}"))
    return local


def _assert_frame_exact(fs: pafs.FileSystem, rel: str, source: Path, tmp_path: Path) -> None:
    """The output at its key decodes with PyAV to as many frames as the input, at the same times."""
    local = _local_copy(fs, rel, tmp_path)
    src_times, _, src_size, _ = decode_frames(source)
    dst_times, _, dst_size, _ = decode_frames(local)
    assert len(dst_times) == len(src_times) == 20 and dst_size == src_size, rel
    assert_same_times(src_times, dst_times)


@pytest.mark.slow
def test_s3_inputs_to_an_s3_output_upload_failure_and_resume(s3_env, s3_inputs, s3_extra, tmp_path):
    fs = _fs(s3_env)
    config = tmp_path / "config.yaml"
    config.write_text("resources:\n  max_retries: 1\nreview:\n  keep_regions: false\n")
    args = ("run", f"s3://{BUCKET}/in", f"s3://{BUCKET}/extra", "--output", f"s3://{BUCKET}/out", "--config",
            str(config))
    result = _anonray({**s3_env, FAIL_UPLOAD_ENV: "upload_breaks"}, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r": 2 ok, 2 failed, 0 skipped, 1 ignored; 40 frames", result.stdout), result.stdout
    assert "1 x upload_failed" in result.stdout and "1 x not_a_video" in result.stdout
    assert f"tables: s3://{BUCKET}/out/_anonray" in result.stdout
    assert BUCKET not in result.stderr and "cam_" not in result.stderr  # logs name no location, key or path

    keys = _keys(fs, "out")
    run_id = re.search(r"anonray run (\S+):", result.stdout).group(1)
    assert [k for k in keys if not k.startswith("_anonray/")] == sorted(CLIPS)  # no partial or broken output
    assert [k for k in keys if k.startswith("_anonray/")] == [  # no tmp key, no early part, regions deleted
        f"_anonray/manifests/{run_id}.json", f"_anonray/review/{run_id}.html",
        *(f"_anonray/{table}/part-{run_id}.parquet" for table in ("runs", "segments", "videos"))]
    for rel, source in s3_inputs.items():
        _assert_frame_exact(fs, rel, source, tmp_path)

    videos = pq.read_table(f"{BUCKET}/out/_anonray/videos", filesystem=fs).to_pandas().set_index("path")
    assert set(videos.index) == {*CLIPS, UPLOAD_BREAKS, BROKEN}
    assert videos.loc[UPLOAD_BREAKS, "error_class"] == "upload_failed"
    assert videos.loc[UPLOAD_BREAKS, "retries"] == 1  # resubmitted once (resources.max_retries), then failed
    assert "ConnectionResetError" in videos.loc[UPLOAD_BREAKS, "error_message"]
    for rel in CLIPS:
        row = videos.loc[rel]
        assert row.status == "ok" and row.size_bytes_out == fs.get_file_info(f"{BUCKET}/out/{rel}").size
        assert row.sha256_out == sha256_file(_local_copy(fs, rel, tmp_path))
    runs = pq.read_table(f"{BUCKET}/out/_anonray/runs", filesystem=fs).to_pylist()
    assert runs[0]["render_retries"] == 1 and runs[0]["exit_code"] == 1
    assert pq.read_table(f"{BUCKET}/out/_anonray/segments", filesystem=fs).num_rows >= 3
    manifest = json.loads(_get(fs, f"{BUCKET}/out/_anonray/manifests/{run_id}.json"))
    assert manifest["review"]["regions"]["parts_deleted"] == 2 and manifest["review"]["files_sampled"] == 1
    _inputs_unchanged(fs, s3_inputs)

    again = _anonray(s3_env, *args)  # resume: the finished files are skipped, the failed ones tried again
    assert again.returncode == 1, again.stdout + again.stderr
    assert re.search(r": 1 ok, 1 failed, 2 skipped", again.stdout), again.stdout
    _assert_frame_exact(fs, UPLOAD_BREAKS, s3_extra[UPLOAD_BREAKS], tmp_path)
    assert not _keys(fs, "out/_anonray/tmp") and not _keys(fs, "out/_anonray/regions")
    assert len(_keys(fs, "out/_anonray/videos")) == 2  # one part per run
    _inputs_unchanged(fs, s3_inputs)


def test_uri_detection():
    assert is_uri("s3://bucket/in") and is_uri("gs://b/x")
    assert not is_uri("/mnt/archive") and not is_uri("relative/dir") and not is_uri(Path("s3://b"))
    assert not is_uri("file:///mnt/archive") and not is_uri("C:/footage")


@pytest.mark.parametrize("output", ["s3://no-such-bucket/out", "nosuchscheme://bucket/out"])
def test_an_unusable_output_location_is_a_usage_error(s3_env, tmp_path, output):
    result = subprocess.run([sys.executable, "-m", "anonray", "run", str(tmp_path), "--output", output],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=s3_env,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the output location cannot be used" in result.stderr
    assert "no-such-bucket" not in result.stderr  # errors name the kind of failure, never the location
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing local was created (no "s3:" folder)


# ---------------------------------------------------------------- storage.upload, without Ray

def test_upload_to_s3_checks_the_object_and_leaves_nothing_when_it_fails(s3_env, s3_inputs, tmp_path, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, s3_env[name])
    monkeypatch.setattr(storage, "FILESYSTEM_CACHE", {})
    local = tmp_path / "clip.mp4"
    local.write_bytes(os.urandom(300_000))
    fs = _fs(s3_env)
    storage.upload(local, f"s3://{BUCKET}/unit/a/clip.mp4", f"s3://{BUCKET}/unit/_anonray/tmp/x-clip.mp4")
    assert _get(fs, f"{BUCKET}/unit/a/clip.mp4") == local.read_bytes()

    monkeypatch.setenv(FAIL_UPLOAD_ENV, "clip")  # the connection drops once the upload has begun
    with pytest.raises(storage.UploadError, match=r"upload failed \(ConnectionResetError\)"):
        storage.upload(local, f"s3://{BUCKET}/unit/b/clip.mp4", f"s3://{BUCKET}/unit/_anonray/tmp/y-clip.mp4")
    assert _keys(fs, "unit") == ["a/clip.mp4"]  # what pyarrow published on close was deleted again
    monkeypatch.delenv(FAIL_UPLOAD_ENV)
    with pytest.raises(storage.UploadError, match="NO_SUCH_BUCKET") as failure:
        storage.upload(local, "s3://no-such-bucket/a/clip.mp4", "s3://no-such-bucket/tmp/clip.mp4")
    assert "no-such-bucket" not in str(failure.value) and "clip" not in str(failure.value)


def test_upload_elsewhere_goes_through_a_temporary_key(tmp_path, monkeypatch):
    """A store that may show a file while it is written (here fsspec's memory://): a temporary key, then a move."""
    local = tmp_path / "clip.mp4"
    local.write_bytes(os.urandom(50_000))
    storage.upload(local, "memory://anonray-unit/out/a/clip.mp4", "memory://anonray-unit/out/_anonray/tmp/1-clip.mp4")
    assert storage.list_tree("memory://anonray-unit/out").relative_paths == ["a/clip.mp4"]
    assert storage.list_tree("memory://anonray-unit/out").sizes == {"a/clip.mp4": 50_000}  # sizes the waves
    monkeypatch.setenv(FAIL_UPLOAD_ENV, "clip")
    with pytest.raises(storage.UploadError):
        storage.upload(local, "memory://anonray-unit/out/b/clip.mp4", "memory://anonray-unit/out/_anonray/tmp/2-clip.mp4")
    assert storage.list_tree("memory://anonray-unit/out").relative_paths == ["a/clip.mp4"]


def test_an_etag_of_another_form_is_checked_by_reading_the_object_back(s3_env, s3_inputs, tmp_path, monkeypatch):
    """SSE-KMS and other ETags that are no MD5 of the bytes: the object is read back and compared by sha256."""
    fs = _fs(s3_env)
    local = tmp_path / "clip.mp4"
    local.write_bytes(b"frames" * 1000)
    with fs.open_output_stream(f"{BUCKET}/unit/etag/clip.mp4") as out:
        out.write(local.read_bytes())
    storage.verify_upload(fs, f"{BUCKET}/unit/etag/clip.mp4", local, {"an-etag-of-another-form"})
    other = tmp_path / "other.mp4"
    other.write_bytes(b"FRAMES" * 1000)  # the same size, other bytes
    with pytest.raises(storage.UploadError, match="sha256 differs"):
        storage.verify_upload(fs, f"{BUCKET}/unit/etag/clip.mp4", other, {"an-etag-of-another-form"})
    with pytest.raises(storage.UploadError, match="the object has 6000 bytes, the file 5"):
        other.write_bytes(b"short")
        storage.verify_upload(fs, f"{BUCKET}/unit/etag/clip.mp4", other, set())


def test_the_etag_expected_of_a_multipart_upload_is_the_one_s3_gives(s3_env, s3_inputs, tmp_path):
    """The multipart upload itself is boto3's here (pyarrow's fails against moto, see storage.upload)."""
    local = tmp_path / "big.mp4"
    local.write_bytes(os.urandom(storage.PART_SIZE + 12345))
    expected = storage.write_object(storage.resolve("memory://anonray-unit/etag/big.mp4")[0], local,
                              "anonray-unit/etag/big.mp4")
    client, key = _client(s3_env), "unit/multipart/big.mp4"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    data, parts = local.read_bytes(), []
    for number, start in enumerate(range(0, len(data), storage.PART_SIZE), 1):
        part = client.upload_part(Bucket=BUCKET, Key=key, PartNumber=number, UploadId=upload_id,
                                  Body=data[start:start + storage.PART_SIZE])
        parts.append({"ETag": part["ETag"], "PartNumber": number})
    done = client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})
    assert done["ETag"].strip('"') in expected and done["ETag"].endswith('-2"')


@pytest.mark.parametrize(("fmt", "suffix"), [("mp4", ".mp4"), ("matroska", ".mkv"), ("mpegts", ".ts")])
def test_a_chunk_task_reads_only_by_ranges_and_renders_what_a_local_copy_gives(s3_env, s3_inputs, tmp_path,
                                                                                 monkeypatch, fmt, suffix):
    """A chunk of an S3 input is rendered from range reads (no local copy of the object is made): the frames
    decoded that way are the local file's, pixel for pixel, and the chunks carry the same frames and
    timestamps; when range reads fail the task renders from a local copy; a changed object is refused."""
    import dataclasses

    from test_chunked import CHUNK_SECONDS, config, detected, write_source

    from anonray.decode.segment import decode_segment
    from anonray.render.codec.chunked import plan_chunks
    from anonray.render.video import RenderError, mask_plan, render_chunk

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3_env[key])
    src = write_source(tmp_path / f"clip{suffix}", fmt)
    client = _client(s3_env)
    key = f"chunks/clip{suffix}"
    client.put_object(Bucket=BUCKET, Key=key, Body=src.read_bytes())
    uri = f"s3://{BUCKET}/{key}"
    video = detected(src)
    local_info = video.info
    cfg = config(CHUNK_SECONDS)
    plan = mask_plan(video, cfg)[0]
    container = "mp4" if fmt == "mp4" else fmt
    local_jobs = plan_chunks(video, plan, cfg, container)
    assert len(local_jobs) == 3
    from_file = [render_chunk(job, cfg, src) for job in local_jobs]

    video.info = dataclasses.replace(local_info, source_path=uri, mtime_ns=storage.stat(uri).mtime_ns)
    jobs = plan_chunks(video, plan, cfg, container)
    staged = storage.staged
    monkeypatch.setattr(storage, "staged", lambda *a: pytest.fail("a local copy of the object was made"))
    segment = video.segments[len(video.segments) // 2].segment
    by_ranges = list(decode_segment(uri, video.info, segment))
    from_local = list(decode_segment(src, local_info, segment))
    assert len(by_ranges) == len(from_local) == segment.frame_count
    assert all(a[:2] == b[:2] and np.array_equal(a[2], b[2]) for a, b in zip(by_ranges, from_local, strict=True))
    for (packets, payload), (file_packets, _), job in zip([render_chunk(job, cfg) for job in jobs], from_file, jobs,
                                                          strict=True):
        assert packets.frames == packets.frames_in == job.frames.frame_count and payload.size > 0
        assert np.array_equal(np.sort(packets.pts), np.sort(file_packets.pts))

    monkeypatch.setattr(storage, "staged", staged)
    monkeypatch.setattr(storage, "open_ranged", lambda *a: (_ for _ in ()).throw(storage.StorageError("cut")))
    fallback = render_chunk(jobs[1], cfg)  # range reads fail: rendered from a local copy
    assert np.array_equal(np.sort(fallback[0].pts), np.sort(from_file[1][0].pts))

    client.put_object(Bucket=BUCKET, Key=key, Body=src.read_bytes() + b"\0")
    with pytest.raises(RenderError) as err:
        render_chunk(jobs[0], cfg)
    assert err.value.error_class == "input_changed"
