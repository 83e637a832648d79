"""The officer's screen in a real browser: Debian's chromium (headless, Selenium) on `lfr-handset app`, against
the real `lfr-edge run` on the simulator with a real broker.

One deployment for the module, the tests in the order an officer meets them: a wrong link gets nothing; an
alert appears as a card with its three pictures (screenshots of a phone and a tablet are saved in
test-results/handset-app/); a decision comes back accepted; the unit killed and restarted shows in the
banner; a decision on an alert the restarted unit no longer knows shows the unit's refusal; stopping the app
clears the page.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lfr_contracts import calibration
from lfr_contracts.alerts import Alert
from lfr_contracts.calibration import CALIBRATION_FILE, CalibrationTable, alert_band
from lfr_edge.config import Config
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.officer import PHONE, PIXELATE_FACES, TABLET, HandsetAppProcess, chromium, resize, wait_until
from lfr_hwsim.van import DaemonProcess, SimulatedVan, Subject
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.handset.app import Screen, alert_card
from lfr_tools.handset.client import ReceivedAlert
from test_daemon_e2e import camera  # the same looping replay camera the e2e tests use

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WANTED = "7205"  # an identity of ../shared/faces/wild
RESULTS = Path(__file__).resolve().parent.parent / "test-results" / "handset-app"
CARD = "document.querySelector('.card')"
URL = re.compile(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/")


@dataclass
class Deployment:
    van: SimulatedVan
    config: Path
    daemon: DaemonProcess
    app: HandsetAppProcess
    browser: Any


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, faces: Path, pipeline: FacePipeline) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("handset-app")
    wanted = sorted((faces / "wild" / WANTED).glob("*.jpg"))
    frames = tmp / "frames"
    frames.mkdir()
    for i, image in enumerate(wanted[2:]):
        (frames / f"{i:03d}.jpg").symlink_to(image)
    with SimulatedVan(tmp / "van", unit_id="van-01") as van:
        subject = Subject("S-7205", "wanted", tuple(wanted[:2]), "ref 1/23: assault, Leeds")
        van.publish_watchlist(
            van.build_watchlist([subject], PipelineEnroller(pipeline), threshold=0.5), wait_ack_s=None
        )
        config = van.write_config([camera(frames)], daemon={"telemetry_interval_s": 0.5})
        app = HandsetAppProcess(van, "handset-1", "--clear-decided-after", "600")
        browser = chromium(PHONE)
        daemon = van.start_daemon(config)
        try:
            daemon.wait_for("READY", timeout=120)
            browser.get(app.url)
            yield Deployment(van, config, daemon, app, browser)
        finally:
            browser.quit()
            app.stop()


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_a_wrong_token_gets_nothing(deployment: Deployment) -> None:
    url = deployment.app.url
    base, token = url.rstrip("/").rsplit("/", 1)
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    decision = json.dumps({"alert_id": "x", "decision": "engage"}).encode()
    for path, data in [(f"/{wrong}/", None), (f"/{wrong}/events", None), ("/", None), (f"/{wrong}/decide", decision)]:
        status, body, _ = fetch(base + path, data)
        assert (path, status, body) == (path, 403, b"")
    # The right token under another host name (DNS rebinding) gets nothing either.
    request = urllib.request.Request(url, headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403 and refused.value.read() == b""
    status, body, headers = fetch(url)
    assert status == 200 and b"app.js" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def real_table(config: Config, model_id: str) -> CalibrationTable:
    """The table the models build wrote for the unit's embedder (calibration.json beside the models)."""
    return calibration.decode((config.models.dir.expanduser() / CALIBRATION_FILE).read_bytes())[model_id]


def test_an_alert_appears_as_a_card_with_its_pictures(
    deployment: Deployment, unit_config: Config, pipeline: FacePipeline
) -> None:
    browser = deployment.browser
    wait_until(browser, CARD, timeout_s=120)
    card = browser.execute_script(
        f"""const c = {CARD};
        return {{subject: c.querySelector('.subject').textContent, category: c.querySelector('.category').textContent,
                reference: c.querySelector('.reference').textContent, score: c.querySelector('.score').textContent,
                band: c.querySelector('.band').textContent, exact: Number(c.dataset.score),
                camera: c.querySelector('.camera').textContent, ago: c.querySelector('.ago').textContent,
                banner: document.getElementById('unit').textContent}};"""
    )
    assert (card["subject"], card["category"]) == ("S-7205", "wanted")
    assert "ref 1/23" in card["reference"] and "(threshold 0.50)" in card["score"]
    # The band is the real calibration table's reading of this alert's score, for a list of 1 subject (2 photos).
    rate = real_table(unit_config, pipeline.model_id).rate(card["exact"], 1, 2)
    assert card["band"] == alert_band(card["exact"], 0.5, rate), card["band"]
    assert "with 1 subject (2 photos)" in card["band"] and "not calibrated" not in card["band"]
    assert "Camera cam0" in card["camera"] and "s ago" in card["ago"]
    assert "Unit ONLINE" in card["banner"] and "Watchlist active: sim-deployment, 1 subject," in card["banner"]
    # All three pictures decoded: live face, the person in the street (the context picture) and the watchlist photo.
    sizes = wait_until(
        browser,
        f"[...{CARD}.querySelectorAll('.pictures img')].every(i => i.naturalWidth > 0) && "
        f"[...{CARD}.querySelectorAll('.pictures img')].map(i => [i.naturalWidth, i.naturalHeight])",
    )
    live, context, photo = sizes
    assert live[0] >= 64 and photo[0] >= 64
    assert max(context) <= 320 and context[0] > live[0] // 2  # head and shoulders, at most 320 pixels
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, size in (("phone", PHONE), ("tablet", TABLET)):
        resize(browser, size)
        browser.save_screenshot(str(RESULTS / f"{name}.png"))
    resize(browser, PHONE)


def test_a_decision_shows_the_units_answer(deployment: Deployment) -> None:
    browser = deployment.browser
    alert_id = wait_until(browser, f"{CARD} && {CARD}.dataset.alertId")
    browser.execute_script(f"{CARD}.querySelector('button.engage').focus()")
    from selenium.webdriver.common.keys import Keys

    browser.switch_to.active_element.send_keys(Keys.ENTER)  # keyboard-usable: Enter on the focused button
    answer = wait_until(browser, f"document.querySelector('[data-alert-id=\"{alert_id}\"] .answer.accepted')")
    text = browser.execute_script("return arguments[0].textContent", answer)
    assert text.startswith("Engage: accepted by the unit")
    # For publication (the README): this screen with every face pixelated, since no real face may be published.
    browser.execute_script(PIXELATE_FACES)
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", answer)  # the unit's answer in the picture
    browser.save_screenshot(str(RESULTS / "phone-decided-faces-pixelated.png"))
    browser.refresh()  # the real pictures again (the snapshot on reconnection)
    wait_until(browser, f"document.querySelector('[data-alert-id=\"{alert_id}\"] .answer.accepted')")


def test_the_unit_going_offline_and_back_shows_in_the_banner(deployment: Deployment) -> None:
    browser = deployment.browser
    deployment.daemon.kill()  # no clean stop: the broker sends the unit's will after its keep-alive
    wait_until(browser, "document.getElementById('unit').classList.contains('offline')", timeout_s=30)
    assert "Unit OFFLINE" in browser.execute_script("return document.getElementById('unit-state').textContent")
    deployment.daemon = deployment.van.start_daemon(deployment.config)
    deployment.daemon.wait_for("READY", timeout=120)
    wait_until(browser, "document.getElementById('unit').classList.contains('online')", timeout_s=30)
    # Back online it holds no list until the retained one is applied again, and the banner follows.
    wait_until(browser, "document.getElementById('watchlist').textContent.startsWith('Watchlist active')")


def test_the_beacon_unplugged_and_back_shows_in_the_banner(deployment: Deployment) -> None:
    browser, beacon = deployment.browser, deployment.van.beacon
    assert beacon is not None
    wait_until(browser, "document.getElementById('beacon').textContent === 'Beacon OK'", timeout_s=30)
    beacon.unplug()
    wait_until(browser, "document.getElementById('beacon').textContent.includes('DISCONNECTED')", timeout_s=30)
    beacon.replug()
    wait_until(browser, "document.getElementById('beacon').textContent === 'Beacon OK'", timeout_s=30)


def test_a_refused_decision_shows_the_refusal(deployment: Deployment) -> None:
    """The restarted unit no longer knows the first alert: a decision on it is refused, and the card says why."""
    browser = deployment.browser
    first = browser.execute_script("return [...document.querySelectorAll('.card')].at(-1).dataset.alertId")
    browser.execute_script(f"document.querySelector('[data-alert-id=\"{first}\"] button.false_alert').click()")
    answer = wait_until(browser, f"document.querySelector('[data-alert-id=\"{first}\"] .answer.refused')")
    text = browser.execute_script("return arguments[0].textContent", answer)
    assert text.startswith("False alert: REFUSED by the unit: decision for unknown alert"), text
    browser.execute_script("arguments[0].scrollIntoView()", answer)
    browser.save_screenshot(str(RESULTS / "phone-refused.png"))


def test_stopping_the_app_clears_the_page(deployment: Deployment) -> None:
    browser = deployment.browser
    assert deployment.app.stop() == 0
    wait_until(browser, "document.querySelectorAll('.card').length === 0", timeout_s=10)
    assert "stopped" in browser.execute_script("return document.getElementById('unit-state').textContent")
    assert browser.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0


# The screen's memory, without a browser ---------------------------------------------------------------


def received(alert_id: str, time_s: float = 1_800_000_000.0) -> ReceivedAlert:
    alert = Alert(alert_id, "van-01", "cam0", time_s, 0.62, 0.5, "S-1", "wanted", "", b"\xff\xd8l", b"\xff\xd8w")
    return ReceivedAlert(alert, time_s + 0.3, time_s + 0.31)


def events(stream: queue.Queue[bytes | None]) -> list[str]:
    kinds = []
    while not stream.empty():
        message = stream.get_nowait()
        kinds.append("end" if message is None else message.decode().split("\n", 1)[0].removeprefix("event: "))
    return kinds


def test_decided_alerts_leave_the_screen_after_the_configured_time_and_everything_at_stop() -> None:
    now = [100.0]
    screen = Screen(clear_decided_after_s=30.0, clock=lambda: now[0])
    page = screen.subscribe()
    for alert_id in ("a1", "a2", "a3"):
        screen.add_alert(received(alert_id))
    screen.set_decision("a1", {"decision": "engage", "status": "accepted"})
    screen.set_decision("a2", {"decision": "false_alert", "status": "refused", "reason": "unknown alert"})
    now[0] += 29.9
    screen.clear_decided()
    assert screen.knows("a1")
    now[0] += 0.1
    screen.clear_decided()
    assert not screen.knows("a1") and screen.knows("a2") and screen.knows("a3")  # refused: still undecided
    assert events(page) == ["snapshot", "alert", "alert", "alert", "decision", "decision", "remove"]
    screen.close()
    assert events(page) == ["stop", "end"]
    assert not screen.knows("a2") and not screen.knows("a3")
    late = screen.subscribe()  # a page that connects after the stop gets an empty screen, and its stream ends
    assert '"alerts":[]' in late.get_nowait().decode() and late.get_nowait() is None  # type: ignore[union-attr]


def test_the_card_band_comes_from_the_alerts_rate_or_says_not_calibrated(
    unit_config: Config, pipeline: FacePipeline
) -> None:
    uncalibrated = alert_card(received("a1"))
    assert uncalibrated["band"] == "not calibrated: clearly above the threshold" and not uncalibrated["calibrated"]
    rate = real_table(unit_config, pipeline.model_id).rate(0.62, 1_200, 2_400)
    item = received("a2")
    card = alert_card(replace(item, alert=replace(item.alert, rate=rate)))
    assert card["calibrated"] and card["band"] == alert_band(0.62, 0.5, rate)
    assert card["band"].startswith("about 1 in ") and "with 1,200 subjects (2,400 photos)" in card["band"]


# What a newcomer runs: `make demo HANDSET=app` ---------------------------------------------------------


def test_the_demo_with_the_officers_screen(faces: Path, tmp_path: Path) -> None:
    """`lfr-hwsim demo --handset app` (what `make demo HANDSET=app` runs): its printed URL in a browser shows
    an alert as a card with both pictures; a decision there is accepted by the unit; Ctrl-C ends the demo."""
    command = [str(Path(sys.executable).parent / "lfr-hwsim"), "demo", "--faces", str(faces), "--duration", "40"]
    demo = subprocess.Popen(
        [*command, "--handset", "app", "--out", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    browser = chromium(PHONE)
    try:
        deadline = time.monotonic() + 180
        while not (url := next((m.group(0) for line in list(lines) if (m := URL.search(line))), None)):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(lines)
            time.sleep(0.2)
        browser.get(url)
        alert_id = wait_until(browser, f"{CARD} && {CARD}.dataset.alertId", timeout_s=150)
        assert wait_until(browser, f"[...{CARD}.querySelectorAll('.pictures img')].every(i => i.naturalWidth > 0)")
        browser.execute_script(f"document.querySelector('[data-alert-id=\"{alert_id}\"] button.engage').click()")
        wait_until(browser, f"document.querySelector('[data-alert-id=\"{alert_id}\"] .answer.accepted')")
    finally:
        browser.quit()
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
        reader.join(5)
    assert code == 0, "".join(lines)
    assert re.search(r"decided engage:\s+1", "".join(lines)), "".join(lines)
    assert "nothing of the non-matches was kept" in "".join(lines)
