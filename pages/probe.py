"""Probe page: one checkpoint's rotation accuracy with intervals, and a downstream task on its
frozen features, trained vs random twin."""

from __future__ import annotations

import streamlit as st

from rotviz.app import cached, common, downstream, explore, export, summaries
from rotviz.report.figures import label_efficiency_figure
from rotviz.scores.stats import percent
from rotviz.study.probe import DEFAULT_TASK, probe_table

DISPLAY_ACCURACY = ["trained (%)", "random (%)", "difference (%)", "p (Wilcoxon)", "test images"]

common.page_header(
    "Probe",
    "Does rotation pretraining help a labelled task? For one checkpoint: rotation accuracy with "
    "95% intervals, then a linear probe and k-NN on its frozen features, against its random twin.",
)

with common.shown_errors("the probe page"):
    chosen = downstream.network_choice("probe")
    twin = explore.twin_select("probe")
    pair = cached.pair_with_twin(
        chosen.card, twin, chosen.own, fallback=common.data_config(chosen.dataset)
    )
    st.caption(pair.calibration_text)

    st.subheader("Rotation accuracy, mean [95% CI] over test images")
    with common.shown_errors("the accuracy intervals"):
        ivs = downstream.accuracy_intervals(pair.ident, chosen.dkey, pair, chosen.cfg)
        st.caption(
            "Each test image counts once (its share of rotations predicted right); 95% percentile "
            "bootstrap, 1,000 resamples; p: Wilcoxon signed-rank test, trained vs random twin."
        )
        summaries.show_table(ivs, column_order=DISPLAY_ACCURACY)
        export.table_buttons(ivs, f"accuracy-ci-{chosen.stem}", key="probe_acc_ci")

    st.subheader("Downstream probe")
    task = DEFAULT_TASK.get(chosen.dataset, "folder")
    fractions = st.multiselect(
        "Training labels used",
        [0.01, 0.1, 1.0],
        default=[0.01, 0.1, 1.0],
        format_func=lambda f: f"{f:.0%}",
        key="probe_fractions",
    )
    st.caption(
        f"Task '{task}' on {chosen.dataset}: linear probe (logistic regression, L2 chosen on a "
        "validation part of the training split) and 20-NN (cosine) on frozen embed() "
        "features of the trained network and of its random twin; test images are only predicted."
    )
    probe_key = (pair.ident, chosen.dkey, tuple(sorted(fractions)))
    done = st.session_state.get("probe_done") == probe_key
    if not done:
        done = st.button("Run the probe", key="probe_run", disabled=not fractions)
    if done:
        st.session_state["probe_done"] = probe_key
        with st.spinner(
            f"Probing {task} on {chosen.dataset}: features, fits at each label fraction..."
        ):
            probed = downstream.probe(pair.ident, chosen.dkey, task, probe_key[2], chosen.cfg, pair)
        numbers = probed.numbers
        table = probe_table(numbers)
        caption = (
            f"Probe accuracy (%) on {chosen.dataset} ({probed.task}, {len(probed.classes)} "
            f"classes, {probed.n_train} training and {probed.n_test} test images, chance "
            f"{percent(probed.chance)}), mean [95% CI] over test images"
        )
        st.caption(caption + ("; " + "; ".join(probed.notes) if probed.notes else ""))
        summaries.show_table(table.reset_index())
        common.show_figure(label_efficiency_figure(numbers))
        export.table_buttons(table, f"probe-{chosen.stem}", key="probe_t", caption=caption)
        export.table_buttons(numbers, f"probe-numbers-{chosen.stem}", key="probe_n")
        export.figure_buttons(
            lambda: label_efficiency_figure(numbers),
            f"label-efficiency-{chosen.stem}",
            key="probe_le",
        )
