"""Keys and synthetic bundles for the watchlist tests (real crypto, made-up embeddings)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts.bundle import SubjectEntry, build_bundle

MODEL = "mobilefacenet/test/000000000000"
NOW = 1_800_000_000.0
DIM = 16


@dataclass
class Keys:
    centre: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    unit: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    normed: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return normed


def subjects(n: int = 3, rows: int = 1, seed: int = 0) -> list[SubjectEntry]:
    vecs = unit_vectors(n * rows, seed=seed)
    return [
        SubjectEntry(f"S{i:03d}", "wanted", f"ref {i}", vecs[i * rows : (i + 1) * rows], b"\xff\xd8jpeg%d" % i)
        for i in range(n)
    ]


default_subjects = subjects  # make_bundle's parameter of that name hides the function


def make_bundle(
    keys: Keys,
    *,
    subjects: list[SubjectEntry] | None = None,
    deployment: str = "DEP-1",
    unit_id: str = "unit-a",
    unit_key: X25519PublicKey | None = None,
    version: int = 1,
    valid_from: float = NOW - 60,
    valid_until: float = NOW + 3600,
    threshold: float = 0.5,
    model_id: str = MODEL,
    issued_at: float = NOW - 120,
) -> bytes:
    """A signed, sealed bundle of made-up subjects; any field can be overridden."""
    return build_bundle(
        subjects or default_subjects(),
        deployment=deployment,
        unit_id=unit_id,
        unit_key=unit_key or keys.unit.public_key(),
        version=version,
        valid_from=valid_from,
        valid_until=valid_until,
        threshold=threshold,
        model_id=model_id,
        sign_key=keys.centre,
        issued_at=issued_at,
    )
