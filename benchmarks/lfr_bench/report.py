"""bench-results/: one JSON per part, summary.json (the headline figures) and REPORT.md linking it all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfr_bench.common import PartResult, write_json

# The headline figures every run writes (null where not measured; REPORT.md says why).
REQUIRED_SUMMARY = (
    "fps_720p_5faces",
    "peer_fps_720p_5faces",
    "tar_far_1e3",
    "peer_tar_far_1e3",
    "fnir_fpir_1e3",
    "e2e_p99_ms",
    "daemon_rss_mb_10k",
    "search_ms_1m",
    "crowd_fps_20",
    "e2e_hog_p99_ms",
)

TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "fps_ratio_720p_5faces": ("at least 20x the peer's fps (720p, 5 faces)", lambda v: v >= 20),
    "daemon_rss_mb_10k": ("under 300 MB with 10,000 subjects (peak VmRSS at steady state)", lambda v: v < 300),
    "daemon_rss_steady_mb_10k": ("under 300 MB with 10,000 subjects (steady VmRSS)", lambda v: v < 300),
    "search_ms_1m": ("under 50 ms per probe at 1M subjects", lambda v: v < 50),
    "crowd_fps_20": ("at least 25 fps with 20 people in view (720p, best shots)", lambda v: v >= 25),
    "e2e_hog_p99_ms": ("frame to handset p99 under 100 ms with a CPU hog beside the daemon", lambda v: v < 100),
}


def summary_of(parts: list[PartResult]) -> dict[str, float | None]:
    summary: dict[str, float | None] = {key: None for key in REQUIRED_SUMMARY}
    for part in parts:
        summary.update(part.summary)
    return summary


def write_results(out_dir: Path, machine: dict[str, Any], command: str, parts: list[PartResult]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        write_json(out_dir / f"{part.name}.json", {"machine": machine, "command": command, **part.to_json()})
    summary = summary_of(parts)
    not_measured = {key: _reason(key, parts) for key, value in summary.items() if value is None}
    doc = {"machine": machine, "command": command, "summary": summary, "not_measured": not_measured}
    write_json(out_dir / "summary.json", doc)
    (out_dir / "REPORT.md").write_text(render_report(machine, command, summary, not_measured, parts))
    return doc


def _reason(key: str, parts: list[PartResult]) -> str:
    for part in parts:
        if key in part.summary:
            return part.reason or f"not produced by the {part.name} part"
    return "no part of this run measures it"


def render_report(
    machine: dict[str, Any],
    command: str,
    summary: dict[str, float | None],
    not_measured: dict[str, str],
    parts: list[PartResult],
) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    lines = [
        "# lfr-edge benchmark report",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}; {machine['platform']}",
        f"Libraries: {libs}",
        f"Command: `{command}`",
        "",
        "## Summary",
        "",
        "| figure | value | target |",
        "|---|---|---|",
    ]
    for key, value in summary.items():
        target = ""
        if key in TARGETS:
            text, check = TARGETS[key]
            target = text if value is None else f"{text}: {'met' if check(value) else 'NOT met'}"
        shown = "not measured" if value is None else f"{value:g}"
        lines.append(f"| `{key}` | {shown} | {target} |")
    if not_measured:
        lines += ["", "Not measured:", ""]
        lines += [f"- `{key}`: {why}" for key, why in not_measured.items()]
    for part in parts:
        lines += ["", f"## {part.name}", "", f"Data: [{part.name}.json]({part.name}.json)", ""]
        if not part.measured:
            lines.append(f"Not measured: {part.reason}")
            continue
        lines.append(part.table)
        lines.append("")
        lines += [f"- {note}" for note in part.notes]
        lines += [f"\n![{plot}]({plot})" for plot in part.plots]
    return "\n".join(lines) + "\n"
