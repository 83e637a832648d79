"""The watchlist bundle and the close command: signed by the command centre, the body sealed to one unit.

Wire format (both kinds):

    magic (4: b"LFRW" bundle, b"LFRC" close) | u16 format (1) | u32 header length | header (UTF-8 JSON) |
    Ed25519 signature (64) over everything before it | body (bundles only)

The bundle header names the deployment, unit, version, validity window, threshold, model id, subject
count and the body's length and sha256, so the signature covers the body too and is checked BEFORE
anything is decrypted. The body is `crypto.seal`ed to the unit's X25519 key with the signed prefix as
associated data. Inside the seal:

    u32 index length | index JSON {"dim", "subjects": [{"id", "category", "reference", "rows", "photo"}]} |
    float32 little-endian embedding rows (rows grouped by subject, in order) | the JPEG photos, in order

Every refusal is a `BundleError` subclass with a short `reason` code (sent back in the refusal ack) and
a message that says what was wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts import crypto

BUNDLE_MAGIC = b"LFRW"
CLOSE_MAGIC = b"LFRC"
FORMAT = 1
SEAL_PURPOSE = "lfr-edge/watchlist"
_PREFIX = struct.Struct(">4sHI")
_SIGNATURE_BYTES = 64
_MAX_HEADER_BYTES = 64 * 1024
_U32 = struct.Struct(">I")


class BundleError(Exception):
    """A bundle or close command was refused; `reason` is a short code for acks and audit events."""

    reason = "invalid"


class BundleTooLarge(BundleError):
    reason = "oversize"


class BundleTruncated(BundleError):
    reason = "truncated"


class BundleGarbled(BundleError):
    reason = "garbled"


class BadMagic(BundleError):
    reason = "bad_magic"


class UnsupportedFormat(BundleError):
    reason = "unsupported_format"


class SignatureInvalid(BundleError):
    reason = "bad_signature"


class WrongUnit(BundleError):
    reason = "wrong_unit"


class WrongModel(BundleError):
    reason = "wrong_model"


class Expired(BundleError):
    reason = "expired"


class NotYetValid(BundleError):
    reason = "not_yet_valid"


class Replay(BundleError):
    reason = "replay"


class Rollback(BundleError):
    reason = "rollback"


class Undecryptable(BundleError):
    reason = "undecryptable"


class StaleClose(BundleError):
    reason = "stale_close"


class DeploymentEnded(BundleError):
    """The deployment was closed, superseded or expired on this unit: it is never applied again."""

    reason = "deployment_ended"


@dataclass(frozen=True)
class AppliedHistory:
    """What a unit already applied, for the checks against replays, rollbacks and closed deployments."""

    highest_version: int | None = None
    # The body digest of the highest version, which may be applied again (after a restart the list is gone
    # from RAM while the broker still retains its bundle); None while that list is held.
    reapplicable_digest: str | None = None
    ended: frozenset[str] = frozenset()  # deployments closed, superseded or expired


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> float:
    """UTC ISO 8601 (`2026-05-01T08:00:00Z`; a naive time is taken as UTC) or epoch seconds, to epoch."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 time or epoch seconds") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


# Plain data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectEntry:
    """One subject as enrolled by the command centre: one embedding row per usable photo."""

    id: str
    category: str
    reference: str
    embeddings: npt.NDArray[np.float32]  # (rows, dim), L2-normalised
    photo_jpeg: bytes  # a small reference crop


@dataclass(frozen=True)
class BundleHeader:
    deployment: str
    unit: str
    version: int
    issued_at: float
    valid_from: float
    valid_until: float
    threshold: float
    model_id: str
    subjects: int
    dim: int
    body_bytes: int
    body_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "watchlist",
            "deployment": self.deployment,
            "unit": self.unit,
            "version": self.version,
            "issued_at": iso(self.issued_at),
            "valid_from": iso(self.valid_from),
            "valid_until": iso(self.valid_until),
            "threshold": self.threshold,
            "model_id": self.model_id,
            "subjects": self.subjects,
            "dim": self.dim,
            "body_bytes": self.body_bytes,
            "body_sha256": self.body_sha256,
        }


@dataclass(frozen=True)
class CloseCommand:
    deployment: str
    unit: str
    time: float
    nonce: str


@dataclass(frozen=True)
class Envelope:
    """A parsed but not yet verified message: which kind, its header, what the signature covers."""

    magic: bytes
    header: dict[str, Any]
    signed: bytes
    signature: bytes
    body: memoryview  # a view into the received message: a large body is not copied


@dataclass(frozen=True)
class SubjectMeta:
    id: str
    category: str
    reference: str


@dataclass
class OpenedBundle:
    """A verified, decrypted bundle. `plaintext` backs `matrix` and the photos: `wipe()` zeroes it."""

    header: BundleHeader
    subjects: list[SubjectMeta]
    matrix: npt.NDArray[np.float32]  # (rows, dim), a view into plaintext
    row_subject: npt.NDArray[np.int32]  # subject index of each row
    photos: list[memoryview]
    plaintext: bytearray

    def wipe(self) -> None:
        self.photos.clear()
        self.matrix = np.zeros((0, self.header.dim), dtype=np.float32)
        self.plaintext[:] = bytes(len(self.plaintext))


# Building (command centre) ----------------------------------------------------------------------------


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _signed_prefix(magic: bytes, header: bytes) -> bytes:
    return _PREFIX.pack(magic, FORMAT, len(header)) + header


def encode_body(subjects: list[SubjectEntry], dim: int) -> bytes:
    index = {
        "dim": dim,
        "subjects": [
            {
                "id": s.id,
                "category": s.category,
                "reference": s.reference,
                "rows": len(s.embeddings),
                "photo": len(s.photo_jpeg),
            }
            for s in subjects
        ],
    }
    for s in subjects:
        if s.embeddings.ndim != 2 or s.embeddings.shape[1] != dim or len(s.embeddings) == 0:
            raise ValueError(f"subject {s.id}: embeddings must be (rows >= 1, {dim}), got {s.embeddings.shape}")
    index_bytes = _json_bytes(index)
    matrix = np.concatenate([s.embeddings for s in subjects]).astype("<f4", copy=False)
    return b"".join([_U32.pack(len(index_bytes)), index_bytes, matrix.tobytes(), *(s.photo_jpeg for s in subjects)])


def build_bundle(
    subjects: list[SubjectEntry],
    *,
    deployment: str,
    unit_id: str,
    unit_key: X25519PublicKey,
    version: int,
    valid_from: float,
    valid_until: float,
    threshold: float,
    model_id: str,
    sign_key: Ed25519PrivateKey,
    issued_at: float,
) -> bytes:
    """Sign and seal a bundle for one unit. `unit_id` goes in the header, `unit_key` seals the body."""
    if not subjects:
        raise ValueError("a watchlist needs at least one subject")
    if valid_until <= valid_from:
        raise ValueError("valid_until must be after valid_from")
    dim = int(subjects[0].embeddings.shape[1])
    plaintext = encode_body(subjects, dim)
    # The seal's aad is the header without the body's length and digest (they describe the sealed
    # output, so they cannot be known before sealing); the signature then covers all of it.
    header = BundleHeader(
        deployment, unit_id, version, issued_at, valid_from, valid_until, threshold, model_id,
        len(subjects), dim, 0, "",
    )  # fmt: skip
    sealed = crypto.seal(plaintext, [unit_key], _body_aad(header), purpose=SEAL_PURPOSE)
    header = BundleHeader(
        deployment, unit_id, version, issued_at, valid_from, valid_until, threshold, model_id,
        len(subjects), dim, len(sealed), hashlib.sha256(sealed).hexdigest(),
    )  # fmt: skip
    prefix = _signed_prefix(BUNDLE_MAGIC, _json_bytes(header.to_json()))
    return prefix + crypto.sign(sign_key, prefix) + sealed


def _body_aad(header: BundleHeader) -> bytes:
    """What the sealed body is bound to: the header's identity fields (deployment, unit, version, ...)."""
    fields = header.to_json()
    del fields["body_bytes"], fields["body_sha256"]
    return _json_bytes(fields)


def build_close(deployment: str, unit_id: str, sign_key: Ed25519PrivateKey, now: float, nonce: str) -> bytes:
    header = {"format": FORMAT, "kind": "close", "deployment": deployment, "unit": unit_id}
    header |= {"time": iso(now), "nonce": nonce}
    prefix = _signed_prefix(CLOSE_MAGIC, _json_bytes(header))
    return prefix + crypto.sign(sign_key, prefix)


# Reading (unit) ----------------------------------------------------------------------------------------


def read_envelope(data: bytes, max_bytes: int) -> Envelope:
    """Split a message into its parts; refuses oversize (before anything else), truncated and garbled."""
    if len(data) > max_bytes:
        raise BundleTooLarge(f"{len(data)} bytes is over the limit of {max_bytes} (watchlist.max_bundle_bytes)")
    if len(data) < _PREFIX.size:
        raise BundleTruncated(f"only {len(data)} bytes: shorter than the fixed prefix")
    magic, fmt, header_len = _PREFIX.unpack_from(data)
    if magic not in (BUNDLE_MAGIC, CLOSE_MAGIC):
        raise BadMagic(f"not a watchlist bundle or close command (magic {magic!r})")
    if fmt != FORMAT:
        raise UnsupportedFormat(f"format {fmt} is not supported (this unit reads format {FORMAT})")
    if header_len > _MAX_HEADER_BYTES:
        raise BundleGarbled(f"header length {header_len} is implausible")
    body_at = _PREFIX.size + header_len + _SIGNATURE_BYTES
    if len(data) < body_at:
        raise BundleTruncated(f"{len(data)} bytes: the header and signature need {body_at}")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleGarbled(f"the header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise BundleGarbled("the header is not a JSON object")
    signed = data[: _PREFIX.size + header_len]
    return Envelope(magic, header, signed, data[len(signed) : body_at], memoryview(data)[body_at:])


def verify_envelope(envelope: Envelope, command_centre_key: Ed25519PublicKey) -> None:
    try:
        crypto.verify(command_centre_key, envelope.signature, envelope.signed)
    except crypto.BadSignature as exc:
        raise SignatureInvalid(f"the signature does not verify against the pinned command-centre key: {exc}") from exc


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleGarbled(f"header field {name!r} is missing or of the wrong type ({value!r})")
    return value


def _time_field(header: dict[str, Any], name: str) -> float:
    try:
        return parse_time(_field(header, name, str))
    except ValueError as exc:
        raise BundleGarbled(f"header field {name!r}: {exc}") from exc


def parse_bundle_header(header: dict[str, Any]) -> BundleHeader:
    if header.get("kind") != "watchlist":
        raise BundleGarbled(f"header kind {header.get('kind')!r} is not 'watchlist'")
    parsed = BundleHeader(
        deployment=_field(header, "deployment", str),
        unit=_field(header, "unit", str),
        version=_field(header, "version", int),
        issued_at=_time_field(header, "issued_at"),
        valid_from=_time_field(header, "valid_from"),
        valid_until=_time_field(header, "valid_until"),
        threshold=float(_field(header, "threshold", (int, float))),
        model_id=_field(header, "model_id", str),
        subjects=_field(header, "subjects", int),
        dim=_field(header, "dim", int),
        body_bytes=_field(header, "body_bytes", int),
        body_sha256=_field(header, "body_sha256", str),
    )
    if not (math.isfinite(parsed.threshold) and -1.0 <= parsed.threshold <= 1.0):
        raise BundleGarbled(f"threshold {parsed.threshold} is not a cosine similarity in [-1, 1]")
    if parsed.subjects < 1 or parsed.dim < 1 or parsed.body_bytes < 1:
        raise BundleGarbled("subject count, dim and body length must be positive")
    return parsed


def check_bundle(header: BundleHeader, *, unit_id: str, model_id: str, now: float, history: AppliedHistory) -> None:
    """The checks after the signature and before decryption; each refusal is its own exception."""
    if header.unit != unit_id:
        raise WrongUnit(f"the bundle is for unit {header.unit!r}, this is {unit_id!r}")
    if header.model_id != model_id:
        raise WrongModel(f"the bundle was enrolled with model {header.model_id!r}, this unit runs {model_id!r}")
    if header.deployment in history.ended:
        raise DeploymentEnded(f"deployment {header.deployment!r} has ended on this unit and is never applied again")
    if now >= header.valid_until:
        raise Expired(f"the bundle expired at {iso(header.valid_until)} (now {iso(now)})")
    if now < header.valid_from:
        raise NotYetValid(f"the bundle is valid from {iso(header.valid_from)} (now {iso(now)})")
    held = history.highest_version
    if held is not None and header.version == held and header.body_sha256 != history.reapplicable_digest:
        raise Replay(f"version {header.version} was already applied")
    if held is not None and header.version < held:
        raise Rollback(f"version {header.version} is older than version {held} already applied")


def open_bundle(
    data: bytes,
    *,
    command_centre_key: Ed25519PublicKey,
    unit_key: X25519PrivateKey,
    unit_id: str,
    model_id: str,
    now: float,
    history: AppliedHistory,
    max_bytes: int,
) -> OpenedBundle:
    """Size → structure → signature → body digest → unit, model, window, version → decrypt → decode."""
    envelope = read_envelope(data, max_bytes)
    if envelope.magic != BUNDLE_MAGIC:
        raise BadMagic("this is a close command, not a bundle")
    header = parse_bundle_header(envelope.header)
    if len(envelope.body) < header.body_bytes:
        raise BundleTruncated(f"the body has {len(envelope.body)} of {header.body_bytes} bytes")
    verify_envelope(envelope, command_centre_key)
    if len(envelope.body) != header.body_bytes or hashlib.sha256(envelope.body).hexdigest() != header.body_sha256:
        raise BundleGarbled("the body does not match the length and sha256 in the signed header")
    check_bundle(header, unit_id=unit_id, model_id=model_id, now=now, history=history)
    try:
        plaintext = crypto.open_sealed(envelope.body, unit_key, _body_aad(header), purpose=SEAL_PURPOSE)
    except crypto.CryptoError as exc:
        raise Undecryptable(f"cannot decrypt the body with this unit's key: {exc}") from exc
    try:
        return _decode_body(header, plaintext)
    except BundleError:
        plaintext[:] = bytes(len(plaintext))
        raise


def _decode_body(header: BundleHeader, plaintext: bytearray) -> OpenedBundle:
    view = memoryview(plaintext)
    if len(view) < _U32.size:
        raise BundleGarbled("the decrypted body is too short")
    (index_len,) = _U32.unpack_from(view)
    try:
        index = json.loads(bytes(view[_U32.size : _U32.size + index_len]).decode("utf-8"))
        entries = index["subjects"]
        subjects = [SubjectMeta(str(e["id"]), str(e["category"]), str(e["reference"])) for e in entries]
        rows = np.array([int(e["rows"]) for e in entries], dtype=np.int64)
        photo_sizes = [int(e["photo"]) for e in entries]
        dim = int(index["dim"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BundleGarbled(f"the decrypted subject index is malformed ({exc})") from exc
    if len(subjects) != header.subjects or dim != header.dim or (rows < 1).any() or min(photo_sizes, default=0) < 0:
        raise BundleGarbled("the subject index does not agree with the signed header")
    matrix_at = _U32.size + index_len
    n_rows = int(rows.sum())
    photos_at = matrix_at + n_rows * dim * 4
    if photos_at + sum(photo_sizes) != len(view):
        raise BundleGarbled("the decrypted body's length does not match its subject index")
    matrix = np.frombuffer(view[matrix_at:photos_at], dtype="<f4").reshape(n_rows, dim)
    photos, at = [], photos_at
    for size in photo_sizes:
        photos.append(view[at : at + size])
        at += size
    row_subject = np.repeat(np.arange(len(subjects), dtype=np.int32), rows)
    return OpenedBundle(header, subjects, matrix, row_subject, photos, plaintext)


def open_close(data: bytes, *, command_centre_key: Ed25519PublicKey, unit_id: str, max_bytes: int) -> CloseCommand:
    """A verified close command for this unit (the caller checks it against the held deployment)."""
    envelope = read_envelope(data, max_bytes)
    if envelope.magic != CLOSE_MAGIC:
        raise BadMagic("this is a bundle, not a close command")
    verify_envelope(envelope, command_centre_key)
    if envelope.header.get("kind") != "close" or envelope.body:
        raise BundleGarbled("a close command has kind 'close' and no body")
    close = CloseCommand(
        deployment=_field(envelope.header, "deployment", str),
        unit=_field(envelope.header, "unit", str),
        time=_time_field(envelope.header, "time"),
        nonce=_field(envelope.header, "nonce", str),
    )
    if close.unit != unit_id:
        raise WrongUnit(f"the close command is for unit {close.unit!r}, this is {unit_id!r}")
    return close


def inspect(data: bytes, max_bytes: int) -> Envelope:
    """The header of a bundle or close command, without any key (for `lfr-watchlist inspect`)."""
    return read_envelope(data, max_bytes)
