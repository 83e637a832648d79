"""The wall clock, as far as it can be trusted: validity windows are wall-clock times, timers are not.

A board without a real-time clock boots in the past and NTP steps it forward minutes later. Until the kernel
says the clock is synchronised (adjtimex(2): not TIME_ERROR), a watchlist's window cannot be judged, so the
unit waits for synchronisation, at most `wait_s`, and then says it goes on with the clock as it is. A step
of the wall clock (NTP correcting, a technician's `date`) is seen as a change of wall-minus-monotonic and
reported, so windows are checked again at once. Cooldowns, time-to-live and retries use time.monotonic().
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronised (STA_UNSYNC)
STEP_THRESHOLD_S = 1.0
_TIMEX_BYTES = 512  # struct timex is 208 bytes on 64-bit Linux; a larger zeroed buffer is safe (modes = 0)


SYNC_SERVICES = ("systemd-timesyn", "chronyd", "ntpd", "ntpsec-ntpd", "openntpd")  # /proc/PID/comm, 15 chars


def time_service_running(proc: Path = Path("/proc")) -> bool:
    """Whether a time synchronisation service runs here (without one, the kernel never says synchronised)."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in SYNC_SERVICES:
                return True
        except OSError:
            continue
    return False


def kernel_says_synchronised() -> bool | None:
    """True or False from adjtimex(2) with no changes requested; None where it cannot be asked, or where no
    time service runs that could ever synchronise it (a bench machine, CI: the clock is taken as it is)."""
    if not time_service_running():
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    if not hasattr(libc, "adjtimex"):
        return None
    state = int(libc.adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES)))
    return None if state < 0 else state != TIME_ERROR


class WallClock:
    """Whether the wall clock can be trusted yet, and whether it stepped since the last look."""

    def __init__(
        self,
        wait_s: float,
        synchronised: Callable[[], bool | None] = kernel_says_synchronised,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._synchronised = synchronised
        self._wall, self._monotonic = wall, monotonic
        self._deadline = monotonic() + wait_s
        self._trusted = wait_s <= 0
        self._offset = wall() - monotonic()
        self._lock = threading.Lock()

    def trusted(self) -> bool:
        """Synchronised, or not known to be after `wait_s` (said once, in the log)."""
        with self._lock:
            if self._trusted:
                return True
            state = self._synchronised()
            if state is None or state:
                self._trusted = True
                said = "synchronised" if state else "no time service can say whether it is synchronised; taken as it is"
                log.info("clock: %s", said)
            elif self._monotonic() >= self._deadline:
                self._trusted = True
                log.warning(
                    "clock: not synchronised after waiting; watchlist windows are judged by the clock as it is "
                    "(%s UTC): check NTP (timedatectl) or the board's real-time clock",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._wall())),
                )
            return self._trusted

    def step(self) -> float:
        """How far the wall clock jumped since the last call (0.0 when it ran with the monotonic clock)."""
        with self._lock:
            offset = self._wall() - self._monotonic()
            jump, self._offset = offset - self._offset, offset
        if abs(jump) < STEP_THRESHOLD_S:
            return 0.0
        log.warning("clock: the wall clock stepped by %+.1f s; watchlist windows are checked again", jump)
        return jump
