"""Driver-side grouping: a video completes only when every segment's frames and end marker arrived."""

import numpy as np

from anonray.frame_rows import DetectedFrames, pack_boxes
from anonray.track.collect import DetectionCollector
from anonray.types import Detections, Segment, VideoInfo


def _info(video_id: str, frames: int) -> VideoInfo:
    return VideoInfo(video_id=video_id, source_path="/x", relative_path="x.mp4", size_bytes=1, sha256="0",
                     container="mp4", video_codec="h264", pixel_format="yuv420p", width=64, height=48,
                     sample_aspect_ratio="1:1", fps=25.0, time_base="1/25", start_pts=0,
                     duration_seconds=frames / 25, frame_count=frames, rotation=0,
                     field_order="progressive", variable_frame_rate=False)


def _rows(video_id, segment, frames, marker_decoded=None, error=""):
    n = len(frames) + (marker_decoded is not None)
    boxes = np.tile([[1, 2, 11, 12]], (len(frames), 1)).astype(np.float32)
    dets = Detections(np.array(frames, np.int64), boxes, np.full(len(frames), 0.9, np.float32),
                      np.zeros(len(frames), np.int64))
    markers = [marker_decoded] if marker_decoded is not None else []
    blobs = [pack_boxes(dets, f) for f in frames] + ([b""] if marker_decoded is not None else [])
    idx = list(frames) + ([-1] if marker_decoded is not None else [])
    return DetectedFrames(
        video_id=np.array([video_id] * n), segment_index=np.full(n, segment),
        frame_index=np.array(idx), pts=np.array([max(f, 0) for f in idx]),
        signature=np.array([bytes(range(48))] * len(frames) + [b""] * (n - len(frames)), dtype=object),
        source_width=np.full(n, 64), source_height=np.full(n, 48), rotation=np.zeros(n, np.int64),
        frames_decoded=np.array([0] * len(frames) + markers),
        decode_seconds=np.zeros(n), decode_node_id=np.array([""] * n),
        decode_error_class=np.array([""] * (n - 1) + [error]) if n else np.array([]),
        decode_error_message=np.array([""] * n),
        boxes=np.array(blobs, dtype=object), detect_seconds=np.zeros(n),
        detect_node_id=np.array([""] * n), detect_error_class=np.array([""] * n),
        detect_error_message=np.array([""] * n),
    ).to_batch()


def test_video_completes_after_all_segments_in_any_order():
    segs = [Segment("v", 0, 0, 2, 0, 2, 0), Segment("v", 1, 2, None, 2, 2, 2)]
    collector = DetectionCollector([(_info("v", 4), segs)])
    assert collector.add_batch(_rows("v", 1, [2], marker_decoded=2)) == []  # marker before its frames
    assert collector.add_batch(_rows("v", 0, [0, 1], marker_decoded=2)) == []
    done = collector.add_batch(_rows("v", 1, [3]))
    assert len(done) == 1
    video = done[0]
    assert video.error is None
    assert sorted(video.detections.frame_index.tolist()) == [0, 1, 2, 3]
    assert video.frame_pts.tolist() == [0, 1, 2, 3]
    assert (video.signatures[2] == np.arange(48)).all()
    assert [s.detections["face"] for s in video.segments] == [2, 2]


def test_decode_error_marks_the_video_and_lost_segments_are_reported():
    segs = [Segment("v", 0, 0, 2, 0, 2, 0), Segment("v", 1, 2, None, 2, 2, 2)]
    collector = DetectionCollector([(_info("v", 4), segs)])
    collector.add_batch(_rows("v", 0, [], marker_decoded=0, error="decode_error"))
    (video,) = collector.drain_incomplete()
    assert video.error.error_class == "decode_error"
    assert video.segments[1].error_class == "segment_lost"
