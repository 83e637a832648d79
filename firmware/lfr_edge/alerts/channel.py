"""Alert channels: every output of the unit's prompts (paired handsets, the roof beacon) behind two methods.

The daemon keeps one list of channels and hands each alert to every channel in turn, the way Picamera2
hands each encoded frame to every output in an encoder's list. A channel knows nothing of the daemon: it
gets an `Alert` (plain data) and the unit's `UnitState` (plain data). One channel that fails is logged
and skipped; the others still get the alert and the pipeline goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lfr_contracts.alerts import Alert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitState:
    """What the unit is doing now, for the channels that show a standing state (the beacon's lamp)."""

    faults: tuple[str, ...] = ()  # why the unit is not scanning everywhere it should: "camera cam0 stalled"
    watchlist_active: bool = True  # False: no list is held (none yet, expired, closed, refused)

    @property
    def ok(self) -> bool:
        return not self.faults


class AlertChannel(Protocol):
    name: str  # for the log line when the channel fails

    def deliver(self, alert: Alert) -> None:
        """Prompt with one alert. Returns at once: the pipeline thread calls it."""
        ...

    def show_state(self, state: UnitState) -> None:
        """Show the unit's standing state; called when it changes. Returns at once."""
        ...


def deliver_to_all(channels: Sequence[AlertChannel], alert: Alert) -> None:
    """Every channel gets the alert, whatever another one does."""
    for channel in channels:
        try:
            channel.deliver(alert)
        except Exception:  # one broken output must not silence the others
            log.exception("alert %s: the %s channel failed; the others still get it", alert.alert_id, channel.name)


def show_state_on_all(channels: Sequence[AlertChannel], state: UnitState) -> None:
    for channel in channels:
        try:
            channel.show_state(state)
        except Exception:
            log.exception("the %s channel failed to show the unit's state %s", channel.name, state)
