"""Nothing of a passer-by may be paged out: the daemon locks its memory, and the board runs without swap.

`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` locks every page the process has and will touch (frames,
crops, embeddings, the watchlist), as it is touched, so thread stacks and arenas are not filled in up front.
It needs `LimitMEMLOCK=infinity` in the unit (or CAP_IPC_LOCK): with a finite limit, a later allocation over
it would fail, so the unit does not lock at all then and says why. Swap is the other half: with no swap
device nothing can be written out even where locking is refused (Raspberry Pi OS ships a swap file; the
board set-up removes it and `lfr-provision selftest` fails while one is on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from pathlib import Path

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
CAP_IPC_LOCK = 14


def _has_ipc_lock(status: Path = Path("/proc/self/status")) -> bool:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return False


def lock_all_memory() -> str | None:
    """Lock this process's memory now and for the future; None when done, else what stopped it and the fix."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and not _has_ipc_lock():
        return (
            f"not locking memory: RLIMIT_MEMLOCK is {soft} bytes and a later allocation over it would fail; "
            "set LimitMEMLOCK=infinity in the unit (systemd/lfr-edge.service has it)"
        )
    name = ctypes.util.find_library("c")
    if name is None:
        return "not locking memory: libc not found"
    libc = ctypes.CDLL(name, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        return f"mlockall refused: {os.strerror(ctypes.get_errno())}"
    return None
