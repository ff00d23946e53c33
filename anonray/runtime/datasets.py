"""The streaming part of a run as a Ray Data chain: segment rows -> decode actors (CPU) -> detection actors
(fractional GPU, or CPU) -> rows with boxes for the driver's collector."""

from __future__ import annotations

import logging
import warnings

import ray

from anonray.config import Config
from anonray.frame_rows import SegmentRow
from anonray.runtime.actors import FrameDetectorActor, SegmentDecoder
from anonray.runtime.resources import ResourcePlan
from anonray.types import Segment, VideoInfo


def configure_ray_data() -> None:
    """Quiet, unordered streaming: the collector regroups rows per video itself."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False


def detection_dataset(videos: list[tuple[VideoInfo, list[Segment]]], config: Config,
                      plan: ResourcePlan, restarts=None) -> ray.data.Dataset:
    """Segments -> decode actors (CPU) -> detection actors (fractional GPU or CPU): rows with boxes.

    An actor whose process dies is restarted, and its task retried, at most ``resources.max_retries``
    times (Ray Data's default is forever); restarted actors report to ``restarts`` (a RestartLog).
    """
    rows = [SegmentRow.of(info, s).as_item() for info, segments in videos for s in segments]
    config_json = config.canonical_json()
    retries = config.resources.max_retries
    # Ray 2.60 has no named map_batches parameter for these (passing them as remote args is deprecated
    # for Ray 2.64): revisit when the pin moves.
    fault_tolerance = {"max_restarts": retries, "max_task_retries": retries}
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    # Without a limit the decode actors run ahead of detection, their frames piling up in the object store
    # (1.2 GB for 20 s of 1080p on 2 cores, README.md "Architecture"): a long video could fill it and spill.
    ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=plan.frame_buffer_bytes)
    with warnings.catch_warnings():  # ray is pinned exactly: its deprecation notice is ours to act on, not users'
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        ds = ds.map_batches(
            SegmentDecoder, fn_constructor_kwargs={"config_json": config_json, "restarts": restarts}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan.decode_actors), num_cpus=plan.decode_cpus,
            **fault_tolerance,
        )
        return ds.map_batches(
            FrameDetectorActor,
            fn_constructor_kwargs={"config_json": config_json, "threads": 0 if plan.uses_gpu else 2,
                                   "restarts": restarts, "device": None if plan.uses_gpu else "cpu"},
            batch_size=config.detection.batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.detect_actors),
            num_cpus=plan.detect_cpus, num_gpus=plan.detect_gpus or None, memory=plan.detect_memory,
            **fault_tolerance,
        )
