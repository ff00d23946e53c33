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
FRAME_BUFFER_PER_DETECTOR = 128 * 2**20
"""Object store bytes of decoded frames waiting for each detection actor: about six batches of eight 720p
RGB frames. The decode actors run ahead of detection only this far (Ray Data backpressure)."""
FRAME_BUFFER_MIN = 256 * 2**20


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
    def frame_buffer_bytes(self) -> int:
        """The detection dataset's object store limit: decoded frames in flight, for all detection actors."""
        return max(FRAME_BUFFER_MIN, self.detect_actors * FRAME_BUFFER_PER_DETECTOR)

    @property
    def uses_gpu(self) -> bool:
        return self.detect_gpus > 0

    def describe(self) -> str:
        where = f"{self.detect_gpus:g} GPU each" if self.uses_gpu else "CPU"
        return (f"{self.decode_actors} decode actor(s), {self.detect_actors} detection actor(s) on {where}, "
                f"render tasks at {self.render_cpus:g} CPU each")


def render_spread(cluster_cpus: float, render_cpus: float, videos: int) -> int:
    """Render slots per video: how many chunks a small run may cut each video into (chunked.chunk_count) so that
    its renders use every CPU; 1 once the run has at least as many videos as the cluster has render slots."""
    slots = int(max(cluster_cpus, 0.0) // render_cpus) if render_cpus > 0 else 1
    return max(1, slots // max(videos, 1))


MIN_ACTOR_CPUS = 0.05
"""The smallest logical CPU share an actor asks for, even on a cluster that has no CPUs yet (autoscaling)."""


def plan_resources(cluster: dict[str, float], config: Config,
                   node_cpus: list[float] | None = None) -> ResourcePlan:
    """Size the pools from ``ray.cluster_resources()``-style totals.

    ``node_cpus``, the CPUs of each alive node, spreads the work: one decode actor at least per node with
    CPUs (Ray Data places pool actors with the SPREAD strategy), and a render task no larger than half
    the biggest node, so that it fits beside that node's actors (two 1-CPU nodes: 0.5).
    """
    cpus = max(float(cluster.get("CPU", 1.0)), 0.0)
    gpus = float(cluster.get("GPU", 0.0))
    knobs = config.resources
    cpu_nodes = [c for c in node_cpus or [] if c > 0]
    biggest = max(cpu_nodes, default=cpus)
    render_cpus = min(knobs.encode_cpus, max(min(cpus, biggest) / 2, 0.25))
    if gpus > 0:
        per_gpu = knobs.gpus_per_detector
        detect_actors = knobs.detect_actors or max(1, min(int(gpus / per_gpu), int(cpus // 2) or 1))
        detect_cpus, detect_gpus = 0.25, per_gpu
    else:
        detect_actors = knobs.detect_actors or max(1, int(cpus // 4))
        detect_cpus, detect_gpus = 0.75, 0.0
    decode_actors = knobs.decode_actors or max(1, int(cpus // 8), len(cpu_nodes))
    decode_cpus = 0.25
    budget = max(cpus - render_cpus, 0.0)
    while decode_actors * decode_cpus + detect_actors * detect_cpus > budget and detect_actors > 1:
        detect_actors -= 1
    while decode_actors * decode_cpus + detect_actors * detect_cpus > budget and decode_actors > 1:
        decode_actors -= 1
    used = decode_actors * decode_cpus + detect_actors * detect_cpus
    if used > budget:  # tiny nodes: shrink the logical shares rather than starve rendering
        scale = budget / used  # never negative: a cluster without CPUs gets the smallest shares
        decode_cpus = max(decode_cpus * scale, MIN_ACTOR_CPUS)
        detect_cpus = max(detect_cpus * scale, MIN_ACTOR_CPUS)
    return ResourcePlan(decode_actors, decode_cpus, detect_actors, detect_cpus, detect_gpus, render_cpus,
                        ingest_cpus=0.25)
