"""`make demo` as the README gives it, and the timeline plot drawn from that run's own report.json: the fps
axis starts at 0, each alert is marked and labelled with its subject, the roof light's states and the dropped
frames are shown, and a caption says in plain words what the picture shows."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.patches import Rectangle

from lfr_hwsim.timeline import caption, draw_timeline

pytestmark = [pytest.mark.slow, pytest.mark.broker]

REPO = Path(__file__).resolve().parents[1]
MAKE_DEMO = "make demo"  # README.md, "Two commands"


def test_make_demo_writes_a_report_and_a_timeline_a_non_engineer_can_read(faces: Path) -> None:
    assert f"\n{MAKE_DEMO}    # " in (REPO / "README.md").read_text()
    # As a user runs it: not as a sub-make of `make test` (MAKEFLAGS would pass make test's variables on).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    started = time.time()
    done = subprocess.run(MAKE_DEMO.split(), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = REPO / "demo-results"
    png, report_file = out / "timeline.png", out / "report.json"
    assert "demo-results/timeline.png" in done.stdout, "the demo report names the plot"
    assert report_file.stat().st_mtime >= started and png.stat().st_mtime >= started
    report = json.loads(report_file.read_text())
    assert report["alerts"], "the demo's street has watchlisted walkers to alert"
    assert report["timeline"] and all(0 <= p["t_s"] <= report["duration_s"] + 15 for p in report["timeline"])

    fig = draw_timeline(report)
    ax_fps, ax_beacon, ax_drop = fig.axes
    assert ax_fps.get_ylim()[0] == 0 and ax_fps.get_ylim()[1] > max(p["fps"] for p in report["timeline"])
    labels = [t.get_text() for t in ax_fps.texts]
    for alert in report["alerts"]:
        assert any(alert["subject_id"] in label and alert["camera"] in label for label in labels), labels
    assert len(ax_fps.lines) == 1 + len(report["alerts"])  # the fps line and one marker per alert
    assert len(ax_beacon.patches) == len(report["beacon_states"]) and report["beacon_states"]
    heights = [bar.get_height() for bar in ax_drop.patches if isinstance(bar, Rectangle)]
    assert len(heights) == len(report["timeline"])
    assert sum(heights) == report["timeline"][-1]["dropped_frames"]
    (text,) = [t.get_text() for t in fig.texts]
    assert text.replace("\n", " ") == caption(report)
    assert f"Result: {report['true_alerts']} of the {report['watchlisted_passed']} watchlisted people" in caption(
        report
    )

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (750, 1100)
