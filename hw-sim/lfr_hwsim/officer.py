"""The officer's side of a simulated deployment: `lfr-handset app` as its own process, and Debian's chromium
(headless, driven by Selenium through chromium-driver) as the phone's browser.

The tests, `make demo HANDSET=app` and the frame-to-card benchmark use these, so each runs the app exactly as
an officer would: the real command, its printed URL, a real browser.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lfr_contracts import layout
from lfr_hwsim.van import SimulatedVan

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, as root, with nothing fetched from outside: no GPU, no QUIC, no first-run, sync or updates.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
)
PHONE = (390, 844)  # CSS pixels: a narrow phone
TABLET = (820, 1180)
_URL = re.compile(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/")


class HandsetAppProcess:
    """`lfr-handset app` for one of the van's handsets; `url` is what it printed."""

    def __init__(self, van: SimulatedVan, handset_id: str, *extra: str, timeout_s: float = 60.0) -> None:
        tls = van.broker.client(handset_id)
        command = [
            str(Path(sys.executable).parent / "lfr-handset"),
            "app",
            "--unit",
            van.unit_id,
            "--broker",
            f"{van.broker.host}:{van.broker.port}",
            "--ca",
            str(tls.ca_file),
            "--cert",
            str(tls.cert_file),
            "--key",
            str(tls.key_file),
            "--keys",
            str(van.dir / "handsets" / handset_id),
            "--unit-key",
            str(van.paths.keys / layout.UNIT_ED25519_PUB),
            "--prefix",
            van.broker.prefix,
            *extra,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.output: list[str] = []
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, name="handset-app-output", daemon=True)
        self._reader.start()
        if not self._found.wait(timeout_s):
            self.stop()
            raise RuntimeError("lfr-handset app printed no URL:\n" + "".join(self.output))
        self.url = next(m.group(0) for line in self.output if (m := _URL.search(line)))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if _URL.search(line):
                self._found.set()

    def stop(self, timeout_s: float = 10.0) -> int:
        """Ctrl-C, as the officer would: the app clears the screen and stops."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def open_in_browser(url: str) -> bool:
    """Open the page in the desktop's browser, where there is a desktop (never a text browser in the terminal)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import webbrowser

    return webbrowser.open(url)


def chromium(size: tuple[int, int] = PHONE) -> Any:
    """A headless chromium from Debian's packages with a fresh profile, driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        raise RuntimeError("chromium is not installed: apt-get install chromium chromium-driver (make system-deps)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="lfr-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    resize(driver, size)
    return driver


def resize(driver: Any, size: tuple[int, int]) -> None:
    """The page's viewport at `size` CSS pixels, at 2 device pixels each, like a phone's screen."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 2, "mobile": size[0] < 600},
    )


# For pictures to publish: every face picture on the page replaced by an 8x8 pixelation of itself, so that no
# real face can be recognised from a committed screenshot.
PIXELATE_FACES = """
for (const img of document.querySelectorAll('.pictures img')) {
  if (!img.naturalWidth) continue;
  const c = document.createElement('canvas');
  c.width = 8; c.height = Math.max(1, Math.round(8 * img.naturalHeight / img.naturalWidth));
  c.getContext('2d').drawImage(img, 0, 0, c.width, c.height);
  img.style.imageRendering = 'pixelated';
  img.src = c.toDataURL('image/png');
}
"""


def wait_until(driver: Any, script: str, timeout_s: float = 30.0) -> Any:
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"the page never showed: {script}")
