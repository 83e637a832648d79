"""The systemd notify client against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from lfr_edge.config import DaemonConfig
from lfr_edge.daemon.notify import Notifier, NotifyError, Watchdog, monotonic_usec, watchdog_timeout_s


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_stopping_arrive_as_key_value_datagrams(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        assert notifier.enabled
        assert notifier.ready(status="fps 25.0, faces 0, watchlist v3")
        assert receive(sock) == {"READY": "1", "STATUS": "fps 25.0, faces 0, watchlist v3"}
        notifier.status("fps 24.8")
        assert receive(sock) == {"STATUS": "fps 24.8"}
        notifier.watchdog()
        assert receive(sock) == {"WATCHDOG": "1"}
        notifier.stopping()
        assert receive(sock) == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_time_it_began(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    before = monotonic_usec()
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        notifier.reloading()
        message = receive(sock)
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= monotonic_usec()


def test_abstract_socket_name_with_at_sign_is_reached() -> None:
    name = f"lfr-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5.0)
    try:
        with closing(Notifier({"NOTIFY_SOCKET": "@" + name})) as notifier:
            notifier.ready()
        assert receive(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert Watchdog.from_env(notifier, stall_s=5.0, env={"WATCHDOG_USEC": "1000000"}) is None


def test_relative_socket_path_is_refused_with_a_message_naming_the_variable() -> None:
    with pytest.raises(NotifyError, match="NOTIFY_SOCKET"):
        Notifier({"NOTIFY_SOCKET": "relative/notify.sock"})


def test_a_newline_in_a_value_is_refused(systemd_socket: tuple[socket.socket, str]) -> None:
    _, path = systemd_socket
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier, pytest.raises(ValueError, match="STATUS"):
        notifier.status("two\nlines")


def test_watchdog_timeout_comes_from_watchdog_usec_for_this_process_only() -> None:
    assert watchdog_timeout_s({}) is None
    assert watchdog_timeout_s({"WATCHDOG_USEC": "20000000"}) == 20.0
    me = str(os.getpid())
    assert watchdog_timeout_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": me}) == 20.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    with pytest.raises(NotifyError, match="WATCHDOG_USEC"):
        watchdog_timeout_s({"WATCHDOG_USEC": "soon"})
    with pytest.raises(NotifyError, match="WATCHDOG_USEC"):
        watchdog_timeout_s({"WATCHDOG_USEC": "0"})


def test_watchdog_from_env_pets_at_half_the_timeout(systemd_socket: tuple[socket.socket, str]) -> None:
    _, path = systemd_socket
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        dog = Watchdog.from_env(notifier, stall_s=10.0, env={"WATCHDOG_USEC": "30000000"})
        assert dog is not None
        assert dog.interval_s == 15.0


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_watchdog_pets_while_progressing_and_stops_when_the_pipeline_hangs(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    clock = ManualClock()
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        dog = Watchdog(notifier, interval_s=0.02, stall_s=5.0, clock=clock)
        dog.start()
        try:
            for _ in range(3):  # regular pets while frames flow
                dog.progress()
                assert receive(sock) == {"WATCHDOG": "1"}
            clock.advance(6.0)  # the pipeline hangs: no progress for longer than stall_s
            message = receive(sock)
            while message == {"WATCHDOG": "1"}:  # a pet already in flight before the hang
                message = receive(sock)
            assert message["STATUS"].startswith("pipeline stalled")
            sock.settimeout(0.2)  # ten pet intervals: nothing more may arrive
            with pytest.raises(TimeoutError):
                sock.recv(4096)
            assert dog.stalled
            dog.progress()  # frames flow again: petting resumes
            sock.settimeout(5.0)
            assert receive(sock) == {"WATCHDOG": "1"}
        finally:
            dog.stop()


def test_watchdog_tick_decides_from_the_age_of_the_last_progress(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    clock = ManualClock()
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        dog = Watchdog(notifier, interval_s=1.0, stall_s=2.0, clock=clock)
        dog.progress()
        clock.advance(1.9)
        assert dog.tick() is True
        assert receive(sock) == {"WATCHDOG": "1"}
        clock.advance(0.2)
        assert dog.tick() is False
        assert dog.pets == 1


def test_a_reloaded_stall_limit_decides_the_next_pet(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    clock = ManualClock()
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        dog = Watchdog(notifier, interval_s=1.0, stall_s=2.0, clock=clock)
        dog.progress()
        clock.advance(3.0)
        assert dog.tick() is False
        assert receive(sock)["STATUS"].startswith("pipeline stalled")
        dog.apply(DaemonConfig(watchdog_stall_s=4.0))
        assert dog.tick() is True
        assert receive(sock) == {"WATCHDOG": "1"}


def test_config_refuses_a_watchdog_stall_that_is_not_positive() -> None:
    from lfr_contracts.errors import ConfigError
    from lfr_edge.config import parse_config

    assert parse_config({"daemon": {"watchdog_stall_s": 12}}).daemon.watchdog_stall_s == 12.0
    with pytest.raises(ConfigError, match=r"daemon\.watchdog_stall_s"):
        parse_config({"daemon": {"watchdog_stall_s": 0}})


def test_a_receiver_that_stops_reading_never_blocks_the_sender(systemd_socket: tuple[socket.socket, str]) -> None:
    _, path = systemd_socket  # bound, never read: its buffer fills up
    notifier = Notifier({"NOTIFY_SOCKET": path})
    results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert results[0] is True and results[-1] is False
