"""OpenVINO on the CPU: the detectors' networks compiled once per input shape, bf16 where the CPU has it.

bf16 runs on AMX / AVX512-BF16 units, where it is much faster than fp32; CPUs without them get fp32
(``precision: auto``). Per-frame times of each runtime: models/README.md, "CenterFace backend".

Each compiled model is static in shape (faster than a dynamic one); a video's frames share one shape,
so one compile (well under a second) per video size per actor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np

Precision = Literal["auto", "fp32", "bf16"]


@functools.cache
def core():
    """The process's one OpenVINO runtime core (every model is read and compiled through it)."""
    import openvino as ov

    return ov.Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AMX or AVX512-BF16)."""
    try:
        return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO CPU plugin: the caller falls back to fp32
        return False


def resolve_precision(setting: Precision) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 where the CPU has native bf16, fp32 elsewhere; explicit settings are kept."""
    if setting == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return setting


def compile_for_cpu(model, precision: Literal["fp32", "bf16"], threads: int | None, streams: int = 1):
    """An ``openvino.Model`` compiled for the CPU plugin at the given precision, thread count and number
    of streams (images in flight at once, the threads shared among them).

    CPU pinning is off: a detection actor shares its node with decode and encode processes.
    """
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
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

    def __init__(self, build: Callable[[tuple[int, ...]], object], precision: Literal["fp32", "bf16"],
                 threads: int | None, image_scale: float = 1.0, streams: int = 1) -> None:
        self._build = build
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
            if x.dtype == np.uint8:
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
