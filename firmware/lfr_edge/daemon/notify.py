"""systemd's notify protocol, spoken over a plain AF_UNIX datagram socket (no libsystemd needed).

systemd (Type=notify) passes the path of its notification socket in NOTIFY_SOCKET; a service sends
newline-separated KEY=VALUE datagrams to it: READY=1 once it is serving, WATCHDOG=1 at least every
WATCHDOG_USEC microseconds, STATUS=... for `systemctl status`, STOPPING=1 and RELOADING=1. Outside systemd
(a developer's shell, the tests) NOTIFY_SOCKET is unset and every call is a no-op.

`Watchdog` pets systemd's watchdog only while the pipeline makes progress: the pipeline calls
`progress()` once per frame, a small thread sends WATCHDOG=1 on a timer, and stops sending when the last
progress is older than `stall_s`, so systemd kills and restarts a stuck pipeline. It also stops for good
once `unhealthy()` names a reason (a supervised thread that could not recover: lfr_edge.daemon.supervise).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from lfr_edge.config import DaemonConfig

log = logging.getLogger(__name__)


class NotifyError(OSError):
    """NOTIFY_SOCKET is set but unusable (a malformed address)."""


def _socket_address(value: str) -> str | bytes:
    """Turn NOTIFY_SOCKET into an address for sendto: a path, or an abstract name for '@name'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise NotifyError(f"NOTIFY_SOCKET: {value!r} is neither an absolute path nor an abstract '@' name")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notify messages to systemd; silent when not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(raw) if raw else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of KEY=VALUE lines; returns False when not under systemd or when the
        receiver is not keeping up (never blocks: the pipeline thread calls this)."""
        if self._sock is None or self._address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:
                raise ValueError(f"notify field {key}: a value cannot contain a newline")
            lines.append(f"{key}={text}")
        with self._lock:
            try:
                self._sock.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self._address)
            except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: models verified, camera delivering, broker connected."""
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """STATUS=: the one-line summary shown by `systemctl status lfr-edge`."""
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        """RELOADING=1 with the time the reload began (send ready() when it is done)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_timeout_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set (WATCHDOG_USEC), or None when no watchdog is asked for.

    WATCHDOG_PID, when set, names the process the watchdog is meant for; another process (a child that
    inherited the environment) must not pet it.
    """
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid and raw_pid != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw_usec)
    except ValueError as exc:
        raise NotifyError(f"WATCHDOG_USEC: {raw_usec!r} is not a whole number of microseconds") from exc
    if usec <= 0:
        raise NotifyError(f"WATCHDOG_USEC: {raw_usec!r} must be greater than 0")
    return usec / 1_000_000


class Watchdog:
    """Pets systemd's watchdog only while the pipeline keeps calling `progress()`.

    `interval_s` is how often the pet thread wakes (half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises); `stall_s` is how old the last progress may be before petting stops (daemon.watchdog_stall_s).
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float,
        stall_s: float,
        clock: Callable[[], float] = time.monotonic,
        unhealthy: Callable[[], str | None] = lambda: None,
    ) -> None:
        if interval_s <= 0 or stall_s <= 0:
            raise ValueError("Watchdog: interval_s and stall_s must be greater than 0")
        self._notifier = notifier
        self.interval_s = interval_s
        self.stall_s = stall_s
        self._clock = clock
        self._last_progress = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unhealthy = unhealthy
        self.pets = 0
        self.stalled = False
        self.refused: str | None = None  # why petting stopped for good

    @classmethod
    def from_env(
        cls,
        notifier: Notifier,
        stall_s: float,
        env: Mapping[str, str] | None = None,
        unhealthy: Callable[[], str | None] = lambda: None,
    ) -> Watchdog | None:
        """A watchdog paced by WATCHDOG_USEC, or None when systemd asked for none."""
        timeout = watchdog_timeout_s(env)
        if timeout is None or not notifier.enabled:
            return None
        return cls(notifier, interval_s=timeout / 2, stall_s=stall_s, unhealthy=unhealthy)

    def apply(self, cfg: DaemonConfig) -> None:
        """A reloaded [daemon] section: how old the last progress may be before petting stops."""
        self.stall_s = cfg.watchdog_stall_s

    def progress(self) -> None:
        """Called by the pipeline once per processed frame; cheap (one clock read)."""
        self._last_progress = self._clock()

    def seconds_since_progress(self) -> float:
        return self._clock() - self._last_progress

    def tick(self) -> bool:
        """One pet decision: send WATCHDOG=1 if the pipeline progressed recently and nothing is down."""
        reason = self.refused or self._unhealthy()
        if reason is not None:
            if self.refused is None:
                self.refused = reason
                log.error("watchdog: %s; no more WATCHDOG=1, so systemd restarts the unit", reason)
                self._notifier.status(f"restart needed: {reason}; WATCHDOG=1 stopped")
            return False
        if self.seconds_since_progress() > self.stall_s:
            if not self.stalled:
                self.stalled = True
                self._notifier.status(f"pipeline stalled: no frame for {self.seconds_since_progress():.1f} s")
            return False
        self.stalled = False
        self._notifier.watchdog()
        self.pets += 1
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._last_progress = self._clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lfr-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.tick()
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1.0)
            self._thread = None
