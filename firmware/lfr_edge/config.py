"""The unit's configuration: one TOML file, parsed and validated once at start.

Every section is a frozen dataclass; the loader checks every key against the dataclass fields, so an
unknown key or a value of the wrong type stops the daemon with a message naming the key. Secrets are
file paths, never inline values.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from lfr_contracts.camera import CameraConfig
from lfr_contracts.errors import ConfigError
from lfr_contracts.layout import DEFAULT_CONFIG
from lfr_contracts.settings import (
    METADATA_KEY,
    Setting,
    Text,
    check_number,
    check_text,
    control_character,
    expand_path,
    setting,
)
from lfr_contracts.untrusted import excerpt, is_identifier

# The repository root, when running from a checkout (the manifest and default model cache live there).
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class UnitConfig:
    """Who this unit is and where it keeps its state."""

    id: str = setting("unit-dev", "the unit's id: its MQTT topics, TLS name and audit chain", text=Text.IDENTIFIER)
    state_dir: Path = setting(Path("/var/lib/lfr-edge"), "the unit's state (lifecycle record, engine cache)")
    keys_dir: Path = setting(Path("/etc/lfr-edge/keys"), "the unit's private keys (0600)")
    audit_log: Path = setting(Path("/var/lib/lfr-edge/audit.jsonl"), "the hash-chained audit log")


@dataclass(frozen=True)
class ModelsConfig:
    """Where built model artifacts are, and which ones the unit uses."""

    dir: Path = setting(Path("~/.cache/lfr-edge/models"), "the built model files (`make models`)")
    manifest: Path = setting(REPO_ROOT / "models" / "manifest.toml", "the manifest naming every model file's sha256")
    # YuNet finds more faces per ms than BlazeFace + tiles, SFace more listed people at a fixed false-alert
    # rate than MobileFaceNet (`python -m lfr_bench --parts detection,embedders`); both run on ONNX Runtime
    detector: Literal["short", "full", "both", "yunet"] = setting(
        "yunet", 'which models detect faces: BlazeFace short/full range or both, or "yunet" (onnx-cpu backend)'
    )
    embedder: Literal["mobilefacenet", "sface"] = setting(
        "sface", 'the embedding model ("sface" runs on an ONNX Runtime backend); watchlists name it'
    )
    embedder_variant: str = setting(
        "default", 'the embedder variant; "default" is the one the models build chose', text=Text.NONEMPTY
    )


@dataclass(frozen=True)
class InferenceConfig:
    """Which accelerator runs the models."""

    backend: Literal["litert-cpu", "litert-edgetpu", "litert-gpu", "hailo", "onnx-tensorrt", "onnx-cpu"] = setting(
        "onnx-cpu", "the inference backend"
    )
    threads: int = setting(2, "CPU threads for LiteRT and ONNX Runtime", ge=1, le=64)
    device: str = setting("", 'delegate-specific device selector, e.g. "usb" or ":0" for the EdgeTPU')
    gpu_delegate_library: str = setting(
        "libtensorflowlite_gpu_delegate.so",
        "litert-gpu: the delegate library, a name or a full path",
        text=Text.NONEMPTY,
    )
    engine_cache_dir: Path = setting(Path("/var/lib/lfr-edge/engines"), "onnx-tensorrt: engines per board and model")
    tensorrt_precision: Literal["fp32", "fp16", "int8"] = setting(
        "fp16", "onnx-tensorrt: engine precision (int8 needs QDQ-quantised ONNX models)"
    )
    tensorrt_fallback: Literal["none", "cuda"] = setting(
        "none", 'onnx-tensorrt: "cuda" runs on CUDA when TensorRT is not active'
    )


@dataclass(frozen=True)
class DetectConfig:
    """Face detection."""

    score_threshold: float = setting(0.6, "lowest detector score kept", ge=0.0, le=1.0)
    nms_iou: float = setting(0.3, "overlap above which two boxes are one face", ge=0.0, le=1.0)
    # Full range on the frame finds large faces, short range on overlapping tiles small ones (bench: detection)
    tile_rows: int = setting(2, "rows of short-range tiles for small faces (0: none)", ge=0, le=8)
    max_faces: int = setting(50, "most faces kept per frame", ge=1, le=1000)
    # 448 finds 98% of faces >= 50 px and all >= 80 px in about 4 ms a 720p frame; 416 95-98% (bench: detection)
    yunet_width: int = setting(
        448, "yunet: width the frame is scaled to (rounded up to a multiple of 32)", ge=128, le=3840
    )


@dataclass(frozen=True)
class QualityConfig:
    """Which faces are good enough to embed."""

    min_eye_distance_px: float = setting(14.0, "smallest distance between the eyes, pixels", ge=0.0, le=16384.0)
    min_score: float = setting(0.6, "lowest detector score embedded", ge=0.0, le=1.0)
    min_sharpness: float = setting(15.0, "lowest variance of the Laplacian of the aligned face", ge=0.0, le=1000.0)
    max_yaw_deg: float = setting(45.0, "largest head turn, degrees", gt=0.0, le=90.0)


@dataclass(frozen=True)
class EmbedConfig:
    """Face embedding."""

    flip_average: bool = setting(True, "average the embeddings of the face and its mirror image")
    # A track is embedded on arrival and then only for a clearly better shot, so the budget is spent on
    # people arriving, not people in view: new tracks first, then the largest quality gains.
    max_per_frame: int = setting(2, "most faces embedded per frame, shared by all cameras", ge=1, le=1000)


@dataclass(frozen=True)
class MqttConfig:
    """The broker (mutual TLS)."""

    host: str = setting("localhost", "the broker's host name or address", text=Text.NONEMPTY)
    port: int = setting(8883, "the broker's TLS port", ge=1, le=65535)
    ca_file: Path = setting(Path("/etc/lfr-edge/tls/ca.crt"), "the CA certificate the broker's is checked against")
    cert_file: Path = setting(Path("/etc/lfr-edge/tls/unit.crt"), "the unit's client certificate")
    key_file: Path = setting(Path("/etc/lfr-edge/tls/unit.key"), "the unit's TLS private key")
    topic_prefix: str = setting("lfr/v1", "the first levels of every topic", text=Text.TOPIC)
    keepalive_s: int = setting(15, "MQTT keepalive, seconds", ge=1, le=65535)
    reconnect_min_s: float = setting(0.5, "first wait before reconnecting, doubling", gt=0.0, le=3600.0)
    reconnect_max_s: float = setting(30.0, "longest wait between reconnects", gt=0.0, le=3600.0)


@dataclass(frozen=True)
class WatchlistConfig:
    """The watchlist the command centre sends."""

    command_centre_key: Path = setting(
        Path("/etc/lfr-edge/keys/command-centre.pub"), "the command centre's Ed25519 public key (pinned)"
    )
    # 64 MiB: about 12,000 subjects; the broker's default message limit, and a replacement this size applied on
    # top of a held one fits under the unit file's MemoryHigh (tests/test_memory_budget.py measures it).
    max_bundle_bytes: int = setting(64 * 1024 * 1024, "largest bundle accepted, bytes", ge=1024, le=1 << 30)


@dataclass(frozen=True)
class TrackConfig:
    """Following each person through one camera's view."""

    iou_min: float = setting(0.2, "box overlap that continues a track", ge=0.0, le=1.0)
    max_jump: float = setting(
        0.5, "keypoint distance from where a track expects them that continues it, face widths", gt=0.0, le=10.0
    )
    shot_gain: float = setting(
        0.5, "quality gain over a track's best shot that earns another embedding", ge=0.0, le=10.0
    )
    max_missed_frames: int = setting(10, "frames without the face before a track ends", ge=0, le=1000)
    best_k: int = setting(5, "best shots a track keeps for matching (at least match.min_frames)", ge=1, le=100)


@dataclass(frozen=True)
class MatchConfig:
    """When a track matches a watchlist subject."""

    min_frames: int = setting(2, "best shots, each from its own frame, that must support a match", ge=1, le=100)
    margin: float = setting(0.03, "lead of the best subject over the runner-up", ge=0.0, le=1.0)
    cooldown_s: float = setting(60.0, "seconds before the same subject alerts again", ge=0.0, le=86400.0)
    top_k: int = setting(3, "subjects compared per face", ge=1, le=100)


@dataclass(frozen=True)
class AlertsConfig:
    """Alerts to paired handsets."""

    handsets_dir: Path = setting(Path("/etc/lfr-edge/handsets"), "the paired handsets' public keys")
    queue_max: int = setting(100, "alerts held while the broker is away", ge=1, le=10_000)
    queue_ttl_s: float = setting(120.0, "seconds an undelivered alert is kept", gt=0.0, le=86400.0)


@dataclass(frozen=True)
class BeaconConfig:
    """The roof beacon on a serial line (docs/beacon-protocol.md)."""

    enabled: bool = setting(True, "drive the beacon")
    port: str = setting("/dev/lfr-beacon", "its serial device", text=Text.NONEMPTY)
    protocol: Literal["lfr"] = setting("lfr", "its line protocol (docs/beacon-protocol.md)")
    baudrate: int = setting(115200, "serial speed, bits per second", ge=300, le=4_000_000)
    heartbeat_s: float = setting(1.0, "seconds between heartbeats", gt=0.0, le=30.0)
    ack_timeout_s: float = setting(0.2, "seconds to wait for each acknowledgement", gt=0.0, le=10.0)
    retries: int = setting(3, "re-sends after the first try, same sequence number", ge=0, le=10)
    alert_hold_s: float = setting(10.0, "seconds the alert pattern shows", gt=0.0, le=3600.0)
    watchdog_beats: int = setting(3, "missed heartbeats before the beacon shows fault by itself", ge=2, le=60)
    reconnect_min_s: float = setting(0.2, "first wait before reopening after an unplug, doubling", gt=0.0, le=60.0)
    reconnect_max_s: float = setting(5.0, "longest wait between reopen attempts", gt=0.0, le=600.0)
    # The buzzer: a pattern of beeps at each alert, silent during quiet hours (the lights still show).
    buzzer_beeps: int = setting(2, "beeps sounded at each alert (0: the buzzer is never used)", ge=0, le=10)
    buzzer_beep_ms: int = setting(300, "length of one beep, milliseconds", ge=20, le=5000)
    buzzer_gap_ms: int = setting(200, "silence between beeps, milliseconds", ge=20, le=5000)
    buzzer_quiet_hours: str = setting(
        "", 'local times "HH:MM-HH:MM" when the buzzer stays silent, e.g. "22:00-07:00" (empty: never quiet)'
    )


def quiet_hours(key: str, text: str) -> tuple[int, int] | None:
    """The quiet window as (start, end) minutes after local midnight, or None for "never quiet"; a window
    whose end is before its start runs past midnight."""
    if not text:
        return None
    found = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", text)
    if found is None:
        raise ConfigError(f'{key}: expected "HH:MM-HH:MM" in 24-hour local time, e.g. "22:00-07:00", got {text!r}')
    start, end = (int(found[i]) * 60 + int(found[i + 1]) for i in (1, 3))
    if start == end:
        raise ConfigError(f'{key}: {text!r} is an empty window; leave it empty ("") for never quiet')
    return start, end


@dataclass(frozen=True)
class DaemonConfig:
    """The daemon's own rhythm."""

    telemetry_interval_s: float = setting(10.0, "seconds between telemetry messages", gt=0.0, le=3600.0)
    watchdog_stall_s: float = setting(
        10.0, "seconds without progress before systemd's watchdog is starved", gt=0.0, le=600.0
    )
    clock_sync_wait_s: float = setting(
        120.0,
        "seconds to wait, where a time service runs, for the clock to be synchronised before judging watchlist "
        "validity windows (0: judge them by the clock as it is)",
        ge=0.0,
        le=3600.0,
    )


@dataclass(frozen=True)
class Config:
    unit: UnitConfig = field(default_factory=UnitConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cameras: tuple[CameraConfig, ...] = ()  # a unit's config names its cameras; offline tools need none
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    watchlist: WatchlistConfig = field(default_factory=WatchlistConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    beacon: BeaconConfig = field(default_factory=BeaconConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20
MAX_TOML_NESTING = 32  # brackets in the text, checked before parsing (tomllib recurses per level)
MAX_VALUE_DEPTH = 8  # tables and arrays in the parsed document (dotted keys nest without brackets)
MAX_NUMBER_CHARACTERS = 100  # digits of one number outside strings; a 64-bit integer has 20
# A TOML string, comment, bracket or overlong number; an unterminated string runs to its end, so the scan stays
# linear. tomllib spends ~100 MiB on a 1-million-digit integer before refusing it, so those are refused first.
_TOML_TOKEN = re.compile(
    r'"""(?:[^\\]|\\.)*?(?:"""|\Z)|\'\'\'.*?(?:\'\'\'|\Z)|"(?:[^"\\\n]|\\.)*(?:"|$)|\'[^\'\n]*(?:\'|$)|#[^\n]*|[][{}]'
    rf"|[0-9][0-9_]{{{MAX_NUMBER_CHARACTERS},}}",
    re.DOTALL | re.MULTILINE,
)
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _coerce(value: Any, typ: Any, key: str, base: Path) -> Any:
    """`value` as the field's type `typ`, or a ConfigError naming `key`."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        allowed = typing.get_args(typ)
        if isinstance(value, dict | list) or value not in allowed:
            raise ConfigError(f"{key}: {excerpt(value, 80)} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return dict(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {excerpt(value, 80)}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {excerpt(value, 80)}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {excerpt(value, 80)}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {excerpt(value, 80)}")
        return value
    if typ is Path:
        return _path(value, key, base)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return parse_section(typ, value, key, base)  # type: ignore[arg-type]
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # a programming error, kept readable


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a file path, got {excerpt(value, 80)}")
    bad = control_character(value)
    if bad is not None:
        raise ConfigError(f"{key}: the path holds the control character {bad}; remove it")
    path = expand_path(key, value)
    return path if path.is_absolute() else (base / path)


def _check_declared(key: str, value: Any, field: dataclasses.Field[Any]) -> None:
    """The field's own declaration: a number within its range (and finite), text of its kind."""
    declared = field.metadata.get(METADATA_KEY)
    if not isinstance(declared, Setting) or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        check_number(key, value, declared)
    elif isinstance(value, str):  # a path is a Path by now, checked by _path
        check_text(key, value, declared.text)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    """The field types of a section (evaluated once: the annotations are strings)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def parse_section(cls: type[T], table: dict[str, Any], name: str, base: Path | None = None) -> T:
    """Build the dataclass `cls` from a TOML table, refusing unknown keys, wrong types and values outside
    the range each field declares."""
    base = base or Path.cwd()
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"[{name}] unknown key {excerpt(unknown[0], 80)} (known: {', '.join(sorted(fields))})")
    values = {}
    for key, value in table.items():
        values[key] = _coerce(value, hints[key], f"{name}.{key}", base)
        _check_declared(f"{name}.{key}", values[key], fields[key])
    return cls(**values)


# What _check_relations enforces, for docs/config.md.
RULES_BETWEEN_KEYS = (
    "camera names are unique, and every camera names its `source`",
    "`mqtt.reconnect_max_s` >= `mqtt.reconnect_min_s`; `beacon.reconnect_max_s` >= `beacon.reconnect_min_s`",
    "`track.best_k` >= `match.min_frames` (otherwise no track could ever support a match)",
    "`beacon.watchdog_beats` x `beacon.heartbeat_s` is at most 65 s (the beacon's watchdog is a 16-bit ms count)",
    "(1 + `beacon.retries`) x `beacon.ack_timeout_s` < `beacon.watchdog_beats` x `beacon.heartbeat_s`",
)


def _check_relations(cfg: Config) -> None:
    """The checks that involve more than one key (each key's own range is checked as it is parsed)."""
    names = [c.name for c in cfg.cameras]
    if len(set(names)) != len(names):
        raise ConfigError(f"cameras.name: camera names must be unique, got {names}")
    for cam in cfg.cameras:
        if not cam.source:
            raise ConfigError(f"cameras[{cam.name}].source: must name a source (replay, opencv, picamera2, jetson)")
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        raise ConfigError("mqtt.reconnect_max_s: must not be less than mqtt.reconnect_min_s")
    if cfg.track.best_k < cfg.match.min_frames:
        raise ConfigError(
            f"track.best_k: a track keeps {cfg.track.best_k} faces but match.min_frames needs "
            f"{cfg.match.min_frames} to support a match, so nothing would ever alert"
        )
    _check_beacon(cfg.beacon)


def _check_beacon(beacon: BeaconConfig) -> None:
    quiet_hours("beacon.buzzer_quiet_hours", beacon.buzzer_quiet_hours)
    if beacon.reconnect_max_s < beacon.reconnect_min_s:
        raise ConfigError("beacon.reconnect_max_s: must not be less than beacon.reconnect_min_s")
    watchdog_s = beacon.watchdog_beats * beacon.heartbeat_s
    if watchdog_s > 65.0:
        raise ConfigError(f"beacon.heartbeat_s: watchdog_beats x heartbeat_s = {watchdog_s:g} s, at most 65 s")
    if (1 + beacon.retries) * beacon.ack_timeout_s >= watchdog_s:
        raise ConfigError(
            "beacon.ack_timeout_s: (1 + retries) x ack_timeout_s must be shorter than "
            "watchdog_beats x heartbeat_s, or the beacon trips its watchdog while the unit retries"
        )


def require_cameras(cfg: Config) -> None:
    """A running unit needs a camera; tools that read the unit's config (pairing, enrolment) do not."""
    if not cfg.cameras:
        raise ConfigError("cameras: at least one [[cameras]] table is needed (see docs/config.md)")


def _camera_label(index: int, table: dict[str, Any]) -> str:
    """How errors name a camera: by its name once that is a valid one, else by its position."""
    name = table.get("name", CameraConfig.name)
    return f"cameras[{name}]" if is_identifier(name) else f"cameras[{index}]"


def parse_config(data: dict[str, Any], base: Path | None = None) -> Config:
    """Validate a decoded TOML document. Relative paths are taken relative to `base`."""
    base = base or Path.cwd()
    _check_depth(data)  # again: a document may come from elsewhere than parse_toml
    data = dict(data)
    cameras_raw = data.pop("cameras", None)
    cfg = parse_section(Config, data, "config", base)
    if cameras_raw is not None:
        if not isinstance(cameras_raw, list):
            raise ConfigError("cameras: expected [[cameras]] tables")
        for i, cam in enumerate(cameras_raw):
            if not isinstance(cam, dict):
                raise ConfigError(f"cameras[{i}]: expected a table")
        cams = tuple(parse_section(CameraConfig, cam, _camera_label(i, cam), base) for i, cam in enumerate(cameras_raw))
        cfg = dataclasses.replace(cfg, cameras=cams)
    _check_relations(cfg)
    return cfg


def _check_depth(data: dict[str, Any]) -> None:
    """Refuse tables and arrays nested deeper than any config needs (without recursing)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise ConfigError(f"tables and arrays nested more than {MAX_VALUE_DEPTH} deep; no key needs that")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def toml_nesting(text: str) -> int:
    """The deepest bracket nesting outside strings and comments (an upper bound for broken TOML); a
    ConfigError for a number too long to be one."""
    tokens = _TOML_TOKEN.findall(text)
    if any(t[0].isdigit() for t in tokens):
        raise ConfigError(f"not valid TOML for a config: a number of more than {MAX_NUMBER_CHARACTERS} digits")
    steps = (_NESTING_STEP[t] for t in tokens if t in _NESTING_STEP)
    return max(itertools.accumulate(steps), default=0)


def parse_toml(raw: bytes, what: str = "config file") -> dict[str, Any]:
    """A TOML document of at most MAX_CONFIG_BYTES and MAX_TOML_NESTING, checked before it is parsed."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(raw)} bytes is too large for a {what} (at most {MAX_CONFIG_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid TOML (not UTF-8 at byte {exc.start})") from None
    nesting = toml_nesting(text)
    if nesting > MAX_TOML_NESTING:
        raise ConfigError(f"not valid TOML for a {what}: brackets nested {nesting} deep")
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"not valid TOML for a {what}: nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        raise ConfigError(f"not valid TOML ({str(exc)[:200]})") from None
    _check_depth(data)
    return data


def load_config(path: Path) -> Config:
    """Read and validate the config file; every problem is a ConfigError naming the file and key."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        return parse_config(parse_toml(raw), base=path.parent.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_config_or_defaults(path: Path | None) -> Config:
    """`path` if given, else the unit's own config if this machine is a provisioned unit, else the built-in
    defaults (offline tools on a workstation need only the models and vision sections)."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(path) if path is not None else Config()
