"""`lfr-handset app`: the officer's screen, served to the handset's own browser.

The handset keeps its MQTT session, keys and decryption exactly as `listen` does (`HandsetClient`); this
module adds a loopback-only web server for one browser. Every URL starts with a secret made at launch
(`/<token>/`); anything else, or a Host header that is not this loopback address, gets an empty 403. The
page (served from the package, no outside asset, a strict content-security policy) receives the alerts and
the unit's status as server-sent events and posts decisions, each answered with the unit's answer.

What the screen shows is held in memory only: decided alerts leave it after `--clear-decided-after`
seconds, and everything is cleared when the app stops (the page is told, and wipes itself too).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import logging
import queue
import secrets
import signal
import threading
import time
import webbrowser
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from lfr_contracts.alerts import DECISIONS, DecisionKind
from lfr_contracts.calibration import alert_band
from lfr_contracts.status import UnitStatus
from lfr_tools.handset.client import HandsetClient, OnAlert, OnStatus, ReceivedAlert

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PAGE_FILES = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_POST_BYTES = 1024
SUBSCRIBER_QUEUE = 500  # events waiting for one page; a page that falls this far behind reconnects
KEEPALIVE_S = 10.0


def alert_card(item: ReceivedAlert) -> dict[str, Any]:
    """What the page shows of one alert (pictures as base64 JPEG)."""
    a = item.alert
    return {
        "id": a.alert_id,
        "subject": a.subject_id,
        "category": a.category,
        "reference": a.reference,
        "score": a.score,
        "threshold": a.threshold,
        "band": alert_band(a.score, a.threshold, a.rate),  # from the unit's calibration table, when it has one
        "calibrated": a.rate is not None,
        "camera": a.camera,
        "time": a.time,
        "received_at": item.received_at,
        "decoded_at": item.decoded_at,
        "live": base64.b64encode(a.live_jpeg).decode(),
        "watchlist": base64.b64encode(a.watchlist_jpeg).decode(),
        "context": base64.b64encode(a.context_jpeg).decode(),
        "decision": None,
    }


def status_view(status: UnitStatus, received_at: float) -> dict[str, Any]:
    watchlist = None if status.watchlist is None else status.watchlist.to_json()
    return {
        "state": status.state,
        "time": status.time,
        "seq": status.seq,
        "received_at": received_at,
        "watchlist": watchlist,
        "beacon": status.beacon,
    }


@dataclass
class _Shown:
    card: dict[str, Any]
    decided_at: float | None = None  # monotonic, when the unit accepted a decision on it


class Screen:
    """What every open page shows, and the events that keep them in step. Memory only."""

    def __init__(self, clear_decided_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clear_after = clear_decided_after_s
        self.clock = clock
        self._alerts: OrderedDict[str, _Shown] = OrderedDict()
        self._status: dict[str, Any] | None = None
        self._link: dict[str, Any] = {"connected": False}
        self._subscribers: list[queue.Queue[bytes | None]] = []
        self._lock = threading.Lock()
        self.closed = False

    def add_alert(self, item: ReceivedAlert) -> None:
        card = alert_card(item)
        with self._lock:
            self._alerts[card["id"]] = _Shown(card)
            self._send("alert", card)

    def set_status(self, status: UnitStatus, received_at: float) -> None:
        with self._lock:
            self._status = status_view(status, received_at)
            self._send("status", self._status)

    def set_link(self, connected: bool) -> None:
        """The handset's own connection to the broker: while it is down, the unit's status is not news."""
        with self._lock:
            if self._link["connected"] != connected:
                self._link = {"connected": connected, "since": time.time()}
                self._send("link", self._link)

    def knows(self, alert_id: str) -> bool:
        with self._lock:
            return alert_id in self._alerts

    def set_decision(self, alert_id: str, decision: dict[str, Any]) -> None:
        with self._lock:
            shown = self._alerts.get(alert_id)
            if shown is None:
                return
            shown.card["decision"] = decision
            shown.decided_at = self.clock() if decision["status"] == "accepted" else None
            self._send("decision", {"id": alert_id, **decision})

    def clear_decided(self) -> None:
        """Decided alerts leave the screen `clear_after` seconds after the unit accepted the decision."""
        now = self.clock()
        with self._lock:
            for alert_id, shown in list(self._alerts.items()):
                if shown.decided_at is not None and now - shown.decided_at >= self.clear_after:
                    del self._alerts[alert_id]
                    self._send("remove", {"id": alert_id})

    def subscribe(self) -> queue.Queue[bytes | None]:
        """A new page: its queue starts with everything on the screen now."""
        events: queue.Queue[bytes | None] = queue.Queue(SUBSCRIBER_QUEUE)
        with self._lock:
            snapshot = {
                "alerts": [s.card for s in self._alerts.values()],
                "status": self._status,
                "link": self._link,
                "clear_after_s": self.clear_after,
            }
            events.put(_event("snapshot", snapshot))
            if self.closed:
                events.put(None)
            self._subscribers.append(events)
        return events

    def unsubscribe(self, events: queue.Queue[bytes | None]) -> None:
        with self._lock:
            if events in self._subscribers:
                self._subscribers.remove(events)

    def close(self) -> None:
        """The app stops: every page is told to clear itself, and nothing is held here any more."""
        with self._lock:
            self.closed = True
            self._alerts.clear()
            self._status = None
            self._send("stop", {})
            for events in self._subscribers:
                _put(events, None)

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        message = _event(kind, data)
        for events in list(self._subscribers):
            if not _put(events, message):
                self._subscribers.remove(events)  # too far behind: its stream ends, it reconnects


def _put(events: queue.Queue[bytes | None], message: bytes | None) -> bool:
    try:
        events.put_nowait(message)
    except queue.Full:
        return False
    return True


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class HandsetApp:
    """The web server and the MQTT client around one `Screen`."""

    def __init__(
        self,
        make_client: Callable[[OnAlert, OnStatus], HandsetClient],
        clear_decided_after_s: float = 60.0,
        decision_timeout_s: float = 10.0,
        port: int = 0,
    ) -> None:
        self.screen = Screen(clear_decided_after_s)
        self.client = make_client(self.screen.add_alert, self.screen.set_status)
        self.decision_timeout_s = decision_timeout_s
        self.token = secrets.token_urlsafe(24)
        self.server = ThreadingHTTPServer((LOOPBACK, port), _handler_for(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/{self.token}/"

    def start(self, connect_timeout_s: float = 10.0) -> None:
        self.client.start(connect_timeout_s)
        for name, target in (("handset-app-http", self.server.serve_forever), ("handset-app-tick", self._tick)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.screen.close()
        time.sleep(0.2)  # the open pages get the stop event before their streams end
        self.server.shutdown()
        self.server.server_close()
        self.client.stop()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.screen.set_link(self.client.connected.is_set())
                self.screen.clear_decided()
            except Exception:  # the screen must keep ticking; the fault is in the log
                log.exception("handset app: the screen's clock failed; it goes on")

    def decide(self, alert_id: str, decision: DecisionKind) -> dict[str, Any]:
        """Send the decision and wait for the unit's answer: accepted, refused (with the reason), or none."""
        self.screen.set_decision(alert_id, {"decision": decision.value, "status": "pending"})
        result: dict[str, Any]
        try:
            answer = self.client.decide(alert_id, decision, timeout=self.decision_timeout_s)
        except TimeoutError:
            result = {
                "decision": decision.value,
                "status": "no_answer",
                "reason": f"no answer from the unit within {self.decision_timeout_s:g} s: "
                "the decision may not be recorded, press again (if no decision is ever answered, the broker's "
                "ACL may predate per-handset decision topics: regenerate it with `lfr-provision broker config`)",
            }
        else:
            result = {
                "decision": decision.value,
                "status": answer.status,
                "reason": answer.reason,
                "revision": answer.revision,
                "unit": answer.unit,
            }
        self.screen.set_decision(alert_id, result)
        return result


def _handler_for(app: HandsetApp) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = app

    return Handler


class _Handler(BaseHTTPRequestHandler):
    owner: HandsetApp
    server_version = "lfr-handset"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines carry the secret token: they are not logged."""

    def do_GET(self) -> None:
        leaf = self._leaf()
        if leaf is None:
            return
        if leaf == "events":
            self._events()
        elif leaf in PAGE_FILES:
            name, kind = PAGE_FILES[leaf]
            body = resources.files("lfr_tools.handset").joinpath("page", name).read_bytes()
            self._reply(HTTPStatus.OK, body, f"{kind}; charset=utf-8")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"", "text/plain")

    def do_POST(self) -> None:
        leaf = self._leaf()
        if leaf is None:
            return
        if leaf != "decide":
            self._reply(HTTPStatus.NOT_FOUND, b"", "text/plain")
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            self._forbidden()
            return
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_POST_BYTES:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a decision is 1 to {MAX_POST_BYTES} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            alert_id, decision = body["alert_id"], body["decision"]
        except (ValueError, KeyError, TypeError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "expected {alert_id, decision}"})
            return
        if decision not in DECISIONS or not isinstance(alert_id, str) or not self.owner.screen.knows(alert_id):
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"unknown alert, or a decision not in {DECISIONS}"})
            return
        self._json(HTTPStatus.OK, self.owner.decide(alert_id, DecisionKind(decision)))

    def _leaf(self) -> str | None:
        """What follows `/<token>/`, or None after answering 403 (wrong token, or not our Host)."""
        host = self.headers.get("Host", "")
        port = self.owner.port
        parts = self.path.split("?", 1)[0].split("/", 2)
        if host not in (f"{LOOPBACK}:{port}", f"localhost:{port}") or len(parts) < 3 or parts[0]:
            self._forbidden()
            return None
        if not hmac.compare_digest(parts[1].encode(), self.owner.token.encode()):
            self._forbidden()
            return None
        return parts[2]

    def _forbidden(self) -> None:
        self._reply(HTTPStatus.FORBIDDEN, b"", "text/plain")

    def _headers(self, status: HTTPStatus, kind: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()

    def _reply(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self._headers(status, kind, len(body))
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self._reply(status, json.dumps(data).encode(), "application/json")

    def _events(self) -> None:
        self._headers(HTTPStatus.OK, "text/event-stream", None)
        events = self.owner.screen.subscribe()
        try:
            for message in _drain(events):
                self.wfile.write(message)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        finally:
            self.owner.screen.unsubscribe(events)
        self.close_connection = True


def _drain(events: queue.Queue[bytes | None]) -> Iterator[bytes]:
    """A page's events until the app stops; a comment now and then finds a page that went away."""
    while True:
        try:
            message = events.get(timeout=KEEPALIVE_S)
        except queue.Empty:
            yield b": keep-alive\n\n"
            continue
        if message is None:
            return
        yield message


def run(args: argparse.Namespace, make_client: Callable[[OnAlert, OnStatus], HandsetClient]) -> int:
    """`lfr-handset app`: serve until Ctrl-C (or SIGTERM), then clear the screen and stop."""
    app = HandsetApp(make_client, args.clear_decided_after, args.decision_timeout, args.port)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop clears the screen as Ctrl-C does
    app.start()
    print(f"handset {app.client.keys.handset_id}: the officer's screen for unit {args.unit} is at", flush=True)
    print(f"  {app.url}", flush=True)
    print(
        "  (this machine only; the link holds this launch's secret; Ctrl-C stops it and clears the screen)", flush=True
    )
    if args.open:
        webbrowser.open(app.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
        print("handset app stopped: the screen is cleared", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="loopback port (default: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in this device's browser")
    p.add_argument(
        "--clear-decided-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="decided alerts leave the screen this long after the unit accepted the decision (default 60)",
    )
    p.add_argument(
        "--decision-timeout", type=float, default=10.0, metavar="SECONDS", help="wait this long for the unit's answer"
    )
