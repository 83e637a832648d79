"""Helpers to check unit files with the real systemd-analyze inside a throw-away root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian package systemd)"
)
EXEC_START = "opt/lfr-edge/.venv/bin/lfr-edge"


def prepare_root(root: Path) -> None:
    """Give root what verify resolves: systemd's own units, /bin/kill and the ExecStart binary."""
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("kill") or "/usr/bin/kill", root / "usr/bin/kill")
    if not (root / "bin").exists():
        os.symlink("usr/bin", root / "bin")
    binary = root / EXEC_START
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)


def verify_unit(root: Path, unit: str = "lfr-edge.service") -> str:
    """Run systemd-analyze verify; return everything it complained about (empty when clean)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f"\nrc={result.returncode}")


def security_exposure(root: Path, unit: str = "lfr-edge.service") -> tuple[float, str]:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1)), output


# The unit's own files; everything else a unit file names (/bin/kill) is the system's.
UNIT_PREFIXES = ("/etc/lfr-edge", "/var/lib/lfr-edge", "/run/lfr-edge", "/opt/lfr-edge")


def service_settings(unit_file: Path) -> dict[str, list[str]]:
    """The [Service] section's settings, in order, each key with every value it is given."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def into_bench(command: str, bench: Path) -> list[str]:
    """A unit file's command line with the unit's own absolute paths mapped into a bench folder."""
    words = []
    for word in command.split():
        if word.startswith(UNIT_PREFIXES):
            word = str(bench / word.lstrip("/"))
        words.append(word)
    return words
