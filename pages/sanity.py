"""Sanity page: do one checkpoint's saliency maps change when its weights or labels are
randomised (Adebayo et al. 2018)? Similarities and the cascading randomisation of one image."""

from __future__ import annotations

import numpy as np
import streamlit as st

from rotviz.app import cached, common, downstream, explore, export, summaries
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.report.figures import cascading_figure

common.page_header(
    "Sanity checks",
    "Sanity checks for the saliency maps (Adebayo et al. 2018): a map that barely changes when "
    "the network's weights are randomised, or its labels shuffled, does not show what it learned.",
)

with common.shown_errors("the sanity checks"):
    chosen = downstream.network_choice("san")
    card, stem = chosen.card, chosen.stem
    _, split = cached.split(chosen.dkey, chosen.cfg)
    if len(split) == 0:
        st.info("This dataset has no test image.")
        st.stop()
    index = st.selectbox(
        "Test image",
        list(range(len(split))),
        format_func=lambda i: f"{i}: {split.records[i].relpath}",
        key="san_image",
    )
    c1, c2, c3 = st.columns(3)
    layer = c1.selectbox("Layer", ["rotation", "embedding"], key="san_layer")
    neurons = c2.selectbox("Neurons", ["all", "predicted"], key="san_neurons")
    method = c3.selectbox(
        "Method",
        list(explore.METHOD_LABELS),
        format_func=explore.METHOD_LABELS.get,
        key="san_method",
    )
    sal = SaliencyConfig(layer=layer, neurons=neurons, method=method, rotations=card.rotations)
    shuffled = downstream.shuffled_checkpoint(card)
    st.caption(
        "Similarity of the trained map to its random twin's (model randomisation)"
        + (
            " and to the shuffled-label model's (data randomisation)"
            if shuffled is not None
            else "; data randomisation needs the same recipe trained with shuffled labels "
            "(python -m rotviz train --shuffle-labels), not in the store"
        )
        + ". Near 1: the map barely depends on what the network learned."
    )
    ckpt_id = cached.checkpoint_id(card)
    san_key = (ckpt_id, chosen.dkey, index, sal.key())
    done = st.session_state.get("san_done") == san_key
    if not done:
        done = st.button("Run the sanity checks", key="san_run")
    if done:
        st.session_state["san_done"] = san_key
        image = np.ascontiguousarray(split.images[index])
        mask = cached.boxes_mask(split.boxes[index], image.shape[-1])
        with st.spinner(
            "Maps of the trained net, then with its blocks re-initialised from the head down..."
        ):
            sims, rows = downstream.image_sanity(
                ckpt_id,
                f"{chosen.dkey}:{index}",
                sal.key(),
                shuffled is not None,
                image,
                mask,
                sal,
                shuffled,
            )
        shown = downstream.similarity_display(sims)
        summaries.show_table(shown)
        title = f"Cascading randomisation: {split.records[index].relpath}"
        common.show_figure(cascading_figure(rows, image=0, title=title))
        image_stem = f"sanity-{stem}-{index}"
        export.table_buttons(shown, image_stem, key="san_t")
        export.table_buttons(rows, f"cascading-{stem}-{index}", key="san_c")
        export.figure_buttons(
            lambda: cascading_figure(rows, image=0, title=title),
            f"cascading-{stem}-{index}",
            key="san_f",
        )
        export.bundle_button(
            {"cascading": lambda: cascading_figure(rows, image=0, title=title)},
            {"similarities": shown, "cascading": rows},
            {
                "page": "sanity",
                "image": split.records[index].relpath,
                "saliency": sal.key(),
            },
            [card],
            image_stem,
            key="san_bundle",
        )
