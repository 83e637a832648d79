"""A local mosquitto with mutual TLS and per-client ACLs, for tests, the simulator and the demo.

`BrokerPki` makes a throwaway CA, a server certificate for 127.0.0.1/localhost and one client
certificate per name (the certificate's CN is the MQTT username: `use_identity_as_username`).
`acl_text` writes the project's access rules (see DESIGN.md, MQTT topics): a unit reads only its own
watchlist and decisions and writes only its own status, ack, alerts, telemetry and audit; the command
centre writes any unit's watchlist and reads acks and status; a handset reads alerts and writes
decisions of the units it is paired with. Pairing (docs/pairing.md): a unit writes its offer and the
confirmations, reads requests; a handset reads the offer and its own confirmation, writes requests.
`MosquittoBroker` runs `mosquitto -c FILE` on a loopback port and can be stopped and restarted on the
same port (broker-restart tests).
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lfr_edge.comms.mqtt import tls_client

COMMAND_CENTRE = "command-centre"
DEFAULT_PREFIX = "lfr/v1"


@dataclass(frozen=True)
class ClientTls:
    """The three files a client needs for mutual TLS."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


class BrokerPki:
    """A CA in `directory` that issues the broker's and the clients' certificates (EC P-256)."""

    def __init__(self, directory: Path, *, days: int = 2) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._days = days
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lfr-edge test CA")])
        self._ca_name = name
        self._ca_cert = (
            self._builder(name, self._ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.crt"
        self.ca_file.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self.ca_key_file = self.dir / "ca.key"  # lets `lfr-provision init --ca-key` sign a unit's request
        _write_key(self.ca_key_file, self._ca_key)
        self.server = self._issue("server", server=True)

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self._days))
        )

    def _issue(self, name: str, *, server: bool = False) -> ClientTls:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1" if server else name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        return ClientTls(self.ca_file, cert_file, key_file)

    def client(self, name: str) -> ClientTls:
        """The certificate for MQTT user `name` (issued on first use)."""
        if not name or not all(c.isalnum() or c in "-_" for c in name) or name == "server":
            raise ValueError(f"client name {name!r} must be letters, digits, '-' or '_' (and not 'server')")
        cert_file = self.dir / f"{name}.crt"
        if cert_file.exists():
            return ClientTls(self.ca_file, cert_file, self.dir / f"{name}.key")
        return self._issue(name)


def acl_text(
    prefix: str = DEFAULT_PREFIX,
    *,
    command_centre: str = COMMAND_CENTRE,
    handsets: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The broker's ACL file. `handsets` maps a handset's username to the unit ids it may pair with and
    then receive alerts from (the command centre enrols handset certificates per van)."""
    units = f"{prefix}/units"
    lines = [
        "# Units: the username is the certificate CN, which is the unit id.",
        f"pattern read {units}/%u/watchlist",
        f"pattern read {units}/%u/decisions",
        f"pattern read {units}/%u/alerts/ack",
        *(f"pattern write {units}/%u/{leaf}" for leaf in ("status", "watchlist/ack", "alerts", "telemetry", "audit")),
        f"pattern write {units}/%u/decisions/answer/+",
        "# Handset pairing (docs/pairing.md): the unit offers, reads requests, answers one handset.",
        f"pattern write {units}/%u/pairing/offer",
        f"pattern read {units}/%u/pairing/request",
        f"pattern write {units}/%u/pairing/confirm/+",
        "",
        f"user {command_centre}",
        f"topic write {units}/+/watchlist",
        *(f"topic read {units}/+/{leaf}" for leaf in ("watchlist/ack", "status", "telemetry", "audit")),
    ]
    for handset, paired_units in sorted((handsets or {}).items()):
        lines += ["", f"user {handset}"]
        for unit in paired_units:
            lines += [f"topic read {units}/{unit}/alerts", f"topic read {units}/{unit}/status"]
            lines += [f"topic write {units}/{unit}/decisions", f"topic write {units}/{unit}/alerts/ack"]
            lines += [f"topic read {units}/{unit}/decisions/answer/{handset}"]
            lines += [
                f"topic read {units}/{unit}/pairing/offer",
                f"topic write {units}/{unit}/pairing/request",
                f"topic read {units}/{unit}/pairing/confirm/{handset}",
            ]
    return "\n".join(lines) + "\n"


def mosquitto_conf(
    port: int, server: ClientTls, acl_file: Path, log_file: Path, persistence_dir: Path | None = None
) -> str:
    """With `persistence_dir`, sessions, queued messages and retained ones survive a restart."""
    persistence = (
        ["persistence false"]
        if persistence_dir is None
        else ["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 60"]
    )
    return "\n".join(
        [
            # run as whoever started it (mosquitto started as root would switch to the 'mosquitto' user,
            # who cannot read a private temporary folder)
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            *persistence,
            f"log_dest file {log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {port} 127.0.0.1",
            f"cafile {server.ca_file}",
            f"certfile {server.cert_file}",
            f"keyfile {server.key_file}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            f"acl_file {acl_file}",
            "",
        ]
    )


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
        self.acl_file.write_text(acl_text(prefix, handsets=handsets))
        self.conf_file = self.dir / "mosquitto.conf"
        persistence_dir = self.dir / "db" if persistence else None
        if persistence_dir is not None:
            persistence_dir.mkdir(exist_ok=True)
        self.conf_file.write_text(
            mosquitto_conf(self.port, self.pki.server, self.acl_file, self.log_file, persistence_dir)
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def client(self, name: str) -> ClientTls:
        return self.pki.client(name)

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


class Collector:
    """A connected client (any certificate name, e.g. the command centre) that queues what it receives.

    Used by tests and by the demo to watch telemetry; not part of the unit."""

    def __init__(self, broker: MosquittoBroker, name: str) -> None:
        tls = broker.client(name)
        self.client = tls_client(f"{name}-{secrets.token_hex(3)}", tls.ca_file, tls.cert_file, tls.key_file)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self._up = threading.Event()
        self._topics: list[str] = []
        self.client.on_connect = self._on_connect
        # Back soon after a broker restart. paho annotates the delays as int, but its reconnect wait is plain
        # float arithmetic, so 0.1 s works.
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.client.on_message = lambda c, u, m: self.messages.put(Received(m.topic, bytes(m.payload), m.retain))
        self._resubscribed: set[int] = set()
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._up.wait(10), f"{name} could not connect: {broker.log_tail()}"

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        for topic in self._topics:  # a clean session: subscribe again after a reconnect (broker restart)
            mid = client.subscribe(topic, 1)[1]
            if mid is not None:
                self._resubscribed.add(mid)
        self._up.set()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, codes: list[Any], props: object) -> None:
        if mid in self._resubscribed:
            self._resubscribed.discard(mid)
        else:
            self.subacks.put([int(x.value) for x in codes])

    def subscribe(self, topic: str) -> list[int]:
        self._topics.append(topic)
        self.client.subscribe(topic, 1)
        return self.subacks.get(timeout=10)

    def next(self, timeout: float = 10.0) -> Received:
        return self.messages.get(timeout=timeout)

    def next_on(self, topic: str, timeout: float = 10.0) -> Received:
        """The next message on `topic`, skipping others."""
        while True:
            msg = self.next(timeout)
            if paho.topic_matches_sub(topic, msg.topic):
                return msg

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
