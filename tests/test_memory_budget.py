"""The unit file's memory limits hold the largest watchlist the config accepts (issue 13, item 6).

`MemoryMax=` in systemd/lfr-edge.service kills the daemon when it is crossed, so it must hold the worst peak
a valid bundle can cause: a replacement as large as `watchlist.max_bundle_bytes` applied while a list of the
same size is held (the old list is wiped only once the new one is built). That peak is measured here with the
real watchlist sync in a process of its own (VmHWM over the process's resident size before the first bundle
arrives), and added to the daemon's resident size without a watchlist, which the memory benchmark measures
with the models loaded and a camera streaming (`python -m lfr_bench --quick 1 --parts memory`,
`daemon_rss_mb_no_watchlist`). Raising the bundle limit without the unit's memory, or lowering the memory
limits under the bundle limit, fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts.bundle import SubjectEntry, build_bundle
from lfr_edge.config import WatchlistConfig
from lfr_provision.broker_config import MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parents[1]
UNIT_FILE = ROOT / "systemd" / "lfr-edge.service"
MODEL = "mobilefacenet/test/000000000000"
DIM = 192  # the embedder's width
REFERENCE_BYTES = 4_600  # a 128 px reference JPEG, as enrolment makes it (lfr_bench memory: ~4.6 KB)
# The daemon's resident size with its models loaded and a camera streaming, before any watchlist: 126-131 MB
# over the memory benchmark's runs on this project's x86-64 machine (a Raspberry Pi's LiteRT is smaller).
DAEMON_WITHOUT_WATCHLIST_MIB = 135
# MemoryHigh throttles and reclaims; the peak must stay under it with this margin, and MemoryMax above it.
MARGIN = 1.10

APPLY = r"""
import json, sys, time
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from lfr_edge.audit.log import AuditLog
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.sync import WatchlistSync
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def status():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

folder = Path(sys.argv[1])
acks = []
audit = AuditLog.open(folder / "audit.jsonl", "unit-a")
sync = WatchlistSync(
    unit_id="unit-a", model_id=sys.argv[2],
    command_centre_key=serialization.load_pem_public_key((folder / "cc.pub").read_bytes()),
    unit_key=serialization.load_pem_private_key((folder / "unit.key").read_bytes(), None),
    max_bundle_bytes=int(sys.argv[3]), ack_topic="ack", publish=lambda t, p: acks.append(json.loads(p)) or True,
    audit=audit, record=LifecycleFile(folder / "lifecycle.json", "unit-a", Ed25519PrivateKey.generate()),
)
before = status()["VmRSS"]
for name in ("held.lfrwl", "replacement.lfrwl"):
    payload = (folder / name).read_bytes()  # the daemon holds the received message while the sync applies it
    sync.handle_message("lfr/v1/units/unit-a/watchlist", payload)
    del payload
print(json.dumps({"before": before, **status(), "acks": [a["status"] for a in acks]}))
"""


def memory_limits(unit_file: Path = UNIT_FILE) -> dict[str, int]:
    """MemoryHigh and MemoryMax of the unit file, in bytes (systemd's K, M and G are powers of 1024)."""
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}
    found = dict(re.findall(r"^(Memory(?:High|Max))=(\d+[KMG])$", unit_file.read_text(), re.M))
    return {key: int(value[:-1]) * scale[value[-1]] for key, value in found.items()}


def bundle_at(limit: int, keys: tuple[Ed25519PrivateKey, X25519PrivateKey], version: int) -> bytes:
    """The largest bundle under `limit` of subjects the size enrolment makes (one embedding, one reference)."""
    per_subject = DIM * 4 + REFERENCE_BYTES + 64
    count = int(limit * 0.99 / per_subject)
    rng = np.random.default_rng(version)
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    photo = b"\xff\xd8\xff" + bytes(REFERENCE_BYTES - 3)
    entries = [SubjectEntry(f"S{i:06d}", "wanted", "", vectors[i : i + 1], photo) for i in range(count)]
    data = build_bundle(
        entries, deployment="D-1", unit_id="unit-a", unit_key=keys[1].public_key(), version=version,
        valid_from=0.0, valid_until=4_000_000_000.0, threshold=0.5, model_id=MODEL, sign_key=keys[0],
        issued_at=1_700_000_000.0 + version,
    )  # fmt: skip
    assert limit * 0.9 < len(data) <= limit, (len(data), limit)
    return data


def test_the_unit_file_states_both_limits_and_the_broker_carries_the_largest_bundle() -> None:
    limits = memory_limits()
    assert set(limits) == {"MemoryHigh", "MemoryMax"} and limits["MemoryHigh"] < limits["MemoryMax"]
    # A bundle the unit accepts but the broker refuses would never arrive (docs/broker.md).
    assert WatchlistConfig().max_bundle_bytes <= MAX_MESSAGE_BYTES


@pytest.mark.slow
def test_a_replacement_at_the_bundle_limit_fits_under_the_units_memory_limits(tmp_path: Path) -> None:
    limit, limits = WatchlistConfig().max_bundle_bytes, memory_limits()
    keys = (Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
    (tmp_path / "cc.pub").write_bytes(
        keys[0].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "unit.key").write_bytes(
        keys[1].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    for name, version in (("held.lfrwl", 1), ("replacement.lfrwl", 2)):
        (tmp_path / name).write_bytes(bundle_at(limit, keys, version))
    done = subprocess.run(
        [sys.executable, "-c", APPLY, str(tmp_path), MODEL, str(limit)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["acks"] == ["applied", "applied"], measured
    watchlists = measured["VmHWM"] - measured["before"]
    peak = DAEMON_WITHOUT_WATCHLIST_MIB * 2**20 + watchlists
    print(
        f"\nbundle limit {limit / 2**20:g} MiB: held list plus a replacement at the limit peaked "
        f"{watchlists / 2**20:.0f} MiB over the process before them; with the daemon's "
        f"{DAEMON_WITHOUT_WATCHLIST_MIB} MiB, {peak / 2**20:.0f} MiB against MemoryHigh "
        f"{limits['MemoryHigh'] / 2**20:.0f} MiB and MemoryMax {limits['MemoryMax'] / 2**20:.0f} MiB"
    )
    assert peak * MARGIN <= limits["MemoryHigh"], (
        f"a {limit / 2**20:g} MiB bundle replacing one as large peaks at {peak / 2**20:.0f} MiB: lower "
        "watchlist.max_bundle_bytes or raise MemoryHigh/MemoryMax in systemd/lfr-edge.service with it"
    )
