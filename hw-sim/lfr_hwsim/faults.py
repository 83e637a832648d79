"""Scriptable, timed fault injection against a SimulatedVan (tests, `lfr-hwsim demo --faults`).

A script is a comma-separated list of `TIME:KIND[=DURATION]`, times in seconds from the injector's start,
e.g. `"8:broker-restart=4, 15:camera-stall=3, 30:watchlist-corrupt, 40:watchlist-expire=5"`. A fault with
a duration is cleared that many seconds after it was injected; for `watchlist-expire` the duration is the
time until the new bundle's validity window ends. The injector runs the script on its own thread, records
what it did and when (for reports and for tests to await), and restores what is still broken on `stop()`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lfr_hwsim.camera import write_control
from lfr_hwsim.van import SimulatedVan


class FaultScriptError(ValueError):
    """A fault script cannot be parsed; the message names the item and what is wrong with it."""


@dataclass(frozen=True)
class FaultKind:
    name: str
    target: str  # what it breaks; two faults on one target must not overlap
    default_duration_s: float | None  # None: an instant fault, which takes no duration
    help: str


KINDS = {
    k.name: k
    for k in (
        FaultKind("broker-restart", "broker", 3.0, "stop the broker, start it again on the same port"),
        FaultKind("camera-stall", "camera", 3.0, "the simulator camera delivers no frame (read blocks)"),
        FaultKind("camera-disconnect", "camera", 3.0, "the simulator camera fails (read and open raise)"),
        FaultKind("beacon-unplug", "beacon", 3.0, "unplug the beacon's pty, then replug a new one"),
        FaultKind("handset-offline", "handset", 5.0, "the handset disconnects, then reconnects"),
        FaultKind("watchlist-corrupt", "watchlist", None, "publish the current bundle with flipped bytes"),
        FaultKind("watchlist-replay", "watchlist", None, "re-publish a bundle older than the current one"),
        FaultKind("watchlist-expire", "watchlist", 3.0, "publish a new version whose validity ends after DURATION"),
    )
}


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the injector starts
    kind: str
    duration_s: float | None  # None for an instant fault

    @property
    def clears_at_s(self) -> float:
        return self.at_s + (self.duration_s or 0.0)

    def __str__(self) -> str:
        return f"{self.at_s:g}:{self.kind}" + ("" if self.duration_s is None else f"={self.duration_s:g}")


@dataclass(frozen=True)
class FaultEvent:
    """One thing the injector did: `inject`, `clear` or `error`, with wall and run-relative times."""

    at_s: float  # seconds since the injector started
    wall_time: float  # epoch seconds, to compare with alert times
    kind: str
    action: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at_s": round(self.at_s, 2),
            "wall_time": round(self.wall_time, 3),
            "kind": self.kind,
            "action": self.action,
            "detail": self.detail,
        }


def _seconds(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultScriptError(f"fault {item!r}: {what} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise FaultScriptError(f"fault {item!r}: {what} {text!r} must be a finite number of seconds >= 0")
    return value


def parse_script(script: str) -> tuple[Fault, ...]:
    """`"8:broker-restart=4, 30:watchlist-corrupt"` -> Faults sorted by time; FaultScriptError if bad."""
    faults = []
    for raw in script.split(","):
        item = raw.strip()
        if not item:
            continue
        when, colon, rest = item.partition(":")
        if not colon:
            raise FaultScriptError(f"fault {item!r}: expected TIME:KIND[=DURATION], e.g. 8:broker-restart=4")
        kind_name, equals, duration_text = rest.strip().partition("=")
        kind = KINDS.get(kind_name.strip())
        if kind is None:
            raise FaultScriptError(f"fault {item!r}: unknown kind {kind_name.strip()!r} (known: {', '.join(KINDS)})")
        at_s = _seconds(when.strip(), "time", item)
        duration: float | None = kind.default_duration_s
        if equals:
            if kind.default_duration_s is None:
                raise FaultScriptError(f"fault {item!r}: {kind.name} is instant and takes no duration")
            duration = _seconds(duration_text.strip(), "duration", item)
            if duration <= 0:
                raise FaultScriptError(f"fault {item!r}: duration must be more than 0 s")
        faults.append(Fault(at_s, kind.name, duration))
    faults.sort(key=lambda f: f.at_s)
    _check_overlaps(faults)
    return tuple(faults)


def _check_overlaps(faults: Sequence[Fault]) -> None:
    """Two faults on the same part at once would make it unclear which one a recovery belongs to."""
    active: dict[str, Fault] = {}
    for fault in faults:
        target = KINDS[fault.kind].target
        previous = active.get(target)
        if previous is not None and fault.at_s < previous.clears_at_s:
            raise FaultScriptError(
                f"fault {fault}: starts before {previous} has cleared (at {previous.clears_at_s:g} s)"
            )
        if fault.kind != "watchlist-expire":  # the expiry timer runs on its own; the list can still change
            active[target] = fault


def corrupt(payload: bytes) -> bytes:
    """The same message with bytes flipped inside it (not at the edges, so it still parses as a bundle)."""
    data = bytearray(payload)
    for position in (len(data) // 2, len(data) * 3 // 4, len(data) - 2):
        data[position] ^= 0xFF
    return bytes(data)


class Handset(Protocol):
    def start(self, timeout: float = 10.0) -> None: ...

    def stop(self) -> None: ...


class FaultInjector:
    """Runs a fault script against a van on a thread; `events` says what was done and when."""

    def __init__(
        self,
        van: SimulatedVan,
        faults: Sequence[Fault] | str,
        *,
        handset: Handset | None = None,
        camera_control: Path | None = None,
        ack_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.van = van
        self.faults = parse_script(faults) if isinstance(faults, str) else tuple(faults)
        self.handset = handset
        self.camera_control = camera_control if camera_control is not None else van.camera_control_file
        self.ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._events: list[FaultEvent] = []
        self._active: dict[str, Fault] = {}  # target -> fault injected and not yet cleared
        self._started_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)
        self._check_resources()

    def _check_resources(self) -> None:
        kinds = {f.kind for f in self.faults}
        if "beacon-unplug" in kinds and self.van.beacon is None:
            raise FaultScriptError("beacon-unplug: this van has no beacon")
        if "handset-offline" in kinds and self.handset is None:
            raise FaultScriptError("handset-offline: give the injector the handset client to take offline")

    # lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FaultInjector:
        self._started_at = self._clock()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the script and clear every fault still in force (broker back up, camera ok, ...)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        for fault in list(self._active.values()):
            self._do(fault, "clear", why=" (injector stopped)")

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def report(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.events]

    def wait_done(self, timeout_s: float) -> bool:
        """True once every fault in the script has been injected and cleared."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # the script ---------------------------------------------------------------------------------------

    def _schedule(self) -> list[tuple[float, int, Fault, str]]:
        steps = []
        for n, fault in enumerate(self.faults):
            steps.append((fault.at_s, 2 * n + 1, fault, "inject"))
            if fault.duration_s is not None:
                steps.append((fault.clears_at_s, 2 * n, fault, "clear"))  # a clear goes before an inject
        return sorted(steps, key=lambda s: (s[0], s[1]))

    def _elapsed(self) -> float:
        assert self._started_at is not None
        return self._clock() - self._started_at

    def _run(self) -> None:
        for due_s, _, fault, action in self._schedule():
            if self._stop.wait(max(0.0, due_s - self._elapsed())):
                return
            self._do(fault, action)

    def _record(self, kind: str, action: str, detail: str) -> None:
        event = FaultEvent(self._elapsed(), time.time(), kind, action, detail)
        with self._lock:
            self._events.append(event)

    def _do(self, fault: Fault, action: str, why: str = "") -> None:
        target = KINDS[fault.kind].target
        try:
            detail = (self._inject if action == "inject" else self._clear)(fault)
        except Exception as exc:  # a failed fault is reported, the script goes on
            self._record(fault.kind, "error", f"{action} failed: {type(exc).__name__}: {exc}")
            return
        if action == "inject" and fault.duration_s is not None and fault.kind != "watchlist-expire":
            self._active[target] = fault
        elif action == "clear":
            self._active.pop(target, None)
        self._record(fault.kind, action, detail + why)

    def _inject(self, fault: Fault) -> str:
        van = self.van
        if fault.kind == "broker-restart":
            van.broker.stop()
            return f"broker on port {van.broker.port} stopped"
        if fault.kind in ("camera-stall", "camera-disconnect"):
            state = fault.kind.removeprefix("camera-")
            write_control(self.camera_control, state)
            return f"camera control file says {state}"
        if fault.kind == "beacon-unplug":
            assert van.beacon is not None
            van.beacon.unplug()
            return "beacon unplugged (pty closed, link removed)"
        if fault.kind == "handset-offline":
            assert self.handset is not None
            self.handset.stop()
            return "handset disconnected"
        if fault.kind == "watchlist-corrupt":
            current = van.current_bundle
            ack = van.publish_watchlist(corrupt(current), wait_ack_s=self.ack_timeout_s, retain=False)
            return f"published version {van.watchlist_version} with flipped bytes; unit answered {_ack(ack)}"
        if fault.kind == "watchlist-replay":
            version, old = van.earlier_bundle()
            ack = van.publish_watchlist(old, wait_ack_s=self.ack_timeout_s, retain=False)
            return f"re-published version {version} (current {van.watchlist_version}); unit answered {_ack(ack)}"
        if fault.kind == "watchlist-expire":
            assert fault.duration_s is not None
            payload = van.reissue_watchlist(valid_for_s=fault.duration_s)
            ack = van.publish_watchlist(payload, wait_ack_s=self.ack_timeout_s)
            return (
                f"published version {van.watchlist_version}, valid for {fault.duration_s:g} s more; "
                f"unit answered {_ack(ack)}"
            )
        raise FaultScriptError(f"no injection for {fault.kind}")

    def _clear(self, fault: Fault) -> str:
        van = self.van
        if fault.kind == "broker-restart":
            van.broker.start()
            return f"broker on port {van.broker.port} started again"
        if fault.kind in ("camera-stall", "camera-disconnect"):
            write_control(self.camera_control, "ok")
            return "camera control file says ok"
        if fault.kind == "beacon-unplug":
            assert van.beacon is not None
            van.beacon.replug()
            return "beacon replugged (new pty behind the same link)"
        if fault.kind == "handset-offline":
            assert self.handset is not None
            self.handset.start()
            return "handset connected again"
        if fault.kind == "watchlist-expire":
            return f"validity window of version {van.watchlist_version} ended"
        raise FaultScriptError(f"nothing to clear for {fault.kind}")


def _ack(ack: dict[str, Any] | None) -> str:
    if ack is None:
        return "nothing"
    return str(ack.get("status", "?")) + (f" ({ack['reason']})" if "reason" in ack else "")
