"""Fuzzing the config loader (lfr_edge.config) and the camera sources' option tables.

The config a unit starts from is the one `lfr-provision init` writes; a technician then edits it by hand.
Every case is loaded from a real file by `load_config`, which must return a config whose every value is
within its declared range, or raise `ConfigError` (which `lfr-edge run` turns into exit 2 naming the key).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import bounded, fuzz, holds, mutated
from lfr_contracts.camera import CameraConfig, source_options
from lfr_contracts.errors import ConfigError
from lfr_contracts.settings import Text, control_character, setting_of
from lfr_contracts.untrusted import is_identifier
from lfr_edge.camera import jetson, opencv, picamera2, replay
from lfr_edge.config import Config, load_config
from lfr_hwsim import camera as sim_camera
from lfr_provision.init import InitOptions, config_text

WORK = Path(tempfile.mkdtemp(prefix="lfr-fuzz-config-"))
REAL = {board: config_text(InitOptions(unit_id="van-07", board=board), "broker.example", 8883).encode()
        for board in ("pi5", "jetson", "generic")}  # fmt: skip
REAL_TABLES: dict[str, Any] = {
    "unit": {"id": "van-07"}, "mqtt": {"host": "b", "port": 8883}, "beacon": {"enabled": True},
    "cameras": [{"name": "cam0", "source": "opencv", "uri": "/dev/video0", "fps": 25.0}],
}  # fmt: skip


def load(text: bytes) -> Config:
    path = WORK / "config.toml"
    path.write_bytes(text)
    return assert_sane(load_config(path))


def assert_sane(cfg: Config) -> Config:
    """What a loaded config promises the daemon: every value within its own declaration."""
    for section in [getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "cameras"] + list(cfg.cameras):
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            value, declared = getattr(section, f.name), setting_of(f)
            if hints[f.name] in (int, float):
                assert not isinstance(value, bool) and math.isfinite(value)
                assert declared.range is None or value in declared.range, (f.name, value)
            elif isinstance(value, str):
                assert control_character(value) is None
                assert declared.text is not Text.IDENTIFIER or is_identifier(value)
            elif isinstance(value, Path):
                assert "\x00" not in str(value)
    assert "+" not in cfg.mqtt.topic_prefix and "#" not in cfg.mqtt.topic_prefix
    return cfg


toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "lfr/+", "#", "\x00", "~nobody-here/x", "~0", "van 7", "/dev/null\x00", "9" * 300])
    | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1))
)
toml_values = st.one_of(
    toml_scalars,
    st.lists(toml_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), toml_scalars, max_size=3),
)
section_names = st.sampled_from([f.name for f in dataclasses.fields(Config)] + ["bogus"])


def key_names(section: str) -> st.SearchStrategy[str]:
    cls = CameraConfig if section == "cameras" else typing.get_type_hints(Config).get(section)
    names = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
    return st.sampled_from([*names, "bogus"])


@st.composite
def one_key_replaced(draw: st.DrawFn) -> bytes:
    """The real config's tables with one key set to an arbitrary TOML value."""
    doc: dict[str, Any] = copy.deepcopy(REAL_TABLES)
    section = draw(section_names)
    key, value = draw(key_names(section)), draw(toml_values)
    table = doc["cameras"][0] if section == "cameras" else doc.setdefault(section, {})
    table[key] = value
    return tomli_w.dumps(doc).encode()


@fuzz(300)
@given(st.sampled_from(sorted(REAL)).flatmap(lambda board: mutated(REAL[board])))
def test_mutated_real_configs_load_sane_or_are_refused(text: bytes) -> None:
    holds(ConfigError, lambda: load(text))


@fuzz(250)
@given(one_key_replaced())
def test_any_value_for_any_key_loads_sane_or_is_refused(text: bytes) -> None:
    holds(ConfigError, lambda: load(text))


@fuzz(100)
@given(st.dictionaries(st.text(max_size=10), toml_values, max_size=4).map(tomli_w.dumps).map(str.encode))
def test_arbitrary_documents_load_sane_or_are_refused(text: bytes) -> None:
    holds(ConfigError, lambda: load(text))


@fuzz(100)
@given(
    st.sampled_from(["a = ", "[[cameras]]\noptions.x = ", "[unit]\nid = "]),
    st.sampled_from(["[", "{b = ", '"', "'''", '"""', "#", "9" * 500, "nan", "\\u0000"]),
    st.integers(1, 4000),
)
def test_hostile_toml_text_is_refused(prefix: str, unit: str, repeat: int) -> None:
    holds(ConfigError, lambda: load((prefix + unit * repeat).encode()))


SOURCES: dict[str, tuple[Any, Any]] = {  # module (its OPTIONS table), source class
    "replay": (replay, replay.ReplaySource),
    "opencv": (opencv, opencv.OpenCVSource),
    "jetson": (jetson, jetson.JetsonSource),
    "picamera2": (picamera2, picamera2.Picamera2Source),
}


@st.composite
def source_and_options(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    keys = st.sampled_from([*SOURCES[name][0].OPTIONS, "x"])
    uri = draw(st.sampled_from(["/dev/video0", "0", "rtsp://cam/1", "a ! appsink", "~0", "~nobody/x", ""]))
    return name, uri, draw(st.dictionaries(keys, toml_values, max_size=3))


@fuzz(200)
@given(source_and_options())
def test_any_source_options_build_the_source_or_are_refused(case: tuple[str, str, dict[str, Any]]) -> None:
    """The van's sources check their `options` in the constructor; none touches a device there."""
    name, uri, options = case
    cfg = CameraConfig(name="door", source=name, uri=uri, options=options)
    holds(ConfigError, lambda: SOURCES[name][1](cfg))


def test_a_huge_number_or_name_is_refused_in_a_short_message() -> None:
    """Found by long runs: a 400-digit width was quoted whole in the refusal; a 300-character file name made
    the simulator's `plan_file.is_file()` raise OSError (File name too long); a million-digit integer made
    tomllib allocate ~116 MiB before refusing it."""
    text = REAL["pi5"].replace(b"width = 1280", b"width = 1" + b"9" * 90)  # under the 100-digit limit
    with pytest.raises(ConfigError, match=r"cameras\[cam0\]\.width: must be 16 to 16384, got an integer of") as refused:
        load(text)
    assert len(str(refused.value)) < 200
    with pytest.raises(ConfigError, match=r"options\.plan_file: .* has a file or folder name over 255 bytes"):
        sim_camera.parse_options("door", {"plan_file": "9" * 300})
    with bounded(max_bytes=32 << 20), pytest.raises(ConfigError, match="a number of more than 100 digits"):
        load(b"[[cameras]]\noptions.x = " + b"9" * 1_000_000)  # tomllib alone grew the process by ~116 MiB
    with pytest.raises(ConfigError, match=r"unit\.keys_dir: the path is longer than 4095 bytes"):
        load(b'[unit]\nkeys_dir = "' + b"/a" * 2100 + b'"\n')


def test_a_home_this_machine_lacks_is_a_config_error_in_every_source() -> None:
    """Found by a long run (LFR_FUZZ_EXAMPLES=3000): `faces_dir = "~0"` raised RuntimeError from expanduser."""
    with pytest.raises(ConfigError, match=r"cameras\[door\]\.options\.faces_dir: '~0' names a home directory"):
        sim_camera.parse_options("door", {"faces_dir": "~0"})
    with pytest.raises(ConfigError, match=r"cameras\[door\]\.uri: '~0' names a home directory"):
        replay.ReplaySource(CameraConfig(name="door", source="replay", uri="~0"))


@fuzz(100)
@given(st.dictionaries(st.sampled_from([*sim_camera.OPTIONS, "x"]), toml_values, max_size=3))
def test_any_simulator_options_are_read_or_refused(options: dict[str, Any]) -> None:
    holds(ConfigError, lambda: sim_camera.parse_options("door", options))
    holds(ConfigError, lambda: source_options("door", options, sim_camera.OPTIONS))
