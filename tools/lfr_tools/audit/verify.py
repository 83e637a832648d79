"""Reading an audit log back: walk the hash chain, report the first line where it breaks, and hand a reader
the lines up to that break. The van only writes the log (lfr_edge.audit.log); this runs wherever the log is
read (`lfr-audit verify`, the deployment report), with the writer's own line format and genesis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lfr_contracts.audit_events import LINE_FIELDS, LogCreated, RecordsLost
from lfr_edge.audit.log import Head, genesis_hash, line_hash, parse_line


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    events: int
    head: Head | None
    bad_line: int | None = None  # 1-based line number of the first line where the chain breaks
    problem: str = ""
    gaps: int = 0  # `gap` records in the verified part: the unit could not write for a while
    lost: int = 0  # the records they say were lost

    def summary(self) -> str:
        gaps = f"; {self.gaps} gap(s) recorded, {self.lost} record(s) lost" if self.gaps else ""
        if self.ok:
            return f"chain intact: {self.events} events{gaps}"
        return f"chain broken at line {self.bad_line}: {self.problem}{gaps}"


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
    gaps = [record for record, _ in good if record["event"] == RecordsLost.name]
    lost = sum(g["lost"] for g in gaps if isinstance(g.get("lost"), int))
    if bad is not None:
        return VerifyReport(False, len(good), head, bad.line, bad.problem, len(gaps), lost)
    if expected_head is not None:
        hashes = {record["seq"]: digest for record, digest in good}
        if expected_head.seq not in hashes:
            have = -1 if head is None else head.seq
            problem = f"ends at seq {have}, the published head is seq {expected_head.seq}"
            return VerifyReport(False, len(good), head, len(good) + 1, problem, len(gaps), lost)
        if hashes[expected_head.seq] != expected_head.hash:
            problem = f"line {expected_head.seq + 1} differs from the published head"
            return VerifyReport(False, len(good), head, expected_head.seq + 1, problem, len(gaps), lost)
    return VerifyReport(True, len(good), head, gaps=len(gaps), lost=lost)


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
            record = parse_line(line)
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
