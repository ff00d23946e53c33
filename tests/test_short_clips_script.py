"""benchmarks/short_clips.py: the clips it makes and the baseline transcode (no benchmark run)."""

import av

from benchmarks import short_clips


def test_clips_are_short_h264_in_folders_and_the_baseline_writes_every_frame(tmp_path):
    clips = short_clips.write_clips(tmp_path / "archive", 3)
    assert [c.parent.name for c in clips] == ["cam00", "cam01", "cam02"]
    for clip in clips:
        with av.open(str(clip)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264" and not c.streams.audio
            frames = list(c.decode(stream))
        assert len(frames) == short_clips.FRAMES
        assert (frames[0].width, frames[0].height) == short_clips.SIZE
    assert short_clips.transcode_one(clips[0], tmp_path / "out.mp4") == short_clips.FRAMES
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == short_clips.FRAMES
