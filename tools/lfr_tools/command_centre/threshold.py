"""A watchlist's threshold from its size: `--false-alerts "1 in 6000"`, or `--threshold` and what it means.

A passer-by on no list is compared with every photo of every subject, so the chance of a false alert per
passer-by is about N x FAR for N comparisons. The models build measured each embedder's FAR at every score
on the face corpus (`calibration.json` beside the models, lfr_contracts.calibration); this turns an asked
rate of false alerts per passer-by into a threshold, and says what the corpus can and cannot back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lfr_contracts import calibration
from lfr_contracts.calibration import CalibrationTable, one_in, per_passer_by


class ThresholdError(ValueError):
    """No threshold can be set as asked; the message says what to do."""


@dataclass(frozen=True)
class ThresholdPlan:
    threshold: float
    lines: list[str]  # what to print: the expected rates, and any warning


def load_table(models_dir: Path, model_id: str) -> CalibrationTable | None:
    """The model's table from `calibration.json` in the models folder; None when there is none for it."""
    path = models_dir.expanduser() / calibration.CALIBRATION_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ThresholdError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return calibration.decode(data).get(model_id)
    except calibration.CalibrationError as exc:
        raise ThresholdError(f"{path}: {exc}; run `make models` to measure it again") from exc


def plan(
    table: CalibrationTable | None,
    *,
    subjects: int,
    comparisons: int,
    false_alerts: float | None,
    threshold: float | None,
    where: str,
) -> ThresholdPlan:
    """The threshold to write into the bundle, and the lines that explain it. `comparisons`: embedding rows
    (a subject with two photos is compared twice)."""
    if false_alerts is None and threshold is None:
        raise ThresholdError('give --false-alerts "1 in N" (a threshold from the list\'s size) or --threshold')
    if table is None:
        if threshold is None:
            raise ThresholdError(
                f"no calibration table for this model in {where}: run `make models` (it measures one for every "
                "embedder), or give --threshold"
            )
        return ThresholdPlan(threshold, [f"threshold {threshold:g} (no calibration table in {where}: rates unknown)"])
    size = f"{subjects:,} subjects ({comparisons:,} photos compared with each passer-by)"
    lines: list[str] = []
    asked_threshold = 0.0
    if false_alerts is not None:
        choice = table.threshold_for(false_alerts / comparisons)
        asked_threshold = choice.threshold
        chosen = choice.threshold if threshold is None else threshold
        lines.append(f"asked: {one_in(false_alerts)} passers-by alerting falsely, with {size}")
        if not choice.supported:
            lines.append(_unsupported(table, false_alerts, comparisons, choice.threshold))
    else:
        chosen = threshold if threshold is not None else 0.0
    lines += describe(table, chosen, comparisons, size)
    if threshold is not None and false_alerts is not None:
        implied = per_passer_by(table.far(threshold), comparisons)
        if implied > false_alerts:
            lines.append(
                f"warning: --threshold {threshold:g} overrides the {asked_threshold:g} "
                f"that --false-alerts asks for, and implies {one_in(implied)} passers-by alerting falsely, worse "
                f"than the {one_in(false_alerts)} asked"
            )
    return ThresholdPlan(chosen, lines)


def describe(table: CalibrationTable, threshold: float, comparisons: int, size: str) -> list[str]:
    """What the corpus says about `threshold` for a list of this size."""
    far = table.far(threshold)
    if far > 0:
        rate = f"{one_in(per_passer_by(far, comparisons))} passers-by (false-accept rate {far:.2g} per comparison)"
    else:
        bound = per_passer_by(table.far_bound(threshold), comparisons)
        rate = (
            f"at most {one_in(bound)} passers-by (no impostor pair of the corpus scored this high; "
            f"95% bound {table.far_bound(threshold):.2g} per comparison)"
        )
    found = table.genuine_accept_rate(threshold)
    return [
        f"threshold {threshold:g} for {size}",
        f"expected false alerts: {rate}",
        f"listed people found: about {100 * found:.0f}% (genuine pairs of the calibration corpus accepted)",
        f"calibration: {table.model_id}, {table.impostor_pairs:,} impostor and {table.genuine_pairs:,} genuine pairs "
        f"({table.corpus})",
    ]


def _unsupported(table: CalibrationTable, asked: float, comparisons: int, threshold: float) -> str:
    bound = per_passer_by(table.far_bound(threshold), comparisons)
    return (
        f"warning: the corpus cannot show this: {one_in(asked)} passers-by with {comparisons:,} comparisons needs a "
        f"false-accept rate of {asked / comparisons:.2g} per comparison, below the {table.lowest_far:.2g} that its "
        f"{table.impostor_pairs:,} impostor pairs can resolve. The threshold is set just above the highest impostor "
        f"score ({table.impostor_max:.4f}); all the corpus can promise there is at most {one_in(bound)} passers-by "
        "(95% confidence). "
        "Measure the rate on a larger set (lfr-evaluate with volunteers) before relying on it"
    )
