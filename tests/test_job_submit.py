"""`ray job submit` against a real two-node Ray cluster on this machine, with token authentication on.

Starts a head (`ray start --head --num-cpus=1 --num-gpus=0`) and a second node (`ray start --address ...
--num-cpus=1`) from the project's venv with `RAY_AUTH_MODE=token` and a random token, submits
`python -m anonray run ...` over HTTP with the repository as `--working-dir` (as cluster/README.md does),
follows its logs, and checks the outputs and tables. The cluster is stopped by the process ids of its
processes (found by this test's own temp dir), never with `ray stop`, which would stop every Ray on the
machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_times, decode_frames

from anonray.ingest.probe import probe
from anonray.render.outputs import output_relative_path
from anonray.testing.samples import write_sample_video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
JOB_TIMEOUT_S = 600
CLIPS = ["alpha-private-name.mp4", "bravo-private-name.mp4", "charlie-private-name.mp4"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _base_env() -> dict[str, str]:
    """This process's environment without Ray/anonray settings a test may have left, venv first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "ANONRAY_FAULT", "ANONRAY_DENY")) and k != "PYTHONPATH"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process whose command line names ``temp_dir`` (GCS, raylets, dashboard, agents, workers), and
    their descendants (the job's driver)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in arg for arg in proc.info["cmdline"] or []):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in proc.children(recursive=True)})
    found.pop(os.getpid(), None)
    return list(found.values())


def _stop(temp_dir: str) -> None:
    procs = _cluster_processes(temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


def _raylet_pids(temp_dir: str) -> list[int]:
    pids = []
    for proc in _cluster_processes(temp_dir):
        try:
            if Path(proc.exe()).name == "raylet":
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return pids


def _alive_nodes(dashboard: str, token: str) -> int:
    req = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
    return sum(1 for n in body["data"]["result"]["result"] if n["state"] == "ALIVE")


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="arjob", dir="/tmp")  # short: Ray's unix socket paths stay under 107 bytes
    token = secrets.token_hex(32)
    env = {**_base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    gcs, dash, *p = _free_ports(15)
    common = ["--num-gpus=0", f"--temp-dir={temp_dir}", "--object-store-memory=200000000", "--disable-usage-stats"]
    head = [RAY, "start", "--head", "--num-cpus=1", f"--port={gcs}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--node-ip-address=127.0.0.1",
            f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}", f"--runtime-env-agent-port={p[4]}",
            f"--metrics-export-port={p[5]}", f"--ray-client-server-port={p[6]}", *common]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
              f"--node-manager-port={p[7]}", f"--object-manager-port={p[8]}",
              f"--dashboard-agent-listen-port={p[9]}", f"--dashboard-agent-grpc-port={p[10]}",
              f"--runtime-env-agent-port={p[11]}", f"--metrics-export-port={p[12]}", *common]
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        for cmd in (head, worker):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 120
        while True:
            try:
                if _alive_nodes(dashboard, token) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the two nodes did not both come up"
            time.sleep(1)
        raylets = _raylet_pids(temp_dir)
        assert len(raylets) == 2, raylets
        yield {"env": env, "dashboard": dashboard, "temp_dir": temp_dir, "token": token, "raylets": raylets}
    finally:
        _stop(temp_dir)
        leftover = [p.pid for p in _cluster_processes(temp_dir)]
        for _ in range(3):  # a dying process may still write a log line
            shutil.rmtree(temp_dir, ignore_errors=True)
            time.sleep(0.5)
        assert not leftover, f"cluster processes still running: {leftover}"


def _ray_job(cluster: dict, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    command, *rest = args
    return subprocess.run([RAY, "job", command, "--address", cluster["dashboard"], *rest], env=env or cluster["env"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def job(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobsubmit")
    inputs, out = root / "in", root / "out"
    inputs.mkdir()
    for seed, name in enumerate(CLIPS):
        write_sample_video(inputs / name, frames=30 + 10 * seed, seed=seed)
    cfg = root / "cfg.yaml"
    cfg.write_text("mask:\n  style: solid\n  color: ff00ff\nsegment:\n  target_seconds: 0.5\n")
    job_id = f"anonray-{uuid.uuid4().hex[:8]}"
    runtime_env = {"excludes": [".git/", "benchmarks/", "notebooks/", "tests/"]}
    t0 = time.monotonic()
    submit = _ray_job(cluster, "submit", "--submission-id", job_id, "--no-wait", "--working-dir", str(REPO),
                      "--runtime-env-json", json.dumps(runtime_env), "--",
                      "python", "-m", "anonray", "run", str(inputs), "--output", str(out), "--config", str(cfg))
    assert submit.returncode == 0, submit.stdout + submit.stderr
    logs = _ray_job(cluster, "logs", "--follow", job_id, timeout=JOB_TIMEOUT_S)
    status = _ray_job(cluster, "status", job_id)
    req = urllib.request.Request(f"{cluster['dashboard']}/api/jobs/{job_id}",
                                 headers={"Authorization": f"Bearer {cluster['token']}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        info = json.load(resp)
    return {"inputs": inputs, "out": out, "id": job_id, "submit": submit, "logs": logs.stdout + logs.stderr,
            "status": status.stdout + status.stderr, "info": info, "seconds": time.monotonic() - t0}


def test_job_succeeds_with_progress_in_logs(job):
    assert job["info"]["status"] == "SUCCEEDED", job["info"].get("message", "") + job["logs"][-4000:]
    assert f"Job '{job['id']}' succeeded" in job["status"]
    assert "progress:" in job["logs"], job["logs"][-4000:]
    assert "1 decode actor" not in job["logs"]  # two nodes: at least one decode actor each
    for name in CLIPS:  # logs name videos by id, never by path
        assert Path(name).stem not in job["logs"]


def test_outputs_are_frame_exact(job):
    for name in CLIPS:
        src = job["inputs"] / name
        info, _ = probe(src, name)
        dst = job["out"] / output_relative_path(name, info, "keep")
        src_times, _, src_size, _ = decode_frames(src)
        dst_times, _, dst_size, _ = decode_frames(dst)
        assert dst_size == src_size
        assert len(dst_times) == len(src_times) == info.frame_count
        assert_same_times(src_times, dst_times)
    videos = pq.read_table(job["out"] / "_anonray" / "videos").to_pandas()
    assert sorted(videos.status) == ["ok"] * len(CLIPS)
    assert (videos.frames_in == videos.frames_out).all()


def test_work_spreads_over_both_nodes(job):
    segments = pq.read_table(job["out"] / "_anonray" / "segments").to_pandas()
    nodes = set(segments.decode_node_id) | set(segments.detect_node_id)
    nodes.discard("")
    assert len(nodes) >= 2, nodes
    runs = pq.read_table(job["out"] / "_anonray" / "runs").to_pandas()
    assert runs.cluster_cpus.iloc[0] == 2.0


def test_working_dir_upload_stays_small(job, cluster):
    found = list(Path(cluster["temp_dir"]).glob("session_*/runtime_resources/working_dir_files/*"))
    packages = [p for p in found if p.is_dir()]  # the unpacked package (beside it: Ray's lock/zip files)
    assert packages, f"no working_dir package found: {found}"
    for package in packages:
        files = [p for p in package.rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) < 5 * 2**20
        assert not any(part in {".venv", ".git"} or part.endswith(".egg-info")
                       for p in files for part in p.relative_to(package).parts[:1])
        assert (package / "anonray" / "runtime" / "driver.py").is_file()


@pytest.mark.parametrize("auth", ["none", "wrong"])
def test_submission_without_the_token_is_rejected(cluster, job, auth):
    env = {**_base_env(), "RAY_AUTH_MODE": "disabled"} if auth == "none" else \
        {**_base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env["HOME"] = str(Path(cluster["temp_dir"]))  # no ~/.ray/auth_token to fall back on
    denied = _ray_job(cluster, "submit", "--no-wait", "--", "echo", "not allowed", env=env)
    assert denied.returncode != 0
    text = (denied.stdout + denied.stderr).lower()
    assert any(word in text for word in ("401", "403", "unauthorized", "authenticat", "token")), text[-2000:]
    listed = _ray_job(cluster, "list")
    assert listed.returncode == 0, listed.stderr
    assert "not allowed" not in listed.stdout
