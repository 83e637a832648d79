"""`lfr-provision selftest` on a unit provisioned into a temporary root, against real parts: the built models
on LiteRT, a replay camera on generated images, a simulated beacon on a pty and a TLS mosquitto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lfr_contracts import calibration
from lfr_contracts.calibration import CALIBRATION_FILE
from lfr_contracts.layout import UnitLayout
from lfr_edge.camera.opencv import import_cv2
from lfr_edge.config import ModelsConfig, load_config
from lfr_edge.models import load_manifest
from lfr_edge.vision.pipeline import resolve_model_files
from lfr_hwsim.beacon import SimulatedBeacon
from lfr_hwsim.broker import MosquittoBroker
from lfr_provision import cli
from lfr_provision.init import InitOptions, init_unit
from lfr_provision.selftest import (
    Check,
    Options,
    check_calibration,
    check_clock,
    check_memory,
    check_memory_lock,
    check_swap,
    format_table,
    locked_and_resident,
    run_checks,
)
from lfr_tools.handset.cli import HandsetKeys

UNIT = "unit-a"
FAST = Options(timeout_s=5.0, frames=5, runs=3)


@dataclass
class Unit:
    root: UnitLayout
    config: Path
    broker: MosquittoBroker
    beacon: SimulatedBeacon
    frames: Path
    models: Path

    def write_config(self, *, models: Path | None = None, camera_uri: Path | None = None) -> Path:
        tls = self.broker.client(UNIT)
        self.config.write_text(
            f"""
[unit]
id = "{UNIT}"
keys_dir = "{self.root.keys}"
state_dir = "{self.root.state}"
audit_log = "{self.root.state / "audit.jsonl"}"

[models]
dir = "{models or self.models}"

[inference]
backend = "onnx-cpu"
threads = 1

[[cameras]]
name = "cam0"
source = "replay"
uri = "{camera_uri or self.frames}"
width = 320
height = 240
fps = 50.0
options = {{ loop = true }}

[mqtt]
host = "{self.broker.host}"
port = {self.broker.port}
ca_file = "{tls.ca_file}"
cert_file = "{tls.cert_file}"
key_file = "{tls.key_file}"
topic_prefix = "{self.broker.prefix}"

[watchlist]
command_centre_key = "{self.root.keys / "command-centre.pub"}"

[alerts]
handsets_dir = "{self.root.handsets}"

[beacon]
enabled = true
port = "{self.beacon.link}"
"""
        )
        return self.config


def built_models() -> Path:
    models = ModelsConfig().dir.expanduser()
    if not any(models.glob("*.tflite")):
        pytest.fail(f"no built models in {models}: run `make models` first")
    return models


@pytest.fixture
def unit(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Unit]:
    """`lfr-provision init` into tmp, a paired handset, a camera folder, a beacon on a pty."""
    cc_key = tmp_path / "command-centre.pub"
    cc_key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    root = UnitLayout(tmp_path / "root")
    init_unit(InitOptions(UNIT, root.root, board="generic", command_centre_key=cc_key))
    keys = HandsetKeys.generate(tmp_path / "handset", "handset-1")
    (root.handsets / "handset-1.json").write_bytes(keys.record())
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2 = import_cv2()
    rng = np.random.default_rng(1)
    for i in range(4):  # plain generated pictures: no face is needed to grab frames
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        cv2.imwrite(str(frames / f"{i:03d}.png"), image)
    beacon = SimulatedBeacon(tmp_path / "lfr-beacon")
    beacon.start()
    made = Unit(root, root.config, broker, beacon, frames, built_models())
    made.write_config()
    yield made
    beacon.stop()


def verdicts(rows: list[Check]) -> dict[str, str]:
    return {row.name: row.verdict for row in rows}


def detail(rows: list[Check], name: str) -> str:
    return next(row.detail for row in rows if row.name == name)


@pytest.mark.broker
def test_a_healthy_unit_passes_and_names_backend_and_latency_per_model(
    unit: Unit, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["selftest", "--config", str(unit.config), "--frames", "5", "--runs", "3"])
    table = capsys.readouterr().out
    assert code == 0, table
    assert "GO:" in table and "NO-GO" not in table
    rows = run_checks(unit.config, FAST)
    found = verdicts(rows)
    assert set(found.values()) <= {"PASS", "WARN"}, format_table(rows)
    for name in ("config", "backend", "camera cam0", "beacon", "broker", "keys", "handsets", "memory", "swap"):
        assert found[name] == "PASS", format_table(rows)
    assert found["memory lock"] == "PASS" and "VmLck" in detail(rows, "memory lock"), format_table(rows)
    print(detail(rows, "swap"), "|", detail(rows, "memory lock"))
    assert "onnx-cpu (onnxruntime" in detail(rows, "backend")
    model_id = resolve_model_files(load_config(unit.config)).model_id
    assert found["calibration"] == "PASS" and detail(rows, "calibration").startswith(f"{model_id}: ")
    for model in ("yunet", "sface"):  # the default models
        assert found[f"model {model}"] == "PASS"
        assert "median" in detail(rows, f"latency {model}")
    assert "320x240, 5 frames" in detail(rows, "camera cam0")
    assert f"{unit.broker.host}:{unit.broker.port}" in detail(rows, "broker")


@pytest.mark.broker
def test_a_model_whose_hash_differs_fails_and_is_not_run(unit: Unit, tmp_path: Path) -> None:
    corrupt = tmp_path / "models"
    corrupt.mkdir()
    for path in unit.models.glob("*.onnx"):
        shutil.copy(path, corrupt / path.name)
    configured = load_manifest(ModelsConfig().manifest).model("yunet").variant("default")
    victim = corrupt / configured.file
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    unit.write_config(models=corrupt)
    rows = run_checks(unit.config, FAST)
    found = verdicts(rows)
    assert found["model yunet"] == "FAIL"
    assert str(victim) in detail(rows, "model yunet")
    assert found["latency yunet"] == "SKIP"
    assert found["model sface"] == "PASS"
    assert cli.main(["selftest", "--frames", "2", "--runs", "1", "--config", str(unit.config)]) == 1


@pytest.mark.broker
def test_a_unit_without_its_calibration_table_warns_with_the_fix(unit: Unit, tmp_path: Path) -> None:
    """No table: still GO (the unit scans, its alerts carry no rate), but a WARN row says so and how to fix it."""
    models = tmp_path / "models"
    models.mkdir()
    for path in [*unit.models.glob("*.tflite"), *unit.models.glob("*.onnx")]:
        (models / path.name).symlink_to(path)
    unit.write_config(models=models)
    rows = run_checks(unit.config, FAST)
    assert verdicts(rows)["calibration"] == "WARN", format_table(rows)
    assert f"{models / CALIBRATION_FILE} is missing" in detail(rows, "calibration")
    assert "not calibrated" in detail(rows, "calibration") and "`make models`" in detail(rows, "calibration")
    assert "NO-GO" not in format_table(rows)
    # A table for another model only (another embedder's build): the same WARN, naming the unit's model id.
    other = calibration.decode((unit.models / CALIBRATION_FILE).read_bytes())
    some = next(iter(other.values()))
    (models / CALIBRATION_FILE).write_bytes(calibration.encode([replace(some, model_id="another/model/000")]))
    cfg = load_config(unit.config)
    row = check_calibration(cfg)
    assert row.verdict == "WARN" and f"has no table for {resolve_model_files(cfg).model_id}" in row.detail


@pytest.mark.broker
def test_a_broker_that_is_not_running_fails_naming_it(unit: Unit) -> None:
    unit.broker.stop()
    rows = run_checks(unit.config, FAST)
    assert verdicts(rows)["broker"] == "FAIL"
    assert f"broker 127.0.0.1:{unit.broker.port}: connection refused" in detail(rows, "broker")
    assert "NO-GO" in format_table(rows)


@pytest.mark.broker
def test_a_missing_camera_fails_naming_it(unit: Unit, tmp_path: Path) -> None:
    unit.write_config(camera_uri=tmp_path / "no-such-camera")
    rows = run_checks(unit.config, FAST)
    assert verdicts(rows)["camera cam0"] == "FAIL"
    assert "no-such-camera: no such video file or image folder" in detail(rows, "camera cam0")


@pytest.mark.broker
def test_a_key_readable_by_others_and_an_unplugged_beacon_fail(unit: Unit) -> None:
    os.chmod(unit.root.keys / "unit-ed25519.key", 0o644)
    unit.beacon.unplug()
    rows = run_checks(unit.config, FAST)
    found = verdicts(rows)
    assert found["keys"] == "FAIL" and "mode 0644, must be 0600" in detail(rows, "keys")
    assert found["beacon"] == "FAIL"


def test_a_bad_config_fails_and_skips_what_depends_on_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[unit]\nid = "unit-a"\ncolour = "blue"\n')
    rows = run_checks(config, FAST)
    assert rows[0].verdict == "FAIL" and "unknown key 'colour'" in rows[0].detail
    assert verdicts(rows)["broker"] == "SKIP"
    assert cli.main(["selftest", "--config", str(tmp_path / "missing.toml")]) == 1


def test_clock_before_2025_fails_and_unsynchronised_warns() -> None:
    assert check_clock(datetime(1970, 1, 1, tzinfo=UTC), lambda: True).verdict == "FAIL"
    assert check_clock(datetime(2026, 3, 1, tzinfo=UTC), lambda: False).verdict == "WARN"
    assert check_clock(datetime(2026, 3, 1, tzinfo=UTC), lambda: None).verdict == "WARN"
    assert check_clock(datetime(2026, 3, 1, tzinfo=UTC), lambda: True).verdict == "PASS"


def test_memory_below_the_floor_fails(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  4000000 kB\nMemFree:  100 kB\nMemAvailable:  100000 kB\n")
    low = check_memory(Options(min_memory_mb=256), meminfo)
    assert low.verdict == "FAIL" and "98 MiB available of 3.8 GiB" in low.detail
    assert check_memory(Options(min_memory_mb=64), meminfo).verdict == "PASS"


def test_swap_on_fails_naming_the_device_and_the_fix(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/var/swap  file  102396  0  -2\n")
    row = check_swap(swaps)
    assert row.verdict == "FAIL" and "/var/swap (100 MiB)" in row.detail and "board-setup.sh" in row.detail
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert check_swap(swaps).verdict == "PASS"


def test_the_memory_lock_check_locks_then_leaves_the_process_as_it_was() -> None:
    row = check_memory_lock()
    assert row.verdict == "PASS", row.detail  # the test machine runs as root (CAP_IPC_LOCK)
    assert locked_and_resident()[0] == 0


def test_memory_locking_is_refused_with_the_fix_under_a_finite_limit() -> None:
    """A child process without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK, as a unit without LimitMEMLOCK."""
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536));"
        "from lfr_edge.daemon import memory_lock as m; m._has_ipc_lock = lambda: False; print(m.lock_all_memory())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "LimitMEMLOCK=infinity" in done.stdout


def test_the_watchlist_row_reads_the_units_lifecycle_record_and_fails_an_edited_one(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lfr_contracts import layout
    from lfr_edge import keyfiles
    from lfr_edge.config import Config, UnitConfig
    from lfr_edge.watchlist import lifecycle
    from lfr_provision.selftest import check_watchlist

    keys, state = tmp_path / "keys", tmp_path / "state"
    keys.mkdir()
    state.mkdir()
    key = Ed25519PrivateKey.generate()
    keyfiles.save_private_key(keys / layout.UNIT_ED25519_KEY, key)
    cfg = Config(unit=UnitConfig(id="van-07", keys_dir=keys, state_dir=state))
    assert check_watchlist(cfg).detail.startswith("none applied yet")
    record = lifecycle.LifecycleFile(state / layout.LIFECYCLE_RECORD, "van-07", key)
    held = lifecycle.HeldWatchlist("op-1", 3, 12, 0.0, 2_000_000_000.0)
    record.save(lifecycle.ended(lifecycle.applied(lifecycle.LifecycleState(), held, "d"), "op-1", "closed"))
    row = check_watchlist(cfg)
    assert row.verdict == "PASS" and "op-1 closed" in row.detail and "1 ended deployment" in row.detail
    record.path.write_text(record.path.read_text().replace("closed", "expired"))
    assert check_watchlist(cfg).verdict == "FAIL"
