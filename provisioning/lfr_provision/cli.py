"""`lfr-provision`: the technician's tool.

    lfr-provision init --unit-id ID [--board B] [--camera SOURCE] [--broker HOST:PORT] ...  keys, request, config
    lfr-provision install [--with DROP_IN] [--enable]          the service unit, udev rule, tmpfiles, sysusers
    lfr-provision pair-handset [--handset-id ID]               show a one-time code, pair the handset that sends it
    lfr-provision handsets list | unpair ID                    the paired handsets
    lfr-provision selftest [--config FILE]                     the go/no-go before handover (service stopped)
    lfr-provision ca create | import | issue | sign ...         the CA behind the broker's mutual TLS (pki.py)
    lfr-provision broker config --dir DIR ...                  mosquitto.conf and ACL (broker_config.py)
    lfr-provision broker check --broker HOST:PORT ...          does the broker accept this certificate?

`--root FOLDER` (before or after the command; default /) is the unit's root file system: `/` on a van, a
folder to provision, self-test and run a unit on a desk (bench mode; docs/board-setup.md). Every command
prints what it did and what comes next; an error names the file or option and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lfr_contracts.layout import UnitLayout
from lfr_contracts.pairing import CODE_TTL_S
from lfr_edge.cli_options import Shared, declare, parent
from lfr_provision import handsets, pki, selftest
from lfr_provision.broker_config import AUTOSAVE_S, MAX_MESSAGE_BYTES, BrokerConfigError, BrokerOptions, access_plan
from lfr_provision.identity import ProvisionError
from lfr_provision.init import InitOptions, Report, init_unit, parse_broker
from lfr_provision.install import DROP_INS, SYSTEMD_SOURCE, InstallOptions, install
from lfr_provision.pair_handset import pair_handset

GLOBAL_OPTIONS = (
    Shared(
        ("--root",),
        {"type": Path, "default": Path("/"), "help": "the unit's root file system (default /; a folder on a desk)"},
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr-provision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    declare(parser, GLOBAL_OPTIONS, after_command=False)
    after = [parent(GLOBAL_OPTIONS)]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init", help="create the unit's keys, TLS request, config and directories", parents=after
    )
    init.add_argument("--unit-id", required=True, help="the unit's id, e.g. van-07 (the TLS certificate's CN)")
    init.add_argument(
        "--board", choices=("pi5", "jetson", "generic", "bench"), default="pi5",
        help="config defaults (bench: a desk rehearsal, the camera replays ROOT/srv/lfr-camera)",
    )  # fmt: skip
    init.add_argument(
        "--camera", help="camera source instead of the board's: picamera2, jetson, opencv, replay, simulator"
    )
    init.add_argument("--camera-uri", help="the camera's device, stream, video file or image folder")
    init.add_argument("--broker", default="localhost:8883", help="the MQTT broker, HOST:PORT")
    init.add_argument("--ca-cert", type=Path, help="CA certificate to sign the unit's TLS certificates with")
    init.add_argument("--ca-key", type=Path, help="the CA's private key, EC or RSA, unencrypted PEM (with --ca-cert)")
    init.add_argument("--command-centre-key", type=Path, help="the command centre's Ed25519 public key (PEM)")
    init.add_argument("--force", action="store_true", help="replace existing keys and config (re-provision)")

    inst = commands.add_parser("install", help="install the systemd unit, udev rule, tmpfiles, sysusers", parents=after)
    inst.add_argument("--source", type=Path, default=SYSTEMD_SOURCE, help="the repository's systemd/ folder")
    inst.add_argument(
        "--with", dest="with_drop_ins", action="append", default=[], choices=DROP_INS, help="add a drop-in"
    )
    inst.add_argument("--enable", action="store_true", help="also run sysusers, daemon-reload, enable --now")

    pair = commands.add_parser(
        "pair-handset", help="show a one-time code and pair the handset that sends it (over MQTT)", parents=after
    )
    pair.add_argument("--config", type=Path, help="the unit's config file (default ROOT/etc/lfr-edge/config.toml)")
    pair.add_argument("--handset-id", help="accept only this handset (its certificate CN)")
    pair.add_argument("--timeout", type=float, default=CODE_TTL_S, help="seconds the code stays valid (default 300)")

    handset = commands.add_parser("handsets", help="list or unpair paired handsets", parents=after)
    handset_commands = handset.add_subparsers(dest="handset_command", required=True, metavar="COMMAND")
    handset_commands.add_parser("list", help="list paired handsets", parents=after)
    unpair = handset_commands.add_parser("unpair", help="forget a handset (it gets no more alerts)", parents=after)
    unpair.add_argument("handset_id")

    selftest.add_parser(commands, parents=after)
    _ca_parser(commands)
    _broker_parser(commands)
    return parser


def _ca_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = commands.add_parser("ca", help="the CA: create or import it, issue and sign certificates")
    ca_commands = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    create = ca_commands.add_parser("create", help="a new EC P-256 CA in --ca DIR (ca.crt, ca.key 0600)")
    create.add_argument("--name", default="lfr-edge CA", help="the CA certificate's CN")
    create.add_argument("--days", type=int, default=pki.CA_DAYS, help=f"validity (default {pki.CA_DAYS})")
    imp = ca_commands.add_parser("import", help="bring an existing CA (EC or RSA key) into --ca DIR")
    imp.add_argument("--cert", type=Path, required=True, help="the CA certificate (PEM)")
    imp.add_argument("--key", type=Path, required=True, help="its private key: EC or RSA, unencrypted PEM")
    issue = ca_commands.add_parser("issue", help="a new key and certificate for the broker or a client")
    issue.add_argument("--role", choices=pki.ROLES, required=True)
    issue.add_argument(
        "--name", action="append", required=True,
        help="the CN (handset-1, command-centre, bridge-van-07); broker: each host name or IP clients use",
    )  # fmt: skip
    issue.add_argument("--out", type=Path, required=True, help="folder for NAME.key, NAME.crt (broker.*) and ca.crt")
    sign = ca_commands.add_parser("sign", help="sign a unit's request (from init): unit.crt, pairing.crt, ca.crt")
    sign.add_argument("--csr", type=Path, required=True, help="the unit's unit.csr")
    sign.add_argument("--out", type=Path, required=True, help="where the certificates go (the unit's tls folder)")
    for p in (create, imp, issue, sign):
        p.add_argument("--ca", type=Path, required=True, help="the CA folder (ca.crt, ca.key)")
        p.add_argument("--force", action="store_true", help="replace an existing private key")


def _broker_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = commands.add_parser("broker", help="the broker's mosquitto.conf and ACL")
    broker_commands = broker.add_subparsers(dest="broker_command", required=True, metavar="COMMAND")
    conf = broker_commands.add_parser("config", help="write DIR/mosquitto.conf and DIR/acl")
    conf.add_argument("--dir", type=Path, required=True, help="the broker's folder (ca.crt, broker.crt, broker.key)")
    conf.add_argument("--port", type=int, default=8883)
    conf.add_argument("--listen", default="0.0.0.0", help="address to listen on (default all)")
    conf.add_argument("--unit", action="append", default=[], help="a unit served (repeat); its pairing helper may pair")
    conf.add_argument(
        "--handset", action="append", default=[], metavar="HANDSET=UNIT[,UNIT]", help="a handset and its units"
    )
    conf.add_argument("--command-centre", action="append", default=[], help="command-centre identities")
    conf.add_argument("--bridge", action="append", default=[], metavar="BRIDGE=UNIT", help="a van broker's bridge")
    conf.add_argument("--prefix", default="lfr/v1", help="topic prefix (default lfr/v1)")
    conf.add_argument("--data", type=Path, default=Path("/var/lib/mosquitto"), help="persistence folder")
    conf.add_argument("--log", type=Path, help="log file (default: stderr, the journal under systemd)")
    conf.add_argument("--run-as", default="mosquitto", help="user mosquitto switches to when started as root")
    conf.add_argument("--autosave-s", type=int, default=AUTOSAVE_S, help=f"save sessions every N s ({AUTOSAVE_S})")
    conf.add_argument(
        "--max-message-mib", type=float, default=MAX_MESSAGE_BYTES / 2**20, help="largest message (a watchlist)"
    )
    conf.add_argument("--bridge-to", metavar="HOST:PORT", help="bridge this (van) broker to the command centre's")
    conf.add_argument("--bridge-name", metavar="bridge-UNIT", help="the bridge's certificate, DIR/NAME.crt")
    check = broker_commands.add_parser("check", help="connect with a certificate; optionally wait for a topic")
    check.add_argument("--broker", required=True, metavar="HOST:PORT")
    check.add_argument("--ca", type=Path, required=True, help="the CA certificate")
    check.add_argument("--cert", type=Path, required=True, help="the client certificate to try")
    check.add_argument("--key", type=Path, required=True, help="its key")
    check.add_argument("--expect", metavar="TOPIC", help="wait for a message on this topic and print it")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")


def _handsets(args: argparse.Namespace) -> int:
    directory = UnitLayout(args.root).handsets
    if not directory.is_dir():
        raise ProvisionError(
            f"{directory} does not exist: no unit is provisioned under --root {args.root} "
            "(`lfr-provision init` creates it; give --root FOLDER for a unit provisioned in a folder)"
        )
    if args.handset_command == "list":
        entries = handsets.list_handsets(directory)
        for entry in entries:
            print(f"{entry.handset_id:24s} paired {entry.paired_at}")
        print(f"{len(entries)} handset(s) paired with this unit ({directory})")
        return 0
    path = handsets.unpair(directory, args.handset_id)
    print(f"unpaired {args.handset_id}: removed {path}")
    print("Next:\n  1. nothing to restart: the daemon re-reads the handsets folder every 5 s and stops")
    print("     sealing alerts to it; revoke its broker certificate too if the handset was lost")
    return 0


def _ca(args: argparse.Namespace) -> Report:
    report = Report()
    if args.ca_command == "create":
        ca = pki.create_ca(args.ca, args.name, args.days, args.force)
        report.done.append(f"CA {args.name!r} (EC P-256): {ca.cert_file} and {args.ca / pki.CA_KEY} (0600)")
        report.next_steps.append(f"keep {args.ca / pki.CA_KEY} offline; issue the broker's certificate next")
        return report
    if args.ca_command == "import":
        ca = pki.import_ca(args.ca, args.cert, args.key, args.force)
        report.done.append(f"CA {ca.cert.subject.rfc4514_string()} ({type(ca.key).__name__.lstrip('_')}) in {args.ca}")
        return report
    ca = pki.open_ca(args.ca)
    if args.ca_command == "issue":
        files = pki.issue_identity(ca, args.role, args.name, args.out, args.force)
    else:
        files = pki.sign_unit_request(ca, args.csr, args.out)
    report.done += [f"wrote {path} (CN={pki.certificate_cn(path)})" for path in files if path.suffix == ".crt"]
    report.done += [f"wrote {path} (0600)" for path in files if path.suffix == ".key"]
    return report


def _broker(args: argparse.Namespace) -> Report | int:
    from lfr_provision.broker_files import check_broker, write_broker_config

    if args.broker_command == "check":
        host, port = parse_broker(args.broker)
        return check_broker(host, port, (args.ca, args.cert, args.key), args.expect, args.timeout, print)

    try:
        plan = access_plan(args.unit, args.handset, args.command_centre, args.bridge, args.prefix)
    except BrokerConfigError as exc:
        raise ProvisionError(str(exc)) from exc
    return write_broker_config(
        BrokerOptions(
            directory=args.dir,
            plan=plan,
            port=args.port,
            listen=args.listen,
            data_dir=args.data,
            log_file=args.log,
            run_as=args.run_as,
            autosave_s=args.autosave_s,
            max_message_bytes=int(args.max_message_mib * 2**20),
            bridge_to=args.bridge_to,
            bridge_name=args.bridge_name,
        )
    )


def _dispatch(args: argparse.Namespace) -> Report | int:
    if args.command == "init":
        return init_unit(
            InitOptions(
                unit_id=args.unit_id,
                root=args.root,
                board=args.board,
                broker=args.broker,
                ca_cert=args.ca_cert,
                ca_key=args.ca_key,
                command_centre_key=args.command_centre_key,
                force=args.force,
                camera=args.camera,
                camera_uri=args.camera_uri,
            )
        )
    if args.command == "install":
        return install(
            InstallOptions(
                root=args.root, source=args.source, with_drop_ins=tuple(args.with_drop_ins), enable=args.enable
            )
        )
    if args.command == "pair-handset":
        config = args.config or UnitLayout(args.root.absolute()).config
        return pair_handset(config, handset_id=args.handset_id, timeout_s=args.timeout)
    if args.command == "selftest":
        return selftest.selftest_command(args)
    if args.command == "ca":
        return _ca(args)
    if args.command == "broker":
        return _broker(args)
    return _handsets(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = _dispatch(args)
    except ProvisionError as exc:
        print(f"lfr-provision {args.command}: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, int):
        return result
    print(result.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
