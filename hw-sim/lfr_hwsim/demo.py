"""`make demo`: a simulated deployment, end to end, in about a minute.

A broker with TLS and ACLs comes up, a unit is provisioned into a temporary root, a handset is paired,
the command centre publishes a watchlist of N identities, and the real `lfr-edge run` watches a simulated
street where some of the passers-by are on the watchlist. At the end the ground truth is compared with
the alerts the handset received, and the report says what was found, missed and falsely raised, how fast,
and that nothing of the non-matches was kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfr_contracts.telemetry import Telemetry, decode_telemetry
from lfr_edge.config import Config
from lfr_edge.vision.pipeline import build_pipeline
from lfr_hwsim.broker import COMMAND_CENTRE, Collector
from lfr_hwsim.facelocate import default_locator
from lfr_hwsim.faults import Fault, FaultInjector, FaultScriptError, parse_script
from lfr_hwsim.officer import HandsetAppProcess, open_in_browser
from lfr_hwsim.plan import PlanRequest, ScenePlan, build_plan
from lfr_hwsim.timeline import plot_timeline
from lfr_hwsim.van import STREET_FALSE_ALERTS, SimulatedVan, Subject
from lfr_tools.audit.report import DeploymentReport, deployment_report
from lfr_tools.command_centre.enrol import PipelineEnroller

OFFICER_APP = "officer-app"  # the handset `--handset app` pairs for the officer's screen
MIN_USABLE_FACE_PX = 48  # a walker whose face never gets this wide cannot be expected to be recognised
# Files that may change during a run: logs, sockets, the camera's fault-control file, the broker's
# session store (sealed alerts queued for an offline handset: matches only) and the unit's lifecycle
# record (deployment ids, versions and counts only; tests/test_lifecycle_record.py pins its fields).
PRIVATE_OK = (
    "audit.jsonl",
    "lifecycle.json",
    "daemon.log",
    "mosquitto.log",
    ".sock",
    "truth.jsonl",
    "camera-control.json",
    "mosquitto.db",
)


@dataclass
class Observed:
    """What the demo saw from outside the unit: telemetry, alerts at the handset, beacon states."""

    telemetry: list[Telemetry] = field(default_factory=list)
    telemetry_at: list[float] = field(default_factory=list)  # monotonic time each telemetry message arrived
    started: float = 0.0  # monotonic time the unit said READY: the report's and the plot's time zero
    alerts: list[dict[str, Any]] = field(default_factory=list)
    beacon_states: list[tuple[float, str]] = field(default_factory=list)
    faults_announced: int = 0


def usable_watchlisted(plan: ScenePlan, duration_s: float) -> dict[str, tuple[float, float]]:
    """Watchlisted identities that fully walk past within the run at a usable size: their time window."""
    windows = {}
    for walker in plan.walkers:
        if walker.identity not in plan.watchlisted:
            continue
        end = walker.t_enter + walker.duration_s
        if end <= duration_s and max(walker.face_w_start, walker.face_w_end) >= MIN_USABLE_FACE_PX:
            windows[walker.identity] = (walker.t_enter, end)
    return windows


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder for the van; kept for inspection when LFR_DEMO_KEEP is set."""
    path = Path(tempfile.mkdtemp(prefix="lfr-demo-"))
    try:
        yield path
    finally:
        if os.environ.get("LFR_DEMO_KEEP"):
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple[float, int]]:
    return {str(p): (p.stat().st_mtime, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_demo(
    faces: Path,
    duration_s: float,
    out: Path,
    watchlisted: int = 4,
    seed: int = 7,
    fps: float = 25.0,
    faults: Sequence[Fault] | str = (),
    handset: str = "listen",
) -> dict[str, Any]:
    """`handset="app"` adds the officer's screen (`lfr-handset app`, a second paired handset) and keeps the
    unit running after the scene until Ctrl-C, so that the alerts can be decided on it."""
    script = parse_script(faults) if isinstance(faults, str) else tuple(faults)
    out.mkdir(parents=True, exist_ok=True)
    with scratch_dir() as work:
        say(f"planning a {duration_s:.0f} s street scene from {faces / 'wild'} ...")
        plan = build_plan(
            PlanRequest(faces / "wild", seed=seed, duration_s=duration_s, fps=fps, watchlisted=watchlisted, crowd=3.0),
            default_locator(),
        )
        plan_file = work / "plan.json"
        plan.save(plan_file)
        handsets = ("handset-1", OFFICER_APP) if handset == "app" else ("handset-1",)
        with SimulatedVan(work / "van", unit_id="van-demo", handset_ids=handsets) as van:
            say(f"broker up on 127.0.0.1:{van.broker.port} (mutual TLS, ACLs); unit van-demo provisioned")
            pipeline = build_pipeline(Config())
            subjects = [
                Subject(identity, "wanted", tuple(plan.enrolment_photos(identity)[:3]), f"demo subject {identity}")
                for identity in plan.watchlisted
            ]
            say(f"command centre: enrolling {len(subjects)} watchlisted identities with {pipeline.model_id}")
            bundle = van.build_watchlist(subjects, PipelineEnroller(pipeline), threshold=STREET_FALSE_ALERTS)
            if any(f.kind == "watchlist-replay" for f in script):
                bundle = van.reissue_watchlist()  # the first version is the one a replay sends again
            van.publish_watchlist(bundle, wait_ack_s=None)
            camera = {
                "name": "cam0",
                "source": "simulator",
                "width": plan.width,
                "height": plan.height,
                "fps": plan.fps,
                "options": {"plan_file": str(plan_file), "realtime": True}
                | ({"control_file": str(van.camera_control_file)} if script else {}),
            }
            config = van.write_config([camera], daemon={"telemetry_interval_s": 1.0})
            phone = van.handset()
            screen = officers_screen(van) if handset == "app" else None
            observed = Observed()
            listener = TelemetryListener(van, observed)
            before = snapshot(work)
            daemon = van.start_daemon(config)
            daemon.wait_for("READY", timeout=120)
            started = observed.started = time.monotonic()
            injector = FaultInjector(van, script, handset=phone).start() if script else None
            if script:
                say("faults scheduled: " + ", ".join(str(f) for f in script))
            last_printed = [-10.0]
            say("unit READY; the street scene is running (Ctrl-C stops early)\n")
            stopped_early = False
            try:
                while (elapsed := time.monotonic() - started) < duration_s:
                    drain_alerts(phone, observed, started)
                    if van.beacon is not None:
                        pattern = van.beacon.state.pattern.name.lower()
                        if not observed.beacon_states or observed.beacon_states[-1][1] != pattern:
                            observed.beacon_states.append((elapsed, pattern))
                    progress(elapsed, duration_s, observed, last_printed)
                    if injector is not None:
                        announce_faults(injector, observed)
                    time.sleep(0.25)
            except KeyboardInterrupt:
                stopped_early = True
                say("\nstopped early")
            if screen is not None:
                linger(screen, stopped_early, phone, observed, started)
            if injector is not None:
                injector.stop()
                announce_faults(injector, observed)
            code = daemon.terminate(timeout=10)
            drain_alerts(phone, observed, started)
            listener.stop()
            if screen is not None:
                screen.stop()
            after = snapshot(work)
            written = [p for p, meta in after.items() if before.get(p) != meta and not p.endswith(PRIVATE_OK)]
            audit = deployment_report(van.paths.state / "audit.jsonl")
        report = make_report(plan, duration_s, observed, written, audit, code)
        report["faults"] = injector.report() if injector is not None else []
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_timeline(report, out / "timeline.png")
    print_report(report, out)
    print(f"\nthe unit's deployment report (lfr-audit report):\n{audit.text()}")
    return report


def officers_screen(van: SimulatedVan) -> HandsetAppProcess:
    """`lfr-handset app` for the demo's second handset; its URL printed (and opened where there is a display)."""
    screen = HandsetAppProcess(van, OFFICER_APP, "--clear-decided-after", "120")
    say(f"\nthe officer's screen (lfr-handset app, handset {OFFICER_APP}): open this in a browser on this machine\n")
    say(f"    {screen.url}\n")
    open_in_browser(screen.url)
    return screen


def linger(screen: HandsetAppProcess, stopped_early: bool, phone: Any, observed: Observed, started: float) -> None:
    """After the scene the unit keeps running, so that the officer can decide on the screen, until Ctrl-C."""
    if stopped_early:
        return
    say(f"\nthe scene has ended; the unit keeps running: decide on {screen.url}\nCtrl-C ends the demo")
    try:
        while screen.proc.poll() is None:
            drain_alerts(phone, observed, started)
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("")


class TelemetryListener:
    """Subscribes as the command centre to the unit's telemetry."""

    def __init__(self, van: SimulatedVan, observed: Observed) -> None:
        self.collector = Collector(van.broker, COMMAND_CENTRE)
        self.collector.subscribe(van.topics.telemetry)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(observed,), daemon=True)
        self._thread.start()

    def _run(self, observed: Observed) -> None:
        while not self._stop.is_set():
            try:
                message = self.collector.next(timeout=0.5)
            except queue.Empty:
                continue
            telemetry = decode_telemetry(message.payload)
            observed.telemetry_at.append(time.monotonic())
            observed.telemetry.append(telemetry)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.collector.close()


def drain_alerts(phone: Any, observed: Observed, started: float) -> None:
    while True:
        try:
            item = phone.alerts.get_nowait()
        except queue.Empty:
            return
        alert = item.alert
        observed.alerts.append(
            {
                "alert_id": alert.alert_id,
                "subject_id": alert.subject_id,
                "camera": alert.camera,
                "score": alert.score,
                "at_s": round(time.monotonic() - started, 2),
                "latency_ms": round(item.age_ms, 1),
            }
        )
        say(f"\n  ALERT at the handset: subject {alert.subject_id}, score {alert.score:.2f}, {item.age_ms:.0f} ms")


def announce_faults(injector: FaultInjector, observed: Observed) -> None:
    """Print each fault action once, as it happens."""
    events = injector.events
    for event in events[observed.faults_announced :]:
        say(f"\n  FAULT {event.action} at {event.at_s:.1f} s: {event.kind}: {event.detail}")
    observed.faults_announced = len(events)


def progress(elapsed: float, duration: float, observed: Observed, last_printed: list[float]) -> None:
    """One status line: rewritten in place on a terminal, a new line every 5 s in a log."""
    tty = sys.stdout.isatty()
    if elapsed - last_printed[0] < (1.0 if tty else 5.0):
        return
    last_printed[0] = elapsed
    t = observed.telemetry[-1] if observed.telemetry else None
    fps, frames, faces, tracks = (t.fps, t.frames, t.faces_seen, t.tracks_started) if t else (0.0, 0, 0, 0)
    beacon = observed.beacon_states[-1][1] if observed.beacon_states else "-"
    line = (
        f"\r[{elapsed:5.1f}/{duration:.0f} s] fps {fps:5.1f} | frames {frames:5d} | "
        f"faces {faces:5d} | tracks {tracks:4d} | alerts {len(observed.alerts):2d} | beacon {beacon:<6}"
    )
    sys.stdout.write(line if tty else line.lstrip("\r") + "\n")
    sys.stdout.flush()


def make_report(
    plan: ScenePlan,
    duration_s: float,
    observed: Observed,
    written: list[str],
    audit: DeploymentReport,
    exit_code: int,
) -> dict[str, Any]:
    windows = usable_watchlisted(plan, duration_s)
    alerted: dict[str, int] = {}
    false_alerts = 0
    for alert in observed.alerts:
        window = windows.get(alert["subject_id"])
        on_watchlist = alert["subject_id"] in plan.watchlisted
        if on_watchlist and (window is None or window[0] - 2 <= alert["at_s"] <= window[1] + 5):
            alerted[alert["subject_id"]] = alerted.get(alert["subject_id"], 0) + 1
        else:
            false_alerts += 1
    true_alerts = sum(1 for identity in alerted if identity in windows)
    duplicates = sum(n - 1 for n in alerted.values())
    last = observed.telemetry[-1] if observed.telemetry else None
    latencies = [a["latency_ms"] for a in observed.alerts]
    return {
        "duration_s": duration_s,
        "watchlist_size": len(plan.watchlisted),
        "passers_by": len(plan.walkers),
        "watchlisted_passed": len(windows),
        "true_alerts": true_alerts,
        "false_alerts": false_alerts + duplicates,
        "missed": len(windows) - true_alerts,
        "frames": last.frames if last else 0,
        "fps": round(statistics.median([t.fps for t in observed.telemetry[1:]] or [0.0]), 2),
        "dropped_frames": last.dropped_total if last else 0,
        "faces_seen": last.faces_seen if last else 0,
        "faces_rejected_by_quality": last.faces_rejected if last else {},
        "tracks_discarded_unmatched": last.tracks_ended_unmatched if last else 0,
        "stage_ms_median": last.stage_ms if last else {},
        "e2e_latency_ms": {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "n": len(latencies),
        },
        "alerts": observed.alerts,
        "timeline": [
            {"t_s": round(at - observed.started, 2), "fps": t.fps, "dropped_frames": t.dropped_total}
            for at, t in zip(observed.telemetry_at, observed.telemetry, strict=True)
            if at >= observed.started
        ],
        "beacon_states": observed.beacon_states,
        "non_match_files_written": len(written),
        "files_written": written,
        "audit_events": dict(sorted(audit.events_by_type.items())),
        "deployment_report": audit.as_dict(),
        "daemon_exit_code": exit_code,
        "scene": {"seed": plan.seed, "watchlisted": list(plan.watchlisted), "fps": plan.fps},
    }


def print_report(report: dict[str, Any], out: Path) -> None:
    e2e = report["e2e_latency_ms"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report["stage_ms_median"].items())
    lines = [
        "",
        "",
        "lfr-edge demo report",
        "====================",
        f"watchlist: {report['watchlist_size']} identities; passers-by: {report['passers_by']}",
        f"watchlisted people who passed at a usable size: {report['watchlisted_passed']}",
        f"alerts: {report['true_alerts']} true, {report['false_alerts']} false, {report['missed']} missed",
        f"frames: {report['frames']} at {report['fps']} fps (dropped {report['dropped_frames']})",
        f"faces seen: {report['faces_seen']}; tracks discarded without a match: "
        f"{report['tracks_discarded_unmatched']}; refused by quality: {report['faces_rejected_by_quality']}",
        f"per-stage median ms: {stages}",
        f"end-to-end latency, frame to handset: p50 {fmt(e2e['p50'])} ms, p99 {fmt(e2e['p99'])} ms ({e2e['n']} alerts)",
        f"non-match files written: {report['non_match_files_written']}"
        + (" -- nothing of the non-matches was kept" if report["non_match_files_written"] == 0 else ""),
        f"daemon exit code: {report['daemon_exit_code']}",
        *(
            f"fault {f['action']:<6} at {f['at_s']:5.1f} s: {f['kind']}: {f['detail']}"
            for f in report.get("faults", [])
        ),
        f"written: {out / 'report.json'}; the timeline plot (fps, alerts by subject, roof light, dropped frames, "
        f"with a caption): {out / 'timeline.png'}",
    ]
    print("\n".join(lines))


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def say(text: str) -> None:
    print(text, flush=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a simulated deployment end to end and print a report")
    p.add_argument("--faces", type=Path, required=True, help="face corpus (with wild/<id>/*.jpg)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of street scene (default 60)")
    p.add_argument("--watchlisted", type=int, default=4, help="identities on the watchlist (default 4)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("demo-results"))
    p.add_argument(
        "--handset",
        choices=("listen", "app"),
        default="listen",
        help="app: also serve the officer's screen (lfr-handset app) and keep the unit up after the scene until Ctrl-C",
    )
    p.add_argument(
        "--faults",
        type=_fault_script,
        default=(),
        metavar="SCRIPT",
        help="inject faults: 'TIME:KIND[=DURATION], ...' in seconds after READY, kinds: "
        "broker-restart, camera-stall, camera-disconnect, beacon-unplug, handset-offline, "
        "watchlist-corrupt, watchlist-replay, watchlist-expire (e.g. '8:broker-restart=4, 20:camera-stall=3')",
    )
    p.set_defaults(
        func=lambda a: (
            0 if run_demo(a.faces, a.duration, a.out, a.watchlisted, a.seed, faults=a.faults, handset=a.handset) else 1
        )
    )


def _fault_script(text: str) -> tuple[Fault, ...]:
    try:
        return parse_script(text)
    except FaultScriptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
