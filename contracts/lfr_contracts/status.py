"""A unit's retained status message, and which watchlist it holds, as telemetry, STATUS=, the self-test and
the handset say it.

The status (Frigate's and Sparkplug's convention, see docs): `online` on every connect, the broker's retained
last will `offline` when the connection dies, an explicit `stopped` on a clean stop; `seq` grows per
connection, so a late will of an older connection is recognised. While online the unit re-publishes it
whenever its watchlist changes.

`active`: a list is held and searched. `none`: nothing applied yet (or nothing retained since a restart).
`expired`: the held list's window ended. `closed`: the command centre closed the deployment. `refused`: the
last bundle was refused and nothing is held; `reason` and `detail` say why. `waiting`: a bundle arrived but the
unit waits (its window opens later, or the clock is not yet synchronised).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from lfr_contracts.bundle import check_epoch
from lfr_contracts.untrusted import JsonRefused, excerpt, loads_json

WatchlistState = Literal["active", "none", "expired", "closed", "refused", "waiting"]
STATES: tuple[str, ...] = get_args(WatchlistState)
MAX_TEXT = 300


class StatusError(ValueError):
    """A status document is not one a unit writes."""


@dataclass(frozen=True)
class WatchlistStatus:
    state: WatchlistState
    deployment: str | None = None
    version: int | None = None
    subjects: int | None = None
    valid_until: float | None = None  # epoch seconds
    reason: str | None = None  # a refusal's or a wait's short code
    detail: str | None = None

    def summary(self) -> str:
        """One line for people: `active: op-1 v3, 12 subjects, valid until ...` or `refused: wrong_unit`."""
        if self.state == "active":
            return f"active: {self.deployment} v{self.version}, {self.subjects} subjects"
        if self.reason:
            return f"{self.state}: {self.reason}" + (f" ({self.detail})" if self.detail else "")
        return self.state if self.deployment is None else f"{self.state}: {self.deployment}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> WatchlistStatus:
        if not isinstance(data, dict) or data.get("state") not in STATES:
            state = excerpt(data.get("state")) if isinstance(data, dict) else f"a {type(data).__name__}"
            raise StatusError(f"not a watchlist status: state {state}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise StatusError(f"unknown watchlist status field(s) {', '.join(excerpt(k) for k in unknown[:5])}")
        for name in ("deployment", "reason", "detail"):
            if not isinstance(data.get(name, ""), str) or len(data.get(name, "")) > MAX_TEXT:
                raise StatusError(f"watchlist status {name} is not a short string")
        for name in ("version", "subjects"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StatusError(f"watchlist status {name} is not a count")
        until = data.get("valid_until", 0.0)
        if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
            raise StatusError("watchlist status valid_until is not a time")
        try:
            check_epoch(until, "watchlist status valid_until")  # every reader writes it as a date
        except ValueError as exc:
            raise StatusError(str(exc)) from None
        return cls(**data)


UnitState = Literal["online", "offline", "stopped"]
MAX_STATUS_BYTES = 4096
# The roof beacon, as the unit last found it: answering, not answering commands, or its port not open.
BeaconState = Literal["ok", "not_answering", "disconnected"]
BEACON_STATES: tuple[str, ...] = get_args(BeaconState)


@dataclass(frozen=True)
class UnitStatus:
    state: UnitState
    unit: str
    time: str  # ISO 8601 UTC, milliseconds
    seq: int
    watchlist: WatchlistStatus | None = None  # None in the last will: the broker sends it, not the unit
    model: str | None = None  # the embedding model the unit runs: a bundle must be enrolled with it
    beacon: BeaconState | None = None  # None: the unit has no beacon (or said nothing of it)

    def encode(self) -> bytes:
        body: dict[str, Any] = {"state": self.state, "unit": self.unit, "time": self.time, "seq": self.seq}
        if self.watchlist is not None:
            body["watchlist"] = self.watchlist.to_json()
        if self.model is not None:
            body["model"] = self.model
        if self.beacon is not None:
            body["beacon"] = self.beacon
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, payload: bytes) -> UnitStatus:
        """A `UnitStatus`, or StatusError: size, depth and numbers are bounded before parsing."""
        try:
            data = loads_json(payload, max_bytes=MAX_STATUS_BYTES)
        except JsonRefused as exc:
            raise StatusError(f"not a status message: {exc}") from None
        if not isinstance(data, dict) or data.get("state") not in ("online", "offline", "stopped"):
            state = excerpt(data.get("state")) if isinstance(data, dict) else f"a {type(data).__name__}"
            raise StatusError(f"not a status message: state {state}")
        unit, when, seq = data.get("unit"), data.get("time"), data.get("seq")
        if not isinstance(unit, str) or not isinstance(when, str) or isinstance(seq, bool) or not isinstance(seq, int):
            raise StatusError("a status message needs unit, time and seq")
        watchlist, model = data.get("watchlist"), data.get("model")
        if model is not None and (not isinstance(model, str) or len(model) > MAX_TEXT):
            raise StatusError("a status message's model is not a model id")
        beacon = data.get("beacon")
        if beacon is not None and beacon not in BEACON_STATES:
            raise StatusError(f"a status message's beacon is not one of {', '.join(BEACON_STATES)}")
        parsed = None if watchlist is None else WatchlistStatus.from_json(watchlist)
        return cls(data["state"], unit, when, seq, parsed, model, beacon)


def now_iso(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
