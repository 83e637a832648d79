"""Unit side of the watchlist sync: apply bundles and close commands from the watchlist topic.

A message is verified, checked, decrypted and loaded into a NEW store, which then replaces the held one
in one assignment; any refusal leaves the held store exactly as it was. Every outcome is published on
`.../watchlist/ack` (an ack or a refusal with its reason), logged in one line and sent to the audit log.
The held list is wiped when its validity window ends (a timer, with an injectable clock), on a signed
close command for its deployment, and on shutdown.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.audit_events import (
    AuditSink,
    WatchlistApplied,
    WatchlistClose,
    WatchlistRefused,
    WatchlistWiped,
    WipeReason,
)
from lfr_edge.watchlist.store import WatchlistStore, release_freed_memory

log = logging.getLogger(__name__)


Publish = Callable[[str, bytes], bool]


class WatchlistSync:
    """Holds the current watchlist; `handle_message` is the handler for the unit's watchlist topic."""

    def __init__(
        self,
        *,
        unit_id: str,
        model_id: str,
        command_centre_key: Ed25519PublicKey,
        unit_key: X25519PrivateKey,
        max_bundle_bytes: int,
        ack_topic: str,
        publish: Publish,
        audit: AuditSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.unit_id = unit_id
        self.model_id = model_id
        self._cc_key = command_centre_key
        self._unit_key = unit_key
        self._max_bytes = max_bundle_bytes
        self._ack_topic = ack_topic
        self._publish = publish
        self._audit = audit
        self._clock = clock
        self._store: WatchlistStore | None = None
        self._highest_version: int | None = None  # survives wipes: a wiped list's bundle is not reapplied
        self._lock = threading.Lock()
        self._timer_stop = threading.Event()
        self._timer: threading.Thread | None = None

    # what the pipeline uses ------------------------------------------------------------------------

    @property
    def store(self) -> WatchlistStore | None:
        """The held store, or None. `store.search(probes, now, k)` refuses once it is wiped or expired."""
        return self._store

    # messages --------------------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Apply a bundle or a close command; never raises for bad input."""
        if payload[:4] == bundle.CLOSE_MAGIC:
            self._handle_close(payload)
        else:
            self._handle_bundle(payload)

    def _handle_bundle(self, payload: bytes) -> None:
        now = self._clock()
        try:
            opened = bundle.open_bundle(
                payload,
                command_centre_key=self._cc_key,
                unit_key=self._unit_key,
                unit_id=self.unit_id,
                model_id=self.model_id,
                now=now,
                held_version=self._highest_version,
                max_bytes=self._max_bytes,
            )
        except bundle.Replay as exc:
            if self._is_held(payload):
                # The broker re-delivers the retained bundle after every reconnect: not a replay attack.
                log.info("watchlist: version %s re-delivered after a reconnect; already held", self._highest_version)
                return
            self._refuse(exc, payload)
            return
        except bundle.BundleError as exc:
            self._refuse(exc, payload)
            return
        try:
            new_store = WatchlistStore.from_opened(opened)
        finally:
            opened.wipe()
        with self._lock:
            old, self._store = self._store, new_store
            self._highest_version = new_store.version
        if old is not None:
            old.wipe()
        release_freed_memory()
        header = new_store.header
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
        self._ack(
            {"status": "applied", "version": header.version, "deployment": header.deployment,
             "digest": header.body_sha256, "subjects": header.subjects}
        )  # fmt: skip

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
        version = _claimed_version(payload)
        log.warning("watchlist: refused a message (%s): %s; the held list is unchanged", exc.reason, exc)
        self._audit.append(WatchlistRefused(reason=exc.reason, detail=str(exc)[:500], version=version))
        self._ack({"status": "refused", "reason": exc.reason, "detail": str(exc), "version": version})

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
        if held is not None and held.deployment == close.deployment:
            self.wipe(WipeReason.CLOSED)
        self._audit.append(WatchlistClose(deployment=close.deployment, nonce=close.nonce))
        self._ack({"status": "closed", "deployment": close.deployment, "nonce": close.nonce})

    def _ack(self, body: dict[str, object]) -> None:
        if not self._publish(self._ack_topic, json.dumps(body).encode()):
            log.warning("watchlist: could not queue the ack on %s", self._ack_topic)

    # wiping ----------------------------------------------------------------------------------------

    def wipe(self, reason: WipeReason) -> None:
        """Zero and drop the held list (expired, closed, shutdown)."""
        with self._lock:
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
        held = self._store
        if held is not None and self._clock() >= held.valid_until:
            self.wipe(WipeReason.EXPIRED)
            return True
        return False

    def start_expiry_timer(self, period_s: float = 1.0) -> None:
        """Check expiry every `period_s` on a background thread (the store also refuses by itself)."""

        def run() -> None:
            while not self._timer_stop.wait(period_s):
                self.check_expiry()

        self._timer = threading.Thread(target=run, name="watchlist-expiry", daemon=True)
        self._timer.start()

    def shutdown(self) -> None:
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join(5)
        self.wipe(WipeReason.SHUTDOWN)


def _claimed_version(payload: bytes) -> int | None:
    """The version a refused bundle claims (unverified, for the refusal ack only)."""
    try:
        envelope = bundle.read_envelope(payload, max_bytes=len(payload))
    except bundle.BundleError:
        return None
    version = envelope.header.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None
