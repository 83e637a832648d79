"""The wall clock's trust and steps (the daemon-level step test runs the unit under libfaketime)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lfr_edge.daemon.clock import WallClock, kernel_says_synchronised, time_service_running


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = 1_000_000.0, 50.0
        self.synced: bool | None = False


def make(clocks: Clocks, wait_s: float) -> WallClock:
    return WallClock(wait_s, lambda: clocks.synced, lambda: clocks.wall, lambda: clocks.mono)


def test_an_unsynchronised_clock_is_trusted_once_synchronised_or_after_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocks = Clocks()
    clock = make(clocks, wait_s=120)
    assert not clock.trusted()
    clocks.mono += 119
    assert not clock.trusted()  # still within the wait
    clocks.synced = True
    assert clock.trusted()
    clocks = Clocks()
    clock = make(clocks, wait_s=120)
    clocks.mono += 121
    with caplog.at_level(logging.WARNING):
        assert clock.trusted()
    assert "not synchronised after waiting" in caplog.text


def test_no_wait_or_no_answer_from_the_kernel_means_the_clock_is_taken_as_it_is() -> None:
    assert make(Clocks(), wait_s=0).trusted()
    clocks = Clocks()
    clocks.synced = None
    assert make(clocks, wait_s=120).trusted()


def test_a_step_is_reported_once_and_slow_running_is_not() -> None:
    clocks = Clocks()
    clock = make(clocks, wait_s=0)
    clocks.wall += 10.0
    clocks.mono += 10.0
    assert clock.step() == 0.0
    clocks.wall += 3 * 3600
    assert clock.step() == pytest.approx(3 * 3600)
    assert clock.step() == 0.0
    clocks.wall -= 3600
    assert clock.step() == pytest.approx(-3600)


def test_the_kernel_is_asked_only_where_a_time_service_runs(tmp_path: Path) -> None:
    assert kernel_says_synchronised() in (True, False, None)
    (tmp_path / "17").mkdir()
    (tmp_path / "17" / "comm").write_text("bash\n")
    assert not time_service_running(tmp_path)
    (tmp_path / "18").mkdir()
    (tmp_path / "18" / "comm").write_text("chronyd\n")
    assert time_service_running(tmp_path)
