"""Widgets and helpers every page shares: one error box, the store, datasets, checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import runpy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from rotviz.config import DataConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card
from rotviz.nets.store import CheckpointStore, default_store, user_store_root
from rotviz.report.figures import close_figure

log = logging.getLogger("rotviz.app")

# Datasets whose source needs a path on this machine, with what each path means.
PATH_DATASETS: dict[str, tuple[str, str | None]] = {
    "lfw": ("LFW folder (holding <Person>/ folders, or lfw*/ above them)", None),
    "coco": ("COCO images folder", "COCO instances json (e.g. instances_val2017.json)"),
    "cityscapes": ("Cityscapes folder (holding leftImg8bit/)", None),
    "folder": ("any folder of images (searched recursively)", None),
}
DATASET_LABELS = {
    "demo": "demo (embedded)",
    "lfw": "LFW (faces, object-centric)",
    "coco": "COCO (scenes with boxes)",
    "cityscapes": "Cityscapes (street scenes)",
    "folder": "image folder",
}
PATHS_KEY = "dataset_paths"
Q_HELP = (
    "Q = IoU of the thresholded saliency map and the box mask: "
    "|S_p ∩ B| / |S_p ∪ B|, from 0 (no overlap) to 100% (exact match)."
)


# The browser tab's icon, shipped with the package: a :material/...: page icon makes every
# browser fetch it from Google's font server (an outside request, an error offline).
PAGE_ICON = Path(__file__).parent / "static" / "rotviz_icon.png"


def under_the_router() -> None:
    """Serve a page that Streamlit runs on its own through the router (the main script).

    With a pages/ folder beside the main script, Streamlit starts in its legacy multipage mode
    and, until some session has called st.navigation, runs a page opened by its URL on its own:
    no router, no navigation sidebar, no page settings. Then leave that mode (Streamlit's own
    flag, which st.navigation clears too), run the main script, whose st.navigation serves this
    same page in this same run (widget values kept), and stop this bare run.
    """
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    runpy.run_path(str(ctx.pages_manager.main_script_path), run_name="__main__")
    st.stop()


def page_header(title: str, intro: str) -> None:
    """Title and one line saying what the page is for (served by the router)."""
    under_the_router()
    st.title(title)
    st.caption(intro)


def show_figure(fig: Any) -> None:
    """Draw a matplotlib figure on the page and free it."""
    try:
        st.pyplot(fig, clear_figure=False)
    finally:
        close_figure(fig)


@contextlib.contextmanager
def shown_errors(what: str = "this step") -> Iterator[None]:
    """Show any problem inside the block as one clear message; the page keeps running.

    RotvizError carries an actionable message; anything else is logged with its traceback
    on the server and shown to the user as one line, never as a traceback.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            if issubclass(w.category, UserWarning | RuntimeWarning):
                st.warning(str(w.message))
    except RotvizError as err:
        st.error(str(err), icon=":material/warning:")
    except ScriptControlException:  # st.stop() / st.rerun() must pass through
        raise
    except Exception as err:  # the last line of defence: no traceback on the page
        log.exception("unexpected error in %s", what)
        st.error(
            f"Unexpected problem in {what}: {type(err).__name__}: {err}. "
            "The details are in the server log; try other settings or reload the page.",
            icon=":material/error:",
        )


def store_root() -> Path:
    """The folder the app writes networks to: the user's store (read now, so tests can point it at tmp)."""
    return user_store_root()


def store() -> CheckpointStore:
    """The checkpoint store the app reads (the user's and the shipped networks) and writes (the user's)."""
    return default_store()


def dataset_paths() -> dict[str, dict[str, str]]:
    """Paths the user gave this session, per dataset name: {"root": ..., "ann": ...}."""
    return st.session_state.setdefault(PATHS_KEY, {})


def available_datasets() -> list[str]:
    """The demo, then every dataset the user gave a path for in this session."""
    given = [name for name in PATH_DATASETS if name in dataset_paths()]
    return ["demo", *given]


def data_config(name: str, **overrides: Any) -> DataConfig:
    """A DataConfig for a dataset name with this session's paths filled in."""
    paths = dataset_paths().get(name, {})
    return DataConfig(dataset=name, root=paths.get("root"), ann=paths.get("ann"), **overrides)


def with_local_paths(cfg: DataConfig) -> DataConfig:
    """cfg (e.g. from a checkpoint card) with this session's paths for its dataset, if given."""
    paths = dataset_paths().get(cfg.dataset)
    if not paths:
        return cfg
    return dataclasses.replace(cfg, root=paths.get("root"), ann=paths.get("ann"))


def dataset_select(key: str, label: str = "Dataset") -> str:
    """A selectbox of the available datasets (demo first, the default)."""
    names = available_datasets()
    return st.selectbox(
        label,
        names,
        format_func=lambda n: DATASET_LABELS.get(n, n),
        key=key,
        help="Add LFW, COCO, Cityscapes or a folder on the Home page by giving its path.",
    )


def checkpoint_select(key: str, dataset: str | None = None, others: bool = False) -> Card | None:
    """Pick a finished checkpoint from the store (optionally of one dataset; with others, those
    trained on it first, then every other one, labelled "trained on X"); its card or None."""
    cards = store().cards()
    if dataset is not None:
        own = [c for c in cards if c.dataset == dataset]
        cards = own + [c for c in cards if c.dataset != dataset] if others else own
    if not cards:
        where = f" for {dataset}" if dataset else ""
        st.info(
            f"The store ({store_root()}) has no checkpoint{where} yet: train one on the Train page."
        )
        return None
    by_path = {str(c.path): c for c in cards}
    path = st.selectbox(
        "Checkpoint",
        list(by_path),
        format_func=lambda p: (
            by_path[p].label()
            + ("" if by_path[p].dataset == dataset else f" — trained on {by_path[p].dataset}")
            + (" [shipped]" if by_path[p].origin == "shipped" else "")
        ),
        key=key,
        help="Finished checkpoints in the store, by recipe; rotation accuracy is on the test split.",
    )
    return by_path[path]
