"""Memory: the daemon's resident memory (VmRSS, VmHWM) at steady state with a 10,000-subject watchlist."""

from __future__ import annotations

from lfr_edge.bench.common import BenchContext, PartResult
from lfr_edge.bench.daemon_parts import run_daemon_part


def run(ctx: BenchContext) -> PartResult:
    return run_daemon_part(ctx, "memory")
