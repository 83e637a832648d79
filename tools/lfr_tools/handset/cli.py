"""`lfr-handset`: the reference handset client, for the simulator and for field tests.

It holds the handset's two key pairs (X25519 to open alerts, Ed25519 to sign decisions), subscribes to a
unit's alerts, prints each one (subject, score, age) and can save the pictures; `app` shows them to the
officer in this device's browser, with the unit's state and the decision buttons; `decide` answers an
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
import sys
from pathlib import Path

from lfr_contracts import crypto
from lfr_contracts.alerts import DECISIONS, DecisionKind
from lfr_contracts.calibration import alert_band
from lfr_edge import keyfiles
from lfr_edge.cli_options import Shared, check_required, declare, parent
from lfr_tools.handset import app as handset_app
from lfr_tools.handset.client import (
    SEALING_KEY,
    HandsetClient,
    HandsetKeys,
    ReceivedAlert,
    client_from_args,
    refusal_message,
    unit_key_file,
)
from lfr_tools.handset.unit_state import status_line

__all__ = ["HandsetClient", "HandsetKeys", "ReceivedAlert", "main", "refusal_message", "unit_key_file"]

log = logging.getLogger(__name__)


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
    # `listen` holds the handset's persistent session; `decide` resumes it without erasing or draining it.
    return client_from_args(args, "listen" if args.command == "listen" else "decide")


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
            print(f"      {alert_band(a.score, a.threshold, a.rate)}")
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


def app(args: argparse.Namespace) -> int:
    """The officer's screen (lfr_tools.handset.app) on the same session `listen` holds."""
    return handset_app.run(args, lambda on_alert, on_status: client_from_args(args, "listen", on_alert, on_status))


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
    p = sub.add_parser("app", help="the officer's screen: serve it to this device's browser", parents=after)
    _unit_key_arg(p)
    handset_app.add_arguments(p)
    p.set_defaults(func=app)
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
