"""The unit's audit log: append-only JSON lines, each carrying the sha256 of the line before it.

One line per event: {"seq": N, "time": "...Z", "event": "name", ...fields, "prev": "<64 hex>"}, where
`prev` is the sha256 of the previous line's bytes (without its newline) and, for the first line, the
sha256 of "lfr-edge audit genesis:<unit id>". An edited, removed, reordered or cut line breaks the chain
and `verify` names the first line where it breaks. Removing lines from the end leaves a shorter intact
chain: compare the head (`AuditLog.head`, published on the unit's audit topic) to catch that.

Every event is one of the typed classes of lfr_contracts.audit_events (the event name lives on the
class). No biometric data may enter: values that look like an embedding, a crop or a frame (bytes,
arrays, long lists of numbers, long base64-like strings) are refused with a BiometricFieldError, so
callers cannot leak them by mistake; then the values must have the types their class declares.
The deployment report (lfr_edge.audit.report) reads the lines back through the same classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lfr_contracts.audit_events import LINE_FIELDS, AuditEvent, AuditEventError, LogCreated, check_event

ZERO_HASH = "0" * 64
MAX_LINE_BYTES = 16 * 1024
FILE_MODE = 0o640
_TAIL_WINDOW = 4 * MAX_LINE_BYTES
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{96,}")
_MAX_FLOATS = 4
_MAX_NUMBERS = 16
_MAX_STRING = 1024


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
            if damaged is None:
                log.append(LogCreated(unit=unit_id))
            else:
                digest = hashlib.sha256(damaged.read_bytes()).hexdigest()
                log.append(LogCreated(unit=unit_id, previous_log=damaged.name, previous_log_sha256=digest))
        return log

    @property
    def head(self) -> Head | None:
        return self._head

    def append(self, event: AuditEvent) -> Head:
        """Write one event and fsync it; returns the new head. Refuses biometric-looking or mistyped fields."""
        name, fields = event.name, event.to_fields()
        for key, value in fields.items():
            if key in LINE_FIELDS:
                raise AuditError(f"audit field {key!r} is reserved")
            _check_value(key, value)
        try:
            check_event(event)
        except AuditEventError as exc:
            raise AuditError(f"audit event {name}: {exc}") from exc
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"{self.path}: the audit log is closed")
            seq = 0 if self._head is None else self._head.seq + 1
            prev = self._genesis if self._head is None else self._head.hash
            record = {"seq": seq, "time": self._clock(), "event": name, **fields, "prev": prev}
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
            if len(line) >= MAX_LINE_BYTES:
                raise AuditError(f"audit event {name}: {len(line)} bytes is over the {MAX_LINE_BYTES} limit")
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


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the verified part of a log: its place, its seq and time, its event's name and fields."""

    number: int  # 1-based line number
    seq: int
    time: str
    event: str
    fields: dict[str, Any]  # without seq, time, event and prev


def verify(path: Path, unit_id: str | None = None, expected_head: Head | None = None) -> VerifyReport:
    """Walk the whole chain; report the first line where it breaks.

    The genesis is taken from `unit_id`, or else from the first line's `unit` field. `expected_head`
    (seq and hash published by the unit) catches lines removed from the end.
    """
    return read_verified(path, unit_id, expected_head)[0]


def read_verified(
    path: Path, unit_id: str | None = None, expected_head: Head | None = None
) -> tuple[VerifyReport, list[Line]]:
    """`verify`, and the lines up to the first break (what a reader of the log may trust)."""
    records = list(_iter_verified(path, unit_id))
    bad = next((r for r in records if isinstance(r, _Bad)), None)
    good = [r for r in records if isinstance(r, tuple)]
    lines = [
        Line(n, r["seq"], r["time"], r["event"], {k: v for k, v in r.items() if k not in LINE_FIELDS})
        for n, (r, _) in enumerate(good, start=1)
    ]
    return _chain_report(good, bad, expected_head), lines


def _chain_report(good: list[tuple[dict[str, Any], str]], bad: _Bad | None, expected_head: Head | None) -> VerifyReport:
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
                if record["event"] != LogCreated.name or not isinstance(record.get("unit"), str):
                    yield _Bad(1, f"the first line is not a {LogCreated.name} event naming the unit")
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
