"""Applying bundles and close commands on the unit: every refusal leaves the held list unchanged."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.audit_events import (
    AuditEvent,
    WatchlistApplied,
    WatchlistRefused,
    WatchlistRefusedRepeats,
    WatchlistWiped,
    WipeReason,
)
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.store import WatchlistUnavailable
from lfr_edge.watchlist.sync import WatchlistSync
from watchlist_helpers import DIM, MODEL, NOW, Keys, make_bundle, subjects


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self.events.append(event)


class Harness:
    def __init__(self, keys: Keys, max_bytes: int = 100_000) -> None:
        self.keys = keys
        self.folder = Path(tempfile.mkdtemp(prefix="lfr-sync-"))
        self.signing = Ed25519PrivateKey.generate()
        self.clock = FakeClock(NOW)
        self.audit = RecordingAudit()
        self.acks: list[dict[str, Any]] = []
        self.max_bytes = max_bytes
        self.clock_synchronised = True
        self.sync = self.start()

    def start(self) -> WatchlistSync:
        """A sync as the daemon makes one at start, on this unit's lifecycle record."""
        return WatchlistSync(
            unit_id="unit-a",
            model_id=MODEL,
            embedding_dim=DIM,  # the made-up subjects' length
            command_centre_key=self.keys.centre.public_key(),
            unit_key=self.keys.unit,
            max_bundle_bytes=self.max_bytes,
            ack_topic="lfr/v1/units/unit-a/watchlist/ack",
            publish=self._publish,
            audit=self.audit,
            record=LifecycleFile(self.folder / "lifecycle.json", "unit-a", self.signing),
            clock=self.clock,
            clock_trusted=lambda: self.clock_synchronised,
        )

    def restart(self) -> None:
        self.sync.shutdown()
        self.sync = self.start()

    def _publish(self, topic: str, payload: bytes) -> bool:
        self.acks.append(json.loads(payload))
        return True

    def held(self) -> tuple[int, str] | None:
        store = self.sync.store
        return None if store is None else (store.version, store.digest)


@pytest.fixture
def applied() -> Harness:
    h = Harness(Keys())
    h.sync.handle_message("t", make_bundle(h.keys, version=5))
    assert h.acks[-1]["status"] == "applied"
    return h


def test_a_valid_bundle_is_applied_and_acked_with_version_and_digest() -> None:
    h = Harness(Keys())
    data = make_bundle(h.keys, version=7)
    h.sync.handle_message("t", data)
    ack = h.acks[-1]
    assert ack == {
        "status": "applied",
        "version": 7,
        "deployment": "DEP-1",
        "digest": ack["digest"],
        "subjects": 3,
    }
    assert h.held() == (7, ack["digest"])
    applied = h.audit.events[-1]
    assert isinstance(applied, WatchlistApplied) and (applied.deployment, applied.version) == ("DEP-1", 7)
    window = (bundle.iso(NOW - 60), bundle.iso(NOW + 3600))
    assert applied.subjects == 3 and (applied.valid_from, applied.valid_until) == window
    assert h.sync.store is not None and h.sync.store.subject(1).id == "S001"


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x40
    return bytes(b)


def _refusals(keys: Keys) -> dict[str, bytes]:
    good = make_bundle(keys, version=6)
    other_centre = Keys(centre=Ed25519PrivateKey.generate(), unit=keys.unit)
    return {
        "oversize": make_bundle(keys, version=6, subjects=subjects(2000)),
        "truncated": good[: len(good) - 10],
        "garbled": _flip(good, len(good) - 20),
        "bad_magic": b"GARBAGE" + good[7:],
        "bad_signature": make_bundle(other_centre, version=6),
        "wrong_unit": make_bundle(keys, version=6, unit_id="unit-b"),
        "wrong_model": make_bundle(keys, version=6, model_id="mobilefacenet/other/111111111111"),
        "expired": make_bundle(keys, version=6, valid_from=NOW - 7200, valid_until=NOW - 1),
        "replay": make_bundle(keys, version=5),
        "rollback": make_bundle(keys, version=4),
        "undecryptable": make_bundle(keys, version=6, unit_key=X25519PrivateKey.generate().public_key()),
    }


@pytest.mark.parametrize("reason", list(_refusals(Keys()).keys()))
def test_each_bad_bundle_is_refused_with_its_reason_and_the_held_list_is_unchanged(
    applied: Harness, reason: str
) -> None:
    before = applied.held()
    store_before = applied.sync.store
    payload = _refusals(applied.keys)[reason]
    if reason == "oversize":
        assert len(payload) > 100_000
    applied.sync.handle_message("t", payload)
    assert applied.acks[-1]["status"] == "refused"
    assert applied.acks[-1]["reason"] == reason, applied.acks[-1]
    assert isinstance(applied.audit.events[-1], WatchlistRefused)
    assert applied.held() == before
    assert store_before is not None and applied.sync.store is store_before
    assert store_before.is_usable(applied.clock.now)


def test_a_bundle_for_this_model_id_with_embeddings_of_another_length_is_refused(applied: Harness) -> None:
    """Signed for this unit's model id but 32 values a row where the model gives 16 (a command centre's bug):
    refused before decryption, the held list kept; applied, every search would fail."""
    vectors = np.eye(3, 32, dtype=np.float32)
    longer = [bundle.SubjectEntry(f"S{i}", "wanted", "", vectors[i : i + 1], b"\xff\xd8jpeg") for i in range(3)]
    before, store_before = applied.held(), applied.sync.store
    applied.sync.handle_message("t", make_bundle(applied.keys, version=6, subjects=longer))
    assert applied.acks[-1]["status"] == "refused" and applied.acks[-1]["reason"] == "wrong_model"
    assert "32 values" in applied.acks[-1]["detail"] and "gives 16" in applied.acks[-1]["detail"]
    assert applied.held() == before and applied.sync.store is store_before


def test_a_newer_version_replaces_and_wipes_the_old_store(applied: Harness) -> None:
    old = applied.sync.store
    assert old is not None
    old_matrix = old._matrix  # the live buffer itself: what wipe() must zero before dropping it
    applied.sync.handle_message("t", make_bundle(applied.keys, version=6))
    held = applied.held()
    assert held is not None and held[0] == 6
    assert not old.is_usable(applied.clock.now) and not old_matrix.any()


def test_expiry_wipes_with_a_fake_clock_and_search_refuses_even_before_the_timer(applied: Harness) -> None:
    store = applied.sync.store
    assert store is not None
    probe = np.zeros((1, 16), np.float32)
    store.search(probe, now=applied.clock.now)
    applied.clock.now = store.valid_until
    with pytest.raises(WatchlistUnavailable):
        store.search(probe, now=applied.clock.now)  # expired: refused even though not yet wiped
    assert applied.sync.check_expiry()
    assert applied.sync.store is None and not store.is_usable(applied.clock.now - 1)  # wiped, not just expired
    assert applied.audit.events[-1] == WatchlistWiped("DEP-1", 5, 3, WipeReason.EXPIRED)


def test_signed_close_for_the_held_deployment_wipes(applied: Harness) -> None:
    store = applied.sync.store
    close = bundle.build_close("DEP-1", "unit-a", applied.keys.centre, NOW, "n1")
    applied.sync.handle_message("t", close)
    assert applied.sync.store is None and store is not None and not store.is_usable(applied.clock.now)
    assert applied.acks[-1]["status"] == "closed"
    # the closed deployment is never applied again: not its bundle, not a newer version of it
    applied.sync.handle_message("t", make_bundle(applied.keys, version=5))
    assert applied.acks[-1]["reason"] == "deployment_ended" and applied.sync.store is None
    applied.sync.handle_message("t", make_bundle(applied.keys, version=9))
    assert applied.acks[-1]["reason"] == "deployment_ended" and applied.sync.store is None
    assert applied.sync.status().state == "closed" and applied.sync.status().deployment == "DEP-1"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda k: bundle.build_close("DEP-1", "unit-a", Ed25519PrivateKey.generate(), NOW, "n"),
            "bad_signature",
        ),
        (lambda k: bundle.build_close("DEP-1", "unit-b", k.centre, NOW, "n"), "wrong_unit"),
        (lambda k: bundle.build_close("DEP-1", "unit-a", k.centre, NOW - 3600, "n"), "stale_close"),
    ],
)
def test_bad_close_commands_are_refused_and_keep_the_list(applied: Harness, make: Any, reason: str) -> None:
    before = applied.held()
    applied.sync.handle_message("t", make(applied.keys))
    assert applied.acks[-1]["reason"] == reason
    assert applied.held() == before


def test_close_for_another_deployment_keeps_the_list(applied: Harness) -> None:
    before = applied.held()
    applied.sync.handle_message("t", bundle.build_close("DEP-2", "unit-a", applied.keys.centre, NOW, "n"))
    assert applied.held() == before


def test_shutdown_wipes(applied: Harness) -> None:
    store = applied.sync.store
    applied.sync.shutdown()
    assert applied.sync.store is None and store is not None and not store.is_usable(applied.clock.now)


def test_the_held_bundle_redelivered_after_a_reconnect_is_not_a_refusal() -> None:
    """The broker sends the retained bundle again on every resubscribe: quiet, no refusal, no audit."""
    h = Harness(Keys())
    data = make_bundle(h.keys, version=5)
    h.sync.handle_message("t", data)
    store, acks, events = h.sync.store, len(h.acks), len(h.audit.events)
    h.sync.handle_message("t", data)
    assert h.sync.store is store and len(h.acks) == acks and len(h.audit.events) == events
    # ... but a different message claiming the held version is still a replay, and so is the
    # same bundle once the list was wiped.
    h.sync.handle_message("t", make_bundle(h.keys, version=5))
    assert h.acks[-1]["reason"] == "replay" and isinstance(h.audit.events[-1], WatchlistRefused)


def test_after_a_restart_the_retained_bundle_is_applied_again_and_an_ended_deployment_never() -> None:
    h = Harness(Keys())
    data = make_bundle(h.keys, version=5)
    h.sync.handle_message("t", data)
    h.restart()
    assert h.sync.store is None and h.sync.status().state == "none"
    h.sync.handle_message("t", make_bundle(h.keys, version=5))  # another body claiming the held version
    assert h.acks[-1]["reason"] == "replay" and h.sync.store is None
    h.sync.handle_message("t", data)  # the broker's retained copy of what was held before the restart
    assert h.acks[-1]["status"] == "applied" and h.held() is not None
    h.sync.handle_message("t", bundle.build_close("DEP-1", "unit-a", h.keys.centre, NOW, "n1"))
    h.restart()
    h.sync.handle_message("t", data)
    assert h.acks[-1]["reason"] == "deployment_ended" and h.sync.store is None
    assert h.sync.status().state == "closed"
    h.sync.handle_message("t", make_bundle(h.keys, version=6, deployment="DEP-2"))
    assert h.acks[-1]["status"] == "applied"
    h.sync.handle_message("t", make_bundle(h.keys, version=7))  # DEP-1 again, newer: still ended
    assert h.acks[-1]["reason"] == "deployment_ended" and h.sync.status().deployment == "DEP-2"


def test_a_superseded_deployment_is_never_applied_again() -> None:
    h = Harness(Keys())
    h.sync.handle_message("t", make_bundle(h.keys, version=5))
    h.sync.handle_message("t", make_bundle(h.keys, version=6, deployment="DEP-2"))
    h.restart()
    h.sync.handle_message("t", make_bundle(h.keys, version=8))
    assert h.acks[-1]["reason"] == "deployment_ended"


def test_a_refused_bundle_on_an_empty_unit_is_its_status_after_a_restart() -> None:
    h = Harness(Keys())
    h.sync.handle_message("t", make_bundle(h.keys, version=5, unit_id="unit-b"))
    h.restart()
    status = h.sync.status()
    assert (status.state, status.reason, status.version) == ("refused", "wrong_unit", 5)
    assert "unit-b" in (status.detail or "")


def test_an_empty_retained_message_means_nothing_retained_not_a_refusal() -> None:
    h = Harness(Keys())
    h.sync.handle_message("t", b"")
    assert h.acks == [] and h.audit.events == [] and h.sync.status().state == "none"


def test_a_bundle_not_yet_valid_waits_and_is_applied_when_its_window_opens(applied: Harness) -> None:
    later = make_bundle(applied.keys, version=6, valid_from=NOW + 60, valid_until=NOW + 7200)
    applied.sync.handle_message("t", later)
    assert applied.acks[-1] == {"status": "waiting", "reason": "not_yet_valid", "version": 6}
    held = applied.held()
    assert held is not None and held[0] == 5
    assert not applied.sync.check_waiting()
    applied.clock.now = NOW + 61
    assert applied.sync.check_waiting()
    held = applied.held()
    assert applied.acks[-1]["status"] == "applied" and held is not None and held[0] == 6


def test_a_bundle_waits_while_the_clock_is_not_synchronised() -> None:
    h = Harness(Keys())
    h.clock_synchronised = False
    h.sync.handle_message("t", make_bundle(h.keys, version=5))
    assert h.sync.store is None and h.sync.status().reason == "clock_not_synchronised"
    h.clock_synchronised = True
    assert h.sync.check_waiting() and h.sync.store is not None


def test_a_flood_of_refusals_writes_one_line_per_reason_and_interval_and_acks_each(
    applied: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: each refused message wrote an fsync'd audit line and a WARNING (a flood wore the SD card)."""
    keys = applied.keys
    wrong_unit = [make_bundle(keys, version=100 + i, unit_id="unit-b") for i in range(30)]
    garbled = _flip(make_bundle(keys, version=6), -20)
    before = len(applied.audit.events)
    with caplog.at_level(logging.WARNING, logger="lfr_edge.watchlist.sync"):
        for payload in wrong_unit:
            applied.sync.handle_message("t", payload)
        applied.sync.handle_message("t", garbled)
        applied.clock.now += 30
        applied.sync.flush_refusals()  # the interval has not ended: nothing more is written
        written = applied.audit.events[before:]
        assert [(type(e), e.reason) for e in written if isinstance(e, WatchlistRefused)] == [
            (WatchlistRefused, "wrong_unit"), (WatchlistRefused, "garbled")
        ]  # fmt: skip
        assert len(written) == 2 and len(caplog.records) == 2
        applied.clock.now += 31  # the interval has ended: the repeats, one line
        applied.sync.flush_refusals()
    repeats = applied.audit.events[before + 2 :]
    assert len(repeats) == 1 and isinstance(repeats[0], WatchlistRefusedRepeats)
    assert (repeats[0].reason, repeats[0].count, repeats[0].version) == ("wrong_unit", 29, 129)
    assert repeats[0].since == bundle.iso(NOW) and repeats[0].until == bundle.iso(NOW)
    assert len(caplog.records) == 3 and "refused 29 more message(s) (wrong_unit)" in caplog.records[-1].getMessage()
    assert [a["status"] for a in applied.acks[-31:]] == ["refused"] * 31  # every message is still answered
    assert applied.sync.status().state == "active"  # the held list is untouched
    # After the interval, the next refusal is written in full again.
    applied.sync.handle_message("t", wrong_unit[0])
    assert isinstance(applied.audit.events[-1], WatchlistRefused)


def test_refusals_still_counted_at_shutdown_are_written(applied: Harness) -> None:
    for i in range(3):
        applied.sync.handle_message("t", make_bundle(applied.keys, version=100 + i, unit_id="unit-b"))
    applied.sync.shutdown()
    names = [e.name for e in applied.audit.events]
    assert names[-3:] == ["watchlist_refused", "watchlist_refused_repeats", "watchlist_wiped"]
