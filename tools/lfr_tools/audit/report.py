"""The deployment report: the figures a force publishes after a deployment, from the audit log alone.

It reads the verified part of the log through the typed events of lfr_contracts.audit_events, the same
classes the unit wrote them with: deployment and watchlist versions (subjects, validity window, when each
was applied and how it ended), applied / closed / expired / refused counts, faces seen, alerts, officers'
decisions per kind, and fault episodes. A line that does not decode is listed by number, never skipped
silently, and makes the report's exit status 1 like a broken chain does.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfr_contracts.alerts import DecisionKind
from lfr_contracts.audit_events import (
    AlertRaised,
    AuditEvent,
    AuditEventError,
    DecisionRefused,
    FacesSeen,
    Fault,
    FaultCleared,
    LogCreated,
    OfficerDecision,
    RecordsLost,
    WatchlistApplied,
    WatchlistClose,
    WatchlistRefused,
    WatchlistRefusedRepeats,
    WatchlistWiped,
    WipeReason,
    decode_event,
)
from lfr_edge.audit.log import AuditError
from lfr_tools.audit.verify import Line, VerifyReport, read_verified


@dataclass
class WatchlistPeriod:
    """One application of a watchlist version, and how it ended."""

    deployment: str
    version: int
    subjects: int
    valid_from: str
    valid_until: str
    applied_at: str
    ended_at: str | None = None  # None: still held where the log ends
    ended_by: str | None = None  # expired, closed, shutdown, or "replaced by vN"


@dataclass
class FaultEpisode:
    time: str
    component: str
    source: str
    problem: str
    detail: str
    lasted_s: float | None = None  # None: not cleared where the log ends


@dataclass(frozen=True)
class Gap:
    """A stretch in which the unit could not write its log (a full disk): what was lost, and when."""

    time: str  # when the gap record was written (writing worked again)
    lost: int
    lost_events: dict[str, int]
    since: str
    until: str
    error: str


@dataclass(frozen=True)
class DeploymentReport:
    chain: VerifyReport
    unreadable: tuple[str, ...]  # "line N: what is wrong", for lines that do not decode as their event
    units: tuple[str, ...]
    first_event: str
    last_event: str
    events_by_type: dict[str, int]
    deployments: tuple[str, ...]
    watchlists: tuple[WatchlistPeriod, ...]
    watchlists_applied: int
    watchlists_closed: int  # close commands accepted (a re-delivered close counts once)
    watchlists_expired: int
    watchlists_wiped_at_shutdown: int
    watchlists_replaced: int
    watchlists_refused: dict[str, int]  # by reason
    faces_seen: int
    faces_seen_by_camera: dict[str, int]
    alerts: int
    decisions: dict[str, int]  # every DecisionKind, 0 when none
    decisions_refused: int
    alerts_without_decision: int
    faults: tuple[FaultEpisode, ...]
    gaps: tuple[Gap, ...]  # the figures above do not count what these lost

    @property
    def ok(self) -> bool:
        """The whole log verified and every line decoded: the figures cover everything the unit wrote."""
        return self.chain.ok and not self.unreadable

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["chain"] = {"ok": self.chain.ok, "events": self.chain.events, "summary": self.chain.summary()}
        out["ok"] = self.ok
        return out

    def text(self) -> str:
        refused = sum(self.watchlists_refused.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.watchlists_refused.items()))
        lines = [
            f"audit chain:        {self.chain.summary()}",
            *(f"  unreadable {problem}" for problem in self.unreadable),
            f"unit(s):            {', '.join(self.units) or '-'}",
            f"period:             {self.first_event or '-'} .. {self.last_event or '-'}",
            f"deployment(s):      {', '.join(self.deployments) or '-'}",
            f"watchlists:         applied {self.watchlists_applied}, closed {self.watchlists_closed}, "
            f"expired {self.watchlists_expired}, refused {refused}"
            + (f" ({reasons})" if reasons else "")
            + f", replaced {self.watchlists_replaced}, wiped at shutdown {self.watchlists_wiped_at_shutdown}",
        ]
        for w in self.watchlists:
            ended = "still held at the end of the log" if w.ended_at is None else f"ended {w.ended_at} ({w.ended_by})"
            lines.append(
                f"  {w.deployment} v{w.version}: {w.subjects} subjects, valid {w.valid_from} .. {w.valid_until}; "
                f"applied {w.applied_at}, {ended}"
            )
        by_camera = ", ".join(f"{k} {v}" for k, v in sorted(self.faces_seen_by_camera.items()))
        lines.append(f"faces seen:         {self.faces_seen}" + (f" ({by_camera})" if by_camera else ""))
        lines.append(f"alerts:             {self.alerts}")
        lines += [f"  decided {kind + ':':13s}{count}" for kind, count in self.decisions.items()]
        lines.append(f"  without decision:    {self.alerts_without_decision}")
        lines.append(f"  decisions refused:   {self.decisions_refused}")
        lines.append(f"faults:             {len(self.faults)}")
        for f in self.faults:
            lasted = "not cleared" if f.lasted_s is None else f"cleared after {f.lasted_s:.1f} s"
            lines.append(f"  {f.time}  {f.component} {f.source} {f.problem}: {f.detail} ({lasted})")
        lost = sum(g.lost for g in self.gaps)
        lines.append(f"gaps:               {len(self.gaps)}" + (f" ({lost} records lost)" if self.gaps else ""))
        for g in self.gaps:
            what = ", ".join(f"{k} {v}" for k, v in sorted(g.lost_events.items())) or "unknown events"
            lines.append(f"  {g.since} .. {g.until}: {g.lost} lost ({what}): {g.error}")
        lines.append("events by type:     " + ", ".join(f"{k} {v}" for k, v in sorted(self.events_by_type.items())))
        return "\n".join(lines)


@dataclass
class _Tally:
    """What the report collects while it walks the events in order."""

    units: list[str] = dataclasses.field(default_factory=list)
    faces: Counter[str] = dataclasses.field(default_factory=Counter)
    alerts: int = 0
    alert_ids: set[str] = dataclasses.field(default_factory=set)
    decided: set[str] = dataclasses.field(default_factory=set)
    final_decision: dict[str, DecisionKind] = dataclasses.field(default_factory=dict)  # alert id -> the last
    decisions_refused: int = 0
    periods: list[WatchlistPeriod] = dataclasses.field(default_factory=list)
    closes: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    wipes: Counter[WipeReason] = dataclasses.field(default_factory=Counter)
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    faults: list[FaultEpisode] = dataclasses.field(default_factory=list)
    gaps: list[Gap] = dataclasses.field(default_factory=list)

    def add(self, time: str, event: AuditEvent) -> None:
        if isinstance(event, LogCreated) and event.unit not in self.units:
            self.units.append(event.unit)
        elif isinstance(event, FacesSeen):
            self.faces[event.camera] += event.count
        elif isinstance(event, AlertRaised):
            self.alerts += 1
            self.alert_ids.add(event.alert_id)
        elif isinstance(event, OfficerDecision):
            self.final_decision[event.alert_id] = event.decision  # a revision replaces what it revises
            self.decided.add(event.alert_id)
        elif isinstance(event, DecisionRefused):
            self.decisions_refused += event.count
        elif isinstance(event, WatchlistClose):
            self.closes.add((event.deployment, event.nonce))
        elif isinstance(event, WatchlistRefused):
            self.refused[event.reason] += 1
        elif isinstance(event, WatchlistRefusedRepeats):
            self.refused[event.reason] += event.count
        elif isinstance(event, RecordsLost):
            self.gaps.append(Gap(time, event.lost, event.lost_events, event.since, event.until, event.error))
            self._end_lost_in_gap(event)
        else:
            self._add_watchlist_or_fault(time, event)

    def _add_watchlist_or_fault(self, time: str, event: AuditEvent) -> None:
        if isinstance(event, WatchlistApplied):
            if event.replaced is not None:
                self._end(event.deployment, event.replaced, time, f"replaced by v{event.version}", any_deployment=True)
            self.periods.append(
                WatchlistPeriod(
                    event.deployment, event.version, event.subjects, event.valid_from, event.valid_until, time
                )
            )
        elif isinstance(event, WatchlistWiped):
            self.wipes[event.reason] += 1
            self._end(event.deployment, event.version, time, event.reason.value)
        elif isinstance(event, Fault):
            self.faults.append(
                FaultEpisode(time, event.component.value, event.source, event.problem.value, event.detail)
            )
        elif isinstance(event, FaultCleared):
            for episode in reversed(self.faults):
                if (episode.component, episode.source, episode.problem) == (
                    event.component.value,
                    event.source,
                    event.problem.value,
                ) and episode.lasted_s is None:
                    episode.lasted_s = event.lasted_s
                    break

    def _end_lost_in_gap(self, gap: RecordsLost) -> None:
        """Held lists whose wipe was among the lost records ended within the gap (the latest first)."""
        for _ in range(gap.lost_events.get(WatchlistWiped.name, 0)):
            period = next((p for p in reversed(self.periods) if p.ended_at is None), None)
            if period is None:
                return
            period.ended_at, period.ended_by = gap.until, f"not recorded: lost in the gap from {gap.since}"

    def _end(self, deployment: str, version: int, time: str, how: str, any_deployment: bool = False) -> None:
        """Close the open period of that version (a replacement may come from another deployment)."""
        for period in reversed(self.periods):
            same = period.version == version and (any_deployment or period.deployment == deployment)
            if same and period.ended_at is None:
                period.ended_at, period.ended_by = time, how
                return


def read_events(path: Path, unit_id: str | None = None) -> list[AuditEvent]:
    """Every event of an intact log, in order; AuditError naming the line if any does not verify or decode."""
    chain, lines = read_verified(path, unit_id)
    if not chain.ok:
        raise AuditError(f"{path}: {chain.summary()}")
    unreadable: list[str] = []
    events = [_decode(line, unreadable) for line in lines]
    if unreadable:
        raise AuditError(f"{path}: " + "; ".join(unreadable))
    return [e for e in events if e is not None]


def deployment_report(path: Path, unit_id: str | None = None) -> DeploymentReport:
    """Summarise the verified part of the log (a broken chain is reported, and counted up to the break)."""
    chain, lines = read_verified(path, unit_id)
    tally = _Tally()
    unreadable: list[str] = []
    for line in lines:
        event = _decode(line, unreadable)
        if event is not None:
            tally.add(line.time, event)
    deployments = list(dict.fromkeys(p.deployment for p in tally.periods))
    return DeploymentReport(
        chain=chain,
        unreadable=tuple(unreadable),
        units=tuple(tally.units),
        first_event=lines[0].time if lines else "",
        last_event=lines[-1].time if lines else "",
        events_by_type=dict(Counter(line.event for line in lines)),
        deployments=tuple(deployments),
        watchlists=tuple(tally.periods),
        watchlists_applied=len(tally.periods),
        watchlists_closed=len(tally.closes),
        watchlists_expired=tally.wipes[WipeReason.EXPIRED],
        watchlists_wiped_at_shutdown=tally.wipes[WipeReason.SHUTDOWN],
        watchlists_replaced=sum(1 for p in tally.periods if (p.ended_by or "").startswith("replaced")),
        watchlists_refused=dict(tally.refused),
        faces_seen=sum(tally.faces.values()),
        faces_seen_by_camera=dict(tally.faces),
        alerts=tally.alerts,
        decisions={kind.value: list(tally.final_decision.values()).count(kind) for kind in DecisionKind},
        decisions_refused=tally.decisions_refused,
        alerts_without_decision=len(tally.alert_ids - tally.decided),
        faults=tuple(tally.faults),
        gaps=tuple(tally.gaps),
    )


def _decode(line: Line, unreadable: list[str]) -> AuditEvent | None:
    try:
        return decode_event(line.event, line.fields)
    except AuditEventError as exc:
        unreadable.append(f"line {line.number}: {exc}")
        return None
