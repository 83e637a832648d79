"""The real daemon (`lfr-edge run`) in the simulated van, for the daemon-level parts.

Throughput, end-to-end latency and memory are measured on the daemon itself, never on a bench-only path:
`lfr_hwsim.van.SimulatedVan` brings up mosquitto with mutual TLS and ACLs, provisions a unit with
`lfr-provision init`, pairs a handset and starts the beacon on a pty; the daemon runs as its own process
and is watched from outside (telemetry over MQTT as the command centre, /proc for CPU and memory).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfr_bench.common import BenchContext
from lfr_bench.procstat import cpu_seconds, memory_mb
from lfr_contracts.telemetry import Telemetry, decode_telemetry
from lfr_edge import keyfiles
from lfr_edge.config import Config

UNIT_ID = "van-bench"
READY_TIMEOUT_S = 120.0


def van_missing(ctx: BenchContext) -> str | None:
    """Why the simulated van cannot run here (no broker, simulator, photos or models), or None."""
    try:
        from lfr_hwsim.broker import mosquitto_binary
        from lfr_hwsim.van import SimulatedVan  # noqa: F401
    except ImportError as exc:
        return f"the hardware simulator (hw-sim) is not importable: {exc}"
    try:
        mosquitto_binary()
    except FileNotFoundError as exc:
        return str(exc)
    if not (ctx.faces_dir / "wild").is_dir():
        return f"no face corpus at {ctx.faces_dir} (set LFR_FACES)"
    try:
        unit_model_id()
    except Exception as exc:  # missing or mismatched model artifacts: say which
        return f"the unit's models are not usable: {exc}"
    return None


def unit_model_id() -> str:
    """The model id the daemon's pipeline will report (a bundle for another model is refused)."""
    from lfr_edge.vision.pipeline import resolve_model_files

    return resolve_model_files(Config()).model_id


@contextlib.contextmanager
def bench_van(name: str) -> Iterator[Any]:
    """A started SimulatedVan in a temporary folder, torn down (and the folder removed) afterwards."""
    from lfr_hwsim.van import SimulatedVan

    work = Path(tempfile.mkdtemp(prefix=f"lfr-bench-{name}-"))
    try:
        with SimulatedVan(work / "van", unit_id=UNIT_ID) as van:
            yield van
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_ready(van: Any, config: Path) -> Any:
    """Start `lfr-edge run` with `config` and wait for READY=1 (models loaded, camera up, broker up)."""
    daemon = van.start_daemon(config)
    daemon.wait_for("READY", timeout=READY_TIMEOUT_S)
    return daemon


def sealed_bundle(van: Any, entries: list[Any], threshold: float, model_id: str, version: int) -> bytes:
    """Sign and seal `entries` for the van's unit as its command centre does (same call as the van)."""
    from lfr_contracts import layout
    from lfr_contracts.bundle import build_bundle

    now = time.time()
    return build_bundle(
        entries,
        deployment="bench-deployment",
        unit_id=van.unit_id,
        unit_key=keyfiles.load_x25519_public(van.paths.keys / layout.UNIT_X25519_PUB),
        version=version,
        valid_from=now - 60,
        valid_until=now + 3600,
        threshold=threshold,
        model_id=model_id,
        sign_key=van.command_centre_key,
        issued_at=now,
    )


def unit_embedding_dim() -> int:
    """The length of the embeddings the daemon's model gives (a bundle of another length is refused)."""
    from lfr_edge.vision.pipeline import build_pipeline

    return build_pipeline(Config()).embedder.dim


def synthetic_entries(n: int, faces_dir: Path, seed: int, dim: int | None = None) -> list[Any]:
    """`n` subjects with random unit embeddings of the unit's length and a reference JPEG of the real size (a
    128 px crop of a corpus photo, as `reference_crop` makes): memory depends on sizes, not on whose faces."""
    import cv2

    from lfr_bench.watchlists import unit_vectors
    from lfr_contracts.bundle import SubjectEntry
    from lfr_edge.vision.image import encode_jpeg
    from lfr_tools.command_centre.enrol import REFERENCE_MAX_SIDE
    from lfr_tools.photos.image import read_image

    photos = sorted((faces_dir / "wild").glob("*/*.jpg"))[:50]
    crops = []
    for path in photos:
        image = read_image(path)
        h, w = image.shape[:2]
        side = min(h, w) // 2
        top, left = (h - side) // 3, (w - side) // 2
        square = np.ascontiguousarray(image[top : top + side, left : left + side])
        crop = np.asarray(cv2.resize(square, (REFERENCE_MAX_SIDE, REFERENCE_MAX_SIDE)), dtype=np.uint8)
        crops.append(encode_jpeg(crop, quality=85))
    vectors = unit_vectors(n, dim if dim is not None else unit_embedding_dim(), seed)
    return [SubjectEntry(f"S{i:06d}", "wanted", "", vectors[i : i + 1].copy(), crops[i % len(crops)]) for i in range(n)]


@dataclass(frozen=True)
class Sample:
    """One telemetry message and the daemon's CPU seconds read when it arrived."""

    received: float  # monotonic, bench side
    cpu_s: float
    telemetry: Telemetry


class TelemetryWatch:
    """Subscribes to the unit's telemetry as the command centre; each message is stamped with the
    daemon's CPU time from /proc, so rates and CPU use come from the same interval."""

    def __init__(self, van: Any) -> None:
        from lfr_hwsim.broker import COMMAND_CENTRE, Collector

        self.collector = Collector(van.broker, COMMAND_CENTRE)
        self.collector.subscribe(van.topics.telemetry)
        self.pid: int | None = None
        self.samples: queue.Queue[Sample] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.collector.next(timeout=0.5)
            except queue.Empty:
                continue
            now = time.monotonic()
            try:
                cpu = cpu_seconds(self.pid) if self.pid is not None else float("nan")
            except OSError:
                cpu = float("nan")
            self.samples.put(Sample(now, cpu, decode_telemetry(message.payload)))

    def next(self, timeout: float = 10.0) -> Sample:
        try:
            return self.samples.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no telemetry from the daemon within {timeout} s") from None

    def window(self, warmup_s: float, window_s: float) -> list[Sample]:
        """Telemetry over a steady window: skip `warmup_s`, then every message for `window_s`."""
        while not self.samples.empty():
            self.samples.get_nowait()
        steady_from = time.monotonic() + warmup_s
        first = self.next()
        while first.received < steady_from:
            first = self.next()
        window = [first]
        while window[-1].received - first.received < window_s:
            window.append(self.next())
        return window

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.collector.close()


@dataclass(frozen=True)
class Rates:
    """What one steady window of telemetry says about the daemon."""

    seconds: float
    fps: float
    faces_per_s: float
    cpu_percent: float  # 100 = one core busy
    frames: int
    dropped: int  # frames the pipeline had no time for (skipped for a newer one + camera-side skips)
    embeddings_per_s: float
    stage_ms: dict[str, float]
    rss_mb: float
    hwm_mb: float


def rates(window: list[Sample], pid: int) -> Rates:
    a, b = window[0].telemetry, window[-1].telemetry
    seconds = b.time - a.time
    cpu_wall = window[-1].received - window[0].received
    memory = memory_mb(pid)
    return Rates(
        seconds=round(seconds, 2),
        fps=round((b.frames - a.frames) / seconds, 2),
        faces_per_s=round((b.faces_seen - a.faces_seen) / seconds, 2),
        cpu_percent=round(100.0 * (window[-1].cpu_s - window[0].cpu_s) / cpu_wall, 1),
        frames=b.frames - a.frames,
        dropped=b.dropped_total - a.dropped_total,
        embeddings_per_s=round((b.faces_embedded - a.faces_embedded) / seconds, 2),
        stage_ms=b.stage_ms,
        rss_mb=memory.get("VmRSS", float("nan")),
        hwm_mb=memory.get("VmHWM", float("nan")),
    )


def simulator_camera(plan_file: Path, width: int, height: int, fps: float, realtime: bool) -> dict[str, Any]:
    return {
        "name": "cam0",
        "source": "simulator",
        "width": width,
        "height": height,
        "fps": fps,
        "options": {"plan_file": str(plan_file), "realtime": realtime, "loop": True},
    }


def street_plan(ctx: BenchContext, work: Path, crowd: float, duration_s: float) -> tuple[Path, dict[str, Any]]:
    """A seeded 1280x720, 25 fps street scene with `crowd` people in frame on average; its description."""
    from lfr_hwsim.facelocate import default_locator
    from lfr_hwsim.plan import PlanRequest, build_plan

    request = PlanRequest(
        ctx.faces_dir / "wild", seed=ctx.seed, width=1280, height=720, fps=25.0, duration_s=duration_s, crowd=crowd
    )
    plan = build_plan(request, default_locator())
    path = work / "plan.json"
    plan.save(path)
    scene = {
        "seed": ctx.seed,
        "width": 1280,
        "height": 720,
        "fps": 25.0,
        "duration_s": duration_s,
        "crowd": crowd,
        "walkers": len(plan.walkers),
    }
    return path, scene
