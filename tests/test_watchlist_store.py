"""The in-memory store: search against a brute-force reference, sealed records, wipe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from lfr_contracts.bundle import AppliedHistory, open_bundle
from lfr_edge.config import MatchConfig
from lfr_edge.vision.match import Cooldowns, evaluate
from lfr_edge.vision.track import Track, TrackFace
from lfr_edge.watchlist.store import WatchlistStore, WatchlistUnavailable
from watchlist_helpers import MODEL, NOW, Keys, make_bundle, subjects, unit_vectors


def store_with(n: int, rows: int) -> tuple[WatchlistStore, Keys]:
    keys = Keys()
    data = make_bundle(keys, subjects=subjects(n, rows=rows, seed=3))
    opened = open_bundle(
        data, command_centre_key=keys.centre.public_key(), unit_key=keys.unit, unit_id="unit-a",
        model_id=MODEL, now=NOW, history=AppliedHistory(), max_bytes=1 << 24,
    )  # fmt: skip
    store = WatchlistStore.from_opened(opened)
    opened.wipe()
    return store, keys


@pytest.mark.parametrize("rows", [1, 3])
def test_search_matches_a_brute_force_reference(rows: int) -> None:
    store, _ = store_with(200, rows)
    matrix = unit_vectors(200 * rows, seed=3)
    probes = unit_vectors(7, seed=9)
    result = store.search(probes, now=NOW, k=5)
    per_subject = (probes @ matrix.T).reshape(7, 200, rows).max(axis=2)
    expected = np.argsort(-per_subject, axis=1)[:, :5]
    np.testing.assert_array_equal(result.indices, expected)
    np.testing.assert_allclose(result.scores, np.take_along_axis(per_subject, expected, axis=1), rtol=1e-5)


def test_k_larger_than_the_list_returns_every_subject_sorted() -> None:
    store, _ = store_with(3, 1)
    result = store.search(unit_vectors(1, seed=1), now=NOW, k=10)
    assert sorted(result.indices[0].tolist()) == [0, 1, 2]
    assert (np.diff(result.scores[0]) <= 0).all()


def test_subject_records_open_one_at_a_time() -> None:
    store, _ = store_with(4, 1)
    record = store.subject(2)
    assert (record.id, record.category, record.reference, record.photo_jpeg) == (
        "S002",
        "wanted",
        "ref 2",
        b"\xff\xd8jpeg2",
    )
    with pytest.raises(IndexError):
        store.subject(4)
    assert store.subject_id(3) == "S003"


def track_of(probes: np.ndarray) -> Track:
    track = Track(1, "cam0", (0.0, 0.0, 10.0, 10.0), NOW, NOW, 0)
    for i, probe in enumerate(probes):
        track.best.append(TrackFace(1.0, probe.astype(np.float32), np.zeros((112, 112, 3), np.uint8), i, NOW))
    return track


def test_matching_searches_the_store_itself_and_a_wiped_store_gives_nothing() -> None:
    store, _ = store_with(20, 1)
    subject_7 = unit_vectors(20, seed=3)[7]
    decisions = evaluate(track_of(np.stack([subject_7, subject_7])), store, MatchConfig(), Cooldowns(0), NOW)
    assert [(d.subject_index, d.subject_id, d.supporting_frames) for d in decisions] == [(7, "S007", 2)]
    assert decisions[0].score == pytest.approx(1.0, abs=1e-5) and decisions[0].threshold == store.threshold
    store.wipe()
    assert evaluate(track_of(np.stack([subject_7, subject_7])), store, MatchConfig(), Cooldowns(0), NOW) == []


def test_wipe_zeroes_the_matrix_and_refuses_everything_after() -> None:
    store, _ = store_with(50, 2)
    buffer = store._matrix  # the live buffer itself: what wipe() must zero before dropping it
    assert buffer.any()
    store.wipe()
    assert not buffer.any()
    with pytest.raises(WatchlistUnavailable):
        store.search(unit_vectors(1), now=NOW)
    with pytest.raises(WatchlistUnavailable):
        store.subject(0)


def test_the_matrix_is_locked_in_ram_when_running_as_root() -> None:
    store, _ = store_with(10, 1)
    if os.geteuid() != 0:
        pytest.skip("mlock of more than RLIMIT_MEMLOCK needs root or CAP_IPC_LOCK")
    assert store.locked


def test_harden_process_disables_core_dumps_in_a_child_process() -> None:
    code = (
        "import resource, ctypes, ctypes.util\n"
        "from lfr_edge.watchlist.store import harden_process\n"
        "assert harden_process() == []\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
