"""Keys and synthetic bundles for the watchlist tests (real crypto, made-up embeddings)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

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


def make_bundle(keys: Keys, **overrides: object) -> bytes:
    args: dict[str, object] = {
        "deployment": "DEP-1",
        "unit_id": "unit-a",
        "unit_key": keys.unit.public_key(),
        "version": 1,
        "valid_from": NOW - 60,
        "valid_until": NOW + 3600,
        "threshold": 0.5,
        "model_id": MODEL,
        "sign_key": keys.centre,
        "issued_at": NOW - 120,
    }
    args.update(overrides)
    entries = args.pop("subjects", None) or subjects()
    return build_bundle(entries, **args)  # type: ignore[arg-type]
