"""Actor pool sizing never asks for more than the cluster has and keeps room for rendering."""

import pytest

from anonray.config import Config
from anonray.resources import plan_resources


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
