"""The deployment files under cluster/: valid for Ray and KubeRay, consistent with what the pipeline asks for.

Fast and offline: no cluster is started, no image is built.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
ANONRAY = Path(__file__).resolve().parents[1] / "anonray"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


# ---------------------------------------------------------------- on-prem launcher config

def _ray_validate(config: dict) -> dict:
    """What `ray up` does before launching: fill in the local provider's defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_onprem_config_passes_ray_validation():
    config = _load("onprem.yaml")
    prepared = _ray_validate(config)
    assert prepared["provider"]["type"] == "local"
    assert prepared["provider"]["head_ip"] and prepared["provider"]["worker_ips"]
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"])


@pytest.mark.parametrize("breakage", ["unknown_key", "commands_not_a_list", "no_worker_ips", "bad_docker_key"])
def test_broken_onprem_config_fails_ray_validation(breakage):
    config = _load("onprem.yaml")
    if breakage == "unknown_key":
        config["max_wrokers"] = 2
    elif breakage == "commands_not_a_list":
        config["worker_start_ray_commands"] = "ray start --address=$RAY_HEAD_IP:6379"
    elif breakage == "no_worker_ips":
        del config["provider"]["worker_ips"]
    else:
        config["docker"]["gpus"] = "all"
    import click
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, click.ClickException)):
        _ray_validate(config)


def test_onprem_starts_ray_with_token_auth_everywhere():
    config = _load("onprem.yaml")
    run_options = " ".join(config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start, key
        for command in start:
            assert "RAY_AUTH_MODE=token" in command
            assert "RAY_AUTH_TOKEN_PATH=" in command or "RAY_AUTH_TOKEN=" in command
            assert "--temp-dir=" in command and "--object-spilling-directory=" in command
    # The token file reaches every node from the operator's machine, not from the repository.
    token_dir = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)/token", run_options).group(1)
    assert token_dir in config["file_mounts"]
    assert not config["file_mounts"][token_dir].startswith((".", "cluster"))
    assert "--gpus all" in config["docker"]["worker_run_options"]


# ---------------------------------------------------------------- KubeRay manifest

def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def test_kuberay_required_fields():
    rc = _load("kuberay-raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["kind"] == "RayCluster"
    assert rc["metadata"]["name"]
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    assert _containers(head) and all(c.get("image") for c in _containers(head))
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 2
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names)
    for group in groups:
        for field in ("groupName", "minReplicas", "maxReplicas", "replicas", "rayStartParams"):
            assert field in group, (group.get("groupName"), field)
        assert group["minReplicas"] == 0
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert _containers(group) and all(c.get("image") for c in _containers(group))


def test_kuberay_token_auth_from_a_secret_and_shared_storage():
    rc = _load("kuberay-raycluster.yaml")
    spec = rc["spec"]
    env_lists = [_env(spec["autoscalerOptions"])]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    env_lists += [_env(c) for g in groups for c in _containers(g)]
    for env in env_lists:
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        assert "value" not in env["RAY_AUTH_TOKEN"]  # never the token itself in the manifest
    for group in groups:
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        for container in _containers(group):
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/mnt/archive"].get("readOnly") is True
            assert "/mnt/anon" in mounts
            for path in ("/mnt/archive", "/mnt/anon"):
                assert mounts[path]["name"] in volumes
            # Ray's session and spill folder: pod-local, never the shared storage.
            assert "emptyDir" in volumes[mounts["/tmp/ray"]["name"]]


def _requested_resources() -> set[str]:
    """The Ray resource names the pipeline's tasks and actors ask for (read from its source)."""
    names = ("runtime/driver.py", "runtime/tasks.py", "runtime/datasets.py", "runtime/renders.py",
             "runtime/resources.py", "runtime/actors.py")
    source = "\n".join((ANONRAY / name).read_text() for name in names)
    names = set()
    for keyword, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        if re.search(rf"\b{keyword}\s*=", source):
            names.add(resource)
    for match in re.finditer(r"resources\s*=\s*\{([^}]*)\}", source):  # custom resources, if any appear
        names.update(re.findall(r"[\"']([^\"']+)[\"']\s*:", match.group(1)))
    return names


def _provided_resources(group: dict) -> set[str]:
    params = group["rayStartParams"]
    provided = {"memory"}  # Ray derives `memory` from the container's memory limit
    limits = [c.get("resources", {}).get("limits", {}) for c in _containers(group)]
    if float(params.get("num-cpus", "1")) > 0:
        provided.add("CPU")
    if float(params.get("num-gpus", "0")) > 0 or any("nvidia.com/gpu" in lim for lim in limits):
        provided.add("GPU")
    if "resources" in params:
        provided.update(re.findall(r"[\"']([^\"']+)[\"']\s*:", params["resources"]))
    return provided


def test_kuberay_groups_provide_every_resource_the_pipeline_requests():
    from anonray.config import validate_config
    from anonray.runtime.resources import DETECT_ACTOR_MEMORY, plan_resources

    requested = _requested_resources()
    assert {"CPU", "GPU"} <= requested
    groups = _load("kuberay-raycluster.yaml")["spec"]["workerGroupSpecs"]
    provided = set().union(*(_provided_resources(g) for g in groups))
    assert requested <= provided, requested - provided

    gpu_groups = [g for g in groups if "GPU" in _provided_resources(g)]
    cpu_groups = [g for g in groups if "GPU" not in _provided_resources(g)]
    assert gpu_groups and cpu_groups
    for group in gpu_groups:
        params = group["rayStartParams"]
        gpus = float(params["num-gpus"])
        limits = _containers(group)[0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) == gpus
        # The plan for one such node: fractional detectors fit, with their memory and CPU shares.
        plan = plan_resources({"CPU": float(params["num-cpus"]), "GPU": gpus}, validate_config({}))
        assert 0 < plan.detect_gpus < 1 and plan.detect_actors >= 1
        assert plan.detect_actors * DETECT_ACTOR_MEMORY < _bytes(limits["memory"])
        assert plan.decode_actors * plan.decode_cpus + plan.detect_actors * plan.detect_cpus + plan.render_cpus \
            <= float(params["num-cpus"])


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


# ---------------------------------------------------------------- the image

def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (CLUSTER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            instruction, _, args = current.partition(" ")
            lines.append((instruction.upper(), args.strip()))
            current = ""
    return lines


def test_dockerfile_pulls_models_at_build_time_and_runs_offline():
    instructions = _dockerfile_instructions()
    kinds = [k for k, _ in instructions]
    assert kinds[0] in ("FROM", "ARG")
    runs = [a for k, a in instructions if k == "RUN"]
    envs = " ".join(a for k, a in instructions if k == "ENV")
    pull = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "anonray models pull" in a)
    cache_set = next(i for i, (k, a) in enumerate(instructions) if k == "ENV" and "ANONRAY_CACHE=" in a)
    assert cache_set < pull  # the models land where the runtime looks for them
    assert any("pip install" in r and "-e /opt/anonray" in r or "pip install ." in r for r in runs)
    assert any("torch==" in r and "--index-url" in r for r in runs)  # the CUDA build of torch
    for var in ("HF_HUB_OFFLINE=1", "YOLO_OFFLINE=1", "PIP_NO_INDEX=1"):
        assert var in envs
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    for kind, args in instructions:
        if kind in ("CMD", "ENTRYPOINT"):
            assert not re.search(r"\b(pip|curl|wget|models pull|apt-get)\b", args), args


def test_image_is_the_same_everywhere():
    config = _load("onprem.yaml")
    rc = _load("kuberay-raycluster.yaml")["spec"]
    images = {config["docker"]["image"]}
    images |= {c["image"] for g in [rc["headGroupSpec"], *rc["workerGroupSpecs"]] for c in _containers(g)}
    assert len(images) == 1, images
    base = next(a for k, a in _dockerfile_instructions() if k == "FROM")
    import ray

    assert ray.__version__ in base and ray.__version__ == rc["rayVersion"]


def test_runbook_covers_the_operations():
    text = (CLUSTER / "README.md").read_text()
    for needle in ("ray up cluster/onprem.yaml", "kubectl apply -f cluster/kuberay-raycluster.yaml",
                   "RAY_AUTH_MODE=token", "ray job submit --address http://HEAD:8265 --working-dir .",
                   "ray job logs", "--follow", "Resume", "Scale", "--temp-dir"):
        assert needle in text, needle
