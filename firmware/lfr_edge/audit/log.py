"""The unit's audit log: append-only JSON lines, each carrying the sha256 of the line before it.

One line per event: {"seq": N, "time": "...Z", "event": "name", ...fields, "prev": "<64 hex>"}, where
`prev` is the sha256 of the previous line's bytes (without its newline) and, for the first line, the
sha256 of "lfr-edge audit genesis:<unit id>". An edited, removed, reordered or cut line breaks the chain
and `verify` names the first line where it breaks. Removing lines from the end leaves a shorter intact
chain: compare the head (`AuditLog.head`, published on the unit's audit topic) to catch that.

No biometric data may enter: values that look like an embedding, a crop or a frame (bytes, arrays,
long lists of numbers, long base64-like strings) are refused with a BiometricFieldError, so callers
cannot leak them by mistake. Only counts, identifiers, times and decisions belong here.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ZERO_HASH = "0" * 64
MAX_LINE_BYTES = 16 * 1024
FILE_MODE = 0o640
_TAIL_WINDOW = 4 * MAX_LINE_BYTES
_RESERVED = ("seq", "time", "event", "prev")
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{96,}")
_MAX_FLOATS = 4
_MAX_NUMBERS = 16
_MAX_STRING = 1024

# The events the daemon writes, and the fields the deployment report reads from them.
LOG_CREATED = "log_created"  # unit; previous_log, previous_log_sha256 after damage
STARTED = "started"  # version, config_sha256
STOPPED = "stopped"  # reason
FACES_SEEN = "faces_seen"  # camera, count (faces tracked since the previous faces_seen)
ALERT_RAISED = "alert_raised"  # alert_id, camera, subject_id, score
DECISION = "decision"  # alert_id, handset_id, decision: engage | no_action | false_alert
WATCHLIST_APPLIED = "watchlist_applied"  # deployment_id, version, subjects, valid_from, valid_until
WATCHLIST_WIPED = "watchlist_wiped"  # reason, deployment_id, version, subjects
FAULT = "fault"  # component, message
DECISIONS = ("engage", "no_action", "false_alert")


class AuditError(Exception):
    """The audit log cannot be written as asked."""


class BiometricFieldError(AuditError, ValueError):
    """A field value looks like biometric data (an embedding, a crop, a frame) and was refused."""


class AuditChainError(AuditError):
    """The existing log's tail does not verify, so the chain cannot be resumed."""


def genesis_hash(unit_id: str) -> str:
    """The `prev` of a log's first line: ties the chain to the unit that started it."""
    return hashlib.sha256(f"lfr-edge audit genesis:{unit_id}".encode()).hexdigest()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _check_value(key: str, value: Any) -> None:
    """Refuse anything that could carry an embedding, a crop or a frame."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise BiometricFieldError(f"audit field {key}: a {len(value)}-character string is too long")
        run = _BASE64_RUN.search(value)
        if run and not (len(run.group()) <= 128 and re.fullmatch(r"[0-9a-f]+", run.group())):
            raise BiometricFieldError(f"audit field {key}: looks like encoded binary data (base64-like run)")
        return
    if isinstance(value, list | tuple):
        floats = sum(isinstance(v, float) for v in value)
        numbers = sum(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if floats > _MAX_FLOATS or numbers > _MAX_NUMBERS:
            raise BiometricFieldError(
                f"audit field {key}: a list of {numbers} numbers looks like an embedding; log counts instead"
            )
        for i, item in enumerate(value):
            _check_value(f"{key}[{i}]", item)
        return
    if isinstance(value, dict):
        for sub_key, item in value.items():
            if not isinstance(sub_key, str):
                raise AuditError(f"audit field {key}: keys must be strings, got {sub_key!r}")
            _check_value(f"{key}.{sub_key}", item)
        return
    # bytes, bytearray, memoryview, numpy arrays and scalars, anything else: refused by type.
    raise BiometricFieldError(
        f"audit field {key}: values of type {type(value).__name__} are not allowed "
        "(only numbers, short strings and small lists/tables)"
    )


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Head:
    """The last line of the chain: its seq and hash (what the unit publishes as the audit head)."""

    seq: int
    hash: str


def _read_tail(path: Path) -> tuple[bytes, int]:
    """The last bytes of the file (enough for two full lines) and where they start."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - _TAIL_WINDOW)
        f.seek(start)
        return f.read(), start


def _check_tail(path: Path) -> Head | None:
    """Verify the last line is whole, well formed and chained to the line before it."""
    data, start = _read_tail(path)
    if not data:
        return None
    if not data.endswith(b"\n"):
        raise AuditChainError(f"{path}: the last line is incomplete (no newline: a write was cut short)")
    lines = data.split(b"\n")[:-1]
    if start > 0:
        lines = lines[1:]  # the first piece may be the end of a longer line
    record = _parse(lines[-1])
    if record is None:
        raise AuditChainError(f"{path}: the last line is not a valid audit record")
    if len(lines) >= 2:
        before = _parse(lines[-2])
        if before is None or before["seq"] != record["seq"] - 1 or record["prev"] != line_hash(lines[-2]):
            raise AuditChainError(f"{path}: the last line does not chain to the line before it")
    elif record["seq"] != 0:
        raise AuditChainError(f"{path}: cannot find the line before the last one")
    return Head(seq=record["seq"], hash=line_hash(lines[-1]))


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    seq, prev = record.get("seq"), record.get("prev")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    if not isinstance(prev, str) or not _HEX64.match(prev):
        return None
    if not isinstance(record.get("event"), str) or not isinstance(record.get("time"), str):
        return None
    return record


class AuditLog:
    """Appends hash-chained events to one file; thread-safe; fsyncs every event."""

    def __init__(self, path: Path, fd: int, head: Head | None, genesis: str, clock: Callable[[], str]) -> None:
        self.path = path
        self._fd = fd
        self._head = head
        self._genesis = genesis
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: Path,
        unit_id: str,
        on_damage: Literal["raise", "rotate"] = "raise",
        clock: Callable[[], str] = _utc_now,
    ) -> AuditLog:
        """Open (or create) the log and resume its chain after checking the last line.

        A damaged tail raises AuditChainError, or with on_damage="rotate" the damaged file is kept
        aside as `<name>.damaged-<time>` and a new chain starts whose first event names it and its hash.
        """
        damaged: Path | None = None
        head: Head | None = None
        if path.exists():
            try:
                head = _check_tail(path)
            except AuditChainError:
                if on_damage == "raise":
                    raise
                damaged = path.with_name(f"{path.name}.damaged-{clock().replace(':', '')}")
                os.rename(path, damaged)
                head = None
        created = head is None
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        if created:
            os.fchmod(fd, FILE_MODE)  # the service's UMask=0077 would otherwise make it 0600
        log = cls(path, fd, head, genesis_hash(unit_id), clock)
        if created:
            fields: dict[str, Any] = {"unit": unit_id}
            if damaged is not None:
                fields["previous_log"] = damaged.name
                fields["previous_log_sha256"] = hashlib.sha256(damaged.read_bytes()).hexdigest()
            log.append(LOG_CREATED, **fields)
        return log

    @property
    def head(self) -> Head | None:
        return self._head

    def append(self, event: str, **fields: Any) -> Head:
        """Write one event and fsync it; returns the new head. Refuses biometric-looking fields."""
        if not _EVENT_NAME.match(event):
            raise AuditError(f"audit event name {event!r} must be lower-case letters, digits, '_' or '.'")
        for key, value in fields.items():
            if key in _RESERVED:
                raise AuditError(f"audit field {key!r} is reserved")
            _check_value(key, value)
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"{self.path}: the audit log is closed")
            seq = 0 if self._head is None else self._head.seq + 1
            prev = self._genesis if self._head is None else self._head.hash
            record = {"seq": seq, "time": self._clock(), "event": event, **fields, "prev": prev}
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
            if len(line) >= MAX_LINE_BYTES:
                raise AuditError(f"audit event {event}: {len(line)} bytes is over the {MAX_LINE_BYTES} limit")
            os.write(self._fd, line + b"\n")
            os.fsync(self._fd)
            self._head = Head(seq=seq, hash=line_hash(line))
            return self._head

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    events: int
    head: Head | None
    bad_line: int | None = None  # 1-based line number of the first line where the chain breaks
    problem: str = ""

    def summary(self) -> str:
        if self.ok:
            return f"chain intact: {self.events} events"
        return f"chain broken at line {self.bad_line}: {self.problem}"


def _records(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line bytes, ends with a newline) for every line of the file."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            yield number, line.rstrip(b"\n"), line.endswith(b"\n")


def verify(path: Path, unit_id: str | None = None, expected_head: Head | None = None) -> VerifyReport:
    """Walk the whole chain; report the first line where it breaks.

    The genesis is taken from `unit_id`, or else from the first line's `unit` field. `expected_head`
    (seq and hash published by the unit) catches lines removed from the end.
    """
    records = list(_iter_verified(path, unit_id))
    bad = next((r for r in records if isinstance(r, _Bad)), None)
    good = [r for r in records if isinstance(r, tuple)]
    head = Head(seq=good[-1][0]["seq"], hash=good[-1][1]) if good else None
    if bad is not None:
        return VerifyReport(False, len(good), head, bad.line, bad.problem)
    if expected_head is not None:
        hashes = {record["seq"]: digest for record, digest in good}
        if expected_head.seq not in hashes:
            have = -1 if head is None else head.seq
            problem = f"ends at seq {have}, the published head is seq {expected_head.seq}"
            return VerifyReport(False, len(good), head, len(good) + 1, problem)
        if hashes[expected_head.seq] != expected_head.hash:
            problem = f"line {expected_head.seq + 1} differs from the published head"
            return VerifyReport(False, len(good), head, expected_head.seq + 1, problem)
    return VerifyReport(True, len(good), head)


@dataclasses.dataclass(frozen=True)
class _Bad:
    line: int
    problem: str


def _iter_verified(path: Path, unit_id: str | None) -> Iterator[tuple[dict[str, Any], str] | _Bad]:
    """Yield (record, its hash) for each line until the first break, then one _Bad and stop."""
    prev_hash: str | None = genesis_hash(unit_id) if unit_id is not None else None
    expected_seq = 0
    try:
        lines = _records(path)
        for number, line, terminated in lines:
            if not terminated:
                yield _Bad(number, "incomplete last line (no newline: a write was cut short or the file cut)")
                return
            record = _parse(line)
            if record is None:
                yield _Bad(number, "not a valid audit record (edited, or the file was cut inside a line)")
                return
            owner = record.get("unit")
            if (
                number == 1
                and unit_id not in (None, owner)
                and isinstance(owner, str)
                and (
                    record["prev"] == genesis_hash(owner)  # intact, and chained to that other unit
                )
            ):
                yield _Bad(1, f"this log belongs to unit {owner}, not to {unit_id} (--unit-id): another unit's log")
                return
            if number == 1 and prev_hash is None:
                if record["event"] != LOG_CREATED or not isinstance(record.get("unit"), str):
                    yield _Bad(1, f"the first line is not a {LOG_CREATED} event naming the unit")
                    return
                prev_hash = genesis_hash(record["unit"])
            seq = record["seq"]
            if seq != expected_seq:
                if seq > expected_seq:
                    what = f"{seq - expected_seq} line(s) missing before it"
                else:
                    what = "lines reordered or repeated"
                yield _Bad(number, f"seq {seq} where {expected_seq} was expected: {what}")
                return
            if record["prev"] != prev_hash:
                where = "the unit's genesis" if number == 1 else f"line {number - 1}"
                yield _Bad(
                    number,
                    f"prev hash does not match {where}: line {max(number - 1, 1)} was altered, "
                    "or lines around it were removed or moved",
                )
                return
            prev_hash = line_hash(line)
            expected_seq += 1
            yield record, prev_hash
    except OSError as exc:
        yield _Bad(0, f"cannot read {path}: {exc.strerror}")


@dataclasses.dataclass(frozen=True)
class DeploymentReport:
    """The figures a force publishes after a deployment, computed from events only (no biometrics)."""

    chain: VerifyReport
    units: tuple[str, ...]
    first_event: str
    last_event: str
    events_by_type: dict[str, int]
    faces_seen: int
    faces_seen_by_camera: dict[str, int]
    alerts: int
    decisions: dict[str, int]
    alerts_without_decision: int
    watchlists_applied: tuple[dict[str, Any], ...]
    watchlists_wiped: tuple[dict[str, Any], ...]
    faults: int

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["chain"] = {"ok": self.chain.ok, "events": self.chain.events, "summary": self.chain.summary()}
        return out

    def text(self) -> str:
        lines = [
            f"audit chain:        {self.chain.summary()}",
            f"unit(s):            {', '.join(self.units) or '-'}",
            f"period:             {self.first_event or '-'} .. {self.last_event or '-'}",
            f"faces seen:         {self.faces_seen}"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(self.faces_seen_by_camera.items()))})"
                if self.faces_seen_by_camera
                else ""
            ),
            f"alerts:             {self.alerts}",
        ]
        for name in DECISIONS:
            lines.append(f"  decided {name + ':':12s}{self.decisions.get(name, 0)}")
        lines.append(f"  without decision: {self.alerts_without_decision}")
        lines.append(f"watchlists applied: {len(self.watchlists_applied)}")
        for w in self.watchlists_applied:
            lines.append(
                f"  {w.get('time')}  deployment {w.get('deployment_id')} v{w.get('version')}: "
                f"{w.get('subjects')} subjects, valid {w.get('valid_from')} .. {w.get('valid_until')}"
            )
        lines.append(f"watchlists wiped:   {len(self.watchlists_wiped)}")
        for w in self.watchlists_wiped:
            lines.append(f"  {w.get('time')}  v{w.get('version')} ({w.get('subjects')} subjects): {w.get('reason')}")
        lines.append(f"faults:             {self.faults}")
        lines.append("events by type:     " + ", ".join(f"{k} {v}" for k, v in sorted(self.events_by_type.items())))
        return "\n".join(lines)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def deployment_report(path: Path, unit_id: str | None = None) -> DeploymentReport:
    """Summarise the verified part of the log (a broken chain is reported, and counted up to the break)."""
    chain = verify(path, unit_id)
    records = [r[0] for r in _iter_verified(path, unit_id) if isinstance(r, tuple)]
    by_type = Counter(r["event"] for r in records)
    faces_by_camera: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    alert_ids: set[str] = set()
    decided: set[str] = set()
    applied: list[dict[str, Any]] = []
    wiped: list[dict[str, Any]] = []
    units: list[str] = []
    for r in records:
        event = r["event"]
        if event == LOG_CREATED and isinstance(r.get("unit"), str) and r["unit"] not in units:
            units.append(r["unit"])
        elif event == FACES_SEEN:
            faces_by_camera[str(r.get("camera", "-"))] += _count(r.get("count"))
        elif event == ALERT_RAISED:
            alert_ids.add(str(r.get("alert_id", f"seq{r['seq']}")))
        elif event == DECISION and r.get("decision") in DECISIONS:
            decisions[r["decision"]] += 1
            decided.add(str(r.get("alert_id")))
        elif event in (WATCHLIST_APPLIED, WATCHLIST_WIPED):
            keys = ("deployment_id", "version", "subjects", "valid_from", "valid_until", "reason")
            entry = {"time": r["time"], **{k: r[k] for k in keys if k in r}}
            (applied if event == WATCHLIST_APPLIED else wiped).append(entry)
    return DeploymentReport(
        chain=chain,
        units=tuple(units),
        first_event=records[0]["time"] if records else "",
        last_event=records[-1]["time"] if records else "",
        events_by_type=dict(by_type),
        faces_seen=sum(faces_by_camera.values()),
        faces_seen_by_camera=dict(faces_by_camera),
        alerts=by_type[ALERT_RAISED],
        decisions={name: decisions[name] for name in DECISIONS},
        alerts_without_decision=len(alert_ids - decided),
        watchlists_applied=tuple(applied),
        watchlists_wiped=tuple(wiped),
        faults=by_type[FAULT],
    )


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
    return 0 if report.chain.ok else 1


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
        "report", help="deployment figures: faces seen, alerts, decisions, watchlists", parents=parents
    )
    summary.add_argument("file", help="the audit log")
    summary.add_argument("--unit-id", help="the unit the log must belong to")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_cmd_report)
    return audit


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lfr_edge.audit.log verify|report FILE` (the same as `lfr-edge audit ...`)."""
    parser = argparse.ArgumentParser(prog="lfr-edge")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
