"""Inputs on shared storage: local paths, or filesystem URIs (``s3://bucket/prefix``) via pyarrow.fs.

A URI input is read from a private local copy, except by chunk tasks, which read their own stretch by range
requests (``open_ranged``); inputs are only ever read. ``s3://`` uses ``pyarrow.fs.S3FileSystem`` (endpoint
and credentials from ``ANONRAY_S3_ENDPOINT`` and the standard AWS variables), other schemes
``pyarrow.fs.FileSystem.from_uri`` or fsspec. ``upload`` puts a file checked on local disk at its final key.
URIs are personal data like paths: never logged; errors are ``StorageError`` by kind only.
Details: docs/design.md, "store/storage.py".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from anonray.fault_hooks import fault_point
from anonray.store.checksums import sha256_file
from anonray.store.private_dirs import new_private_dir

RANGE_READ_BYTES = 1 << 20
"""Bytes per read of an object read by ranges (FFmpeg's I/O buffer): one request per MiB. Measured (moto, the
benchmark's 11 MiB looped clip in four chunks): 8 MiB reads fetched 32-35 MiB per chunk, since opening and
probing the file jumps about in 8 MiB steps; 1 MiB reads 5.8-9.0 MiB, 256 KiB 2.8-6.0 MiB. A chunk task
consumes a few MB/s (libx264 at about real time), so 1 MiB requests keep latency out of the way."""
STAGING_ENV = "ANONRAY_STAGING_DIR"
"""Parent folder for staged copies of URI inputs (default: the system temp folder)."""
_CHUNK = 8 << 20


class StorageError(OSError):
    """A storage operation failed; the message names the operation and the error kind, never the URI."""


class UploadError(StorageError):
    """An output could not be uploaded, or the object uploaded differs from the local file."""


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
    # allow_delayed_open: an object under PART_SIZE goes up in one PutObject (see upload)
    kwargs: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    "allow_delayed_open": True}
    endpoint = _s3_endpoint()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


FILESYSTEM_CACHE: dict[str, pafs.FileSystem] = {}


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for ``uri`` (cached per process and scheme/host) and the path inside it."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        key = "s3"
        if key not in FILESYSTEM_CACHE:
            FILESYSTEM_CACHE[key] = _s3_filesystem()
        return FILESYSTEM_CACHE[key], f"{parts.netloc}{parts.path}".rstrip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as err:  # noqa: BLE001 - pyarrow's messages repeat the URI
        failure = type(err).__name__
    try:  # a scheme pyarrow does not know: fsspec's implementation, if there is one
        import fsspec

        spec_fs, path = fsspec.core.url_to_fs(uri)
    except Exception:  # noqa: BLE001
        raise StorageError(f"unsupported or unreachable storage URI ({failure})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs)), path


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
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes per relative path, where the store said."""


def list_tree(uri: str) -> Listing | None:
    """The object at ``uri`` or every object under it (recursive, sorted); None when nothing is there."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            name = path.rsplit("/", 1)[-1]
            return Listing(True, [name], {name: int(info.size or 0)})
        if info.type != pafs.FileType.Directory:
            return None
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"listing failed ({type(err).__name__})") from None
    prefix = path.rstrip("/") + "/"
    sizes = {i.path[len(prefix):]: int(i.size or 0) for i in found
             if i.type == pafs.FileType.File and i.path.startswith(prefix)}
    return Listing(False, sorted(sizes), sizes)


def open_ranged(uri: str):
    """A random-access reader (``pyarrow.NativeFile``) of the object at ``uri``: each read one range request.
    FileNotFoundError when there is none; StorageError for other failures."""
    fs, path = resolve(uri)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise FileNotFoundError("no such object") from None
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"open failed ({type(err).__name__})") from None


def staging_root() -> Path:
    """This process's private staging folder (0700), created on first use."""
    global _STAGING
    if _STAGING is None or not _STAGING.is_dir():
        _STAGING = new_private_dir("anonray-stage-", os.environ.get(STAGING_ENV) or None, create_parent=True)
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
def private_folder() -> Iterator[Path]:
    """A fresh private (0700) folder in this process's staging folder, deleted with its files on exit."""
    folder = new_private_dir("tmp", staging_root())
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if _STAGING is not None:  # the process's staging folder too, once empty (recreated on next use)
            with contextlib.suppress(OSError):
                _STAGING.rmdir()


@contextlib.contextmanager
def staged(uri: str) -> Iterator[tuple[Path, ObjectStat]]:
    """A private local copy of the object at ``uri`` (keeping its extension, which FFmpeg's probing may
    use) and its stat; the copy is deleted on exit."""
    with private_folder() as folder:
        target = folder / f"input{suffix_of(uri)}"
        yield target, download(uri, target)


def suffix_of(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


# ---------------------------------------------------------------- outputs

PART_SIZE = 10 << 20
"""Arrow's S3 part size (``kPartUploadSize`` in arrow/filesystem/s3fs.cc; not settable from Python). With
``allow_delayed_open`` an object under this size goes up in one PutObject, a larger one as a multipart
upload of parts of this size (at most 10,000 parts: objects up to about 98 GiB)."""
WHOLE_OBJECT_STORES = frozenset({"s3", "gcs"})
"""``FileSystem.type_name`` of stores where a written object appears only once its upload is complete."""


def upload(local: Path, uri: str, tmp_uri: str) -> None:
    """Upload the local file to ``uri`` and check the object against it; UploadError when that fails.

    How atomic: on S3 and GCS (``WHOLE_OBJECT_STORES``) the file goes straight to its final key. Such a
    store shows an object only once its upload is complete (one PutObject under ``PART_SIZE``, else a
    multipart upload that appears with CompleteMultipartUpload), so no reader ever sees part of it; a
    temporary key plus copy would instead cap outputs at 5 GB (Arrow copies with one CopyObject, and S3
    refuses larger ones) and move every byte twice. Other stores (HDFS, Azure, fsspec ones) may show a
    file while it is written, so it goes to ``tmp_uri`` (under ``<output>/_anonray/tmp/``) and is moved
    into place once checked. What is left of a failed upload is deleted: the final key on S3/GCS (an
    earlier object there too, which a rerun then redoes), the temporary one elsewhere. One gap: Arrow's
    output stream completes the upload when it is closed (pyarrow cannot abort it), also after an error
    on our side such as a local read error mid-file, so such a half object is visible at its final key
    until the error handler here deletes it, moments later. Multipart uploads cut off by a dead process
    leave parts behind that the store never shows as an object: give the bucket an
    AbortIncompleteMultipartUpload lifecycle rule.

    The check: the object's size must equal the file's, and its ETag (from the same HEAD request) the MD5
    S3 gives such an upload (the file's MD5, or for a multipart upload the MD5 of the parts' MD5s with
    ``-<parts>``). An ETag of another form (SSE-KMS or SSE-C encryption, another part size) is no proof
    either way, so then the object is read back and compared by sha256; a store that reports no ETag
    gets the size check only.

    Tested against moto 5.2.1, which answers CompleteMultipartUpload with a body rooted at
    ``CompleteMultipartUploadResponse`` where S3 and MinIO say ``CompleteMultipartUploadResult``: Arrow
    takes that for an error embedded in a 200 OK (``CompleteMultipartUploadWithErrorFixup`` in
    s3fs.cc), retries and fails, although moto stored the object. ``background_writes=False`` does not
    change this and the part size cannot be set from Python; ``allow_delayed_open=True`` (set in
    ``resolve``) makes objects under ``PART_SIZE`` one PutObject, which moto handles, so tests keep
    their objects under 10 MiB. S3 names that root as Arrow expects (so does MinIO, which follows S3's
    documented response); the multipart path is not exercised by the tests here.
    """
    fs, path = resolve(uri)
    direct = fs.type_name in WHOLE_OBJECT_STORES
    target = path if direct else resolve(tmp_uri)[1]
    try:
        if not direct:
            _make_parent(fs, target)
        etags = write_object(fs, local, target)
        verify_upload(fs, target, local, etags)
        if not direct:
            _make_parent(fs, path)
            fs.move(target, path)
            if fs.get_file_info(path).size != local.stat().st_size:
                raise UploadError("upload failed (the object moved into place has another size)")
    except Exception as err:  # noqa: BLE001 - any failure: remove what is left, report the kind only
        _delete_quietly(fs, target)
        if isinstance(err, UploadError):
            raise
        raise UploadError(f"upload failed ({error_kind(err)})") from None


def error_kind(err: BaseException) -> str:
    """The error's type and, for a storage error, the store's error code: never the URI or key."""
    code = re.search(r"AWS Error ([A-Z_]+)", str(err))
    return f"{type(err).__name__}: {code.group(1)}" if code else type(err).__name__


def _make_parent(fs: pafs.FileSystem, path: str) -> None:
    if "/" in path:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)


def write_object(fs: pafs.FileSystem, local: Path, path: str) -> set[str]:
    """Stream the file to ``path``; returns the ETags S3 would give it (one PutObject, or PART_SIZE parts)."""
    whole, parts = hashlib.md5(usedforsecurity=False), []
    with local.open("rb") as src, fs.open_output_stream(path) as out:
        fault_point("upload", path)
        while block := src.read(PART_SIZE):
            out.write(block)
            whole.update(block)
            parts.append(hashlib.md5(block, usedforsecurity=False).digest())
    multipart = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return {whole.hexdigest(), f"{multipart}-{len(parts)}"}


def _etag(metadata: dict) -> str | None:
    raw = metadata.get("ETag", metadata.get(b"ETag"))
    if not raw:
        return None
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).strip('"')


def verify_upload(fs: pafs.FileSystem, path: str, local: Path, etags: set[str]) -> None:
    """Size, then ETag, else (an ETag of another form) sha256 of the object read back: see ``upload``."""
    size = local.stat().st_size
    with fs.open_input_file(path) as fh:
        remote_size, etag = fh.size(), _etag(fh.metadata())
    if remote_size != size:
        raise UploadError(f"upload failed (the object has {remote_size} bytes, the file {size})")
    if etag is None or etag in etags:
        return
    if _sha256_object(fs, path) != sha256_file(local):
        raise UploadError("upload failed (the object's sha256 differs from the file's)")


def _sha256_object(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as src:
        while block := src.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(Exception):
        fs.delete_file(path)


def delete(uri: str) -> None:
    """Delete the object at ``uri``; nothing happens when there is none."""
    fs, path = resolve(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        return
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"delete failed ({error_kind(err)})") from None


def temporary_key(root_uri: str, name: str) -> str:
    """A fresh key for ``name`` under ``root_uri`` (a folder for uploads in progress)."""
    return join(root_uri, f"{uuid.uuid4().hex[:12]}-{name.rsplit('/', 1)[-1]}")
