"""In a real headless Chromium: on the Saliency page, integrated gradients on the shipped
EfficientNet-b0's embedding layer shows its estimate and a button rather than a silent wait;
once clicked it shows progress with the time left, and Stop stops it.

Run with `pytest -m browser tests/test_browser_cost.py` (needs /usr/bin/chromium and
Playwright's Python package; skips without them). The per-pass cost is measured for real,
once, in the test's own store.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    free_port,
    needs_chromium,
    open_when_up,
    serving,
)

pytestmark = pytest.mark.browser
WAIT_MS = 240_000  # the first visit loads EfficientNet-b0 and times one pass on this machine


def test_integrated_gradients_on_the_efficientnet_embedding_shows_an_estimate_and_a_button(
    tmp_path,
):
    needs_chromium()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, ROTVIZ_STORE=str(tmp_path / "store"))  # the shipped networks only
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    cmd += ["--server.headless", "true"]
    with (
        serving(cmd, REPO, env, tmp_path / "streamlit.log"),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            open_when_up(page, f"http://localhost:{port}/saliency")
            page.get_by_text("Q, trained").wait_for(timeout=WAIT_MS)

            def settled() -> None:
                page.wait_for_timeout(500)
                page.locator('[data-testid="stStatusWidget"]').wait_for(
                    state="hidden", timeout=WAIT_MS
                )

            # the initial twin: no BatchNorm statistics to recompute for EfficientNet-b0
            twin = page.get_by_role("radiogroup", name="Random twin")
            twin.get_by_text("random (initial statistics)", exact=True).click()
            settled()
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint").click()
            page.get_by_role("option", name=re.compile("^efficientnet_b0 on lfw")).click()
            settled()
            layer = page.get_by_role("radiogroup", name="Layer")
            layer.get_by_text("embedding", exact=True).click()
            settled()
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
            page.get_by_role("option", name="integrated gradients").click()

            estimate = page.get_by_text(re.compile(r"1,280 neurons x 32 steps x 2 networks"))
            estimate.wait_for(timeout=WAIT_MS)
            assert "on this machine" in estimate.inner_text()
            button = page.get_by_role("button", name=re.compile(r"^Compute maps \(about "))
            button.wait_for(timeout=30_000)
            assert button.is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "saliency_estimate.png"))

            button.click()  # it runs, step by step, with the time left, until Stop
            page.get_by_text(re.compile(r"step \d+ of \d+, about .* left")).wait_for(
                timeout=WAIT_MS
            )
            page.screenshot(path=str(tmp_path / "saliency_progress.png"))
            page.get_by_role("button", name="Stop computing").click()
            page.get_by_text("Stopped: nothing was kept of the unfinished maps.").wait_for(
                timeout=60_000
            )
            page.get_by_role("button", name=re.compile(r"^Compute maps")).wait_for(timeout=60_000)
            settled()
            assert page.get_by_text(re.compile(r"step \d+ of \d+")).count() == 0  # it stopped
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "saliency_stopped.png"))
        finally:
            browser.close()
