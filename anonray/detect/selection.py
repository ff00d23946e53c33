"""Which models a configuration runs: per class, its manifest entry, and the models a run records."""

from __future__ import annotations

from anonray.config import Config
from anonray.detect.centerface import CenterFace
from anonray.detect.int8 import int8_folder
from anonray.detect.models import ModelError, ModelSpec, load_manifest, model_path
from anonray.detect.openvino_cpu import resolve_precision
from anonray.detect.plates import PlateDetector, openvino_ir

MODEL_KINDS = {"face": ("centerface-onnx",), "plate": ("ultralytics-yolo",), "person": ("ultralytics-yolo-pose",)}
"""The manifest model kinds each class's detector can run."""


def model_name_for(config: Config, cls: str) -> str:
    """The manifest name of the model that serves a class (``config.detection.<cls>.model``)."""
    return getattr(config.detection, cls).model


def model_spec_for(config: Config, cls: str, setting: str = "model") -> ModelSpec:
    """The manifest entry of the model a class's setting names (``model``, or ``low_light_model`` for
    plates); a ModelError naming the setting if it cannot serve the class."""
    name = getattr(getattr(config.detection, cls), setting)
    specs = load_manifest()
    fits = sorted(n for n, s in specs.items() if s.kind in MODEL_KINDS[cls])
    spec = specs.get(name)
    if spec is None or spec.kind not in MODEL_KINDS[cls]:
        why = "is not in the model manifest" if spec is None else f"is a {spec.kind} model"
        raise ModelError(
            f"detection.{cls}.{setting}: {name!r} {why}; models for {cls}: {', '.join(fits) or '(none)'}"
        )
    return spec


def models_in_use(config: Config) -> list[str]:
    """The manifest names of every model a run with ``config`` loads (the record's model ids)."""
    names = [model_name_for(config, c) for c in config.classes]
    low_light = low_light_model_name(config)
    names += [low_light] if low_light and low_light not in names else []
    return names + ([config.detection.person.model] if config.detects_people else [])


def low_light_model_name(config: Config) -> str | None:
    """The plate class's low-light model, where plates are detected and one is set."""
    plate = config.detection.plate
    return plate.low_light_model if "plate" in config.classes and plate.enabled else None


def prepare_cpu_runtime(config: Config) -> list:
    """Make now what the CPU runtime would otherwise make on its first use, so that a run's first batch (and
    every detection actor at once) does not pay for it: the YOLO networks' OpenVINO IR (about 10 s each) and,
    where ``detection.cpu_precision`` resolves to int8, the int8 networks of the classes' models (about 10 s
    each, verified against their pins; the low-light look and the person network run in float). Returns the
    files made or found."""
    if config.detection.cpu_runtime != "openvino":
        return []
    classes = [c for c in config.classes if getattr(config.detection, c).enabled]
    plate_settings = ["model"] + (["low_light_model"] if low_light_model_name(config) else [])
    made = [openvino_ir(model_path(model_spec_for(config, "plate", s).name))
            for s in (plate_settings if "plate" in classes else [])]
    if config.detects_people:  # runs in float (bf16 or fp32): not quantized
        made.append(openvino_ir(model_path(model_spec_for(config, "person").name)))
    if resolve_precision(config.detection.cpu_precision) == "int8":
        for cls in classes:
            path = model_path(model_spec_for(config, cls).name)
            detector = CenterFace if cls == "face" else PlateDetector
            detector(path, device="cpu", backend="openvino", cpu_precision="int8", cpu_threads=1)
            made.append(int8_folder(path) / f"{path.stem}.xml")
    return made
