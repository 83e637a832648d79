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
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts import crypto
from lfr_contracts.untrusted import JsonRefused, excerpt, loads_json

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


# Times are epoch seconds from 1970 to the end of year 9999: what `iso` can write and a datetime can hold.
MIN_EPOCH = 0.0
MAX_EPOCH = 253_402_300_799.0
_MAX_TIME_TEXT = 64
_MAX_TEXT = 256  # deployment, unit and model ids, subject ids and categories
_MAX_REFERENCE = 2048  # the command centre's free-text reference of a subject
_MAX_SUBJECTS = 1_000_000
_MAX_DIM = 4096
_MAX_VERSION = 2**53  # a version is counted up by the command centre; JSON numbers stay exact below this


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def check_epoch(value: float, what: str = "time") -> float:
    """`value` if it is a finite time `iso` can write (1970 to 9999), else ValueError naming `what`."""
    if not (math.isfinite(value) and MIN_EPOCH <= value <= MAX_EPOCH):
        raise ValueError(f"{what} {value:g} is not a time between 1970 and 9999")
    return value


def parse_time(value: str) -> float:
    """UTC ISO 8601 (`2026-05-01T08:00:00Z`; a naive time is taken as UTC) or epoch seconds, to epoch.
    ValueError for anything else, NaN and the infinities included, and for a time outside 1970..9999."""
    text = value.strip()
    if len(text) > _MAX_TIME_TEXT:
        raise ValueError(f"{excerpt(text)} is not an ISO 8601 time or epoch seconds")
    try:
        epoch = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{excerpt(value)} is not an ISO 8601 time or epoch seconds") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        epoch = when.timestamp()
    if not (math.isfinite(epoch) and MIN_EPOCH <= epoch <= MAX_EPOCH):
        raise ValueError(f"{excerpt(value)} is not a time between 1970 and 9999")
    return epoch


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
        if not 0 < len(s.id) <= _MAX_TEXT or len(s.category) > _MAX_TEXT or len(s.reference) > _MAX_REFERENCE:
            raise ValueError(
                f"subject {excerpt(s.id)}: id 1-{_MAX_TEXT} characters, category at most {_MAX_TEXT}, "
                f"reference at most {_MAX_REFERENCE}"
            )
    index_bytes = _json_bytes(index)
    matrix = np.concatenate([s.embeddings for s in subjects]).astype("<f4", copy=False)
    if not np.isfinite(matrix).all():
        raise ValueError("the embeddings hold NaN or infinite values")
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
    for name, when in (("issued_at", issued_at), ("valid_from", valid_from), ("valid_until", valid_until)):
        check_epoch(when, name)
    for name, text in (("deployment", deployment), ("unit_id", unit_id), ("model_id", model_id)):
        if not 0 < len(text) <= _MAX_TEXT:
            raise ValueError(f"{name} must be 1 to {_MAX_TEXT} characters, not {len(text)}")
    if valid_until <= valid_from:
        raise ValueError("valid_until must be after valid_from")
    if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise ValueError(f"threshold {threshold} is not a cosine similarity in [-1, 1]")
    if isinstance(version, bool) or not 0 <= version <= _MAX_VERSION:
        raise ValueError(f"version {version} is not an integer from 0 to 2**53")
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
    check_epoch(now, "the close command's time")
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
        header = loads_json(memoryview(data)[_PREFIX.size : _PREFIX.size + header_len], max_bytes=_MAX_HEADER_BYTES)
    except JsonRefused as exc:
        raise BundleGarbled(f"the header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BundleGarbled("the header is not a JSON object")
    signed = data[: _PREFIX.size + header_len]
    return Envelope(magic, header, signed, data[len(signed) : body_at], memoryview(data)[body_at:])


def verify_envelope(envelope: Envelope, command_centre_key: Ed25519PublicKey) -> None:
    try:
        crypto.verify(command_centre_key, envelope.signature, envelope.signed)
    except crypto.BadSignature as exc:
        raise SignatureInvalid(f"the signature does not verify against the pinned command-centre key: {exc}") from exc


def _text(table: dict[str, Any], name: str, what: str = "header field", limit: int = _MAX_TEXT, least: int = 1) -> str:
    value = table.get(name)
    if not isinstance(value, str):
        raise BundleGarbled(f"{what} {name!r} is missing or not a string ({excerpt(value)})")
    if not least <= len(value) <= limit:
        raise BundleGarbled(f"{what} {name!r} must be {least} to {limit} characters, not {len(value)}")
    return value


def _integer(table: dict[str, Any], name: str, lo: int, hi: int, what: str = "header field") -> int:
    """An integer in [lo, hi]; JSON's true and false are not integers."""
    value = table.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleGarbled(f"{what} {name!r} is missing or not an integer ({excerpt(value)})")
    if not lo <= value <= hi:
        raise BundleGarbled(f"{what} {name!r} is {excerpt(value)}, not from {lo} to {hi}")
    return value


def _time_field(header: dict[str, Any], name: str) -> float:
    try:
        return parse_time(_text(header, name, limit=_MAX_TIME_TEXT))
    except ValueError as exc:
        raise BundleGarbled(f"header field {name!r}: {exc}") from None


def _threshold(header: dict[str, Any]) -> float:
    value = header.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BundleGarbled(f"header field 'threshold' is missing or not a number ({excerpt(value)})")
    if not -1.0 <= value <= 1.0:  # NaN never reaches here: the JSON reader refuses it
        raise BundleGarbled(f"threshold {excerpt(value)} is not a cosine similarity in [-1, 1]")
    return float(value)


def parse_bundle_header(header: dict[str, Any]) -> BundleHeader:
    if header.get("kind") != "watchlist":
        raise BundleGarbled(f"header kind {excerpt(header.get('kind'))} is not 'watchlist'")
    digest = _text(header, "body_sha256", limit=64)
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise BundleGarbled("header field 'body_sha256' is not 64 lower-case hex digits")
    parsed = BundleHeader(
        deployment=_text(header, "deployment"),
        unit=_text(header, "unit"),
        version=_integer(header, "version", 0, _MAX_VERSION),
        issued_at=_time_field(header, "issued_at"),
        valid_from=_time_field(header, "valid_from"),
        valid_until=_time_field(header, "valid_until"),
        threshold=_threshold(header),
        model_id=_text(header, "model_id"),
        subjects=_integer(header, "subjects", 1, _MAX_SUBJECTS),
        dim=_integer(header, "dim", 1, _MAX_DIM),
        body_bytes=_integer(header, "body_bytes", 1, 2**62),
        body_sha256=digest,
    )
    if parsed.valid_until <= parsed.valid_from:
        raise BundleGarbled("the validity window ends before it starts (valid_until <= valid_from)")
    return parsed


def check_bundle(
    header: BundleHeader, *, unit_id: str, model_id: str, now: float, history: AppliedHistory, dim: int | None = None
) -> None:
    """The checks after the signature and before decryption; each refusal is its own exception. `dim`: the
    length of the unit's embeddings, when the caller knows it."""
    if header.unit != unit_id:
        raise WrongUnit(f"the bundle is for unit {excerpt(header.unit)}, this is {unit_id!r}")
    if header.model_id != model_id:
        raise WrongModel(
            f"the bundle was enrolled with model {excerpt(header.model_id, 48)}, this unit runs {model_id!r}"
        )
    if dim is not None and header.dim != dim:
        raise WrongModel(f"the bundle's embeddings have {header.dim} values; model {model_id!r} gives {dim}")
    if header.deployment in history.ended:
        raise DeploymentEnded(
            f"deployment {excerpt(header.deployment, 48)} has ended on this unit and is never applied again"
        )
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
    dim: int | None = None,
) -> OpenedBundle:
    """Size → structure → signature → body digest → unit, model (and its `dim`), window, version → decrypt →
    decode."""
    envelope = read_envelope(data, max_bytes)
    if envelope.magic != BUNDLE_MAGIC:
        raise BadMagic("this is a close command, not a bundle")
    header = parse_bundle_header(envelope.header)
    if len(envelope.body) < header.body_bytes:
        raise BundleTruncated(f"the body has {len(envelope.body)} of {header.body_bytes} bytes")
    verify_envelope(envelope, command_centre_key)
    if len(envelope.body) != header.body_bytes or hashlib.sha256(envelope.body).hexdigest() != header.body_sha256:
        raise BundleGarbled("the body does not match the length and sha256 in the signed header")
    check_bundle(header, unit_id=unit_id, model_id=model_id, now=now, history=history, dim=dim)
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
    if _U32.size + index_len > len(view):
        raise BundleGarbled(f"the subject index claims {index_len} bytes, more than the body holds")
    try:
        index = loads_json(view[_U32.size : _U32.size + index_len], max_bytes=index_len)
    except JsonRefused as exc:
        raise BundleGarbled(f"the decrypted subject index is not valid JSON: {exc}") from None
    entries = index.get("subjects") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BundleGarbled("the decrypted subject index has no list of subject tables")
    if len(entries) != header.subjects or _integer(index, "dim", 1, _MAX_DIM, "index field") != header.dim:
        raise BundleGarbled("the subject index does not agree with the signed header (subjects, dim)")
    subjects = [
        SubjectMeta(
            _text(e, "id", "subject field"),
            _text(e, "category", "subject field", least=0),
            _text(e, "reference", "subject field", _MAX_REFERENCE, least=0),
        )
        for e in entries
    ]
    rows = [_integer(e, "rows", 1, len(view), "subject field") for e in entries]
    photo_sizes = [_integer(e, "photo", 0, len(view), "subject field") for e in entries]
    matrix_at = _U32.size + index_len
    n_rows = sum(rows)
    photos_at = matrix_at + n_rows * header.dim * 4
    if photos_at + sum(photo_sizes) != len(view):
        raise BundleGarbled("the decrypted body's length does not match its subject index")
    matrix = np.frombuffer(view[matrix_at:photos_at], dtype="<f4").reshape(n_rows, header.dim)
    if not np.isfinite(matrix).all():
        raise BundleGarbled("the embedding matrix holds NaN or infinite values")
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
        deployment=_text(envelope.header, "deployment"),
        unit=_text(envelope.header, "unit"),
        time=_time_field(envelope.header, "time"),
        nonce=_text(envelope.header, "nonce"),
    )
    if close.unit != unit_id:
        raise WrongUnit(f"the close command is for unit {excerpt(close.unit)}, this is {unit_id!r}")
    return close


def inspect(data: bytes, max_bytes: int) -> Envelope:
    """The header of a bundle or close command, without any key (for `lfr-watchlist inspect`)."""
    return read_envelope(data, max_bytes)
