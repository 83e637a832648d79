"""What the officer's handset says about the unit: whether it runs, and the watchlist it holds or why none.

`lfr-handset listen` prints one line each time the unit's retained status changes (docs/lifecycle.md,
"What the unit says it holds"), so an officer whose van holds no list knows no alert can come.
"""

from __future__ import annotations

from lfr_contracts import bundle
from lfr_contracts.status import StatusError, UnitStatus
from lfr_contracts.untrusted import excerpt

NO_ALERTS = "no alert can come until the command centre sends a list"


def status_line(status: UnitStatus) -> str:
    """One line: `UNIT van-07 online: watchlist active: op-1 v3, 12 subjects, valid until ...` (printable:
    a control character in the message's text cannot drive the officer's terminal)."""
    return "".join(c if c.isprintable() else "?" for c in _line(status))


def _line(status: UnitStatus) -> str:
    head = f"UNIT {status.unit} {status.state} since {status.time[:40]}"
    watchlist = status.watchlist
    if watchlist is None:
        return f"{head}: watchlist not known (the unit is not connected)"
    line = f"{head}: watchlist {watchlist.summary()}"
    if watchlist.state == "active" and watchlist.valid_until is not None:
        return f"{line}, valid until {bundle.iso(watchlist.valid_until)}"
    if watchlist.state == "waiting":
        return f"{line} (not applied yet: no alert can come until it is)"
    if watchlist.state != "active":
        return f"{line} ({NO_ALERTS})"
    return line


def read_status(payload: bytes, unit_id: str) -> UnitStatus | None:
    """The unit's status from a retained message; None for a cleared one. StatusError for anything else, or a
    status naming another unit."""
    if not payload:
        return None
    status = UnitStatus.decode(payload)
    if status.unit != unit_id:
        raise StatusError(f"the status names unit {excerpt(status.unit)}, not {unit_id!r}")
    return status
