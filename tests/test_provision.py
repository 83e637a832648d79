"""lfr-provision init and install into a temporary root."""

from __future__ import annotations

import datetime
import os
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from lfr_edge.config import load_config
from lfr_provision import cli
from lfr_provision.identity import ProvisionError
from lfr_provision.init import InitOptions, config_text, init_unit
from lfr_provision.install import InstallOptions, install
from systemd_tools import needs_systemd_analyze, prepare_root, verify_unit

UNIT = "van-07"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_ca(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lfr test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_init_creates_keys_0600_dirs_0750_and_a_csr_for_the_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    report = init_unit(InitOptions(unit_id=UNIT, root=root))
    keys, tls = root / "etc/lfr-edge/keys", root / "etc/lfr-edge/tls"
    for private in (keys / "unit-x25519.key", keys / "unit-ed25519.key", tls / "unit.key"):
        assert mode(private) == 0o600, private
    for directory in (
        "etc/lfr-edge",
        "etc/lfr-edge/keys",
        "etc/lfr-edge/tls",
        "etc/lfr-edge/handsets",
        "var/lib/lfr-edge",
    ):
        assert mode(root / directory) == 0o750, directory
    x_key = serialization.load_pem_private_key((keys / "unit-x25519.key").read_bytes(), None)
    assert isinstance(x_key, X25519PrivateKey)
    x_pub = serialization.load_pem_public_key((keys / "unit-x25519.pub").read_bytes())
    assert x_pub.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == x_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert isinstance(
        serialization.load_pem_private_key((keys / "unit-ed25519.key").read_bytes(), None), Ed25519PrivateKey
    )
    csr = x509.load_pem_x509_csr((tls / "unit.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == UNIT
    text = report.text()
    assert "send" in text and "unit.csr" in text and "unit-x25519.pub" in text


def test_init_config_is_accepted_by_the_daemons_loader(tmp_path: Path) -> None:
    root = tmp_path / "root"
    init_unit(InitOptions(unit_id=UNIT, root=root, board="jetson", broker="broker.police.example:8884"))
    cfg = load_config(root / "etc/lfr-edge/config.toml")
    assert cfg.unit.id == UNIT
    assert cfg.mqtt.host == "broker.police.example" and cfg.mqtt.port == 8884
    assert cfg.mqtt.key_file == root / "etc/lfr-edge/tls/unit.key"
    assert cfg.cameras[0].source == "jetson" and cfg.inference.backend == "onnx-tensorrt"
    assert cfg.alerts.handsets_dir == root / "etc/lfr-edge/handsets"


def test_every_path_in_the_config_is_inside_the_root(tmp_path: Path) -> None:
    """A unit provisioned into a folder (bench mode) names only files in that folder; on a van, root / gives
    the van's own paths."""
    root = tmp_path / "bench"
    init_unit(InitOptions(unit_id=UNIT, root=root, camera="replay", camera_uri=str(tmp_path / "frames")))
    cfg = load_config(root / "etc/lfr-edge/config.toml")
    paths = [
        cfg.unit.state_dir, cfg.unit.keys_dir, cfg.unit.audit_log, cfg.models.dir, cfg.models.manifest,
        cfg.inference.engine_cache_dir, cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file,
        cfg.watchlist.command_centre_key, cfg.alerts.handsets_dir, Path(cfg.beacon.port),
    ]  # fmt: skip
    assert all(p.is_relative_to(root) for p in paths), paths
    assert cfg.cameras[0].source == "replay" and cfg.cameras[0].uri == str(tmp_path / "frames")
    assert cfg.cameras[0].options == {"loop": True}  # a desk rehearsal runs until it is stopped
    van = tomllib.loads(config_text(InitOptions(unit_id=UNIT, root=Path("/")), "10.0.0.1", 8883))
    assert van["mqtt"]["key_file"] == "/etc/lfr-edge/tls/unit.key"
    assert van["models"]["dir"] == "/opt/lfr-edge/models" and van["beacon"]["port"] == "/dev/lfr-beacon"
    assert van["cameras"][0]["source"] == "picamera2"


def test_init_refuses_a_camera_source_that_is_not_installed(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match=r"--camera 'webcam'.*known: .*replay"):
        init_unit(InitOptions(unit_id=UNIT, root=tmp_path / "r", camera="webcam"))
    assert not (tmp_path / "r").exists()


def test_init_refuses_to_overwrite_keys_without_force(tmp_path: Path) -> None:
    root = tmp_path / "root"
    init_unit(InitOptions(unit_id=UNIT, root=root))
    key_file = root / "etc/lfr-edge/keys/unit-x25519.key"
    before = key_file.read_bytes()
    with pytest.raises(ProvisionError, match=r"already exists.*--force"):
        init_unit(InitOptions(unit_id=UNIT, root=root))
    assert key_file.read_bytes() == before
    init_unit(InitOptions(unit_id=UNIT, root=root, force=True))
    assert key_file.read_bytes() != before and mode(key_file) == 0o600


def test_init_signs_the_tls_certificate_with_the_technicians_ca(tmp_path: Path) -> None:
    ca_cert, ca_key = make_ca(tmp_path)
    root = tmp_path / "root"
    init_unit(InitOptions(unit_id=UNIT, root=root, ca_cert=ca_cert, ca_key=ca_key))
    cert = x509.load_pem_x509_certificate((root / "etc/lfr-edge/tls/unit.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == UNIT
    assert (root / "etc/lfr-edge/tls/ca.crt").read_bytes() == ca_cert.read_bytes()


def test_init_rejects_bad_inputs_naming_the_option(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(ProvisionError, match="--unit-id"):
        init_unit(InitOptions(unit_id="van 07/../x", root=root))
    with pytest.raises(ProvisionError, match="--broker"):
        init_unit(InitOptions(unit_id=UNIT, root=root, broker="no-port"))
    ca_cert, ca_key = make_ca(tmp_path)
    with pytest.raises(ProvisionError, match="--ca-cert and --ca-key"):
        init_unit(InitOptions(unit_id=UNIT, root=root, ca_cert=ca_cert))
    (tmp_path / "other").mkdir()
    other_cert, _ = make_ca(tmp_path / "other")
    with pytest.raises(ProvisionError, match="does not belong"):
        init_unit(InitOptions(unit_id=UNIT, root=root, ca_cert=other_cert, ca_key=ca_key))
    x_pub = tmp_path / "x.pub"
    x_pub.write_bytes(
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ProvisionError, match=r"--command-centre-key.*Ed25519"):
        init_unit(InitOptions(unit_id=UNIT, root=root, command_centre_key=x_pub))
    assert not (root / "etc/lfr-edge/keys/unit-x25519.key").exists()


def test_init_installs_the_command_centre_key_and_a_public_broker_address(tmp_path: Path) -> None:
    cc = tmp_path / "cc.pub"
    cc.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    root = tmp_path / "root"
    init_unit(InitOptions(unit_id=UNIT, root=root, broker="203.0.113.10:8883", command_centre_key=cc))
    assert (root / "etc/lfr-edge/keys/command-centre.pub").read_bytes() == cc.read_bytes()
    dropin = (root / "etc/systemd/system/lfr-edge.service.d/network.conf").read_text()
    assert "IPAddressAllow=203.0.113.10/32" in dropin
    init_unit(InitOptions(unit_id="van-08", root=tmp_path / "r2", broker="10.1.2.3:8883"))
    assert not (tmp_path / "r2/etc/systemd/system/lfr-edge.service.d/network.conf").exists()


def test_install_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install(InstallOptions(root=root, with_drop_ins=("jetson",)))
    assert sum(line.startswith("installed:") for line in first.done) == 5
    unit = root / "etc/systemd/system/lfr-edge.service"
    assert mode(unit) == 0o644
    assert (root / "etc/udev/rules.d/99-lfr-beacon.rules").exists()
    assert (root / "usr/lib/tmpfiles.d/lfr-edge.conf").exists()
    assert (root / "usr/lib/sysusers.d/lfr-edge.conf").exists()
    assert (root / "etc/systemd/system/lfr-edge.service.d/jetson.conf").exists()
    stamp = unit.stat().st_mtime_ns
    second = install(InstallOptions(root=root, with_drop_ins=("jetson",)))
    assert "nothing changed: everything was already installed" in second.done
    assert not any(line.startswith(("installed:", "updated:")) for line in second.done)
    assert unit.stat().st_mtime_ns == stamp
    unit.write_text("# edited by hand\n")
    third = install(InstallOptions(root=root, with_drop_ins=("jetson",)))
    assert f"updated: {unit}" in third.done


def test_install_names_an_unknown_drop_in(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="--with 'tpu'"):
        install(InstallOptions(root=tmp_path, with_drop_ins=("tpu",)))


def test_install_tells_the_technician_the_commands_to_run(tmp_path: Path) -> None:
    report = install(InstallOptions(root=tmp_path))
    assert any(f"systemctl --root={tmp_path} enable lfr-edge.service" in s for s in report.next_steps)
    assert any("lfr-provision init" in s for s in report.next_steps)


@needs_systemd_analyze
def test_provisioned_root_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(InstallOptions(root=root, with_drop_ins=("coral-usb",)))
    init_unit(InitOptions(unit_id=UNIT, root=root, broker="198.51.100.7:8883"))
    prepare_root(root)
    assert verify_unit(root) == ""


def test_cli_init_then_refusal_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert cli.main(["init", "--unit-id", UNIT, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Done:") and "Next:" in out
    assert cli.main(["init", "--unit-id", UNIT, "--root", str(root)]) == 2
    assert "unit-x25519.key already exists" in capsys.readouterr().err


def test_cli_install_twice_says_nothing_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["install", "--root", str(tmp_path)]) == 0
    assert "nothing changed" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0, reason="setting owners needs root")
def test_init_as_root_gives_keys_to_the_service_user(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nlfr-edge:x:4242:4343::/var/lib/lfr-edge:/usr/sbin/nologin\n"
    )
    init_unit(InitOptions(unit_id=UNIT, root=root))
    key = (root / "etc/lfr-edge/keys/unit-ed25519.key").stat()
    assert (key.st_uid, key.st_gid) == (4242, 4343)
    keys_dir = (root / "etc/lfr-edge/keys").stat()
    assert (keys_dir.st_uid, keys_dir.st_gid) == (0, 4343)


def test_init_knows_the_same_allowed_networks_as_the_unit_file() -> None:
    import ipaddress
    import re

    from lfr_provision.init import UNIT_ALLOWED_NETWORKS
    from lfr_provision.install import SYSTEMD_SOURCE

    text = (SYSTEMD_SOURCE / "lfr-edge.service").read_text()
    listed = {n for line in re.findall(r"^IPAddressAllow=(.*)$", text, re.M) for n in line.split()}
    listed.discard("localhost")
    assert {ipaddress.ip_network(n) for n in listed} | {
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    } == set(UNIT_ALLOWED_NETWORKS)
