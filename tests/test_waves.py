"""runtime/waves.py: how a run's files are cut into detection waves (no Ray here)."""

from __future__ import annotations

from pathlib import Path

from anonray.config import Config
from anonray.ingest.discover import InputFile, discover
from anonray.runtime.waves import plan_waves


def files(*sizes: int) -> list[InputFile]:
    return [InputFile(Path(f"/in/{i}.mp4"), Path("/in"), f"{i}.mp4", size) for i, size in enumerate(sizes)]


def names(waves: list[list[InputFile]]) -> list[list[str]]:
    return [[f.relative_path for f in wave] for wave in waves]


def test_short_clips_share_a_wave_up_to_the_video_cap() -> None:
    clips = files(*[40_000] * 600)
    waves = plan_waves(clips, 256, 1 << 30)
    assert [len(w) for w in waves] == [256, 256, 88]
    assert [f for w in waves for f in w] == clips  # in order, none lost, none twice


def test_large_files_get_a_wave_each_and_the_byte_cap_closes_waves() -> None:
    gib = 1 << 30
    assert names(plan_waves(files(3 * gib, 10, 2 * gib), 256, gib)) == [["0.mp4"], ["1.mp4"], ["2.mp4"]]
    assert names(plan_waves(files(400, 400, 400, 100), 256, 1000)) == [["0.mp4", "1.mp4"], ["2.mp4", "3.mp4"]]


def test_unknown_sizes_count_only_towards_the_video_cap() -> None:
    assert [len(w) for w in plan_waves(files(*[0] * 5), 2, 1)] == [2, 2, 1]
    assert plan_waves([], 16, 1) == []


def test_discovery_records_each_local_file_size(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x" * 123)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.mkv").write_bytes(b"y" * 45)
    found = discover([tmp_path], tmp_path.parent / "out", Config().input).files
    assert {f.relative_path: f.size_bytes for f in found} == {"a.mp4": 123, "sub/b.mkv": 45}
    single = discover([tmp_path / "a.mp4"], tmp_path.parent / "out", Config().input).files
    assert [f.size_bytes for f in single] == [123]
