"""The encode stage of one video in one task: the full transcode, or the smart passthrough where it can run.

render/video.py calls ``encode_video`` for every video it does not encode in chunks (chunked.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anonray.config import Config
from anonray.render.codec.passthrough import PassthroughOutcome, PassthroughUnsupported, passthrough_transcode
from anonray.render.codec.settings import for_source
from anonray.render.codec.transcoder import FrameHook, TranscodeStats, output_format, transcode
from anonray.types import MaskPlan, VideoInfo


def encode_video(src: Path, dst: Path, info: VideoInfo, cfg: Config, frame_hook: FrameHook | None,
                 plan: MaskPlan, frame_pts: np.ndarray, skip_damaged: bool = False,
                 ) -> tuple[TranscodeStats, PassthroughOutcome | None]:
    """transcoder.transcode, or with encoder.passthrough the smart passthrough where it can run (else the full
    transcode, with the reason in the outcome). The outcome is None with passthrough off."""
    cfg = for_source(cfg, info)
    if not cfg.encoder.passthrough:
        return transcode(src, dst, info, cfg, frame_hook, skip_damaged=skip_damaged), None
    output_format(dst)  # an unknown output suffix fails as EncodeError before any work
    try:
        if skip_damaged:
            raise PassthroughUnsupported("damaged input (input.on_damage: mask_whole_frame)")
        return passthrough_transcode(src, dst, info, cfg, frame_hook, plan, frame_pts)
    except PassthroughUnsupported as why:
        stats = transcode(src, dst, info, cfg, frame_hook, skip_damaged=skip_damaged)
        return stats, PassthroughOutcome(fallback=why.reason)
