"""The unit's configuration: one TOML file, parsed and validated once at start.

Every section is a frozen dataclass; the loader checks every key against the dataclass fields, so an
unknown key or a value of the wrong type stops the daemon with a message naming the key. Secrets are
file paths, never inline values.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from lfr_contracts.camera import CameraConfig
from lfr_contracts.errors import ConfigError
from lfr_contracts.layout import DEFAULT_CONFIG

# The repository root, when running from a checkout (the manifest and default model cache live there).
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class UnitConfig:
    id: str = "unit-dev"
    state_dir: Path = Path("/var/lib/lfr-edge")
    keys_dir: Path = Path("/etc/lfr-edge/keys")
    audit_log: Path = Path("/var/lib/lfr-edge/audit.jsonl")


@dataclass(frozen=True)
class ModelsConfig:
    """Where built model artifacts are, and which ones the unit uses."""

    dir: Path = Path("~/.cache/lfr-edge/models")
    manifest: Path = REPO_ROOT / "models" / "manifest.toml"
    detector: Literal["short", "full", "both"] = "both"
    embedder_variant: str = "default"  # "default" = the variant the models build chose


@dataclass(frozen=True)
class InferenceConfig:
    backend: Literal["litert-cpu", "litert-edgetpu", "litert-gpu", "hailo", "onnx-tensorrt"] = "litert-cpu"
    threads: int = 2
    device: str = ""  # delegate-specific device selector, e.g. "usb" or ":0" for the EdgeTPU
    gpu_delegate_library: str = "libtensorflowlite_gpu_delegate.so"  # litert-gpu: name or full path
    engine_cache_dir: Path = Path("/var/lib/lfr-edge/engines")  # onnx-tensorrt: per board and model hash
    tensorrt_precision: Literal["fp32", "fp16", "int8"] = "fp16"  # int8 needs QDQ-quantised ONNX models
    tensorrt_fallback: Literal["none", "cuda"] = "none"  # "cuda": run on CUDA when TensorRT is not active


@dataclass(frozen=True)
class DetectConfig:
    score_threshold: float = 0.6
    nms_iou: float = 0.3
    # Full range on the whole frame finds large faces; short range on overlapping tiles finds small ones
    # (40-90 px at 720p: 153/217 found with 2 rows vs 53/217 without, on the simulator's street scenes).
    tile_rows: int = 2
    max_faces: int = 50


@dataclass(frozen=True)
class QualityConfig:
    min_eye_distance_px: float = 14.0
    min_score: float = 0.6
    min_sharpness: float = 15.0  # variance of the Laplacian of the aligned grey face
    max_yaw_deg: float = 45.0


@dataclass(frozen=True)
class EmbedConfig:
    flip_average: bool = True


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"
    port: int = 8883
    ca_file: Path = Path("/etc/lfr-edge/tls/ca.crt")
    cert_file: Path = Path("/etc/lfr-edge/tls/unit.crt")
    key_file: Path = Path("/etc/lfr-edge/tls/unit.key")
    topic_prefix: str = "lfr/v1"
    keepalive_s: int = 15
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class WatchlistConfig:
    command_centre_key: Path = Path("/etc/lfr-edge/keys/command-centre.pub")
    max_bundle_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class TrackConfig:
    iou_min: float = 0.2
    embedding_min: float = 0.35
    max_missed_frames: int = 10
    best_k: int = 5


@dataclass(frozen=True)
class MatchConfig:
    min_frames: int = 2
    margin: float = 0.03
    cooldown_s: float = 60.0
    top_k: int = 3


@dataclass(frozen=True)
class AlertsConfig:
    handsets_dir: Path = Path("/etc/lfr-edge/handsets")
    queue_max: int = 100
    queue_ttl_s: float = 120.0


@dataclass(frozen=True)
class BeaconConfig:
    enabled: bool = True
    port: str = "/dev/lfr-beacon"
    protocol: Literal["lfr", "patlite"] = "lfr"
    baudrate: int = 115200
    heartbeat_s: float = 1.0
    ack_timeout_s: float = 0.2
    retries: int = 3  # re-sends after the first try, same sequence number
    alert_hold_s: float = 10.0
    watchdog_beats: int = 3  # the beacon shows fault by itself after this many heartbeats are missed
    reconnect_min_s: float = 0.2  # reopen backoff after unplug, doubling up to reconnect_max_s
    reconnect_max_s: float = 5.0


@dataclass(frozen=True)
class DaemonConfig:
    telemetry_interval_s: float = 10.0
    watchdog_stall_s: float = 10.0
    clock_sync_wait_s: float = 120.0  # wait this long for time synchronisation before judging validity windows


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


def _coerce(value: Any, typ: Any, key: str, base: Path) -> Any:
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(typ)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arm in typing.get_args(typ):
            try:
                return _coerce(value, arm, key, base)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return dict(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if typ is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a file path, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return parse_section(typ, value, key, base)  # type: ignore[arg-type]
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # a programming error, kept readable


def parse_section(cls: type[T], table: dict[str, Any], name: str, base: Path | None = None) -> T:
    """Build the dataclass `cls` from a TOML table, refusing unknown keys and wrong types."""
    base = base or Path.cwd()
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"[{name}] unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    values = {key: _coerce(value, hints[key], f"{name}.{key}", base) for key, value in table.items()}
    return cls(**values)


def _check_ranges(cfg: Config) -> None:
    def positive(key: str, value: float) -> None:
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")

    def unit_interval(key: str, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}: must be between 0 and 1, got {value}")

    if not cfg.unit.id or not all(c.isalnum() or c in "-_" for c in cfg.unit.id):
        raise ConfigError(f"unit.id: {cfg.unit.id!r} must be letters, digits, '-' or '_'")
    positive("inference.threads", cfg.inference.threads)
    if not cfg.inference.gpu_delegate_library.strip():
        raise ConfigError("inference.gpu_delegate_library: must name the LiteRT GPU delegate library")
    unit_interval("detect.score_threshold", cfg.detect.score_threshold)
    unit_interval("detect.nms_iou", cfg.detect.nms_iou)
    if cfg.detect.tile_rows < 0:
        raise ConfigError(f"detect.tile_rows: must be 0 (no tiles) or more, got {cfg.detect.tile_rows}")
    positive("detect.max_faces", cfg.detect.max_faces)
    unit_interval("quality.min_score", cfg.quality.min_score)
    if not 0 < cfg.quality.max_yaw_deg <= 90:
        raise ConfigError(f"quality.max_yaw_deg: must be in (0, 90], got {cfg.quality.max_yaw_deg}")
    names = [c.name for c in cfg.cameras]
    if len(set(names)) != len(names):
        raise ConfigError(f"cameras.name: camera names must be unique, got {names}")
    for cam in cfg.cameras:
        if not cam.source:
            raise ConfigError(f"cameras[{cam.name}].source: must name a source (replay, opencv, picamera2, jetson)")
        positive(f"cameras[{cam.name}].width", cam.width)
        positive(f"cameras[{cam.name}].height", cam.height)
        positive(f"cameras[{cam.name}].fps", cam.fps)
        positive(f"cameras[{cam.name}].queue_size", cam.queue_size)
    if not 0 < cfg.mqtt.port < 65536:
        raise ConfigError(f"mqtt.port: {cfg.mqtt.port} is not a TCP port")
    if not cfg.mqtt.topic_prefix or cfg.mqtt.topic_prefix.endswith("/") or "#" in cfg.mqtt.topic_prefix:
        raise ConfigError(f"mqtt.topic_prefix: {cfg.mqtt.topic_prefix!r} is not a valid topic prefix")
    positive("mqtt.keepalive_s", cfg.mqtt.keepalive_s)
    positive("watchlist.max_bundle_bytes", cfg.watchlist.max_bundle_bytes)
    positive("match.min_frames", cfg.match.min_frames)
    positive("match.top_k", cfg.match.top_k)
    positive("alerts.queue_max", cfg.alerts.queue_max)
    positive("alerts.queue_ttl_s", cfg.alerts.queue_ttl_s)
    positive("beacon.heartbeat_s", cfg.beacon.heartbeat_s)
    positive("beacon.ack_timeout_s", cfg.beacon.ack_timeout_s)
    positive("daemon.telemetry_interval_s", cfg.daemon.telemetry_interval_s)
    positive("daemon.watchdog_stall_s", cfg.daemon.watchdog_stall_s)
    if not 0.0 <= cfg.daemon.clock_sync_wait_s <= 3600.0:
        raise ConfigError(f"daemon.clock_sync_wait_s: must be between 0 and 3600, got {cfg.daemon.clock_sync_wait_s}")
    _check_beacon(cfg.beacon)


def _check_beacon(beacon: BeaconConfig) -> None:
    if beacon.retries < 0:
        raise ConfigError(f"beacon.retries: must be 0 or more, got {beacon.retries}")
    for key in ("baudrate", "alert_hold_s", "reconnect_min_s"):
        if getattr(beacon, key) <= 0:
            raise ConfigError(f"beacon.{key}: must be greater than 0, got {getattr(beacon, key)}")
    if beacon.reconnect_max_s < beacon.reconnect_min_s:
        raise ConfigError("beacon.reconnect_max_s: must not be less than beacon.reconnect_min_s")
    if beacon.watchdog_beats < 2:
        raise ConfigError(f"beacon.watchdog_beats: must be 2 or more, got {beacon.watchdog_beats}")
    watchdog_s = beacon.watchdog_beats * beacon.heartbeat_s
    if watchdog_s > 65.0:
        raise ConfigError(f"beacon.heartbeat_s: watchdog_beats x heartbeat_s = {watchdog_s} s, at most 65 s")
    if (1 + beacon.retries) * beacon.ack_timeout_s >= watchdog_s:
        raise ConfigError(
            "beacon.ack_timeout_s: (1 + retries) x ack_timeout_s must be shorter than "
            "watchdog_beats x heartbeat_s, or the beacon trips its watchdog while the unit retries"
        )


def require_cameras(cfg: Config) -> None:
    """A running unit needs a camera; tools that read the unit's config (pairing, enrolment) do not."""
    if not cfg.cameras:
        raise ConfigError("cameras: at least one [[cameras]] table is needed (see docs/config.md)")


def parse_config(data: dict[str, Any], base: Path | None = None) -> Config:
    """Validate a decoded TOML document. Relative paths are taken relative to `base`."""
    base = base or Path.cwd()
    data = dict(data)
    cameras_raw = data.pop("cameras", None)
    cfg = parse_section(Config, data, "config", base)
    if cameras_raw is not None:
        if not isinstance(cameras_raw, list):
            raise ConfigError("cameras: expected [[cameras]] tables")
        for i, cam in enumerate(cameras_raw):
            if not isinstance(cam, dict):
                raise ConfigError(f"cameras[{i}]: expected a table")
        cams = tuple(parse_section(CameraConfig, cam, f"cameras[{i}]", base) for i, cam in enumerate(cameras_raw))
        cfg = dataclasses.replace(cfg, cameras=cams)
    _check_ranges(cfg)
    return cfg


def load_config(path: Path) -> Config:
    """Read and validate the config file; every problem is a ConfigError naming the file and key."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return parse_config(data, base=path.parent.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_config_or_defaults(path: Path | None) -> Config:
    """`path` if given, else the unit's own config if this machine is a provisioned unit, else the built-in
    defaults (offline tools on a workstation need only the models and vision sections)."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(path) if path is not None else Config()
