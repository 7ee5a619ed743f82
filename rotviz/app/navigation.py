"""The app's router: every page under Streamlit's own navigation (titles, icons, sections).

``streamlit run app.py`` from a checkout and ``rotviz app`` from an installed package both run
``run()``; the launcher hands this file itself to Streamlit as the main script.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from rotviz.app import common
from rotviz.config import bundled


@dataclass(frozen=True)
class PageEntry:
    """One page of the app: its script in pages/, its title and its sidebar icon."""

    script: str
    title: str
    icon: str


HOME = PageEntry("home.py", "Home", ":material/home:")
# Sections in sidebar order ("" has no header); Home is the default page, served at "/".
SECTIONS: dict[str, tuple[PageEntry, ...]] = {
    "": (HOME, PageEntry("train.py", "Train", ":material/model_training:")),
    "Explore": (
        PageEntry("saliency.py", "Saliency", ":material/local_fire_department:"),
        PageEntry("neurons.py", "Neurons", ":material/grid_view:"),
        PageEntry("your_images.py", "Your images", ":material/image:"),
    ),
    "Measure": (
        PageEntry("accuracy.py", "Rotation accuracy", ":material/percent:"),
        PageEntry("goodness.py", "Goodness Q", ":material/table_chart:"),
        PageEntry("probe.py", "Probe", ":material/science:"),
        PageEntry("sanity.py", "Sanity checks", ":material/fact_check:"),
    ),
}


def page_entries() -> list[PageEntry]:
    """Every page, in sidebar order."""
    return [entry for entries in SECTIONS.values() for entry in entries]


def pages() -> dict[str, list[st.Page]]:
    """The st.Page objects per section, from the pages folder that ships with the package."""
    folder = bundled("pages")
    return {
        section: [
            st.Page(folder / e.script, title=e.title, icon=e.icon, default=e == HOME)
            for e in entries
        ]
        for section, entries in SECTIONS.items()
    }


def run() -> None:
    """Page settings, the navigation sidebar with the store's folder, then the chosen page."""
    st.set_page_config(page_icon=str(common.PAGE_ICON), layout="wide")
    page = st.navigation(pages())
    with st.sidebar:
        st.caption(f"Checkpoint store: `{common.store_root()}`")
    page.run()


if __name__ == "__main__":  # `rotviz app` runs this file as Streamlit's main script
    run()
