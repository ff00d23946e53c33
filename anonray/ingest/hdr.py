"""HDR static metadata of a source (SMPTE ST 2086 mastering display, CTA-861.3 content light level), read from
a decoded frame's side data into the option strings libx264 and libx265 take (``mastering-display`` /
``master-display``, ``cll`` / ``max-cll``), so re-encoded GOPs carry the same SEI messages as the source.
"""

from __future__ import annotations

import struct
from fractions import Fraction

import av

_MASTERING = "MASTERING_DISPLAY_METADATA"
_LIGHT_LEVEL = "CONTENT_LIGHT_LEVEL"
_CHROMA_UNIT = 50000  # ST 2086 / x26x: chromaticity in units of 0.00002
_LUMA_UNIT = 10000  # luminance in units of 0.0001 cd/m2


def _units(num: int, den: int, unit: int) -> int:
    return round(Fraction(num, den or 1) * unit) if den else 0


def mastering_display(frame: av.VideoFrame) -> str | None:
    """'G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)' from the frame's AVMasteringDisplayMetadata, or None (absent, or
    without both primaries and luminance)."""
    data = next((bytes(sd) for sd in frame.side_data if sd.type.name == _MASTERING), None)
    if data is None or len(data) < 88:
        return None
    v = struct.unpack("<20i2i", data[:88])  # primaries R, G, B (x, y), white point, min, max luminance
    if not (v[20] and v[21]):
        return None
    xy = [(_units(v[4 * i], v[4 * i + 1], _CHROMA_UNIT), _units(v[4 * i + 2], v[4 * i + 3], _CHROMA_UNIT))
          for i in range(4)]
    (rx, ry), (gx, gy), (bx, by), (wx, wy) = xy
    low, high = _units(v[16], v[17], _LUMA_UNIT), _units(v[18], v[19], _LUMA_UNIT)
    return f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({high},{low})"


def content_light_level(frame: av.VideoFrame) -> str | None:
    """'MaxCLL,MaxFALL' (cd/m2) from the frame's AVContentLightMetadata, or None."""
    data = next((bytes(sd) for sd in frame.side_data if sd.type.name == _LIGHT_LEVEL), None)
    if data is None or len(data) < 8:
        return None
    max_cll, max_fall = struct.unpack("<2I", data[:8])
    return f"{max_cll},{max_fall}"
