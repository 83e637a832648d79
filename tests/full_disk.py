"""A real, small file system to fill: a tmpfs mounted for one test (root only; skipped, saying why, elsewhere)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(folder: Path, size_kib: int = 64) -> Iterator[Path]:
    """`folder` as its own tmpfs of `size_kib` KiB for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(folder)]
    try:
        result = subprocess.run(mount, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.skip("no `mount` command here: the full-disk tests mount a small tmpfs")
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a {size_kib} KiB tmpfs at {folder} ({result.stderr.strip() or result.returncode}): "
            "the full-disk tests need root (CAP_SYS_ADMIN), e.g. in the CI container"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system says it is full; returns it (unlink it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for size in (1024, 256, 64, 16, 1):  # the last page's slack too
            while True:
                try:
                    os.write(fd, block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
