"""Headless Chromium for the watch page's browser tests: Debian's ``chromium`` and ``chromium-driver``,
driven by selenium, with nothing downloaded (no Selenium Manager, no driver download).

Basic auth: the director's API wants an ``Authorization`` header on every request, the page's own and its
``EventSource`` and ``fetch`` alike. Chromium is given it through the DevTools protocol
(``Network.setExtraHTTPHeaders``), which applies to every request of the page, the event stream included
(tests/unit/director/test_watch_ui.py checks the stream's requests carry it).

When chromium is missing the tests skip only where they could not have installed it: not root and not CI
(tests/run installs chromium and chromium-driver as root; CI runs as root). Elsewhere they fail.
"""
from __future__ import annotations

import asyncio
import base64
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from director.api import watch_ui

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts"      # screenshots (kept by CI as test artefacts; not committed)
T = TypeVar("T")


def _paths() -> tuple[str | None, str | None]:
    browser = os.environ.get("BOSH_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("BOSH_LAB_CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def require_chromium() -> tuple[str, str]:
    """The browser and driver paths; a skip (not root, not CI) or a failure (root or CI) when missing."""
    browser, driver = _paths()
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if browser and driver:
        return browser, driver
    what = "chromium, chromium-driver and selenium (pip install -e '.[test]')"
    if os.environ.get("CI") or os.geteuid() == 0:
        pytest.fail(f"{what} are needed by the watch page's browser tests; tests/run installs them as root "
                    f"(apt-get install chromium chromium-driver)")
    pytest.skip(f"{what} not installed and not root, so tests/run could not install them "
                f"(as root: apt-get install chromium chromium-driver)")


@contextmanager
def chromium(auth: tuple[str, str] | None = None, size: tuple[int, int] = (1600, 1000)) -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver) that sends ``auth`` as basic auth on every request."""
    browser, driver_path = require_chromium()
    os.environ.setdefault("SE_OFFLINE", "true")    # never let Selenium Manager reach the internet
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1", "--hide-scrollbars",
                "--no-first-run", "--disable-extensions", "--disable-background-networking", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        drv.set_page_load_timeout(30)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            drv.execute_cdp_cmd("Network.enable", {})
            drv.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        yield drv
    finally:
        drv.quit()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def rows(drv: Any, instance: str | None = None, kind: str | None = None) -> list[dict[str, str]]:
    """The diagram's drawn rows (and activations) as their data-* attributes, in document order."""
    script = """
      const sel = arguments[0];
      return Array.from(document.querySelectorAll(sel)).map((e) => ({
        seq: e.getAttribute('data-seq'), kind: e.getAttribute('data-kind'), method: e.getAttribute('data-method'),
        instance: e.getAttribute('data-instance'), deployment: e.getAttribute('data-deployment'),
        cls: e.getAttribute('class'), text: e.textContent }));
    """
    sel = "#diagram [data-seq]"
    if kind:
        sel += f'[data-kind="{kind}"]'
    if instance:
        sel += f'[data-instance="{instance}"]'
    out: list[dict[str, str]] = drv.execute_script(script, sel)
    return out


def screenshot(drv: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    drv.save_screenshot(str(path))
    return path


def browser_errors(drv: Any) -> list[str]:
    """SEVERE console messages (script errors, refused loads), minus the favicon."""
    try:
        logs: list[dict[str, Any]] = drv.get_log("browser")
    except Exception:  # noqa: BLE001 - a driver without the log endpoint: nothing to check
        return []
    return [entry["message"] for entry in logs if entry.get("level") == "SEVERE" and "favicon" not in entry["message"]]


class PageServer:
    """The real sequence-diagram page and a ``/watch`` of the subclass's own (``watch``), served from an event
    loop in a thread of its own: selenium blocks the thread that drives the browser. ``end_streams`` runs on
    that loop before the server stops, to end the streams still open."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        return web.Application()

    async def watch(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def end_streams(self) -> None:
        pass

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = self.app()
        app.add_routes(watch_ui.routes)
        app.router.add_get("/watch", self.watch)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])

    def stop(self) -> None:
        async def _stop() -> None:
            self.end_streams()
            if self.runner is not None:
                await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
