"""Verification ROC and 1:N identification metrics the way NIST's FRVT/FRTE reports them.

- Verification: every unordered pair of photos; a photo where no face was found makes all its pairs
  fail (genuine pairs are rejected, impostor pairs are not accepted): failures to acquire count.
- Identification: a watchlist of enrolled subjects (a seeded half of the identities, each enrolled from
  its first `enrol_per_subject` photos with a face; a subject's score is the max over its templates, as
  the unit's store does), mated probes (their other photos) and non-mated probes (every photo of the
  identities not enrolled). At threshold t, FPIR is the share of non-mated searches whose top score is
  above t; FNIR is the share of mated searches whose rank-1 subject is not the mate or scores not above t.
  A probe without a detected face is a miss (mated) and raises no alarm (non-mated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lfr_tools.metrics import tar_at_far

F64 = npt.NDArray[np.float64]
MISSING = -np.inf  # the score of a comparison with a photo where no face was found


def verification_scores(
    scores: npt.NDArray[np.floating], labels: Sequence[str], found: npt.NDArray[np.bool_]
) -> tuple[F64, F64]:
    """(genuine, impostor) scores over all unordered pairs of a square similarity matrix."""
    sim = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(labels)
    i, j = np.triu_indices(len(ids), k=1)
    pair = sim[i, j]
    pair[~(found[i] & found[j])] = MISSING
    same = ids[i] == ids[j]
    return pair[same], pair[~same]


def roc_points(genuine: F64, impostor: F64, fars: Sequence[float]) -> list[dict[str, float]]:
    """TAR and threshold at each FAR (acceptance is score > threshold, as in lfr_tools.metrics)."""
    out = []
    for far in fars:
        tar, threshold = tar_at_far(genuine, impostor, far)
        out.append({"far": far, "tar": round(tar, 4), "threshold": round(threshold, 4)})
    return out


@dataclass(frozen=True)
class IdentificationSplit:
    enrolled: list[str]  # identities on the watchlist
    enrol_rows: list[int]  # photo indices used as enrolment templates
    mated_rows: list[int]
    nonmated_rows: list[int]


def split_identities(
    labels: Sequence[str], found: npt.NDArray[np.bool_], seed: int, enrol_per_subject: int = 2
) -> IdentificationSplit:
    """Seeded half of the identities enrolled from their first photos with a face; the rest probe."""
    identities = sorted(set(labels))
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(identities)[: len(identities) // 2].tolist())
    enrolled: list[str] = []
    enrol_rows: list[int] = []
    mated_rows: list[int] = []
    nonmated_rows: list[int] = []
    for identity in identities:
        rows = [i for i, label in enumerate(labels) if label == identity]
        if identity not in chosen:
            nonmated_rows.extend(rows)
            continue
        templates = [i for i in rows if found[i]][:enrol_per_subject]
        if not templates or len(rows) == len(templates):  # no template, or no photo left to probe
            nonmated_rows.extend(rows)
            continue
        enrolled.append(identity)
        enrol_rows.extend(templates)
        mated_rows.extend(i for i in rows if i not in templates)
    return IdentificationSplit(enrolled, enrol_rows, mated_rows, nonmated_rows)


@dataclass(frozen=True)
class Searches:
    """Rank-1 results: for mated probes whether the rank-1 subject is the mate, and every top score."""

    mated_hit: npt.NDArray[np.bool_]
    mated_score: F64
    nonmated_score: F64


def search_rank1(
    scores: npt.NDArray[np.floating],
    labels: Sequence[str],
    found: npt.NDArray[np.bool_],
    split: IdentificationSplit,
) -> Searches:
    """Rank-1 searches from a full photo x photo similarity matrix (higher is more similar)."""
    ids = np.asarray(labels)
    subjects = split.enrolled
    template_subject = np.array([subjects.index(ids[i]) for i in split.enrol_rows])
    sim = np.asarray(scores, dtype=np.float64)

    def top(rows: list[int]) -> tuple[npt.NDArray[np.int64], F64]:
        block = sim[np.ix_(rows, split.enrol_rows)]
        per_subject = np.full((len(rows), len(subjects)), -np.inf)
        for s in range(len(subjects)):
            per_subject[:, s] = block[:, template_subject == s].max(axis=1)
        best = per_subject.argmax(axis=1)
        best_score = per_subject[np.arange(len(rows)), best]
        best_score[~found[rows]] = MISSING
        return best, best_score

    mated_best, mated_score = top(split.mated_rows)
    mate = np.array([subjects.index(ids[i]) for i in split.mated_rows])
    _, nonmated_score = top(split.nonmated_rows)
    return Searches(mated_best == mate, mated_score, nonmated_score)


def fnir_at_threshold(s: Searches, threshold: float) -> float:
    return float(np.mean(~(s.mated_hit & (s.mated_score > threshold))))


def fpir_at_threshold(s: Searches, threshold: float) -> float:
    return float(np.mean(s.nonmated_score > threshold))


def fnir_at_fpir(s: Searches, fpir: float) -> tuple[float, float]:
    """(FNIR, threshold) at the lowest threshold whose FPIR does not exceed `fpir`."""
    imp = s.nonmated_score
    if len(imp) == 0 or len(s.mated_score) == 0:
        raise ValueError("fnir_at_fpir needs mated and non-mated searches")
    allowed = int(np.floor(fpir * len(imp)))
    threshold = float(np.partition(imp, len(imp) - 1 - allowed)[len(imp) - 1 - allowed])
    return fnir_at_threshold(s, threshold), threshold


def threshold_curve(s: Searches, points: int = 60) -> list[dict[str, float]]:
    """FNIR and FPIR across thresholds (the DET/threshold curve NIST plots)."""
    finite = np.concatenate([s.mated_score, s.nonmated_score])
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return []
    out = []
    for t in np.linspace(float(finite.min()), float(finite.max()), points):
        out.append(
            {
                "threshold": round(float(t), 4),
                "fnir": fnir_at_threshold(s, t),
                "fpir": fpir_at_threshold(s, t),
            }
        )
    return out
