"""Supervised threads: no thread of the daemon dies silently.

Every long-lived thread runs its loop through a `Supervisor`. An unexpected exception is logged with its
traceback the first time it is seen (a repeat of the same failure is counted, and summarised at most once a
minute), counted per thread for telemetry, and the loop is started again after a capped backoff. A thread
that keeps failing (`Restart.attempts` times within `Restart.within_s`), or one whose policy is not to
restart, is *down*: `down_reason()` then says so, and the daemon's watchdog stops petting systemd, which
restarts the unit. Threads the daemon did not start itself (paho's network thread) are caught by
`install_excepthook`: such a thread cannot be restarted, so it is down as soon as it dies.

Loops that carry on by themselves after an error (an MQTT handler that raised, a telemetry message that
could not be built) report it with `caught`, counted and logged the same way, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lfr_contracts.telemetry import ThreadHealth

log = logging.getLogger(__name__)

REPEAT_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Restart:
    """How a supervised loop comes back after an unexpected exception."""

    attempts: int = 5  # restarts allowed within `within_s`; one more failure and the thread is down
    within_s: float = 300.0
    backoff_s: float = 0.5  # first wait before a restart, doubled per consecutive failure
    max_backoff_s: float = 30.0


RESTART = Restart()
NEVER = Restart(attempts=0)  # the first unexpected exception takes the thread down


def _signature(exc: BaseException) -> tuple[str, str, int]:
    """What makes two failures "the same": the exception's type and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1] if frames else None
    return (type(exc).__name__, where.filename if where else "", where.lineno or 0 if where else 0)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class _Record:
    failures: int = 0
    recent: deque[float] = field(default_factory=deque)  # times of the failures within the restart window
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    unlogged: int = 0  # repeats counted since the last summary line
    summarised_at: float = float("-inf")
    down: str | None = None  # why the thread is down for good


class Supervisor:
    """Runs loops under supervision and knows which threads failed, how often, and which are down."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._threads: dict[str, _Record] = {}

    # running loops ------------------------------------------------------------------------------------

    def supervised(
        self,
        name: str,
        target: Callable[[], None],
        *,
        restart: Restart = RESTART,
        stop: threading.Event | None = None,
    ) -> Callable[[], None]:
        """`target` wrapped: run it; on an unexpected exception record it, wait, run it again (or give up).
        A normal return ends the thread; so does `stop` being set while waiting to restart."""

        def run() -> None:
            backoff = restart.backoff_s
            while True:
                try:
                    target()
                    return
                except Exception as exc:
                    if not self._failed(name, exc, restart):
                        return
                wait = stop.wait if stop is not None else _sleep
                if wait(backoff):
                    return
                backoff = min(backoff * 2, restart.max_backoff_s)

        return run

    def start(
        self,
        name: str,
        target: Callable[[], None],
        *,
        restart: Restart = RESTART,
        stop: threading.Event | None = None,
    ) -> threading.Thread:
        """A started daemon thread called `name` running `target` under supervision."""
        thread = threading.Thread(
            target=self.supervised(name, target, restart=restart, stop=stop), name=name, daemon=True
        )
        thread.start()
        return thread

    def caught(self, name: str, exc: BaseException) -> None:
        """A loop that goes on by itself hit an unexpected exception: count it and log it once."""
        self._failed(name, exc, None)

    # what the daemon reads ------------------------------------------------------------------------------

    def health(self) -> ThreadHealth:
        """Failures per thread since start, and the threads that are down (for telemetry)."""
        with self._lock:
            return ThreadHealth(
                failures={name: r.failures for name, r in self._threads.items() if r.failures},
                down=tuple(name for name, r in self._threads.items() if r.down is not None),
            )

    def down_reason(self) -> str | None:
        """Why the unit must be restarted (a thread is down), or None while every thread runs."""
        with self._lock:
            down = [f"{name} {r.down}" for name, r in self._threads.items() if r.down is not None]
        return f"thread down: {'; '.join(down)}" if down else None

    def install_excepthook(self) -> None:
        """Threads that are not supervised (a library's own) and die of an exception are down."""
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_value is None or not isinstance(args.exc_value, Exception):
                previous(args)
                return
            name = args.thread.name if args.thread is not None else "unnamed thread"
            self._failed(name, args.exc_value, NEVER)

        threading.excepthook = hook

    # bookkeeping --------------------------------------------------------------------------------------

    def _failed(self, name: str, exc: BaseException, restart: Restart | None) -> bool:
        """Record one failure; True when the thread may go on (restart, or carry on by itself)."""
        now = self._clock()
        with self._lock:
            record = self._threads.setdefault(name, _Record())
            record.failures += 1
            signature = _signature(exc)
            first_time = signature not in record.seen
            record.seen.add(signature)
            if restart is not None:
                record.recent.append(now)
                while record.recent and now - record.recent[0] > restart.within_s:
                    record.recent.popleft()
                if len(record.recent) > restart.attempts:
                    record.down = f"after {record.failures} unexpected error(s), the last {describe(exc)}"
            down, count = record.down, record.failures
            summary = 0
            if not first_time:
                record.unlogged += 1
                if now - record.summarised_at >= REPEAT_LOG_INTERVAL_S:
                    summary, record.unlogged, record.summarised_at = record.unlogged, 0, now
        if first_time:
            what = "the thread is down" if down else ("restarting it" if restart is not None else "carrying on")
            log.error("thread %s: unexpected error (%d so far); %s", name, count, what, exc_info=exc)
        elif down:
            log.error("thread %s is down %s", name, down)
        elif summary:
            log.error("thread %s: the same unexpected error again, %d more time(s): %s", name, summary, describe(exc))
        return down is None


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
