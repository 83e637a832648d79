"""The broker's configuration: `mosquitto.conf` and its ACL, from one place for the deployed broker, the
simulator and every test (`lfr-provision broker config` writes them; hw-sim/lfr_hwsim/broker.py runs them).

What the configuration promises (DESIGN.md, MQTT topics; docs/broker.md):
- Mutual TLS only: no anonymous client, every client shows a certificate from the CA.
- Identity = certificate: the CN is the MQTT username (`use_identity_as_username`) and the client id
  (`use_username_as_clientid`), so no certificate can resume, erase or read another's session (a handset's
  queued alerts). One identity holds one connection; a second connection with it closes the first.
- Least privilege (the ACL): a unit reads only its own watchlist and decisions and writes only its own
  status, ack, alerts, telemetry and audit; its pairing helper (`<unit>.pairing`) offers, reads requests and
  answers; a handset reads the alerts and status of the units it is enrolled for, writes their decisions, and
  writes only its own pairing request (`pairing/request/<its CN>`, so the topic names the sender) and reads
  only its own pairing answer; the command centre writes watchlists and reads what units report; a
  bridge (`bridge-<unit>`) carries one unit's topics between a van's broker and the command centre's.
- Nothing acknowledged is lost to a restart: persistence on, saved every `autosave_interval` seconds (not
  mosquitto's 30 minutes), so sessions, queued alerts and retained watchlists survive a broker restart.
- Bounded messages: `max_packet_size` closes the connection of a client that sends more (loud, unlike
  `message_size_limit` alone, which acknowledges and drops), sized for the largest watchlist bundle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lfr_contracts import layout

DEFAULT_PREFIX = "lfr/v1"
COMMAND_CENTRE = "command-centre"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a watchlist bundle of a few thousand subjects with their photos
AUTOSAVE_S = 10
PID_FILE = "mosquitto.pid"
SESSION_EXPIRY = "14d"  # a persistent session (a handset's) unused this long is dropped
MAX_QUEUED_MESSAGES = 1000  # per offline persistent client (alerts for a handset that is away)
_IDENTITY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNIT_LEAVES_WRITTEN = ("status", "watchlist/ack", "alerts", "telemetry", "audit")
_REPORTED = ("watchlist/ack", "status", "telemetry", "audit", "bridge")


class BrokerConfigError(ValueError):
    """A broker setting that cannot work; the message names the option."""


@dataclass(frozen=True)
class AccessPlan:
    """Who may connect and to which units' topics."""

    prefix: str = DEFAULT_PREFIX
    units: tuple[str, ...] = ()  # units whose pairing helper may pair (each unit's own topics: by pattern)
    handsets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # handset id -> unit ids
    command_centres: tuple[str, ...] = (COMMAND_CENTRE,)
    bridges: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # bridge-<unit> -> unit ids

    def all_units(self) -> list[str]:
        named = [
            *self.units,
            *(u for us in self.handsets.values() for u in us),
            *(u for us in self.bridges.values() for u in us),
        ]
        return sorted(set(named))

    def check(self) -> None:
        if not self.prefix or self.prefix.endswith("/") or any(c in self.prefix for c in "#+ "):
            raise BrokerConfigError(f"--prefix {self.prefix!r}: a topic prefix such as lfr/v1")
        for what, names in (
            ("--unit", self.all_units()),
            ("--handset", list(self.handsets)),
            ("--command-centre", list(self.command_centres)),
            ("--bridge", list(self.bridges)),
        ):
            for name in names:
                if not _IDENTITY.match(name):
                    raise BrokerConfigError(f"{what} {name!r}: an identity is 1-64 letters, digits, '-' or '_'")
        clash = set(self.all_units()) & (set(self.handsets) | set(self.command_centres) | set(self.bridges))
        if clash:
            raise BrokerConfigError(f"{sorted(clash)[0]!r} is both a unit and another client: identities are unique")


def acl_text(plan: AccessPlan) -> str:
    """The broker's ACL file (mosquitto acl_file): patterns for every unit, a block per other identity."""
    plan.check()
    units = f"{plan.prefix}/units"
    lines = [
        "# Written by `lfr-provision broker config`: regenerate it rather than edit it (docs/broker.md).",
        "# Units: the username is the certificate CN, which is the unit id.",
        f"pattern read {units}/%u/watchlist",
        f"pattern read {units}/%u/decisions",
        f"pattern read {units}/%u/alerts/ack",  # handsets' signed receipts
        *(f"pattern write {units}/%u/{leaf}" for leaf in _UNIT_LEAVES_WRITTEN),
        f"pattern write {units}/%u/decisions/answer/+",  # accepted or refused, to the deciding handset
    ]
    for unit in plan.all_units():
        lines += [
            "",
            f"# Handset pairing for {unit} (docs/pairing.md): the unit's pairing helper offers and answers.",
            f"user {layout.pairing_identity(unit)}",
            f"topic write {units}/{unit}/pairing/offer",
            f"topic read {units}/{unit}/pairing/request/+",
            f"topic write {units}/{unit}/pairing/confirm/+",
        ]
    for centre in plan.command_centres:
        lines += ["", f"user {centre}", f"topic write {units}/+/watchlist"]
        lines += [f"topic read {units}/+/{leaf}" for leaf in _REPORTED]
    for handset, paired_units in sorted(plan.handsets.items()):
        lines += ["", f"user {handset}"]
        for unit in paired_units:
            lines += [
                f"topic read {units}/{unit}/alerts",
                f"topic read {units}/{unit}/status",
                f"topic write {units}/{unit}/decisions",
                f"topic write {units}/{unit}/alerts/ack",
                f"topic read {units}/{unit}/decisions/answer/{handset}",
                f"topic read {units}/{unit}/pairing/offer",
                f"topic write {units}/{unit}/pairing/request/{handset}",  # its own: the topic names the sender
                f"topic read {units}/{unit}/pairing/confirm/{handset}",
            ]
    for bridge, bridged in sorted(plan.bridges.items()):
        lines += ["", f"# {bridge}: a van's broker, carrying its unit's topics (bridge_conf)", f"user {bridge}"]
        for unit in bridged:
            lines += [f"topic read {units}/{unit}/watchlist", f"topic readwrite {units}/{unit}/decisions"]
            lines += [f"topic write {units}/{unit}/{leaf}" for leaf in (*_UNIT_LEAVES_WRITTEN, "bridge")]
            lines += [f"topic readwrite {units}/{unit}/{leaf}" for leaf in ("alerts/ack", "decisions/answer/+")]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Listener:
    port: int = 8883
    address: str = "0.0.0.0"
    ca_file: Path = Path("/etc/mosquitto/lfr/ca.crt")
    cert_file: Path = Path("/etc/mosquitto/lfr/broker.crt")
    key_file: Path = Path("/etc/mosquitto/lfr/broker.key")


@dataclass(frozen=True)
class Bridge:
    """A van's broker forwarding its unit's topics to the command centre's broker."""

    address: str  # HOST:PORT of the command centre's broker
    name: str  # the bridge's certificate CN, bridge-<unit>
    unit: str  # a van's broker serves one unit
    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class BrokerSettings:
    listener: Listener
    acl_file: Path
    data_dir: Path | None = Path("/var/lib/mosquitto")  # None: no persistence (throw-away test brokers)
    log_file: Path | None = None  # None: stderr (the journal under systemd)
    run_as: str = "mosquitto"  # the user mosquitto switches to when started as root
    autosave_s: int = AUTOSAVE_S
    max_message_bytes: int = MAX_MESSAGE_BYTES
    prefix: str = DEFAULT_PREFIX
    bridge: Bridge | None = None

    def check(self) -> None:
        if not 0 < self.listener.port < 65536:
            raise BrokerConfigError(f"--port {self.listener.port}: not a TCP port")
        if self.autosave_s <= 0:
            raise BrokerConfigError(f"--autosave-s {self.autosave_s}: must be 1 or more (0 saves only at exit)")
        if not 1024 <= self.max_message_bytes <= 268_435_455:
            raise BrokerConfigError(
                f"--max-message-mib: {self.max_message_bytes} bytes; between 1 KiB and MQTT's 256 MiB limit"
            )


def mosquitto_conf(settings: BrokerSettings) -> str:
    """A complete mosquitto.conf (mosquitto 2.0)."""
    settings.check()
    if settings.data_dir is None:
        persistence = ["persistence false"]
    else:
        persistence = [
            "persistence true",
            f"persistence_location {settings.data_dir}/",
            f"autosave_interval {settings.autosave_s}",
            f"persistent_client_expiration {SESSION_EXPIRY}",
            f"pid_file {settings.data_dir / PID_FILE}",  # `kill -HUP` it to re-read the ACL
        ]
    log = f"log_dest file {settings.log_file}" if settings.log_file is not None else "log_dest stderr"
    listener = settings.listener
    lines = [
        "# Written by `lfr-provision broker config` (docs/broker.md); regenerate it rather than edit it.",
        f"user {settings.run_as}",
        "per_listener_settings false",
        *persistence,
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "# A bigger packet closes the sender's connection (it knows); the payload limit only backs that up.",
        f"max_packet_size {settings.max_message_bytes}",
        f"message_size_limit {settings.max_message_bytes}",
        log,
        *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
        "connection_messages true",
        "",
        f"listener {listener.port} {listener.address}",
        f"cafile {listener.ca_file}",
        f"certfile {listener.cert_file}",
        f"keyfile {listener.key_file}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"acl_file {settings.acl_file}",
    ]
    if settings.bridge is not None:
        lines += ["", *bridge_conf(settings.bridge, settings.prefix)]
    return "\n".join(lines) + "\n"


def bridge_conf(bridge: Bridge, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The bridge section of a van's broker: the watchlist comes in, what the unit reports goes out, alerts
    and decisions both ways (a supervisor at the command centre sees them); pairing stays in the van."""
    lines = [
        f"# Bridge to the command centre's broker as {bridge.name} (its ACL gives it only these units' topics).",
        f"connection {bridge.name}",
        f"address {bridge.address}",
        "bridge_protocol_version mqttv311",
        f"bridge_cafile {bridge.ca_file}",
        f"bridge_certfile {bridge.cert_file}",
        f"bridge_keyfile {bridge.key_file}",
        "bridge_tls_version tlsv1.2",
        "bridge_insecure false",
        f"remote_clientid {bridge.name}",
        "cleansession false",
        "try_private true",
        "notifications true",
        "restart_timeout 2 30",
        "keepalive_interval 30",
    ]
    base = f"{prefix}/units/{bridge.unit}/"
    return [
        *lines,
        f"notification_topic {base}bridge",
        f"topic watchlist in 1 {base} {base}",
        *(f"topic {leaf} out 1 {base} {base}" for leaf in ("watchlist/ack", "status", "audit", "alerts")),
        f"topic telemetry out 0 {base} {base}",
        f"topic decisions both 1 {base} {base}",
        f"topic decisions/answer/# both 1 {base} {base}",
        f"topic alerts/ack both 1 {base} {base}",
    ]


def parse_assignment(option: str, spec: str) -> tuple[str, tuple[str, ...]]:
    """`NAME=UNIT[,UNIT...]` (--handset handset-1=van-07, --bridge bridge-van-07=van-07)."""
    name, sep, units = spec.partition("=")
    unit_ids = tuple(u for u in units.split(",") if u)
    if not sep or not name or not unit_ids:
        raise BrokerConfigError(f"{option} {spec!r}: NAME=UNIT[,UNIT...], e.g. handset-1=van-07")
    return name, unit_ids


def access_plan(
    units: Sequence[str],
    handsets: Sequence[str],
    command_centres: Sequence[str],
    bridges: Sequence[str],
    prefix: str,
) -> AccessPlan:
    """The plan from the command line's --unit, --handset H=U, --command-centre and --bridge B=U."""
    return AccessPlan(
        prefix=prefix,
        units=tuple(units),
        handsets=dict(parse_assignment("--handset", h) for h in handsets),
        command_centres=tuple(command_centres) or (COMMAND_CENTRE,),
        bridges=dict(parse_assignment("--bridge", b) for b in bridges),
    )


@dataclass(frozen=True)
class BrokerOptions:
    """`lfr-provision broker config`: everything lives in `directory` (the CA certificate, the broker's
    certificate and key from `ca issue --role broker`, a bridge's from `ca issue --role bridge`)."""

    directory: Path
    plan: AccessPlan
    port: int = 8883
    listen: str = "0.0.0.0"
    data_dir: Path = Path("/var/lib/mosquitto")
    log_file: Path | None = None
    run_as: str = "mosquitto"
    autosave_s: int = AUTOSAVE_S
    max_message_bytes: int = MAX_MESSAGE_BYTES
    bridge_to: str | None = None
    bridge_name: str | None = None


def settings_for(opts: BrokerOptions) -> BrokerSettings:
    d = opts.directory.absolute()
    bridge = None
    if (opts.bridge_to is None) != (opts.bridge_name is None):
        raise BrokerConfigError("--bridge-to HOST:PORT and --bridge-name bridge-UNIT go together")
    if opts.bridge_to is not None and opts.bridge_name is not None:
        host, sep, port = opts.bridge_to.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise BrokerConfigError(f"--bridge-to {opts.bridge_to!r}: HOST:PORT of the command centre's broker")
        if len(opts.plan.units) != 1:
            raise BrokerConfigError("a bridged broker serves one unit: give exactly one --unit")
        bridge = Bridge(
            opts.bridge_to, opts.bridge_name, opts.plan.units[0], d / f"{opts.bridge_name}.crt",
            d / f"{opts.bridge_name}.key", d / "ca.crt",
        )  # fmt: skip
    return BrokerSettings(
        listener=Listener(opts.port, opts.listen, d / "ca.crt", d / "broker.crt", d / "broker.key"),
        acl_file=d / "acl",
        data_dir=opts.data_dir.absolute(),
        log_file=opts.log_file.absolute() if opts.log_file is not None else None,
        run_as=opts.run_as,
        autosave_s=opts.autosave_s,
        max_message_bytes=opts.max_message_bytes,
        prefix=opts.plan.prefix,
        bridge=bridge,
    )
