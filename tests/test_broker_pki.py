"""`lfr-provision ca ...` and `lfr-provision broker config`: the CA, the certificates and the broker's
configuration they make, checked by a real mosquitto running that configuration."""

from __future__ import annotations

import datetime as dt
import queue
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lfr_contracts import layout
from lfr_edge.comms.mqtt import tls_client
from lfr_hwsim.broker import free_port, mosquitto_binary
from lfr_provision import cli
from lfr_provision.broker_config import AccessPlan, acl_text
from lfr_provision.init import InitOptions, init_unit

pytestmark = pytest.mark.broker


def provision(*args: str) -> int:
    return cli.main(list(args))


def cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def self_signed_ca(
    tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, ca: bool = True
) -> tuple[Path, Path]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "force CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "existing-ca.crt", tmp_path / "existing-ca.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_ca_issues_the_broker_and_every_kind_of_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert provision("ca", "create", "--ca", str(ca), "--name", "Force LFR CA") == 0
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    assert provision("ca", "issue", "--ca", str(ca), "--role", "broker", "--name", "broker.example",
                     "--name", "10.8.0.1", "--out", str(tmp_path / "broker")) == 0  # fmt: skip
    server = x509.load_pem_x509_certificate((tmp_path / "broker/broker.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.8.0.1"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for role, name in (("handset", "handset-1"), ("command-centre", "command-centre"), ("bridge", "bridge-van-07")):
        assert (
            provision("ca", "issue", "--ca", str(ca), "--role", role, "--name", name, "--out", str(tmp_path / name))
            == 0
        )
        assert cn(tmp_path / name / f"{name}.crt") == name
        x509.load_pem_x509_certificate((tmp_path / name / f"{name}.crt").read_bytes()).verify_directly_issued_by(
            x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes())
        )
    # a unit's request from init: its certificate and its pairing helper's, for the unit's one key
    init_unit(InitOptions(unit_id="van-07", root=tmp_path / "van"))
    tls = tmp_path / "van/etc/lfr-edge/tls"
    assert provision("ca", "sign", "--ca", str(ca), "--csr", str(tls / "unit.csr"), "--out", str(tls)) == 0
    assert cn(tls / layout.TLS_CERT) == "van-07" and cn(tls / layout.TLS_PAIRING_CERT) == "van-07.pairing"
    assert (tls / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "handset", "--name", "handset 1"], "a handset identity is 1-64 letters"),
        (["--role", "bridge", "--name", "van-07"], "bridge-<unit id>"),
        (["--role", "handset", "--name", "a", "--name", "b"], "exactly one --name"),
        (["--role", "broker", "--name", "bad_host!"], "not a host name or IP address"),
    ],
)
def test_issue_names_a_bad_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert provision("ca", "create", "--ca", str(tmp_path / "ca")) == 0
    assert provision("ca", "issue", "--ca", str(tmp_path / "ca"), *args, "--out", str(tmp_path / "o")) == 2
    assert message in capsys.readouterr().err


def test_a_missing_ca_folder_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision("ca", "issue", "--ca", str(tmp_path / "nope"), "--role", "handset", "--name", "h",
                     "--out", str(tmp_path / "o")) == 2  # fmt: skip
    assert "lfr-provision ca create --ca" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["rsa", "ec-p384"])
def test_an_existing_rsa_or_ec_ca_signs_a_unit(tmp_path: Path, kind: str) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    )
    ca_cert, ca_key = self_signed_ca(tmp_path, key)
    init_unit(InitOptions(unit_id="van-07", root=tmp_path / "van", ca_cert=ca_cert, ca_key=ca_key))
    unit_cert = x509.load_pem_x509_certificate((tmp_path / "van/etc/lfr-edge/tls/unit.crt").read_bytes())
    unit_cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert.read_bytes()))
    assert provision("ca", "import", "--ca", str(tmp_path / "ca"), "--cert", str(ca_cert), "--key", str(ca_key)) == 0
    assert provision("ca", "issue", "--ca", str(tmp_path / "ca"), "--role", "handset", "--name", "handset-1",
                     "--out", str(tmp_path / "h")) == 0  # fmt: skip


def test_a_ca_key_of_another_kind_is_refused_naming_what_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_cert, _ = self_signed_ca(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    wrong = tmp_path / "ed.key"
    wrong.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert provision("ca", "import", "--ca", str(tmp_path / "ca"), "--cert", str(ca_cert), "--key", str(wrong)) == 2
    err = capsys.readouterr().err
    assert "EC (P-256, P-384, P-521) or RSA (2048 bits or more)" in err
    small = tmp_path / "small"
    small.mkdir()
    small_cert, small_key = self_signed_ca(small, rsa.generate_private_key(65537, 1024))
    assert (
        provision("ca", "import", "--ca", str(tmp_path / "ca"), "--cert", str(small_cert), "--key", str(small_key)) == 2
    )
    assert "RSA key of 1024 bits" in capsys.readouterr().err
    leaf = tmp_path / "leaf"
    leaf.mkdir()
    leaf_cert, leaf_key = self_signed_ca(leaf, ec.generate_private_key(ec.SECP256R1()), ca=False)
    assert (
        provision("ca", "import", "--ca", str(tmp_path / "ca"), "--cert", str(leaf_cert), "--key", str(leaf_key)) == 2
    )
    assert "not a CA certificate" in capsys.readouterr().err


def test_acl_binds_each_identity_to_its_own_topics() -> None:
    text = acl_text(AccessPlan(units=("van-07",), handsets={"handset-1": ("van-07",)}))
    blocks = {line: b for b in text.split("\n\n") for line in b.splitlines() if line.startswith("user ")}
    assert "pattern read lfr/v1/units/%u/watchlist" in text and "pattern write lfr/v1/units/%u/alerts" in text
    assert "topic write lfr/v1/units/van-07/pairing/offer" in blocks["user van-07.pairing"]
    handset = blocks["user handset-1"]
    assert "topic read lfr/v1/units/van-07/pairing/confirm/handset-1" in handset
    assert "topic write lfr/v1/units/van-07/decisions/from/handset-1" in handset and "watchlist" not in handset
    assert "topic write lfr/v1/units/van-07/alerts/ack/from/handset-1" in handset
    assert (
        "topic write lfr/v1/units/van-07/decisions\n" not in text
        and "pattern read lfr/v1/units/%u/decisions\n" not in text
    )
    assert "pattern read lfr/v1/units/%u/decisions/from/+" in text
    assert "topic write lfr/v1/units/+/watchlist" in blocks["user command-centre"]


# ---- the generated configuration, run by mosquitto -----------------------------------------------------


class Broker:
    """The files `lfr-provision ca` and `broker config` write, and mosquitto started on them."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.dir = tmp_path / "broker"
        self.ca = tmp_path / "ca"
        self.port = free_port()
        assert provision("ca", "create", "--ca", str(self.ca)) == 0
        assert provision("ca", "issue", "--ca", str(self.ca), "--role", "broker", "--name", "localhost",
                         "--name", "127.0.0.1", "--out", str(self.dir)) == 0  # fmt: skip
        assert provision("broker", "config", "--dir", str(self.dir), "--port", str(self.port), "--listen", "127.0.0.1",
                         "--data", str(tmp_path / "data"), "--run-as", run_as(), "--log", str(tmp_path / "broker.log"),
                         *extra) == 0  # fmt: skip
        self.log = tmp_path / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.dir / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def identity(self, role: str, name: str, tmp_path: Path) -> tuple[Path, Path, Path]:
        out = tmp_path / "clients" / name
        assert provision("ca", "issue", "--ca", str(self.ca), "--role", role, "--name", name, "--out", str(out)) == 0
        return out / "ca.crt", out / f"{name}.crt", out / f"{name}.key"


def run_as() -> str:
    import getpass

    return getpass.getuser()


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path, "--unit", "van-07", "--handset", "handset-1=van-07", "--handset", "handset-2=van-07",
                    "--max-message-mib", "1")  # fmt: skip
    broker.start()
    yield broker
    broker.stop()


def connect(
    tls: tuple[Path, Path, Path], port: int, client_id: str, clean: bool = True
) -> tuple[paho.Client, queue.Queue[bytes]]:
    client = tls_client(client_id, *tls, clean_session=clean)
    got: queue.Queue[bytes] = queue.Queue()
    up: queue.Queue[bool] = queue.Queue()
    client.on_message = lambda c, u, m: got.put(bytes(m.payload))
    client.on_connect = lambda c, u, f, r, p: up.put(not r.is_failure)
    client.connect("localhost", port, keepalive=10)
    client.loop_start()
    assert up.get(timeout=10)
    return client, got


def subscribed(client: paho.Client, topic: str) -> None:
    done: queue.Queue[bool] = queue.Queue()
    client.on_subscribe = lambda *a: done.put(True)
    client.subscribe(topic, 1)
    assert done.get(timeout=10)


def close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def test_another_certificate_can_neither_take_nor_erase_a_handsets_session(tmp_path: Path, generated: Broker) -> None:
    alerts = "lfr/v1/units/van-07/alerts"
    handset_2 = generated.identity("handset", "handset-2", tmp_path)
    other = generated.identity("handset", "handset-1", tmp_path)  # another van's handset, say
    init_unit(InitOptions(unit_id="van-07", root=tmp_path / "van"))
    tls = tmp_path / "van/etc/lfr-edge/tls"
    assert provision("ca", "sign", "--ca", str(generated.ca), "--csr", str(tls / "unit.csr"), "--out", str(tls)) == 0
    unit = (tls / "ca.crt", tls / "unit.crt", tls / "unit.key")
    owner, _ = connect(handset_2, generated.port, "handset-2", clean=False)
    subscribed(owner, alerts)
    close(owner)  # handset-2 is away: its alerts queue in its session
    sender, _ = connect(unit, generated.port, "van-07")
    sender.publish(alerts, b"queued for handset-2", qos=1).wait_for_publish(10)
    # handset-1's certificate asks for handset-2's client id, with a clean session (that would erase it) and
    # then a persistent one (that would receive the queued alert): the broker gives it its own, "handset-1"
    thief, stolen = connect(other, generated.port, "handset-2", clean=True)
    close(thief)
    thief, stolen = connect(other, generated.port, "handset-2", clean=False)
    subscribed(thief, alerts)
    with pytest.raises(queue.Empty):
        stolen.get(timeout=1.0)
    close(thief)
    owner, mine = connect(handset_2, generated.port, "handset-2", clean=False)
    assert mine.get(timeout=10) == b"queued for handset-2"
    close(owner)
    close(sender)


def test_a_handset_certificate_writes_only_its_own_decision_and_receipt_topics(
    tmp_path: Path, generated: Broker
) -> None:
    units = "lfr/v1/units/van-07"
    init_unit(InitOptions(unit_id="van-07", root=tmp_path / "van"))
    tls = tmp_path / "van/etc/lfr-edge/tls"
    assert provision("ca", "sign", "--ca", str(generated.ca), "--csr", str(tls / "unit.csr"), "--out", str(tls)) == 0
    unit, got = connect((tls / "ca.crt", tls / "unit.crt", tls / "unit.key"), generated.port, "van-07")
    subscribed(unit, f"{units}/decisions/from/+")  # as the daemon subscribes: every handset's own topic
    subscribed(unit, f"{units}/alerts/ack/from/+")
    rogue, _ = connect(generated.identity("handset", "handset-2", tmp_path), generated.port, "handset-2")
    # handset-2 speaking for handset-1, and on the shared topics of old: the broker drops every one
    for topic in ("decisions/from/handset-1", "alerts/ack/from/handset-1", "decisions", "alerts/ack"):
        rogue.publish(f"{units}/{topic}", b"as handset-1: " + topic.encode(), qos=1).wait_for_publish(10)
    rogue.publish(f"{units}/decisions/from/handset-2", b"its own", qos=1).wait_for_publish(10)
    assert got.get(timeout=10) == b"its own"  # the broker forwards one sender's messages in order
    with pytest.raises(queue.Empty):
        got.get(timeout=0.5)
    close(rogue)
    close(unit)


def test_a_message_over_the_limit_closes_the_senders_connection(tmp_path: Path, generated: Broker) -> None:
    centre = generated.identity("command-centre", "command-centre", tmp_path)
    client, _ = connect(centre, generated.port, "cc")
    gone: queue.Queue[bool] = queue.Queue()
    client.on_disconnect = lambda *a: gone.put(True)
    client.publish("lfr/v1/units/van-07/watchlist", b"x" * (2 * 2**20), qos=1)
    assert gone.get(timeout=10)  # loud: the sender sees its connection closed, not a silent drop
    close(client)


def test_no_certificate_no_connection(generated: Broker) -> None:
    context = ssl.create_default_context(cafile=str(generated.ca / "ca.crt"))
    with (
        socket.create_connection(("127.0.0.1", generated.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.send(b"\x10\x00")
        tls.recv(1)


def test_broker_config_names_missing_certificates_and_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision("broker", "config", "--dir", str(tmp_path / "empty"), "--run-as", run_as()) == 2
    assert "is missing: issue it first (`lfr-provision ca issue" in capsys.readouterr().err
    Broker(tmp_path / "b")  # a complete folder
    folder = tmp_path / "b" / "broker"
    for args, message in (
        (["--handset", "handset-1"], "NAME=UNIT"),
        (["--autosave-s", "0"], "--autosave-s 0"),
        (["--unit", "van 07"], "--unit 'van 07'"),
        (["--bridge-to", "cc:8883"], "go together"),
    ):
        assert provision("broker", "config", "--dir", str(folder), "--run-as", run_as(), *args) == 2, args
        assert message in capsys.readouterr().err, args
