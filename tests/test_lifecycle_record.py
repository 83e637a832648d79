"""The unit's lifecycle record: transitions, signature, atomic writes (the daemon-level tests restart a real
unit; these pin the record itself)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lfr_edge.watchlist import lifecycle
from lfr_edge.watchlist.lifecycle import HeldWatchlist, LifecycleError, LifecycleFile, LifecycleState, Refusal

UNIT = "van-07"


def held(deployment: str = "op-1", version: int = 3) -> HeldWatchlist:
    return HeldWatchlist(deployment, version, subjects=12, valid_from=1000.0, valid_until=2000.0)


def test_a_closed_deployment_stays_ended_and_a_new_one_supersedes_the_old() -> None:
    state = lifecycle.applied(LifecycleState(), held("op-1", 3), "d3")
    assert (state.status, state.highest_version, state.highest_digest) == ("active", 3, "d3")
    state = lifecycle.applied(state, held("op-2", 4), "d4")
    assert state.ending_of("op-1") == "superseded" and state.held == held("op-2", 4)
    state = lifecycle.ended(state, "op-2", "closed")
    assert state.status == "closed" and state.held is None and state.ending_of("op-2") == "closed"
    assert (state.highest_version, state.highest_digest) == (4, "d4")


def test_a_refusal_keeps_what_is_held_and_explains_an_empty_unit() -> None:
    no_list = lifecycle.refused(LifecycleState(), Refusal("wrong_unit", "for van-08", 5, 10.0))
    assert no_list.status == "refused" and no_list.last_refusal is not None
    holding = lifecycle.refused(lifecycle.applied(LifecycleState(), held(), "d"), Refusal("expired", "x", 2, 1.0))
    assert holding.status == "active" and holding.held == held()


def test_closing_another_deployment_leaves_the_held_one_alone() -> None:
    state = lifecycle.ended(lifecycle.applied(LifecycleState(), held("op-1"), "d"), "op-0", "closed")
    assert state.status == "active" and state.held == held("op-1") and state.ending_of("op-0") == "closed"


def test_the_oldest_endings_are_forgotten_first_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "MAX_ENDED", 3)
    state = LifecycleState()
    for n in range(5):
        state = lifecycle.ended(state, f"op-{n}", "closed")
    assert list(state.ended) == ["op-2", "op-3", "op-4"]


def test_the_record_round_trips_and_holds_no_biometric_data(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    record = LifecycleFile(tmp_path / "lifecycle.json", UNIT, key)
    assert record.load() == LifecycleState()  # a fresh unit
    state = lifecycle.refused(
        lifecycle.ended(lifecycle.applied(LifecycleState(), held(), "d3"), "op-1", "closed"),
        Refusal("closed", "deployment op-1 was closed", 3, 50.0),
    )
    record.save(state)
    assert record.load() == state
    assert os.stat(record.path).st_mode & 0o777 == 0o600
    inner = json.loads(json.loads(record.path.read_bytes())["record"])
    assert set(inner["state"]) == {"status", "held", "ended", "highest_version", "highest_digest", "last_refusal"}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda text: text.replace('\\"closed\\"', '\\"expired\\"'),
        lambda text: text.replace('\\"op-1\\": \\"closed\\"', '\\"op-9\\": \\"closed\\"'),
        lambda text: text[: len(text) // 2],
        lambda text: "{}",
    ],
)
def test_an_edited_or_damaged_record_is_refused_naming_the_file_and_the_fix(tmp_path: Path, tamper: object) -> None:
    key = Ed25519PrivateKey.generate()
    record = LifecycleFile(tmp_path / "lifecycle.json", UNIT, key)
    record.save(lifecycle.ended(LifecycleState(), "op-1", "closed"))
    assert callable(tamper)
    record.path.write_text(tamper(record.path.read_text()))
    with pytest.raises(LifecycleError, match=r"lifecycle\.json: the lifecycle record cannot be trusted.*restore"):
        record.load()


def test_another_units_record_or_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lifecycle.json"
    LifecycleFile(path, UNIT, Ed25519PrivateKey.generate()).save(LifecycleState())
    with pytest.raises(LifecycleError, match="signature does not verify"):
        LifecycleFile(path, UNIT, Ed25519PrivateKey.generate()).load()
    key = Ed25519PrivateKey.generate()
    LifecycleFile(path, "van-08", key).save(LifecycleState())
    with pytest.raises(LifecycleError, match=f"for unit {UNIT}"):
        LifecycleFile(path, UNIT, key).load()


def test_a_failed_write_leaves_the_previous_record_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    record = LifecycleFile(tmp_path / "lifecycle.json", UNIT, key)
    first = lifecycle.ended(LifecycleState(), "op-1", "closed")
    record.save(first)

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        record.save(lifecycle.ended(first, "op-2", "closed"))
    monkeypatch.undo()
    assert record.load() == first
