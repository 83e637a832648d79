"""`lfr-provision selftest`: the technician's go/no-go before handing a van over.

Each check exercises the real thing the daemon will use (the config file, the model files against the
manifest, the inference backend with a measured latency per model, each camera, the beacon, the broker
with the unit's certificate, the keys, the clock, memory and disk) and returns one row: a verdict (PASS,
WARN, FAIL, SKIP) and a one-line detail that names the file, device or setting concerned. The table is
printed; any FAIL makes the exit status 1. Nothing is published and nothing of a frame is kept.

Run it with the service stopped: the daemon holds the beacon's serial port (and often the camera). It is a
technician's tool run on the unit, not part of the daemon: it uses the van package's own parts as libraries.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import secrets
import shutil
import stat
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from lfr_contracts import crypto, layout
from lfr_contracts.errors import ConfigError
from lfr_contracts.layout import UnitLayout
from lfr_edge import keyfiles
from lfr_edge.cli import check_inside_root
from lfr_edge.config import Config, load_config
from lfr_edge.daemon.memory_lock import lock_all_memory
from lfr_edge.inference.base import Backend
from lfr_provision.identity import ProvisionError

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP"]
MIN_YEAR = 2025


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class Options:
    timeout_s: float = 5.0  # per camera, beacon and broker
    frames: int = 10  # grabbed per camera
    runs: int = 10  # timed invokes per model
    min_memory_mb: int = 256
    min_disk_mb: int = 200


@dataclass
class _Models:
    """Verified model files (name -> path), shared by the model and backend checks."""

    files: dict[str, Path]
    failed: list[str]


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.0f} MiB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.1f} GiB"


# ---- checks: each returns its rows; an unexpected exception becomes a FAIL row (run_checks) ----------


def check_models(cfg: Config, models: _Models) -> Iterator[Check]:
    from lfr_edge.models import ModelError, load_manifest
    from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE
    from lfr_edge.vision.pipeline import YUNET, model_variants

    try:
        manifest = load_manifest(cfg.models.manifest)
        detector_variant, embedder_variant = model_variants(cfg)  # the backend's own variants
    except ModelError as exc:
        yield Check("models", "FAIL", str(exc))
        return
    wanted: list[tuple[str, str]] = [(cfg.models.embedder, embedder_variant)]
    if cfg.models.detector == YUNET:
        wanted.insert(0, (YUNET, detector_variant))
    if cfg.models.detector in ("full", "both"):
        wanted.insert(0, (FULL_RANGE.name, detector_variant))
    if cfg.models.detector in ("short", "both"):
        wanted.insert(-1, (SHORT_RANGE.name, detector_variant))
    for name, variant in wanted:
        try:
            path, v = manifest.artifact(name, variant, cfg.models.dir)
        except ModelError as exc:
            yield Check(f"model {name}", "FAIL", str(exc))
            models.failed.append(name)
            continue
        models.files[name] = path
        yield Check(f"model {name}", "PASS", f"{v.name}: sha256 {v.sha256[:12]}… matches the manifest ({path})")


def check_calibration(cfg: Config, verified: bool = True) -> Check:
    """The embedder's calibration table, which puts a measured false-alert rate on every alert: WARN without."""
    from lfr_edge.models import load_calibration
    from lfr_edge.vision.pipeline import resolve_model_files

    if not verified:
        return Check("calibration", "SKIP", "not read: a model file did not verify")
    model_id = resolve_model_files(cfg).model_id
    table, missing = load_calibration(cfg.models.dir, model_id)
    if table is None:
        return Check("calibration", "WARN", missing)
    return Check(
        "calibration",
        "PASS",
        f"{model_id}: {table.impostor_pairs:,} impostor pairs ({table.corpus}); alerts carry their false-accept rate",
    )


def check_backend(cfg: Config, models: _Models, opts: Options) -> Iterator[Check]:
    from lfr_edge.inference import BackendUnavailable, create_backend

    try:
        backend = create_backend(cfg.inference)
    except BackendUnavailable as exc:
        yield Check("backend", "FAIL", f"inference.backend = {cfg.inference.backend!r}: {exc}")
        return
    yield Check("backend", "PASS", backend.describe())
    for name in models.failed:
        yield Check(f"latency {name}", "SKIP", "not run: the model file did not verify")
    rng = np.random.default_rng(0)
    for name, path in models.files.items():
        try:
            times = _time_model(backend, path, opts.runs, rng)
        except Exception as exc:  # the backend names what is missing (delegate, provider, device)
            yield Check(f"latency {name}", "FAIL", f"{backend.name} cannot run {path.name}: {exc}")
            continue
        median, worst = statistics.median(times), max(times)
        yield Check(
            f"latency {name}",
            "PASS",
            f"median {median:.2f} ms, max {worst:.2f} ms over {opts.runs} runs on {backend.name}",
        )


def _time_model(backend: Backend, path: Path, runs: int, rng: np.random.Generator) -> list[float]:
    """Milliseconds per invoke on random input of the model's own shapes, after one warm-up run."""
    model = backend.load(path)
    # a dynamic dimension (-1: YuNet's height and width) gets 384, a multiple of its 32-pixel stride
    shapes = [tuple(d if d > 0 else 384 for d in spec.shape) for spec in model.inputs]
    inputs = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in shapes]
    model.run(*inputs)  # warm-up: delegates compile and engines build on the first invoke
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(*inputs)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _grab(cfg: Config, index: int, opts: Options) -> Check:
    from lfr_contracts.camera import CameraError
    from lfr_edge.camera import create_source

    cam = cfg.cameras[index]
    name = f"camera {cam.name}"
    source = create_source(cam)
    frames: list[tuple[float, tuple[int, ...]]] = []
    failure: list[str] = []

    def grab() -> None:
        try:
            source.open()
            for _ in range(opts.frames):
                frame = source.read()
                frames.append((time.monotonic(), frame.image.shape))
        except CameraError as exc:
            failure.append(str(exc))

    worker = threading.Thread(target=grab, name=f"selftest-{cam.name}", daemon=True)
    worker.start()
    worker.join(opts.timeout_s)
    source.close()
    what = f"{cam.source} {cam.uri}".strip()
    if failure:
        return Check(name, "FAIL", f"{what}: {failure[0]}")
    if len(frames) < opts.frames:
        return Check(name, "FAIL", f"{what}: {len(frames)} of {opts.frames} frames in {opts.timeout_s:g} s")
    height, width = frames[-1][1][:2]
    span = frames[-1][0] - frames[0][0]
    fps = (len(frames) - 1) / span if span > 0 else float("inf")
    detail = f"{what}: {width}x{height}, {len(frames)} frames at {fps:.1f} fps (configured {cam.fps:g})"
    return Check(name, "WARN" if fps < 0.5 * cam.fps else "PASS", detail)


def check_cameras(cfg: Config, opts: Options) -> Iterator[Check]:
    for index in range(len(cfg.cameras)):
        try:
            yield _grab(cfg, index, opts)
        except Exception as exc:  # a missing library or device: the source names it
            cam = cfg.cameras[index]
            yield Check(f"camera {cam.name}", "FAIL", f"{cam.source} {cam.uri}: {exc}")


def check_beacon(cfg: Config, opts: Options) -> Iterator[Check]:
    if not cfg.beacon.enabled:
        yield Check("beacon", "SKIP", "beacon.enabled = false")
        return
    from lfr_edge.alerts.beacon import BeaconDriver

    port = cfg.beacon.port
    if not os.path.exists(port):
        yield Check("beacon", "FAIL", f"{port} does not exist (cable, udev rule 99-lfr-beacon.rules)")
        return
    driver = BeaconDriver(cfg.beacon)
    driver.start()
    try:
        ok = driver.selftest(opts.timeout_s)
        state = driver.state()
    finally:
        driver.close(park=True)
    if ok and state.device is not None:
        rtt = f", round trip {state.last_rtt_ms:.1f} ms" if state.last_rtt_ms is not None else ""
        yield Check("beacon", "PASS", f"{port}: answered (showing {state.device.pattern.name.lower()}{rtt})")
    elif not state.connected:
        yield Check("beacon", "FAIL", f"cannot open {port} (held by the running daemon? permissions?)")
    else:
        yield Check("beacon", "FAIL", f"{port}: no valid answer within {opts.timeout_s:g} s")


def check_broker(cfg: Config, opts: Options) -> Iterator[Check]:
    from lfr_tools.broker_client import connect_tls

    m = cfg.mqtt
    start = time.perf_counter()
    try:
        client = connect_tls(
            f"{cfg.unit.id}-selftest-{secrets.token_hex(3)}",
            m.host,
            m.port,
            (m.ca_file, m.cert_file, m.key_file),
            timeout_s=opts.timeout_s,
        )
    except ConnectionError as exc:
        yield Check("broker", "FAIL", str(exc))
        return
    ms = (time.perf_counter() - start) * 1e3
    client.disconnect()
    client.loop_stop()
    yield Check("broker", "PASS", f"{m.host}:{m.port}: connected with {m.cert_file.name} in {ms:.0f} ms")


def _private_key_problem(path: Path) -> str | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if mode & 0o077:
        return f"{path}: mode {mode:04o}, must be 0600 (chmod 600)"
    return None


def check_watchlist(cfg: Config) -> Check:
    """What the unit's lifecycle record says it held at its last stop, and whether the record can be trusted."""
    from lfr_edge.watchlist.lifecycle import LifecycleError, LifecycleFile

    path = cfg.unit.state_dir / layout.LIFECYCLE_RECORD
    try:
        key = keyfiles.load_ed25519_private(cfg.unit.keys_dir / layout.UNIT_ED25519_KEY)
        state = LifecycleFile(path, cfg.unit.id, key).load()
    except (crypto.KeyFileError, LifecycleError) as exc:
        return Check("watchlist", "FAIL", str(exc))
    held, refusal = state.held, state.last_refusal
    if state.status == "active" and held is not None:
        until = datetime.fromtimestamp(held.valid_until, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        detail = f"active at the last stop: {held.deployment} v{held.version}, {held.subjects} subjects, until {until}"
    elif state.status == "refused" and refusal is not None:
        detail = f"none: the last bundle was refused ({refusal.reason}: {refusal.detail[:120]})"
    elif state.status in ("closed", "expired"):
        detail = f"none: deployment {next(reversed(state.ended), '?')} {state.status}"
    else:
        detail = "none applied yet" if not path.exists() else "none"
    ended = f"; {len(state.ended)} ended deployment(s) never to be applied again" if state.ended else ""
    return Check("watchlist", "PASS", f"{detail}{ended} ({path})")


def check_keys(cfg: Config) -> Iterator[Check]:
    keys = cfg.unit.keys_dir
    problems: list[str] = []
    loaders: list[tuple[Path, Callable[[Path], object]]] = [
        (keys / layout.UNIT_X25519_KEY, keyfiles.load_x25519_private),
        (keys / layout.UNIT_ED25519_KEY, keyfiles.load_ed25519_private),
    ]
    for path, load in loaders:
        try:
            load(path)
        except crypto.KeyFileError as exc:
            problems.append(str(exc))
            continue
        problems += filter(None, [_private_key_problem(path)])
    problems += filter(None, [_private_key_problem(cfg.mqtt.key_file)])
    try:
        keyfiles.load_ed25519_public(cfg.watchlist.command_centre_key)
    except crypto.KeyFileError as exc:
        problems.append(f"command centre key: {exc}")
    if problems:
        yield Check("keys", "FAIL", "; ".join(problems))
    else:
        yield Check("keys", "PASS", f"unit keys in {keys} and TLS key at 0600; command centre key loads")

    from lfr_edge.alerts.handset import load_handsets

    if not cfg.alerts.handsets_dir.is_dir():
        yield Check("handsets", "FAIL", f"alerts.handsets_dir {cfg.alerts.handsets_dir} does not exist")
        return
    paired = load_handsets(cfg.alerts.handsets_dir)
    if paired:
        yield Check("handsets", "PASS", f"{len(paired)} paired: {', '.join(sorted(paired))}")
    else:
        yield Check("handsets", "WARN", f"none paired in {cfg.alerts.handsets_dir} (lfr-provision pair-handset)")


def ntp_synchronised() -> bool | None:
    """timedatectl's NTPSynchronized, or None where it cannot say (no systemd, no timedatectl)."""
    try:
        done = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return {"yes": True, "no": False}.get(value) if done.returncode == 0 else None


def check_clock(now: datetime | None = None, ntp: Callable[[], bool | None] = ntp_synchronised) -> Check:
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    if now.year < MIN_YEAR:
        return Check("clock", "FAIL", f"{stamp} is before {MIN_YEAR}: set the time (certificates, watchlist expiry)")
    synced = ntp()
    if synced is None:
        return Check("clock", "WARN", f"{stamp}; NTP state unknown (timedatectl unavailable)")
    if not synced:
        return Check("clock", "WARN", f"{stamp}; not NTP-synchronised (timedatectl): check network time")
    return Check("clock", "PASS", f"{stamp}; NTP-synchronised")


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes."""
    values = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemAvailable", "MemTotal"):
            values[key] = int(rest.split()[0]) * 1024
    return values["MemAvailable"], values["MemTotal"]


def check_memory(opts: Options, meminfo: Path = Path("/proc/meminfo")) -> Check:
    available, total = mem_available(meminfo)
    detail = f"{_mib(available)} available of {_mib(total)} (floor {opts.min_memory_mb} MiB)"
    return Check("memory", "FAIL" if available < opts.min_memory_mb * 2**20 else "PASS", detail)


def swap_devices(swaps: Path = Path("/proc/swaps")) -> list[tuple[str, int]]:
    """Active swap devices and files: (name, size in bytes)."""
    rows = swaps.read_text().splitlines()[1:]
    return [(fields[0], int(fields[2]) * 1024) for fields in (row.split() for row in rows) if len(fields) >= 3]


def check_swap(swaps: Path = Path("/proc/swaps")) -> Check:
    devices = swap_devices(swaps)
    if devices:
        listed = ", ".join(f"{name} ({_mib(size)})" for name, size in devices)
        return Check(
            "swap",
            "FAIL",
            f"swap is on: {listed}; a passer-by's face could be written out to it: run provisioning/board-setup.sh "
            "(it turns swap off for good) or `sudo swapoff -a` and disable dphys-swapfile / zram",
        )
    return Check("swap", "PASS", "no swap device or file")


def unlock_all_memory() -> None:
    """Undo `lock_all_memory`: the self-test measures locking, then leaves its process as it was."""
    name = ctypes.util.find_library("c")
    if name is not None:
        ctypes.CDLL(name, use_errno=True).munlockall()


def locked_and_resident(status: Path = Path("/proc/self/status")) -> tuple[int, int]:
    """(VmLck, VmRSS) of a process, in bytes."""
    values = {}
    for line in status.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmLck", "VmRSS"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("VmLck", 0), values.get("VmRSS", 0)


def check_memory_lock() -> Check:
    """Lock this process's memory as the daemon does, once the models are loaded, and compare with its size."""
    problem = lock_all_memory()
    locked, resident = locked_and_resident()
    unlock_all_memory()
    if problem is not None:
        return Check("memory lock", "FAIL", problem)
    # With MCL_ONFAULT, VmLck counts whole locked mappings, filled in as they are touched: every resident page
    # is locked when VmLck is at least VmRSS.
    verdict: Verdict = "PASS" if resident and locked >= resident else "FAIL"
    return Check("memory lock", verdict, f"VmRSS {_mib(resident)} within locked memory (VmLck {_mib(locked)})")


def check_disk(cfg: Config, opts: Options) -> Check:
    directory = cfg.unit.audit_log.parent
    if not directory.is_dir():
        return Check("disk", "FAIL", f"{directory} (the audit log's folder) does not exist")
    free = shutil.disk_usage(directory).free
    detail = f"{_mib(free)} free in {directory} (audit log; floor {opts.min_disk_mb} MiB)"
    return Check("disk", "FAIL" if free < opts.min_disk_mb * 2**20 else "PASS", detail)


# ---- running and printing ----------------------------------------------------------------------------


def _guarded(name: str, rows: Callable[[], Iterator[Check] | Check]) -> list[Check]:
    try:
        result = rows()
        return [result] if isinstance(result, Check) else list(result)
    except Exception as exc:  # one broken check must not hide the others' verdicts
        return [Check(name, "FAIL", f"{type(exc).__name__}: {exc}")]


def run_checks(config_path: Path, opts: Options = Options()) -> list[Check]:
    """Every check, in the order a technician fixes things; later checks are skipped without a config."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        rows = [Check("config", "FAIL", str(exc))]
        later = ("models", "backend", "cameras", "beacon", "broker", "keys")
        return rows + [Check(n, "SKIP", "no valid config") for n in later] + [check_clock()]
    rows = [
        Check(
            "config",
            "PASS",
            f"{config_path}: unit {cfg.unit.id}, {len(cfg.cameras)} camera(s), backend {cfg.inference.backend}",
        )
    ]
    models = _Models({}, [])
    rows += _guarded("models", lambda: check_models(cfg, models))
    rows += _guarded("calibration", lambda: check_calibration(cfg, not models.failed))
    rows += _guarded("backend", lambda: check_backend(cfg, models, opts))
    rows += _guarded("cameras", lambda: check_cameras(cfg, opts))
    rows += _guarded("beacon", lambda: check_beacon(cfg, opts))
    rows += _guarded("broker", lambda: check_broker(cfg, opts))
    rows += _guarded("keys", lambda: check_keys(cfg))
    rows += _guarded("watchlist", lambda: check_watchlist(cfg))
    rows += _guarded("clock", check_clock)
    rows += _guarded("memory", lambda: check_memory(opts))
    rows += _guarded("disk", lambda: check_disk(cfg, opts))
    rows += _guarded("swap", check_swap)
    rows += _guarded("memory lock", check_memory_lock)
    return rows


def format_table(rows: list[Check]) -> str:
    width = max(len("CHECK"), *(len(r.name) for r in rows))
    lines = [f"{'CHECK':{width}}  VERDICT  DETAIL"]
    lines += [f"{r.name:{width}}  {r.verdict:7}  {r.detail}" for r in rows]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("PASS", "WARN", "FAIL", "SKIP")}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    lines.append(f"{'NO-GO' if counts['FAIL'] else 'GO'}: {summary}")
    return "\n".join(lines)


def selftest_command(args: argparse.Namespace) -> int:
    """Print the table; 1 on any FAIL. A config naming a file outside --root is refused (ProvisionError)."""
    root = Path(args.root).absolute()
    path: Path = args.config or UnitLayout(root).config
    try:
        cfg: Config | None = load_config(path)
    except ConfigError:
        cfg = None  # a config that does not load is the first row's FAIL
    if cfg is not None:
        try:
            check_inside_root(cfg, root, path)
        except ConfigError as exc:
            raise ProvisionError(str(exc)) from exc
    opts = Options(
        timeout_s=args.timeout,
        frames=args.frames,
        runs=args.runs,
        min_memory_mb=args.min_memory_mb,
        min_disk_mb=args.min_disk_mb,
    )
    rows = run_checks(path, opts)
    print(format_table(rows), flush=True)
    return 1 if any(r.verdict == "FAIL" for r in rows) else 0


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `selftest` to lfr-provision; `parents` carry its global options (`--root`)."""
    p = subparsers.add_parser(
        "selftest", help="the go/no-go: config, models, backend, camera, beacon, broker, swap...", parents=parents
    )
    p.add_argument("--config", type=Path, help="the unit's config file (default ROOT/etc/lfr-edge/config.toml)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per camera, beacon and broker")
    p.add_argument("--frames", type=int, default=10, help="frames to grab per camera")
    p.add_argument("--runs", type=int, default=10, help="timed invokes per model")
    p.add_argument("--min-memory-mb", type=int, default=256, help="MemAvailable floor")
    p.add_argument("--min-disk-mb", type=int, default=200, help="free space floor for the audit log")
    return p
