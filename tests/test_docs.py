"""The documents' commands, run as written (tests/doc_runner.py): docs/broker.md against the brokers it
configures, and a van rehearsed on a desk (docs/board-setup.md, bench mode) through docs/broker.md and the
README's deployment table, from nothing to an alert on the paired handset. A change to a document that
breaks one of its commands fails here."""

from __future__ import annotations

import getpass
import json
import queue
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from doc_runner import DocShell, LongRunning, section, sh_blocks, table_commands
from lfr_hwsim.broker import free_port, mosquitto_binary
from lfr_hwsim.plan import load_plan
from lfr_provision import pki
from lfr_tools.audit.verify import verify
from lfr_tools.broker_client import QueuedClient, connect_tls
from trial_helpers import write_trial_watchlist

REPO = Path(__file__).resolve().parents[1]
README, BROKER_MD, BOARD_SETUP = REPO / "README.md", REPO / "docs" / "broker.md", REPO / "docs" / "board-setup.md"
DEPLOYMENT = "## A deployment, step by step"
SERVICE_START = "systemctl enable --now lfr-edge.service"  # the van's step; a desk runs the unit file's command
BENCH_RUN = 'lfr-edge --root "$ROOT" run'
WANTED = "7205"  # an identity of ../shared/faces/wild

LONG_RUNNING = (
    LongRunning(re.compile(r"^mosquitto -c "), re.compile(r"mosquitto version \S+ running")),
    LongRunning(re.compile(r"^lfr-hwsim beacon "), re.compile(r"simulated beacon on")),
    LongRunning(re.compile(r"^lfr-edge .*\brun$"), re.compile(r"ready: ")),
    LongRunning(re.compile(r"\bpair-handset\b"), re.compile(r"Code:"), (re.compile(r"Code:\s+(?P<CODE>\d{4}-\d{4})"),)),
    LongRunning(
        re.compile(r"^lfr-handset listen "),
        re.compile(r"listening for alerts"),
        (re.compile(r"ALERT (?P<ALERT_ID>\S+)"),),
    ),
)


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    try:
        mosquitto_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def test_every_documented_sh_block_is_run_or_marked_as_needing_hardware() -> None:
    """The pages these tests run have no command left out silently: a block either runs or says why not."""
    bench = {b.source for b in section(sh_blocks(BOARD_SETUP), "Rehearsing")}
    for block in sh_blocks(BOARD_SETUP):
        assert (block.source in bench) == block.runnable, f"{block.source}: run it, or mark it as needing the board"
    assert [b.source for b in sh_blocks(BROKER_MD) if not b.runnable] == [
        next(b.source for b in sh_blocks(BROKER_MD) if "systemctl restart mosquitto" in b.lines)
    ]
    commands = table_commands(README, DEPLOYMENT)
    assert commands.index(next(c for c in commands if c.startswith("lfr-watchlist keygen"))) < commands.index(
        next(c for c in commands if c.startswith("lfr-provision init"))
    ), "keygen makes cc/command-centre.pub, which init installs"
    assert SERVICE_START in commands and BENCH_RUN in "\n".join(
        line for b in section(sh_blocks(BOARD_SETUP), "Rehearsing") for line in b.lines
    )
    text = README.read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    assert ".lfrw " not in text and ".lfrw`" not in text  # one bundle extension: .lfrwl


def test_broker_md_as_written(tmp_path: Path) -> None:
    """CA, broker, clients' certificates, a van's broker bridged to the command centre's: every command."""
    values = {
        "CA": str(tmp_path / "ca"),
        "BROKER_DIR": str(tmp_path / "cc-broker"),
        "BROKER_HOST": "localhost",
        "BROKER_PORT": str(free_port()),
        "BROKER_LISTEN": "127.0.0.1",
        "BROKER_DATA": str(tmp_path / "cc-broker-data"),
        "BROKER_USER": getpass.getuser(),
        "VAN_BROKER_DIR": str(tmp_path / "van-broker"),
        "VAN_BROKER_HOST": "localhost",
        "VAN_BROKER_PORT": str(free_port()),
        "VAN_BROKER_DATA": str(tmp_path / "van-broker-data"),
    }
    (tmp_path / "logs").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with DocShell(work, dict(values), LONG_RUNNING, logs=tmp_path / "logs", timeout_s=60) as shell:
        shell.run_blocks(sh_blocks(BROKER_MD))
        assert shell.skipped == [s for s in shell.skipped if "systemctl" in s or "/etc/mosquitto/" in s]
        checked = shell.output_of("lfr-provision broker check")
        assert "connected to localhost" in checked and "as command-centre" in checked
        assert "lfr/v1/units/van-07/bridge (retained): 1" in checked  # the bridge is up, seen from the centre
        # The unit, on the van's broker, reports; the command centre sees it on its own broker.
        ca = pki.open_ca(Path(values["CA"]))
        unit_dir = tmp_path / "unit"
        pki.issue_identity(ca, "handset", ["van-07"], unit_dir)  # a client certificate with CN van-07
        seen = receive_via_bridge(
            unit=(unit_dir / "ca.crt", unit_dir / "van-07.crt", unit_dir / "van-07.key"),
            van_port=int(values["VAN_BROKER_PORT"]),
            centre=(
                work / "command-centre/ca.crt",
                work / "command-centre/command-centre.crt",
                work / "command-centre/command-centre.key",
            ),
            centre_port=int(values["BROKER_PORT"]),
        )
        assert seen == b'{"state": "online"}'
        codes = shell.stop()
    assert all(code == 0 for command, code in codes.items() if command.startswith("mosquitto")), codes


@pytest.mark.slow
@pytest.mark.faces
def test_a_van_rehearsed_on_a_desk_from_nothing_to_an_alert(tmp_path: Path, faces: Path) -> None:
    """docs/board-setup.md's bench mode, docs/broker.md sections 1-3 and the README's deployment table, in
    order, as written: the unit self-tests GO, runs from the command its unit file runs, pairs a handset while
    running, and alerts it when the watchlisted person is in front of the camera."""
    bench = tmp_path / "bench"
    values = {"BENCH": str(bench), "BROKER_PORT": str(free_port())}
    before = git_status()
    wanted = sorted((faces / "wild" / WANTED).glob("*.jpg"))

    def the_world(shell: DocShell) -> None:
        """What the documents take as given: the command centre's photos, and the street in front of the camera."""
        (bench / "photos").mkdir(parents=True, exist_ok=True)
        for photo in wanted[:2]:
            shutil.copy(photo, bench / "photos" / photo.name)
        (bench / "subjects.csv").write_text(
            "subject_id,category,photos,reference\n"
            f"S-{WANTED},wanted,{';'.join(p.name for p in wanted[:2])},case 1/23\n"
        )
        camera = Path(shell.values["ROOT"]) / "srv" / "lfr-camera"
        camera.mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(wanted[2:]):
            shutil.copy(photo, camera / f"{i:03d}.jpg")

    (tmp_path / "logs").mkdir()
    shell = DocShell(
        REPO,
        values,
        LONG_RUNNING,
        before={'lfr-provision --root "$ROOT" selftest': the_world},
        replace={SERVICE_START: BENCH_RUN},
        logs=tmp_path / "logs",
    )
    with shell:
        bench_section = section(sh_blocks(BOARD_SETUP), "Rehearsing")
        listing = bench_section[-1]  # `handsets list`, once the deployment is done
        shell.run_blocks(bench_section[:-2])  # values, software and beacon, cd: up to the run command
        shell.run_blocks(section(sh_blocks(BROKER_MD), "1.", "4."))
        shell.run_blocks(section(sh_blocks(README), "A deployment", "Privacy"))  # README's values: bench's win
        for command in table_commands(README, DEPLOYMENT):
            shell.run(command, "README.md deployment table")
        shell.run_blocks([listing])
        selftest = shell.output_of('lfr-provision --root "$ROOT" selftest')
        assert re.search(r"^GO: ", selftest, re.M), selftest
        assert re.search(r"^calibration\s+PASS ", selftest, re.M), selftest  # the embedder's table is in place
        assert "ALERT" in shell.output_of("lfr-handset listen") and f"subject S-{WANTED}" in shell.output_of(
            "lfr-handset listen"
        )
        # the handset says what the unit holds; the close clears the broker's retained copy
        listened = shell.output_of("lfr-handset listen")
        # what the score means, from the unit's calibration table (carried inside the alert)
        assert re.search(r"^ +(about 1 in [0-9,]+ people on no list|no two different people)", listened, re.M), listened
        assert re.search(r"^UNIT van-07 online since \S+: watchlist active: ", listened, re.M), listened
        assert "cleared the retained message" in shell.output_of("lfr-watchlist close")
        assert "1 handset(s) paired" in shell.output_of("lfr-provision handsets list")
        codes = shell.stop()
    assert codes[BENCH_RUN] == 0, codes  # Ctrl-C: the daemon stops cleanly
    root = bench / "van-07"
    audit = root / "var/lib/lfr-edge/audit.jsonl"
    assert verify(audit).ok
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert "alert" in " ".join(events) and "decision" in " ".join(events), events
    pairing_log = root / "var/lib/lfr-edge/pairing-audit.jsonl"  # pair-handset's own chain (docs/pairing.md)
    assert verify(pairing_log).ok
    assert [json.loads(line)["event"] for line in pairing_log.read_text().splitlines()][1:] == ["handset_paired"]
    assert git_status() == before, "the documented commands wrote outside the bench folder"


@pytest.mark.slow
@pytest.mark.faces
def test_a_trial_as_the_readme_writes_it(tmp_path: Path, faces: Path) -> None:
    """README's "Trials before a deployment": simulated footage, a test watchlist, `lfr-evaluate`; the
    watchlisted person who walks past is the one alert."""
    trial = tmp_path / "trial"
    listed: set[str] = set()

    def volunteers(shell: DocShell) -> None:
        """What the page takes as given: the test watchlist (the plan's watchlisted person, and decoys)."""
        walking, _ = write_trial_watchlist(load_plan(trial / "plan.json"), trial / "watchlist")
        listed.update(walking)

    (tmp_path / "logs").mkdir()
    values = {"TRIAL": str(trial), "FACES": str(faces)}
    with DocShell(REPO, values, before={"lfr-evaluate": volunteers}, logs=tmp_path / "logs") as shell:
        shell.run_blocks(section(sh_blocks(README), "Trials before a deployment"))
        printed = shell.output_of("lfr-evaluate")
    result = json.loads((trial / "result.json").read_text())
    assert listed and {a["subject"] for a in result["alerts"]} == listed, (result, listed)
    assert f"alerts: {len(listed)}" in printed


def git_status() -> str:
    """What git sees as changed or new in the checkout (bench/ is not ignored: a stray write shows)."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True).stdout


def receive_via_bridge(
    unit: tuple[Path, Path, Path], van_port: int, centre: tuple[Path, Path, Path], centre_port: int
) -> bytes:
    """The unit publishes its status on the van's broker; the command centre reads it on its own broker."""
    topic = "lfr/v1/units/van-07/status"
    got: queue.Queue[bytes] = queue.Queue()
    watcher = QueuedClient(connect_tls("command-centre", "localhost", centre_port, centre))
    watcher.subscribe(topic)
    sender = QueuedClient(connect_tls("van-07", "localhost", van_port, unit))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the bridge subscribes on its side when it connects: retry
            sender.publish(topic, b'{"state": "online"}', retain=True)
            try:
                got.put(bytes(watcher.messages.get(timeout=1).payload))
                break
            except queue.Empty:
                continue
        return got.get(timeout=1)
    finally:
        sender.close()
        watcher.close()
