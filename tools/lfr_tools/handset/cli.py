"""`lfr-handset`: the reference handset client, for the simulator and for field tests.

It holds the handset's two key pairs (X25519 to open alerts, Ed25519 to sign decisions), subscribes to a
unit's alerts, prints each one (subject, score, age) and can save the two pictures, and prints a `UNIT`
line whenever the unit's retained status changes (the watchlist it holds, or why none); `decide` answers an
alert with a signed decision; `pair` pairs with a unit by the one-time code the technician reads out
(docs/pairing.md) and keeps the unit's key in the key folder, where listen and decide find it.

The connection options (--unit, --broker, --ca, --cert, --key, --keys, --prefix) may come before or after
the command. The broker binds the client id to the certificate, so the handset's session is its own: while
`listen` runs, `decide` briefly takes the same session over (listen reconnects by itself) and never
acknowledges an alert, so every alert still reaches `listen`.
"""

from __future__ import annotations

import argparse
import logging
import queue
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import crypto
from lfr_contracts.alerts import DECISIONS, Alert, Decision, DecisionKind, ProtocolError, decode_alert, encode_decision
from lfr_contracts.receipts import AlertReceipt, DecisionAnswer, decode_answer, encode_receipt
from lfr_contracts.status import StatusError, UnitStatus
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_edge.alerts.handset import handset_record
from lfr_edge.cli_options import Shared, check_required, declare, parent
from lfr_edge.comms.mqtt import tls_client
from lfr_tools.handset.unit_state import read_status, status_line

log = logging.getLogger(__name__)

SEALING_KEY = "handset-x25519.key"
SIGNING_KEY = "handset-ed25519.key"


def unit_key_file(directory: Path, unit_id: str) -> Path:
    """Where pairing stores a unit's Ed25519 public key (alerts from that unit are checked with it)."""
    return directory / f"unit-{unit_id}-ed25519.pub"


@dataclass(frozen=True)
class HandsetKeys:
    handset_id: str
    sealing: X25519PrivateKey
    signing: Ed25519PrivateKey

    @staticmethod
    def generate(directory: Path, handset_id: str) -> HandsetKeys:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = HandsetKeys(handset_id, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())
        keyfiles.save_private_key(directory / SEALING_KEY, keys.sealing)
        keyfiles.save_private_key(directory / SIGNING_KEY, keys.signing)
        (directory / "handset-id").write_text(handset_id + "\n")
        (directory / f"{handset_id}.json").write_bytes(keys.record())
        return keys

    @staticmethod
    def load(directory: Path) -> HandsetKeys:
        try:
            handset_id = (directory / "handset-id").read_text().strip()
        except OSError as exc:
            raise crypto.KeyFileError(f"{directory / 'handset-id'}: cannot read ({exc.strerror})") from exc
        return HandsetKeys(
            handset_id,
            keyfiles.load_x25519_private(directory / SEALING_KEY),
            keyfiles.load_ed25519_private(directory / SIGNING_KEY),
        )

    def record(self) -> bytes:
        """The public record the unit keeps in its handsets directory."""
        return handset_record(self.handset_id, self.sealing.public_key(), self.signing.public_key())


@dataclass(frozen=True)
class ReceivedAlert:
    alert: Alert
    received_at: float  # epoch seconds, when the message arrived (before it was verified and decrypted)
    decoded_at: float | None = None  # epoch seconds, once verified and decrypted

    @property
    def age_ms(self) -> float:
        return (self.received_at - self.alert.time) * 1e3

    @property
    def decoded_age_ms(self) -> float | None:
        """Frame time to the alert decrypted at the handset (what the officer can first see)."""
        return None if self.decoded_at is None else (self.decoded_at - self.alert.time) * 1e3


ClientMode = Literal["listen", "decide", "once"]


class HandsetClient:
    """Connects as one handset (its own client certificate) and receives one unit's alerts.

    `listen` (the default) holds the handset's persistent session (clean_session off, QoS 1 subscriptions
    to the alerts and to the unit's answers to its decisions): the broker keeps the subscriptions while the
    handset is offline and queues the alerts published meanwhile, which arrive when it reconnects. The
    broker names the session after the certificate, so `decide` resumes that same session rather than
    starting a clean one (which would erase it): it acknowledges only the unit's answers, never an alert,
    so an alert the broker hands it stays queued for `listen`. `once` is a clean session of its own.
    """

    def __init__(
        self,
        keys: HandsetKeys,
        unit_id: str,
        unit_key: Ed25519PublicKey,
        host: str,
        port: int,
        tls: tuple[Path, Path, Path],  # CA, certificate, key
        prefix: str = "lfr/v1",
        persistent: bool = True,
        mode: ClientMode | None = None,
    ) -> None:
        self.keys = keys
        self.unit_id = unit_id
        self.unit_key = unit_key
        self.topics = Topics.for_unit(prefix, unit_id)
        self.alerts: queue.Queue[ReceivedAlert] = queue.Queue()
        self.refused: queue.Queue[str] = queue.Queue()
        self.answers: queue.Queue[DecisionAnswer] = queue.Queue()
        self.statuses: queue.Queue[UnitStatus] = queue.Queue()  # the unit's retained status, as it changes
        self.seen: set[str] = set()
        self.duplicates = 0
        self.connected = threading.Event()
        self.mode: ClientMode = mode or ("listen" if persistent else "once")
        client_id = keys.handset_id if self.mode != "once" else f"{keys.handset_id}-{secrets.token_hex(3)}"
        self._client = tls_client(client_id, *tls, clean_session=self.mode == "once")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: self.connected.clear()
        if self.mode == "decide":
            self._client.manual_ack_set(True)  # an alert it is handed stays unacknowledged, queued for `listen`
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self.connected.set()  # ready once the broker has the subscription
        self._client.reconnect_delay_set(1, 2)
        self._host, self._port = host, port

    def start(self, timeout: float = 10.0) -> None:
        self._client.connect_async(self._host, self._port, keepalive=10)
        self._client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"handset {self.keys.handset_id}: no connection to {self._host}:{self._port}")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def decide(self, alert_id: str, decision: DecisionKind, timeout: float = 10.0) -> DecisionAnswer:
        """Send a signed decision and wait for the unit's answer (accepted, or refused with the reason);
        TimeoutError when none comes: the decision may not have been recorded."""
        message = Decision(alert_id, self.unit_id, self.keys.handset_id, decision, time.time())
        info = self._client.publish(self.topics.decisions, encode_decision(message, self.keys.signing), qos=1)
        info.wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                answer = self.answers.get(timeout=left)
            except queue.Empty:
                break
            if answer.alert_id == alert_id and answer.decision == decision:
                return answer
        raise TimeoutError(f"unit {self.unit_id} did not answer the decision on {alert_id} within {timeout:g} s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        answers = (self.topics.decision_answer_for(self.keys.handset_id), 1)
        status = (self.topics.status, 0)  # QoS 0: not queued while away; the retained one comes on every connect
        client.subscribe([answers] if self.mode == "decide" else [(self.topics.alerts, 1), answers, status])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.topics.status:
            self._on_status(bytes(message.payload))
            return
        if message.topic != self.topics.alerts:
            self._on_answer(bytes(message.payload))
            if self.mode == "decide":
                client.ack(message.mid, message.qos)
            return
        if self.mode == "decide":
            return  # left unacknowledged: the broker gives it to `listen` when it is back
        received_at = time.time()
        try:
            alert = decode_alert(bytes(message.payload), self.unit_id, self.unit_key, self.keys.sealing)
            decoded_at = time.time()
        except ProtocolError as exc:
            self.refused.put(str(exc))
            log.warning("%s", refusal_message(exc, self.keys.handset_id, self.unit_id))
            return
        receipt = AlertReceipt(self.unit_id, self.keys.handset_id, alert.alert_id, time.time())
        self._client.publish(self.topics.alert_receipts, encode_receipt(receipt, self.keys.signing), qos=1)
        if alert.alert_id in self.seen:  # the unit re-sends until a receipt arrives: show each alert once
            self.duplicates += 1
            return
        self.seen.add(alert.alert_id)
        self.alerts.put(ReceivedAlert(alert, received_at, decoded_at))

    def _on_status(self, payload: bytes) -> None:
        try:
            status = read_status(payload, self.unit_id)
        except StatusError as exc:
            log.warning("unit %s: status ignored: %s", self.unit_id, exc)
            return
        if status is not None:
            self.statuses.put(status)

    def _on_answer(self, payload: bytes) -> None:
        try:
            self.answers.put(decode_answer(payload, self.unit_key))
        except ProtocolError as exc:
            log.warning("answer refused: %s", exc)


def refusal_message(exc: ProtocolError, handset_id: str, unit_id: str) -> str:
    """One line for a refused alert (its reason already says "alert refused"); for an alert sealed to other
    keys, what to do about it."""
    if isinstance(exc.__cause__, crypto.NotForThisKey):
        return (
            f"{exc}: handset {handset_id} is not paired with unit {unit_id} (or was unpaired, or re-keyed); "
            "pair it: `lfr-provision pair-handset` on the unit, then `lfr-handset pair --code CODE ...`"
        )
    return str(exc)


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--broker {value!r}: expected HOST:PORT")
    return host, int(port)


CONNECTION_OPTIONS = (
    Shared(("--unit",), {"default": None, "help": "the unit id"}, required=True),
    Shared(("--broker",), {"type": _broker, "default": None, "help": "HOST:PORT of the broker"}, required=True),
    Shared(("--ca",), {"type": Path, "default": None, "help": "the broker's CA certificate"}, required=True),
    Shared(("--cert",), {"type": Path, "default": None, "help": "this handset's client certificate"}, required=True),
    Shared(("--key",), {"type": Path, "default": None, "help": "this handset's client certificate key"}, required=True),
    Shared(
        ("--keys",),
        {"type": Path, "default": None, "help": "this handset's key folder (from pairing or keygen)"},
        required=True,
    ),
    Shared(("--prefix",), {"default": "lfr/v1", "help": "topic prefix (default lfr/v1)"}),
)


def _unit_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unit-key",
        type=Path,
        help="the unit's Ed25519 public key (default: the one pairing stored in --keys)",
    )


def _client(args: argparse.Namespace) -> HandsetClient:
    keys = HandsetKeys.load(args.keys)
    unit_key_path = args.unit_key or unit_key_file(args.keys, args.unit)
    if args.unit_key is None and not unit_key_path.exists():
        raise crypto.KeyFileError(f"{unit_key_path}: no key for unit {args.unit}; pair first or give --unit-key")
    unit_key = keyfiles.load_ed25519_public(unit_key_path)
    host, port = args.broker
    # `listen` holds the handset's persistent session; `decide` resumes it without erasing or draining it.
    mode: ClientMode = "listen" if args.command == "listen" else "decide"
    return HandsetClient(keys, args.unit, unit_key, host, port, (args.ca, args.cert, args.key), args.prefix, mode=mode)


def listen(args: argparse.Namespace) -> int:
    client = _client(args)
    client.start()
    print(f"handset {client.keys.handset_id}: listening for alerts from unit {args.unit} (Ctrl-C to stop)")
    received = 0
    try:
        while args.count is None or received < args.count:
            try:
                item = client.alerts.get(timeout=1.0)
            except queue.Empty:
                continue
            finally:  # what the unit holds, as it changes: before the alert that came after it
                while not client.statuses.empty():
                    print(status_line(client.statuses.get_nowait()), flush=True)
            received += 1
            a = item.alert
            print(
                f"ALERT {a.alert_id}  subject {a.subject_id} ({a.category})  score {a.score:.2f} "
                f"(threshold {a.threshold:.2f})  camera {a.camera}  {item.age_ms:.0f} ms ago",
                flush=True,
            )
            if a.reference:
                print(f"      reference: {a.reference}")
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{a.alert_id}-live.jpg").write_bytes(a.live_jpeg)
                (args.save / f"{a.alert_id}-watchlist.jpg").write_bytes(a.watchlist_jpeg)
                print(f"      pictures saved in {args.save}")
            print(f"      decide: lfr-handset decide {a.alert_id} engage|no_action|false_alert ...")
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()
    return 0


def decide(args: argparse.Namespace) -> int:
    """Exit 0 when the unit accepted the decision, 1 when it refused it (the reason is printed), 3 when it did
    not answer (the decision may not be recorded: try again)."""
    client = _client(args)
    client.start()
    try:
        answer = client.decide(args.alert_id, DecisionKind(args.decision), timeout=args.timeout)
    except TimeoutError as exc:
        print(f"lfr-handset decide: {exc}; the decision may not be recorded, send it again", file=sys.stderr)
        return 3
    finally:
        client.stop()
    if not answer.accepted:
        print(f"lfr-handset decide: unit {answer.unit} refused the decision: {answer.reason}", file=sys.stderr)
        return 1
    change = f" (revision {answer.revision}: it replaces your earlier decision)" if answer.revision else ""
    print(f"decision {args.decision} on alert {args.alert_id} accepted by unit {answer.unit}{change}")
    return 0


def keygen(args: argparse.Namespace) -> int:
    if (args.out / SEALING_KEY).exists():
        print(f"lfr-handset keygen: {args.out} already holds handset keys", file=sys.stderr)
        return 2
    keys = HandsetKeys.generate(args.out, args.id)
    print(f"handset {keys.handset_id}: keys written to {args.out} (private keys mode 0600)")
    print(f"give {args.out / (args.id + '.json')} to the unit's handsets folder, or pair with lfr-provision")
    return 0


def pair(args: argparse.Namespace) -> int:
    from lfr_contracts.pairing import PairingError, normalise_code
    from lfr_tools.handset.pairing import certificate_cn, pair_with_unit

    try:
        normalise_code(args.code)
        if (args.keys / SEALING_KEY).exists():
            keys = HandsetKeys.load(args.keys)
            if args.id is not None and args.id != keys.handset_id:
                raise PairingError(f"{args.keys} holds handset {keys.handset_id!r}, not {args.id!r}")
        else:
            keys = HandsetKeys.generate(args.keys, args.id or certificate_cn(args.cert))
            print(f"handset {keys.handset_id}: new key pairs in {args.keys} (private keys mode 0600)")
        host, port = args.broker
        unit = pair_with_unit(
            keys.handset_id,
            args.code,
            keys.sealing,
            keys.signing,
            args.unit,
            host,
            port,
            (args.ca, args.cert, args.key),
            prefix=args.prefix,
            timeout_s=args.timeout,
        )
    except PairingError as exc:
        print(f"lfr-handset pair: {exc}", file=sys.stderr)
        return 1
    path = unit_key_file(args.keys, unit.unit_id)
    keyfiles.save_public_key(path, unit.ed25519_public)
    print(f"handset {keys.handset_id} paired with unit {unit.unit_id}; the unit's key is in {path}")
    print(f"next: lfr-handset listen --unit {unit.unit_id} --keys {args.keys} --broker ... --ca ... ")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lfr-handset", description=__doc__)
    declare(parser, CONNECTION_OPTIONS, after_command=False)
    after = [parent(CONNECTION_OPTIONS)]
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("listen", help="print each alert as it arrives", parents=after)
    _unit_key_arg(p)
    p.add_argument("--save", type=Path, help="save the live and watchlist pictures in this folder")
    p.add_argument("--count", type=int, help="stop after this many alerts")
    p.set_defaults(func=listen)
    p = sub.add_parser("decide", help="answer an alert", parents=after)
    p.add_argument("alert_id")
    p.add_argument("decision", choices=DECISIONS)
    _unit_key_arg(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the unit's answer")
    p.set_defaults(func=decide)
    p = sub.add_parser("pair", help="pair with a unit using the code its technician shows", parents=after)
    p.add_argument("--code", required=True, help="the one-time code, e.g. 1234-5678")
    p.add_argument("--id", help="handset id for new keys (default: the certificate's CN)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the unit")
    p.set_defaults(func=pair)
    p = sub.add_parser("keygen", help="make this handset's key pairs (until it is paired)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--id", required=True, help="handset id (its MQTT certificate name)")
    p.set_defaults(func=keygen)
    args = parser.parse_args(argv)
    if args.command != "keygen":
        check_required(parser, args, CONNECTION_OPTIONS, args.command)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        code: int = args.func(args)
    except (crypto.CryptoError, ConnectionError, OSError) as exc:
        print(f"lfr-handset {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
