"""A local mosquitto with mutual TLS and per-client ACLs, for tests, the simulator and the demo.

The configuration is the one a deployed broker gets: `BrokerPki` is a CA made with provisioning's pki.py
(the server certificate for 127.0.0.1/localhost, one client certificate per name, CN = the MQTT username
and client id), and `MosquittoBroker` writes its mosquitto.conf and ACL with provisioning's broker_config.py
(`lfr-provision broker config` writes the same), then runs `mosquitto -c FILE` on a loopback port and can be
stopped and restarted on the same port (broker-restart tests).

The broker binds each client id to its certificate, so one identity holds one connection: every `Collector`
of the same name shares one connection (`MosquittoBroker.connection`), as one process of a real client would.
"""

from __future__ import annotations

import getpass
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lfr_contracts import layout
from lfr_edge.comms.mqtt import tls_client
from lfr_provision import pki
from lfr_provision.broker_config import (
    COMMAND_CENTRE,
    DEFAULT_PREFIX,
    AccessPlan,
    BrokerSettings,
    Listener,
    acl_text,
    mosquitto_conf,
)
from lfr_provision.identity import PRIVATE_MODE, PUBLIC_MODE, private_pem, tls_request, write_file

__all__ = ["COMMAND_CENTRE", "DEFAULT_PREFIX", "BrokerPki", "ClientTls", "Collector", "MosquittoBroker", "Received"]


@dataclass(frozen=True)
class ClientTls:
    """The three files a client needs for mutual TLS."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class BrokerPki:
    """A CA in `directory` that issues the broker's and the clients' certificates (EC P-256)."""

    def __init__(self, directory: Path, *, days: int = 2) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca = pki.create_ca(self.dir, "lfr-edge test CA", days=days)
        self.ca_file = self.dir / pki.CA_CERT
        self.ca_key_file = self.dir / pki.CA_KEY  # lets `lfr-provision init --ca-key` sign a unit's request
        key_file, cert_file, _ = pki.issue_identity(self._ca, "broker", ["127.0.0.1", "localhost"], self.dir)
        self.server = ClientTls(self.ca_file, cert_file, key_file)

    def unit(self, unit_id: str) -> ClientTls:
        """A unit's TLS folder as `lfr-provision ca sign` fills it: unit.key, unit.crt and, for the same key,
        pairing.crt (the pairing helper's identity), and ca.crt; issued on first use."""
        folder = self.dir / "units" / unit_id
        if not (folder / layout.TLS_PAIRING_CERT).exists():
            folder.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            write_file(folder / layout.TLS_KEY, private_pem(key), PRIVATE_MODE, True)
            request = tls_request(unit_id, key).public_bytes(serialization.Encoding.PEM)
            write_file(folder / layout.TLS_CSR, request, PUBLIC_MODE, True)
            pki.sign_unit_request(self._ca, folder / layout.TLS_CSR, folder)
        return ClientTls(folder / layout.TLS_CA, folder / layout.TLS_CERT, folder / layout.TLS_KEY)

    def client(self, name: str) -> ClientTls:
        """The certificate for MQTT identity `name` (issued on first use)."""
        if not name or not all(c.isalnum() or c in "-_." for c in name) or name == "broker":
            raise ValueError(f"client name {name!r} must be letters, digits, '-', '_' or '.' (and not 'broker')")
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        if not cert_file.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            write_file(key_file, private_pem(key), PRIVATE_MODE, True)
            cert = pki.issue_certificate(self._ca, key.public_key(), name)
            write_file(cert_file, pki.certificate_pem(cert), PUBLIC_MODE, True)
        return ClientTls(self.ca_file, cert_file, key_file)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise FileNotFoundError("mosquitto is not installed (Debian package 'mosquitto'; `make system-deps`)")
    return found


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1, with its own PKI and ACL under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        prefix: str = DEFAULT_PREFIX,
        handsets: Mapping[str, Sequence[str]] | None = None,
        units: Sequence[str] = (),
        port: int | None = None,
        persistence: bool = False,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.pki = BrokerPki(self.dir / "pki")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.log_file = self.dir / "mosquitto.log"
        self.acl_file = self.dir / "acl"
        plan = AccessPlan(
            prefix=prefix, units=tuple(units), handsets={h: tuple(u) for h, u in (handsets or {}).items()}
        )
        self.acl_file.write_text(acl_text(plan))
        self.conf_file = self.dir / "mosquitto.conf"
        persistence_dir = self.dir / "db" if persistence else None
        if persistence_dir is not None:
            persistence_dir.mkdir(exist_ok=True)
        server = self.pki.server
        settings = BrokerSettings(
            listener=Listener(self.port, "127.0.0.1", server.ca_file, server.cert_file, server.key_file),
            acl_file=self.acl_file,
            data_dir=persistence_dir,
            log_file=self.log_file,
            # run as whoever started it (mosquitto started as root would switch to the 'mosquitto' user,
            # who cannot read a private temporary folder)
            run_as=getpass.getuser(),
            prefix=prefix,
        )
        self.conf_file.write_text(mosquitto_conf(settings))
        self._proc: subprocess.Popen[bytes] | None = None
        self._connections: dict[str, SharedConnection] = {}
        self._connections_lock = threading.Lock()

    def client(self, name: str) -> ClientTls:
        return self.pki.client(name)

    def connection(self, name: str) -> SharedConnection:
        """This process's one connection as identity `name` (opened on first use; `release` it when done)."""
        with self._connections_lock:
            shared = self._connections.get(name)
            if shared is None or shared.closed:
                shared = self._connections[name] = SharedConnection(self, name)
            shared.users += 1
            return shared

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and return once it accepts TCP connections on its port."""
        if self._proc is not None:
            raise RuntimeError("broker already running")
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"mosquitto did not accept on port {self.port} within {timeout_s} s") from None
                # poll the port: the process gives no readiness signal we could await instead
                time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL, as a power cut: whatever the broker had not saved (queued messages, sessions) is lost."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (clients see a dropped connection, then a broker)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def takeovers(self) -> list[str]:
        """The log's lines where a connection with an identity already connected closed the first one."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "already connected, closing old connection" in line]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class SharedConnection:
    """One connected client as one identity, shared by every user of it in this process: it subscribes to
    the union of its users' topics (again after a reconnect) and hands each message to each user."""

    def __init__(self, broker: MosquittoBroker, name: str) -> None:
        tls = broker.client(name)
        self.name = name
        self.users = 0
        self.closed = False
        self.client = tls_client(f"{name}-{secrets.token_hex(3)}", tls.ca_file, tls.cert_file, tls.key_file)
        self._listeners: list[Callable[[Received], None]] = []
        self._topics: list[str] = []
        self._subacks: dict[int, queue.Queue[list[int]]] = {}
        self._lock = threading.Lock()
        self._up = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        # Back soon after a broker restart. paho annotates the delays as int, but its reconnect wait is plain
        # float arithmetic, so 0.1 s works.
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._up.wait(10), f"{name} could not connect: {broker.log_tail()}"

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        with self._lock:
            topics = list(self._topics)
        for topic in topics:  # a clean session: subscribe again after a reconnect (broker restart)
            client.subscribe(topic, 1)
        self._up.set()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, codes: list[Any], props: object) -> None:
        with self._lock:
            waiting = self._subacks.pop(mid, None)
        if waiting is not None:
            waiting.put([int(x.value) for x in codes])

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), message.retain)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(received)

    def listen(self, listener: Callable[[Received], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def subscribe(self, topic: str) -> list[int]:
        """Subscribe (QoS 1) and return the broker's grant codes."""
        answer: queue.Queue[list[int]] = queue.Queue()
        with self._lock:
            self._topics.append(topic)
            _, mid = self.client.subscribe(topic, 1)
            if mid is not None:
                self._subacks[mid] = answer
        return answer.get(timeout=10)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def release(self, listener: Callable[[Received], None] | None = None) -> None:
        with self._lock:
            if listener is not None and listener in self._listeners:
                self._listeners.remove(listener)
            self.users -= 1
            last = self.users <= 0
            if last:
                self.closed = True
        if last:
            self.client.disconnect()
            self.client.loop_stop()


class Collector:
    """A connected client (any certificate name, e.g. the command centre) that queues the messages on the
    topics it subscribed to. Collectors of one name share the identity's one connection.

    Used by tests and by the demo to watch telemetry; not part of the unit."""

    def __init__(self, broker: MosquittoBroker, name: str) -> None:
        self.messages: queue.Queue[Received] = queue.Queue()
        self._topics: list[str] = []
        self._connection = broker.connection(name)
        self._connection.listen(self._deliver)

    def _deliver(self, message: Received) -> None:
        if any(paho.topic_matches_sub(topic, message.topic) for topic in list(self._topics)):
            self.messages.put(message)

    @property
    def client(self) -> paho.Client:
        """The identity's connection, for a test that publishes at QoS 0 or in bulk."""
        return self._connection.client

    def subscribe(self, topic: str) -> list[int]:
        self._topics.append(topic)
        return self._connection.subscribe(topic)

    def next(self, timeout: float = 10.0) -> Received:
        return self.messages.get(timeout=timeout)

    def next_on(self, topic: str, timeout: float = 10.0) -> Received:
        """The next message on `topic`, skipping others."""
        while True:
            msg = self.next(timeout)
            if paho.topic_matches_sub(topic, msg.topic):
                return msg

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._connection.publish(topic, payload, retain=retain)

    def close(self) -> None:
        self._connection.release(self._deliver)
