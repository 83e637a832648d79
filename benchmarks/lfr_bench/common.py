"""What every bench part shares: its context, its result, timing statistics, the machine, JSON and plots."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240601  # every random choice of the bench derives from this


@dataclass(frozen=True)
class BenchContext:
    out_dir: Path  # bench-results/
    quick: bool
    faces_dir: Path  # the corpus: wild/ and aligned/
    repo_root: Path
    models_from: Path | None = None  # development only: a folder with the raw source .tflite files
    seed: int = SEED

    @property
    def all_threads(self) -> int:
        return os.cpu_count() or 1


@dataclass
class PartResult:
    """One part's outcome. `measured` False means nothing was measured, and `reason` says why."""

    name: str
    measured: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    table: str = ""
    plots: list[str] = field(default_factory=list)
    summary: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.name,
            "measured": self.measured,
            "reason": self.reason,
            "summary": self.summary,
            "notes": self.notes,
            "plots": self.plots,
            "data": self.data,
        }


def not_measured(name: str, reason: str, summary_keys: Sequence[str] = ()) -> PartResult:
    return PartResult(name, False, reason, summary={k: None for k in summary_keys})


def ms_stats(samples: Sequence[float]) -> dict[str, float]:
    """Median and p99 (nearest rank) of millisecond samples, with the count they rest on."""
    if not samples:
        return {"n": 0, "median_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(samples)
    rank = max(0, int(np.ceil(0.99 * len(ordered))) - 1)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[rank], 3),
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable on a terminal)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if value != value else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    libs = ("numpy", "opencv-python-headless", "ai-edge-litert", "cryptography", "paho-mqtt", "matplotlib")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {lib: _version(lib) for lib in libs},
    }


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
