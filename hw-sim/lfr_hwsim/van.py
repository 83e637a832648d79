"""A whole simulated van on one machine: broker, command centre, provisioned unit, handsets, beacon, daemon.

Tests, `make demo` and the benchmarks all use it, so each of them exercises the real parts the same way:
a mosquitto with mutual TLS and ACLs, `lfr-provision init` into a temporary root (its request signed by the
broker's CA), handsets with their own keys and certificates, the beacon on a pseudo-terminal, and the real
`lfr-edge run` as its own process under a test-made NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lfr_contracts import bundle, layout, records
from lfr_contracts.acks import decode_ack
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_hwsim.beacon import SimulatedBeacon
from lfr_hwsim.broker import COMMAND_CENTRE, Collector, MosquittoBroker
from lfr_provision.init import InitOptions, init_unit
from lfr_tools.command_centre.enrol import Enroller
from lfr_tools.handset.cli import HandsetClient, HandsetKeys

# A short simulated street passes about fifty people: one false alert in a thousand passers-by, set from the
# embedder's calibration table for the list's size (a cosine threshold means something else for each model).
STREET_FALSE_ALERTS = "1 in 1000"


@dataclass(frozen=True)
class Subject:
    subject_id: str
    category: str
    photos: tuple[Path, ...]
    reference: str = ""


class DaemonProcess:
    """`lfr-edge run` as a child process, with the systemd notify socket it reports to."""

    def __init__(self, config: Path, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.notify_path = workdir / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.log_path = workdir / "daemon.log"
        environment = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify_path),
            "WATCHDOG_USEC": "2000000",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        environment.pop("WATCHDOG_PID", None)
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lfr_edge.cli", "--config", str(config), "run"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        self.messages: list[dict[str, str]] = []
        self.message_times: list[float] = []  # time.monotonic() at which each of `messages` arrived
        self._inbox: queue.Queue[dict[str, str]] = queue.Queue()
        self._reader = threading.Thread(target=self._read_notify, name="notify-reader", daemon=True)
        self._reader.start()

    def _read_notify(self) -> None:
        """Drain the socket all the time, as systemd does, so the daemon never finds it full."""
        self.notify.settimeout(0.2)
        while True:
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.message_times.append(time.monotonic())
            self.messages.append(fields)
            self._inbox.put(fields)

    def next_notify(self, timeout: float) -> dict[str, str] | None:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        """The next notify message carrying `key` (READY, WATCHDOG, STOPPING...)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lfr-edge run exited with {self.proc.returncode}:\n{self.log_tail()}")
            message = self.next_notify(min(left, 0.5))
            if message is not None and key in message:
                return message
        raise TimeoutError(f"no {key}= from lfr-edge run within {timeout} s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def close(self) -> None:
        self.log.close()
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class SimulatedVan:
    """Everything around the unit. Use as a context manager; `stop()` tears it all down."""

    def __init__(
        self,
        workdir: Path,
        unit_id: str = "van-01",
        handset_ids: Sequence[str] = ("handset-1",),
        beacon: bool = True,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unit_id = unit_id
        self.handset_ids = tuple(handset_ids)
        # Persistence keeps the handsets' sessions (subscriptions, queued alerts) over a broker restart,
        # as a deployed broker does.
        self.broker = MosquittoBroker(
            self.dir / "broker", handsets={h: [unit_id] for h in self.handset_ids}, persistence=True
        )
        self.root = self.dir / "root"
        self.paths = layout.UnitLayout(self.root)
        self.topics = Topics.for_unit(self.broker.prefix, unit_id)
        self.beacon: SimulatedBeacon | None = SimulatedBeacon(self.dir / "beacon-link") if beacon else None
        self.daemon: DaemonProcess | None = None
        self.handsets: dict[str, HandsetKeys] = {}
        self._clients: list[HandsetClient] = []
        self.watchlist_version = int(time.time())
        self.camera_control_file = self.dir / "camera-control.json"  # the simulator camera's `control_file`
        self.issued: dict[int, bytes] = {}  # every bundle the command centre built, by version
        self.published: list[bytes] = []  # retained publications, newest last
        self._enrolled: tuple[list[Any], float, str] | None = None  # entries, threshold, model id

    # set-up ----------------------------------------------------------------------------------------

    def start(self) -> SimulatedVan:
        self.broker.start()
        cc_dir = self.dir / "command-centre"
        cc_dir.mkdir(exist_ok=True)
        self.command_centre_key = Ed25519PrivateKey.generate()
        keyfiles.save_public_key(cc_dir / "command-centre.pub", self.command_centre_key.public_key())
        init_unit(
            InitOptions(
                unit_id=self.unit_id,
                root=self.root,
                board="generic",
                broker=f"{self.broker.host}:{self.broker.port}",
                ca_cert=self.broker.pki.ca_file,
                ca_key=self.broker.pki.ca_key_file,
                command_centre_key=cc_dir / "command-centre.pub",
            )
        )
        for handset_id in self.handset_ids:
            keys = HandsetKeys.generate(self.dir / "handsets" / handset_id, handset_id)
            (self.paths.handsets / f"{handset_id}.json").write_bytes(keys.record())
            self.handsets[handset_id] = keys
        if self.beacon is not None:
            self.beacon.start()
        return self

    def write_config(self, cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> Path:
        """The unit's config for this van: the provisioned paths, this broker, these cameras."""
        etc = self.paths.etc
        config: dict[str, Any] = {
            "unit": {
                "id": self.unit_id,
                "state_dir": str(self.paths.state),
                "keys_dir": str(self.paths.keys),
                "audit_log": str(self.paths.state / "audit.jsonl"),
            },
            "mqtt": {
                "host": self.broker.host,
                "port": self.broker.port,
                "ca_file": str(etc / "tls" / layout.TLS_CA),
                "cert_file": str(etc / "tls" / layout.TLS_CERT),
                "key_file": str(etc / "tls" / layout.TLS_KEY),
                "topic_prefix": self.broker.prefix,
                "keepalive_s": 5,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
            },
            "watchlist": {"command_centre_key": str(self.paths.keys / layout.COMMAND_CENTRE_PUB)},
            "alerts": {"handsets_dir": str(self.paths.handsets)},
            "beacon": {"enabled": False}
            if self.beacon is None
            else {"enabled": True, "port": str(self.beacon.link), "heartbeat_s": 0.5},
            "cameras": cameras,
        }
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        path = etc / "config.toml"
        path.write_text(tomli_w.dumps(config))
        return path

    # the command centre ------------------------------------------------------------------------------

    def build_watchlist(
        self,
        subjects: Sequence[Subject],
        enroller: Enroller,
        threshold: float | str,
        valid_for_s: float = 3600.0,
        version: int | None = None,
    ) -> bytes:
        """`threshold`: a cosine threshold, or a false-alert rate ("1 in 1000") that the model's calibration
        table turns into one for this list, as `lfr-watchlist build --false-alerts` does."""
        from lfr_tools.command_centre.cli import SubjectRow, enrol_subjects

        rows = [SubjectRow(s.subject_id, s.category, [str(p) for p in s.photos], s.reference) for s in subjects]
        entries, problems = enrol_subjects(rows, Path("/"), enroller, skip_unusable=False, progress=False)
        if len(entries) != len(subjects):
            raise ValueError("watchlist: some subjects could not be enrolled: " + "; ".join(problems))
        if isinstance(threshold, str):
            threshold = threshold_for(threshold, entries, enroller.model_id)
        self._enrolled = (list(entries), threshold, enroller.model_id)
        return self.reissue_watchlist(valid_for_s, version)

    def reissue_watchlist(
        self, valid_for_s: float = 3600.0, version: int | None = None, unit_id: str | None = None
    ) -> bytes:
        """A new version of the last built watchlist (same subjects, no re-enrolment), valid for `valid_for_s`;
        `unit_id` names another unit in the header (a bundle this unit must refuse)."""
        if self._enrolled is None:
            raise ValueError("watchlist: nothing enrolled yet (build_watchlist first)")
        entries, threshold, model_id = self._enrolled
        self.watchlist_version = version if version is not None else self.watchlist_version + 1
        now = time.time()
        payload = bundle.build_bundle(
            entries,
            deployment="sim-deployment",
            unit_id=unit_id or self.unit_id,
            unit_key=keyfiles.load_x25519_public(self.paths.keys / layout.UNIT_X25519_PUB),
            version=self.watchlist_version,
            valid_from=now - 60,
            valid_until=now + valid_for_s,
            threshold=threshold,
            model_id=model_id,
            sign_key=self.command_centre_key,
            issued_at=now,
        )
        self.issued[self.watchlist_version] = payload
        return payload

    @property
    def current_bundle(self) -> bytes:
        """The watchlist the command centre last published (retained)."""
        if not self.published:
            raise ValueError("watchlist: nothing published yet")
        return self.published[-1]

    def earlier_bundle(self) -> tuple[int, bytes]:
        """The newest bundle built before the current one: what an attacker could replay."""
        current = bundle.read_envelope(self.current_bundle, len(self.current_bundle)).header.get("version")
        older = [v for v in self.issued if isinstance(current, int) and v < current]
        if not older:
            raise ValueError(f"watchlist: no bundle older than version {current} was ever issued")
        return max(older), self.issued[max(older)]

    def publish_watchlist(
        self, payload: bytes, wait_ack_s: float | None = 30.0, retain: bool = True
    ) -> dict[str, Any] | None:
        """Publish (retained) as the command centre; return the unit's ack (or None if not waiting)."""
        collector = Collector(self.broker, COMMAND_CENTRE)  # the command centre's one connection
        try:
            if wait_ack_s is not None:
                collector.subscribe(self.topics.watchlist_ack)
            collector.publish(self.topics.watchlist, payload, retain=retain)
            if retain:
                self.published.append(payload)
            if wait_ack_s is None:
                return None
            deadline = time.monotonic() + wait_ack_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = collector.next(timeout=left)
                except queue.Empty:
                    break
                if not message.retain:  # an ack retained from before this publication is not its answer
                    return records.encode(decode_ack(message.payload))  # checked as the command centre reads it
            raise TimeoutError(f"unit {self.unit_id} did not acknowledge the watchlist in {wait_ack_s} s")
        finally:
            collector.close()

    # handsets and daemon -----------------------------------------------------------------------------

    def handset(self, handset_id: str | None = None) -> HandsetClient:
        """A connected reference handset (started; stopped by `stop()`)."""
        keys = self.handsets[handset_id or self.handset_ids[0]]
        tls = self.broker.client(keys.handset_id)
        unit_key = keyfiles.load_ed25519_public(self.paths.keys / layout.UNIT_ED25519_PUB)
        client = HandsetClient(
            keys,
            self.unit_id,
            unit_key,
            self.broker.host,
            self.broker.port,
            (tls.ca_file, tls.cert_file, tls.key_file),
            self.broker.prefix,
        )
        client.start()
        self._clients.append(client)
        return client

    def start_daemon(self, config: Path, env: Mapping[str, str] | None = None) -> DaemonProcess:
        self.daemon = DaemonProcess(config, self.dir, env)
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.kill()
        for client in self._clients:
            client.stop()
        if self.beacon is not None:
            self.beacon.stop()
        self.broker.stop()

    def __enter__(self) -> SimulatedVan:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DaemonProcess", "SimulatedVan", "Subject"]


def threshold_for(false_alerts: str, entries: Sequence[bundle.SubjectEntry], model_id: str) -> float:
    """The threshold the command centre would set for this list from the model's calibration table."""
    from lfr_contracts.calibration import parse_rate
    from lfr_edge.config import ModelsConfig
    from lfr_tools.command_centre.threshold import load_table, plan

    models = ModelsConfig().dir
    table = load_table(models, model_id)
    rows = sum(len(e.embeddings) for e in entries)
    chosen = plan(
        table, subjects=len(entries), comparisons=rows, false_alerts=parse_rate(false_alerts), threshold=None,
        where=str(models),
    )  # fmt: skip
    return chosen.threshold
