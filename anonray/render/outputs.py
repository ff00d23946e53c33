"""Output naming: where each anonymized file goes and which container it uses.

Rule (the output mirrors the input tree: same relative folder, same file stem):

1. Video is always re-encoded to H.264 (or H.265), which MP4, MOV and Matroska all hold.
2. An input whose extension is ``.mp4``, ``.m4v``, ``.mov`` or ``.mkv`` keeps its extension
   (spelling included) when every audio stream it carries fits that container unchanged, or when
   audio is dropped.
3. Otherwise the output is ``.mp4`` when every audio stream fits MP4 unchanged (or there is no
   audio, or audio is dropped), else ``.mkv``. So ``clip.avi`` with MP3 audio becomes ``clip.mp4``;
   ``clip.avi`` or ``clip.mts`` with PCM audio becomes ``clip.mkv``.
4. Audio that fits no container (rare: e.g. WMA, ADPCM in Matroska) is re-encoded to AAC.

Audio codecs that MP4 holds as a packet copy (each checked by muxing a copied stream with PyAV /
FFmpeg 8): AAC, MP3, MP2, AC-3, E-AC-3, ALAC, Opus, FLAC. MOV holds AAC, MP3, MP2, AC-3, E-AC-3,
ALAC and PCM (not Opus or FLAC). Matroska holds all of these plus Vorbis, PCM, TrueHD and DTS.
FFmpeg's own ``avformat_query_codec`` over-reports here (it accepts PCM in MP4 and FLAC/Opus in
MOV, which then fail when the header is written), hence the explicit tables.

Two outputs may collide when an input folder holds e.g. ``a.avi`` and ``a.mp4``; the caller detects
that (the planned output paths are known before any work starts).
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
