"""int8 networks for the CPU: a detector's OpenVINO model quantized once with NNCF (post-training, min/max
calibration on ``calibration.py``'s frames), kept beside the verified model file and pinned by sha256.

int8 runs natively on VNNI (AVX512-VNNI, AVX-VNNI) and AMX-INT8, and through AVX2 elsewhere; per-frame times
on each path: models/README.md, "int8". The weights file (``.bin``) is the same bytes on every machine (checked
with AVX-512 and with the CPU capped at AVX2), so its sha256 is pinned in the model manifest (``int8_sha256``)
and a mismatch is a hard error; the ``.xml`` holds the graph, with layer names NNCF numbers per process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from anonray.detect.models import ModelIntegrityError, spec_of_file
from anonray.detect.openvino_cpu import ShapeCompiledModel, core, resolve_precision, static_copy, with_uint8_image_input
from anonray.store.checksums import sha256_file

NNCF_VERSION = "3.4.0"
"""The NNCF release the pins were made with (pyproject pins it too): another one may write other bytes."""
INT8_RECIPE = 3
"""Bumped whenever the calibration frames (calibration.py) or the quantization options change: the cache
folder is named after it, and the pins must be made again."""


def int8_folder(model_file: Path) -> Path:
    """Where a model's int8 network lives: beside it, per OpenVINO and NNCF version and recipe."""
    import openvino as ov

    openvino_version = ov.get_version().split("-")[0]
    return model_file.parent / f"openvino-{openvino_version}-nncf-{NNCF_VERSION}-int8-r{INT8_RECIPE}"


def int8_model(model_file: Path, float_model: Callable[[], object],
               network_inputs: Callable[[], Iterable[np.ndarray]], *,
               float_layers: Callable[[object], list[str]] | None = None):
    """The int8 ``openvino.Model`` of a network: read from the cache, or quantized now (tens of seconds, once)
    from ``float_model()`` (dynamic shape, taking NHWC uint8 images: quantized with the image conversion it
    runs a quarter faster) on ``network_inputs()`` (NHWC uint8 arrays as the network gets them) and written
    atomically. Raises ModelIntegrityError where the weights' sha256 is not the one the manifest pins for
    ``model_file``'s model (or none is pinned). ``float_layers(model)`` names the layers kept in float (where
    int8 was measured to cost accuracy)."""
    target = int8_folder(model_file) / f"{model_file.stem}.xml"
    if not (target.is_file() and target.with_suffix(".bin").is_file()):
        _quantize_to(target, float_model(), network_inputs(), float_layers)
    actual = sha256_file(target.with_suffix(".bin"))
    spec = spec_of_file(model_file)
    pinned_sha256 = spec.int8_sha256 if spec else ""
    if actual != pinned_sha256:
        raise ModelIntegrityError(
            f"sha256 mismatch for the int8 network of {model_file.name}: pinned {pinned_sha256 or '(none)'}, "
            f"made {actual} (NNCF {NNCF_VERSION}). Run with detection.cpu_precision: bf16 or fp32, "
            "or re-pin after checking its accuracy (benchmarks/accuracy).")
    return core().read_model(str(target))


def _quantize_to(target: Path, model, inputs: Iterable[np.ndarray],
                 float_layers: Callable[[object], list[str]] | None) -> None:
    import nncf
    import openvino as ov

    items = [np.ascontiguousarray(x, dtype=np.uint8) for x in inputs]
    ignored = nncf.IgnoredScope(names=float_layers(model)) if float_layers else None
    nncf.set_log_level(logging.ERROR)  # its notes and progress bars are noise in a run's log
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), ignored_scope=ignored)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), target.with_suffix(".bin"))  # weights first, then the graph
        os.replace(staged, target)


def cpu_network(model_file: Path, float_base, setting: str, threads: int | None, streams: int,
                image_scale: float, calibration: Callable[[], Iterable[np.ndarray]],
                float_layers: Callable[[object], list[str]] | None = None) -> ShapeCompiledModel:
    """A detector's OpenVINO network at ``detection.cpu_precision`` ``setting`` (resolved for this CPU):
    ``float_base`` (dynamic shape, NCHW float, pixels / ``image_scale``) itself, or its int8 network
    (``int8_model``, calibrated on ``calibration()``, the detector's own inputs for the calibration frames)."""
    precision = resolve_precision(setting)
    if precision != "int8":
        return ShapeCompiledModel(lambda shape: static_copy(float_base, shape), precision, threads,
                                  image_scale=image_scale, streams=streams)
    base = int8_model(model_file, lambda: with_uint8_image_input(float_base, image_scale), calibration,
                      float_layers=float_layers)
    return ShapeCompiledModel(lambda shape: static_copy(base, shape), precision, threads,
                              image_scale=image_scale, streams=streams, uint8_network=True)
