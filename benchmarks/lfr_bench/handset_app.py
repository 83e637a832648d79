"""`python -m lfr_bench.handset_app`: from the camera's frame to the alert's card on the officer's screen.

The real `lfr-edge run` on the simulator (real broker, real models) watches a replay in which a watchlisted
person appears, leaves (blank frames end the track) and comes back, so alerts follow each other every few
seconds (the match cooldown is 0 here). `lfr-handset app` serves the screen to Debian's chromium (headless,
Selenium). The page notes, at the first frame it paints with each new card, the time since the alert's frame
(`window.lfrTimings`, in the page's memory; the browser and the unit share this machine's clock). Reported:
p50 and p99 of frame -> card shown, beside frame -> decrypted at the handset, over `--alerts` alerts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lfr_edge.config import Config
from lfr_edge.vision.pipeline import build_pipeline
from lfr_hwsim.officer import PHONE, HandsetAppProcess, chromium, wait_until
from lfr_hwsim.van import SimulatedVan, Subject
from lfr_tools.command_centre.enrol import PipelineEnroller

WANTED = "7205"  # an identity of the face corpus's wild/ folder
FPS = 8.0


def replay_frames(faces: Path, folder: Path, gap_frames: int) -> list[Path]:
    """The wanted person's photos (each shown 3 frames, enough for a match), each followed by blank frames
    that end the track; the first two photos are the enrolment photos and are left out."""
    photos = sorted((faces / "wild" / WANTED).glob("*.jpg"))
    if len(photos) < 3:
        raise SystemExit(f"{faces / 'wild' / WANTED}: needs at least 3 photos of identity {WANTED}")
    folder.mkdir(parents=True)
    blank = folder.parent / "blank.jpg"  # outside the folder: the replay reads every picture in it
    cv2.imwrite(str(blank), np.zeros((500, 375, 3), np.uint8))
    n = 0
    for photo in photos[2:]:
        for item in [photo] * 3 + [blank] * gap_frames:
            (folder / f"{n:04d}.jpg").symlink_to(item.resolve())
            n += 1
    return photos[:2]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(faces: Path, alerts: int, gap_s: float, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lfr-bench-handset-") as tmp_dir:
        tmp = Path(tmp_dir)
        enrolment = replay_frames(faces, tmp / "frames", round(gap_s * FPS))
        with SimulatedVan(tmp / "van", unit_id="van-bench") as van:
            pipeline = build_pipeline(Config())
            subject = Subject("S-7205", "wanted", tuple(enrolment), "benchmark")
            bundle = van.build_watchlist([subject], PipelineEnroller(pipeline), threshold=0.5)
            van.publish_watchlist(bundle, wait_ack_s=None)
            camera = {
                "name": "cam0",
                "source": "replay",
                "uri": str(tmp / "frames"),
                "fps": FPS,
                "options": {"realtime": True, "loop": True},
            }
            config = van.write_config([camera], match={"cooldown_s": 0.0}, track={"max_missed_frames": 2})
            app = HandsetAppProcess(van, "handset-1", "--clear-decided-after", "5")
            browser = chromium(PHONE)
            daemon = van.start_daemon(config)
            try:
                daemon.wait_for("READY", timeout=120)
                browser.get(app.url)
                wait_until(browser, "document.body.dataset.ready === '1'")
                deadline = time.monotonic() + timeout_s
                timings: list[dict[str, Any]] = []
                while len(timings) < alerts and time.monotonic() < deadline:
                    time.sleep(1.0)
                    timings = browser.execute_script("return window.lfrTimings")
                load = os.getloadavg()
            finally:
                browser.quit()
                app.stop()
                daemon.terminate(timeout=10)
    if not timings:
        raise SystemExit("no alert reached the screen: see the daemon's log (LFR_DEMO_KEEP is not used here)")
    card = [t["frame_to_card_ms"] for t in timings]
    decoded = [t["frame_to_decoded_ms"] for t in timings if t["frame_to_decoded_ms"] is not None]
    return {
        "alerts": len(timings),
        "frame_to_card_ms": {"p50": percentile(card, 50), "p99": percentile(card, 99), "max": max(card)},
        "frame_to_decoded_ms": {"p50": percentile(decoded, 50), "p99": percentile(decoded, 99)},
        "decoded_to_card_ms_median": statistics.median(c - d for c, d in zip(card, decoded, strict=False)),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lfr_bench.handset_app", description=__doc__)
    p.add_argument("--faces", type=Path, default=Path(os.environ.get("LFR_FACES", "../shared/faces")))
    p.add_argument("--alerts", type=int, default=30, help="alerts to measure (default 30)")
    p.add_argument("--gap", type=float, default=1.5, help="seconds of blank frames between appearances")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--out", type=Path, default=Path("bench-results/handset-app.json"))
    args = p.parse_args(argv)
    result = measure(args.faces, args.alerts, args.gap, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    card, decoded = result["frame_to_card_ms"], result["frame_to_decoded_ms"]
    print(
        f"frame -> card shown in the browser: p50 {card['p50']:.0f} ms, p99 {card['p99']:.0f} ms "
        f"({result['alerts']} alerts); frame -> decrypted at the handset: p50 {decoded['p50']:.0f} ms, "
        f"p99 {decoded['p99']:.0f} ms; load average {result['load_average_1_5_15']} on {result['cpus']} CPUs"
    )
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
