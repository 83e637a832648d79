"""Matching a track against the watchlist, and the decision to prompt an officer.

The track's best shots (the faces it embedded, each from its own frame, kept by quality) are searched
1:N against the held watchlist (one matrix product). A shot supports a subject when that subject is its
best match, the score clears the watchlist's threshold, and it beats the second-best subject by `margin`.
A subject is alerted when at least `min_frames` of the track's best shots support it (a track takes
that many shots from different frames before any other: lfr_edge.vision.track): once per track, and
not again for the same subject within `cooldown_s` (several cameras, or a person turning back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lfr_edge.config import MatchConfig
from lfr_edge.vision.track import Track
from lfr_edge.watchlist.store import SearchResult, WatchlistUnavailable


class Watchlist(Protocol):
    """What matching needs from the held watchlist (lfr_edge.watchlist.store.WatchlistStore is one)."""

    @property
    def threshold(self) -> float: ...

    def search(self, probes: npt.NDArray[np.float32], now: float, k: int = 3) -> SearchResult:
        """Top-k subjects per probe, best first; raises WatchlistUnavailable once wiped or expired."""
        ...

    def subject_id(self, index: int) -> str: ...


@dataclass(frozen=True)
class MatchDecision:
    track_id: int
    camera: str
    subject_index: int
    subject_id: str
    score: float  # best supporting cosine score
    second_best: float  # best score of any other subject in the supporting probes
    supporting_frames: int
    threshold: float


@dataclass
class Cooldowns:
    """Last alert time per subject, shared by all cameras of the unit, on the monotonic clock: a step of the
    wall clock (NTP at boot, a technician's `date`) neither silences a subject nor repeats its alert."""

    seconds: float
    last: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def apply(self, cfg: MatchConfig) -> None:
        """A reloaded [match] section: the new cooldown counts from each subject's last alert."""
        self.seconds = cfg.cooldown_s

    def ready(self, subject_id: str) -> bool:
        last = self.last.get(subject_id)
        return last is None or self.clock() - last >= self.seconds

    def mark(self, subject_id: str) -> None:
        self.last[subject_id] = self.clock()


def evaluate(
    track: Track, watchlist: Watchlist, cfg: MatchConfig, cooldowns: Cooldowns, now: float
) -> list[MatchDecision]:
    """The alerts this track's evidence justifies now (usually none; none from a wiped or expired list)."""
    probes = track.embeddings()
    if len(probes) < cfg.min_frames:
        probes.fill(0)
        return []
    try:
        found = watchlist.search(probes, now, max(2, cfg.top_k))
        if found.indices.shape[1] == 0:  # a list with no subjects
            return []
        threshold = watchlist.threshold
        best_idx, best = found.indices[:, 0], found.scores[:, 0]
        runner_up = found.scores[:, 1] if found.scores.shape[1] > 1 else np.full(len(best), -1.0, np.float32)
        supports = (best >= threshold) & (best - runner_up >= cfg.margin)
        candidates = [(int(i), watchlist.subject_id(int(i))) for i in np.unique(best_idx[supports])]
    except WatchlistUnavailable:  # wiped or expired between frames, or during this search
        return []
    finally:
        probes.fill(0)  # the track keeps its own; this copy of a passer-by's embeddings goes now
    decisions = []
    for subject_index, subject_id in candidates:
        rows = supports & (best_idx == subject_index)
        count = int(rows.sum())
        if count < cfg.min_frames or subject_id in track.alerted_subjects:
            continue
        if not cooldowns.ready(subject_id):
            continue
        track.alerted_subjects.add(subject_id)
        cooldowns.mark(subject_id)
        decisions.append(
            MatchDecision(
                track_id=track.id,
                camera=track.camera,
                subject_index=subject_index,
                subject_id=subject_id,
                score=float(best[rows].max()),
                second_best=float(runner_up[rows].max()),
                supporting_frames=count,
                threshold=threshold,
            )
        )
    return decisions
