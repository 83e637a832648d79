"""The unit's registry of paired handsets: one JSON file per handset, public keys only."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from lfr_contracts.pairing import PairedHandset
from lfr_provision.identity import ProvisionError, write_file

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FILE_MODE = 0o640


@dataclass(frozen=True)
class HandsetEntry:
    handset_id: str
    paired_at: str
    path: Path


def _path(directory: Path, handset_id: str) -> Path:
    if not _ID.match(handset_id):
        raise ProvisionError(f"handset id {handset_id!r}: use 1-64 letters, digits, '-' or '_'")
    return directory / f"{handset_id}.json"


def is_paired(directory: Path, handset_id: str) -> bool:
    return _path(directory, handset_id).exists()


def register(directory: Path, handset: PairedHandset) -> Path:
    """Write handsets/<id>.json; pairing the same handset again replaces its keys."""
    path = _path(directory, handset.handset_id)
    write_file(path, handset.to_json().encode(), FILE_MODE, force=True)
    if os.geteuid() == 0:  # the technician runs as root; the daemon reads through the folder's group
        os.chown(path, 0, directory.stat().st_gid)
    return path


def load(path: Path) -> tuple[str, X25519PublicKey, Ed25519PublicKey]:
    """Read one registry file; a bad file is an error naming it (the daemon skips it and logs)."""
    try:
        data = json.loads(path.read_text())
        handset_id = data["handset_id"]
        x_key = serialization.load_pem_public_key(data["x25519_public"].encode())
        e_key = serialization.load_pem_public_key(data["ed25519_public"].encode())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProvisionError(f"{path}: not a handset registry file ({exc})") from exc
    if not isinstance(x_key, X25519PublicKey) or not isinstance(e_key, Ed25519PublicKey):
        raise ProvisionError(f"{path}: x25519_public / ed25519_public hold the wrong key types")
    if path.name != f"{handset_id}.json":
        raise ProvisionError(f"{path}: names handset {handset_id!r}, not its file name")
    return handset_id, x_key, e_key


def list_handsets(directory: Path) -> list[HandsetEntry]:
    entries = []
    for path in sorted(directory.glob("*.json")):
        handset_id, _, _ = load(path)
        paired_at = json.loads(path.read_text()).get("paired_at", "?")
        entries.append(HandsetEntry(handset_id, str(paired_at), path))
    return entries


def unpair(directory: Path, handset_id: str) -> Path:
    path = _path(directory, handset_id)
    if not path.exists():
        known = ", ".join(e.handset_id for e in list_handsets(directory)) or "none"
        raise ProvisionError(f"no paired handset {handset_id!r} in {directory} (paired: {known})")
    path.unlink()
    return path
