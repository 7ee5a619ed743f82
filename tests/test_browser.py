"""End to end in a real headless Chromium: `streamlit run app.py`, open Saliency, read Q, screenshot;
every page loads without a request leaving the machine.

Run with `pytest -m browser tests/test_browser.py`. Needs Debian's chromium (/usr/bin/chromium)
and Playwright's Python package; skips cleanly without them. With ROTVIZ_UPDATE_SCREENSHOT=1
the screenshot is also written to docs/screenshot_saliency.png, from the repo's shipped
checkpoints when they include a demo one (real results), else from a tiny test checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotviz.app.common import PAGES
from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore
from rotviz.training.pipeline import train_or_load

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_store(tmp_path: Path) -> Path:
    """The repo's store when updating the docs screenshot and it has a demo checkpoint; else a tiny one."""
    shipped = SHIPPED_STORE
    if os.environ.get("ROTVIZ_UPDATE_SCREENSHOT") == "1" and any(
        c.dataset == "demo" for c in CheckpointStore(shipped).cards()
    ):
        return shipped
    store = tmp_path / "store"
    train_or_load(
        DataConfig("demo", max_images=16),
        TrainConfig(epochs=1, batch_size=8),
        CheckpointStore(store),
        "cpu",
        log=lambda _: None,
    )
    return store


@pytest.fixture()
def app_url(tmp_path):
    """A running `streamlit run app.py` on a free port; its URL."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    store = demo_store(tmp_path)
    port = free_port()
    env = dict(os.environ, ROTVIZ_STORE=str(store))
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def open_when_up(page, url: str) -> None:
    """page.goto(url), retrying while the server starts listening."""
    deadline = time.monotonic() + 60
    while True:
        try:
            page.goto(url, timeout=10_000)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(300)


# Streamlit's frontend, loaded at a page's own URL, probes <page>/_stcore/health and
# /host-config before the app root's (https://github.com/streamlit/streamlit/issues/7074);
# the server cannot answer them without replacing Streamlit's static index.html.
UPSTREAM_404 = ("/_stcore/health", "/_stcore/host-config")


def watch(page, outside: list[str], missing: list[str]) -> None:
    """Record every request to another host in outside and every 404 answer in missing."""
    from urllib.parse import urlsplit

    page.on(
        "request",
        lambda r: (
            urlsplit(r.url).hostname not in ("localhost", "127.0.0.1")
            and not r.url.startswith("data:")
            and outside.append(r.url)
        ),
    )
    page.on("response", lambda r: r.status == 404 and missing.append(r.url))


@contextlib.contextmanager
def watched_page() -> Iterator[tuple[object, list[str], list[str]]]:
    """A Chromium page with (requests to other hosts, URLs answered 404) recorded while open."""
    from playwright.sync_api import sync_playwright

    outside, missing = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            watch(page, outside, missing)
            yield page, outside, missing
        finally:
            browser.close()


def load_every_page(app_url: str) -> tuple[list[str], list[str]]:
    """Open every page by its URL; (requests to other hosts, URLs answered 404)."""
    with watched_page() as (page, outside, missing):
        for script, label, _ in PAGES:
            path = "" if script == "app.py" else Path(script).stem
            open_when_up(page, f"{app_url}/{path}")
            page.get_by_role("heading", name=label if path else "rotviz").first.wait_for(
                timeout=120_000
            )
            page.wait_for_timeout(2000)  # late requests (icons, fonts)
    return outside, missing


def visit_every_page_from_the_sidebar(app_url: str) -> tuple[list[str], list[str]]:
    """Open the app, then every page through its sidebar link, as a user does;
    (requests to other hosts, URLs answered 404)."""
    with watched_page() as (page, outside, missing):
        open_when_up(page, app_url)
        page.get_by_role("heading", name="rotviz").first.wait_for(timeout=120_000)
        for script, label, _ in [*PAGES[1:], PAGES[0]]:
            page.locator("[data-testid='stSidebar']").get_by_role("link", name=label).click()
            heading = label if script != "app.py" else "rotviz"
            page.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
            page.wait_for_timeout(2000)  # late requests (icons, fonts)
    return outside, missing


def test_every_page_reached_from_the_app_is_offline_and_complete(app_url):
    """Zero requests leave the machine and zero 404s, on every page, navigating as a user does."""
    outside, missing = visit_every_page_from_the_sidebar(app_url)
    assert outside == []
    assert missing == []


def test_no_page_calls_out_of_the_machine(app_url):
    outside, missing = load_every_page(app_url)
    assert outside == []
    assert [u for u in missing if not u.endswith(UPSTREAM_404)] == []


@pytest.mark.xfail(
    strict=True, reason="Streamlit probes <page>/_stcore/... first (streamlit issue 7074)"
)
def test_no_404_at_all(app_url):
    """Fails (xfail) while Streamlit's upstream probe exists; passes, and so alerts, once it is gone."""
    _, missing = load_every_page(app_url)
    assert missing == []


def test_saliency_page_in_chromium(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            open_when_up(page, f"{app_url}/saliency")
            page.get_by_text("Q, trained").wait_for(timeout=120_000)
            metrics = page.locator('[data-testid="stMetric"]')
            metrics.first.wait_for(timeout=30_000)
            values = [m.inner_text() for m in metrics.all()]
            assert any(v.startswith("Q, trained") for v in values), values
            assert all(re.search(r"\d+\.\d%", v) for v in values), values
            assert page.get_by_text("Saliency", exact=True).first.is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
            shot = tmp_path / "screenshot_saliency.png"
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("ROTVIZ_UPDATE_SCREENSHOT") == "1":
                # the README's picture: tall enough to show the maps, masks and Q
                page.set_viewport_size({"width": 1280, "height": 1900})
                page.wait_for_timeout(1500)
                (REPO / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(REPO / "docs" / "screenshot_saliency.png"))
        finally:
            browser.close()
