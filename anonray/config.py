"""The validated run configuration: one object, every default in one place, hashed for the record.

A YAML file may set any subset of these fields; unknown keys are errors, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from anonray.config_base import StrictModel
from anonray.config_tracking import TrackingConfig

DEFAULT_INCLUDE = [
    "*.mp4", "*.m4v", "*.mov", "*.mkv", "*.avi", "*.webm", "*.ts", "*.mts", "*.m2ts", "*.mpg",
    "*.mpeg", "*.m2v", "*.vob", "*.wmv", "*.asf", "*.flv", "*.3gp", "*.mxf", "*.dav", "*.h264",
    "*.h265", "*.hevc", "*.264", "*.265", "*.ogv", "*.dv",
]


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


def _multiple_of_32(v: int) -> int:
    if v % 32:
        raise ValueError("must be a multiple of 32")
    return v


InputSize = Annotated[int, Field(ge=64, le=4096), AfterValidator(_multiple_of_32)]


class ClassDetection(StrictModel):
    """Detection settings for one class (the per-class defaults are in the subclasses below)."""

    enabled: bool = True
    model: str = Field(
        "", description="Manifest name of the model for this class (models/manifest.json); checked when loaded."
    )
    input_size: InputSize = Field(640, description="Long side of the detector input, pixels.")
    threshold: float = Field(0.2, gt=0.0, lt=1.0, description="Minimum score for a detection.")
    small_threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Minimum score for boxes up to small_height px tall (source pixels), ramping linearly up "
        "to threshold at large_height: small targets score lower, and a large false positive costs the most "
        "picture. None = threshold at every size.")
    small_height: int = Field(24, ge=1, description="Box height (source px) up to which small_threshold applies.")
    large_height: int = Field(64, ge=1, description="Box height (source px) from which threshold applies.")
    nms_iou: float = Field(0.4, gt=0.0, le=1.0)
    stride: int = Field(
        1, ge=1, le=25,
        description="Detect on every stride-th frame of a video (frame index 0, stride, 2*stride, ...); tracking "
        "fills the frames between. 1 = every frame.")

    @model_validator(mode="after")
    def _heights_ordered(self) -> ClassDetection:
        if self.large_height < self.small_height:
            raise ValueError("large_height must be at least small_height")
        return self

    @property
    def score_floor(self) -> float:
        """The lowest score any box size accepts (what the detector itself must keep)."""
        return min(self.threshold, self.small_threshold or self.threshold)


# Per-class defaults live on subclasses (not on the DetectionConfig fields) so that a file setting
# only some keys, e.g. detection.plate.threshold, keeps that class's defaults for the others. A
# redeclared field loses the base field's constraints, so they are restated.
# Face defaults chosen on the accuracy harness (benchmarks/accuracy, models/README.md): a 1280 input
# and a threshold that falls to 0.065 for faces under 24 px find the small faces CenterFace scores low;
# lower (0.05) misses fewer still but its false positives on texture push collateral above 2%.
class FaceDetection(ClassDetection):
    model: str = Field("centerface", description="Manifest name of the face model.")
    input_size: InputSize = Field(1280, description="Long side of the detector input, pixels.")
    threshold: float = Field(0.2, gt=0.0, lt=1.0, description="Minimum score for a detection.")
    small_threshold: float | None = Field(
        0.065, gt=0.0, lt=1.0, description="Minimum score for boxes up to small_height px tall (see ClassDetection).")
    nms_iou: float = Field(0.3, gt=0.0, le=1.0)


class PlateDetection(ClassDetection):
    model: str = Field("plate-yolov8n-pyplatex", description="Manifest name of the plate model.")
    input_size: InputSize = Field(1280, description="Long side of the detector input, pixels.")
    # Measured (models/README.md, "Large false plates"): the false plate boxes that cost the most picture are
    # large (a quarter of a frame) and score 0.25-0.35; real plates of up to 164 px in the stills score more. Plates
    # up to 96 px tall need 0.25, ramping to 0.4 at 240 px: synthetic seed 1000's collateral 2.1% -> 1.1%, no
    # plate lost on any set.
    threshold: float = Field(0.4, gt=0.0, lt=1.0, description="Minimum score for a detection.")
    small_threshold: float | None = Field(
        0.25, gt=0.0, lt=1.0, description="Minimum score for boxes up to small_height px tall (see ClassDetection).")
    small_height: int = Field(96, ge=1, description="Box height (source px) up to which small_threshold applies.")
    large_height: int = Field(240, ge=1, description="Box height (source px) from which threshold applies.")
    nms_iou: float = Field(0.5, gt=0.0, le=1.0)
    # Plates move slowly and tracks bridge two frames: measured on the accuracy harness, stride 3 misses
    # no more plate-frames than stride 1 (models/README.md) at a third of the plate model's cost.
    stride: int = Field(3, ge=1, le=25, description="Detect plates on every stride-th frame (see ClassDetection).")
    # Measured (models/README.md): sizing the input to the frame instead changed no accuracy figure on the real
    # or synthetic clips, but gave looser plate boxes on small frames (a planted plate 88% covered). Upscaling at
    # most 2x (max_upscale) found 300/300 planted plates on 480x270 clips, mean coverage 0.996, against 289/300
    # and 0.939 at 1280, at 20 instead of 37 ms a frame (int8, AMD EPYC).
    upscale: bool = Field(
        True, description="Letterbox frames smaller than input_size up to it (ultralytics' own behaviour); "
        "false = the network input is sized to the frame (never above input_size).")
    max_upscale: float | None = Field(
        2.0, ge=1.0, description="With upscale: frames are letterboxed up to at most this many times their size "
        "(a 480x270 frame to 960, not 1280; a 640x360 one to 1280). None = up to input_size at any factor.")
    # Measured (models/README.md, "Close-up plates"): at 1280 px the plate network misses most plates over about
    # 100 px tall (a 594 px wide plate: nothing); shrunk to 320 px it finds them. The default since its boxes over
    # most of the frame are dropped (coarse_max_frame_share): the real clips' figures are the same with it.
    coarse_input_size: InputSize | None = Field(
        320, description="The plate network also looks at each due frame shrunk to this long side (never "
        "enlarged; detect/coarse.py): close-up plates, which the main look misses once they fill a large part of "
        "its input. None = no such look.")
    coarse_min_height: float = Field(
        64.0, ge=0.0, description="A box of the shrunk look joins the main look's only where it would be at least "
        "this tall (px) in the main look's input: smaller plates are the main look's.")
    coarse_threshold: float = Field(
        0.6, gt=0.0, lt=1.0, description="Minimum score for a box of the shrunk look.")
    coarse_max_frame_share: float = Field(
        0.8, gt=0.0, le=1.0, description="A box of the shrunk look covering at least this share of the frame's "
        "area is dropped: it boxes the whole picture, not a plate (a plate cut by the frame's edges at the "
        "largest probe size covers 0.56).")
    low_light_model: str | None = Field(
        "plate-yolov8n-safelicensing",
        description="Manifest name of a second plate model for dark frames (detect/low_light.py): frames darker "
        "than low_light_luma also go through it, brightened, and (low_light_stack) shrunk, averaged and "
        "brightened through it and the main plate model. None = no second look.")
    low_light_luma: float = Field(
        50.0, ge=0.0, le=255.0, description="Mean luma (0..255) below which a frame counts as dark.")
    # Measured on dark, noisy clips like the accuracy harness's (models/README.md): shrinking averages the
    # noise that hides plates in the dark (at 1280 neither model finds the tuning clip's plate at all).
    low_light_input_size: InputSize = Field(
        512, description="Long side (pixels) dark frames are shrunk to, by area averaging, for the low-light look, "
        "and its detector input size.")
    # Measured on the held-out set's dark clip (models/README.md): the low-light model scores a plate in glare
    # on the frames as they are, not once brightened; no set lost anything to it.
    low_light_unbrightened: bool = Field(
        True, description="The low-light model also looks at each dark frame as it is, unbrightened (brightening "
        "lifts the noise with the plate, and clips a plate in glare).")
    low_light_stack: int = Field(
        8, ge=0, le=256,
        description="Consecutive dark frames of one detector call (so at most detection.batch_size) aligned to "
        "their middle frame and averaged into one image for the low-light look at low_light_input_size. 1 = each "
        "frame alone; 0 = no such look (each dark frame still goes, brightened, through low_light_model).")


# Measured on the labelled real footage (models/README.md, "Precision on real footage"): false faces on crests,
# mirrors, signs and windows are far from any person, while small real faces sit at the head end of one; a
# 640 input finds the people the tracker asks about as well as 1280 did, and people move little in 5 frames.
class PersonDetection(StrictModel):
    """A person detector that is never masked: it tells the face tracker where people are (``tracking.face
    .alone_track_threshold``)."""

    enabled: bool = Field(True, description="Detect people to confirm weak faces (never masked themselves).")
    model: str = Field("person-yolo11n-pose", description="Manifest name of the person model.")
    input_size: InputSize = Field(640, description="Long side of the person detector input, pixels.")
    threshold: float = Field(0.25, gt=0.0, lt=1.0, description="Minimum score for a person.")
    nms_iou: float = Field(0.6, gt=0.0, le=1.0)
    stride: int = Field(5, ge=1, le=25, description="Detect people on every stride-th frame of a video.")
    upscale: bool = Field(
        False, description="Letterbox frames smaller than input_size up to it; false = the input is sized to the "
        "frame (never above input_size): people are large, a small frame needs no upscaling.")


class DetectionConfig(StrictModel):
    face: FaceDetection = FaceDetection()
    plate: PlateDetection = PlateDetection()
    person: PersonDetection = PersonDetection()
    batch_size: int = Field(8, ge=1, le=256, description="Frames per detector call.")
    half_precision: bool = Field(True, description="fp16 on GPU (ignored on CPU).")
    cpu_runtime: Literal["openvino", "native"] = Field(
        "openvino",
        description="Runtime of the detectors on the CPU: openvino (fastest, measured), or native "
        "(onnxruntime for CenterFace, torch through ultralytics for the plate model).")
    cpu_precision: Literal["auto", "int8", "bf16", "fp32"] = Field(
        "auto",
        description="OpenVINO precision on the CPU: auto = int8 wherever OpenVINO runs int8 (fastest measured; "
        "networks quantized once on the project's own synthetic footage, pinned by sha256), else bf16 where "
        "the CPU has native bf16 (AMX, AVX512-BF16), else fp32. Each can be forced to measure it.")


class MaskConfig(StrictModel):
    style: Literal["blur", "pixelate", "solid"] = "blur"
    color: str = Field("000000", description="RRGGBB for solid masks.")
    # Measured on the accuracy harness: CenterFace's boxes and the plate model's already reach past the
    # labelled face and plate, so a margin mostly masks background (1.3 for faces: collateral 4.3%, 1.0: 1.9%).
    # 1.03 rather than 1.0: CenterFace's box is often a little smaller than the labelled face; chosen on five
    # clip sets at once (models/README.md), fewer misses on each for +0.1 point of collateral.
    face_margin: float = Field(1.03, ge=1.0, le=3.0, description="Box scale factor for faces.")
    plate_margin: float = Field(1.0, ge=1.0, le=3.0, description="Box scale factor for plates.")
    face_shape: Literal["ellipse", "box"] = "ellipse"
    plate_shape: Literal["ellipse", "box"] = "box"
    pixel_blocks: int = Field(8, ge=2, le=64, description="Pixelation: blocks across a region's long side.")

    @field_validator("color")
    @classmethod
    def _hex_color(cls, v: str) -> str:
        v = v.lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", v):
            raise ValueError("must be six hex digits RRGGBB")
        return v.lower()

    def rgb(self) -> tuple[int, int, int]:
        return (int(self.color[0:2], 16), int(self.color[2:4], 16), int(self.color[4:6], 16))


class EncoderConfig(StrictModel):
    codec: Literal["auto", "libx264", "libx265"] = Field(
        "auto", description="The output's video encoder. auto = the source's codec family: H.264 in, libx264 out; "
        "HEVC in, libx265 out; anything else libx264 (render/codec/settings.py). Bit depth (up to 10 bits for "
        "libx264, 12 for libx265), chroma format and colour tags are kept either way.")
    # Measured (docs/codec.md, "Quality of libx265"): on three real clips libx265 at CRF 20 veryfast gives the
    # luma PSNR of libx264 at CRF 20 veryfast within 0.6 dB (mean +0.06 dB) at 6-14% fewer bits: one setting
    # serves both.
    crf: int = Field(20, ge=0, le=51, description="Constant rate factor, for libx264 and libx265 alike.")
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = "veryfast"
    max_bitrate_ratio: float | None = Field(
        1.25, gt=0.0, description="Cap on the output's video bitrate (video packet bytes x 8 / duration, the whole "
        "file) as a multiple of the input's, enforced as VBV limits sized so that it holds on clips of a few "
        "seconds too (settings.rate_cap). null = no cap (CRF alone).")
    bitrate: int | None = Field(
        None, gt=0, description="A target video bitrate (bit/s) instead of CRF; it overrides crf and "
        "max_bitrate_ratio.")
    threads: int = Field(
        0, ge=0, description="Encoder threads; 0 = the encoder's own choice (libx264/libx265: about 1.5 per core "
        "of the machine, whatever share of it the render task holds: a lone render uses the whole node).")
    passthrough: bool = Field(
        False, description="Smart passthrough (passthrough.py): GOPs without masks are copied bit-exact from the "
        "source (SEI messages stripped), only GOPs with masks are re-encoded; H.264 sources with libx264, HEVC "
        "with libx265, progressive 8-bit; other inputs get the full re-encode (videos.passthrough_fallback says why).")
    chunk_seconds: float = Field(
        300.0, ge=0.0,
        description="Parallel encoding of long videos (chunked.py): a video of at least 1.5 x this many seconds is "
        "cut at segment boundaries into chunks of about this length, encoded by one task each (any node) with "
        "identical settings and joined losslessly into one file (videos.encode_chunks). 0 = one task per video. "
        "Not with passthrough, nor for damaged input rendered with input.on_damage: mask_whole_frame.")
    min_chunk_seconds: float = Field(
        10.0, ge=0.0,
        description="Small runs: where a run has fewer videos than render slots (the cluster's CPUs / render "
        "CPUs), each video is also cut into up to slots / videos chunks of at least this many seconds, so that "
        "a few videos' renders use every CPU (two chunks of the throughput clip on 2 cores). 0 = off; "
        "chunk_seconds 0 turns this off too.")


class SegmentConfig(StrictModel):
    target_seconds: float = Field(2.0, gt=0.0, description="Short GOPs are merged up to this length.")


class InputConfig(StrictModel):
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    on_damage: Literal["fail", "mask_whole_frame"] = Field(
        "fail", description="A video with damaged data (frames the decoder could not produce): 'fail' writes no "
        "output (error_class damaged_frames); 'mask_whole_frame' writes it with every frame that detection did "
        "not analyse filled whole with mask.color (whatever mask.style), the other frames masked as usual, and "
        "frames that cannot be decoded at all left out (videos.frames_masked_whole, videos.frames_lost).")


class ResourceConfig(StrictModel):
    decode_actors: int = Field(0, ge=0, description="0 = derived from the cluster's CPUs.")
    detect_actors: int = Field(0, ge=0, description="0 = derived from the cluster's GPUs/CPUs.")
    gpus_per_detector: float = Field(0.25, gt=0.0, le=1.0)
    wave_videos: int = Field(
        256, ge=1, description="Most videos per detection wave (runtime/waves.py): files are ingested a wave "
        "at a time, the next wave while one is detected; a wave's decode and detection actors start once.")
    wave_bytes: int = Field(
        1 << 30, ge=1, description="Most input bytes per detection wave (at least one video): short clips share "
        "a wave, a large file gets one of its own so that the first outputs of a large archive appear early.")
    encode_cpus: float = Field(1.0, gt=0.0)
    cpu_inference_streams: int = Field(
        2, ge=1, le=16, description="Images a CPU detection actor runs at once (OpenVINO streams, sharing its "
        "threads; 2 measured 2-6% faster end to end than 1 on 2 cores); 1 = one image at a time on all of them.")
    ray_temp_dir: str = Field(
        "", description="Local Ray only: an absolute folder in which each run creates a fresh 0700 folder for "
        "Ray's session files and spilled objects (personal data), deleted after the run. Empty = "
        "DIR/_anonray/ray-<id> (or a private folder in the system temp dir where that path is too long for "
        "Ray's sockets). Ignored when joining a cluster.")
    keep_ray_temp: bool = Field(
        False, description="Keep that folder after the run (debugging only: it holds logs and spilled objects).")
    stall_seconds: float = Field(
        300.0, ge=0.0, description="Reading an input that makes no progress for this long (ingest: no chunk hashed "
        "and no packet demuxed; decode: no packet read) is abandoned: the file fails as ingest_stalled or "
        "decode_stalled and the run goes on (anonray/stall_guard.py; FFmpeg hung on damaged data, a read from a "
        "dead network mount). 0 = no limit.")
    max_retries: int = Field(
        3, ge=0, le=100, description="Transient failures (a worker or actor process died, out of memory, a node "
        "lost, an upload to an object-store output failed) are retried this many times per render task, per "
        "decode/detection actor (restarts) and per actor task; deterministic failures are never retried.")


class ReviewConfig(StrictModel):
    """The per-run review sheet (frames of anonymized outputs with the mask outlines) and mask regions."""

    sample_share: float = Field(0.01, ge=0.0, le=1.0, description="Share of the run's ok outputs sampled.")
    min_files: int = Field(1, ge=0, description="Sample at least this many ok outputs (all where there are fewer).")
    frames_per_file: int = Field(3, ge=1, le=100, description="Frames shown per sampled output, evenly spread.")
    seed: int = Field(0, ge=0, description="Seed of the file sample: the same outputs give the same sample.")
    max_side: int = Field(1280, ge=64, description="Frames with a longer side are scaled down to it in the sheet.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of the embedded frames.")
    keep_regions: bool = Field(
        True, description="Keep the per-frame mask regions (_anonray/regions/, coordinates: personal data) after "
        "the run; false deletes the run's regions once its review sheet is written.")


class QAConfig(StrictModel):
    """Checks on every output before it is published (qa/checks.py) beyond the structural ones."""

    psnr_frames: int = Field(
        8, ge=0, le=100, description="Frames, spread over each output, on which the fidelity outside the masks is "
        "measured (qa/fidelity.py: luma PSNR against the source over the pixels no mask covers, at the source's "
        "bit depth; videos.psnr_outside_masks). 0 = not measured.")
    min_psnr_outside_masks: float = Field(
        35.0, ge=0.0, description="Outputs whose PSNR outside the masks is under this (dB) get the qa flag "
        "low_fidelity (still published).")


ZONE_LABELS = ("document", "screen", "badge", "tattoo", "poster", "other")


class ZoneConfig(StrictModel):
    """A fixed area of one camera's frames (an input folder): masked on every frame, or where nothing is masked
    that stays still inside it. As fractions of the stored frame, so that frame sizes may differ."""

    folder: str = Field(description="Input folder (relative to its root, '/'-separated; '.' = the root) whose "
                        "files, and those of its subfolders, the zone applies to.")
    action: Literal["always_mask", "never_mask"]
    box: tuple[float, float, float, float] = Field(description="[x0, y0, x1, y1] as fractions (0-1) of the "
                                                   "stored frame's width and height.")
    label: Literal[ZONE_LABELS] = "other"  # type: ignore[valid-type]

    @field_validator("box")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = v
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError("box must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return v

    @field_validator("folder")
    @classmethod
    def _relative(cls, v: str) -> str:
        parts = [p for p in v.strip().strip("/").split("/") if p not in ("", ".")]
        if ".." in parts or v.startswith("/"):
            raise ValueError("folder must be relative to the input root, without '..'")
        return "/".join(parts) or "."


class Config(StrictModel):
    classes: list[Literal["face", "plate"]] = Field(default_factory=lambda: ["face", "plate"])
    audio: Literal["keep", "drop"] = "keep"
    input: InputConfig = InputConfig()
    segment: SegmentConfig = SegmentConfig()
    detection: DetectionConfig = DetectionConfig()
    tracking: TrackingConfig = TrackingConfig()
    mask: MaskConfig = MaskConfig()
    encoder: EncoderConfig = EncoderConfig()
    resources: ResourceConfig = ResourceConfig()
    review: ReviewConfig = ReviewConfig()
    qa: QAConfig = QAConfig()
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="Per input folder (a camera): areas always masked (recorded in "
        "regions as class zone) or where tracks that stay still are not masked (counted in "
        "videos.tracks_dropped_by_zone).")

    @field_validator("classes")
    @classmethod
    def _nonempty_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one class is required")
        return sorted(set(v), key=v.index)

    @property
    def detects_people(self) -> bool:
        """Whether a run looks for people (``detection.person``): only to confirm weak faces, so only where faces
        are detected and ``tracking.face.alone_track_threshold`` asks for it."""
        return (self.detection.person.enabled and "face" in self.classes and self.detection.face.enabled
                and self.tracking.face.alone_track_threshold is not None)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of every parameter that shapes an output.

        The ``review`` section (which frames the review sheet samples), the ``resources`` section (actor
        counts, folders) and the ``qa`` section (what is measured of an output) are left out: they do not
        change what is written, so changing them must not make a rerun redo finished files.
        """
        return self.config_sha256()[:16]

    def config_sha256(self) -> str:
        """The full sha256 behind ``config_hash``."""
        left_out = {"review", "resources", "qa"} | (set() if self.zones else {"zones"})  # no zones: hashes as before
        shaping = self.model_dump(mode="json", exclude=left_out)
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def with_overrides(self, **dotted: object) -> Config:
        """A copy with dotted keys replaced, e.g. with_overrides(**{"mask.style": "solid"})."""
        raw = self.model_dump(mode="json")
        for key, value in dotted.items():
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return validate_config(raw)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def validate_config(raw: dict | None) -> Config:
    try:
        return Config.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML config file; None gives the defaults."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file is not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("config file must hold a mapping at its top level")
    return validate_config(raw)


def default_config_yaml() -> str:
    """The full default configuration as YAML (documentation and a starting point)."""
    return yaml.safe_dump(Config().model_dump(mode="json"), sort_keys=False)
