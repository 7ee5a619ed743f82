"""App latency: threshold change -> new Q and masks (maps cached), and `streamlit run` -> first page.

    python bench/app_latency.py [--repeats 50] [--no-browser]

1. For each study model (its shipped demo checkpoint if the store has one, else random
   weights: the timing does not depend on the weights), compute the trained/random maps of
   one demo photo once, then time rotviz.app.render.threshold_view (threshold both maps, Q,
   mask pictures) for absolute, percentile and box-area thresholds. Goal <= 100 ms.
2. The same change through Streamlit's script runner (AppTest): a rerun of the Saliency
   page after moving the percentile slider, maps cached (first checkpoint in the store).
3. Time from starting `streamlit run app.py` to the Home page rendered in headless Chromium
   (or, with --no-browser, to the server answering /healthz). Goal <= 10 s.
Single-threaded torch (torch.set_num_threads(1)) for 1, to be comparable across machines.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rotviz.app.render import threshold_view  # noqa: E402
from rotviz.attribution.aggregation import rotation_aggregated_maps  # noqa: E402
from rotviz.attribution.targets import AllNeurons  # noqa: E402
from rotviz.config import DataConfig  # noqa: E402
from rotviz.data.rotation import normalize  # noqa: E402
from rotviz.data.splits import load_split  # noqa: E402
from rotviz.nets.models import STUDY_MODELS, build_model  # noqa: E402
from rotviz.nets.store import default_store, load_checkpoint  # noqa: E402
from rotviz.scores.metrics import Absolute, BoxArea, Percentile, box_mask  # noqa: E402

GOAL_THRESHOLD_MS = 100.0
GOAL_FIRST_PAGE_S = 10.0


def model_for(name: str) -> tuple[torch.nn.Module, str]:
    cards = [c for c in default_store().cards() if c.model == name]
    if cards:
        ckpt = load_checkpoint(cards[0].path)
        return ckpt.model, f"checkpoint {cards[0].name}"
    return build_model(name, 4, 0).eval(), "random weights (no checkpoint in the store)"


def threshold_latency(repeats: int) -> None:
    _, split = load_split(DataConfig("demo"), "test")
    index = next(i for i in range(len(split)) if len(split.boxes[i]))
    image, boxes = split.images[index].copy(), split.boxes[index]
    mask = box_mask(boxes, image.shape[-2:])
    x = normalize(torch.from_numpy(image)[None])
    print(
        f"1. threshold change -> Q + masks, maps cached ({split.records[index].relpath}, {repeats} changes each)"
    )
    for name in STUDY_MODELS:
        model, source = model_for(name)
        t0 = time.perf_counter()
        maps_t, maps_r = (
            rotation_aggregated_maps(net, x, "rotation", AllNeurons())
            for net in (model, build_model(model.name, model.rotations, 0).eval())
        )
        maps = (maps_t[0].numpy(), maps_r[0].numpy())
        first = time.perf_counter() - t0
        lams = np.logspace(-6, -1, repeats)
        for label, thresholds in (
            ("absolute", [Absolute(float(v)) for v in lams]),
            ("percentile", [Percentile(float(p)) for p in np.linspace(50, 99, repeats)]),
            ("box-area", [BoxArea()] * repeats),
        ):
            times = []
            for th in thresholds:
                t = time.perf_counter()
                threshold_view(image, boxes, mask, maps, th)
                times.append(1000 * (time.perf_counter() - t))
            med, worst = statistics.median(times), max(times)
            ok = "ok" if worst <= GOAL_THRESHOLD_MS else "OVER GOAL"
            print(f"   {name:16s} {label:10s} median {med:6.1f} ms, max {worst:6.1f} ms  [{ok}]")
        print(f"   {name:16s} (maps computed once in {first:.2f} s; {source})")


def apptest_latency(repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    if not default_store().cards():
        print("2. AppTest rerun: skipped, the store has no checkpoint")
        return
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/saliency.py").run()
    at.radio(key="sal-mode").set_value("percentile").run()
    times = []
    for p in np.linspace(60, 99, repeats):
        t = time.perf_counter()
        at.slider(key="sal-pct").set_value(float(p)).run()
        times.append(1000 * (time.perf_counter() - t))
        assert not at.exception
    q = [m.value for m in at.metric]
    print(
        f"2. Saliency page rerun after a threshold change (AppTest, whole script, maps cached): "
        f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms; last Q shown {q}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_page(browser: bool) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://localhost:{port}"
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        t_server = time.perf_counter() - t0
        if not browser or not Path("/usr/bin/chromium").exists():
            print(f"3. streamlit run -> server healthy: {t_server:.1f} s (no browser)")
            return
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = b.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.get_by_text("Checkpoints in the store").wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            t_page = time.perf_counter() - t0
            b.close()
        ok = "ok" if t_page <= GOAL_FIRST_PAGE_S else "OVER GOAL"
        print(
            f"3. streamlit run -> Home rendered in Chromium: {t_page:.1f} s (server healthy after {t_server:.1f} s) [{ok}]"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"store: {default_store().describe()}, torch threads: 1, CUDA: {torch.cuda.is_available()}"
    )
    threshold_latency(args.repeats)
    apptest_latency(min(args.repeats, 20))
    first_page(not args.no_browser)


if __name__ == "__main__":
    main()
