"""provisioning/board-setup.sh: through --dry-run (it prints the commands, runs none), and against a fake root
(an image mounted elsewhere: --root), where it changes only files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "provisioning" / "board-setup.sh"


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args, "--dry-run"], capture_output=True, text=True, check=False)


def commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def test_pi5_with_hailo_installs_the_packages_and_provisions_in_order() -> None:
    result = dry_run("--board", "pi5", "--accelerator", "hailo", "--unit-id", "van-07", "--broker", "10.8.0.1:8883")
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
        "lfr-provision selftest --config /etc/lfr-edge/config.toml",
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


# Swap off for good and the memory controller on, against a fake root (an image mounted elsewhere) ----------

CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait"
FSTAB = """proc            /proc           proc    defaults          0       0
PARTUUID=4e639091-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=4e639091-02  /               ext4    defaults,noatime  0       1
/var/swap       none            swap    sw                0       0
# /dev/sda3     none            swap    sw                0       0
"""


def raspberry_pi_os(root: Path, cmdline: str = CMDLINE) -> Path:
    """The files of a Raspberry Pi OS image that the set-up changes, as the image ships them."""
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/cmdline.txt").write_text(cmdline + "\n")
    (root / "boot/firmware/config.txt").write_text("[all]\ncamera_auto_detect=0\n")
    (root / "etc").mkdir()
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/dphys-swapfile").write_text(
        "# where we want the swapfile to be\n#CONF_SWAPFILE=/var/swap\nCONF_SWAPSIZE=512\n"
    )
    (root / "var").mkdir()
    (root / "var/swap").write_bytes(b"\0" * 4096)
    return root


def setup_image(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--unit-id", "van-07", "--root", str(root), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under root: its content, or where it links to."""
    return {
        str(p.relative_to(root)): f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text(errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


MASKED = [
    "etc/systemd/system/dphys-swapfile.service",
    "etc/systemd/system-generators/rpi-swap-generator",
    "etc/systemd/system-generators/zram-generator",
    "etc/systemd/system/zramswap.service",
    "etc/systemd/system/nvzramconfig.service",
    "etc/systemd/system/swap.target",
]


def test_a_pi_image_gets_swap_off_for_good_and_the_memory_controller_on(tmp_path: Path) -> None:
    root = raspberry_pi_os(tmp_path / "image", CMDLINE + " cgroup_disable=memory")
    result = setup_image(root, "--board", "pi5", "--accelerator", "hailo")
    assert result.returncode == 0, result.stderr
    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert cmdline == CMDLINE + " cgroup_enable=memory cgroup_memory=1\n"  # one line, the rest untouched
    config = (root / "boot/firmware/config.txt").read_text().splitlines()
    assert "camera_auto_detect=1" in config and "dtparam=pciex1_gen=3" in config
    fstab = (root / "etc/fstab").read_text().splitlines()
    assert (
        "# no swap (lfr-edge board-setup): /var/swap       none            swap    sw                0       0" in fstab
    )
    assert "# /dev/sda3     none            swap    sw                0       0" in fstab  # already off: as it was
    assert [line for line in fstab if not line.startswith("#") and " swap " in line] == []
    assert "CONF_SWAPSIZE=0" in (root / "etc/dphys-swapfile").read_text().splitlines()
    assert not (root / "var/swap").exists()
    for unit in MASKED:
        assert os.readlink(root / unit) == "/dev/null", unit
    # Nothing was run on this machine: no package, no service, no swapoff.
    assert not any(c.startswith(("apt-get", "swapoff", "systemctl", "env ")) for c in commands(result.stdout))
    assert "nothing is installed or started" in result.stdout


def test_a_second_run_changes_nothing_and_says_so(tmp_path: Path) -> None:
    root = raspberry_pi_os(tmp_path / "image")
    assert setup_image(root, "--board", "pi5").returncode == 0
    before = snapshot(root)
    again = setup_image(root, "--board", "pi5")
    assert again.returncode == 0, again.stderr
    assert snapshot(root) == before
    assert commands(again.stdout) == []  # no edit, no mask, no rm
    assert "cmdline.txt: kernel parameters cgroup_enable=memory cgroup_memory=1 (already)" in again.stdout


def test_a_dry_run_on_an_image_says_what_it_would_change_and_changes_nothing(tmp_path: Path) -> None:
    root = raspberry_pi_os(tmp_path / "image")
    before = snapshot(root)
    result = setup_image(root, "--board", "pi5", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == before
    cmds = commands(result.stdout)
    assert f"edit {root}/boot/firmware/cmdline.txt: kernel parameters cgroup_enable=memory cgroup_memory=1" in cmds
    assert f"rm {root}/var/swap" in cmds and f"mask {root}/etc/systemd/system/swap.target" in cmds


def test_a_jetson_image_has_its_zram_swap_masked_and_no_pi_boot_files_touched(tmp_path: Path) -> None:
    root = tmp_path / "jetson"
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text("/dev/root / ext4 defaults 0 1\n")
    result = setup_image(root, "--board", "jetson", "--accelerator", "jetson")
    assert result.returncode == 0, result.stderr
    assert os.readlink(root / "etc/systemd/system/nvzramconfig.service") == "/dev/null"
    assert not (root / "boot").exists() and (root / "etc/fstab").read_text() == "/dev/root / ext4 defaults 0 1\n"


def test_an_image_without_its_cmdline_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = raspberry_pi_os(tmp_path / "image")
    (root / "boot/firmware/cmdline.txt").unlink()
    result = setup_image(root, "--board", "pi5")
    assert result.returncode == 2
    assert f"{root}/boot/firmware/cmdline.txt not found" in result.stderr and "cgroup_enable=memory" in result.stderr


def test_on_the_board_swap_goes_off_now_before_the_self_test() -> None:
    cmds = commands(dry_run("--board", "pi5", "--unit-id", "van-07").stdout)
    order = ["apt-get install", "swapoff -a", "mask /etc/systemd/system/swap.target", "lfr-provision selftest"]
    positions = [next(i for i, c in enumerate(cmds) if step in c) for step in order]
    assert positions == sorted(positions)
    assert "edit /boot/firmware/cmdline.txt: kernel parameters cgroup_enable=memory cgroup_memory=1" in cmds


def test_a_cmdline_of_several_lines_is_refused_not_cut(tmp_path: Path) -> None:
    root = raspberry_pi_os(tmp_path / "image", CMDLINE + "\nquiet splash")
    result = setup_image(root, "--board", "pi5")
    assert result.returncode == 2 and "must be one line" in result.stderr
    assert (root / "boot/firmware/cmdline.txt").read_text() == CMDLINE + "\nquiet splash\n"
