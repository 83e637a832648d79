"""Fault episodes for the audit log: one `fault` event when a problem begins, one `fault_cleared` once it
has been gone for `settle_s`, however many frames or polls it lasts.

The daemon's main loop calls `FaultMonitor.poll` with a function that says what is wrong right now
(`current_problems`: cameras stalled or reconnecting, the beacon's port lost or the beacon silent, the
broker connection lost). A problem that comes back before `settle_s` has passed is the same episode, so
a flapping link writes one pair of events, not one per flap. A problem may need to last `confirm_s`
before it counts (a beacon is briefly unanswered after every reopen).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lfr_contracts.audit_events import AuditSink, Fault, FaultCleared, FaultComponent, FaultProblem

Key = tuple[FaultComponent, str, FaultProblem]


@dataclass(frozen=True)
class Problem:
    """Something wrong at one poll."""

    component: FaultComponent
    source: str
    problem: FaultProblem
    detail: str
    confirm_s: float = 0.0  # how long it must last before it is a fault

    @property
    def key(self) -> Key:
        return (self.component, self.source, self.problem)


@dataclass
class _Episode:
    first_seen: float
    last_seen: float
    detail: str
    confirm_s: float
    reported: bool = False


class FaultMonitor:
    """Turns polls of current problems into audit events, one pair per episode."""

    def __init__(
        self, audit: AuditSink, *, poll_s: float = 0.25, settle_s: float = 2.0, startup_grace_s: float = 3.0
    ) -> None:
        self._audit = audit
        self._poll_s = poll_s
        self._settle_s = settle_s
        self._startup_grace_s = startup_grace_s
        self._first_poll: float | None = None
        self._last_poll = float("-inf")
        self._episodes: dict[Key, _Episode] = {}

    def poll(self, now: float, problems: Callable[[], Sequence[Problem]]) -> None:
        """Look at `problems()` at most every poll_s; nothing in the first startup_grace_s (the parts are
        still coming up: a problem then is a fault only if it is still there after the grace)."""
        if self._first_poll is None:
            self._first_poll = now
        if now - self._last_poll < self._poll_s or now - self._first_poll < self._startup_grace_s:
            return
        self._last_poll = now
        self.observe(now, problems())

    def observe(self, now: float, problems: Sequence[Problem]) -> None:
        """Episodes that ended first, then the ones that began."""
        seen = {p.key: p for p in problems}
        for key, episode in list(self._episodes.items()):
            if key in seen:
                continue
            if not episode.reported:
                del self._episodes[key]  # gone before it was confirmed: not a fault
            elif now - episode.last_seen >= self._settle_s:
                del self._episodes[key]
                lasted = round(episode.last_seen - episode.first_seen, 1)
                self._audit.append(FaultCleared(key[0], key[1], key[2], lasted))
        for key, problem in seen.items():
            episode = self._episodes.setdefault(key, _Episode(now, now, problem.detail, problem.confirm_s))
            episode.last_seen = now
            if not episode.reported and now - episode.first_seen >= episode.confirm_s:
                episode.reported = True
                self._audit.append(Fault(key[0], key[1], key[2], episode.detail))


class Named(Protocol):
    @property
    def name(self) -> str: ...


class CaptureView(Protocol):
    """What current_problems reads of a camera's capture thread (lfr_edge.daemon.frames.CaptureThread)."""

    @property
    def source(self) -> Named: ...

    @property
    def state(self) -> str: ...

    @property
    def stalled(self) -> bool: ...

    @property
    def last_error(self) -> str: ...

    @property
    def stall_after_s(self) -> float: ...


class LinkView(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def responsive(self) -> bool: ...


class BeaconView(Protocol):
    def state(self) -> LinkView: ...


def current_problems(
    captures: Sequence[CaptureView],
    beacon: BeaconView | None,
    beacon_port: str,
    broker_connected: bool,
    broker_address: str,
) -> list[Problem]:
    """What is wrong now with the cameras, the beacon (when there is one) and the broker connection."""
    found = []
    for capture in captures:
        name = capture.source.name
        if capture.state == "reconnecting":
            found.append(Problem(FaultComponent.CAMERA, name, FaultProblem.DISCONNECTED, capture.last_error[:200]))
        elif capture.stalled:
            detail = f"no frame for more than {capture.stall_after_s:g} s"
            found.append(Problem(FaultComponent.CAMERA, name, FaultProblem.STALLED, detail))
    if beacon is not None:
        link = beacon.state()
        if not link.connected:
            found.append(
                Problem(FaultComponent.BEACON, beacon_port, FaultProblem.DISCONNECTED, "the serial port is lost")
            )
        elif not link.responsive:
            detail = "the beacon does not answer its commands"
            found.append(Problem(FaultComponent.BEACON, beacon_port, FaultProblem.UNRESPONSIVE, detail, confirm_s=1.0))
    if not broker_connected:
        detail = "the connection to the broker is lost; reconnecting"
        found.append(Problem(FaultComponent.BROKER, broker_address, FaultProblem.DISCONNECTED, detail))
    return found
