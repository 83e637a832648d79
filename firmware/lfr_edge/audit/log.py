"""The unit's audit log: append-only JSON lines, each carrying the sha256 of the line before it.

One line per event: {"seq": N, "time": "...Z", "event": "name", ...fields, "prev": "<64 hex>"}, where
`prev` is the sha256 of the previous line's bytes (without its newline) and, for the first line, the
sha256 of "lfr-edge audit genesis:<unit id>". An edited, removed, reordered or cut line breaks the chain
and `lfr-audit verify` (lfr_tools.audit.verify: reading happens off the daemon) names the first line where
it breaks. Removing lines from the end leaves a shorter intact chain: compare the head (`AuditLog.head`,
published on the unit's audit topic) to catch that.

Every event is one of the typed classes of lfr_contracts.audit_events (the event name lives on the
class). No biometric data may enter: values that look like an embedding, a crop or a frame (bytes,
arrays, long lists of numbers, long base64-like strings) are refused with a BiometricFieldError, so
callers cannot leak them by mistake; then the values must have the types their class declares.
The deployment report (lfr_tools.audit.report) reads the lines back through the same classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import threading
import time as _time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lfr_contracts.audit_events import LINE_FIELDS, AuditEvent, AuditEventError, LogCreated, RecordsLost, check_event
from lfr_contracts.telemetry import AuditHealth
from lfr_contracts.untrusted import JsonRefused, loads_json

log = logging.getLogger(__name__)

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


@dataclasses.dataclass(frozen=True)
class _Resume:
    """Where an existing log's chain goes on: its head, the bytes of whole lines, an incomplete tail."""

    head: Head | None
    size: int  # the file is cut back to this many bytes (whole, chained lines)
    cut: bytes  # an incomplete last line (no newline: a write cut short by a crash or a power cut)


def _resume_point(path: Path) -> _Resume:
    """Check the last whole line is well formed and chained to the line before it; find a cut tail."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - _TAIL_WINDOW)
        f.seek(start)
        data = f.read()
    whole = data.rfind(b"\n") + 1  # 0 when no line in the window ends
    cut = data[whole:]
    if len(cut) >= MAX_LINE_BYTES:
        raise AuditChainError(f"{path}: the last {len(cut)} bytes are not a line (no newline)")
    if whole == 0 and start > 0:
        raise AuditChainError(f"{path}: cannot find the end of the last whole line")
    return _Resume(_check_tail(path, data[:whole], start), start + whole, cut)


def _check_tail(path: Path, data: bytes, start: int) -> Head | None:
    """The head of the whole lines in `data` (the file's last bytes, from offset `start`)."""
    if not data:
        return None
    lines = data.split(b"\n")[:-1]
    if start > 0:
        lines = lines[1:]  # the first piece may be the end of a longer line
    record = parse_line(lines[-1])
    if record is None:
        raise AuditChainError(f"{path}: the last line is not a valid audit record")
    if len(lines) >= 2:
        before = parse_line(lines[-2])
        if before is None or before["seq"] != record["seq"] - 1 or record["prev"] != line_hash(lines[-2]):
            raise AuditChainError(f"{path}: the last line does not chain to the line before it")
    elif record["seq"] != 0:
        raise AuditChainError(f"{path}: cannot find the line before the last one")
    return Head(seq=record["seq"], hash=line_hash(lines[-1]))


def parse_line(line: bytes) -> dict[str, Any] | None:
    """A line's record when it is well formed (seq, time, event, prev), else None; the reader uses it too."""
    try:  # bounded: a line may have been edited by anyone (deep nesting, a 5,000-digit number)
        record = loads_json(line, max_bytes=MAX_LINE_BYTES)
    except JsonRefused:
        return None
    if not isinstance(record, dict):
        return None
    seq, prev = record.get("seq"), record.get("prev")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        return None
    if not isinstance(prev, str) or not _HEX64.match(prev):
        return None
    if not isinstance(record.get("event"), str) or not isinstance(record.get("time"), str):
        return None
    return record


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written; a short write is followed by the error that explains it."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the audit log accepted no bytes")
        view = view[written:]


@dataclasses.dataclass
class _Gap:
    """Records lost during the current failure episode (written as one `gap` record once writing works)."""

    since: str
    until: str
    error: str
    lost: Counter[str] = dataclasses.field(default_factory=Counter)
    failing_since: float = 0.0  # epoch seconds, for telemetry


class AuditLog:
    """Appends hash-chained events to one file; thread-safe; fsyncs every event.

    A write that fails (a full disk, an I/O error) is cut back, so the file only ever holds whole, chained
    lines, and the head moves only once a line is written and fsynced. The record is then lost, counted, and
    the failure is logged once per episode (never to this log). Each later append, and `retry()`, tries
    again: the first line written afterwards is a `gap` record naming how many records of which events
    were lost and when, so the chain verifies across it.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        resume: _Resume,
        genesis: str,
        clock: Callable[[], str],
        first: tuple[AuditEvent, ...] = (),
    ) -> None:
        self.path = path
        self._fd = fd
        self._head = resume.head
        self._size = resume.size  # whole, chained lines: the file is cut back to this before every write
        self._genesis = genesis
        self._clock = clock
        self._lock = threading.Lock()
        self._first = list(first)  # written before anything else: a new log's first line, a cut tail's gap
        self._gap: _Gap | None = None
        self._lost_total = 0

    @classmethod
    def open(
        cls,
        path: Path,
        unit_id: str,
        on_damage: Literal["raise", "rotate"] = "raise",
        clock: Callable[[], str] = _utc_now,
    ) -> AuditLog:
        """Open (or create) the log and resume its chain after checking the last line.

        An incomplete last line (a write cut short by a crash) is cut off, and the next line written is a
        `gap` record naming its length and sha256. Any other damage to the tail raises AuditChainError, or
        with on_damage="rotate" the damaged file is kept aside as `<name>.damaged-<time>` and a new chain
        starts whose first event names it and its hash. Opening never needs free space: on a full disk the
        first lines wait until writing works.
        """
        damaged: Path | None = None
        resume = _Resume(None, 0, b"")
        if path.exists():
            try:
                resume = _resume_point(path)
            except AuditChainError:
                if on_damage == "raise":
                    raise
                damaged = path.with_name(f"{path.name}.damaged-{clock().replace(':', '')}")
                os.rename(path, damaged)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        first: list[AuditEvent] = []
        if resume.head is None:
            os.fchmod(fd, FILE_MODE)  # the service's UMask=0077 would otherwise make it 0600
            if damaged is None:
                first.append(LogCreated(unit=unit_id))
            else:
                digest = hashlib.sha256(damaged.read_bytes()).hexdigest()
                first.append(LogCreated(unit=unit_id, previous_log=damaged.name, previous_log_sha256=digest))
        if resume.cut:
            first.append(_cut_tail_gap(resume.cut, clock()))
            log.warning(
                "audit: %s ended in an incomplete line of %d bytes; cut off and recorded", path, len(resume.cut)
            )
        audit = cls(path, fd, resume, genesis_hash(unit_id), clock, tuple(first))
        with audit._lock:
            audit._write_pending(audit._clock())
        return audit

    @property
    def head(self) -> Head | None:
        return self._head

    def health(self) -> AuditHealth:
        """Whether writing works, and how many records were lost since start (for telemetry)."""
        with self._lock:
            gap = self._gap
            return AuditHealth(gap is None, self._lost_total, None if gap is None else gap.failing_since)

    def append(self, event: AuditEvent) -> Head | None:
        """Write one event and fsync it; the new head, or None when it could not be written (a reported fault,
        counted in the next gap record). Refuses biometric-looking or mistyped fields with AuditError."""
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
            time = self._clock()
            size = len(self._line(name, fields, time))
            if size >= MAX_LINE_BYTES:
                raise AuditError(f"audit event {name}: {size} bytes is over the {MAX_LINE_BYTES} limit")
            if not self._write_pending(time):
                self._lose(name, time)
                return None
            try:
                return self._write(name, fields, time)
            except OSError as exc:
                self._failed(exc, time)
                self._lose(name, time)
                return None

    def retry(self) -> bool:
        """Write what waits (the gap record) if writing works again; True when nothing waits."""
        with self._lock:
            if not self._first and self._gap is None:
                return True
            return self._fd >= 0 and self._write_pending(self._clock())

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                if self._first or self._gap is not None:
                    self._write_pending(self._clock())
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # under the lock -----------------------------------------------------------------------------------

    def _line(self, name: str, fields: dict[str, Any], time: str) -> bytes:
        seq = 0 if self._head is None else self._head.seq + 1
        prev = self._genesis if self._head is None else self._head.hash
        record = {"seq": seq, "time": time, "event": name, **fields, "prev": prev}
        return json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()

    def _write(self, name: str, fields: dict[str, Any], time: str) -> Head:
        """Append one line and fsync; on any error cut the file back to its whole lines and raise."""
        line = self._line(name, fields, time)
        start = self._size
        if os.fstat(self._fd).st_size != start:
            os.ftruncate(self._fd, start)  # what an earlier failed write may have left
        try:
            _write_all(self._fd, line + b"\n")
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # if this fails too, the next write cuts it back first
                os.ftruncate(self._fd, start)
            raise
        self._size = start + len(line) + 1
        self._head = Head(seq=0 if self._head is None else self._head.seq + 1, hash=line_hash(line))
        return self._head

    def _write_pending(self, time: str) -> bool:
        """Write the first lines and the gap record that wait; True when nothing waits any more."""
        try:
            while self._first:
                event = self._first[0]
                self._write(event.name, event.to_fields(), time)
                self._first.pop(0)
            gap = self._gap
            if gap is not None:
                event = RecordsLost(sum(gap.lost.values()), dict(gap.lost), gap.since, gap.until, gap.error)
                self._write(event.name, event.to_fields(), time)
                self._gap = None
                log.warning(
                    "audit: writing %s again; %d record(s) lost since %s are recorded as a gap",
                    self.path, event.lost, gap.since,
                )  # fmt: skip
        except OSError as exc:
            self._failed(exc, time)
            return False
        return True

    def _failed(self, exc: OSError, time: str) -> None:
        """A write failed: the first of an episode is logged (once; never to this log)."""
        if self._gap is None:
            self._gap = _Gap(since=time, until=time, error=exc.strerror or str(exc), failing_since=wall_time())
            log.error(
                "audit: cannot write %s (%s); records are counted and a gap record is written once writing "
                "works again (free space on the state directory's file system)",
                self.path, exc.strerror or exc,
            )  # fmt: skip

    def _lose(self, name: str, time: str) -> None:
        gap = self._gap
        assert gap is not None  # _failed ran first
        gap.lost[name] += 1
        gap.until = time
        self._lost_total += 1


def _cut_tail_gap(cut: bytes, time: str) -> RecordsLost:
    """The gap record of an incomplete last line found at start (one record cut short)."""
    match = re.search(rb'"event":"([a-z][a-z0-9_.]{0,63})"', cut)
    lost_events = {match.group(1).decode(): 1} if match else {}
    return RecordsLost(
        lost=1,
        lost_events=lost_events,
        since=time,
        until=time,
        error="the last line was incomplete at start (a write cut short); it was cut off",
        cut_bytes=len(cut),
        cut_sha256=hashlib.sha256(cut).hexdigest(),
    )


def wall_time() -> float:
    return _time.time()
