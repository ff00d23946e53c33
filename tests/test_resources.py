"""Actor pool sizing never asks for more than the cluster has and keeps room for rendering."""

import pytest

from anonray.config import Config
from anonray.runtime.resources import FRAME_BUFFER_MIN, FRAME_BUFFER_PER_DETECTOR, plan_resources, render_spread


@pytest.mark.parametrize(
    "cluster",
    [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}, {"CPU": 16.0, "GPU": 1.0},
     {"CPU": 64.0, "GPU": 8.0}, {"CPU": 8.0}],
)
def test_pools_fit_beside_one_render_task(cluster):
    plan = plan_resources(cluster, Config())
    ray_data_cpus = plan.decode_actors * plan.decode_cpus + plan.detect_actors * plan.detect_cpus
    assert ray_data_cpus + plan.render_cpus <= cluster["CPU"] + 1e-9
    assert plan.detect_actors * plan.detect_gpus <= cluster.get("GPU", 0.0) + 1e-9
    assert plan.decode_actors >= 1 and plan.detect_actors >= 1


def test_gpu_detectors_share_gpus_fractionally():
    plan = plan_resources({"CPU": 16.0, "GPU": 1.0}, Config())
    assert plan.uses_gpu and plan.detect_gpus == 0.25 and plan.detect_actors == 4


def test_cpu_fallback_without_gpus():
    plan = plan_resources({"CPU": 2.0}, Config())
    assert not plan.uses_gpu and plan.detect_gpus == 0.0


def test_two_one_cpu_nodes_get_a_decode_actor_each_and_room_to_render():
    plan = plan_resources({"CPU": 2.0}, Config(), node_cpus=[1.0, 1.0])
    assert plan.decode_actors == 2 and plan.detect_actors == 1
    # one node: a decode actor and the detector; the other: a decode actor, a render task and an ingest task
    assert plan.decode_cpus + plan.detect_cpus <= 1.0 + 1e-9
    assert plan.decode_cpus + plan.render_cpus + plan.ingest_cpus <= 1.0 + 1e-9
    assert plan_resources({"CPU": 2.0}, Config(), node_cpus=[2.0]) == plan_resources({"CPU": 2.0}, Config())


@pytest.mark.parametrize("cpus", [0.0, -1.0])
def test_no_cpus_never_gives_negative_shares(cpus):
    plan = plan_resources({"CPU": cpus}, Config())
    assert plan.decode_cpus > 0 and plan.detect_cpus > 0 and plan.render_cpus > 0
    assert plan.decode_actors >= 1 and plan.detect_actors >= 1


def test_render_spread() -> None:
    """Render slots per video: a small run's videos may be cut so that every slot encodes."""
    assert render_spread(2.0, 1.0, 1) == 2  # the throughput benchmark: one video on 2 cores
    assert render_spread(16.0, 1.0, 16) == 1 and render_spread(16.0, 1.0, 1000) == 1
    assert render_spread(16.0, 1.0, 3) == 5 and render_spread(8.0, 0.5, 2) == 8
    assert render_spread(0.0, 1.0, 1) == 1 and render_spread(4.0, 1.0, 0) == 4  # autoscaling from zero; no videos


def test_frames_in_flight_scale_with_the_detection_actors():
    assert plan_resources({"CPU": 2.0}, Config()).frame_buffer_bytes == FRAME_BUFFER_MIN
    big = plan_resources({"CPU": 64.0, "GPU": 8.0}, Config())
    assert big.detect_actors == 32 and big.frame_buffer_bytes == 32 * FRAME_BUFFER_PER_DETECTOR
