"""Outputs on an object store: ``--output s3://bucket/prefix`` (or any URI storage.py resolves).

The same layout as a local output folder, under the URI: the videos at their mirrored keys, the run's state
under ``<output>/_anonray/``. A render worker (``UriTarget``) writes and checks each output in a private
local folder, then uploads its regions part and the video; the driver (``RemoteState``) keeps the run's
state in a private local folder synced with the store, so tables.py, audit.py and review.py work on a
plain folder. Object keys are never logged; errors name the kind of failure only. No Ray here.
Details: docs/design.md, "store/remote_output.py".
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from anonray.layout import (
    MANIFEST_DIR_NAME,
    PRIVATE_DIR_MODE,
    REGIONS_TABLE,
    REVIEW_DIR_NAME,
    STATE_DIR_NAME,
    TMP_DIR_NAME,
)
from anonray.records.regions import write_regions
from anonray.records.tables import TABLES
from anonray.store import storage
from anonray.store.private_dirs import new_private_dir
from anonray.types import MaskPlan

VIDEOS_TABLE = "videos"


class OutputLocationError(ValueError):
    """A URI output that cannot be used at all: unknown scheme, missing bucket, no write permission
    (a usage error, exit code 2; nothing was processed)."""


def state_uri(output_uri: str, relative: str = "") -> str:
    """``<output>/_anonray/<relative>``."""
    return storage.join(output_uri, f"{STATE_DIR_NAME}/{relative}".rstrip("/"))


def tmp_uri(output_uri: str, name: str) -> str:
    """A fresh key under ``<output>/_anonray/tmp/`` for an upload in progress (stores that need one)."""
    return storage.temporary_key(state_uri(output_uri, TMP_DIR_NAME), name)


class UriTarget:
    """A URI output as a render worker sees it (render.py): a private local folder to write in, and uploads."""

    def __init__(self, output_uri: str):
        self.output_uri = output_uri.rstrip("/")
        self._folders = contextlib.ExitStack()
        self._local: Path | None = None
        self._regions_uri: str | None = None

    def is_source(self, relative: str, source: Path | str) -> bool:
        return str(source).rstrip("/") == storage.join(self.output_uri, relative)

    def tmp_dir(self) -> Path:
        """This output's private local folder (0700), created on first use."""
        if self._local is None:
            self._local = self._folders.enter_context(storage.private_folder())
        return self._local

    def write_regions(self, run_id: str, video_id: str, plan: MaskPlan, frame_pts: np.ndarray | None = None) -> None:
        """The regions (``frame_pts`` is kept for local outputs only: ``anonray apply`` takes no URI output)."""
        part = write_regions(self.tmp_dir() / STATE_DIR_NAME, run_id, video_id, plan)
        self._regions_uri = state_uri(self.output_uri, f"{REGIONS_TABLE}/{part.name}")
        self._upload(part, self._regions_uri)

    def publish(self, tmp: Path, relative: str) -> None:
        """Upload the output; when that fails, its regions part goes too (no coordinates without an output)."""
        try:
            self._upload(tmp, storage.join(self.output_uri, relative))
        except storage.UploadError:
            if self._regions_uri is not None:
                with contextlib.suppress(OSError):
                    storage.delete(self._regions_uri)
            raise

    def _upload(self, local: Path, uri: str) -> None:
        storage.upload(local, uri, tmp_uri(self.output_uri, local.name))

    def close(self) -> None:
        """Delete the private folder with whatever is left in it."""
        self._folders.close()
        self._local = None


class RemoteState:
    """The driver's private local copy of a URI output's ``_anonray`` folder (see the module docstring)."""

    def __init__(self, output_uri: str):
        self.output_uri = output_uri.rstrip("/")
        self.local_dir = new_private_dir("anonray-state-", os.environ.get(storage.STAGING_ENV) or None,
                                         create_parent=True)
        (self.local_dir / TMP_DIR_NAME).mkdir(mode=PRIVATE_DIR_MODE)

    def uri_of(self, local: Path) -> str:
        """The key a file of the local folder has on the store."""
        return state_uri(self.output_uri, local.relative_to(self.local_dir).as_posix())

    def push(self, local: Path) -> str:
        """Upload one file of the local folder to its key; returns the key's URI."""
        uri = self.uri_of(local)
        storage.upload(local, uri, tmp_uri(self.output_uri, local.name))
        return uri

    def _names(self, folder: str, prefix: str) -> list[str]:
        listing = storage.list_tree(state_uri(self.output_uri, folder))
        if listing is None or listing.is_file:
            return []
        return [name for name in listing.relative_paths if "/" not in name and name.startswith(prefix)]

    def pull(self, folder: str, prefix: str = "part-") -> int:
        """Download the files of ``_anonray/<folder>`` whose names start with ``prefix``; how many."""
        names = self._names(folder, prefix)
        target = self.local_dir / folder
        target.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        for name in names:
            storage.download(state_uri(self.output_uri, f"{folder}/{name}"), target / name)
        return len(names)

    def delete_remote(self, folder: str, prefix: str) -> int:
        """Delete the objects of ``_anonray/<folder>`` whose names start with ``prefix``; how many."""
        names = self._names(folder, prefix)
        for name in names:
            storage.delete(state_uri(self.output_uri, f"{folder}/{name}"))
        return len(names)

    def check_writable(self) -> None:
        """Write and delete a small object under ``_anonray/tmp/``: a missing bucket or permission shows now."""
        probe = self.local_dir / TMP_DIR_NAME / "probe"
        probe.write_bytes(b"anonray")
        uri = tmp_uri(self.output_uri, probe.name)
        try:
            storage.upload(probe, uri, tmp_uri(self.output_uri, probe.name))
            storage.delete(uri)
        finally:
            probe.unlink(missing_ok=True)

    def publish_run(self, run_id: str, keep_regions: bool) -> None:
        """The run's table parts, manifest and review sheet go up; then its early ``videos`` parts (and its
        regions when they are not kept) are deleted. Raises OSError; what went up before stays."""
        for table in TABLES:
            part = self.local_dir / table / f"part-{run_id}.parquet"
            if part.is_file():
                self.push(part)
        self.delete_remote(VIDEOS_TABLE, f"part-{run_id}-")
        if not keep_regions:
            self.delete_remote(REGIONS_TABLE, f"part-{run_id}-")
        for folder, suffix in ((MANIFEST_DIR_NAME, ".json"), (REVIEW_DIR_NAME, ".html")):
            record = self.local_dir / folder / f"{run_id}{suffix}"
            if record.is_file():
                self.push(record)

    def close(self) -> None:
        """Delete the local folder (everything in it is on the store, or was the run's scratch)."""
        shutil.rmtree(self.local_dir, ignore_errors=True)


def open_state(output_uri: str) -> RemoteState:
    """The state of a URI output, ready for a run: writable, ``_anonray/tmp/`` cleared of what a killed run
    left, the earlier runs' ``videos`` parts downloaded. OutputLocationError when the store cannot be used."""
    state = RemoteState(output_uri)
    try:
        state.check_writable()
        state.delete_remote(TMP_DIR_NAME, "")
        state.pull(VIDEOS_TABLE)
    except OSError as err:  # StorageError and UploadError say what failed, never the URI
        state.close()
        raise OutputLocationError(f"the output location cannot be used: {err}") from None
    return state
