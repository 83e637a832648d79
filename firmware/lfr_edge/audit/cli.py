"""`lfr-edge audit verify FILE` and `lfr-edge audit report FILE [--json]` (also `python -m lfr_edge.audit.cli`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from lfr_edge.audit.log import Head, verify
from lfr_edge.audit.report import deployment_report

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


def add_audit_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """Add `audit verify FILE` and `audit report FILE` to a CLI; each sets args.func(args) -> exit code."""
    parents = parents or []
    audit = subparsers.add_parser(
        "audit", help="check the audit log's hash chain, summarise a deployment", parents=parents
    )
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser(
        "verify", help="verify the hash chain; exit 1 naming the first bad line", parents=parents
    )
    check.add_argument("file", help="the audit log (e.g. /var/lib/lfr-edge/audit.jsonl)")
    check.add_argument("--unit-id", help="the unit the log must belong to (checks the genesis)")
    check.add_argument("--expect-head", type=_parse_head, help="SEQ:HASH the unit published; catches a cut tail")
    check.set_defaults(func=_cmd_verify)
    summary = commands.add_parser(
        "report",
        help="deployment figures: watchlists, faces seen, alerts, decisions, faults; exit 1 if any line "
        "does not verify or decode",
        parents=parents,
    )
    summary.add_argument("file", help="the audit log")
    summary.add_argument("--unit-id", help="the unit the log must belong to")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_cmd_report)
    return audit


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lfr_edge.audit.cli verify|report FILE` (the same as `lfr-edge audit ...`)."""
    parser = argparse.ArgumentParser(prog="lfr-edge")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
