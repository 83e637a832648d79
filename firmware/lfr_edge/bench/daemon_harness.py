"""Running the real daemon (`lfr-edge run --config FILE`) as a subprocess for the daemon-level parts.

Throughput, end-to-end latency and memory are measured on the daemon itself, never on a bench-only
path. Until the daemon's `run` command is in the checkout, those parts report "not measured" and why.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from lfr_edge.bench.procstat import cpu_seconds, memory_mb


def daemon_missing() -> str | None:
    """Why the daemon cannot be benchmarked in this checkout, or None when `lfr-edge run` exists."""
    from lfr_edge.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        choices = getattr(action, "choices", None) or {}
        if "run" in choices:
            return None
    return "the daemon (`lfr-edge run`) is not in this checkout yet"


class DaemonProcess:
    """`lfr-edge run --config FILE` in a child process; RSS and CPU read from /proc."""

    def __init__(self, config: Path, log_file: Path) -> None:
        self.config = config
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_file.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lfr_edge.cli", "--config", str(self.config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the daemon is not started")
        return self.proc.pid

    def memory_mb(self) -> dict[str, float]:
        return memory_mb(self.pid)

    def cpu_percent(self, seconds: float) -> float:
        """CPU use over `seconds` (100 = one core busy)."""
        c0, t0 = cpu_seconds(self.pid), time.monotonic()
        time.sleep(seconds)  # sampling an interval: there is no event to wait for
        return 100.0 * (cpu_seconds(self.pid) - c0) / (time.monotonic() - t0)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
