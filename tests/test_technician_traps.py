"""The smaller traps a technician met following the documents (issue 14, item 7), each through the real tool:
a message that says what is wrong and what to do, instead of a silent guess or a misleading word."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts.alerts import Alert, encode_alert
from lfr_contracts.audit_events import Started
from lfr_contracts.camera import CameraConfig
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_edge.audit.log import AuditLog
from lfr_edge.camera.replay import ReplaySource
from lfr_edge.daemon.frames import CaptureThread, NewestFrames
from lfr_hwsim.broker import MosquittoBroker
from lfr_provision.cli import main as provision_main
from lfr_provision.selftest import Verdict
from lfr_tools.audit.cli import main as audit_main
from lfr_tools.command_centre.cli import SUBJECTS_COLUMNS, CliError, read_subjects
from lfr_tools.command_centre.cli import main as watchlist_main
from lfr_tools.handset.cli import HandsetClient, HandsetKeys
from mqtt_fixtures import Collector

REPO = Path(__file__).resolve().parents[1]


def unit_key(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    keyfiles.save_public_key(path, X25519PrivateKey.generate().public_key())
    return path


def build_args(tmp_path: Path, *, unit_key_spec: str, valid_until: str) -> list[str]:
    if not (tmp_path / "cc" / "command-centre.key").exists():
        assert watchlist_main(["keygen", "--out", str(tmp_path / "cc")]) == 0
    if not (tmp_path / "subjects.csv").exists():
        (tmp_path / "subjects.csv").write_text("subject_id,category,photos,reference\nS-1,wanted,a.jpg,ref\n")
    return [
        "build", "--photos", str(tmp_path), "--subjects", str(tmp_path / "subjects.csv"), "--deployment", "D",
        "--valid-from", "2025-01-01T00:00Z", "--valid-until", valid_until, "--threshold", "0.5",
        "--sign-key", str(tmp_path / "cc" / "command-centre.key"), "--unit-key", unit_key_spec,
        "--out", str(tmp_path / "van-07.lfrwl"),
    ]  # fmt: skip


def test_a_units_own_key_file_without_id_is_refused_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every unit's key file is called unit-x25519.pub: its name cannot say which unit it is."""
    key = unit_key(tmp_path, "unit-x25519.pub")
    assert watchlist_main(build_args(tmp_path, unit_key_spec=str(key), valid_until="2099-01-01T00:00Z")) == 2
    err = capsys.readouterr().err
    assert "unit-x25519.pub is the name of every unit's key" in err and f"--unit-key van-07={key}" in err
    assert not (tmp_path / "van-07.lfrwl").exists() and not (tmp_path / "unit-x25519.lfrwl").exists()


def test_a_validity_window_that_already_ended_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = unit_key(tmp_path, "unit-x25519.pub")
    args = build_args(tmp_path, unit_key_spec=f"van-07={key}", valid_until="2025-06-01T00:00Z")
    assert watchlist_main(args) == 2
    err = capsys.readouterr().err
    assert "--valid-until 2025-06-01T00:00:00Z has already passed" in err and "refuse the bundle as expired" in err
    assert not (tmp_path / "van-07.lfrwl").exists()


def test_board_setup_names_the_verdicts_the_self_test_prints() -> None:
    text = (REPO / "docs" / "board-setup.md").read_text()
    section = text[text.index("## 7.") : text.index("## 8.")]
    assert "`ok`" not in section
    verdicts = set(Verdict.__args__)  # type: ignore[attr-defined]  # a Literal's values
    named = set(re.findall(r"`(PASS|WARN|FAIL|SKIP|GO|NO-GO)`", section))
    assert verdicts <= named, f"board-setup.md section 7 names {sorted(named)}, the self-test prints {sorted(verdicts)}"


def test_handsets_list_on_a_root_with_no_unit_says_the_folder_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision_main(["handsets", "list", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/etc/lfr-edge/handsets does not exist" in err and "0 handset" not in err
    assert provision_main(["init", "--unit-id", "van-07", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    assert provision_main(["handsets", "list", "--root", str(tmp_path)]) == 0
    assert "0 handset(s) paired with this unit" in capsys.readouterr().out


def test_verifying_another_units_log_says_whose_log_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, "van-08")
    log.append(Started(version="test", cameras=("cam0",)))
    log.close()
    assert audit_main(["verify", str(path), "--unit-id", "van-07"]) != 0
    err = capsys.readouterr().err
    assert "this log belongs to unit van-08, not to van-07" in err and "altered" not in err
    # an edited first line is still reported as altered, not as someone else's log
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace('"van-08"', '"van-07"'), *lines[1:]]) + "\n")
    assert audit_main(["verify", str(path), "--unit-id", "van-07"]) != 0
    assert "altered" in capsys.readouterr().err


@pytest.mark.broker
def test_an_unpaired_handsets_refusal_is_logged_once_with_what_to_do(
    broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unit_signer = Ed25519PrivateKey.generate()
    phone = HandsetKeys.generate(tmp_path / "phone", "handset-1")  # re-keyed: the unit seals to its old key
    tls = broker.client("handset-1")
    client = HandsetClient(
        phone, "unit-a", unit_signer.public_key(), broker.host, broker.port,
        (tls.ca_file, tls.cert_file, tls.key_file), broker.prefix,
    )  # fmt: skip
    unit = Collector(broker, "unit-a")
    client.start()
    try:
        alert = Alert("a-1", "unit-a", "cam0", time.time(), 0.7, 0.5, "S-1", "wanted", "", b"\xff\xd8", b"\xff\xd8")
        old_key = X25519PrivateKey.generate().public_key()
        with caplog.at_level(logging.WARNING, logger="lfr_tools.handset.cli"):
            unit.publish(Topics.for_unit(broker.prefix, "unit-a").alerts, encode_alert(alert, unit_signer, [old_key]))
            client.refused.get(timeout=10)
    finally:
        client.stop()
        unit.close()
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line.count("alert refused") == 1
    assert "not paired with unit unit-a" in line and "lfr-provision pair-handset" in line


@pytest.mark.broker
def test_close_to_an_offline_unit_says_it_is_retained_and_applies_on_connect(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert watchlist_main(["keygen", "--out", str(tmp_path / "cc")]) == 0
    tls = broker.client("command-centre")
    code = watchlist_main([
        "--broker", f"{broker.host}:{broker.port}", "--ca", str(tls.ca_file), "--cert", str(tls.cert_file),
        "--key", str(tls.key_file),  # the connection options before the command
        "close", "--deployment", "D", "--unit", "unit-a", "--sign-key", str(tmp_path / "cc" / "command-centre.key"),
        "--wait-ack", "--timeout", "1",
    ])  # fmt: skip
    assert code == 1
    out = capsys.readouterr()
    assert "no answer from unit unit-a within 1 s" in out.err
    assert "stays retained on lfr/v1/units/unit-a/watchlist" in out.err and "when it next connects" in out.err
    watcher = Collector(broker, "unit-a")  # the unit, connecting later, finds the close waiting
    try:
        assert watcher.subscribe("lfr/v1/units/unit-a/watchlist") == [1]
        assert watcher.next(timeout=10).retain
    finally:
        watcher.close()


def test_a_replay_at_the_end_of_its_file_ends_the_stream_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    source = ReplaySource(CameraConfig(name="cam-r", source="replay", uri=str(tmp_path), fps=100.0))
    frames, stop = NewestFrames(), threading.Event()
    capture = CaptureThread(source, frames, stop)
    with caplog.at_level(logging.WARNING, logger="lfr_edge.daemon.frames"):
        capture.start()
        capture.join(10)
    assert not capture.is_alive() and capture.state == "ended"
    assert [f.index for f in frames.take(timeout=0)] == [2] and frames.skipped["cam-r"] == 2  # the newest kept
    [line] = [r.getMessage() for r in caplog.records if "end of stream" in r.getMessage()]
    assert "end of the recording after 3 frame(s)" in line and "options.loop = false" in line
    looping = ReplaySource(CameraConfig(name="cam-l", source="replay", uri=str(tmp_path), fps=100.0,
                                        options={"loop": True, "realtime": False}))  # fmt: skip
    looping.open()
    assert [looping.read().index for _ in range(7)] == list(range(7))  # past the end: from the start again
    looping.close()


def test_progress_on_a_non_terminal_is_a_line_every_few_seconds(tmp_path: Path) -> None:
    import io

    from lfr_tools.progress import LINE_EVERY_S, LineProgress, progress

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(240, "enrolling", "photo", out, clock=lambda: now[0])
    for _ in range(240):
        now[0] += 0.125  # 30 s of work, a photo every 1/8 s
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == int(30 / LINE_EVERY_S) + 1 and lines[-1] == "enrolling: 240/240 photos (100%)"
    assert isinstance(progress(10, "x", "y", out=io.StringIO()), LineProgress)  # not a terminal: lines


@pytest.mark.slow
@pytest.mark.faces
def test_lfr_watchlist_build_into_a_log_writes_lines_not_carriage_returns(tmp_path: Path, faces: Path) -> None:
    import subprocess
    import sys

    photos = sorted((faces / "wild").glob("72*/*.jpg"))[:24]
    rows = [f"S-{i},wanted,{p.parent.name}/{p.name},ref" for i, p in enumerate(photos)]
    (tmp_path / "subjects.csv").write_text("subject_id,category,photos,reference\n" + "\n".join(rows) + "\n")
    key = unit_key(tmp_path, "unit-x25519.pub")
    args = build_args(tmp_path, unit_key_spec=f"van-07={key}", valid_until="2099-01-01T00:00Z")
    args[args.index("--photos") + 1] = str(faces / "wild")
    args[args.index("--subjects") + 1] = str(tmp_path / "subjects.csv")
    done = subprocess.run(
        [sys.executable, "-m", "lfr_tools.command_centre.cli", *args, "--skip-unusable"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert "enrolling: 24/24 photos (100%)" in done.stderr.splitlines()


def test_the_subjects_csv_is_documented_and_build_help_points_there(tmp_path: Path) -> None:
    """docs/watchlist.md's column table, `lfr-watchlist build --help` and the columns the reader needs are the
    same four; the doc's example is a file `build` reads; the doc is linked from the README."""
    doc = (REPO / "docs" / "watchlist.md").read_text()
    table = re.findall(r"^\| `(\w+)` \|", doc, flags=re.MULTILINE)
    assert tuple(table) == SUBJECTS_COLUMNS
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "lfr-watchlist"), "build", "--help"], capture_output=True, text=True, check=True
    )
    assert "docs/watchlist.md" in done.stdout
    for column in SUBJECTS_COLUMNS:
        assert re.search(rf"^\s+{column}\s", done.stdout, flags=re.MULTILINE), f"{column} is not in build --help"
    example = re.search(r"```csv\n(.*?)```", doc, flags=re.DOTALL)
    assert example is not None
    (tmp_path / "subjects.csv").write_text(example[1])
    rows = read_subjects(tmp_path / "subjects.csv")
    assert [(r.subject_id, r.category, r.photos) for r in rows] == [
        ("S-0001", "wanted", ["s0001-a.jpg", "s0001-b.jpg"]),
        ("S-0002", "missing person", ["s0002.png"]),
    ]
    (tmp_path / "bad.csv").write_text("subject_id,photos\nS-1,a.jpg\n")
    with pytest.raises(CliError, match=r"missing column\(s\) category, reference"):
        read_subjects(tmp_path / "bad.csv")
    assert "`docs/watchlist.md`" in (REPO / "README.md").read_text()
