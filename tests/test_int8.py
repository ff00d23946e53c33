"""int8 detection on the CPU (detect/int8.py, calibration.py): what ``auto`` picks, agreement with fp32,
and the pinned bytes of the quantized networks."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonray.detect import models
from anonray.detect.calibration import CALIBRATION_SIZES, calibration_frames
from anonray.detect.centerface import CenterFace
from anonray.detect.int8 import int8_folder
from anonray.detect.openvino_cpu import cpu_capabilities, cpu_has_bf16, cpu_remakes_pinned_int8, resolve_precision
from anonray.detect.plates import PlateDetector
from anonray.store.checksums import sha256_file
from anonray.track.tracker import iou_matrix
from benchmarks.accuracy.datasets import DEFAULT_DATA

skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = np.array([180, 60, 270, 180], np.float32)
PLATES = DEFAULT_DATA / "plates/ro_dashcam"
PLATE_IMAGE = "images/ro_003.jpg"
needs_int8 = pytest.mark.skipif(not ("INT8" in cpu_capabilities() and cpu_remakes_pinned_int8()),
                                reason="this CPU does not run OpenVINO int8 with AVX2 or better")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_matrix(np.asarray(a, np.float32)[None], np.asarray(b, np.float32)[None])[0, 0])


@pytest.fixture(scope="module", autouse=True)
def pulled() -> None:
    models.pull_models(["centerface", "plate-yolov8n-pyplatex"])


@needs_int8
def test_auto_picks_int8_and_falls_back_where_the_pins_cannot_be_remade(monkeypatch) -> None:
    """On this CPU auto is int8; capped at AVX2 (a CPU without AVX-512) still int8 and without bf16; capped at
    SSE4.1 (where the quantized bytes came out otherwise) fp32. Explicit settings are kept."""
    assert resolve_precision("auto") == "int8"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("auto") == "int8" and not cpu_has_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert resolve_precision("auto") == "fp32"
    assert [resolve_precision(p) for p in ("int8", "bf16", "fp32")] == ["int8", "bf16", "fp32"]


@needs_int8
def test_int8_face_network_finds_the_face_fp32_finds() -> None:
    path = models.model_path("centerface")
    fp32 = CenterFace(path, backend="openvino", cpu_precision="fp32", cpu_threads=2)
    int8 = CenterFace(path, backend="openvino", cpu_precision="int8", cpu_threads=2)
    img = skimage_data.astronaut()
    small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    for image, face in ((img, ASTRONAUT_FACE), (small, ASTRONAUT_FACE / 2)):
        (ref_xyxy, ref_score), = fp32.detect([image])
        (xyxy, score), = int8.detect([image])
        assert xyxy.shape == (1, 4) and ref_xyxy.shape == (1, 4)
        assert iou(xyxy[0], ref_xyxy[0]) > 0.9 and iou(xyxy[0], face) > 0.7
        assert abs(float(score[0]) - float(ref_score[0])) < 0.1


@needs_int8
def test_int8_plate_network_finds_the_labelled_plate() -> None:
    if not (PLATES / "labels.json").is_file():
        pytest.skip(f"plate test data absent ({PLATES}); set ANONRAY_EVAL_DATA or put it in ../shared/data")
    labels = json.loads((PLATES / "labels.json").read_text())
    plate = np.array([b["box"] for b in labels[PLATE_IMAGE] if b["cls"] == "plate" and not b["ignore"]][0])
    img = np.ascontiguousarray(cv2.imread(str(PLATES / PLATE_IMAGE), cv2.IMREAD_COLOR)[:, :, ::-1])
    path = models.model_path("plate-yolov8n-pyplatex")
    (ref_xyxy, _), = PlateDetector(path, backend="openvino", cpu_precision="fp32").detect([img])
    (xyxy, score), = PlateDetector(path, backend="openvino", cpu_precision="int8").detect([img])
    best = max(range(len(xyxy)), key=lambda i: iou(xyxy[i], plate))
    assert iou(xyxy[best], plate) > 0.5 and score[best] > 0.25
    assert max(iou(xyxy[best], r) for r in ref_xyxy) > 0.85


@needs_int8
def test_an_int8_network_takes_uint8_images_only() -> None:
    import torch

    int8 = CenterFace(models.model_path("centerface"), backend="openvino", cpu_precision="int8")
    with pytest.raises(ValueError, match="uint8 images only"):
        int8.forward(torch.zeros((1, 3, 64, 64)))


@needs_int8
def test_a_fresh_cache_quantizes_to_the_pinned_bytes(tmp_path: Path, monkeypatch) -> None:
    """Made anew (calibration, NNCF), the int8 face network's weights are the bytes the manifest pins."""
    spec = models.get_spec("centerface")
    source = models.model_path("centerface")
    monkeypatch.setenv("ANONRAY_CACHE", str(tmp_path))
    target = models.cached_file(spec)
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    CenterFace(target, backend="openvino", cpu_precision="int8")
    made = int8_folder(target) / "centerface.bin"
    assert sha256_file(made) == spec.int8_sha256


@needs_int8
def test_an_int8_network_that_differs_from_its_pin_is_refused(tmp_path: Path, monkeypatch) -> None:
    manifest = json.loads(models.manifest_path().read_text())
    manifest["models"]["centerface"]["int8_sha256"] = "0" * 64
    altered = tmp_path / "manifest.json"
    altered.write_text(json.dumps(manifest))
    monkeypatch.setenv("ANONRAY_MODELS_MANIFEST", str(altered))
    with pytest.raises(models.ModelIntegrityError, match="int8 network of centerface.onnx: pinned 0000"):
        CenterFace(models.model_path("centerface"), backend="openvino", cpu_precision="int8")


def test_calibration_frames_are_fixed_synthetic_scenes() -> None:
    """The same frames every time (the pins depend on it), at each calibration size, one dimmed per scene."""
    def digest() -> tuple[str, list[tuple[int, ...]]]:
        frames = list(calibration_frames())
        return hashlib.sha256(b"".join(f.tobytes() for f in frames)).hexdigest(), [f.shape for f in frames]

    first, shapes = digest()
    assert digest() == (first, shapes)
    assert sorted(set(shapes)) == sorted({(h, w, 3) for w, h in CALIBRATION_SIZES})
    assert len(shapes) == 5 * len(CALIBRATION_SIZES)
