"""Every CLI takes its global options before or after the command (lfr_edge/cli_options.py), and `--root`
keeps a unit provisioned into a folder inside that folder."""

from __future__ import annotations

import contextlib
import queue
import time
from pathlib import Path

import pytest

from lfr_edge import keyfiles
from lfr_edge.cli import build_parser as edge_parser
from lfr_edge.cli import main as edge_main
from lfr_hwsim.broker import MosquittoBroker
from lfr_provision.cli import main as provision_main
from lfr_provision.init import InitOptions, init_unit
from lfr_tools.command_centre.cli import build_parser as watchlist_parser
from lfr_tools.command_centre.cli import main as watchlist_main
from lfr_tools.handset.cli import HandsetClient, HandsetKeys
from lfr_tools.handset.cli import main as handset_main


def test_lfr_edge_takes_config_and_root_before_or_after_the_command() -> None:
    for argv in (["--config", "c.toml", "-v", "run"], ["run", "--config", "c.toml", "-v"]):
        args = edge_parser().parse_args(argv)
        assert (args.command, args.config, args.verbose) == ("run", Path("c.toml"), True)
    for argv in (["--root", "bench", "run"], ["run", "--root", "bench"]):
        assert edge_parser().parse_args(argv).root == Path("bench")
    args = edge_parser().parse_args(["--config", "a.toml", "run"])  # not reset by the command's parser
    assert args.config == Path("a.toml")


def test_lfr_photos_takes_config_before_or_after_the_command() -> None:
    from lfr_tools.photos.cli import build_parser as photos_parser

    for argv in (["--config", "u.toml", "summary", "dir"], ["summary", "dir", "--config", "u.toml"]):
        assert photos_parser().parse_args(argv).config == Path("u.toml")


def test_a_config_that_leaves_the_root_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bench unit must not read or write the desk's own /etc or /var: a config written for a van (paths
    under /) is refused under --root, naming the key."""
    root = tmp_path / "bench"
    init_unit(InitOptions(unit_id="van-07", root=root))
    config = root / "etc/lfr-edge/config.toml"
    config.write_text(config.read_text().replace(str(root / "var/lib/lfr-edge/audit.jsonl"), "/var/lib/lfr-edge/x"))
    for main, argv in ((edge_main, ["run", "--root", str(root)]), (provision_main, ["selftest", "--root", str(root)])):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "unit.audit_log = /var/lib/lfr-edge/x is outside --root" in err, argv


def test_lfr_provision_takes_root_before_or_after_any_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bench"
    assert provision_main(["--root", str(root), "init", "--unit-id", "van-07"]) == 0
    assert (root / "etc/lfr-edge/config.toml").is_file()
    capsys.readouterr()
    for argv in (
        ["handsets", "list", "--root", str(root)],
        ["handsets", "--root", str(root), "list"],
        ["--root", str(root), "handsets", "list"],
    ):
        assert provision_main(argv) == 0, argv
        assert f"0 handset(s) paired with this unit ({root}/etc/lfr-edge/handsets)" in capsys.readouterr().out
    assert provision_main(["install", "--root", str(root)]) == 0
    assert (root / "etc/systemd/system/lfr-edge.service").is_file()


def test_lfr_watchlist_takes_the_connection_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    connection = ["--broker", "b.example:8883", "--ca", "ca.crt", "--cert", "cc.crt", "--key", "cc.key"]
    for argv in (
        [*connection, "publish", "x.lfrwl", "--unit", "van-07"],
        ["publish", "x.lfrwl", "--unit", "van-07", *connection],
        [*connection[:4], "publish", "x.lfrwl", "--unit", "van-07", *connection[4:]],
    ):
        args = watchlist_parser().parse_args(argv)
        assert args.broker == ("b.example", 8883) and args.key == Path("cc.key"), argv
    with pytest.raises(SystemExit) as exited:
        watchlist_main(["publish", "x.lfrwl", "--unit", "van-07", "--broker", "b:1"])
    assert exited.value.code == 2
    assert "publish: the following arguments are required: --ca, --cert, --key" in capsys.readouterr().err


@pytest.mark.broker
def test_lfr_handset_decide_takes_options_anywhere_and_leaves_the_listeners_alerts_alone(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The broker binds the client id to the certificate, so `decide` and `listen` share handset-1's session:
    `decide` must neither erase it (a clean session would) nor take the alerts queued in it, and it gets the
    unit's answer to its decision."""
    from test_handset_alerts import Unit, make_alert, paired

    keys = HandsetKeys.generate(tmp_path / "keys", "handset-1")
    unit = Unit(broker, paired(keys))
    keyfiles.save_public_key(tmp_path / "keys" / "unit-unit-a-ed25519.pub", unit.key.public_key())
    tls = broker.client("handset-1")
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    listener = HandsetClient(keys, "unit-a", unit.key.public_key(), broker.host, broker.port, files, broker.prefix)
    listener.start()
    unit.start()
    try:
        unit.channel.deliver(make_alert("a-1"))
        assert listener.alerts.get(timeout=10).alert.alert_id == "a-1"
        listener.stop()  # the officer's listener is away for a moment: a-2 queues in handset-1's session
        unit.channel.deliver(make_alert("a-2"))
        connection = ["--unit", "unit-a", "--broker", f"{broker.host}:{broker.port}", "--ca", str(tls.ca_file)]
        connection += ["--cert", str(tls.cert_file), "--key", str(tls.key_file), "--keys", str(tmp_path / "keys")]
        assert handset_main([*connection[:4], "decide", "a-1", "engage", *connection[4:]]) == 0
        listener = HandsetClient(keys, "unit-a", unit.key.public_key(), broker.host, broker.port, files, broker.prefix)
        listener.start()
        # a-2 is still there for the listener (a-1 may come again too: the unit re-sends until a receipt, and a
        # new listener does not remember what the last one showed)
        shown: set[str] = set()
        deadline = time.monotonic() + 15
        while "a-2" not in shown and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                shown.add(listener.alerts.get(timeout=1).alert.alert_id)
        assert "a-2" in shown
    finally:
        listener.stop()
        unit.mqtt.stop()
