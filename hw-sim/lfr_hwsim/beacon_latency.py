"""Measure the beacon's command-to-answer round trip over a pty against the simulated beacon.

Two figures: the bare line (QUERY written with pyserial, STATE decoded) and through the driver
(`selftest()`: pipeline thread -> driver thread -> pty -> simulator -> back), each as median and p99.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import serial

from lfr_contracts import beacon as bp
from lfr_edge.alerts.beacon import BeaconDriver
from lfr_edge.config import BeaconConfig
from lfr_hwsim.beacon import SimulatedBeacon


def _summary(name: str, samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"{name}: n={len(ms)} median={statistics.median(ms):.3f} ms p99={p99:.3f} ms max={ms[-1]:.3f} ms"


def _bare_round_trips(link: Path, count: int) -> list[float]:
    samples = []
    with serial.Serial(str(link), timeout=1.0) as port:
        decoder = bp.FrameDecoder()
        for i in range(count):
            started = time.perf_counter()
            port.write(bp.encode(bp.query(i & 0xFF)))
            events: list[bp.Frame | bp.BadChecksum] = []
            while not events:
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    raise RuntimeError("the simulated beacon did not answer")
                events = decoder.feed(chunk)
            samples.append(time.perf_counter() - started)
    return samples


def _driver_round_trips(link: Path, count: int) -> list[float]:
    driver = BeaconDriver(BeaconConfig(port=str(link), heartbeat_s=1.0, ack_timeout_s=0.2))
    driver.start()
    samples = []
    try:
        if not driver.selftest(5.0):
            raise RuntimeError("the driver could not reach the simulated beacon")
        for _ in range(count):
            started = time.perf_counter()
            if not driver.selftest(1.0):
                raise RuntimeError("a self-test query was not answered")
            samples.append(time.perf_counter() - started)
    finally:
        driver.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lfr-hwsim beacon-latency", description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        beacon = SimulatedBeacon(Path(tmp) / "lfr-beacon")
        beacon.start()
        try:
            print(_summary("pty line QUERY->STATE", _bare_round_trips(beacon.link, args.count)))
            print(_summary("driver selftest()    ", _driver_round_trips(beacon.link, args.count)))
        finally:
            beacon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
