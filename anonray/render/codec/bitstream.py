"""H.264 / HEVC bitstream helpers shared by passthrough.py and chunked.py.

NAL unit parsing (Annex B and length-prefixed packets, avcC/hvcC length fields, parameter sets of extradata),
the NAL unit type tables per codec family, the MP4/MOV sample entries that allow in-band parameter sets, and
decode timestamps derived from presentation timestamps. Nothing here opens a file or encodes.
"""

from __future__ import annotations

import numpy as np

FAMILY_OF_ENCODER = {"libx264": "h264", "libx265": "hevc"}
"""Encoder -> the source codec family whose GOPs it can share one stream with."""
IDR_TYPES = {"h264": frozenset({5}), "hevc": frozenset({19, 20})}
"""NAL unit types of IDR pictures (H.264 IDR slice; HEVC IDR_W_RADL, IDR_N_LP)."""
PARAM_SET_TYPES = {"h264": frozenset({7, 8}), "hevc": frozenset({32, 33, 34})}
"""NAL unit types of parameter sets (H.264 SPS, PPS; HEVC VPS, SPS, PPS)."""
SEI_TYPES = {"h264": (6,), "hevc": (39, 40)}
"""NAL unit types of SEI messages (HEVC: prefix and suffix SEI)."""
SAMPLE_ENTRY = {"h264": "avc3", "hevc": "hev1"}
"""MP4/MOV sample entries that allow parameter sets to change in-band."""
ANNEXB_START = (b"\x00\x00\x01", b"\x00\x00\x00\x01")
"""The start codes an Annex B byte stream begins with."""
MAX_REORDER = 16
"""Largest reorder delay (frames) tried when decode timestamps are derived from the pts."""


class UnusableTimestamps(ValueError):
    """No valid decode timestamps can be given to the packets; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def nal_unit_types(data: bytes | memoryview, family: str, length_size: int | None) -> set[int]:
    """NAL unit types in one packet: Annex B (length_size None) or length-prefixed (avcC/hvcC, 1-4 bytes)."""
    if length_size is None:
        data = bytes(data)
        starts = annexb_starts(data)
    else:
        starts = prefixed_starts(data, length_size)
    return {nal_type(data[i], family) for i in starts}


def nal_type(first_byte: int, family: str) -> int:
    """The NAL unit type in a unit's first header byte (H.264: low 5 bits; HEVC: bits 1-6)."""
    return first_byte & 0x1F if family == "h264" else (first_byte >> 1) & 0x3F


def annexb_starts(data: bytes) -> list[int]:
    """Offsets of the first header byte of every NAL unit in Annex B data (just after each start code)."""
    starts, i = [], data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    return starts


def prefixed_starts(data: bytes | memoryview, size: int) -> list[int]:
    """Offsets of the first header byte of every NAL unit in data whose units carry a ``size``-byte length."""
    starts, i = [], 0
    while i + size < len(data):
        starts.append(i + size)
        i += size + int.from_bytes(data[i:i + size], "big")
    return starts


def length_size(extradata: bytes | None, family: str) -> int | None:
    """NAL length field size of a length-prefixed stream (from its avcC/hvcC); None for Annex B."""
    if not extradata or extradata[0] != 1:
        return None
    byte = extradata[4] if family == "h264" else extradata[21] if len(extradata) > 21 else 3
    return (byte & 3) + 1


def is_annexb(data: bytes) -> bool:
    """Whether data starts with an Annex B start code."""
    return data.startswith(ANNEXB_START)


def parameter_sets(extradata: bytes, family: str) -> tuple[bytes, ...]:
    """The parameter-set NAL units (H.264 SPS, PPS; HEVC VPS, SPS, PPS) of Annex B extradata, in order; other
    units (x265's SEI naming its options) are left out. Extradata that is not Annex B: the whole of it."""
    if not is_annexb(extradata):
        return (extradata,)
    starts = annexb_starts(extradata)
    units = [extradata[a:b - 3].rstrip(b"\x00") for a, b in zip(starts, [*starts[1:], len(extradata) + 3],
                                                                 strict=True)]
    return tuple(u for u in units if u and nal_type(u[0], family) in PARAM_SET_TYPES[family])


def decode_timestamps(pts: np.ndarray, dts: list[int | None]) -> np.ndarray:
    """The given dts where every packet has one, strictly increasing and never after its pts; otherwise the
    sorted pts delayed by the smallest reorder depth that keeps every dts <= its pts. UnusableTimestamps
    where packets share a pts or no depth up to MAX_REORDER fits."""
    if pts.size and all(d is not None for d in dts):
        given = np.asarray(dts, np.int64)
        if bool(np.all(np.diff(given) > 0)) and bool(np.all(given <= pts)):
            return given
    ordered = np.sort(pts)
    if ordered.size and bool(np.any(np.diff(ordered) <= 0)):
        raise UnusableTimestamps("video packets with the same timestamp")
    step = int(np.diff(ordered).min()) if ordered.size > 1 else 1
    for delay in range(min(MAX_REORDER, pts.size) + 1):
        lead = ordered[0] - step * np.arange(delay, 0, -1, dtype=np.int64)
        derived = np.concatenate([lead, ordered[: pts.size - delay]])
        if bool(np.all(derived <= pts)):
            return derived
    raise UnusableTimestamps("no decode timestamps fit the packets' presentation order")
