"""OpenVINO on the CPU: the detectors' networks compiled once per input shape, in int8, bf16 or fp32.

``precision: auto`` picks int8 (networks quantized by int8.py) wherever OpenVINO's CPU plugin runs int8: it
measured fastest on every CPU tried (models/README.md, "int8"), VNNI and AMX run it natively. bf16 runs on
AMX / AVX512-BF16 units, fp32 everywhere. Per-frame times of each runtime: models/README.md.

Each compiled model is static in shape (faster than a dynamic one); a video's frames share one shape,
so one compile (well under a second) per video size per actor.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

CpuPrecision = Literal["auto", "fp32", "bf16", "int8"]
"""The ``detection.cpu_precision`` setting."""
Precision = Literal["fp32", "bf16", "int8"]
"""A resolved precision: what a network runs in."""


@functools.cache
def core():
    """The process's one OpenVINO runtime core (every model is read and compiled through it)."""
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU plugin's OPTIMIZATION_CAPABILITIES here (e.g. FP32, BF16, INT8); none without it."""
    try:
        return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - no OpenVINO CPU plugin: the caller falls back to fp32
        return []


def isa_cap() -> str:
    """``ONEDNN_MAX_CPU_ISA`` (upper case; "" = none): the cap benchmarks set to run as an older CPU would."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AMX or AVX512-BF16, and no ISA cap below them:
    the plugin lists BF16 even when capped)."""
    cap = isa_cap()
    uncapped = cap in ("", "ALL") or any(isa in cap for isa in ("BF16", "AMX", "AVX10"))
    return "BF16" in cpu_capabilities() and uncapped


def cpu_remakes_pinned_int8() -> bool:
    """Whether this CPU quantizes the networks to the pinned bytes (int8.py): measured so with AVX-512 and with
    the CPU capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``); capped at SSE4.1 the calibration's float sums came
    out otherwise. So: CPUs with AVX2 (x86 servers since 2013), unless capped below it."""
    try:
        flags = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return False
    capped = isa_cap().startswith("SSE")
    return bool(flags) and "avx2" in flags.group(1).split() and not capped


def resolve_precision(setting: CpuPrecision) -> Precision:
    """``auto`` -> int8 where the CPU plugin runs int8 and the CPU remakes the pinned int8 networks, else bf16
    where the CPU has native bf16, else fp32; explicit settings are kept."""
    if setting == "auto":
        if "INT8" in cpu_capabilities() and cpu_remakes_pinned_int8():
            return "int8"
        return native_float()
    return setting


def native_float() -> Precision:
    """The fastest float precision here: bf16 where the CPU has it natively, else fp32."""
    return "bf16" if cpu_has_bf16() else "fp32"


def float_precision(setting: CpuPrecision) -> Precision:
    """``setting`` resolved, with int8 replaced by ``native_float()`` (for the networks kept out of int8: the
    low-light look)."""
    precision = resolve_precision(setting)
    return native_float() if precision == "int8" else precision


def compile_for_cpu(model, precision: Precision, threads: int | None, streams: int = 1):
    """An ``openvino.Model`` compiled for the CPU plugin at the given precision, thread count and number
    of streams (images in flight at once, the threads shared among them). An int8 network's layers that
    are not quantized run in bf16 where the CPU has it.

    CPU pinning is off: a detection actor shares its node with decode and encode processes.
    """
    bf16 = precision == "bf16" or (precision == "int8" and cpu_has_bf16())
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "ENABLE_CPU_PINNING": False,
    }
    if streams > 1:
        config["NUM_STREAMS"] = int(streams)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core().compile_model(model, "CPU", config)


def static_copy(model, shape: tuple[int, ...]):
    """A copy of a dynamic-shape ``openvino.Model`` fixed to one input shape (static shapes run faster)."""
    fixed = model.clone()
    fixed.reshape(list(shape))
    return fixed


def with_uint8_image_input(model, scale: float):
    """``model`` (NCHW float input) taking NHWC uint8 images instead: the conversion, the layout change and
    the scaling (pixel / scale) run inside the compiled graph, threaded, instead of in numpy."""
    from openvino import Layout, Type
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
    steps = ppp.input().preprocess().convert_element_type(Type.f32)
    if scale != 1.0:
        steps.scale(scale)
    ppp.input().model().set_layout(Layout("NCHW"))
    return ppp.build()


class ShapeCompiledModel:
    """Calls a network on NCHW float32 arrays or NHWC uint8 images, compiling it once per input shape.

    ``build(nchw_shape)`` returns the ``openvino.Model`` for one input shape (N, C, H, W); uint8 input
    (N, H, W, C) gets the network with ``with_uint8_image_input(model, image_scale)``. Outputs come back
    as float32 arrays in the network's output order. Images run one at a time, ``streams`` of them in
    flight at once.
    """

    def __init__(self, build: Callable[[tuple[int, ...]], object], precision: Precision,
                 threads: int | None, image_scale: float = 1.0, streams: int = 1,
                 uint8_network: bool = False) -> None:
        """uint8_network: ``build`` makes networks that take NHWC uint8 images already (int8 networks are
        quantized with their image conversion, which runs faster); they take no float input."""
        self._build = build
        self.uint8_network = uint8_network
        self.precision = precision
        self.threads = threads
        self.image_scale = image_scale
        self.streams = max(1, int(streams))
        self._queues: dict[tuple[tuple[int, ...], str], object] = {}

    def _queue(self, x: np.ndarray):
        """The inference queue for single images shaped like ``x[:1]``, compiled on first use."""
        import openvino as ov

        key = ((1, *(int(d) for d in x.shape[1:])), x.dtype.str)
        queue = self._queues.get(key)
        if queue is None:
            if self.uint8_network and x.dtype != np.uint8:
                raise ValueError("this network takes NHWC uint8 images only")
            if self.uint8_network:
                model = self._build(key[0])
            elif x.dtype == np.uint8:
                _, h, w, c = key[0]
                model = with_uint8_image_input(self._build((1, c, h, w)), self.image_scale)
            else:
                model = self._build(key[0])
            compiled = compile_for_cpu(model, self.precision, self.threads, self.streams)
            queue = ov.AsyncInferQueue(compiled, self.streams)
            self._queues[key] = queue
        return queue

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs for a batch, run one image at a time: on the CPU a batch of 8 took 2-3x longer per image
        than single images (measured on CenterFace at 1280x736), and one shape is compiled per video size."""
        if x.dtype != np.uint8:
            x = x.astype(np.float32, copy=False)
        queue = self._queue(x)
        parts: list[list[np.ndarray] | None] = [None] * len(x)

        def collect(request, i: int) -> None:
            parts[i] = [np.array(t.data, dtype=np.float32) for t in request.output_tensors]

        queue.set_callback(collect)
        for i in range(len(x)):
            queue.start_async({0: np.ascontiguousarray(x[i:i + 1])}, i)
        queue.wait_all()
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
