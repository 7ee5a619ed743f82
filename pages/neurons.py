"""Neurons page: each neuron's top test images with its own saliency map, trained vs random twin."""

from __future__ import annotations

import math

import streamlit as st

from rotviz.app import cached, common, cost, export
from rotviz.app import neurons as ui
from rotviz.report.figures import contact_sheet
from rotviz.study import neurons

common.page_header(
    "Neurons",
    "What does each neuron respond to? Every neuron's top test images, each with that single "
    "neuron's saliency map, for the trained network or its random twin (same architecture and "
    "seed, untrained; its neuron i is unrelated to the trained network's neuron i).",
)

with common.shown_errors("the neurons page"):
    c1, c2 = st.columns([1, 2])
    with c1:
        dataset = common.dataset_select("nrn_dataset")
    with c2:
        card = common.checkpoint_select("nrn_ckpt", dataset)
    if card is None:
        st.stop()
    cfg = cached.viewing_config(card, common.with_local_paths(card.data_config))
    dkey, ckpt_id = cached.data_key(cfg), cached.checkpoint_id(card)
    _, split = cached.split(dkey, cfg)
    checkpoint = cached.model_pair(ckpt_id).checkpoint

    w1, w2, w3, w4 = st.columns([2, 2, 2, 1])
    layer = w1.radio(
        "Layer", neurons.LAYERS, format_func=ui.LAYER_LABELS.get, key="nrn-layer", horizontal=True
    )
    which = w2.radio(
        "Network", neurons.NETWORK_CHOICES, format_func=ui.NETWORK_LABELS.get, key="nrn-network"
    )
    sort = w3.selectbox(
        "Sort neurons by",
        neurons.SORT_KEYS,
        format_func=ui.SORT_LABELS.get,
        key="nrn-sort",
        help=ui.SELECTIVITY_HELP,
    )
    k = int(w4.number_input("Top images", 1, 16, neurons.TOP_K, key="nrn-top"))

    bar = st.empty()

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Activations of the {which} network: {done}/{total}")

    acts = ui.activations(ckpt_id, layer, which, checkpoint, split, progress)
    if which != "trained":
        st.caption(ui.calibration_text(ckpt_id, which, checkpoint))
    bar.empty()
    stats = ui.stats(ckpt_id, dkey, layer, which, k, acts)
    labels = neurons.neuron_labels(checkpoint, layer, acts.shape[1])
    order = neurons.sorted_neurons(stats, sort)
    n_pages = math.ceil(len(order) / neurons.PAGE_SIZE)
    page = int(
        st.number_input(
            f"Page (of {n_pages}; {neurons.PAGE_SIZE} neurons each, {len(order)} neurons)",
            1,
            n_pages,
            1,
            key="nrn-page",
        )
    )
    st.caption(
        f"{len(split)} test images. {ui.SELECTIVITY_HELP}"
        + (
            " Rotation neuron j scores each image turned by its rotation with p(j); images "
            "are shown turned, as the network saw them."
            if layer == "rotation"
            else ""
        )
    )
    chosen = ui.page_neurons(order, page)
    todo = ui.views_to_compute(ckpt_id, layer, which, chosen, k, checkpoint, split, acts)
    views = []
    if todo:
        est = ui.views_estimate(ckpt_id, layer, which, todo, k, checkpoint, split.images.shape[-1])
        token = f"{ckpt_id}:{dkey}:{layer}:{which}:{k}:{','.join(map(str, todo))}"
        what = f"single-neuron maps of {len(todo)} neurons"
        cheaper = ["fewer top images", "the rotation layer"] if layer == "embedding" else []
        if cost.confirmed("nrn", token, est, what, cheaper):
            progress, clear = cost.progress_reporter("nrn", what, est)
            views = ui.page_views(
                ckpt_id, dkey, layer, which, chosen, k, checkpoint, split, acts, progress
            )
            clear()
    else:
        views = ui.page_views(ckpt_id, dkey, layer, which, chosen, k, checkpoint, split, acts)
    for v in views:
        s = stats.loc[v.neuron]
        st.markdown(
            f"**{layer} neuron {v.label}** ({ui.NETWORK_LABELS[which]}): mean {s['mean']:.3g}, "
            f"selectivity {s['selectivity']:.2f}"
        )
        st.image(ui.thumbnails(v), caption=v.captions(), width=96)

    st.subheader("Export")
    files = [r.relpath for r in split.records]
    st.download_button(
        f"Top-{k} table of all {len(order)} neurons (CSV)",
        data=lambda: ui.table_csv(acts, files, labels, k, which, layer),
        file_name=export.slug(f"neurons-{card.model}-{layer}-{which}") + ".csv",
        mime="text/csv",
        key="nrn-csv",
        on_click="ignore",
    )
    sheet_neuron = st.selectbox(
        "Contact sheet (trained and random twin) of neuron",
        chosen,
        format_func=lambda i: labels[i],
        key="nrn-sheet",
    )

    def sheet():  # noqa: ANN202 (a matplotlib Figure, built on click)
        rows = []
        for net in ("trained", which if which != "trained" else "calibrated"):
            a = acts if net == which else ui.activations(ckpt_id, layer, net, checkpoint, split)
            rows.append(ui.view(ckpt_id, dkey, layer, net, sheet_neuron, k, checkpoint, split, a))
        return contact_sheet(rows)

    export.figure_buttons(
        sheet, f"neuron-{card.model}-{layer}-{labels[sheet_neuron]}", key="nrn-fig"
    )
