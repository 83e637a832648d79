"""The config file: every problem is refused with the key named; relative paths are the file's."""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from lfr_contracts.camera import CameraConfig
from lfr_contracts.errors import ConfigError
from lfr_contracts.settings import Range, setting_of
from lfr_edge.camera import create_source
from lfr_edge.config import Config, load_config, parse_config, parse_toml, require_cameras

REPO_ROOT = Path(__file__).resolve().parents[1]


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


# Ranges beside their fields ------------------------------------------------------------------------------


def sections() -> list[tuple[str, type[Any]]]:
    """Every config section and the camera table, with the key prefix errors name them by."""
    hints = typing.get_type_hints(Config)
    found = [(f.name, hints[f.name]) for f in dataclasses.fields(Config) if f.name != "cameras"]
    return [*found, ("cameras[cam0]", CameraConfig)]


def numeric_keys() -> list[tuple[str, str, type[Any], Range]]:
    keys = []
    for section, cls in sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            declared = setting_of(f)
            if hints[f.name] in (int, float):
                assert declared.range is not None, f"{section}.{f.name} declares no range"
                keys.append((section, f.name, hints[f.name], declared.range))
    return keys


def document(section: str, key: str, value: Any) -> dict[str, Any]:
    """A config document setting one key (a camera key goes in a camera table that is otherwise valid)."""
    if section.startswith("cameras"):
        return {"cameras": [{"name": "cam0", "source": "replay", "uri": "x", key: value}]}
    return {section: {key: value}}


def test_every_key_declares_what_it_does_and_every_number_its_range() -> None:
    for section, cls in sections():
        for f in dataclasses.fields(cls):
            assert setting_of(f).help, f"{section}.{f.name} has no description"
    assert len(numeric_keys()) >= 38  # every int and float key of every section and the camera table


def test_the_defaults_written_out_load_back_as_the_defaults(tmp_path: Path) -> None:
    """Each default passes its own declaration: a file that spells out every default loads to Config()."""
    doc: dict[str, Any] = {}
    for section, cls in sections():
        table = {
            f.name: str(value) if isinstance(value := getattr(cls(), f.name), Path) else value
            for f in dataclasses.fields(cls)
        }
        if section.startswith("cameras"):
            doc["cameras"] = [{**table, "source": "replay"}]
        else:
            doc[section] = table
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    defaults = Config()
    models = dataclasses.replace(defaults.models, dir=defaults.models.dir.expanduser())  # "~" expands on loading
    expected = dataclasses.replace(defaults, models=models, cameras=(CameraConfig(source="replay"),))
    assert load_config(path) == expected


def out_of_range(span: Range, integer: bool) -> list[float]:
    """Values just outside the range on each bounded side, and the non-finite ones."""
    step = 1 if integer else 1e-6
    values: list[float] = [] if integer else [math.nan, math.inf, -math.inf]
    if span.lo is not None:
        values.append(span.lo if span.lo_open else span.lo - step)
    if span.hi is not None:
        values.append(span.hi if span.hi_open else span.hi + step)
    return [int(v) if integer else float(v) for v in values]


@pytest.mark.parametrize(
    "section, key, typ, span",
    [pytest.param(*k, id=f"{k[0]}.{k[1]}") for k in numeric_keys()],
)
def test_every_number_outside_its_range_or_not_finite_is_refused_naming_its_key(
    section: str, key: str, typ: type[Any], span: Range
) -> None:
    for value in out_of_range(span, typ is int):
        with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}:")):
            parse_config(document(section, key, value))
    if typ is int:
        with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}: expected an integer")):
            parse_config(document(section, key, True))


@pytest.mark.parametrize(
    "data, named",
    [
        ({"match": {"cooldown_s": math.nan}}, "match.cooldown_s: nan is not a finite number"),
        ({"match": {"margin": math.inf}}, "match.margin: inf is not a finite number"),
        ({"track": {"best_k": 0}}, "track.best_k: must be 1 to 100"),
        ({"track": {"best_k": 2}, "match": {"min_frames": 3}}, "track.best_k: a track keeps 2 faces"),
        ({"mqtt": {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}}, "mqtt.reconnect_max_s"),
        ({"mqtt": {"topic_prefix": "lfr/+"}}, "mqtt.topic_prefix: 'lfr/+' holds an MQTT wildcard"),
        ({"mqtt": {"topic_prefix": "lfr/#"}}, "mqtt.topic_prefix: 'lfr/#' holds an MQTT wildcard"),
        ({"mqtt": {"topic_prefix": "$SYS/lfr"}}, "mqtt.topic_prefix: '$SYS/lfr' starts with '$'"),
        ({"mqtt": {"topic_prefix": "lfr//v1"}}, "mqtt.topic_prefix: 'lfr//v1' has an empty level"),
        ({"mqtt": {"topic_prefix": "lfr/\x00"}}, "mqtt.topic_prefix: holds the control character '\\x00'"),
        ({"mqtt": {"host": "broker\nexample"}}, "mqtt.host: holds the control character '\\n'"),
        ({"unit": {"id": "van+7"}}, "unit.id: 'van+7' must be 1-64 letters"),
        ({"unit": {"id": "van#7"}}, "unit.id: 'van#7' must be 1-64 letters"),
        ({"unit": {"id": "van\x007"}}, "unit.id: holds the control character"),
        ({"unit": {"id": "v" * 65}}, "unit.id"),
        ({"cameras": [{"name": "door/+", "source": "replay"}]}, "cameras[0].name: 'door/+' must be 1-64 letters"),
        ({"cameras": [{"name": "door", "source": "replay", "uri": "a\x00b"}]}, "cameras[door].uri: holds the control"),
        ({"unit": {"keys_dir": "/etc/lfr\x00/keys"}}, "unit.keys_dir: the path holds the control character '\\x00'"),
        ({"models": {"dir": "~no-such-user-here/models"}}, "models.dir: '~no-such-user-here/models' names a home"),
        ({"beacon": {"protocol": "patlite"}}, "beacon.protocol: 'patlite' is not one of 'lfr'"),
        ({"beacon": {"heartbeat_s": math.nan}}, "beacon.heartbeat_s: nan is not a finite number"),
        ({"cameras": [{"name": "a", "source": "replay", "options": {"loop": math.nan}}]}, None),
        ({"cameras": [{"options": {"a": [[[[[[[[[1]]]]]]]]]}}]}, "nested more than 8 deep"),
    ],
)
def test_values_found_by_the_campaign_are_refused_naming_the_key(data: dict[str, Any], named: str | None) -> None:
    """Issue 13: each of these was accepted (or crashed start-up) before."""
    if named is None:  # a source's option: checked when the source is built from the camera's table
        cfg = parse_config(data)
        with pytest.raises(ConfigError, match=r"cameras\[a\]\.options\.loop"):
            create_source(cfg.cameras[0])
        return
    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    assert named in str(refused.value)


def test_a_source_option_out_of_range_or_not_finite_is_refused_naming_it() -> None:
    for options, named in (
        ({"reconnect_min_s": math.inf}, "options.reconnect_min_s: inf is not a finite number"),
        ({"reconnect_min_s": math.nan}, "options.reconnect_min_s: nan is not a finite number"),
        ({"buffer_size": 0}, "options.buffer_size: must be 1 to 64"),
        ({"fourcc": "MJ\x00G"}, "options.fourcc: holds the control character"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            create_source(CameraConfig(name="door", source="opencv", uri="0", options=options))


# Through the real command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, named",
    [
        pytest.param("[beacon]\nheartbeat_s = nan\n", "config.beacon.heartbeat_s: nan is not a finite", id="nan"),
        pytest.param("[match]\nmargin = inf\n", "config.match.margin: inf is not a finite", id="inf"),
        pytest.param('[mqtt]\ntopic_prefix = "lfr/+"\n', "config.mqtt.topic_prefix", id="wildcard"),
        pytest.param('[unit]\naudit_log = "/var/\\u0000/x"\n', "config.unit.audit_log", id="nul-path"),
        pytest.param("[unit]\nthreads = " + "9" * 5000 + "\n", "not valid TOML", id="5000-digits"),
        pytest.param("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested 3000 deep", id="nested"),
        pytest.param("[track]\nbest_k = 0\n", "config.track.best_k: must be 1 to 100, got 0", id="best-k-0"),
    ],
)
def test_lfr_edge_run_exits_2_naming_the_key_without_a_traceback(tmp_path: Path, text: str, named: str) -> None:
    """`lfr-edge run --config X`, as the service unit runs it, on a config whose only fault is the one key."""
    config = tmp_path / "config.toml"
    config.write_text(text + f'[[cameras]]\nname = "door"\nsource = "replay"\nuri = "{tmp_path}"\n')
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lfr-edge")), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_an_oversized_or_undecodable_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="too large for a config file"):
        load_config(big)
    with pytest.raises(ConfigError, match="not UTF-8 at byte 0"):
        parse_toml(b"\xff")


# docs/config.md -----------------------------------------------------------------------------------------


def documented_commands() -> dict[str, str]:
    """The regenerate and check commands, exactly as docs/config.md gives them."""
    text = (REPO_ROOT / "docs" / "config.md").read_text()
    commands = re.findall(r"`(\.venv/bin/python -m lfr_tools\.config_doc --(out|check) docs/config\.md)`", text)
    return {kind: command for command, kind in commands}


def run_documented(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    argv[0] = sys.executable  # `.venv/bin/python` of the checkout the suite runs in
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_docs_config_md_is_what_the_declarations_generate() -> None:
    commands = documented_commands()
    assert set(commands) == {"out", "check"}
    done = run_documented(commands["check"], REPO_ROOT)
    assert done.returncode == 0, f"{done.stderr} (docs/config.md is stale)"


def test_the_regenerate_command_writes_the_reference_and_check_catches_a_stale_one(tmp_path: Path) -> None:
    commands = documented_commands()
    (tmp_path / "docs").mkdir()
    assert run_documented(commands["out"], tmp_path).returncode == 0
    written = (tmp_path / "docs" / "config.md").read_text()
    assert written == (REPO_ROOT / "docs" / "config.md").read_text()
    for key in ("`heartbeat_s` | number | `1.0` | (0, 30]", "`topic_prefix`", '`source = "replay"`', "`loop`"):
        assert key in written
    (tmp_path / "docs" / "config.md").write_text(written.replace("(0, 30]", "(0, 31]"))
    stale = run_documented(commands["check"], tmp_path)
    assert stale.returncode == 1 and "is stale" in stale.stderr


def test_the_readme_links_the_config_reference() -> None:
    assert "`docs/config.md`" in (REPO_ROOT / "README.md").read_text()
