"""Say the cost before spending it: estimates, a button before long map sets, progress, Stop.

A map set whose estimate (``rotviz.attribution.cost``) exceeds ``CONFIRM_ABOVE_S`` waits for a
click, with the cheaper choices beside the button; one in the disk cache shows at once. A
computation runs in steps of about a second, each updating a progress bar with the time left;
a Stop button beside it reruns the page, which Streamlit does by ending the running script
at its next update, so the work stops within a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import streamlit as st

from rotviz.app import cached
from rotviz.attribution.cache import MapCache, map_set_key
from rotviz.attribution.cost import (
    Estimate,
    cheaper_choices,
    estimate_seconds,
    format_duration,
    neurons_per_step,
)
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.nets.models import RotationNet

SHOW_STOP_ABOVE_S = 1.0  # a Stop button beside runs estimated longer than this


def estimate(
    model: RotationNet, sal: SaliencyConfig, image_size: int, n_images: int = 1, networks: int = 2
) -> Estimate:
    """The estimate of a map set (the per-pass cost is measured once per machine and kept)."""
    with st.spinner(f"Timing one {model.name} pass on this machine (once)..."):
        return estimate_seconds(model, sal, n_images, networks, image_size)


def _go(key: str, token: str) -> None:
    st.session_state[f"{key}-go"] = token
    st.session_state.pop(f"{key}-stopped", None)


def _stop(key: str) -> None:
    st.session_state.pop(f"{key}-go", None)
    st.session_state[f"{key}-stopped"] = True


def confirmed(key: str, token: str, est: Estimate, what: str, choices: list[str]) -> bool:
    """True when the work named by token may run now: a short estimate, or the user clicked
    "Compute ..." for this very token; else shows the estimate, the cheaper choices and the
    button, and returns False."""
    if not est.needs_confirmation or st.session_state.get(f"{key}-go") == token:
        return True
    if st.session_state.get(f"{key}-stopped"):
        st.warning("Stopped: nothing was kept of the unfinished maps.")
    text = f"The {what} take {est.text} on this machine (its bound: measured once, kept)."
    if choices:
        text += " Cheaper: " + "; ".join(choices) + "."
    st.info(text, icon=":material/schedule:")
    st.button(
        f"Compute {what} ({'about ' + est.duration if est.seconds >= 1 else 'under 1 s'})",
        key=f"{key}-compute",
        on_click=_go,
        args=(key, token),
        type="primary",
    )
    return False


def progress_reporter(
    key: str, what: str, est: Estimate
) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """(progress(done, total), clear()): a progress bar with the time left and, for runs
    estimated over SHOW_STOP_ABOVE_S, a Stop button."""
    bar = st.empty()
    stop = st.empty()
    bar.progress(0.0, text=f"Computing the {what}: about {est.duration} left (estimate)")
    if est.seconds > SHOW_STOP_ABOVE_S:
        stop.button("Stop computing", key=f"{key}-stop", on_click=_stop, args=(key,))
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        left = (time.monotonic() - start) / max(done, 1) * (total - done)
        bar.progress(
            min(done / max(total, 1), 1.0),
            text=f"Computing the {what}: step {done} of {total}, about {format_duration(left)} left",
        )

    def clear() -> None:
        bar.empty()
        stop.empty()

    return progress, clear


def image_maps(
    pair: cached.ModelPair, image: np.ndarray, sal: SaliencyConfig, key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Trained and twin maps (H, W) of one uint8 image (3, H, W): from the disk cache, or
    computed now with progress and Stop, or None while a long estimate waits for a click
    (the estimate, the cheaper choices and the button are shown)."""
    images = np.ascontiguousarray(image)[None]
    token = map_set_key(pair.trained, pair.random, sal, images)
    if token in MapCache():
        return cached.compute_maps(pair, image, sal)
    est = estimate(pair.trained, sal, image.shape[-1])
    if not confirmed(key, token, est, "maps", cheaper_choices(pair.trained, sal)):
        return None
    progress, clear = progress_reporter(key, "maps of the trained network and its twin", est)
    maps = cached.compute_maps(pair, image, sal, progress, neurons_per_step(est))
    clear()
    return maps


def cache_panel(key: str = "map-cache") -> None:
    """The map cache's size and a button that clears it."""
    cache = MapCache()
    st.caption(
        f"Map cache: {cache.describe()}. Computed maps are kept here so a reload, another "
        "session or the command line shows them at once (set ROTVIZ_MAP_CACHE_GB to change the cap)."
    )
    if st.button("Clear map cache", key=key):
        removed = cache.clear()
        st.success(f"Removed {removed} map set{'s' if removed != 1 else ''}.")
