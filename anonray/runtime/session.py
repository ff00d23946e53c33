"""Joining a Ray cluster, or starting a local one whose files stay in private folders."""

from __future__ import annotations

import logging
import os

import ray

from anonray.runtime.ray_scratch import RayScratch


def starts_local_ray(address: str | None) -> bool:
    """Whether ``connect_ray`` will start a local instance (rather than use or join a running one)."""
    return not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))


def connect_ray(address: str | None, scratch: RayScratch | None = None) -> str:
    """Join the cluster at ``address``/RAY_ADDRESS, or start a local instance sized to this machine;
    returns "attached", "cluster" or "local" (the runs table's ``ray_mode``).

    A local instance writes its session files and spilled objects to ``scratch`` (private folders,
    see runtime/ray_scratch.py); a cluster's folders are its operator's business and are left alone.
    """
    if ray.is_initialized():
        return "attached"
    target = address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if target:
        ray.init(address=target, **quiet)
        return "cluster"
    ray.init(include_dashboard=False, **quiet, **(scratch.ray_init_kwargs() if scratch else {}))
    return "local"
