"""The held watchlist, in RAM only: one locked float32 matrix for 1:N search, sealed subject records.

- Embeddings live in one contiguous (rows x dim) L2-normalised float32 matrix, locked in RAM with
  mlock(2) where the OS allows (one log line when it cannot, with the reason).
- Subject records (id, category, reference text, photo) are re-encrypted with a key that exists only
  in this process's memory, and opened one at a time to build an alert.
- Nothing is ever written to disk; `wipe()` zeroes the matrix and the sealed records before dropping them.
- An expired list is never searched: `search` takes `now` and refuses once `valid_until` has passed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import resource
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lfr_contracts.bundle import BundleHeader, OpenedBundle, iso

log = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4
_NONCE = 12


class WatchlistUnavailable(RuntimeError):
    """The store was wiped or its validity window has ended: it must not be matched against."""


@dataclass(frozen=True)
class SubjectRecord:
    id: str
    category: str
    reference: str
    photo_jpeg: bytes


@dataclass(frozen=True)
class SearchResult:
    """Top-k subjects per probe, best first: subject indices (P x k) and cosine scores (P x k)."""

    indices: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def release_freed_memory() -> None:
    """Hand the heap freed by a bundle's temporary copies back to the OS (glibc keeps it otherwise, and
    the daemon's resident memory would stay at its peak). A no-op where malloc_trim does not exist."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


def harden_process() -> list[str]:
    """No core dumps and not dumpable (no ptrace by other users' processes, no /proc/PID/mem reads).

    Returns what could not be done, for the daemon to log; the daemon calls this once at start.
    """
    problems = []
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        problems.append(f"cannot set RLIMIT_CORE to 0: {exc}")
    libc = _libc()
    if libc is None:
        problems.append("libc not found: cannot call prctl(PR_SET_DUMPABLE, 0)")
    elif libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        problems.append(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}")
    return problems


class _MemoryLock:
    """mlock/munlock on numpy buffers; says once, in the log, when the OS refuses and why."""

    _warned = False
    _warn_lock = threading.Lock()

    def __init__(self) -> None:
        self._libc = _libc()

    def lock(self, array: npt.NDArray[np.float32]) -> bool:
        if array.nbytes == 0:
            return True
        if self._libc is None:
            self._warn("libc not found")
            return False
        if self._libc.mlock(ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes)) == 0:
            return True
        err = ctypes.get_errno()
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        self._warn(f"{os.strerror(err)}; RLIMIT_MEMLOCK is {soft} bytes, the matrix needs {array.nbytes}")
        return False

    def unlock(self, array: npt.NDArray[np.float32]) -> None:
        if self._libc is not None and array.nbytes:
            self._libc.munlock(ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes))

    @classmethod
    def _warn(cls, why: str) -> None:
        with cls._warn_lock:
            if not cls._warned:
                cls._warned = True
                log.warning("watchlist: cannot lock the embedding matrix in RAM (it may be swapped): %s", why)


class WatchlistStore:
    """One applied watchlist. Build with `from_opened`; share between threads read-only; `wipe()` ends it."""

    def __init__(
        self,
        header: BundleHeader,
        matrix: npt.NDArray[np.float32],
        row_subject: npt.NDArray[np.int32],
        records: list[SubjectRecord] | None = None,
        *,
        sealed_records: tuple[bytearray, npt.NDArray[np.int64], bytearray] | None = None,
    ) -> None:
        self.header = header
        self._memory = _MemoryLock()
        self._matrix = np.empty(matrix.shape, dtype=np.float32)  # its own buffer, so it can be locked
        self.locked = self._memory.lock(self._matrix)
        np.copyto(self._matrix, matrix)
        norms = np.linalg.norm(self._matrix, axis=1, keepdims=True)
        np.divide(self._matrix, np.maximum(norms, 1e-12), out=self._matrix)
        self._row_subject = row_subject.astype(np.int64)
        # Each subject's rows are contiguous: these are the row where each subject starts.
        self._starts = np.flatnonzero(np.r_[True, self._row_subject[1:] != self._row_subject[:-1]])
        self._one_row_each = len(self._starts) == len(self._row_subject)
        if sealed_records is not None:
            self._blob, self._offsets, self._key = sealed_records
        else:
            self._blob, self._offsets, self._key = _seal_records(records or [], len(records or []))
        self._wiped = False

    @classmethod
    def from_opened(cls, opened: OpenedBundle) -> WatchlistStore:
        """Copy a decrypted bundle into a new store; the caller wipes `opened` afterwards."""
        records = (  # one plaintext record at a time, not a second copy of every photo
            SubjectRecord(m.id, m.category, m.reference, bytes(photo))
            for m, photo in zip(opened.subjects, opened.photos, strict=True)
        )
        sealed = _seal_records(records, len(opened.subjects))
        return cls(opened.header, opened.matrix, opened.row_subject, sealed_records=sealed)

    # facts -----------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def deployment(self) -> str:
        return self.header.deployment

    @property
    def digest(self) -> str:
        return self.header.body_sha256

    @property
    def threshold(self) -> float:
        return self.header.threshold

    @property
    def valid_until(self) -> float:
        return self.header.valid_until

    @property
    def size(self) -> int:
        """Number of subjects."""
        return len(self._starts)

    @property
    def comparisons(self) -> int:
        """Embedding rows: each passer-by is compared with every one (a subject may have several photos)."""
        return len(self._row_subject)

    def is_usable(self, now: float) -> bool:
        return not self._wiped and self.header.valid_from <= now < self.header.valid_until

    # search ----------------------------------------------------------------------------------------

    def search(self, probes: npt.NDArray[np.float32], now: float, k: int = 3) -> SearchResult:
        """Cosine top-k subjects for each L2-normalised probe row (P x dim). Refuses an expired list."""
        if not self.is_usable(now):
            state = "wiped" if self._wiped else f"outside its validity window (until {iso(self.valid_until)})"
            raise WatchlistUnavailable(f"watchlist version {self.version} is {state}")
        probes = np.atleast_2d(probes).astype(np.float32, copy=False)
        # One matrix-vector product per probe, not one matrix product: BLAS's matrix product packs the probes
        # into its own buffer, where a passer-by's embedding stayed after the track was wiped (test_canary).
        # As fast for the few probes of a track (memory-bound either way).
        scores = np.empty((len(probes), len(self._matrix)), np.float32)  # (P, rows)
        for probe, row in zip(probes, scores, strict=True):
            np.matmul(self._matrix, probe, out=row)
        if not self._one_row_each:
            scores = np.maximum.reduceat(scores, self._starts, axis=1)  # best row of each subject
        k = min(k, scores.shape[1])
        if k < scores.shape[1]:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(k), (len(scores), k))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        return SearchResult(
            np.take_along_axis(top, order, axis=1).astype(np.int64),
            np.take_along_axis(top_scores, order, axis=1),
        )

    def subject(self, index: int) -> SubjectRecord:
        """Open one subject's record (to build an alert)."""
        if self._wiped:
            raise WatchlistUnavailable("the watchlist was wiped")
        if not 0 <= index < self.size:
            raise IndexError(f"subject index {index} out of range (0..{self.size - 1})")
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        sealed = bytes(self._blob[start:end])
        plain = AESGCM(bytes(self._key)).decrypt(sealed[:_NONCE], sealed[_NONCE:], struct.pack(">I", index))
        (meta_len,) = struct.unpack_from(">I", plain)
        meta = json.loads(plain[4 : 4 + meta_len])
        return SubjectRecord(meta["id"], meta["category"], meta["reference"], plain[4 + meta_len :])

    def subject_id(self, index: int) -> str:
        """The id of one subject (matching keys its cooldowns by it)."""
        return self.subject(index).id

    # wipe ------------------------------------------------------------------------------------------

    def wipe(self) -> None:
        """Zero the matrix, the sealed records and their key, then drop them. Idempotent."""
        if self._wiped:
            return
        self._wiped = True
        self._matrix.fill(0)
        self._memory.unlock(self._matrix)
        self._blob[:] = bytes(len(self._blob))
        self._key[:] = bytes(len(self._key))
        self._matrix = np.zeros((0, self.header.dim), dtype=np.float32)
        self._blob, self._key = bytearray(), bytearray()


def _seal_records(records: Iterable[SubjectRecord], count: int) -> tuple[bytearray, npt.NDArray[np.int64], bytearray]:
    """Encrypt each record under one fresh in-RAM key; returns (blob, offsets, key)."""
    key = bytearray(AESGCM.generate_key(bit_length=256))
    aead = AESGCM(bytes(key))
    blob = bytearray()
    offsets = np.zeros(count + 1, dtype=np.int64)
    for i, record in enumerate(records):
        meta = json.dumps({"id": record.id, "category": record.category, "reference": record.reference}).encode()
        nonce = os.urandom(_NONCE)
        plain = struct.pack(">I", len(meta)) + meta + record.photo_jpeg
        blob += nonce + aead.encrypt(nonce, plain, struct.pack(">I", i))
        offsets[i + 1] = len(blob)
    return blob, offsets, key
