"""Capture threads and the one-slot mailbox per camera between them and the pipeline.

Each camera keeps only its newest frame: a frame the worker has not taken when the next one arrives is
overwritten and counted as skipped. The worker always takes the newest, so when it falls behind it
processes fewer frames per second, never older ones, and telemetry says how many were skipped per camera.

A capture thread handles a camera's own errors (CameraError: reopen with backoff). Anything else (a bug in a
camera source) is the supervisor's (lfr_edge.daemon.supervise): counted, logged once, the camera closed
and opened again; a camera that keeps failing takes its thread down and the unit is restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from lfr_contracts.camera import CameraError, EndOfStream, Frame, FrameSource
from lfr_edge.daemon.supervise import Supervisor, describe

log = logging.getLogger(__name__)


class NewestFrames:
    """One slot per camera holding its newest frame; an older frame still there is overwritten."""

    def __init__(self) -> None:
        self._slots: dict[str, Frame] = {}
        self._cond = threading.Condition()
        self.skipped: Counter[str] = Counter()  # per camera: frames replaced by a newer one before being taken
        self._closed = False

    def put(self, frame: Frame) -> None:
        with self._cond:
            old = self._slots.get(frame.camera)
            if old is not None:
                old.image.fill(0)  # a skipped frame is overwritten, not left for the collector
                self.skipped[frame.camera] += 1
            self._slots[frame.camera] = frame
            self._cond.notify()

    def take(self, timeout: float) -> list[Frame]:
        """The newest frame of every camera that has one (oldest capture first); [] after `timeout` seconds
        or once closed."""
        with self._cond:
            if not self._slots and not self._closed:
                self._cond.wait(timeout)
            frames = sorted(self._slots.values(), key=lambda f: f.timestamp)
            self._slots.clear()
            return frames

    def skipped_counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self.skipped)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for frame in self._slots.values():
                frame.image.fill(0)
            self._slots.clear()
            self._cond.notify_all()


class CaptureThread(threading.Thread):
    """Reads one camera into its mailbox slot; reopens the camera with capped backoff when it fails."""

    def __init__(
        self,
        source: FrameSource,
        mailbox: NewestFrames,
        stop: threading.Event,
        max_backoff_s: float = 5.0,
        stall_after_s: float = 2.0,
        supervisor: Supervisor | None = None,
    ):
        super().__init__(name=f"capture-{source.name}", daemon=True)
        self._supervisor = supervisor or Supervisor()
        self.source = source
        self.mailbox = mailbox
        self.stop_event = stop
        self.max_backoff_s = max_backoff_s
        self.state = "starting"  # starting, streaming, reconnecting, ended, stopped
        self.first_frame = threading.Event()
        self.last_error = ""
        self.stall_after_s = stall_after_s
        self.stalled = False  # streaming, but no frame for stall_after_s (a hung camera: read() blocks)
        self._last_frame_at: float | None = None
        self._stall_lock = threading.Lock()

    def run(self) -> None:
        self._supervisor.supervised(self.name, self._capture, stop=self.stop_event)()
        self._close_quietly()
        if self.stop_event.is_set() and self.state != "ended":
            self.state = "stopped"
        # Otherwise it ended, or is down for good: still "reconnecting" with its last error, a camera fault.

    def _capture(self) -> None:
        """Read frames until stopped or the stream ends; an unexpected error closes the camera and is raised."""
        backoff = 0.2
        opened = False
        while not self.stop_event.is_set():
            try:
                if not opened:
                    self.source.open()
                    opened = True
                frame = self.source.read()
            except EndOfStream as exc:
                self.state, self.last_error = "ended", str(exc)
                log.warning("camera %s: end of stream: %s; no more frames from it", self.source.name, exc)
                break
            except CameraError as exc:
                if self.state != "reconnecting":
                    log.warning("camera %s lost: %s; reconnecting", self.source.name, exc)
                self.state, self.last_error = "reconnecting", str(exc)
                self._close_quietly()
                opened = False
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except Exception as exc:
                self.state, self.last_error = "reconnecting", describe(exc)
                self._close_quietly()
                raise
            if self.state != "streaming":
                log.info("camera %s streaming (%s)", self.source.name, self.source.describe())
            self.state, backoff = "streaming", 0.2
            self._frame_arrived()
            self.first_frame.set()
            self.mailbox.put(frame)

    def check_stall(self, now: float) -> bool:
        """From the main loop: a streaming camera that delivered nothing for stall_after_s is logged once."""
        with self._stall_lock:
            last = self._last_frame_at
            if self.stalled or self.state != "streaming" or last is None or now - last <= self.stall_after_s:
                return self.stalled
            self.stalled = True
        log.warning("camera %s stalled: no frame for %.1f s; waiting for it", self.source.name, now - last)
        return True

    def _frame_arrived(self) -> None:
        now = time.monotonic()
        with self._stall_lock:
            was_stalled, last = self.stalled, self._last_frame_at
            self.stalled, self._last_frame_at = False, now
        if was_stalled and last is not None:
            log.info("camera %s: frames again after %.1f s", self.source.name, now - last)

    def _close_quietly(self) -> None:
        try:
            self.source.close()
        except CameraError as exc:  # closing a broken device must not stop the loop
            log.debug("camera %s close failed: %s", self.source.name, exc)
