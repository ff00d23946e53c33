"""Actor pool sizes and per-task resources, derived from what the cluster has.

Pure function of the cluster's resource totals and the config, so it is tested without Ray. The plan
keeps CPUs free for rendering (decode at full size + mask + encode: the floor of the whole job) and
never asks for more than the cluster has, so the pipeline cannot deadlock on a 2-CPU machine or on
two 1-CPU nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from anonray.config import Config

DETECT_ACTOR_MEMORY = int(2.5 * 2**30)
"""Bytes a detection actor holds (both models, torch, batches): measured 1.8 GiB average, 2.3 peak."""


@dataclass(frozen=True)
class ResourcePlan:
    decode_actors: int
    decode_cpus: float
    detect_actors: int
    detect_cpus: float
    detect_gpus: float
    render_cpus: float
    ingest_cpus: float
    detect_memory: int = DETECT_ACTOR_MEMORY

    @property
    def uses_gpu(self) -> bool:
        return self.detect_gpus > 0

    def describe(self) -> str:
        where = f"{self.detect_gpus:g} GPU each" if self.uses_gpu else "CPU"
        return (f"{self.decode_actors} decode actor(s), {self.detect_actors} detection actor(s) on {where}, "
                f"render tasks at {self.render_cpus:g} CPU each")


def plan_resources(cluster: dict[str, float], config: Config) -> ResourcePlan:
    """Size the pools from ``ray.cluster_resources()``-style totals."""
    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0))
    knobs = config.resources
    render_cpus = min(knobs.encode_cpus, max(cpus / 2, 0.25))
    if gpus > 0:
        per_gpu = knobs.gpus_per_detector
        detect_actors = knobs.detect_actors or max(1, min(int(gpus / per_gpu), int(cpus // 2) or 1))
        detect_cpus, detect_gpus = 0.25, per_gpu
    else:
        detect_actors = knobs.detect_actors or max(1, int(cpus // 4))
        detect_cpus, detect_gpus = 0.75, 0.0
    decode_actors = knobs.decode_actors or max(1, int(cpus // 8))
    decode_cpus = 0.25
    budget = cpus - render_cpus
    while decode_actors * decode_cpus + detect_actors * detect_cpus > budget and detect_actors > 1:
        detect_actors -= 1
    while decode_actors * decode_cpus + detect_actors * detect_cpus > budget and decode_actors > 1:
        decode_actors -= 1
    used = decode_actors * decode_cpus + detect_actors * detect_cpus
    if used > budget:  # tiny nodes: shrink the logical shares rather than starve rendering
        decode_cpus, detect_cpus = decode_cpus * budget / used, detect_cpus * budget / used
    return ResourcePlan(decode_actors, decode_cpus, detect_actors, detect_cpus, detect_gpus, render_cpus,
                        ingest_cpus=0.25)
