"""`lfr-provision broker config`: write mosquitto.conf and the ACL (broker_config.py) into the broker's folder.

The folder already holds the CA certificate and the broker's certificate and key (`lfr-provision ca issue
--role broker --out DIR`), and a bridge's certificate when the broker bridges to the command centre's.
"""

from __future__ import annotations

import os
import pwd
import queue
from collections.abc import Callable
from pathlib import Path

from lfr_provision.broker_config import BrokerConfigError, BrokerOptions, acl_text, mosquitto_conf, settings_for
from lfr_provision.identity import ProvisionError, write_file
from lfr_provision.init import Report

CONF = "mosquitto.conf"
ACL = "acl"


def write_broker_config(opts: BrokerOptions) -> Report:
    try:
        settings = settings_for(opts)
        conf, acl = mosquitto_conf(settings), acl_text(opts.plan)
    except BrokerConfigError as exc:
        raise ProvisionError(str(exc)) from exc
    needed = [settings.listener.ca_file, settings.listener.cert_file, settings.listener.key_file]
    if settings.bridge is not None:
        needed += [settings.bridge.cert_file, settings.bridge.key_file]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise ProvisionError(
            f"{missing[0]} is missing: issue it first (`lfr-provision ca issue --ca CA_DIR --role "
            f"{'bridge' if 'bridge-' in missing[0].name else 'broker'} --name ... --out {opts.directory}`)"
        )
    report = Report()
    write_file(settings.acl_file, acl.encode(), 0o644, True)
    conf_file = opts.directory / CONF
    write_file(conf_file, conf.encode(), 0o644, True)
    report.done.append(f"{settings.acl_file}: {acl.count('user ')} identities besides the units' patterns")
    report.done.append(f"{conf_file}: mutual TLS on {settings.listener.address}:{settings.listener.port}, "
                       f"client ids bound to certificates, persistence every {settings.autosave_s} s")  # fmt: skip
    if settings.data_dir is not None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    report.done += _give_to_service_user(settings.run_as, [settings.listener.key_file, settings.data_dir])
    report.next_steps.append(f"check it in the foreground: mosquitto -c {conf_file.absolute()}")
    report.next_steps.append(
        "as the system's broker: point /etc/mosquitto/mosquitto.conf at it (docs/broker.md) and restart mosquitto"
    )
    report.next_steps.append("after adding a handset or unit: run this again, then reload mosquitto (SIGHUP)")
    return report


def _give_to_service_user(user: str, paths: list[Path | None]) -> list[str]:
    """mosquitto reads its key after dropping to `user`: as root, hand it the key and the data folder."""
    if os.geteuid() != 0:
        return []
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ProvisionError(f"--run-as {user!r}: no such user here (the Debian package creates 'mosquitto')") from None
    done = []
    for path in paths:
        if path is not None and entry.pw_uid != 0:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            done.append(f"{path}: owned by {user} (mosquitto reads it after dropping root)")
    return done


def check_broker(
    host: str,
    port: int,
    tls: tuple[Path, Path, Path],
    expect: str | None,
    timeout_s: float,
    emit: Callable[[str], None],
) -> int:
    """`lfr-provision broker check`: connect with a certificate (0 when the broker accepts it); with `expect`,
    also wait for a message on that topic (a retained one arrives at once) and print it."""
    from lfr_provision.pki import certificate_cn
    from lfr_tools.broker_client import QueuedClient, connect_tls

    try:
        identity = certificate_cn(tls[1])
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"--cert {tls[1]}: not a readable certificate ({exc})") from exc
    try:
        mqtt = QueuedClient(connect_tls(f"{identity}-check", host, port, tls, timeout_s=timeout_s))
    except ConnectionError as exc:
        raise ProvisionError(str(exc)) from exc
    try:
        emit(f"connected to {host}:{port} as {identity} (the broker takes the certificate's CN as username and id)")
        if expect is None:
            return 0
        try:
            mqtt.subscribe(expect)
            message = mqtt.messages.get(timeout=timeout_s)
        except ConnectionError as exc:
            raise ProvisionError(str(exc)) from exc
        except queue.Empty:
            emit(f"nothing on {expect} within {timeout_s:g} s")
            return 1
        retained = " (retained)" if message.retain else ""
        emit(f"{message.topic}{retained}: {bytes(message.payload)[:200].decode(errors='replace')}")
        return 0
    finally:
        mqtt.close()
