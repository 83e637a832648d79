"""The real `lfr-edge run` as its own process: real broker, real models, real photos, pty beacon.

A watchlisted person's photos give exactly one alert at the paired handset and the beacon's alert
pattern; a stranger gives nothing and leaves no file behind; READY, WATCHDOG and a clean SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lfr_contracts import calibration
from lfr_contracts.alerts import MAX_CONTEXT_PX, DecisionKind
from lfr_contracts.audit_events import AlertRaised, OfficerDecision, Stopped, WatchlistApplied, WatchlistWiped
from lfr_contracts.beacon import Pattern
from lfr_contracts.calibration import CALIBRATION_FILE, alert_band
from lfr_contracts.telemetry import Telemetry, decode_telemetry
from lfr_edge.audit.log import Head
from lfr_edge.config import ModelsConfig
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.beacon import LampState
from lfr_hwsim.broker import COMMAND_CENTRE
from lfr_hwsim.van import SimulatedVan, Subject
from lfr_provision.selftest import locked_and_resident
from lfr_tools.audit.report import read_events
from lfr_tools.audit.verify import verify
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.photos.image import decode_image
from mqtt_fixtures import Collector

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WANTED, STRANGER = "7205", "7204"  # identities of ../shared/faces/wild
MODELS = ModelsConfig().dir.expanduser()  # the built models the unit runs by default, calibration.json beside them


def photos(faces: Path, identity: str) -> list[Path]:
    return sorted((faces / "wild" / identity).glob("*.jpg"))


def replay_folder(tmp: Path, name: str, images: list[Path]) -> Path:
    folder = tmp / name
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i:03d}.jpg").symlink_to(image)
    return folder


def camera(folder: Path) -> dict[str, object]:
    return {
        "name": "cam0",
        "source": "replay",
        "uri": str(folder),
        "fps": 8.0,
        "options": {"realtime": True, "loop": True},
    }


@pytest.fixture
def van(tmp_path: Path) -> Iterator[SimulatedVan]:
    with SimulatedVan(tmp_path / "van", unit_id="van-01") as running:
        yield running


def listening_sockets(pid: int) -> list[str]:
    """TCP sockets of `pid` in the LISTEN state, and bound UDP sockets, from /proc (no tools needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            listening = state == "0A" if table.startswith("tcp") else True
            if inode in inodes and listening:
                found.append(f"{table} {local}")
    return found


def files_under(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_watchlisted_person_gives_one_alert_to_the_handset_and_the_beacon(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    wanted = photos(faces, WANTED)
    bundle = van.build_watchlist(
        [Subject("S-7205", "wanted", tuple(wanted[:2]), "ref 1/23")],
        PipelineEnroller(pipeline),
        threshold=0.5,
    )
    van.publish_watchlist(bundle, wait_ack_s=None)  # retained: the unit picks it up when it connects
    frames = replay_folder(tmp_path, "frames", wanted[2:])
    config = van.write_config([camera(frames)], daemon={"telemetry_interval_s": 0.5})
    phone = van.handset()
    status = Collector(van.broker, COMMAND_CENTRE)
    status.subscribe(van.topics.status)
    heads = Collector(van.broker, COMMAND_CENTRE)
    heads.subscribe(van.topics.audit)
    daemon = van.start_daemon(config)
    try:
        ready = daemon.wait_for("READY", timeout=60)
        assert "watchlist" in ready.get("STATUS", "")
        daemon.wait_for("WATCHDOG", timeout=10)
        got = phone.alerts.get(timeout=60)
        assert got.alert.subject_id == "S-7205" and got.alert.category == "wanted"
        assert got.alert.score >= 0.5 and got.alert.live_jpeg[:2] == b"\xff\xd8"
        # The real calibration table's reading of the score, for this list of 1 subject and its 2 photos.
        table = calibration.decode((MODELS / CALIBRATION_FILE).read_bytes())[pipeline.model_id]
        assert got.alert.rate == table.rate(got.alert.score, 1, 2)
        context = decode_image(got.alert.context_jpeg, "context picture")  # head and shoulders, for a match only
        assert max(context.shape[:2]) <= MAX_CONTEXT_PX and context.shape[1] > 112
        assert van.beacon is not None and van.beacon.wait_for(Pattern.ALERT, timeout_s=10)
        phone.decide(got.alert.alert_id, DecisionKind.ENGAGE)
        # The same person keeps walking past (the replay loops): the cooldown keeps it to one prompt.
        with pytest.raises(queue.Empty):
            phone.alerts.get(timeout=3)
        started = time.monotonic()
        assert daemon.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5.0
    finally:
        status.close()
    audit_log = van.paths.state / "audit.jsonl"
    # The retained audit head the unit published last matches the file's last line.
    published = []
    while True:
        try:
            published.append(json.loads(heads.next(timeout=0.5).payload))
        except queue.Empty:
            break
    heads.close()
    assert published and verify(audit_log, expected_head=Head(published[-1]["seq"], published[-1]["hash"])).ok
    events = [type(e) for e in read_events(audit_log)]
    assert events.count(AlertRaised) == 1
    assert OfficerDecision in events and WatchlistApplied in events
    assert events[-1] is Stopped and WatchlistWiped in events  # wiped at shutdown, before the last faces_seen
    assert verify(audit_log).ok
    states = []
    while True:
        try:
            states.append(json.loads(status.next(timeout=0.5).payload)["state"])
        except queue.Empty:
            break
    assert states and states[-1] == "stopped"


def test_a_stranger_gives_no_alert_and_nothing_of_them_is_written(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    wanted = photos(faces, WANTED)
    bundle = van.build_watchlist(
        [Subject("S-7205", "wanted", tuple(wanted[:2]))], PipelineEnroller(pipeline), threshold=0.5
    )
    van.publish_watchlist(bundle, wait_ack_s=None)
    frames = replay_folder(tmp_path, "frames", photos(faces, STRANGER))
    config = van.write_config([camera(frames)], daemon={"telemetry_interval_s": 0.5})
    phone = van.handset()
    spy = Collector(van.broker, COMMAND_CENTRE)
    spy.subscribe(f"{van.broker.prefix}/#")
    before = files_under(tmp_path)
    daemon = van.start_daemon(config)
    try:
        daemon.wait_for("READY", timeout=60)
        # Wait until the unit has looked at every photo of the stranger twice, by its own telemetry.
        deadline = time.monotonic() + 60
        telemetry: Telemetry | None = None
        while time.monotonic() < deadline:
            message = spy.next(timeout=5)
            if message.topic == van.topics.telemetry:
                telemetry = decode_telemetry(message.payload)
                if telemetry.frames >= 2 * len(photos(faces, STRANGER)):
                    break
        assert telemetry is not None and telemetry.faces_embedded > 0
        assert phone.alerts.empty()
        assert listening_sockets(daemon.proc.pid) == []  # DESIGN rule 4: the unit opens no listening socket
        # Nothing of the stranger can be paged out: the unit locked all it holds, or said why it could not.
        locked, resident = locked_and_resident(Path(f"/proc/{daemon.proc.pid}/status"))
        refused = re.search(r"hardening: (not locking memory|mlockall refused)", daemon.log_path.read_text("latin-1"))
        assert (resident > 0 and locked >= resident) or refused, (locked, resident)
        print(f"daemon: VmRSS {resident >> 20} MiB, VmLck {locked >> 20} MiB")
        assert daemon.terminate(timeout=10) == 0
    finally:
        spy.close()
    # Privacy: nothing new on disk but the audit log, the daemon's own log and the broker's files.
    # (lifecycle.json: deployment ids, versions and counts only; tests/test_lifecycle_record.py pins its fields)
    allowed = ("audit.jsonl", "daemon.log", "mosquitto.log", ".sock", "lifecycle.json")
    changed = [p for p, m in files_under(tmp_path).items() if before.get(p) != m and not p.endswith(allowed)]
    assert changed == []
    # ... and nothing published carried pictures or embeddings: only small JSON documents.
    while True:
        try:
            message = spy.next(timeout=0.2)
        except queue.Empty:
            break
        if message.topic == van.topics.watchlist:
            continue  # the command centre's retained bundle
        assert message.topic != van.topics.alerts
        body = json.loads(message.payload)
        assert len(message.payload) < 8192 and "emb" not in json.dumps(body)


def test_kill_9_then_restart_picks_up_the_retained_watchlist(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    wanted = photos(faces, WANTED)
    bundle = van.build_watchlist([Subject("S-1", "wanted", tuple(wanted[:2]))], PipelineEnroller(pipeline), 0.5)
    van.publish_watchlist(bundle, wait_ack_s=None)
    acks = Collector(van.broker, COMMAND_CENTRE)
    acks.subscribe(van.topics.watchlist_ack)
    config = van.write_config([camera(replay_folder(tmp_path, "frames", wanted[2:]))])
    try:
        for _ in range(2):
            daemon = van.start_daemon(config)
            daemon.wait_for("READY", timeout=60)
            ack = json.loads(acks.next_on(van.topics.watchlist_ack, timeout=30).payload)
            assert ack["status"] == "applied" and ack["version"] == van.watchlist_version
            os.kill(daemon.proc.pid, 9)
            daemon.proc.wait(10)
            daemon.close()
    finally:
        acks.close()


def embedding_counts(telemetry: Collector, topic: str, frames_after: int) -> tuple[int, int]:
    """(faces_embedded, faces rejected as too small) from the first telemetry past `frames_after` frames."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = json.loads(telemetry.next_on(topic, timeout=10).payload)
        if body["frames"] > frames_after:
            return body["faces_embedded"], body["faces_rejected"].get("too_small", 0)
    raise AssertionError(f"no telemetry past {frames_after} frames")


def test_sighup_applies_safe_changes_refuses_bad_ones_and_names_what_needs_a_restart(
    van: SimulatedVan, faces: Path, tmp_path: Path
) -> None:
    frames = replay_folder(tmp_path, "frames", photos(faces, STRANGER))
    config = van.write_config([camera(frames)], daemon={"telemetry_interval_s": 0.5})
    telemetry = Collector(van.broker, COMMAND_CENTRE)
    telemetry.subscribe(van.topics.telemetry)
    daemon = van.start_daemon(config)
    original = config.read_text()
    strict = "[match]\ncooldown_s = 5.0\n\n[quality]\nmin_eye_distance_px = 5000.0\n\n[mqtt]"
    try:
        daemon.wait_for("READY", timeout=60)
        assert embedding_counts(telemetry, van.topics.telemetry, 0)[0] > 0
        config.write_text(original.replace("[mqtt]", strict, 1))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("RELOADING", timeout=10)
        daemon.wait_for("READY", timeout=10)
        # The reloaded quality gate decides the next frames: every face is now too small to embed.
        reloaded_at = json.loads(telemetry.next_on(van.topics.telemetry, timeout=10).payload)["frames"]
        embedded, too_small = embedding_counts(telemetry, van.topics.telemetry, reloaded_at + 2)
        later = embedding_counts(telemetry, van.topics.telemetry, reloaded_at + 2 * len(photos(faces, STRANGER)))
        assert later[0] == embedded and later[1] > too_small
        config.write_text(original.replace('name = "cam0"', 'name = "cam1"'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("READY", timeout=10)
        config.write_text(original.replace("[mqtt]", "[match]\ncooldown_s = -1.0\nbogus = 1\n\n[mqtt]", 1))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("READY", timeout=10)
        assert daemon.proc.poll() is None
    finally:
        telemetry.close()
        assert daemon.terminate(timeout=10) == 0
    log = daemon.log_path.read_text()
    assert log.count("config reloaded") == 2
    assert "change only on restart: cameras" in log
    assert "reload refused, keeping the running config" in log and "bogus" in log


def test_a_unit_without_its_calibration_table_says_so_once_and_its_alerts_carry_no_rate(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    """Not a silent fallback: one warning at start naming the file and the fix; the unit scans and alerts, and
    the handset's band says "not calibrated"."""
    models = tmp_path / "models"
    models.mkdir()
    for path in MODELS.iterdir():
        if path.is_file() and path.name != CALIBRATION_FILE:
            (models / path.name).symlink_to(path)
    wanted = photos(faces, WANTED)
    bundle = van.build_watchlist([Subject("S-7205", "wanted", tuple(wanted[:2]))], PipelineEnroller(pipeline), 0.5)
    van.publish_watchlist(bundle, wait_ack_s=None)
    frames = replay_folder(tmp_path, "frames", wanted[2:])
    phone = van.handset()
    daemon = van.start_daemon(van.write_config([camera(frames)], models={"dir": str(models)}))
    daemon.wait_for("READY", timeout=60)
    got = phone.alerts.get(timeout=60)
    assert daemon.terminate(timeout=10) == 0
    assert got.alert.subject_id == "S-7205" and got.alert.rate is None
    assert alert_band(got.alert.score, got.alert.threshold, got.alert.rate).startswith("not calibrated: ")
    warnings = [line for line in daemon.log_path.read_text().splitlines() if "calibration:" in line]
    assert len(warnings) == 1, warnings
    assert f"{models / CALIBRATION_FILE} is missing" in warnings[0] and "`make models`" in warnings[0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_edge.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_daemon_refuses_a_model_whose_hash_is_not_the_manifests(van: SimulatedVan, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(Path("~/.cache/lfr-edge/models").expanduser(), models, ignore=shutil.ignore_patterns("downloads"))
    victim = next(models.glob("sface.onnx"))  # the default embedder
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    config = van.write_config([camera(tmp_path)], models={"dir": str(models)})
    result = run_cli("--config", str(config), "run")
    assert result.returncode == 2
    assert "sface.onnx" in result.stderr and "refusing to load it" in result.stderr


@pytest.mark.parametrize(
    "text, named",
    [
        ("[unit]\nid = 'van-01'\nbogus = 1\n", "unknown key 'bogus'"),
        ("[detect]\nscore_threshold = 2.0\n", "detect.score_threshold"),
        ("[inference]\nbackend = 'cuda-magic'\n", "inference.backend"),
        ("[[cameras]]\nname = 'a'\n[[cameras]]\nname = 'a'\n", "camera names must be unique"),
        ("[[cameras]]\nname = 'a'\n", "cameras[a].source: must name a source"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_daemon_refuses_a_bad_config_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    result = run_cli("--config", str(config), "run")
    assert result.returncode == 2 and named in result.stderr and str(config) in result.stderr


def test_daemon_refuses_a_config_without_cameras(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[unit]\nid = 'van-01'\n")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2 and "at least one [[cameras]]" in result.stderr


def test_daemon_without_its_keys_names_the_missing_file(van: SimulatedVan, tmp_path: Path) -> None:
    config = van.write_config([camera(tmp_path)])
    (van.paths.keys / "unit-ed25519.key").unlink()
    result = run_cli("--config", str(config), "run")
    assert result.returncode == 2 and "unit-ed25519.key" in result.stderr


def test_a_stalled_camera_stops_the_watchdog_and_shows_the_beacons_fault_until_frames_return(
    van: SimulatedVan, faces: Path, tmp_path: Path
) -> None:
    from lfr_hwsim.camera import write_control

    camera = {
        "name": "cam0",
        "source": "simulator",
        "fps": 10.0,
        "options": {"seed": 1, "duration_s": 60.0, "crowd": 1.0, "control_file": str(van.camera_control_file)},
    }
    config = van.write_config([camera], daemon={"watchdog_stall_s": 1.0})
    beacon = van.beacon
    assert beacon is not None
    daemon = van.start_daemon(config)  # WATCHDOG_USEC=2 s: the unit pets every second while it progresses
    try:
        daemon.wait_for("READY", timeout=60)
        daemon.wait_for("WATCHDOG", timeout=5)
        write_control(van.camera_control_file, "stall")  # no frames: the pipeline makes no progress
        stalled = daemon.wait_for("STATUS", timeout=10)
        while "stalled" not in stalled["STATUS"]:
            stalled = daemon.wait_for("STATUS", timeout=10)
        with pytest.raises(TimeoutError):
            daemon.wait_for("WATCHDOG", timeout=3)  # systemd would now restart the service
        assert beacon.wait_until(shown_by_the_unit(Pattern.FAULT), 10)  # the unit's fault, not the beacon's own
        write_control(van.camera_control_file, "ok")
        daemon.wait_for("WATCHDOG", timeout=10)
        assert beacon.wait_for(Pattern.NO_WATCHLIST, 10)  # this unit holds no list: not idle green
        write_control(van.camera_control_file, "disconnect")  # the camera is lost: the unit reconnects
        assert beacon.wait_until(shown_by_the_unit(Pattern.FAULT), 10)
        write_control(van.camera_control_file, "ok")
        assert beacon.wait_for(Pattern.NO_WATCHLIST, 15)
    finally:
        assert daemon.terminate(timeout=10) == 0
    log = daemon.log_path.read_text()
    assert log.count("camera cam0 stalled") == 1 and log.count("camera cam0 lost") == 1


def shown_by_the_unit(pattern: Pattern) -> Callable[[LampState], bool]:
    """The lamps show `pattern` because the unit asked for it (the beacon's own watchdog has not tripped)."""
    return lambda s: s.pattern is pattern and not s.watchdog_tripped


def test_the_listening_socket_check_sees_a_listener() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert any(entry.startswith("tcp ") for entry in listening_sockets(os.getpid()))
