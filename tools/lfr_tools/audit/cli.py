"""`lfr-audit verify FILE` and `lfr-audit report FILE [--json]`: anyone's reading of a unit's audit log.

The unit writes the log (lfr_edge.audit.log); checking its chain and publishing a deployment's figures happen
afterwards, on the unit or wherever the log is copied, so they live outside the van package.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from lfr_edge.audit.log import AuditError, Head
from lfr_tools.audit.report import deployment_report
from lfr_tools.audit.verify import verify

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _parse_head(text: str) -> Head:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not _HEX64.match(digest):
        raise argparse.ArgumentTypeError(f"--expect-head: {text!r} is not SEQ:SHA256HEX")
    return Head(int(seq), digest)


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify(Path(args.file), args.unit_id, args.expect_head)
    print(f"{args.file}: {report.summary()}", file=sys.stdout if report.ok else sys.stderr)
    if report.ok and report.head is not None:
        print(f"head: {report.head.seq}:{report.head.hash}")
    return 0 if report.ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    report = deployment_report(Path(args.file), args.unit_id)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr-audit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("verify", help="verify the hash chain; exit 1 naming the first bad line")
    check.add_argument("file", help="the audit log (e.g. /var/lib/lfr-edge/audit.jsonl)")
    check.add_argument("--unit-id", help="the unit the log must belong to (checks the genesis)")
    check.add_argument("--expect-head", type=_parse_head, help="SEQ:HASH the unit published; catches a cut tail")
    check.set_defaults(func=_cmd_verify)
    summary = commands.add_parser(
        "report",
        help="deployment figures: watchlists, faces seen, alerts, decisions, faults; exit 1 if any line "
        "does not verify or decode",
    )
    summary.add_argument("file", help="the audit log")
    summary.add_argument("--unit-id", help="the unit the log must belong to")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except AuditError as exc:
        print(f"lfr-audit {args.command}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
