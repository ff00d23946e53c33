"""Which files a run takes: roots, relative paths, include/exclude patterns, the output folder."""

import pytest

from anonray.config import InputConfig
from anonray.ingest.discover import InputError, discover


def test_folder_and_file_inputs(tmp_path):
    root = tmp_path / "archive"
    (root / "cam1" / "2024").mkdir(parents=True)
    (root / "cam1" / "2024" / "a.MP4").write_bytes(b"x")
    (root / "b.mkv").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (root / "link.mp4").symlink_to(root / "b.mkv")
    (root / "dangling.mp4").symlink_to(root / "missing.mp4")
    single = tmp_path / "elsewhere" / "c.avi"
    single.parent.mkdir()
    single.write_bytes(b"x")
    found = discover([root, single], tmp_path / "out", InputConfig())
    assert [f.relative_path for f in found.files] == ["b.mkv", "link.mp4", "cam1/2024/a.MP4", "c.avi"]
    assert found.files[-1].root == single.parent.resolve()
    assert found.ignored == 2  # notes.txt and the dangling link


def test_exclude_patterns_and_output_folder_inside_input(tmp_path):
    root = tmp_path / "in"
    (root / "out" / "_anonray").mkdir(parents=True)
    (root / "keep.mp4").write_bytes(b"x")
    (root / "skip_me.mp4").write_bytes(b"x")
    (root / "out" / "keep.mp4").write_bytes(b"x")  # an earlier output: never read back
    found = discover([root], root / "out", InputConfig(exclude=["skip_*"]))
    assert [f.relative_path for f in found.files] == ["keep.mp4"]
    assert found.ignored == 1


def test_missing_input_and_input_inside_output(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover([tmp_path / "nope"], tmp_path / "out", InputConfig())
    (tmp_path / "out" / "in").mkdir(parents=True)
    with pytest.raises(InputError, match="inside the output folder"):
        discover([tmp_path / "out" / "in"], tmp_path / "out", InputConfig())
