"""`lfr-provision`: the technician's tool (init, install, pair-handset, handsets list/unpair).

Every command prints what it did and what comes next; an error names the file or option and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lfr_contracts.layout import UnitLayout
from lfr_contracts.pairing import CODE_TTL_S
from lfr_provision import handsets
from lfr_provision.identity import ProvisionError
from lfr_provision.init import InitOptions, init_unit
from lfr_provision.install import DROP_INS, SYSTEMD_SOURCE, InstallOptions, install
from lfr_provision.pair_handset import pair_handset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr-provision", description="Provision an lfr-edge van unit.")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create the unit's keys, TLS request, config and directories")
    init.add_argument("--unit-id", required=True, help="the unit's id, e.g. van-07 (the TLS certificate's CN)")
    init.add_argument("--root", type=Path, default=Path("/"), help="root file system to provision (default /)")
    init.add_argument("--board", choices=("pi5", "jetson", "generic"), default="pi5", help="config defaults")
    init.add_argument("--broker", default="localhost:8883", help="the MQTT broker, HOST:PORT")
    init.add_argument("--ca-cert", type=Path, help="CA certificate to sign the unit's TLS certificate with")
    init.add_argument("--ca-key", type=Path, help="the CA's private key (with --ca-cert)")
    init.add_argument("--command-centre-key", type=Path, help="the command centre's Ed25519 public key (PEM)")
    init.add_argument("--force", action="store_true", help="replace existing keys and config (re-provision)")

    inst = commands.add_parser("install", help="install the systemd unit, udev rule, tmpfiles, sysusers")
    inst.add_argument("--root", type=Path, default=Path("/"), help="root file system (default /)")
    inst.add_argument("--source", type=Path, default=SYSTEMD_SOURCE, help="the repository's systemd/ folder")
    inst.add_argument(
        "--with", dest="with_drop_ins", action="append", default=[], choices=DROP_INS, help="add a drop-in"
    )
    inst.add_argument("--enable", action="store_true", help="also run sysusers, daemon-reload, enable --now")

    pair = commands.add_parser(
        "pair-handset", help="show a one-time code and pair the handset that sends it (over MQTT)"
    )
    pair.add_argument("--config", type=Path, default=Path("/etc/lfr-edge/config.toml"), help="the unit's config file")
    pair.add_argument("--handset-id", help="accept only this handset (its certificate CN)")
    pair.add_argument("--timeout", type=float, default=CODE_TTL_S, help="seconds the code stays valid (default 300)")

    handset = commands.add_parser("handsets", help="list or unpair paired handsets")
    handset.add_argument("--root", type=Path, default=Path("/"))
    handset_commands = handset.add_subparsers(dest="handset_command", required=True)
    handset_commands.add_parser("list", help="list paired handsets")
    unpair = handset_commands.add_parser("unpair", help="forget a handset (it gets no more alerts)")
    unpair.add_argument("handset_id")
    return parser


def _handsets(args: argparse.Namespace) -> int:
    directory = UnitLayout(args.root).handsets
    if args.handset_command == "list":
        entries = handsets.list_handsets(directory)
        for entry in entries:
            print(f"{entry.handset_id:24s} paired {entry.paired_at}")
        print(f"{len(entries)} handset(s) paired with this unit")
        return 0
    path = handsets.unpair(directory, args.handset_id)
    print(f"unpaired {args.handset_id}: removed {path}")
    print("Next:\n  1. nothing to restart: the daemon re-reads the handsets folder every 5 s and stops")
    print("     sealing alerts to it; revoke its broker certificate too if the handset was lost")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            report = init_unit(
                InitOptions(
                    unit_id=args.unit_id,
                    root=args.root,
                    board=args.board,
                    broker=args.broker,
                    ca_cert=args.ca_cert,
                    ca_key=args.ca_key,
                    command_centre_key=args.command_centre_key,
                    force=args.force,
                )
            )
        elif args.command == "install":
            report = install(
                InstallOptions(
                    root=args.root,
                    source=args.source,
                    with_drop_ins=tuple(args.with_drop_ins),
                    enable=args.enable,
                )
            )
        elif args.command == "pair-handset":
            return pair_handset(args.config, handset_id=args.handset_id, timeout_s=args.timeout)
        else:
            return _handsets(args)
    except ProvisionError as exc:
        print(f"lfr-provision {args.command}: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
