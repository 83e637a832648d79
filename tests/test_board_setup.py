"""provisioning/board-setup.sh, checked through --dry-run (it prints the commands, runs none)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "provisioning" / "board-setup.sh"


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--dry-run"], capture_output=True, text=True, check=False
    )


def commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def test_pi5_with_hailo_installs_the_packages_and_provisions_in_order() -> None:
    result = dry_run(
        "--board", "pi5", "--accelerator", "hailo", "--unit-id", "van-07", "--broker", "10.8.0.1:8883"
    )
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    install = next(c for c in cmds if "apt-get install" in c)
    for package in ("python3-picamera2", "hailo-all", "mosquitto-clients", "python3-venv"):
        assert package in install.split()
    assert any("camera_auto_detect=1" in c for c in cmds)
    order = [
        "python3 -m venv --system-site-packages /opt/lfr-edge/.venv",
        "lfr-provision install --root /",
        "systemd-sysusers",
        "lfr-provision init --unit-id van-07 --root / --board pi5 --broker 10.8.0.1:8883",
        "lfr-edge selftest --config /etc/lfr-edge/config.toml",
        "systemctl enable --now lfr-edge.service",
    ]
    positions = [next(i for i, c in enumerate(cmds) if step in c) for step in order]
    assert positions == sorted(positions)


def test_jetson_and_coral_usb_get_their_drop_ins_and_packages() -> None:
    cmds = commands(dry_run("--board", "jetson", "--accelerator", "jetson", "--unit-id", "van-08").stdout)
    assert any("lfr-provision install" in c and "--with jetson" in c for c in cmds)
    assert "python3-libnvinfer" in next(c for c in cmds if "apt-get install" in c)
    cmds = commands(dry_run("--board", "pi5", "--accelerator", "coral-usb", "--unit-id", "van-09").stdout)
    assert any("--with coral-usb" in c for c in cmds)
    assert "libedgetpu1-std" in next(c for c in cmds if "apt-get install" in c)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unit-id", "van-07"], "--board must be pi5 or jetson"),
        (["--board", "pi5", "--unit-id", "van 07"], "--unit-id"),
        (["--board", "pi5", "--unit-id", "v", "--accelerator", "tpu"], "--accelerator 'tpu'"),
        (["--board", "pi5", "--unit-id", "v", "--accelerator", "jetson"], "needs --board jetson"),
        (["--board", "pi5", "--unit-id", "v", "--broker", "nope"], "--broker"),
        (["--board", "pi5", "--unit-id", "v", "--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_options_are_named_and_nothing_runs(args: list[str], message: str) -> None:
    result = dry_run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert commands(result.stdout) == []
