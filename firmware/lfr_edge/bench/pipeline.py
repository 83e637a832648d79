"""Pipeline throughput: the real daemon on the simulator's camera as fast as it goes (fps, faces/s,
CPU use, dropped frames), and the headroom left at the camera's 25 fps."""

from __future__ import annotations

from lfr_edge.bench.common import BenchContext, PartResult
from lfr_edge.bench.daemon_parts import run_daemon_part


def run(ctx: BenchContext) -> PartResult:
    return run_daemon_part(ctx, "pipeline")
