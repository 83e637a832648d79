"""Where a provisioned unit keeps its files, relative to the root the technician provisions into.

All keys are PEM: private keys unencrypted PKCS#8 (mode 0600, owned by the service user), public keys
SubjectPublicKeyInfo, TLS requests and certificates X.509 PEM. The daemon's config names the directories
(unit.keys_dir, mqtt.*_file, alerts.handsets_dir); the file names inside them are fixed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "lfr-edge"
DEFAULT_CONFIG = Path("/etc/lfr-edge/config.toml")  # what the unit file and every tool read by default
UNIT_X25519_KEY = "unit-x25519.key"  # opens watchlist bundles sealed to this unit
UNIT_X25519_PUB = "unit-x25519.pub"  # sent to the command centre, which seals bundles to it
UNIT_ED25519_KEY = "unit-ed25519.key"  # signs the unit's decisions, audit heads, pairing replies
UNIT_ED25519_PUB = "unit-ed25519.pub"
COMMAND_CENTRE_PUB = "command-centre.pub"  # verifies watchlist bundles (Ed25519)
TLS_KEY = "unit.key"
TLS_CSR = "unit.csr"
TLS_CERT = "unit.crt"  # CN = the unit id: the daemon's identity on the broker
TLS_PAIRING_CERT = "pairing.crt"  # CN = pairing_identity(unit id), same key: `lfr-provision pair-handset`
TLS_CA = "ca.crt"
LIFECYCLE_RECORD = "lifecycle.json"  # in unit.state_dir: deployments applied and ended, signed (never biometric)
# beside unit.audit_log: `lfr-provision pair-handset`'s own hash-chained log (pairings, refused requests); the
# daemon is the only writer of the unit's audit log
PAIRING_AUDIT_LOG = "pairing-audit.jsonl"
# The broker binds each client id to its certificate's CN (one connection per identity), so the pairing
# helper, which runs beside the daemon, has an identity of its own. No unit or handset id contains a ".".
PAIRING_IDENTITY_SUFFIX = ".pairing"


def pairing_identity(unit_id: str) -> str:
    """The broker identity (certificate CN) of a unit's pairing helper."""
    return unit_id + PAIRING_IDENTITY_SUFFIX


@dataclass(frozen=True)
class UnitLayout:
    """The unit's paths under `root` ("/" on a board; a folder for a unit rehearsed on a desk, bench mode,
    whose config then names these paths inside the folder)."""

    root: Path

    def inside(self, absolute: str | Path) -> Path:
        """Map an absolute path on the unit to its place under root."""
        return self.root / Path(absolute).relative_to("/")

    @property
    def etc(self) -> Path:
        return self.inside("/etc/lfr-edge")

    @property
    def config(self) -> Path:
        return self.etc / "config.toml"

    @property
    def keys(self) -> Path:
        return self.etc / "keys"

    @property
    def tls(self) -> Path:
        return self.etc / "tls"

    @property
    def handsets(self) -> Path:
        return self.etc / "handsets"

    @property
    def state(self) -> Path:
        return self.inside("/var/lib/lfr-edge")
