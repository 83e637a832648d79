"""End-to-end latency: from the decision frame to the alert decrypted at the handset and the beacon's
acknowledged alert pattern, through the real broker on loopback: p50/p95/p99 over at least 200 alerts."""

from __future__ import annotations

from lfr_edge.bench.common import BenchContext, PartResult
from lfr_edge.bench.daemon_parts import run_daemon_part


def run(ctx: BenchContext) -> PartResult:
    return run_daemon_part(ctx, "latency")
