"""Inputs on shared storage: local paths as today, or filesystem URIs (``s3://bucket/prefix``) via pyarrow.fs.

A URI input is never decoded in place: each worker that needs its bytes (ingest, a decode actor, render)
streams the object into a private staging folder on its own node (mode 0700, file 0600), works on that
local copy, and deletes it afterwards. Seeking in a video over HTTP range requests is slow and fails in
odd ways mid-decode; a local copy is simple and behaves exactly like a local input. Inputs are only ever
read.

``s3://`` URIs use ``pyarrow.fs.S3FileSystem``. For an on-prem object store (MinIO, Ceph, moto) set the
endpoint with ``ANONRAY_S3_ENDPOINT`` or the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
(``http://host:port`` selects plain HTTP); credentials and region come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION``) or the
instance's role. Every Ray node that runs anonray workers needs the same variables (a local Ray instance
inherits them from the driver). Other schemes go to ``pyarrow.fs.FileSystem.from_uri``.

URIs are personal data like paths: they are never logged, and storage errors are reported by their kind
only (``StorageError``), never with the URI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

STAGING_ENV = "ANONRAY_STAGING_DIR"
"""Parent folder for staged copies of URI inputs (default: the system temp folder)."""
_CHUNK = 8 << 20


class StorageError(OSError):
    """A storage operation failed; the message names the operation and the error kind, never the URI."""


@dataclass(frozen=True)
class ObjectStat:
    size: int
    mtime_ns: int


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` locations other than ``file://`` (local paths keep their old code path)."""
    if isinstance(location, Path):
        return False
    scheme = urlsplit(str(location)).scheme
    return "://" in str(location) and len(scheme) > 1 and scheme != "file"


def _s3_endpoint() -> str | None:
    for name in ("ANONRAY_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _s3_filesystem() -> pafs.S3FileSystem:
    kwargs: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = _s3_endpoint()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


_FILESYSTEMS: dict[str, pafs.FileSystem] = {}


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for ``uri`` (cached per process and scheme/host) and the path inside it."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        key = "s3"
        if key not in _FILESYSTEMS:
            _FILESYSTEMS[key] = _s3_filesystem()
        return _FILESYSTEMS[key], f"{parts.netloc}{parts.path}".rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as err:  # noqa: BLE001 - pyarrow's messages repeat the URI
        raise StorageError(f"unsupported or unreachable storage URI ({type(err).__name__})") from None
    return fs, path


def join(uri: str, relative: str) -> str:
    return uri.rstrip("/") + "/" + relative.lstrip("/")


def stat(uri: str) -> ObjectStat:
    """Size and modification time of the object at ``uri``; FileNotFoundError when there is none."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"stat failed ({type(err).__name__})") from None
    if info.type != pafs.FileType.File:
        raise FileNotFoundError("no such object")
    return ObjectStat(int(info.size or 0), int(info.mtime_ns or 0))


@dataclass(frozen=True)
class Listing:
    """What lies at a URI: one object (``is_file``), or the objects under a prefix, relative to it."""

    is_file: bool
    relative_paths: list[str]


def list_tree(uri: str) -> Listing | None:
    """The object at ``uri`` or every object under it (recursive, sorted); None when nothing is there."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return Listing(True, [path.rsplit("/", 1)[-1]])
        if info.type != pafs.FileType.Directory:
            return None
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"listing failed ({type(err).__name__})") from None
    prefix = path.rstrip("/") + "/"
    return Listing(False, sorted(i.path[len(prefix):] for i in found
                                 if i.type == pafs.FileType.File and i.path.startswith(prefix)))


def staging_root() -> Path:
    """This process's private staging folder (0700), created on first use."""
    global _STAGING
    if _STAGING is None or not _STAGING.is_dir():
        parent = os.environ.get(STAGING_ENV) or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        _STAGING = Path(tempfile.mkdtemp(prefix="anonray-stage-", dir=parent))  # mkdtemp: mode 0700
    return _STAGING


_STAGING: Path | None = None


def download(uri: str, target: Path) -> ObjectStat:
    """Stream the object at ``uri`` into ``target`` (created 0600); returns the object's stat."""
    fs, path = resolve(uri)
    before = stat(uri)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
            while block := src.read(_CHUNK):
                out.write(block)
    except FileNotFoundError:
        raise FileNotFoundError("no such object") from None
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"download failed ({type(err).__name__})") from None
    if target.stat().st_size != before.size:
        raise StorageError("download incomplete (the object changed or the transfer was cut short)")
    return before


@contextlib.contextmanager
def staged(uri: str) -> Iterator[tuple[Path, ObjectStat]]:
    """A private local copy of the object at ``uri`` (keeping its extension, which FFmpeg's probing may
    use) and its stat; the copy is deleted on exit."""
    folder = Path(tempfile.mkdtemp(dir=staging_root()))
    target = folder / f"input{suffix_of(uri)}"
    try:
        yield target, download(uri, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if _STAGING is not None:  # the process's staging folder too, once empty (recreated on next use)
            with contextlib.suppress(OSError):
                _STAGING.rmdir()


def suffix_of(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""
