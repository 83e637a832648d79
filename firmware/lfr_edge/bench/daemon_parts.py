"""What the daemon-level parts (pipeline.py, latency.py, memory.py) share.

Each needs the real daemon (`lfr-edge run`) with the simulator's camera, a real broker on loopback
(`lfr_hwsim.broker.MosquittoBroker`), a handset (`lfr_edge.alerts.handset_client`) and the beacon on a
pseudo-terminal. Until the daemon is in the checkout they say so instead of measuring anything.
"""

from __future__ import annotations

from lfr_edge.bench.common import BenchContext, PartResult, not_measured
from lfr_edge.bench.daemon_harness import daemon_missing

PARTS = {
    "pipeline": (
        "fps_daemon_max",
        "faces_per_s_daemon",
        "cpu_percent_daemon",
        "dropped_frames",
        "headroom_25fps",
    ),
    "latency": ("e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms"),
    "memory": ("daemon_rss_mb_10k",),
}


def run_daemon_part(ctx: BenchContext, part: str) -> PartResult:
    keys = PARTS[part]
    missing = daemon_missing()
    if missing is not None:
        return not_measured(part, missing, keys)
    return not_measured(
        part,
        "the daemon is present but this harness is not yet wired to its config and telemetry "
        "(DaemonProcess in lfr_edge/bench/daemon_harness.py is the starting point)",
        keys,
    )
