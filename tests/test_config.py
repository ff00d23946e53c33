"""Config validation, hashing and overrides."""

import pytest

from anonray.config import Config, ConfigError, default_config_yaml, load_config


def test_defaults_and_hash_are_stable(tmp_path):
    a, b = Config(), Config()
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 16
    path = tmp_path / "c.yaml"
    path.write_text(default_config_yaml())
    assert load_config(path) == a


def test_output_settings_change_the_hash_scheduling_and_review_do_not():
    base = Config()
    assert base.with_overrides(**{"mask.style": "solid"}).config_hash() != base.config_hash()
    assert base.with_overrides(**{"detection.face.threshold": 0.3}).config_hash() != base.config_hash()
    assert base.with_overrides(**{"resources.wave_videos": 3}).config_hash() == base.config_hash()
    assert base.with_overrides(**{"review.seed": 7}).config_hash() == base.config_hash()
    assert base.config_sha256().startswith(base.config_hash())


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("detection:\n  face:\n    input_size: 650\n", "detection.face.input_size"),
        ("mask:\n  colour: ff00ff\n", "mask.colour"),
        ("mask:\n  color: purple\n", "mask.color"),
        ("classes: [face, cat]\n", "classes"),
        ("encoder:\n  crf: 99\n", "encoder.crf"),
        ("audio: mute\n", "audio"),
    ],
)
def test_invalid_configs_name_the_field(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert where in str(err.value)


def test_not_yaml_and_not_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_mask_color_normalised():
    assert Config().with_overrides(**{"mask.color": "#FF00ff"}).mask.rgb() == (255, 0, 255)


def test_partial_class_sections_keep_that_class_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("detection:\n  plate:\n    threshold: 0.3\ntracking:\n  plate:\n    max_gap: 2\n")
    cfg = load_config(path)
    default = Config()
    assert cfg.detection.plate.threshold == 0.3
    assert cfg.detection.plate.input_size == default.detection.plate.input_size == 1280
    assert cfg.detection.plate.nms_iou == default.detection.plate.nms_iou
    assert cfg.detection.plate.model == default.detection.plate.model == "plate-yolov8n-pyplatex"
    assert cfg.tracking.plate.match_iou == default.tracking.plate.match_iou == 0.15
    assert default.detection.face.model == "centerface"


@pytest.mark.parametrize("cls", ["face", "plate"])
def test_class_constraints_hold_for_every_class(tmp_path, cls):
    path = tmp_path / "bad.yaml"
    for bad in ("input_size: 650", "input_size: 8192", "threshold: 1.5", "nms_iou: 0"):
        path.write_text(f"detection:\n  {cls}:\n    {bad}\n")
        with pytest.raises(ConfigError, match=f"detection.{cls}.{bad.split(':')[0]}"):
            load_config(path)
