"""Progress for long loops (enrolment, embedding): a tqdm bar on a terminal, a plain line every few seconds
elsewhere. A bar written to a file, a CI log or journald is thousands of carriage-return updates on one line;
a line every LINE_EVERY_S seconds, and one at the end, reads as a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Protocol

from tqdm import tqdm

LINE_EVERY_S = 5.0


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def write(self, message: str) -> None: ...

    def close(self) -> None: ...


class LineProgress:
    """`desc: done/total unit (pct)`, at most one line per `every_s` seconds, and a last line on close."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        out: IO[str],
        every_s: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.out = total, desc, unit, out
        self.every_s, self.clock = every_s, clock
        self.done = 0
        self._last = clock()
        self._closed = False

    def _line(self) -> None:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}s{pct}", file=self.out, flush=True)
        self._last = self.clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - self._last >= self.every_s:
            self._line()

    def write(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()


class _Bar:
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def write(self, message: str) -> None:
        tqdm.write(message, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()


class _Silent:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def update(self, n: int = 1) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str, *, enabled: bool = True, out: IO[str] | None = None) -> Progress:
    """A bar on a terminal, lines elsewhere; nothing when not `enabled` (messages still go out)."""
    out = out or sys.stderr
    if not enabled:
        return _Silent(out)
    if out.isatty():
        return _Bar(tqdm(total=total, desc=desc, unit=unit, file=out))
    return LineProgress(total, desc, unit, out)
