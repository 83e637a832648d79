"""`lfr-provision install`: put the service unit, udev rule, tmpfiles and sysusers files in place.

Idempotent: a file already identical is left alone and reported as unchanged; a different one is
replaced (an upgrade) and reported. With --enable the service is enabled (and on a live board started).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lfr_contracts.layout import UnitLayout
from lfr_provision.identity import ProvisionError
from lfr_provision.init import Report

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_SOURCE = REPO_ROOT / "systemd"
DROP_INS = ("jetson", "coral-usb")

# (file in systemd/, where it goes on the unit)
_FILES = (
    ("lfr-edge.service", "/etc/systemd/system/lfr-edge.service"),
    ("99-lfr-beacon.rules", "/etc/udev/rules.d/99-lfr-beacon.rules"),
    ("lfr-edge.tmpfiles.conf", "/usr/lib/tmpfiles.d/lfr-edge.conf"),
    ("lfr-edge.sysusers.conf", "/usr/lib/sysusers.d/lfr-edge.conf"),
)


@dataclass(frozen=True)
class InstallOptions:
    root: Path = Path("/")
    source: Path = SYSTEMD_SOURCE
    with_drop_ins: tuple[str, ...] = ()
    enable: bool = False


def planned_files(opts: InstallOptions) -> list[tuple[Path, Path]]:
    """(source, destination under root) for every file install manages."""
    paths = UnitLayout(opts.root)
    plan = [(opts.source / name, paths.inside(target)) for name, target in _FILES]
    for name in opts.with_drop_ins:
        if name not in DROP_INS:
            raise ProvisionError(f"--with {name!r}: known drop-ins are {', '.join(DROP_INS)}")
        dropin = f"/etc/systemd/system/lfr-edge.service.d/{name}.conf"
        plan.append((opts.source / "lfr-edge.service.d" / f"{name}.conf", paths.inside(dropin)))
    return plan


def install(opts: InstallOptions, run: bool = True) -> Report:
    """Copy the files; enable the service when asked. `run=False` only prints the commands."""
    report = Report()
    changed = 0
    for source, target in planned_files(opts):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"{source}: cannot read ({exc.strerror}); is --source the repo's systemd/?") from exc
        if target.exists() and target.read_bytes() == data:
            report.done.append(f"unchanged: {target}")
            continue
        verb = "updated" if target.exists() else "installed"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        tmp.replace(target)
        changed += 1
        report.done.append(f"{verb}: {target}")
    if changed == 0:
        report.done.append("nothing changed: everything was already installed")
    config = UnitLayout(opts.root).config
    if not config.exists():
        report.next_steps.append(f"no {config} yet: run `lfr-provision init --unit-id ID --root {opts.root}`")

    commands = activation_commands(opts.root)
    if opts.enable:
        for command in commands:
            if run:
                _run(command)
            report.done.append("ran: " + " ".join(command))
    else:
        report.next_steps.extend(" ".join(c) for c in commands)
        report.next_steps.append("or run `lfr-provision install --enable` to do the above")
    return report


def activation_commands(root: Path) -> list[list[str]]:
    """The commands that make systemd and udev take the files up (offline when root is not /)."""
    if root != Path("/"):
        return [
            ["systemd-sysusers", f"--root={root}"],
            ["systemctl", f"--root={root}", "enable", "lfr-edge.service"],
        ]
    return [
        ["systemd-sysusers"],
        ["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/lfr-edge.conf"],
        ["udevadm", "control", "--reload"],
        ["udevadm", "trigger", "--subsystem-match=tty"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "lfr-edge.service"],
    ]


def _run(command: Sequence[str]) -> None:
    if shutil.which(command[0]) is None:
        raise ProvisionError(f"{command[0]} not found: is this a systemd system? Run the steps by hand")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProvisionError(f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr.strip()}")
