"""Watchlist sync end to end over a real mosquitto with mutual TLS, and the lfr-watchlist tool."""

from __future__ import annotations

import json
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.audit_events import AuditEvent
from lfr_edge import keyfiles
from lfr_edge.comms.mqtt import UnitMqttClient
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.sync import WatchlistSync
from lfr_hwsim.broker import MosquittoBroker
from lfr_tools.command_centre.cli import main as watchlist_main
from lfr_tools.command_centre.enrol import Enrolment, PipelineEnroller
from lfr_tools.photos.image import read_image
from mqtt_fixtures import Collector, unit_mqtt_config
from watchlist_helpers import MODEL, Keys, make_bundle, subjects

pytestmark = pytest.mark.broker


class ListAudit:
    def __init__(self) -> None:
        self.events: list[str] = []

    def append(self, event: AuditEvent) -> None:
        self.events.append(event.name)


class Unit:
    """A unit's MQTT client and watchlist sync, wired as the daemon wires them."""

    def __init__(
        self,
        broker: MosquittoBroker,
        unit_key: X25519PrivateKey,
        centre: Ed25519PrivateKey,
        model: str,
        noise_before_ack: bytes | None = None,
    ) -> None:
        self.client = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
        self.audit = ListAudit()
        self.sync = WatchlistSync(
            unit_id="unit-a",
            model_id=model,
            command_centre_key=centre.public_key(),
            unit_key=unit_key,
            max_bundle_bytes=16 << 20,
            ack_topic=self.client.topics.watchlist_ack,
            publish=self._publish,
            audit=self.audit,
            record=LifecycleFile(
                Path(tempfile.mkdtemp(prefix="lfr-sync-")) / "lifecycle.json", "unit-a", Ed25519PrivateKey.generate()
            ),
        )
        self._noise = noise_before_ack  # something else on the ack topic first (a stray or damaged message)
        self.client.subscribe(self.client.topics.watchlist, self.sync.handle_message, max_bytes=16 << 20)
        self.client.start()
        assert self.client.connected.wait(10)

    def _publish(self, topic: str, payload: bytes) -> bool:
        if self._noise is not None:
            self.client.publish(topic, self._noise, qos=1)
        return self.client.publish(topic, payload, qos=1)

    def stop(self) -> None:
        self.client.stop()
        self.sync.shutdown()


def test_a_retained_bundle_is_picked_up_by_a_unit_that_starts_later(broker: MosquittoBroker) -> None:
    centre, unit_key = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    now = time.time()
    data = bundle.build_bundle(
        subjects(5), deployment="DEP-9", unit_id="unit-a", unit_key=unit_key.public_key(), version=3,
        valid_from=now - 60, valid_until=now + 600, threshold=0.5, model_id=MODEL,
        sign_key=centre, issued_at=now,
    )  # fmt: skip
    cc = Collector(broker, "command-centre")
    cc.subscribe("lfr/v1/units/unit-a/watchlist/ack")
    cc.publish("lfr/v1/units/unit-a/watchlist", data, retain=True)
    unit = Unit(broker, unit_key, centre, MODEL)
    ack = json.loads(cc.next_on("lfr/v1/units/unit-a/watchlist/ack").payload)
    assert ack["status"] == "applied" and ack["version"] == 3 and ack["subjects"] == 5
    assert unit.sync.store is not None and unit.sync.store.version == 3
    # the broker restarts (no persistence): the unit reconnects, and a signed close still reaches it
    broker.restart()
    cc.close()
    cc = Collector(broker, "command-centre")
    cc.subscribe("lfr/v1/units/unit-a/watchlist/ack")
    assert unit.client.connected.wait(10)
    cc.publish("lfr/v1/units/unit-a/watchlist", bundle.build_close("DEP-9", "unit-a", centre, time.time(), "x"))
    assert json.loads(cc.next_on("lfr/v1/units/unit-a/watchlist/ack").payload)["status"] == "closed"
    assert unit.sync.store is None
    unit.stop()
    cc.close()


class FixedEnroller:
    """A stand-in embedder for the tool's plumbing tests (the round trip below uses the real one)."""

    model_id = MODEL

    def enrol(self, image_rgb: npt.NDArray[np.uint8]) -> Enrolment:
        if image_rgb.mean() < 10:
            return Enrolment(None, b"", "no face")
        v = np.ones(16, np.float32) / 4.0
        return Enrolment(v, b"\xff\xd8ref", "")


def _write_photo(path: Path, value: int) -> None:
    import cv2

    cv2.imwrite(str(path), np.full((40, 40, 3), value, np.uint8))


def test_build_lists_unusable_photos_and_fails_without_skip_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lfr_tools.command_centre import cli

    _write_photo(tmp_path / "good.png", 200)
    _write_photo(tmp_path / "dark.png", 0)
    (tmp_path / "s.csv").write_text(
        "subject_id,category,photos,reference\nA,wanted,good.png;dark.png,r\nB,missing,dark.png,r\n"
    )
    assert watchlist_main(["keygen", "--out", str(tmp_path / "cc")]) == 0
    assert stat.S_IMODE((tmp_path / "cc" / "command-centre.key").stat().st_mode) == 0o600
    unit_key = X25519PrivateKey.generate()
    keyfiles.save_public_key(tmp_path / "unit-a.pub", unit_key.public_key())
    argv = [
        "build", "--photos", str(tmp_path), "--subjects", str(tmp_path / "s.csv"), "--deployment", "D",
        "--valid-from", "2036-01-01T00:00Z", "--valid-until", "2036-01-02T00:00Z", "--threshold", "0.5",
        "--sign-key", str(tmp_path / "cc" / "command-centre.key"), "--unit-key", str(tmp_path / "unit-a.pub"),
        "--out", str(tmp_path / "out" / "{unit}.lfrwl"),
    ]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    with pytest.raises(cli.CliError, match="B"):
        cli.cmd_build(args, FixedEnroller())
    err = capsys.readouterr().err
    assert "A: dark.png: no face" in err and "B: no usable photo" in err
    args = cli.build_parser().parse_args([*argv, "--skip-unusable"])
    assert cli.cmd_build(args, FixedEnroller()) == 0
    out = tmp_path / "out" / "unit-a.lfrwl"
    header = bundle.read_envelope(out.read_bytes(), 1 << 20).header
    assert header["unit"] == "unit-a" and header["subjects"] == 1 and header["valid_from"] == "2036-01-01T00:00:00Z"
    capsys.readouterr()
    assert watchlist_main(["inspect", str(out), "--verify-key", str(tmp_path / "cc" / "command-centre.pub")]) == 0
    assert "signature: valid" in capsys.readouterr().out
    keyfiles.save_public_key(tmp_path / "other.pub", Ed25519PrivateKey.generate().public_key())
    assert watchlist_main(["inspect", str(out), "--verify-key", str(tmp_path / "other.pub")]) == 1


@pytest.fixture
def centre_files(tmp_path: Path) -> Iterator[Path]:
    assert watchlist_main(["keygen", "--out", str(tmp_path / "cc")]) == 0
    yield tmp_path / "cc"


@pytest.mark.faces
def test_round_trip_from_photos_to_a_match_on_the_unit(
    broker: MosquittoBroker, pipeline: object, faces: Path, tmp_path: Path, centre_files: Path
) -> None:
    from lfr_edge.vision.pipeline import FacePipeline
    from lfr_tools.command_centre import cli

    assert isinstance(pipeline, FacePipeline)
    enroller = PipelineEnroller(pipeline)
    wild = faces / "wild"
    enrolled = ["7203", "7205", "7207"]
    lines = ["subject_id,category,photos,reference"]
    lines += [f"{i},wanted,{i}/0.jpg;{i}/1.jpg;{i}/2.jpg;{i}/3.jpg,case {i}" for i in enrolled]
    (tmp_path / "subjects.csv").write_text("\n".join(lines) + "\n")
    unit_key = X25519PrivateKey.generate()
    keyfiles.save_public_key(tmp_path / "unit-a.pub", unit_key.public_key())
    now = time.time()
    args = cli.build_parser().parse_args([
        "build", "--photos", str(wild), "--subjects", str(tmp_path / "subjects.csv"),
        "--deployment", "DEP-RT",
        "--valid-from", str(now - 60), "--valid-until", str(now + 3600), "--threshold", "0.5",
        "--sign-key", str(centre_files / "command-centre.key"),
        "--unit-key", f"unit-a={tmp_path / 'unit-a.pub'}",
        "--out", str(tmp_path / "unit-a.lfrwl"), "--version", "10",
    ])  # fmt: skip
    assert cli.cmd_build(args, enroller) == 0
    centre = keyfiles.load_ed25519_private(centre_files / "command-centre.key")
    unit = Unit(broker, unit_key, centre, pipeline.model_id)
    tls = broker.client("command-centre")
    assert watchlist_main([
        "publish", str(tmp_path / "unit-a.lfrwl"), "--unit", "unit-a", "--broker", f"127.0.0.1:{broker.port}",
        "--ca", str(tls.ca_file), "--cert", str(tls.cert_file), "--key", str(tls.key_file), "--wait-ack",
        "--timeout", "20",
    ]) == 0  # fmt: skip
    store = unit.sync.store
    assert store is not None and store.version == 10 and store.size == 3

    def best(photo: str) -> tuple[str, float]:
        probe = enroller.enrol(read_image(wild / photo))
        assert probe.embedding is not None, probe.reason
        result = store.search(probe.embedding[None], now=time.time(), k=1)
        return store.subject(int(result.indices[0, 0])).id, float(result.scores[0, 0])

    subject, score = best("7205/5.jpg")  # a photo of an enrolled subject that was not enrolled
    assert subject == "7205" and score >= store.threshold, score
    _, stranger = best("7204/5.jpg")  # a person not on the list
    assert stranger < store.threshold, stranger
    assert store.subject(1).photo_jpeg[:2] == b"\xff\xd8"
    unit.stop()
    assert not store.is_usable(time.time())  # wiped at shutdown, well inside its validity window


@pytest.mark.broker
def test_status_shows_what_the_unit_holds_and_publish_refuses_what_the_unit_would(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lfr_contracts.status import WatchlistStatus
    from watchlist_helpers import Keys, make_bundle

    keys = Keys()
    keyfiles.save_public_key(tmp_path / "cc.pub", keys.centre.public_key())
    keyfiles.save_public_key(tmp_path / "unit-x25519.pub", keys.unit.public_key())
    keyfiles.save_public_key(tmp_path / "other.pub", X25519PrivateKey.generate().public_key())
    tls = broker.client("command-centre")
    connection = [
        "--broker", f"127.0.0.1:{broker.port}", "--ca", str(tls.ca_file), "--cert", str(tls.cert_file),
        "--key", str(tls.key_file), "--timeout", "10",
    ]  # fmt: skip
    assert watchlist_main(["status", "--unit", "unit-a", *connection]) == 1  # never connected
    assert "no status on the broker" in capsys.readouterr().out
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"), model_id=MODEL)
    unit.set_watchlist_status(WatchlistStatus("refused", version=4, reason="wrong_unit", detail="for unit-b"))
    unit.start()
    try:
        assert unit.connected.wait(10)
        assert watchlist_main(["status", *connection, "--unit", "unit-a"]) == 0
        shown = capsys.readouterr().out
        assert "unit unit-a: online" in shown and "watchlist: refused: wrong_unit (for unit-b)" in shown
        assert f"model: {MODEL}" in shown

        def publish(payload: bytes, *extra: str) -> tuple[int, str]:
            path = tmp_path / "b.lfrwl"
            path.write_bytes(payload)
            code = watchlist_main(["publish", str(path), "--unit", "unit-a", *connection, *extra])
            return code, capsys.readouterr().err

        checks = ["--verify-key", str(tmp_path / "cc.pub"), "--unit-key", str(tmp_path / "unit-x25519.pub")]
        now = time.time()
        refused = {
            "for unit 'unit-b'": make_bundle(keys, version=5, unit_id="unit-b"),
            "window ended": make_bundle(keys, version=5, valid_from=now - 7200, valid_until=now - 60),
            "runs mobilefacenet": make_bundle(keys, version=5, model_id="sface/float/000000000000"),
            "does not verify": make_bundle(Keys(centre=Ed25519PrivateKey.generate(), unit=keys.unit), version=5),
        }
        for why, payload in refused.items():
            code, err = publish(payload, *checks)
            assert code == 2 and why in err, (why, err)
        code, err = publish(make_bundle(keys, version=5), "--unit-key", str(tmp_path / "other.pub"))
        assert code == 2 and "not sealed to" in err
        assert publish(make_bundle(keys, version=5), *checks)[0] == 0
    finally:
        unit.stop()


def test_publish_waits_past_a_message_on_the_ack_topic_that_is_not_an_ack(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged or stray message before the unit's answer is named and skipped, not taken for the answer and
    not fatal: the command still waits for, and reports, the real ack."""
    keys = Keys()
    now = time.time()
    issued = make_bundle(keys, version=3, valid_from=now - 60, valid_until=now + 3600, issued_at=now - 120)
    (tmp_path / "unit-a.lfrwl").write_bytes(issued)
    unit = Unit(broker, keys.unit, keys.centre, MODEL, noise_before_ack=b"[not an ack")
    tls = broker.client("command-centre")
    try:
        assert watchlist_main([
            "publish", str(tmp_path / "unit-a.lfrwl"), "--unit", "unit-a", "--broker", f"127.0.0.1:{broker.port}",
            "--ca", str(tls.ca_file), "--cert", str(tls.cert_file), "--key", str(tls.key_file), "--wait-ack",
            "--timeout", "20",
        ]) == 0  # fmt: skip
    finally:
        unit.stop()
    told = capsys.readouterr()
    assert "ignored: unit unit-a answered with a message that is not a watchlist ack" in told.err
    assert '"status": "applied"' in told.out
