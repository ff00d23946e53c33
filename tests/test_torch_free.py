"""The OpenVINO CPU path without torch: its numpy/OpenCV decode, letterbox and NMS (detect/nms.py, yolo.py,
centerface.decode) against the torch/ultralytics steps they replace, on the same raw network outputs of
real images; and a fresh process that detects without importing torch or ultralytics."""

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
from anonray.detect import models, yolo
from anonray.detect.centerface import CenterFace, decode
from anonray.detect.low_light import merge
from anonray.detect.nms import nms
from anonray.detect.plates import PlateDetector
from anonray.detect.selection import prepare_cpu_runtime
from benchmarks.accuracy.datasets import DEFAULT_DATA

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

FACES = DEFAULT_DATA / "faces/wider_val"
PLATE_SETS = [DEFAULT_DATA / f"plates/{name}" for name in ("ro_dashcam", "openalpr_us", "openalpr_eu")]
BOX_TOL, SCORE_TOL = 1e-3, 1e-5


def rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def sample_paths(folder: Path, n: int) -> list[Path]:
    """``n`` labelled images spread over the folder (sorted by name), or a skip where the data is absent."""
    if not (folder / "labels.json").is_file():
        pytest.skip(f"evaluation data absent ({folder}); set ANONRAY_EVAL_DATA or put it in ../shared/data")
    names = sorted(json.loads((folder / "labels.json").read_text()))
    return [folder / names[i] for i in np.linspace(0, len(names) - 1, n).astype(int)]


def sample(folder: Path, n: int) -> list[np.ndarray]:
    return [rgb(p) for p in sample_paths(folder, n)]


def assert_same(got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    """The same boxes (within BOX_TOL px) with the same scores (within SCORE_TOL), in the same order."""
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32
    assert got[0].shape == ref[0].shape and got[1].shape == ref[1].shape
    np.testing.assert_allclose(got[0], ref[0], atol=BOX_TOL, rtol=0)
    np.testing.assert_allclose(got[1], ref[1], atol=SCORE_TOL, rtol=0)


@pytest.fixture(scope="module", autouse=True)
def pulled() -> None:
    models.pull_models()
    prepare_cpu_runtime(Config())


def test_centerface_decode_matches_the_torch_postprocess() -> None:
    """Per WIDER photo and on a batch of two: the numpy decode + OpenCV NMS keeps what the torch decode +
    torchvision batched_nms keeps, at the floor of the ramped threshold (the most candidates)."""
    cfg = Config().detection.face
    # fp32 outputs: int8 ones hold exact score ties, which the two NMS implementations may break in either order
    det = CenterFace(models.model_path("centerface"), input_size=cfg.input_size, threshold=cfg.score_floor,
                     nms_iou=cfg.nms_iou, backend="openvino", cpu_precision="fp32")
    images = sample(FACES, 8)
    batches = [[img] for img in images] + [[images[0], images[0][:, ::-1].copy()]]
    found = 0
    for batch in batches:
        x, box = det.preprocess_uint8(batch)
        raw = det._openvino(x)
        ref = det.postprocess(tuple(torch.from_numpy(o) for o in raw), box)
        got = decode(raw, box, det.threshold, det.nms_iou)
        for g, r in zip(got, ref, strict=True):
            assert_same(g, r)
            found += len(g[0])
    assert found > 100  # crowds: NMS had work to do


def test_yolo_letterbox_matches_ultralytics() -> None:
    """The same pixels as ultralytics' LetterBox, for camera frames, odd sizes, portrait, tiny and huge."""
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    for h, w in [(720, 1280), (719, 1279), (1280, 720), (37, 301), (2000, 2999), (1280, 1280), (1, 9)]:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        for size, auto in [(1280, True), (1280, False), (512, True), (640, False)]:
            ref = LetterBox(size, auto=auto, stride=32)(image=img)
            np.testing.assert_array_equal(yolo.letterbox(img, size, 32, auto), ref)


@pytest.mark.parametrize("conf", [None, 0.01])
def test_plate_postprocess_matches_ultralytics(conf: float | None) -> None:
    """On the plate network's raw output for real photos (letterboxed like a batch of one size, and alone,
    square): yolo.non_max_suppression + scale_boxes keep what ultralytics' NMS and scale_boxes keep, at the
    configured threshold and at 0.01 (hundreds of candidates)."""
    from ultralytics.utils import nms as ul_nms
    from ultralytics.utils import ops

    cfg = Config().detection.plate
    det = PlateDetector(models.model_path(cfg.model), input_size=cfg.input_size, threshold=conf or cfg.score_floor,
                        nms_iou=cfg.nms_iou, backend="openvino")
    images = [img for folder in PLATE_SETS for img in sample(folder, 4)]
    found = 0
    for img, auto in [(img, True) for img in images] + [(images[0], False)]:
        padded = yolo.letterbox(img, det.input_size, det.stride, auto)[None]
        preds = det._openvino(padded)[0]
        (xyxy, score), = yolo.non_max_suppression(preds, det.threshold, det.nms_iou)
        got = (yolo.scale_boxes(padded.shape[1:3], xyxy, img.shape), score)
        (kept,) = ul_nms.non_max_suppression(torch.from_numpy(preds), det.threshold, det.nms_iou, max_det=300)
        ref = (ops.scale_boxes(padded.shape[1:3], kept[:, :4], img.shape).numpy(), kept[:, 4].numpy())
        assert_same(got, ref)
        found += len(score)
    assert found >= len(images)


def test_nms_matches_torchvision() -> None:
    """Random crowded boxes with tied scores and boxes without area; and low_light.merge on them."""
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(0, 400))
        xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
        wh = rng.uniform(0, 60, (n, 2)).astype(np.float32)
        wh[rng.random(n) < 0.05] = 0  # no area
        xyxy = np.concatenate([xy, xy + wh], axis=1)
        score = rng.integers(1, 50, n).astype(np.float32) / 50  # many ties
        iou = float(rng.choice([0.3, 0.45, 0.5, 0.7]))
        ref = torchvision.ops.nms(torch.from_numpy(xyxy), torch.from_numpy(score), iou).numpy()
        np.testing.assert_array_equal(nms(xyxy, score, iou), ref)
        half = n // 2
        got = merge((xyxy[:half], score[:half]), (xyxy[half:], score[half:]), iou)
        if half and n - half:
            assert_same(got, (xyxy[np.sort(ref)], score[np.sort(ref)]))


def test_the_cpu_path_imports_neither_torch_nor_ultralytics() -> None:
    """A fresh process builds the detection actor for a CPU-only plan (the default config: faces, plates, the
    low-light looks) and detects on real frames, a dark one too; torch and ultralytics stay unimported."""
    (path,) = sample_paths(PLATE_SETS[0], 1)
    code = textwrap.dedent(f"""
        import sys
        import cv2
        import numpy as np
        from anonray.runtime.actors import FrameDetectorActor
        from anonray.config import Config
        actor = FrameDetectorActor(Config().canonical_json(), threads=2, device="cpu")
        img = np.ascontiguousarray(cv2.imread({str(path)!r})[:, :, ::-1])
        frames = [img, (img * 0.3).astype(np.uint8), (img * 0.3).astype(np.uint8)]
        found = actor.detector.detect(frames, [0, 1, 2], (img.shape[1], img.shape[0]))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ultralytics"))
        print("FOUND", len(found), "HEAVY", heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]
    assert int(proc.stdout.split("FOUND ")[1].split()[0]) > 0
