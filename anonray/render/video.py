"""Render one video's anonymized output: track, plan masks, decode at full size, mask, encode, publish.

No Ray here: ``render_video`` takes a video's detections and returns counters for the tables. The
output is written under ``_anonray/tmp`` in the output folder, checked, then renamed into place, so a
final path never holds a partial file. For a URI output (``s3://...``) it is written and checked in a
private local folder of the worker instead, then uploaded to its key (remote_output.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import av
import numpy as np

from anonray.config import Config
from anonray.corrections.carry import FLAG_CORRECTIONS_UNMAPPED, carry
from anonray.errors import Failure, FileFailure
from anonray.handoff import RenderResult, VideoDetections
from anonray.layout import TMP_DIR_NAME
from anonray.qa.checks import OutputRead, QAError, anomaly_flags, check_output, mask_statistics
from anonray.qa.fidelity import FLAG_LOW_FIDELITY, psnr_outside_masks, sampled_indices, source_luma
from anonray.records.frame_times import write_frame_pts
from anonray.records.regions import read_regions, write_regions
from anonray.render.codec.bitstream import FAMILY_OF_ENCODER
from anonray.render.codec.chunked import (
    ChunkError,
    ChunkJob,
    ChunkRunner,
    EncodedChunk,
    EncodedChunks,
    encode_chunk,
    encoded_here,
    join_chunks,
    plan_chunks,
)
from anonray.render.codec.encode_stage import encode_video
from anonray.render.codec.passthrough import PassthroughOutcome, PassthroughUnsupported
from anonray.render.codec.settings import for_source
from anonray.render.codec.splice import SpliceSource, splice_transcode
from anonray.render.codec.transcoder import EncodeError, TranscodeStats, output_format, working_name
from anonray.render.mask import fill_whole_frame, luma_samples, mask_frame, sample_depth_of
from anonray.render.outputs import output_relative_path
from anonray.store import storage
from anonray.store.checksums import sha256_file
from anonray.store.remote_output import UriTarget
from anonray.track.scenes import find_cuts
from anonray.track.tracker import TrackingSummary, plan_masks, summary_of
from anonray.track.zones import zones_for
from anonray.types import MaskPlan, VideoInfo, video_bitrate

log = logging.getLogger("anonray")

class RenderError(FileFailure):
    """A per-file failure while rendering."""


FLAG_DAMAGED_FRAMES = "damaged_frames"
"""qa_flags entry of an output written with input.on_damage = mask_whole_frame that masked or lost frames."""


class MaskHook:
    """The frame hook handed to the transcoder: masks each frame by its pts, refuses unknown frames.

    With ``whole_frame`` (input.on_damage = mask_whole_frame on a damaged video), a frame detection
    never analysed is filled whole with the mask colour instead of refused.
    """

    def __init__(self, plan: MaskPlan, frame_pts: np.ndarray, config: Config, whole_frame: bool = False,
                 sample_at: Collection[int] = ()):
        """``sample_at``: presentation indices whose luma is kept, as decoded and before masking, in
        ``source_luma`` (the fidelity measure's source frames, without decoding the source again)."""
        self._plan = plan
        self.sample_at = frozenset(sample_at)
        self.source_luma: dict[int, np.ndarray] = {}
        self._regions = plan.regions_by_frame()
        self._index_of_pts = {int(p): i for i, p in enumerate(frame_pts) if p >= 0}
        self._mask_config = config.mask
        self._whole_frame = whole_frame
        self.written_pts: list[int] = []
        """pts of every frame handed to the encoder, in decode order."""
        self.masked_whole = 0

    def __call__(self, frame_index: int, frame: av.VideoFrame) -> av.VideoFrame:
        index = self._index_of_pts.get(int(frame.pts)) if frame.pts is not None else None
        if index is None:
            if not self._whole_frame or frame.pts is None:
                raise RenderError("frame_not_analysed",
                                  f"frame {frame_index} was not seen by detection; refusing to write it unmasked")
            self.written_pts.append(int(frame.pts))
            self.masked_whole += 1
            return fill_whole_frame(frame, self._mask_config)
        self.written_pts.append(int(frame.pts))
        if index in self.sample_at:
            self.source_luma[index] = luma_samples(frame)
        rows = self._regions.get(index)
        if rows is None:
            return frame
        return mask_frame(frame, self._plan.xyxy[rows], self._plan.shape[rows], self._mask_config)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _check_input_unchanged(source: Path | str, info: VideoInfo, full: bool) -> None:
    """Raise input_vanished / input_changed when the input is gone or differs from what ingest saw.

    full=False compares the size only (cheap), and for a URI read by ranges the object's modification time
    too; full=True re-hashes the (local) file (one more read).
    """
    try:
        if storage.is_uri(source):
            remote = storage.stat(str(source))
            size, changed = remote.size, remote.mtime_ns != info.mtime_ns
        else:
            size, changed = Path(source).stat().st_size, False
        digest = sha256_file(source) if full and size == info.size_bytes else None
    except FileNotFoundError:
        raise RenderError("input_vanished",
                          f"{info.relative_path}: the input file was removed during the run") from None
    if changed or size != info.size_bytes or (digest is not None and digest != info.sha256):
        raise RenderError("input_changed",
                          f"{info.relative_path}: the input file changed during the run (its size or sha256 "
                          "differs from when it was ingested); no output was written")


def _local_input(info: VideoInfo, stack: contextlib.ExitStack) -> Path:
    """The input's local path; a URI input is staged into a private copy whose bytes the later checks
    compare with the ingest hash (so what is rendered is what was ingested)."""
    if not storage.is_uri(info.source_path):
        return Path(info.source_path)
    try:
        local, _ = stack.enter_context(storage.staged(info.source_path))
    except FileNotFoundError:
        raise RenderError("input_vanished",
                          f"{info.relative_path}: the input file was removed during the run") from None
    except storage.StorageError as err:
        raise RenderError("storage_error", f"{info.relative_path}: {err}") from None
    return local


@dataclass
class _LocalTarget:
    """A local or mounted output folder: outputs are written under ``_anonray/tmp`` (the same filesystem)
    and renamed into place (``UriTarget`` in remote_output.py is the same for a URI output)."""

    output_dir: Path
    state_dir: Path

    def is_source(self, relative: str, source: Path | str) -> bool:
        return (self.output_dir / relative).resolve() == Path(source).resolve()

    def tmp_dir(self) -> Path:
        folder = self.state_dir / TMP_DIR_NAME
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_regions(self, run_id: str, video_id: str, plan: MaskPlan, frame_pts: np.ndarray) -> None:
        """The regions and the frames' timestamps (what ``anonray apply`` renders from again)."""
        write_regions(self.state_dir, run_id, video_id, plan)
        write_frame_pts(self.state_dir, run_id, video_id, frame_pts)

    def publish(self, tmp: Path, relative: str) -> None:
        final = self.output_dir / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def close(self) -> None:
        pass


def _output_target(output_dir: Path | str, state_dir: Path):
    if not storage.is_uri(output_dir):
        return _LocalTarget(Path(output_dir), state_dir)
    return UriTarget(str(output_dir))


def mask_plan(video: VideoDetections, config: Config) -> tuple[MaskPlan, TrackingSummary, np.ndarray]:
    """The video's mask plan from its detections (scene cuts bound the tracks), its tracking summary and cuts."""
    info = video.info
    cuts = find_cuts(video.signatures, config.tracking.scene_cut_threshold)
    plan, summary = plan_masks(video.detections, info.frame_count, info.width, info.height, config, cuts,
                               zones_for(config.zones, info.relative_path), info.rotation)
    return plan, summary, cuts


@dataclass(frozen=True)
class CarryOutcome:
    correction_ids: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


def carry_corrections(video: VideoDetections, plan: MaskPlan, state_dir: Path) -> tuple[MaskPlan, CarryOutcome]:
    """The new plan with the reviewers' corrections of the file's current output carried over (carry.py);
    flagged ``corrections_unmapped`` where they cannot be (a changed input, regions gone, a removal that a new
    track overlaps only in part)."""
    source, info = video.carry, video.info
    if source is None:
        return plan, CarryOutcome()
    def regions_of(run_id: str) -> MaskPlan | None:
        return read_regions(state_dir, run_id, info.video_id, info.frame_count)

    links = [(regions_of(before), regions_of(corrected)) for before, corrected in source.links]
    if any(b is None or c is None for b, c in links) or info.sha256 != source.sha256_in:
        return plan, CarryOutcome(flags=(FLAG_CORRECTIONS_UNMAPPED,))
    carried, unmapped = carry(plan, links)
    return carried, CarryOutcome(source.correction_ids, (FLAG_CORRECTIONS_UNMAPPED,) if unmapped else ())


def _planned(video: VideoDetections, config: Config, plan: MaskPlan | None,
             state_dir: Path) -> tuple[MaskPlan, TrackingSummary, np.ndarray, CarryOutcome]:
    """The plan to render (tracked here with the reviewers' corrections carried, or the one given), its counts,
    the scene cuts and what was carried."""
    if plan is not None:
        return plan, summary_of(plan), np.zeros(0, np.int64), CarryOutcome()
    plan, summary, cuts = mask_plan(video, config)
    plan, carried = carry_corrections(video, plan, state_dir)
    if video.carry is not None:
        summary = summary_of(plan, summary.dropped_by_zone)
    return plan, summary, cuts, carried


def render_chunk(job: ChunkJob, config: Config, source: Path | None = None) -> EncodedChunk:
    """Decode, mask and encode one chunk of a long video (chunked.py): the chunk task's work, on any node.

    ``source``: the input's local path; None reads a local input in place and a URI input by range requests
    (only the chunk's stretch), falling back to a private local copy, deleted afterwards, when that fails.
    Raises RenderError / EncodeError on a per-file failure.
    """
    info = job.info
    if source is None and storage.is_uri(info.source_path):
        try:  # only this chunk's stretch of the object, by range requests (storage.py)
            return _render_chunk_from(info.source_path, job, config)
        except (EncodeError, OSError) as err:  # RenderError (input changed or gone) is final
            log.warning("video %s chunk %d: reading the input by ranges failed (%s); rendering from a local "
                        "copy", info.video_id, job.index, Failure.of(err, type(err).__name__).error_class)
    with contextlib.ExitStack() as inputs:
        return _render_chunk_from(source if source is not None else _local_input(info, inputs), job, config)


def _render_chunk_from(source: Path | str, job: ChunkJob, config: Config) -> EncodedChunk:
    _check_input_unchanged(source, job.info, full=False)
    hook = MaskHook(job.plan, job.frame_pts, config, sample_at=job.sample_at)
    try:
        described, payload = encode_chunk(source, job, config, hook)
        first = job.frames.first_frame_index
        return replace(described, source_luma={first + k: v for k, v in hook.source_luma.items()}), payload
    except EncodeError:
        _check_input_unchanged(source, job.info, full=False)  # a vanished input explains the failure
        raise


def encode_chunks_here(source: Path, jobs: list[ChunkJob], config: Config) -> EncodedChunks:
    """The ChunkRunner without Ray: the chunks one after another in this process."""
    return encoded_here(lambda job: render_chunk(job, config, source), jobs)


def _encode(source: Path, tmp: Path, video: VideoDetections, plan: MaskPlan, config: Config, hook: MaskHook,
            whole: bool, chunk_runner: ChunkRunner | None, spread: int = 1,
            splice: SpliceSource | None = None) -> tuple[TranscodeStats, PassthroughOutcome | None, int]:
    """Write tmp: in one pass (encode_video), or for a long video (or a small run's, ``spread``) in chunks
    joined into one file (chunked.py); with ``splice`` (apply, encoder.passthrough) only the current output's
    GOPs whose masks change are rendered again (splice.py). Returns (stats, passthrough outcome, chunks)."""
    info = video.info
    if splice is not None and not whole and config.encoder.passthrough:
        try:
            stats, outcome = splice_transcode(splice.current, source, tmp, info, config, hook,
                                              [s.segment for s in video.segments], splice.changed_frames)
            return stats, outcome, 1
        except PassthroughUnsupported as why:
            log.info("video %s: rendering the whole file again (%s)", info.video_id, why.reason)
    jobs = [] if whole else plan_chunks(video, plan, config, output_format(tmp), spread, sorted(hook.sample_at))
    if not jobs:
        stats, passthrough = encode_video(source, tmp, info, config, hook, plan, video.frame_pts,
                                          skip_damaged=whole)
        return stats, passthrough, 1
    chunks = (chunk_runner or encode_chunks_here)(source, jobs, config)
    for described in chunks.packets:
        hook.source_luma.update(described.source_luma)
    return join_chunks(source, tmp, info, config, chunks, jobs[0].cap_seconds), None, len(jobs)


def render_video(video: VideoDetections, config: Config, output_dir: Path | str, state_dir: Path,
                 run_id: str | None = None, chunk_runner: ChunkRunner | None = None,
                 spread: int = 1, plan: MaskPlan | None = None, splice: SpliceSource | None = None) -> RenderResult:
    """Track, mask and encode one video into ``output_dir`` (a folder or a URI); raise RenderError on a
    per-file failure (``upload_failed`` when a URI output could not be uploaded and checked).

    With ``run_id``, the mask plan's regions are written to the restricted regions table (records/regions.py)
    before the output is published, so every published output of a run has its regions.

    A long video is encoded in chunks (``encoder.chunk_seconds``) by ``chunk_runner`` (the driver's runs
    them as Ray tasks; None: one after another here), then joined here; QA and publishing are the same.
    ``spread``, the render slots per video of a small run (resources.render_spread), cuts shorter videos too
    (``encoder.min_chunk_seconds``). ``plan``: masks made elsewhere (``anonray apply``), else tracked here;
    ``splice``: apply's current output, of which only the GOPs whose masks change are rendered again.
    """
    info = video.info
    config = for_source(config, info)  # encoder.codec auto -> the source's family
    started = time.perf_counter()
    plan, summary, cuts, carried = _planned(video, config, plan, state_dir)
    seconds_track = time.perf_counter() - started

    relative_out = output_relative_path(info.relative_path, info, config.audio)
    suffix = PurePosixPath(relative_out).suffix
    target = _output_target(output_dir, state_dir)
    if target.is_source(relative_out, info.source_path):
        raise RenderError("output_is_input", "the output path would overwrite the input")
    started = time.perf_counter()
    inputs = contextlib.ExitStack()  # a URI input's private local copy (storage.py), deleted at the end
    inputs.callback(target.close)  # a URI output's private local folder, deleted with what is left in it
    try:
        tmp = target.tmp_dir() / f"{info.video_id}-{uuid.uuid4().hex[:8]}{suffix}"
        source = _local_input(info, inputs)
        _check_input_unchanged(source, info, full=False)
    except BaseException:
        inputs.close()
        raise
    # input.on_damage = mask_whole_frame: frames detection never saw are filled whole, frames the decoder
    # cannot produce here either are left out (counted as lost); QA then expects exactly the frames written.
    whole = config.input.on_damage == "mask_whole_frame" and video.damaged
    # fidelity outside the masks on a few frames (not where damaged frames were filled or left out)
    sampled = [] if whole else sampled_indices(info.frame_count, config.qa.psnr_frames)
    hook = MaskHook(plan, video.frame_pts, config, whole_frame=whole, sample_at=sampled)
    try:
        written = _write_checked(source, tmp, video, plan, config, hook, whole, chunk_runner, spread, splice)
        try:
            if run_id is not None:
                target.write_regions(run_id, info.video_id, plan, video.frame_pts)
            target.publish(tmp, relative_out)
        except storage.UploadError as err:
            raise RenderError("upload_failed", f"{relative_out}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
        inputs.close()
    seconds_encode = time.perf_counter() - started
    return RenderResult(
        output_path=relative_out,
        sha256_out=written.sha256,
        size_bytes_out=written.size_bytes,
        frames_out=written.stats.frames_out,
        video_codec_out=FAMILY_OF_ENCODER[config.encoder.codec],
        container_out=suffix.lstrip("."),
        tracks=summary.tracks,
        tracks_dropped_by_zone=summary.dropped_by_zone,
        frames_masked=summary.frames_masked,
        seconds_track=seconds_track,
        seconds_encode=seconds_encode,
        audio_packets_copied=written.stats.audio_packets_copied,
        mask_statistics=mask_statistics(plan),
        qa_flags=tuple(sorted((*_qa_flags(video, plan, cuts, config, hook, written), *carried.flags))),
        corrections=carried.correction_ids,
        seconds_qa=written.seconds_qa,
        frames_masked_whole=hook.masked_whole,
        frames_lost=written.frames_lost,
        passthrough=written.passthrough,
        encode_chunks=written.chunks,
        pixel_format_out=written.qa_read.pixel_format,
        video_bitrate_out=video_bitrate(written.qa_read.video_packet_bytes, info.duration_seconds),
        psnr_outside_masks=written.psnr_outside_masks,
    )


def _qa_flags(video: VideoDetections, plan: MaskPlan, cuts: np.ndarray, config: Config, hook: MaskHook,
              written: WrittenOutput) -> tuple[str, ...]:
    """The anomaly flags of the mask plan (qa/checks.py), damaged_frames and low_fidelity, sorted."""
    flags = anomaly_flags(plan, cuts, video.info.fps, [sum(s.detections.values()) for s in video.segments],
                          [s.segment.frame_count for s in video.segments])
    if hook.masked_whole or written.frames_lost:
        flags = [*flags, FLAG_DAMAGED_FRAMES]
    psnr = written.psnr_outside_masks
    if psnr is not None and psnr < config.qa.min_psnr_outside_masks:
        flags = [*flags, FLAG_LOW_FIDELITY]
    return tuple(sorted(flags))


@dataclass(frozen=True)
class WrittenOutput:
    """An output file written and checked, not yet published."""

    stats: TranscodeStats
    passthrough: PassthroughOutcome | None
    chunks: int
    frames_lost: int
    seconds_qa: float
    sha256: str
    size_bytes: int
    qa_read: OutputRead
    psnr_outside_masks: float | None


def _write_checked(source: Path, tmp: Path, video: VideoDetections, plan: MaskPlan, config: Config,
                   hook: MaskHook, whole: bool, chunk_runner: ChunkRunner | None, spread: int,
                   splice: SpliceSource | None = None) -> WrittenOutput:
    """Encode tmp, check its frame count and QA it, check the input did not change meanwhile, hash it."""
    info = video.info
    try:
        stats, passthrough, chunks = _encode(source, tmp, video, plan, config, hook, whole, chunk_runner, spread,
                                             splice)
    except (EncodeError, ChunkError):
        _check_input_unchanged(source, info, full=False)  # a vanished input explains the failure
        raise
    frames_lost = info.frame_count - stats.frames_out if whole else 0
    if whole and stats.frames_out == 0:
        raise RenderError("damaged_frames", f"none of the {info.frame_count} frames could be decoded; "
                          "no output was written")
    if stats.frames_out != info.frame_count - frames_lost or frames_lost < 0:
        raise RenderError("frame_count_mismatch", f"wrote {stats.frames_out} frames, the input has {info.frame_count}")
    expected_pts = np.asarray(hook.written_pts, np.int64) if whole else video.frame_pts
    sampled = sorted(hook.sample_at)
    try:  # decodable end to end, same frames, timestamps, size, format and audio as the input (qa/checks.py)
        qa_read = check_output(tmp, info, expected_pts, config.audio, frames_lost, config.encoder.codec, sampled)
    except QAError as err:
        raise RenderError(err.error_class, str(err)) from None
    started = time.perf_counter()
    psnr = _psnr_outside_masks(source, video, plan, qa_read, hook)
    hook.source_luma.clear()
    qa_read.luma.clear()  # up to qa.psnr_frames full-size planes: not kept past the measure
    _check_input_unchanged(source, info, full=True)  # what was rendered is what was ingested
    _fsync(tmp)
    return WrittenOutput(stats, passthrough, chunks, frames_lost, qa_read.seconds + time.perf_counter() - started,
                         sha256_file(tmp), tmp.stat().st_size, qa_read, psnr)


def _psnr_outside_masks(source: Path, video: VideoDetections, plan: MaskPlan, qa_read: OutputRead,
                        hook: MaskHook) -> float | None:
    """qa/fidelity.py's measure on the hook's sampled frames (None when none were sampled or none decoded)."""
    if not hook.sample_at:
        return None
    info = video.info
    # both sides in the output's pixel format (the source's depth wherever the encoder holds it: libx264 up to 10
    # bits, libx265 12); the mask hook kept the frames it saw in that (working) format as it went, GOPs that
    # passthrough copied never reached it
    working = working_name(qa_read.pixel_format)
    depth = sample_depth_of(working)
    if depth is None:
        return None
    source_frames = dict(hook.source_luma)
    missing = sorted(hook.sample_at - source_frames.keys())
    try:
        source_frames.update(source_luma(source, info, [s.segment for s in video.segments], missing, working))
    except (av.error.FFmpegError, OSError) as err:
        log.warning("video %s: the fidelity measure could not decode the input (%s)", info.video_id,
                    type(err).__name__)
        return None
    return psnr_outside_masks(source_frames, qa_read.luma, plan, depth)
