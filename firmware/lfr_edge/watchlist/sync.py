"""Unit side of the watchlist sync: apply bundles and close commands from the watchlist topic.

A message is verified, checked, decrypted and loaded into a NEW store, which then replaces the held one
in one assignment; any refusal leaves the held store exactly as it was. Every outcome is published on
`.../watchlist/ack` (an ack or a refusal with its reason), logged in one line and sent to the audit log.
The held list is wiped when its validity window ends (a timer, with an injectable clock), on a signed
close command for its deployment, and on shutdown.

What was applied, closed, superseded or refused is kept in the signed lifecycle record
(`lfr_edge.watchlist.lifecycle`), so a restart never brings back a deployment that ended. A verified bundle
whose window has not opened yet, or that arrives before the clock is known synchronised, waits in RAM and
is applied when it can be.

Refusals are aggregated: the first of each reason in `refusal_interval_s` is logged, audited and recorded
at once; the rest are counted and written as one `watchlist_refused_repeats` line (and one log line) per
reason when the interval ends, so a flood of bad messages cannot wear the SD card. Every refusal is still
acknowledged on the ack topic.

The expiry timer never depends on the audit log: a list whose window ended is wiped first, then the
wipe is written (the audit log counts what it cannot write), and the timer runs supervised
(lfr_edge.daemon.supervise), so an unexpected error is counted and the timer restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.acks import MAX_DETAIL, WatchlistAck, encode_ack
from lfr_contracts.audit_events import (
    AuditSink,
    WatchlistApplied,
    WatchlistClose,
    WatchlistRefused,
    WatchlistRefusedRepeats,
    WatchlistWiped,
    WipeReason,
)
from lfr_contracts.status import WatchlistStatus
from lfr_edge.daemon.supervise import Supervisor
from lfr_edge.watchlist import lifecycle
from lfr_edge.watchlist.lifecycle import HeldWatchlist, LifecycleFile, LifecycleState, Refusal
from lfr_edge.watchlist.store import WatchlistStore, release_freed_memory

log = logging.getLogger(__name__)


Publish = Callable[[str, bytes], bool]
REFUSAL_INTERVAL_S = 60.0


@dataclass
class _Repeats:
    """Refusals of one reason after the first in the current interval."""

    opened_at: float  # when the interval's first refusal of this reason came (that one was written in full)
    count: int = 0
    since: str = ""
    until: str = ""
    detail: str = ""
    version: int | None = None


@dataclass(frozen=True)
class _Waiting:
    """A verified bundle held back: its window opens at `valid_from`, or the clock is not trusted yet."""

    payload: bytes
    version: int | None
    valid_from: float
    reason: str


class WatchlistSync:
    """Holds the current watchlist; `handle_message` is the handler for the unit's watchlist topic."""

    def __init__(
        self,
        *,
        unit_id: str,
        model_id: str,
        embedding_dim: int | None = None,
        command_centre_key: Ed25519PublicKey,
        unit_key: X25519PrivateKey,
        max_bundle_bytes: int,
        ack_topic: str,
        publish: Publish,
        audit: AuditSink,
        record: LifecycleFile,
        clock: Callable[[], float] = time.time,
        clock_trusted: Callable[[], bool] = lambda: True,
        on_status: Callable[[WatchlistStatus], None] = lambda status: None,
        refusal_interval_s: float = REFUSAL_INTERVAL_S,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.model_id = model_id
        self.embedding_dim = embedding_dim  # a bundle of another length would break every search: refused
        self._cc_key = command_centre_key
        self._unit_key = unit_key
        self._max_bytes = max_bundle_bytes
        self._ack_topic = ack_topic
        self._publish = publish
        self._audit = audit
        self._record = record
        self._state = record.load()  # LifecycleError (edited or damaged record) stops the daemon
        self._clock = clock
        self._clock_trusted = clock_trusted
        self._on_status = on_status
        self._store: WatchlistStore | None = None
        self._waiting: _Waiting | None = None
        self._lock = threading.RLock()
        self._timer_stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._refusal_interval_s = refusal_interval_s
        self._repeats: dict[str, _Repeats] = {}
        self._record_unsaved = False  # a refusal counted in `_repeats` changed the state; saved at the flush
        self._supervisor = supervisor or Supervisor()

    # what the pipeline and the status use ----------------------------------------------------------

    @property
    def store(self) -> WatchlistStore | None:
        """The held store, or None. `store.search(probes, now, k)` refuses once it is wiped or expired."""
        return self._store

    @property
    def highest_version(self) -> int | None:
        return self._state.highest_version

    def status(self) -> WatchlistStatus:
        """What the unit holds now, or why it holds nothing."""
        held, waiting, refusal = self._store, self._waiting, self._state.last_refusal
        if held is not None:
            return WatchlistStatus(
                "active", held.deployment, held.version, held.size, held.valid_until, None, None
            )  # fmt: skip
        if waiting is not None:
            return WatchlistStatus("waiting", None, waiting.version, reason=waiting.reason)
        state = self._state.status
        if state == "refused" and refusal is not None:
            return WatchlistStatus("refused", None, refusal.version, reason=refusal.reason, detail=refusal.detail)
        if state in ("closed", "expired"):
            return WatchlistStatus(state, _last_ended(self._state))
        return WatchlistStatus("none")  # "active" in the record: the list is not re-applied yet since a restart

    # messages --------------------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Apply a bundle or a close command; never raises for bad input."""
        with self._lock:
            if not payload:
                log.info("watchlist: nothing is retained for this unit (the command centre cleared it)")
            elif payload[:4] == bundle.CLOSE_MAGIC:
                self._handle_close(payload)
            else:
                self._handle_bundle(payload)
        self._on_status(self.status())

    def _history(self) -> bundle.AppliedHistory:
        state = self._state
        return bundle.AppliedHistory(
            highest_version=state.highest_version,
            reapplicable_digest=None if self._store is not None else state.highest_digest,
            ended=frozenset(state.ended),
        )

    def _handle_bundle(self, payload: bytes) -> None:
        if not self._clock_trusted():
            self._wait(payload, self._clock(), "clock_not_synchronised")
            return
        try:
            opened = bundle.open_bundle(
                payload,
                command_centre_key=self._cc_key,
                unit_key=self._unit_key,
                unit_id=self.unit_id,
                model_id=self.model_id,
                now=self._clock(),
                history=self._history(),
                max_bytes=self._max_bytes,
                dim=self.embedding_dim,
            )
        except bundle.Replay as exc:
            if self._is_held(payload):
                # The broker re-delivers the retained bundle after every reconnect: not a replay attack.
                log.info("watchlist: version %s re-delivered after a reconnect; already held", self.highest_version)
                return
            self._refuse(exc, payload)
            return
        except bundle.NotYetValid as exc:  # raised after the signature check: the bundle is genuine
            self._wait(payload, _claimed_valid_from(payload), "not_yet_valid")
            log.info("watchlist: %s; it is applied when its window opens", exc)
            return
        except bundle.BundleError as exc:
            self._refuse(exc, payload)
            return
        self._waiting = None
        try:
            new_store = WatchlistStore.from_opened(opened)
        finally:
            opened.wipe()
        self._install(new_store)

    def _install(self, new_store: WatchlistStore) -> None:
        with self._lock:
            old, self._store = self._store, new_store
        if old is not None:
            old.wipe()
        release_freed_memory()
        header = new_store.header
        held = HeldWatchlist(header.deployment, header.version, header.subjects, header.valid_from, header.valid_until)
        self._save(lifecycle.applied(self._state, held, header.body_sha256))
        log.info(
            "watchlist: applied version %d of deployment %s (%d subjects, valid until %s)",
            header.version, header.deployment, header.subjects, bundle.iso(header.valid_until),
        )  # fmt: skip
        self._audit.append(
            WatchlistApplied(
                deployment=header.deployment,
                version=header.version,
                digest=header.body_sha256,
                subjects=header.subjects,
                valid_from=bundle.iso(header.valid_from),
                valid_until=bundle.iso(header.valid_until),
                replaced=old.version if old is not None else None,
            )
        )
        self._ack(WatchlistAck("applied", header.version, header.deployment, header.body_sha256, header.subjects))

    def _wait(self, payload: bytes, valid_from: float, reason: str) -> None:
        self._waiting = _Waiting(payload, _claimed_version(payload), valid_from, reason)
        self._ack(WatchlistAck("waiting", self._waiting.version, reason=reason))

    def _is_held(self, payload: bytes) -> bool:
        """The verified bundle (a Replay is raised after the signature check) is the one held now."""
        held = self._store
        if held is None:
            return False
        try:
            header = bundle.read_envelope(payload, max_bytes=len(payload)).header
        except bundle.BundleError:
            return False
        return header.get("body_sha256") == held.digest and header.get("version") == held.version

    def _refuse(self, exc: bundle.BundleError, payload: bytes) -> None:
        version, now = _claimed_version(payload), self._clock()
        self.flush_refusals()
        refusal = Refusal(exc.reason, str(exc), version, now)
        previous = self._state.last_refusal
        # An ended deployment's bundle (the broker's retained copy) leaves the status at closed or expired;
        # a repeated refusal is not written again, so a flood does not wear the SD card.
        repeated = previous is not None and (previous.reason, previous.version) == (refusal.reason, refusal.version)
        changes_state = not isinstance(exc, bundle.DeploymentEnded) and not repeated
        repeats = self._repeats.get(exc.reason)
        if repeats is None:  # the first of its reason in this interval: in full, at once
            self._repeats[exc.reason] = _Repeats(opened_at=now)
            log.warning("watchlist: refused a message (%s): %s; the held list is unchanged", exc.reason, exc)
            if changes_state:
                self._save(lifecycle.refused(self._state, refusal))
            self._audit.append(WatchlistRefused(reason=exc.reason, detail=str(exc)[:500], version=version))
        else:
            if changes_state:
                self._state, self._record_unsaved = lifecycle.refused(self._state, refusal), True
            repeats.count += 1
            repeats.since = repeats.since or bundle.iso(now)
            repeats.until, repeats.detail, repeats.version = bundle.iso(now), str(exc)[:500], version
        self._ack(WatchlistAck("refused", version, reason=exc.reason, detail=str(exc)[:MAX_DETAIL]))

    def flush_refusals(self, force: bool = False) -> None:
        """Write the refusals counted in intervals that have ended (all of them with `force`): one line each."""
        with self._lock:
            now = self._clock()
            ended = [
                reason
                for reason, r in self._repeats.items()
                if force or not 0 <= now - r.opened_at < self._refusal_interval_s
            ]
            for reason in ended:
                r = self._repeats.pop(reason)
                if not r.count:
                    continue
                log.warning(
                    "watchlist: refused %d more message(s) (%s) since %s; last: %s", r.count, reason, r.since, r.detail
                )
                self._audit.append(WatchlistRefusedRepeats(reason, r.count, r.since, r.until, r.detail, r.version))
            if self._record_unsaved and (force or not self._repeats):
                self._record_unsaved = False
                self._save(self._state)

    def _handle_close(self, payload: bytes) -> None:
        try:
            close = bundle.open_close(
                payload, command_centre_key=self._cc_key, unit_id=self.unit_id, max_bytes=self._max_bytes
            )
            held = self._store
            if held is not None and held.deployment == close.deployment and close.time < held.header.issued_at:
                raise bundle.StaleClose(
                    f"the close command ({bundle.iso(close.time)}) is older than the held bundle "
                    f"({bundle.iso(held.header.issued_at)})"
                )
        except bundle.BundleError as exc:
            self._refuse(exc, payload)
            return
        already = self._state.ending_of(close.deployment) == "closed"
        self._save(lifecycle.ended(self._state, close.deployment, "closed"))
        if self._waiting is not None and _claimed_deployment(self._waiting.payload) == close.deployment:
            self._waiting = None
        if held is not None and held.deployment == close.deployment:
            self._wipe(WipeReason.CLOSED)
        if not already:
            self._audit.append(WatchlistClose(deployment=close.deployment, nonce=close.nonce))
        self._ack(WatchlistAck("closed", deployment=close.deployment, nonce=close.nonce))

    def _ack(self, ack: WatchlistAck) -> None:
        if not self._publish(self._ack_topic, encode_ack(ack)):
            log.warning("watchlist: could not queue the ack on %s", self._ack_topic)

    def _save(self, state: LifecycleState) -> None:
        """Keep the new state in RAM whatever happens; a record that cannot be written is a logged fault."""
        self._state = state
        try:
            self._record.save(state)
        except OSError as exc:
            log.error("watchlist: cannot write the lifecycle record %s: %s", self._record.path, exc)

    # wiping ----------------------------------------------------------------------------------------

    def wipe(self, reason: WipeReason) -> None:
        """Zero and drop the held list (shutdown); an ended deployment goes through close or expiry."""
        with self._lock:
            self._wipe(reason)

    def _wipe(self, reason: WipeReason) -> None:
        old, self._store = self._store, None
        if old is None:
            return
        old.wipe()
        release_freed_memory()
        log.info("watchlist: wiped version %d of deployment %s (%s)", old.version, old.deployment, reason)
        self._audit.append(
            WatchlistWiped(deployment=old.deployment, version=old.version, subjects=old.header.subjects, reason=reason)
        )

    def check_expiry(self) -> bool:
        """Wipe the held list if its window has ended; True when it did."""
        with self._lock:
            held = self._store
            if held is None or self._clock() < held.valid_until or not self._clock_trusted():
                return False
            # The state in RAM first (status() reads it unlocked: never "none" between the wipe and the record),
            # then the wipe, before any I/O: neither the record nor the audit log can hold it up.
            self._state = lifecycle.ended(self._state, held.deployment, "expired")
            self._wipe(WipeReason.EXPIRED)
            self._save(self._state)
        self._on_status(self.status())
        return True

    def check_waiting(self) -> bool:
        """Apply the waiting bundle once its window has opened and the clock is trusted; True when tried."""
        waiting = self._waiting
        if waiting is None or not self._clock_trusted() or self._clock() < waiting.valid_from:
            return False
        self._waiting = None
        self.handle_message("", waiting.payload)
        return True

    def start_expiry_timer(self, period_s: float = 1.0) -> None:
        """Check expiry, waiting bundles and counted refusals every `period_s` on a supervised background
        thread (the store also refuses by itself once its window has ended)."""

        def run() -> None:
            while not self._timer_stop.wait(period_s):
                self.check_expiry()
                self.check_waiting()
                self.flush_refusals()

        self._timer = self._supervisor.start("watchlist-expiry", run, stop=self._timer_stop)

    def shutdown(self) -> None:
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join(5)
        self.flush_refusals(force=True)
        self.wipe(WipeReason.SHUTDOWN)


def _last_ended(state: LifecycleState) -> str | None:
    return next(reversed(state.ended), None)


def _claimed(payload: bytes, name: str) -> object:
    """A field a bundle claims (unverified, for acks and the waiting list only)."""
    try:
        envelope = bundle.read_envelope(payload, max_bytes=len(payload))
    except bundle.BundleError:
        return None
    return envelope.header.get(name)


def _claimed_version(payload: bytes) -> int | None:
    version = _claimed(payload, "version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _claimed_deployment(payload: bytes) -> str | None:
    deployment = _claimed(payload, "deployment")
    return deployment if isinstance(deployment, str) else None


def _claimed_valid_from(payload: bytes) -> float:
    try:
        return bundle.parse_time(str(_claimed(payload, "valid_from")))
    except (bundle.BundleError, ValueError):
        return 0.0
