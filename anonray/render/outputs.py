"""Output naming: where each anonymized file goes and which container it uses.

The output mirrors the input tree (same relative folder, same file stem). An ``.mp4``, ``.m4v``, ``.mov``
or ``.mkv`` input keeps its extension when every audio stream fits that container unchanged (or audio is
dropped); otherwise the output is ``.mp4`` when the audio fits MP4 unchanged, else ``.mkv``. Audio that fits
no container is re-encoded to AAC. Which container holds which audio codec is an explicit table here, not
FFmpeg's own answer; the full rule and why: docs/design.md, "render/outputs.py".
"""

from __future__ import annotations

from pathlib import PurePosixPath

import av

from anonray.types import VideoInfo

_MP4_AUDIO = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac", "opus", "flac"})
_PCM = frozenset({
    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be",
    "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be", "pcm_u8", "pcm_s8",
})
_MOV_AUDIO = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac"}) | _PCM
_MKV_AUDIO = _MP4_AUDIO | frozenset({"vorbis", "truehd", "dts"}) | (
    _PCM - {"pcm_s16be", "pcm_s24be", "pcm_s32be", "pcm_f32be", "pcm_f64be", "pcm_s8"}
)

AUDIO_BY_FORMAT: dict[str, frozenset[str]] = {"mp4": _MP4_AUDIO, "mov": _MOV_AUDIO, "matroska": _MKV_AUDIO}
"""Audio codecs (canonical names) each output muxer takes as an unchanged packet copy."""

_FORMAT_BY_EXT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_format_for(ext: str) -> str:
    """The muxer name for an output extension ('.mp4' or 'mp4'): 'mp4', 'mov' or 'matroska'."""
    key = "." + ext.lower().lstrip(".")
    try:
        return _FORMAT_BY_EXT[key]
    except KeyError:
        raise ValueError(f"no output container for extension {ext!r}") from None


def canonical_audio_codec(name: str) -> str:
    """The codec's canonical name ('mp3float' -> 'mp3', 'aac_fixed' -> 'aac', 'libopus' -> 'opus')."""
    if not name:
        return ""
    try:
        return av.codec.Codec(name, "r").canonical_name
    except (ValueError, av.error.FFmpegError):
        return name


def audio_fits(codec: str, container_format: str) -> bool:
    """Whether an audio stream of this codec can be packet-copied into the muxer unchanged."""
    return canonical_audio_codec(codec) in AUDIO_BY_FORMAT.get(container_format, frozenset())


def _all_audio_fit(info: VideoInfo, audio_mode: str, container_format: str) -> bool:
    if audio_mode == "drop":
        return True
    return all(audio_fits(a.codec, container_format) for a in info.audio)


def output_extension(info: VideoInfo, audio_mode: str, input_ext: str) -> str:
    """The output extension (with its dot) for an input with this extension."""
    if input_ext.lower() in _FORMAT_BY_EXT and _all_audio_fit(
        info, audio_mode, _FORMAT_BY_EXT[input_ext.lower()]
    ):
        return input_ext
    return ".mp4" if _all_audio_fit(info, audio_mode, "mp4") else ".mkv"


def output_relative_path(relative_path: str, info: VideoInfo, audio_mode: str) -> str:
    """The output path relative to the output root: same folder and stem, container by the rule above."""
    path = PurePosixPath(relative_path)
    return str(path.with_suffix(output_extension(info, audio_mode, path.suffix)))
