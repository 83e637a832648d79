"""The sealing and signing primitives shared by watchlist bundles and handset alerts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts import crypto
from lfr_edge import keyfiles


def test_every_recipient_opens_what_was_sealed_to_several() -> None:
    keys = [X25519PrivateKey.generate() for _ in range(3)]
    envelope = crypto.seal(b"secret body", [k.public_key() for k in keys], b"header")
    for key in keys:
        assert bytes(crypto.open_sealed(envelope, key, b"header")) == b"secret body"
    assert crypto.envelope_key_ids(envelope) == [crypto.key_id(k.public_key()) for k in keys]


def test_another_key_is_told_the_envelope_is_not_for_it() -> None:
    envelope = crypto.seal(b"x", [X25519PrivateKey.generate().public_key()], b"")
    with pytest.raises(crypto.NotForThisKey):
        crypto.open_sealed(envelope, X25519PrivateKey.generate(), b"")


def test_changed_aad_purpose_or_body_is_tampered() -> None:
    key = X25519PrivateKey.generate()
    envelope = crypto.seal(b"body", [key.public_key()], b"aad", purpose="watchlist")
    with pytest.raises(crypto.Tampered):
        crypto.open_sealed(envelope, key, b"other aad", purpose="watchlist")
    with pytest.raises(crypto.Tampered):
        crypto.open_sealed(envelope, key, b"aad", purpose="alert")
    flipped = bytearray(envelope)
    flipped[-1] ^= 1
    with pytest.raises(crypto.Tampered):
        crypto.open_sealed(bytes(flipped), key, b"aad", purpose="watchlist")


@pytest.mark.parametrize("bad", [b"", b"LFRS", b"XXXX\x01\x00\x01" + bytes(100), b"LFRS\x09\x00\x01" + bytes(100)])
def test_truncated_or_garbled_envelopes_are_malformed(bad: bytes) -> None:
    with pytest.raises(crypto.MalformedEnvelope):
        crypto.open_sealed(bad, X25519PrivateKey.generate(), b"")


def test_truncated_real_envelope_is_refused() -> None:
    key = X25519PrivateKey.generate()
    envelope = crypto.seal(b"body" * 10, [key.public_key()], b"")
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(envelope[:-5], key, b"")
    with pytest.raises(crypto.MalformedEnvelope):
        crypto.open_sealed(envelope[:40], key, b"")


def test_signature_verifies_only_for_the_signed_data_and_key() -> None:
    key = Ed25519PrivateKey.generate()
    signature = crypto.sign(key, b"data")
    crypto.verify(key.public_key(), signature, b"data")
    with pytest.raises(crypto.BadSignature):
        crypto.verify(key.public_key(), signature, b"datA")
    with pytest.raises(crypto.BadSignature):
        crypto.verify(Ed25519PrivateKey.generate().public_key(), signature, b"data")


def test_private_keys_are_written_0600_and_never_overwritten(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "cc.key"
    keyfiles.save_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(crypto.KeyFileError, match="already exists"):
        keyfiles.save_private_key(path, Ed25519PrivateKey.generate())
    loaded = keyfiles.load_ed25519_private(path)
    assert crypto.key_id(loaded.public_key()) == crypto.key_id(key.public_key())
    keyfiles.save_public_key(tmp_path / "cc.pub", key.public_key())
    assert isinstance(keyfiles.load_ed25519_public(tmp_path / "cc.pub"), Ed25519PublicKey)


def test_key_files_of_the_wrong_kind_or_garbage_are_named(tmp_path: Path) -> None:
    keyfiles.save_public_key(tmp_path / "unit.pub", X25519PrivateKey.generate().public_key())
    with pytest.raises(crypto.KeyFileError, match=r"unit\.pub: expected an Ed25519 public key"):
        keyfiles.load_ed25519_public(tmp_path / "unit.pub")
    assert isinstance(keyfiles.load_x25519_public(tmp_path / "unit.pub"), X25519PublicKey)
    (tmp_path / "junk.key").write_bytes(b"not pem")
    with pytest.raises(crypto.KeyFileError, match=r"junk\.key: not a PEM private key"):
        keyfiles.load_x25519_private(tmp_path / "junk.key")
    with pytest.raises(crypto.KeyFileError, match=r"missing\.key: cannot read"):
        keyfiles.load_x25519_private(tmp_path / "missing.key")
