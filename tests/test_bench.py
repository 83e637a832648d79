"""The bench's report writer and its 1:N metrics, on tiny hand-made data (nothing is timed here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lfr_bench import identification as idm
from lfr_bench.common import PartResult, format_table, ms_stats, not_measured
from lfr_bench.report import REQUIRED_SUMMARY, write_results

MACHINE = {"cpu": "test cpu", "cores": 2, "python": "3.11", "platform": "linux", "libraries": {"numpy": "2"}}


def test_summary_has_every_required_key_and_says_why_one_is_missing(tmp_path: Path) -> None:
    parts = [
        PartResult("perception", True, data={"rows": []}, table="| a |", summary={"fps_720p_5faces": 80.0}),
        not_measured("memory", "the daemon is not in this checkout", ("daemon_rss_mb_10k",)),
    ]
    doc = write_results(tmp_path, MACHINE, "python -m lfr_bench --quick", parts)
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert set(REQUIRED_SUMMARY) <= set(summary)
    assert summary["fps_720p_5faces"] == 80.0
    assert summary["daemon_rss_mb_10k"] is None
    assert doc["not_measured"]["daemon_rss_mb_10k"] == "the daemon is not in this checkout"
    report = (tmp_path / "REPORT.md").read_text()
    assert "test cpu, 2 cores" in report and "[memory.json](memory.json)" in report
    assert json.loads((tmp_path / "memory.json").read_text())["measured"] is False


def searches() -> idm.Searches:
    # 4 mated searches: rank-1 correct at 0.9, 0.7, 0.5; one wrong subject at 0.95.
    # 5 non-mated searches with top scores 0.1 .. 0.8.
    return idm.Searches(
        mated_hit=np.array([True, True, True, False]),
        mated_score=np.array([0.9, 0.7, 0.5, 0.95]),
        nonmated_score=np.array([0.1, 0.2, 0.3, 0.6, 0.8]),
    )


def test_fnir_and_fpir_at_a_threshold_count_rank_one_misses_and_alarms() -> None:
    s = searches()
    assert idm.fpir_at_threshold(s, 0.55) == pytest.approx(2 / 5)
    assert idm.fnir_at_threshold(s, 0.55) == pytest.approx(2 / 4)  # 0.5 below, and the wrong subject
    assert idm.fnir_at_threshold(s, 0.0) == pytest.approx(1 / 4)  # a wrong rank-1 subject never counts


def test_fnir_at_fpir_picks_the_threshold_that_keeps_fpir_within_bounds() -> None:
    s = searches()
    fnir, threshold = idm.fnir_at_fpir(s, 0.2)  # one of five non-mated searches may alarm
    assert threshold == pytest.approx(0.6)
    assert idm.fpir_at_threshold(s, threshold) <= 0.2
    assert fnir == pytest.approx(2 / 4)
    fnir0, threshold0 = idm.fnir_at_fpir(s, 0.0)
    assert threshold0 == pytest.approx(0.8) and fnir0 == pytest.approx(3 / 4)


def test_split_enrols_half_the_identities_and_probes_with_the_rest() -> None:
    labels = ["a", "a", "a", "b", "b", "b", "c", "c", "d", "d"]
    found = np.ones(len(labels), dtype=bool)
    found[0] = False  # a's first photo has no face: it cannot be a template
    split = idm.split_identities(labels, found, seed=1)
    assert len(split.enrolled) == 2
    every = sorted(split.enrol_rows + split.mated_rows + split.nonmated_rows)
    assert every == list(range(len(labels)))
    for row in split.enrol_rows:
        assert found[row] and labels[row] in split.enrolled
    for row in split.nonmated_rows:
        assert labels[row] not in split.enrolled


def test_rank1_search_uses_the_best_template_and_missing_faces_never_alarm() -> None:
    labels = ["a", "a", "a", "b", "b"]
    found = np.array([True, True, True, True, False])
    split = idm.IdentificationSplit(["a"], [0, 1], [2], [3, 4])
    scores = np.eye(5)
    scores[2, 1] = scores[1, 2] = 0.8  # probe 2 matches a's second template
    scores[3, 0] = scores[0, 3] = 0.4
    scores[4, 0] = scores[0, 4] = 0.99  # but photo 4 had no face
    s = idm.search_rank1(scores, labels, found, split)
    assert s.mated_hit.tolist() == [True] and s.mated_score.tolist() == [0.8]
    assert s.nonmated_score[0] == pytest.approx(0.4) and s.nonmated_score[1] == -np.inf


def test_verification_scores_fail_every_pair_of_a_photo_without_a_face() -> None:
    sim = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.3], [0.2, 0.3, 1.0]])
    gen, imp = idm.verification_scores(sim, ["x", "x", "y"], np.array([True, False, True]))
    assert gen.tolist() == [-np.inf]
    assert sorted(imp.tolist()) == [-np.inf, 0.2]


def test_ms_stats_and_tables_are_readable() -> None:
    stats = ms_stats([float(x) for x in range(1, 101)])
    assert stats == {"n": 100, "median_ms": 50.5, "p99_ms": 99.0}
    assert ms_stats([])["n"] == 0
    assert format_table(["a", "b"], [[1, 0.5]]).splitlines()[2] == "| 1 | 0.50 |"


def test_leave_one_out_identification_finds_mates_at_rank_one_above_the_top_non_mated_score() -> None:
    from lfr_bench.embedders import leave_one_out

    labels = [name for name in "abc" for _ in range(3)]  # two templates and one probe each
    scores = np.where(np.equal.outer(labels, labels), 0.9, 0.1)
    found = np.ones(9, dtype=bool)
    clean = leave_one_out(scores, labels, found)
    assert (clean["gallery"], clean["mated"], clean["nonmated"]) == (3, 3, 3)
    assert clean["at_fpir"][0] == {"fpir": 0.01, "tpir": 1.0, "threshold": 0.1}
    scores[2, [3, 4]] = scores[[3, 4], 2] = 0.95  # a's probe looks most like b
    confused = leave_one_out(scores, labels, found)
    assert confused["at_fpir"][0] == {"fpir": 0.01, "tpir": 0.0, "threshold": 0.95}  # a missed; b, c under 0.95
