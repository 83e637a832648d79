"""`lfr-edge run`: the daemon that wires config → cameras → vision → tracking/matching → alerts.

Start-up order follows what systemd is told: READY=1 only once the models are loaded and verified, every
camera has delivered a frame and the broker is connected. The watchdog is petted only while frames are
processed. SIGTERM stops capture, publishes the retained `stopped`, wipes the watchlist, sets the beacon to
idle and exits 0 within 5 s. SIGHUP re-reads the config and applies what is safe to change live.

Every thread is supervised (lfr_edge.daemon.supervise). When one is down for good, the watchdog stops
petting and the main loop stops the unit with exit status 1, so systemd restarts it either way.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lfr_contracts import layout
from lfr_contracts.alerts import MAX_DECISION_BYTES
from lfr_contracts.audit_events import ConfigReloaded, FacesSeen, FaultComponent, Started, Stopped
from lfr_contracts.camera import FrameSource
from lfr_contracts.errors import ConfigError
from lfr_contracts.receipts import MAX_RECEIPT_BYTES
from lfr_contracts.status import BeaconState
from lfr_contracts.telemetry import BeaconLink, CameraState, Telemetry, encode_telemetry
from lfr_edge import keyfiles
from lfr_edge.alerts.channel import AlertChannel, UnitState, show_state_on_all
from lfr_edge.alerts.handset import HandsetChannel, load_handsets
from lfr_edge.audit.faults import FaultMonitor, Problem, current_problems
from lfr_edge.audit.log import AuditLog
from lfr_edge.camera import create_source
from lfr_edge.comms.mqtt import Overflow, UnitMqttClient
from lfr_edge.config import Config, load_config, require_cameras
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.daemon.clock import WallClock
from lfr_edge.daemon.frames import CaptureThread, NewestFrames
from lfr_edge.daemon.memory_lock import lock_all_memory
from lfr_edge.daemon.notify import Notifier, Watchdog
from lfr_edge.daemon.supervise import Supervisor
from lfr_edge.daemon.worker import PipelineWorker
from lfr_edge.models import load_calibration
from lfr_edge.vision.pipeline import build_pipeline
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.store import harden_process
from lfr_edge.watchlist.sync import WatchlistSync

log = logging.getLogger("lfr_edge.daemon")

STOP_DEADLINE_S = 4.0  # everything in stop() shares this budget; systemd's TimeoutStopSec is 5 s


@dataclass(frozen=True)
class Health:
    """What READY=1 waits for: the unit can scan. The broker is not among them: a van whose network is down
    at boot still scans and shows alerts on its beacon, queues them for the handsets, and says in STATUS=
    why the broker cannot be reached; waiting for it instead would let systemd's start timeout restart the
    unit until its start limit leaves it down for good, with nothing scanning when the network returns."""

    models: bool = False
    cameras: bool = False


class Daemon:
    def __init__(self, cfg: Config, config_path: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.env = dict(os.environ if env is None else env)
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.health = Health()
        self.notifier = Notifier(self.env)
        self.started_at = time.monotonic()
        self.beacon: Any = None
        self.unit_state = UnitState()
        self.supervisor = Supervisor()
        self._faces_audited: dict[str, int] = {}
        self._published_head: Any = None

    # start-up ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.supervisor.install_excepthook()  # threads we did not start (paho's) are watched too
        for problem in harden_process():
            log.warning("hardening: %s", problem)
        locking = lock_all_memory()
        if locking is not None:
            log.warning("hardening: %s; with swap off nothing is paged out anyway", locking)
        self.audit = AuditLog.open(cfg.unit.audit_log, cfg.unit.id, on_damage="rotate")
        self.audit.append(Started(version=_version(), cameras=tuple(c.name for c in cfg.cameras)))
        self.faults = FaultMonitor(self.audit)
        keys = cfg.unit.keys_dir
        self.unit_signing = keyfiles.load_ed25519_private(keys / layout.UNIT_ED25519_KEY)
        unit_sealing = keyfiles.load_x25519_private(keys / layout.UNIT_X25519_KEY)
        command_centre = keyfiles.load_ed25519_public(cfg.watchlist.command_centre_key)

        self.notifier.status("loading models")
        self.pipeline = build_pipeline(cfg)
        self.health = replace(self.health, models=True)
        log.info("models verified and loaded: %s (%s)", self.pipeline.model_id, cfg.inference.backend)
        self.calibration, missing = load_calibration(cfg.models.dir, self.pipeline.model_id)
        if missing:
            log.warning("calibration: %s", missing)

        self.mqtt = UnitMqttClient(cfg.unit.id, cfg.mqtt, model_id=self.pipeline.model_id, supervisor=self.supervisor)
        self.wall_clock = WallClock(cfg.daemon.clock_sync_wait_s)
        self.sync = WatchlistSync(
            unit_id=cfg.unit.id,
            model_id=self.pipeline.model_id,
            embedding_dim=self.pipeline.embedder.dim,
            command_centre_key=command_centre,
            unit_key=unit_sealing,
            max_bundle_bytes=cfg.watchlist.max_bundle_bytes,
            ack_topic=self.mqtt.topics.watchlist_ack,
            publish=lambda topic, payload: self.mqtt.publish(topic, payload, qos=1),
            audit=self.audit,
            record=LifecycleFile(cfg.unit.state_dir / layout.LIFECYCLE_RECORD, cfg.unit.id, self.unit_signing),
            on_status=self.mqtt.set_watchlist_status,
            clock_trusted=self.wall_clock.trusted,
            supervisor=self.supervisor,
        )
        self.mqtt.set_watchlist_status(self.sync.status())  # the first birth already says it
        self.handsets = HandsetChannel(
            self.mqtt,
            self.mqtt.topics,
            cfg.unit.id,
            self.unit_signing,
            self._paired_handsets,
            cfg.alerts,
            self.audit,
        )
        self._handset_cache: tuple[float, dict[str, Any]] = (0.0, {})
        # The command centre's messages are never dropped; a flood of decisions is, and cannot delay them.
        self.mqtt.subscribe(
            self.mqtt.topics.watchlist,
            self.sync.handle_message,
            max_bytes=cfg.watchlist.max_bundle_bytes,
            queue_size=4,
            overflow=Overflow.WAIT,
        )
        # Every handset's own topics, one queue per handset served in turn: a flood from one cannot delay another.
        topics = self.mqtt.topics
        for topic, handler, max_bytes in (
            (topics.decisions, self.handsets.on_decision, MAX_DECISION_BYTES),
            (topics.alert_receipts, self.handsets.on_receipt, MAX_RECEIPT_BYTES),
        ):
            self.mqtt.subscribe(topics.every_sender(topic), handler, max_bytes=max_bytes, queue_size=64)
        self.mqtt.add_connect_listener(self._on_broker_connected)

        self.channels: list[AlertChannel] = [self.handsets]
        if cfg.beacon.enabled:
            from lfr_edge.alerts.beacon import BeaconChannel, BeaconDriver

            self.beacon = BeaconDriver(cfg.beacon, supervisor=self.supervisor)
            self.channels.append(BeaconChannel(self.beacon))

        self.frames = NewestFrames()
        self.sources: list[FrameSource] = [create_source(c) for c in cfg.cameras]
        self.captures = [
            CaptureThread(
                s, self.frames, self.stop_event, stall_after_s=max(2.0, 5.0 / c.fps), supervisor=self.supervisor
            )
            for s, c in zip(self.sources, cfg.cameras, strict=True)
        ]
        self.worker = PipelineWorker(
            self.pipeline,
            [c.name for c in cfg.cameras],
            cfg.track,
            cfg.match,
            lambda: self.sync.store,
            Alerter(cfg.unit.id, self.channels, self.audit, calibration=self.calibration),
            embed_cfg=cfg.embed,
        )

    def _paired_handsets(self) -> dict[str, Any]:
        """The handset registry, re-read at most every 5 s so a new pairing takes effect without restart."""
        loaded_at, handsets = self._handset_cache
        if time.monotonic() - loaded_at > 5.0:
            handsets = load_handsets(self.cfg.alerts.handsets_dir)
            self._handset_cache = (time.monotonic(), handsets)
        return handsets

    def _on_broker_connected(self) -> None:
        self.handsets.flush(resend_all=True)  # a broker that restarted may have lost what it queued

    def start(self) -> None:
        """Start every thread; READY=1 is sent from the main loop once the health checks pass."""
        self.mqtt.start()
        self._show_unit_state()  # the beacon's first pattern already says whether a list is held
        if self.beacon is not None:
            self.beacon.start()
        for capture in self.captures:
            capture.start()
        self.sync.start_expiry_timer()
        self.watchdog = Watchdog.from_env(
            self.notifier, self.cfg.daemon.watchdog_stall_s, self.env, unhealthy=self.supervisor.down_reason
        )
        self.supervisor.start("telemetry", self._telemetry_loop, stop=self.stop_event)

    # the main loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        # Everything allocated at start (modules, models, config) never becomes garbage: keep the
        # collector from walking it again on every full collection in the frame loop.
        gc.collect()
        gc.freeze()
        ready = False
        last_status = 0.0
        while not self.stop_event.is_set():
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            frames = self.frames.take(timeout=0.5)
            for capture in self.captures:
                capture.check_stall(time.monotonic())
            self._show_unit_state()
            if frames:
                self.worker.process(frames)
                if self.watchdog is not None:
                    self.watchdog.progress()
            if not ready:
                ready = self._check_ready()
            elif time.monotonic() - last_status > 2.0:
                last_status = time.monotonic()
                self.notifier.status(self.status_line())
                self.handsets.flush()  # re-send what no handset acknowledged
                if self.wall_clock.step():  # NTP or a technician moved the wall clock: windows, again, now
                    self.sync.check_expiry()
                    self.sync.check_waiting()
            if ready:
                self.faults.poll(time.monotonic(), self._current_problems)
            down = self.supervisor.down_reason()
            if down is not None:
                log.error("%s; stopping so that systemd restarts the unit", down)
                return 1
        return 0

    def _show_unit_state(self) -> None:
        """The channels show what keeps the unit from scanning (a camera lost or stalled) while it lasts."""
        cameras = [p for p in self._current_problems() if p.component is FaultComponent.CAMERA]
        watchlist_active = self.sync.store is not None
        state = UnitState(tuple(f"camera {p.source} {p.problem}" for p in cameras), watchlist_active)
        if state != self.unit_state:
            self.unit_state = state
            show_state_on_all(self.channels, state)

    def _check_ready(self) -> bool:
        self.health = replace(self.health, cameras=all(c.first_frame.is_set() for c in self.captures))
        if not (self.health.models and self.health.cameras):
            waiting = [k for k, ok in vars(self.health).items() if not ok]
            self.notifier.status(f"starting: waiting for {', '.join(waiting)}; {self._broker_state()}")
            return False
        self.notifier.ready(self.status_line())
        if self.watchdog is not None:
            self.watchdog.start()
        log.info("ready: %s", self.status_line())
        return True

    def _current_problems(self) -> list[Problem]:
        broker = f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}"
        return current_problems(self.captures, self.beacon, self.cfg.beacon.port, self.mqtt.connected.is_set(), broker)

    def _broker_state(self) -> str:
        if self.mqtt.connected.is_set():
            return "broker connected"
        return self.mqtt.connection_problem() or f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port}: connecting"

    def status_line(self) -> str:
        stats = self.worker.stats
        broker = "" if self.mqtt.connected.is_set() else f"{self._broker_state()}; "
        return (
            f"{broker}{stats.fps():.1f} fps, {stats.faces_seen} faces, watchlist {self.sync.status().summary()}, "
            f"{stats.alerts} alerts, skipped {sum(self.frames.skipped_counts().values())}"
        )

    def telemetry(self) -> Telemetry:
        """Counts and timings only: no frame, crop or embedding is ever part of it."""
        stats = self.worker.stats
        beacon = self.beacon.state() if self.beacon is not None else None
        return Telemetry(
            unit=self.cfg.unit.id,
            time=time.time(),
            uptime_s=round(time.monotonic() - self.started_at, 1),
            fps=round(stats.fps(), 2),
            frames=stats.frames,
            faces_seen=stats.faces_seen,
            faces_embedded=stats.faces_embedded,
            faces_rejected=dict(stats.rejected),
            tracks_started=stats.tracks_started,
            tracks_ended_unmatched=stats.tracks_ended_unmatched,
            alerts=stats.alerts,
            stage_ms=stats.stage_medians(),
            frames_skipped=self.frames.skipped_counts(),
            camera_fps=stats.camera_fps(),
            cpu_temp_c=cpu_temperature(),
            watchlist=self.sync.status(),
            cameras={c.source.name: CameraState.STALLED if c.stalled else CameraState(c.state) for c in self.captures},
            camera_dropped={s.name: s.stats.dropped for s in self.sources},
            beacon=None if beacon is None else BeaconLink(beacon.connected, beacon.responsive, beacon.pattern_acked),
            alerts_outbox=dict(vars(self.handsets.stats)),
            threads=self.supervisor.health(),
            audit=self.audit.health(),
            messages_dropped={
                topic: stats.dropped_full + stats.dropped_oversize
                for topic, stats in self.mqtt.subscription_stats().items()
            },
        )

    def _telemetry_loop(self) -> None:
        while not self.stop_event.wait(self.cfg.daemon.telemetry_interval_s):
            self.audit.retry()  # after a full disk: writing resumes, with its gap record, when space returns
            try:
                self._audit_faces_seen()
                self.mqtt.set_beacon_status(self._beacon_state())
                if self.mqtt.connected.is_set():
                    self.mqtt.publish(self.mqtt.topics.telemetry, encode_telemetry(self.telemetry()), qos=0)
                    self._publish_audit_head()
            except Exception as exc:  # a bug here must not end telemetry: counted, and tried next interval
                self.supervisor.caught("telemetry", exc)

    def _beacon_state(self) -> BeaconState | None:
        """The beacon as the handset shows it (in the retained status); None without one."""
        if self.beacon is None:
            return None
        link = self.beacon.state()
        return "disconnected" if not link.connected else "ok" if link.responsive else "not_answering"

    def _publish_audit_head(self) -> None:
        """The audit log's head (seq and hash of its last line), retained: someone who cuts lines off the
        end of the file cannot make it match (`lfr-audit verify --expect-head SEQ:HASH`)."""
        head = self.audit.head
        if head is not None and head != self._published_head:
            body = {"unit": self.cfg.unit.id, "seq": head.seq, "hash": head.hash, "time": time.time()}
            if self.mqtt.publish(self.mqtt.topics.audit, json.dumps(body).encode(), qos=1, retain=True):
                self._published_head = head

    def _audit_faces_seen(self) -> None:
        """Counts for the deployment report (faces scanned), per camera, since the last entry."""
        counts = self.worker.stats.faces_by_camera
        for camera, count in list(counts.items()):
            delta = count - self._faces_audited.get(camera, 0)
            if delta > 0:
                self.audit.append(FacesSeen(camera=camera, count=delta))
                self._faces_audited[camera] = count

    # reload and stop --------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply what is safe live, name what needs a restart."""
        if self.config_path is None:
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self.status_line())
            return
        live = {"match", "quality", "track", "alerts", "daemon"}
        needs_restart = [
            section
            for section in vars(new)
            if section not in live and getattr(new, section) != getattr(self.cfg, section)
        ]
        self.worker.apply(new.track, new.match, new.embed)
        self.pipeline.apply(new.quality)
        self.handsets.apply(new.alerts)
        if self.watchdog is not None:
            self.watchdog.apply(new.daemon)
        self.cfg = replace(self.cfg, **{s: getattr(new, s) for s in live})
        self.audit.append(ConfigReloaded(restart_needed=tuple(needs_restart)))
        if needs_restart:
            log.warning("config reloaded; these sections change only on restart: %s", ", ".join(needs_restart))
        else:
            log.info("config reloaded")
        self.notifier.ready(self.status_line())

    def stop(self) -> None:
        """Stop capture, end tracks, publish `stopped`, wipe the watchlist, beacon to idle; within 5 s."""
        deadline = time.monotonic() + STOP_DEADLINE_S
        self.notifier.stopping("stopping")
        self.stop_event.set()
        if self.watchdog is not None:
            self.watchdog.stop()
        for capture in self.captures:
            capture.join(max(0.1, min(1.0, deadline - time.monotonic())))
        self.frames.close()
        self.worker.end_all_tracks()
        self.sync.shutdown()
        if self.beacon is not None:
            self.beacon.close(park=True, timeout_s=max(0.2, min(1.5, deadline - time.monotonic())))
        self._audit_faces_seen()
        self.handsets.close()
        self.audit.append(Stopped(reason="signal", frames=self.worker.stats.frames))
        if self.mqtt.connected.is_set():
            self._publish_audit_head()
        self.mqtt.stop(timeout_s=max(0.2, min(1.5, deadline - time.monotonic())))
        self.audit.close()
        self.notifier.close()
        log.info("stopped cleanly")


def cpu_temperature(zone: Path = Path("/sys/class/thermal/thermal_zone0/temp")) -> float | None:
    try:
        return round(int(zone.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def _version() -> str:
    from lfr_edge import __version__

    return __version__


def install_signal_handlers(daemon: Daemon) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` prints every thread's stack
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop_event.set())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload_requested.set())


def run_daemon(cfg: Config, config_path: Path | None, on_started: Callable[[Daemon], None] | None = None) -> int:
    require_cameras(cfg)
    daemon = Daemon(cfg, config_path)
    install_signal_handlers(daemon)
    daemon.setup()
    daemon.start()
    if on_started is not None:
        on_started(daemon)
    try:
        code = daemon.run()
    finally:
        daemon.stop()
    return code
