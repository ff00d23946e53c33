"""The encoder settings for one source: which encoder writes it (``encoder.codec: auto`` follows the source's
codec family), the encoder's options (CRF or a bitrate, preset, field order, the source's HDR metadata) and the
cap on the output's video bitrate (``encoder.max_bitrate_ratio``, as VBV limits).

The cap holds over a whole file however short: an encoder may start with its VBV buffer VBV_INITIAL_FULLNESS
full, i.e. spend that much of it on top of ``maxrate x seconds``, so the maxrate of an encode of ``seconds``
is set to fit both within the allowed bits (``rate_cap``).
"""

from __future__ import annotations

from dataclasses import dataclass

from anonray.config import Config, EncoderConfig
from anonray.render.codec.bitstream import FAMILY_OF_ENCODER
from anonray.types import VideoInfo

SOURCE_ENCODERS = {family: encoder for encoder, family in FAMILY_OF_ENCODER.items()}
"""encoder.codec auto: the source's codec (FFmpeg decoder name) -> the encoder of its family; others libx264."""
DEFAULT_ENCODER = "libx264"

VBV_SECONDS = (0.5, 1.0)
"""The VBV buffer, in seconds at the capped rate: half the encode's length within these bounds (an IDR picture
needs about half a second's bits at CRF 20; a longer buffer on a short encode leaves its other frames fewer)."""
VBV_INITIAL_FULLNESS = 0.9
"""How full libx264's and libx265's VBV buffer starts (their vbv-init default)."""
CAP_SAFETY = 0.97
"""Head room under the cap for what the VBV model does not count exactly."""


def encoder_for(setting: str, source_codec: str) -> str:
    """The encoder for ``encoder.codec`` (``auto``: by the source's codec family) and a source codec."""
    if setting != "auto":
        return setting
    return SOURCE_ENCODERS.get(source_codec, DEFAULT_ENCODER)


def for_source(config: Config, info: VideoInfo) -> Config:
    """The config a video is rendered with: ``encoder.codec`` resolved for its source codec."""
    codec = encoder_for(config.encoder.codec, info.video_codec)
    return config if codec == config.encoder.codec else config.with_overrides(**{"encoder.codec": codec})


@dataclass(frozen=True)
class RateCap:
    """VBV limits (bit/s, bits) that keep an encode's video bitrate under the cap."""

    max_rate: int
    buffer_bits: int


def rate_cap(enc: EncoderConfig, info: VideoInfo | None, seconds: float | None = None) -> RateCap | None:
    """The VBV limits for an encode of ``seconds`` (default: the whole video) of this source, or None: no cap
    (``max_bitrate_ratio`` null, a target ``bitrate`` set, or the source's bitrate unknown).

    Bits written <= initial fullness x buffer + max_rate x seconds <= CAP_SAFETY x ratio x source rate x seconds.
    """
    if enc.max_bitrate_ratio is None or enc.bitrate is not None or info is None or info.video_bitrate is None:
        return None
    seconds = info.duration_seconds if seconds is None else seconds
    if seconds <= 0:
        return None
    allowed = CAP_SAFETY * enc.max_bitrate_ratio * info.video_bitrate
    buffer_seconds = min(max(seconds / 2, VBV_SECONDS[0]), VBV_SECONDS[1])
    max_rate = allowed * seconds / (seconds + VBV_INITIAL_FULLNESS * buffer_seconds)
    return RateCap(max(int(max_rate), 1000), max(int(max_rate * buffer_seconds), 1000))


def hdr_params(codec: str, info: VideoInfo) -> list[str]:
    """x264/x265 parameters that write the source's HDR static metadata (SEI) into the re-encoded video."""
    params = []
    if info.mastering_display:
        params.append(f"{'mastering-display' if codec == 'libx264' else 'master-display'}={info.mastering_display}")
    if info.content_light_level:
        params.append(f"{'cll' if codec == 'libx264' else 'max-cll'}={info.content_light_level}")
    return params


def encoder_options(enc: EncoderConfig, interlace: str | None = None, info: VideoInfo | None = None,
                    seconds: float | None = None) -> dict[str, str]:
    """The encoder's options: CRF (or ``encoder.bitrate``), preset, the bitrate cap for an encode of ``seconds``
    of ``info``'s source, its HDR metadata, no closed captions (x264), field order, quiet x265."""
    opts = {"preset": enc.preset}
    if enc.bitrate is not None:
        opts["b"] = str(enc.bitrate)
    else:
        opts["crf"] = str(enc.crf)
    cap = rate_cap(enc, info, seconds)
    if cap is not None:
        opts["maxrate"], opts["bufsize"] = str(cap.max_rate), str(cap.buffer_bits)
    params = hdr_params(enc.codec, info) if info is not None else []
    if enc.codec == "libx264":
        opts["a53cc"] = "0"  # never carry closed captions from the source into the output
        if interlace is not None:
            params.insert(0, "interlaced=1" if interlace == "auto" else f"{interlace}=1")
    else:
        params.insert(0, "log-level=error")
    if params:
        opts["x264-params" if enc.codec == "libx264" else "x265-params"] = ":".join(params)
    return opts
