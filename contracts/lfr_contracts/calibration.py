"""The calibration table: what a cosine score means for one embedding model, measured on a face corpus.

The models build compares every pair of faces of the corpus with each embedder and writes, per model id,
how many pairs of *different* people (impostor pairs) and of the *same* person (genuine pairs) score at or
above each score of a fine grid. From it:

- the false-accept rate per comparison at a threshold (FAR), and the share of genuine pairs accepted;
- the threshold for a watchlist: a passer-by on no list is compared with every subject, so the chance of
  a false alert per passer-by is about N x FAR (exactly 1 - (1 - FAR)^N) for N subjects;
- a plain-language band for a score, for the officer's handset: the unit carries `ScoreRate` (its table's
  FAR at the alert's score and the list's size) inside each alert, and `alert_band` says it in words.

A corpus of P impostor pairs cannot show a FAR below 1/P: `threshold_for` says so (`supported`) and gives
the statistical bound instead of a figure the data cannot back. Pure encode/decode, no I/O; the file is
`calibration.json` beside the built models (layout: CALIBRATION_FILE).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from lfr_contracts.untrusted import JsonRefused, excerpt, loads_json

CALIBRATION_FILE = "calibration.json"
FORMAT = "lfr-calibration"
VERSION = 1
MAX_BYTES = 4 * 1024 * 1024
MAX_TABLES = 64
MAX_POINTS = 4001
MAX_PAIRS = 10**15
MODEL_ID = re.compile(r"[A-Za-z0-9._/+-]{1,128}")
# With no impostor pair at or above a threshold among P pairs, the FAR is below 3/P with 95% confidence
# (the "rule of three"); a figure below 1/P cannot be read from the table at all.
RULE_OF_THREE = 3.0
RATE = re.compile(r"\s*1\s+in\s+([0-9][0-9,_]*)\s*")
MAX_COMPARISONS = 10**8  # watchlist photos a passer-by is compared with: far above any list a unit holds


class CalibrationError(ValueError):
    """The calibration file (or a rate) is not one this module writes or reads; the message says what."""


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold for an asked false-accept rate per comparison, and what the corpus says about it."""

    threshold: float
    asked_far: float
    far: float  # impostor pairs accepted / impostor pairs, at the threshold
    far_bound: float  # what can be claimed: `far`, or 3 / pairs when none was accepted
    genuine_accept_rate: float
    supported: bool  # False: the corpus has too few impostor pairs to show the asked rate


@dataclass(frozen=True)
class CalibrationTable:
    """One model's counts. `scores` ascend; `false_accepts[i]` impostor pairs (and `genuine_accepts[i]`
    genuine pairs) scored at or above `scores[i]`."""

    model_id: str
    corpus: str
    impostor_pairs: int
    genuine_pairs: int
    impostor_max: float
    scores: tuple[float, ...]
    false_accepts: tuple[int, ...]
    genuine_accepts: tuple[int, ...]

    @property
    def lowest_far(self) -> float:
        """The smallest non-zero FAR the table can show: one impostor pair."""
        return 1.0 / self.impostor_pairs

    def _at(self, threshold: float) -> int:
        """The grid point at or below `threshold` (its counts are an upper bound at the threshold)."""
        return max(0, bisect_right(self.scores, threshold) - 1)

    def far(self, threshold: float) -> float:
        if threshold > self.impostor_max:
            return 0.0
        return self.false_accepts[self._at(threshold)] / self.impostor_pairs

    def far_bound(self, threshold: float) -> float:
        """The FAR that can be claimed at `threshold`: measured, or the rule-of-three bound when zero."""
        far = self.far(threshold)
        return far if far > 0 else RULE_OF_THREE / self.impostor_pairs

    def genuine_accept_rate(self, threshold: float) -> float:
        if self.genuine_pairs == 0:
            return 0.0
        if threshold <= self.scores[0]:
            return self.genuine_accepts[0] / self.genuine_pairs
        return self.genuine_accepts[self._at(threshold)] / self.genuine_pairs

    def threshold_for(self, far: float) -> ThresholdChoice:
        """The lowest grid score whose measured FAR is at most `far`. Below the table's resolution, the lowest
        score no impostor pair reached, flagged unsupported."""
        if not 0 < far < 1:
            raise CalibrationError(f"a false-accept rate must be between 0 and 1, not {far!r}")
        index = next(
            (i for i, count in enumerate(self.false_accepts) if count / self.impostor_pairs <= far),
            len(self.scores) - 1,
        )
        threshold = self.scores[index]
        if self.false_accepts[index] == 0:
            threshold = min(threshold, _just_above(self.impostor_max))
        return ThresholdChoice(
            threshold=round(threshold, 4),
            asked_far=far,
            far=self.far(threshold),
            far_bound=self.far_bound(threshold),
            genuine_accept_rate=self.genuine_accept_rate(threshold),
            supported=far * self.impostor_pairs >= 1.0,
        )

    def band(self, score: float) -> str:
        """A score in plain words, from how often two different people score that high."""
        far = self.far(score)
        if far >= 1e-2:
            words = "weak: unlikely to be the same person"
        elif far >= 1e-3:
            words = "possible: look closely"
        elif far >= 1e-4:
            words = "likely: check against the watchlist photo"
        elif far > 0:
            words = "strong"
        else:
            return (
                f"very strong: no two different people of the calibration corpus "
                f"({self.impostor_pairs:,} pairs) scored this high"
            )
        return f"{words} (about 1 in {1 / far:,.0f} pairs of different people score this high)"

    def rate(self, score: float, subjects: int, comparisons: int) -> ScoreRate:
        """What an alert at `score` on a list of this size carries for the handset's band."""
        return ScoreRate(self.far(score), self.impostor_pairs, subjects, comparisons)


@dataclass(frozen=True)
class ScoreRate:
    """One alert's score as the unit's calibration table reads it, with the list's size (inside the alert)."""

    false_accept_rate: float  # per comparison at the alert's score; 0: no impostor pair of the corpus scored so high
    impostor_pairs: int  # of the corpus: its resolution, and the 95% bound when the rate is 0
    subjects: int  # on the watchlist the score was found in
    comparisons: int  # watchlist photos each passer-by is compared with (a subject may have several)

    def check(self) -> None:
        """CalibrationError naming the field that is out of its range."""
        if not 0.0 <= self.false_accept_rate <= 1.0 or math.isnan(self.false_accept_rate):
            raise CalibrationError(f"false_accept_rate {excerpt(self.false_accept_rate)} is not a rate in [0, 1]")
        if not 1 <= self.impostor_pairs <= MAX_PAIRS:
            raise CalibrationError(f"impostor_pairs {excerpt(self.impostor_pairs)} is not between 1 and {MAX_PAIRS}")
        if 0 < self.false_accept_rate < 1 / self.impostor_pairs:
            raise CalibrationError(
                f"false_accept_rate {self.false_accept_rate:.3g} is below what {self.impostor_pairs:,} pairs can show"
            )
        if not 1 <= self.subjects <= self.comparisons <= MAX_COMPARISONS:
            raise CalibrationError(
                f"subjects {excerpt(self.subjects)} and comparisons {excerpt(self.comparisons)}: "
                f"need 1 <= subjects <= comparisons <= {MAX_COMPARISONS}"
            )


def alert_band(score: float, threshold: float, rate: ScoreRate | None) -> str:
    """An alert's score in plain words for the officer: how often people on no list score this high, from the
    unit's calibration table; without one (`rate` None), only how far above the threshold, and says so."""
    if rate is None:
        return f"not calibrated: {_margin_words(score - threshold)}"
    photos = "" if rate.comparisons == rate.subjects else f" ({rate.comparisons:,} photos)"
    size = f"with {rate.subjects:,} subject{'s' if rate.subjects != 1 else ''}{photos}"
    if rate.false_accept_rate > 0:
        passers = per_passer_by(rate.false_accept_rate, rate.comparisons)
        return (
            f"about {one_in(rate.false_accept_rate)} people on no list score this high against a watchlist photo; "
            f"{size}, {_share(passers)} passers-by"
        )
    bound = RULE_OF_THREE / rate.impostor_pairs
    return (
        f"no two different people of {rate.impostor_pairs:,} calibration pairs scored this high: rarer than "
        f"{one_in(bound)} per watchlist photo (95% bound); {size}, "
        f"rarer than {one_in(per_passer_by(bound, rate.comparisons))} passers-by"
    )


def _share(rate: float) -> str:
    """A share of passers-by: "1 in 33", or a percentage once it is one in two or more."""
    return one_in(rate) if rate < 0.5 else f"{rate:.0%} of"


def _margin_words(margin: float) -> str:
    if margin < 0:
        return "below the threshold"
    if margin < 0.05:
        return "just above the threshold, check carefully"
    if margin < 0.15:
        return "clearly above the threshold"
    return "far above the threshold"


def _just_above(score: float) -> float:
    return math.floor(score * 1e4 + 1) / 1e4


def per_passer_by(far: float, subjects: int) -> float:
    """The chance that one passer-by on no list alerts against `subjects` subjects: 1 - (1 - FAR)^N."""
    return -math.expm1(subjects * math.log1p(-far)) if far < 1 else 1.0


def parse_rate(text: str) -> float:
    """`"1 in 6000"` -> 1/6000 (a rate of false alerts per passer-by)."""
    match = RATE.fullmatch(text)
    if match is None:
        raise CalibrationError(f"{excerpt(text)}: give a rate as '1 in N', e.g. '1 in 6000'")
    n = int(match.group(1).replace(",", "").replace("_", ""))
    if not 1 < n <= 10**12:
        raise CalibrationError(f"'1 in {n}': N must be between 2 and 10^12")
    return 1.0 / n


def one_in(rate: float) -> str:
    """A rate as people say it: 1 in 6,000."""
    return "never" if rate <= 0 else f"1 in {1 / rate:,.0f}"


# Encode / decode -----------------------------------------------------------------------------------------


def encode(tables: Iterable[CalibrationTable]) -> bytes:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "tables": [
            {
                "model_id": t.model_id,
                "corpus": t.corpus,
                "impostor_pairs": t.impostor_pairs,
                "genuine_pairs": t.genuine_pairs,
                "impostor_max": t.impostor_max,
                "scores": list(t.scores),
                "false_accepts": list(t.false_accepts),
                "genuine_accepts": list(t.genuine_accepts),
            }
            for t in tables
        ],
    }
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    decode(data)  # what is written is what is read
    return data


def decode(data: bytes) -> dict[str, CalibrationTable]:
    """Tables by model id; CalibrationError naming the field for anything else."""
    try:
        doc = loads_json(data, max_bytes=MAX_BYTES, max_depth=4)
    except JsonRefused as exc:
        raise CalibrationError(f"calibration file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationError(f"not a calibration file (format {FORMAT!r} expected)")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise CalibrationError(f"calibration file version {excerpt(doc.get('version'))}: this reads {VERSION}")
    raw = doc.get("tables")
    if not isinstance(raw, list) or len(raw) > MAX_TABLES:
        raise CalibrationError(f"'tables' must be a list of at most {MAX_TABLES}")
    tables = [_table(t) for t in raw]
    by_id = {t.model_id: t for t in tables}
    if len(by_id) != len(tables):
        raise CalibrationError("two tables for one model id")
    return by_id


def _table(raw: Any) -> CalibrationTable:
    if not isinstance(raw, dict):
        raise CalibrationError("each table must be an object")
    model_id = raw.get("model_id")
    if not isinstance(model_id, str) or MODEL_ID.fullmatch(model_id) is None:
        raise CalibrationError(f"model_id {excerpt(model_id)} is not a model id")
    corpus = raw.get("corpus")
    if not isinstance(corpus, str) or len(corpus) > 200:
        raise CalibrationError(f"{model_id}: 'corpus' must be a short text")
    impostors = _count(raw, "impostor_pairs", model_id, MAX_PAIRS)
    genuine = _count(raw, "genuine_pairs", model_id, MAX_PAIRS)
    if impostors < 1:
        raise CalibrationError(f"{model_id}: 'impostor_pairs' must be at least 1")
    top = _score(raw.get("impostor_max"), f"{model_id}: impostor_max")
    scores = _column(raw, "scores", model_id, lambda v, where: _score(v, where))
    false_accepts = _column(raw, "false_accepts", model_id, lambda v, where: _int(v, where, impostors))
    genuine_accepts = _column(raw, "genuine_accepts", model_id, lambda v, where: _int(v, where, genuine))
    if not len(scores) == len(false_accepts) == len(genuine_accepts) >= 2:
        raise CalibrationError(f"{model_id}: scores, false_accepts and genuine_accepts must be equally long (2+)")
    if any(b <= a for a, b in pairwise(scores)):
        raise CalibrationError(f"{model_id}: scores must ascend")
    for name, column in (("false_accepts", false_accepts), ("genuine_accepts", genuine_accepts)):
        if any(b > a for a, b in pairwise(column)):
            raise CalibrationError(f"{model_id}: {name} must not grow as the score grows")
    if false_accepts[-1] != 0:
        raise CalibrationError(f"{model_id}: the grid must reach a score no impostor pair reached")
    return CalibrationTable(
        model_id, corpus, impostors, genuine, top, tuple(scores), tuple(false_accepts), tuple(genuine_accepts)
    )


def _count(raw: Mapping[str, Any], name: str, model_id: str, limit: int) -> int:
    return _int(raw.get(name), f"{model_id}: {name}", limit)


def _int(value: Any, where: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise CalibrationError(f"{where}: {excerpt(value)} is not a count between 0 and {limit}")
    return value


def _score(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not -1.0 <= value <= 1.0:
        raise CalibrationError(f"{where}: {excerpt(value)} is not a cosine score in [-1, 1]")
    return float(value)


def _column(raw: Mapping[str, Any], name: str, model_id: str, check: Any) -> list[Any]:
    values = raw.get(name)
    if not isinstance(values, list) or len(values) > MAX_POINTS:
        raise CalibrationError(f"{model_id}: '{name}' must be a list of at most {MAX_POINTS}")
    return [check(v, f"{model_id}: {name}[{i}]") for i, v in enumerate(values)]
