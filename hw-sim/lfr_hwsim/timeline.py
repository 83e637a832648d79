"""The demo's timeline plot, drawn from the demo's own report (report.json), for someone who is not an engineer.

Three panels share the time axis (seconds since the unit was ready): the frames the unit checked per second
(from 0, so a dip looks like one), each alert as a red line labelled with the subject it named; the roof
beacon's state as a coloured strip; the frames the unit had no time for, per telemetry interval. A caption
under them says in plain words what the picture shows and how the run went.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The beacon's patterns as someone in the street sees them (docs/beacon-protocol.md suggests these looks).
BEACON_LOOK = {
    "off": ("#bbbbbb", "off"),
    "idle": ("#2e9d3a", "running"),
    "alert": ("#d62728", "alert"),
    "fault": ("#ff9f1c", "fault"),
    "no_watchlist": ("#f6d55c", "no watchlist"),
}


def caption(report: dict[str, Any]) -> str:
    """What the picture shows and how the run went, in words a member of the public would use."""
    fps, passed = report["fps"], report["watchlisted_passed"]
    return (
        f"A {report['duration_s']:.0f}-second simulated street scene watched by the van's camera. "
        f"Top: how many camera pictures the unit checked for faces each second (typically {fps:.0f}; a "
        "line near the bottom would mean it fell behind). Each red line is a moment the unit "
        "recognised someone on the watchlist and alerted the officer's phone, labelled with that person's "
        "watchlist number. Middle: the light on the van's roof (green: running, red: alert, amber: a fault or "
        "no watchlist). Bottom: pictures the unit had no time to check. "
        f"Result: {report['true_alerts']} of the {passed} watchlisted people who walked past were alerted, "
        f"{report['missed']} missed, {report['false_alerts']} false or repeated alerts; "
        f"{report['passers_by']} people passed in all, and "
        + (
            "nothing of the others was kept."
            if report["non_match_files_written"] == 0
            else f"{report['non_match_files_written']} files were written that should not have been."
        )
    )


def draw_timeline(report: dict[str, Any]) -> Figure:
    """The figure for a demo report (report.json as `lfr-hwsim demo` writes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["timeline"]
    end = max([report["duration_s"], *(p["t_s"] for p in series)])
    fig, (ax_fps, ax_beacon, ax_drop) = plt.subplots(
        3, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [4, 0.6, 1.6]}
    )
    ax_fps.plot([p["t_s"] for p in series], [p["fps"] for p in series], color="#1f77b4", marker=".", label="fps")
    top = max([1.0, *(p["fps"] for p in series)]) * 1.35
    ax_fps.set_ylim(0, top)
    ax_fps.set_ylabel("frames checked per second")
    for n, alert in enumerate(report["alerts"]):
        ax_fps.axvline(alert["at_s"], color="#d62728", alpha=0.7)
        where = f"{alert['subject_id']}" + (f" ({alert['camera']})" if alert.get("camera") else "")
        right = alert["at_s"] > 0.85 * end  # near the right edge the label goes left of its line
        ax_fps.text(
            alert["at_s"],
            top * (0.96 - 0.08 * (n % 3)),
            f"{where} " if right else f" {where}",
            color="#d62728",
            fontsize=9,
            va="top",
            ha="right" if right else "left",
        )
    ax_fps.set_title(
        f"lfr-edge demo: {report['true_alerts']} alerted, {report['missed']} missed, "
        f"{report['false_alerts']} false (red lines: alerts, labelled with the subject)"
    )
    _beacon_strip(ax_beacon, report["beacon_states"], end)
    drops = [p["dropped_frames"] for p in series]
    per_interval = [b - a for a, b in zip([0, *drops], drops, strict=False)]
    ax_drop.bar([p["t_s"] for p in series], per_interval, width=0.8, color="#7f7f7f")
    ax_drop.set_ylim(0, max([1, *per_interval]) * 1.2)
    ax_drop.set_ylabel("frames dropped")
    ax_drop.set_xlabel("seconds since the unit was ready")
    ax_drop.set_xlim(0, end)
    fig.text(0.06, 0.015, textwrap.fill(caption(report), 150), fontsize=9, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig


def _beacon_strip(ax: Any, states: list[tuple[float, str]], end: float) -> None:
    """One coloured span per beacon state, from when it was seen until the next one."""
    for (start, pattern), stop in zip(states, [s[0] for s in states[1:]] + [end], strict=True):
        colour, words = BEACON_LOOK.get(pattern, ("#ffffff", pattern))
        ax.axvspan(max(0.0, start), stop, color=colour)
        if stop - start > end / 25:
            ax.text((max(0.0, start) + stop) / 2, 0.5, words, ha="center", va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_ylabel("roof light", rotation=0, ha="right", va="center")


def plot_timeline(report: dict[str, Any], path: Path) -> None:
    """Write the timeline PNG for a demo report."""
    import matplotlib.pyplot as plt

    fig = draw_timeline(report)
    fig.savefig(path, dpi=100)
    plt.close(fig)
