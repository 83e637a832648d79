"""What the unit remembers of its deployments across restarts: never biometric data, only ids and counts.

The watchlist itself lives in RAM only and is gone after a restart; the broker still retains the last
bundle. Without a memory of what was closed, a restart would re-apply a deployment the command centre
closed. This record keeps, in the unit's state directory:

- the deployments that ended (closed by the command centre, superseded by another deployment, expired):
  none of them is ever applied again, whatever the broker retains;
- the highest bundle version applied and its body digest (that one bundle may be re-applied after a
  restart, an older one never);
- what the unit holds now (deployment, version, subjects, validity window) or why it holds nothing, with
  the last refusal, for the status people see.

It is signed with the unit's Ed25519 key and written atomically (a temporary file, fsync, rename, fsync of
the folder); an edited or damaged record is refused at start with the fix, never silently replaced.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lfr_contracts import crypto

FORMAT = 1
MAX_RECORD_BYTES = 1 << 20
MAX_ENDED = 10_000  # ended deployments remembered; the oldest are forgotten after years of daily use
Ending = Literal["closed", "superseded", "expired"]
End = Literal["closed", "expired"]  # what the unit is told or sees; "superseded" follows from an apply
Status = Literal["none", "active", "expired", "closed", "refused"]


class LifecycleError(Exception):
    """The lifecycle record cannot be trusted; the message names the file and what to do."""


@dataclass(frozen=True)
class HeldWatchlist:
    deployment: str
    version: int
    subjects: int
    valid_from: float
    valid_until: float


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    version: int | None
    time: float


@dataclass(frozen=True)
class LifecycleState:
    status: Status = "none"
    held: HeldWatchlist | None = None
    ended: dict[str, Ending] = field(default_factory=dict)  # deployment id -> how it ended, oldest first
    highest_version: int | None = None
    highest_digest: str | None = None
    last_refusal: Refusal | None = None

    def ending_of(self, deployment: str) -> Ending | None:
        return self.ended.get(deployment)


# transitions (pure) -----------------------------------------------------------------------------


def applied(state: LifecycleState, held: HeldWatchlist, digest: str) -> LifecycleState:
    """A bundle was applied; a different deployment held before is superseded for good."""
    ended = dict(state.ended)
    if state.held is not None and state.held.deployment != held.deployment:
        ended[state.held.deployment] = "superseded"
    return replace(
        state,
        status="active",
        held=held,
        ended=_bounded(ended),
        highest_version=max(held.version, state.highest_version or 0),
        highest_digest=digest if held.version >= (state.highest_version or 0) else state.highest_digest,
        last_refusal=None,
    )


def ended(state: LifecycleState, deployment: str, how: End) -> LifecycleState:
    """The deployment was closed or expired: it is never applied again."""
    endings = dict(state.ended)
    endings.pop(deployment, None)  # re-insert: the newest ending goes last, the oldest are dropped first
    endings[deployment] = how
    holding = state.held is not None and state.held.deployment == deployment
    return replace(
        state,
        status=how if holding or state.held is None else state.status,
        held=None if holding else state.held,
        ended=_bounded(endings),
    )


def refused(state: LifecycleState, refusal: Refusal) -> LifecycleState:
    """A bundle was refused: what is held stays; with nothing held, the status says why there is none."""
    return replace(state, status=state.status if state.held is not None else "refused", last_refusal=refusal)


def _bounded(endings: dict[str, Ending]) -> dict[str, Ending]:
    excess = len(endings) - MAX_ENDED
    return dict(list(endings.items())[excess:]) if excess > 0 else endings


# encoding (pure) --------------------------------------------------------------------------------


def encode_state(state: LifecycleState) -> dict[str, Any]:
    held, refusal = state.held, state.last_refusal
    return {
        "status": state.status,
        "held": None if held is None else vars(held),
        "ended": state.ended,
        "highest_version": state.highest_version,
        "highest_digest": state.highest_digest,
        "last_refusal": None if refusal is None else vars(refusal),
    }


def decode_state(data: Any) -> LifecycleState:
    """The inverse of `encode_state`; a value of the wrong shape is a LifecycleError."""
    try:
        held, refusal = data["held"], data["last_refusal"]
        state = LifecycleState(
            status=data["status"],
            held=None if held is None else HeldWatchlist(**held),
            ended=dict(data["ended"]),
            highest_version=data["highest_version"],
            highest_digest=data["highest_digest"],
            last_refusal=None if refusal is None else Refusal(**refusal),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LifecycleError(f"the record's fields are not the unit's ({exc})") from exc
    if state.status not in ("none", "active", "expired", "closed", "refused"):
        raise LifecycleError(f"the record's status {state.status!r} is not one the unit writes")
    return state


def seal_record(unit_id: str, state: LifecycleState, key: Ed25519PrivateKey) -> bytes:
    body = json.dumps({"format": FORMAT, "unit": unit_id, "state": encode_state(state)}, sort_keys=True).encode()
    signature = base64.b64encode(crypto.sign(key, body)).decode()
    return json.dumps({"record": body.decode(), "signature": signature}).encode() + b"\n"


def open_record(data: bytes, unit_id: str, key: Ed25519PublicKey) -> LifecycleState:
    if len(data) > MAX_RECORD_BYTES:
        raise LifecycleError(f"the record is {len(data)} bytes, more than the unit ever writes")
    try:
        outer = json.loads(data)
        body = outer["record"].encode()
        crypto.verify(key, base64.b64decode(outer["signature"], validate=True), body)
        inner = json.loads(body)
    except crypto.BadSignature as exc:
        raise LifecycleError("its signature does not verify: it was edited, or it is another unit's") from exc
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, RecursionError) as exc:
        raise LifecycleError(f"it is not a record the unit wrote ({type(exc).__name__})") from exc
    if not isinstance(inner, dict) or inner.get("format") != FORMAT or inner.get("unit") != unit_id:
        raise LifecycleError(f"it is not format {FORMAT} for unit {unit_id}")
    return decode_state(inner.get("state"))


# the file ---------------------------------------------------------------------------------------


class LifecycleFile:
    """The signed record on disk: `load()` once at start, `save(state)` after every transition."""

    def __init__(self, path: Path, unit_id: str, key: Ed25519PrivateKey) -> None:
        self.path = path
        self.unit_id = unit_id
        self._key = key

    def load(self) -> LifecycleState:
        """The saved state; a fresh unit (no file yet) starts with nothing held and nothing ended."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return LifecycleState()
        except OSError as exc:
            raise LifecycleError(f"{self.path}: cannot read the lifecycle record ({exc.strerror})") from exc
        try:
            return open_record(data, self.unit_id, self._key.public_key())
        except LifecycleError as exc:
            raise LifecycleError(
                f"{self.path}: the lifecycle record cannot be trusted: {exc}. The unit will not guess which "
                "deployments were closed: restore the file from the unit's backup, or, once the command centre "
                "confirms no closed deployment is still retained on the broker, move it aside and start again"
            ) from exc

    def save(self, state: LifecycleState) -> None:
        """Atomically: a reader (or a power cut) sees the old record or the new one, never half of one."""
        data = seal_record(self.unit_id, state, self._key)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
