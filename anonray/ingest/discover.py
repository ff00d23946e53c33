"""Find the input files: folders are walked recursively, files are taken as given.

A folder INPUT is the root of its files; a file INPUT's root is its own folder. Files under a folder
that match no include pattern (or match an exclude pattern) are counted as ignored. The output folder
is never walked, so re-running into an output inside an input folder cannot feed outputs back in; a
URI output under a URI input's prefix is skipped the same way.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from anonray.config import InputConfig
from anonray.layout import STATE_DIR_NAME
from anonray.store import storage


class InputError(ValueError):
    """An INPUT argument that cannot be used at all (usage error, exit code 2)."""


@dataclass(frozen=True)
class InputFile:
    """One file to process: where it is and where it sits relative to its root."""

    source_path: Path | str
    """A local path, or a storage URI (``s3://...``, see storage.py) for URI inputs."""
    root: Path | str
    relative_path: str
    size_bytes: int = 0
    """Its size when discovered (0 where the store did not say): sizes the detection waves."""


@dataclass
class Discovery:
    files: list[InputFile]
    ignored: int


def _matches(name: str, patterns: list[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def _is_within(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def discover(inputs: list[str | Path], output: Path | str, input_config: InputConfig) -> Discovery:
    """Expand INPUT arguments into files, in a stable order; raise InputError for a missing INPUT.

    ``output`` is the output folder, or a URI for an output on an object store."""
    output_uri = str(output).rstrip("/") if storage.is_uri(output) else None
    output_dir = None if output_uri else Path(output).resolve()
    files: list[InputFile] = []
    ignored = 0
    seen: set[Path] = set()
    for raw in inputs:
        if storage.is_uri(raw):
            ignored += _discover_uri(str(raw), input_config, files, seen, output_uri)
            continue
        given = Path(raw).expanduser()
        if not given.exists():
            raise InputError(f"input does not exist: {raw}")
        path = given.resolve()
        if path.is_file():
            if path not in seen:
                seen.add(path)
                files.append(InputFile(path, path.parent, path.name, path.stat().st_size))
            continue
        if _is_within(path, output_dir):
            raise InputError("an input folder lies inside the output folder")
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            current = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames
                                 if not _is_within((current / d).resolve(), output_dir)
                                 and d != STATE_DIR_NAME)
            for name in sorted(filenames):
                file_path = current / name
                if not _matches(name, input_config.include) or _matches(name, input_config.exclude):
                    ignored += 1
                    continue
                if not file_path.is_file():  # sockets, fifos, dangling links (links to files are followed)
                    ignored += 1
                    continue
                if file_path in seen:
                    continue
                seen.add(file_path)
                files.append(InputFile(file_path, path, file_path.relative_to(path).as_posix(),
                                       file_path.stat().st_size))
    return Discovery(files, ignored)


def _uri_within(uri: str, prefix: str | None) -> bool:
    return prefix is not None and (uri == prefix or uri.startswith(prefix + "/"))


def _discover_uri(uri: str, input_config: InputConfig, files: list[InputFile], seen: set,
                  output_uri: str | None = None) -> int:
    """Expand one URI INPUT (an object, or every object under a prefix) like a local one; the ignored count."""
    try:
        listing = storage.list_tree(uri)
    except storage.StorageError as err:
        raise InputError(f"an input URI cannot be read: {err}") from None
    if listing is None:
        raise InputError("an input URI holds no object")  # never the URI itself: it may be personal data
    root = uri.rstrip("/")
    if listing.is_file:
        root = root.rsplit("/", 1)[0]
    elif _uri_within(root, output_uri):
        raise InputError("an input URI lies inside the output location")
    ignored = 0
    for relative in listing.relative_paths:
        name = relative.rsplit("/", 1)[-1]
        parts = relative.split("/")[:-1]
        if STATE_DIR_NAME in parts or (not listing.is_file and _uri_within(storage.join(root, relative), output_uri)):
            continue  # run records, and the outputs of a URI output under this prefix
        if not listing.is_file and (not _matches(name, input_config.include) or _matches(name, input_config.exclude)):
            ignored += 1
            continue
        source = storage.join(root, relative)
        if source in seen:
            continue
        seen.add(source)
        files.append(InputFile(source, root, relative, listing.sizes.get(relative, 0)))
    return ignored
