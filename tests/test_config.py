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


def test_any_change_changes_the_hash():
    base = Config()
    assert base.with_overrides(**{"mask.style": "solid"}).config_hash() != base.config_hash()
    assert base.with_overrides(**{"detection.face.threshold": 0.3}).config_hash() != base.config_hash()


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
