"""Real footage from the evaluation data, end to end through Ray, masked in solid magenta.

Three clips (a 1080p street with many faces, a 720p car with a UK plate, a 360p speaker) run through
the pipeline once. Each output must keep the input's frames, size, timestamps and audio packets;
the tables must show detections; and the masks are judged from pixels, since real footage has no
box labels: magenta blobs where the records say frames were masked, the picture elsewhere equal to
the input up to codec noise.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_audio, assert_same_times, mask_pixels, solid_config

from anonray.ingest.probe import probe
from anonray.render.codec.transcoder import transcode
from anonray.render.outputs import output_relative_path
from anonray.runtime.driver import RunRequest, run
from benchmarks.accuracy.datasets import DEFAULT_DATA

VIDEOS = DEFAULT_DATA / "videos"
if not VIDEOS.is_dir():
    pytest.skip(f"{VIDEOS} is absent: real-footage tests need the evaluation data", allow_module_level=True)

pytestmark = pytest.mark.slow

CLIPS = ["street_faces_1080p.mp4", "car_plate_720p.mp4", "speech_face_360p.mp4"]
FACES = {"street_faces_1080p.mp4", "speech_face_360p.mp4"}
PLATES = {"car_plate_720p.mp4"}
BLOB_PIXELS = 64  # a frame "shows a mask" when at least this many pixels are magenta
FAR_MARGIN = 32  # pixels this close to a masked pixel are not compared with the input
MASK_PRECISION = {"street_faces_1080p.mp4": (0.5, 8.0), "car_plate_720p.mp4": (0.3, 5.0),
                  "speech_face_360p.mp4": (0.55, 2.5)}
"""Per clip: the least mask precision and the most false masks per labelled frame accepted (issue 14)."""


@pytest.fixture(scope="module")
def footage(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    inputs = root / "in"
    inputs.mkdir()
    for name in CLIPS:
        shutil.copy(VIDEOS / name, inputs / name)
    out = root / "out"
    summary = run(RunRequest([str(inputs)], out, solid_config()))
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas().set_index("path")
    return inputs, out, summary, videos


def test_every_clip_ok(footage):
    _, out, summary, videos = footage
    assert summary.ok == len(CLIPS) and summary.failed == 0 and summary.exit_code == 0
    assert sorted(videos.index) == sorted(CLIPS)
    assert (videos.status == "ok").all()
    assert (videos.frames_in == videos.frames_out).all()
    assert not list((out / "_anonray" / "tmp").iterdir())


@pytest.mark.parametrize("name", CLIPS)
def test_detections_recorded(footage, name):
    row = footage[3].loc[name]
    if name in FACES:
        assert row.detections_face > 0 and row.tracks_face > 0
    if name in PLATES:
        assert row.detections_plate > 0 and row.tracks_plate > 0
    assert row.frames_masked > 0
    if name == "speech_face_360p.mp4":  # one speaker in view throughout
        assert row.frames_masked >= 0.8 * row.frames_in


def _decode(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            yield frame.pts * frame.time_base, frame.to_ndarray(format="rgb24")


def _near(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` grown by about ``margin`` pixels (on a grid of margin-sized blocks, then one block more)."""
    h, w = mask.shape
    bh, bw = -(-h // margin), -(-w // margin)
    padded = np.zeros((bh * margin, bw * margin), bool)
    padded[:h, :w] = mask
    blocks = padded.reshape(bh, margin, bw, margin).any(axis=(1, 3))
    grown = blocks.copy()
    grown[1:] |= blocks[:-1]
    grown[:-1] |= blocks[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return np.repeat(np.repeat(grown, margin, axis=0), margin, axis=1)[:h, :w]


@pytest.mark.parametrize("name", CLIPS)
def test_output_matches_input_and_masks_show(footage, name, tmp_path):
    inputs, out, _, videos = footage
    row = videos.loc[name]
    src = inputs / name
    info, _ = probe(src, name)
    dst = out / output_relative_path(name, info, "keep")
    baseline = tmp_path / ("baseline" + dst.suffix)
    # a plain re-encode without the bitrate cap: the codec noise to expect, and whether the cap binds
    transcode(src, baseline, info, solid_config(**{"encoder.max_bitrate_ratio": None}), None)
    capped = probe(baseline, baseline.name)[0].video_bitrate > 1.25 * info.video_bitrate
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        assert (sb.width, sb.height) == (sa.width, sa.height) == (row.width, row.height)

    src_times, dst_times, shown, diffs, noises, collateral = [], [], 0, [], [], []
    for i, ((ts, s), (td, d), (_, base)) in enumerate(zip(_decode(src), _decode(dst), _decode(baseline),
                                                           strict=True)):
        src_times.append(ts)
        dst_times.append(td)
        masked = mask_pixels(d)
        shown += int(masked.sum() >= BLOB_PIXELS)
        if i % 5:
            continue
        keep = ~_near(masked, FAR_MARGIN)
        collateral.append(1 - keep.mean())
        diffs.append(np.abs(s.astype(int) - d.astype(int))[keep].mean())
        noises.append(np.abs(s.astype(int) - base.astype(int))[keep].mean())
    frames = len(src_times)
    assert frames == row.frames_in == info.frame_count
    assert_same_times(src_times, dst_times)
    assert_same_audio(src, dst)
    if info.audio:
        with av.open(str(dst)) as c:
            assert len(c.streams.audio) == len(info.audio)

    # masks show where the records say frames were masked (a mask may clip at the frame's edge)
    assert shown >= 0.9 * row.frames_masked, f"{shown} frames show magenta, {row.frames_masked} masked"
    assert shown <= row.frames_masked, "magenta in frames the records call unmasked"
    if name == "speech_face_360p.mp4":
        assert shown >= 0.8 * frames, f"only {shown}/{frames} frames show a mask"
    # the default bitrate cap holds, and the fidelity outside the masks is measured and above the QA threshold
    assert row.video_bitrate_out <= 1.25 * row.video_bitrate_in and row.psnr_outside_masks >= 35
    # away from the masks the picture is the input's, up to codec noise (as a plain re-encode); where the cap
    # binds (speech_face_360p: a CRF 20 re-encode is 1.35x its input) the masks' edges take bits from the rest
    # of the picture: measured up to 2x the plain re-encode's error on a frame
    factor = 2.0 if capped else 1.25
    for k, (diff, noise) in enumerate(zip(diffs, noises, strict=True)):
        assert diff <= noise * factor + 0.5, f"frame {5 * k}: difference {diff:.2f}, noise {noise:.2f}"
    assert np.mean(collateral) < 0.5, "most of the picture lies near a mask"


@pytest.mark.parametrize("name", CLIPS)
def test_masks_sit_on_labelled_faces_and_plates(footage, name):
    """Scored from the output pixels against the labelled real-footage set (benchmarks/accuracy/footage.py):
    nearly every labelled face and every plate of 12 px or more is covered, and most masks on the labelled frames
    sit on a labelled face, head or plate (the defaults before issue 14 masked crests, signs and hands:
    precision 0.43 / 0.10 / 0.51 and 13.3 / 17.9 / 3.3 false masks per frame on these clips; now 0.61 / 0.43 /
    0.67 and 5.4 / 2.8 / 1.5, models/README.md)."""
    from benchmarks.accuracy.footage import load_labels
    from benchmarks.accuracy.real import score_clip
    from benchmarks.accuracy.video import MAGENTA as MASK_RGB

    _, out, _, _ = footage
    labels = load_labels()[name]
    output = next(p for p in out.glob(f"{Path(name).stem}.*") if p.is_file())
    result = score_clip(VIDEOS / name, output, labels, MASK_RGB)
    counts = result["counts"]
    faces = sum(v[0] for v in counts.faces.values())
    assert result["error"] == ""
    assert faces == 0 or counts.face_recall >= 0.95, counts.faces
    assert counts.plates[0] == counts.plates[1], counts.plates
    least_precision, most_false = MASK_PRECISION[name]
    assert counts.precision >= least_precision, f"precision {counts.precision:.2f}: {counts.false_masks} false masks"
    assert counts.false_per_frame <= most_false
