"""`lfr-provision pair-handset`: show a one-time code and pair the officer's handset that types it in.

Runs on the unit, next to the daemon (which need not stop): it reads the unit's config for the broker,
the unit's TLS certificate, its keys and the handsets folder, then waits for the handset's request. Each
pairing and each refused request is written to the pairing audit log beside the unit's audit log
(`pairing-audit.jsonl`, hash-chained like it: `lfr-audit verify` checks it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from lfr_contracts import crypto, layout
from lfr_contracts.errors import ConfigError
from lfr_contracts.pairing import PairingSession
from lfr_edge import keyfiles
from lfr_edge.audit.log import AuditError, AuditLog
from lfr_edge.config import Config, load_config
from lfr_provision.identity import ProvisionError
from lfr_provision.pair_mqtt import PairingOutcome, UnitPairing

HANDSET_RELOAD_S = 5  # the daemon re-reads the handsets folder this often (daemon/run.py)


def pair_handset(
    config_path: Path,
    *,
    handset_id: str | None = None,
    timeout_s: float = 300.0,
    emit: Callable[[str], None] = print,
    cancel: threading.Event | None = None,
) -> int:
    """Run one pairing session; 0 when a handset paired, 1 when the code expired, was voided or the
    technician cancelled. Problems with the config, keys or broker raise ProvisionError naming them."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise ProvisionError(str(exc)) from exc
    if timeout_s <= 0:
        raise ProvisionError(f"--timeout {timeout_s:g}: must be more than 0 seconds")
    keys = cfg.unit.keys_dir
    try:
        signer = keyfiles.load_ed25519_private(keys / layout.UNIT_ED25519_KEY)
        sealing = keyfiles.load_x25519_private(keys / layout.UNIT_X25519_KEY)
    except crypto.KeyFileError as exc:
        raise ProvisionError(f"{exc} (run `lfr-provision init` first)") from exc
    if not cfg.alerts.handsets_dir.is_dir():
        raise ProvisionError(f"alerts.handsets_dir {cfg.alerts.handsets_dir} does not exist (run `lfr-provision init`)")
    mqtt = cfg.mqtt
    # The daemon holds the unit's own identity on the broker (one connection per certificate): the pairing
    # helper connects as <unit>.pairing, a certificate for the same key that the CA issued beside unit.crt.
    pairing_cert = mqtt.cert_file.with_name(layout.TLS_PAIRING_CERT)
    if not pairing_cert.is_file():
        raise ProvisionError(
            f"{pairing_cert} is missing: the pairing helper connects with its own certificate "
            f"(CN={layout.pairing_identity(cfg.unit.id)}); `lfr-provision ca sign --csr "
            f"{mqtt.cert_file.with_name(layout.TLS_CSR)} ...` issues it with {mqtt.cert_file.name}"
        )
    audit_path = cfg.unit.audit_log.with_name(layout.PAIRING_AUDIT_LOG)
    try:
        audit = AuditLog.open(audit_path, cfg.unit.id)
    except (AuditError, OSError) as exc:
        raise ProvisionError(
            f"cannot open the pairing audit log {audit_path}: {exc} (its folder is unit.audit_log's, "
            "made by `lfr-provision init`)"
        ) from exc
    with audit:
        session = PairingSession(cfg.unit.id, sealing.public_key(), signer, ttl_s=timeout_s)
        pairing = UnitPairing(
            session,
            mqtt.host,
            mqtt.port,
            (mqtt.ca_file, pairing_cert, mqtt.key_file),
            cfg.alerts.handsets_dir,
            audit=audit,
            prefix=mqtt.topic_prefix,
            expected_handset=handset_id,
            on_refusal=lambda reason: emit(f"  refused: {reason}"),
        )
        try:
            pairing.open()
        except ConnectionError as exc:
            raise ProvisionError(f"{exc} (settings: [mqtt] in {config_path})") from exc
        return _serve(pairing, cfg, handset_id, audit_path, emit, cancel)


def _serve(
    pairing: UnitPairing,
    cfg: Config,
    handset_id: str | None,
    audit_path: Path,
    emit: Callable[[str], None],
    cancel: threading.Event | None,
) -> int:
    """Show the code, serve the session until it ends, say how it ended (pair_handset's exit status)."""
    session, mqtt, timeout_s = pairing.session, cfg.mqtt, pairing.session.ttl_s
    stop = cancel or threading.Event()

    def cancel_when_asked() -> None:
        stop.wait()
        pairing.cancel()

    watcher = threading.Thread(target=cancel_when_asked, daemon=True)
    watcher.start()
    minutes = timeout_s / 60
    emit(f"Pairing a handset with unit {cfg.unit.id} (broker {mqtt.host}:{mqtt.port}).")
    emit("")
    emit(f"    Code:  {session.code}    (valid {minutes:.0f} min, single use, 5 wrong tries void it)")
    emit("")
    emit("On the handset, run (with the handset's own certificate and key folder):")
    emit(
        f"  lfr-handset pair --code {session.code} --unit {cfg.unit.id} --broker {mqtt.host}:{mqtt.port} "
        "--ca CA.crt --cert HANDSET.crt --key HANDSET.key --keys HANDSET_KEY_DIR"
    )
    who = f"handset {handset_id}" if handset_id else "the handset"
    emit(f"Waiting for {who}... (Ctrl-C to cancel)")
    outcome = PairingOutcome("cancelled")
    try:
        outcome = pairing.serve()
    except KeyboardInterrupt:
        pairing.cancel()
    except ConnectionError as exc:  # lost the broker mid-way: any handset already registered stays
        raise ProvisionError(f"{exc}; check `lfr-provision handsets list`, then pair again") from exc
    finally:
        stop.set()
        pairing.close(outcome.result)
    if outcome.result == "cancelled":
        emit("Cancelled: no handset paired; the code is void.")
        return 1
    if outcome.result != "paired" or outcome.handset is None:
        why = {
            "expired": f"the code expired after {minutes:.0f} min",
            "voided": "too many wrong codes: the code is void",
        }[outcome.result]
        emit(f"Not paired: {why}. Run `lfr-provision pair-handset` again for a new code.")
        emit(f"  (the refused requests are in {audit_path})")
        return 1
    emit("Done:")
    emit(f"  - paired handset {outcome.handset.handset_id}: {outcome.registry_file}")
    emit("  - the handset received this unit's Ed25519 key and checks every alert's signature with it")
    emit("Next:")
    emit(
        f"  1. nothing to restart: the running daemon re-reads {cfg.alerts.handsets_dir} every "
        f"{HANDSET_RELOAD_S} s and seals the next alert to this handset too"
    )
    emit("  2. on the handset: lfr-handset listen ... (the unit key is found in its key folder)")
    emit("  3. lfr-provision handsets list  (to review), lfr-provision handsets unpair ID (to remove)")
    emit(f"  (this pairing and every refused request are in {audit_path})")
    return 0
