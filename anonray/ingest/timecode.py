"""SMPTE timecode: where FFmpeg reports a file's start timecode, and the form anonray keeps it in.

FFmpeg shows a start timecode as a ``timecode`` tag in several places: on the container (MXF material
package, DV, files written with ``-timecode``), on the video stream (MOV/MP4 with a ``tmcd`` track,
Matroska ``TIMECODE`` tags), on a data stream (the ``tmcd`` track itself) or, for MPEG-2 GOP headers
and H.264 timing SEI, on the first decoded frame. ``timecode_of`` looks in that order (the order in
which FFmpeg's MOV muxer picks the tag it writes).

A timecode is kept only in its canonical form ``hh:mm:ss:ff`` (``hh:mm:ss;ff`` for drop-frame) and
only where it is valid at the video's frame rate: the MOV/MP4 muxer silently drops or rewrites any
other, so such a tag could not be carried to the output unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import av

_PATTERN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2})$")


def canonical(text: str | None, fps: float) -> str | None:
    """``text`` as ``hh:mm:ss:ff`` (``;`` before ``ff`` for drop-frame), or None where it is not a valid
    SMPTE timecode at ``fps`` frames per second (frames past the rate, drop-frame off multiples of
    30000/1001); with ``fps`` unknown (0) only the form is checked."""
    match = _PATTERN.match((text or "").strip())
    if not match:
        return None
    hh, mm, ss, sep, ff = match.groups()
    rate = round(fps) if fps and fps > 0 else 0
    drop = sep != ":"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59 or (rate and int(ff) >= rate):
        return None
    if drop and rate % 30:
        return None
    return f"{int(hh):02d}:{mm}:{ss}{';' if drop else ':'}{ff}"


def _tag(metadata: Mapping[str, str]) -> str | None:
    """The ``timecode`` tag of a metadata dictionary, whatever its case (Matroska writes ``TIMECODE``)."""
    return next((v for k, v in metadata.items() if k.lower() == "timecode"), None)


def _candidates(container: av.container.InputContainer, video: av.VideoStream,
                first_frame: av.VideoFrame | None) -> Iterable[str | None]:
    yield _tag(container.metadata)
    yield _tag(video.metadata)
    for stream in container.streams.data:
        yield _tag(stream.metadata)
    if first_frame is not None:
        yield _tag(first_frame.metadata)


def timecode_of(container: av.container.InputContainer, video: av.VideoStream,
                first_frame: av.VideoFrame | None, fps: float) -> str | None:
    """The file's start timecode in canonical form (see ``canonical``), or None where it has no valid one."""
    for text in _candidates(container, video, first_frame):
        value = canonical(text, fps)
        if value is not None:
            return value
    return None
