"""The config file: every problem is refused with the key named; relative paths are the file's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lfr_contracts.errors import ConfigError
from lfr_edge.config import Config, load_config, parse_config, require_cameras


def test_an_empty_document_gives_the_defaults() -> None:
    assert parse_config({}) == Config()


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text('[unit]\nkeys_dir = "keys"\n[[cameras]]\nname = "door"\nsource = "replay"\nuri = "x"\n')
    cfg = load_config(config)
    assert cfg.unit.keys_dir == config.parent.resolve() / "keys"
    assert [c.name for c in cfg.cameras] == ["door"]


@pytest.mark.parametrize(
    "data, named",
    [
        ({"unit": {"id": "van 1"}}, "unit.id"),
        ({"unit": {"id": 7}}, "unit.id: expected a string"),
        ({"inference": {"threads": 0}}, "inference.threads"),
        ({"inference": {"threads": True}}, "inference.threads: expected an integer"),
        ({"quality": {"max_yaw_deg": 120.0}}, "quality.max_yaw_deg"),
        ({"mqtt": {"port": 70000}}, "mqtt.port"),
        ({"mqtt": {"topic_prefix": "lfr/#"}}, "mqtt.topic_prefix"),
        ({"mqtt": "broker"}, "config.mqtt: expected a table"),
        ({"beacon": {"enabled": "yes"}}, "beacon.enabled: expected true or false"),
        ({"models": {"detector": "near"}}, "models.detector"),
        ({"models": {"dir": ""}}, "models.dir: expected a file path"),
        ({"cameras": {"name": "a"}}, "cameras: expected [[cameras]] tables"),
        ({"cameras": ["cam0"]}, "cameras[0]: expected a table"),
        ({"cameras": [{"name": "a", "source": "replay", "fps": -1.0}]}, "cameras[a].fps"),
        ({"cameras": [{"name": "a"}]}, "cameras[a].source: must name a source"),
        ({"detect": {"tile_rows": -1}}, "detect.tile_rows"),
        ({"sections": {}}, "unknown key 'sections'"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    assert named in str(refused.value)


def test_an_unreadable_or_non_toml_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken)


def test_a_running_unit_needs_a_camera_and_tools_reading_its_config_do_not() -> None:
    assert parse_config({"cameras": []}).cameras == ()
    with pytest.raises(ConfigError, match=r"at least one \[\[cameras\]\]"):
        require_cameras(parse_config({}))
