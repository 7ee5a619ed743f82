"""Metrics page: rotation accuracy from the store, goodness tables, dataset threshold sweeps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from rotviz.figures import sweep_figure, sweep_plotly
from rotviz.saliency import SaliencyConfig
from rotviz.ui import common, explore, export, scores, summaries

common.page_header(
    "Metrics",
    "The study's tables from this store: rotation accuracy per dataset and model, and the mean "
    "goodness Q of thresholded saliency maps on the test images with boxes, trained vs random.",
)

st.header("Rotation accuracy")
with common.shown_errors("the accuracy table"):
    cards = common.store().cards()
    acc = summaries.accuracy_table(cards)
    st.caption(
        "Test rotation accuracy (%) of the newest checkpoint per dataset and model; 'published' is "
        "the seed report's number. Empty cells: not trained yet (use the Train page)."
    )
    st.dataframe(acc, hide_index=True, width="stretch")
    export.table_buttons(acc, "rotation_accuracy", key="acc", caption="Rotation accuracy (%)")

st.header("Saliency goodness Q")
st.caption(common.Q_HELP + " Mean over the test images that have boxes.")
with common.shown_errors("the goodness tables"):
    boxed = [d for d in common.available_datasets() if d in ("demo", "coco")]
    dataset = st.selectbox("Dataset (with boxes)", boxed, key="met_dataset")
    ds_cards = [c for c in cards if c["dataset"] == dataset]
    if not ds_cards:
        st.info(f"No checkpoint for {dataset} in the store: train one on the Train page.")
        st.stop()
    chosen = st.multiselect(
        "Checkpoints",
        [c["card_path"] for c in ds_cards],
        default=[c["card_path"] for c in ds_cards][:3],
        format_func=lambda p: common.card_label(next(c for c in ds_cards if c["card_path"] == p)),
        key="met_ckpts",
    )
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox(
        "Method",
        list(explore.METHOD_LABELS),
        format_func=explore.METHOD_LABELS.get,
        key="met_method",
    )
    aggregate = c2.selectbox(
        "Aggregation over rotations",
        list(explore.AGGREGATE_LABELS),
        format_func=explore.AGGREGATE_LABELS.get,
        key="met_aggregate",
    )
    modes = {"study": "the study's λ per model and layer", **explore.MODES}
    mode = c3.selectbox("Threshold", list(modes), format_func=modes.get, key="met_mode")
    value = None
    if mode == "absolute":
        value = st.select_slider(
            "λ (log scale)",
            explore.lambda_options(),
            value=8e-4,
            format_func=lambda v: f"{v:.1e}",
            key="met_lam",
        )
    elif mode == "percentile":
        value = st.slider("percentile p", 0.0, 100.0, 90.0, 0.5, key="met_pct")

    settings = [(card_path, layer) for card_path in chosen for layer in ("rotation", "embedding")]
    run_key = ("met_done", tuple(settings), method, aggregate)
    done = st.session_state.get("met_done") == run_key
    if not done:
        st.info(f"{len(settings)} maps sets to compute (all neurons; cached once computed).")
        done = st.button("Compute the goodness tables", type="primary", key="met_compute")
    if done:
        st.session_state["met_done"] = run_key
        results = []
        bar = st.progress(0.0, text="Computing maps...")
        for n, (card_path, layer) in enumerate(settings):
            card = next(c for c in ds_cards if c["card_path"] == card_path)
            sal = SaliencyConfig(layer=layer, neurons="all", method=method, aggregate=aggregate)

            def progress(
                i: int, total: int, n: int = n, card: dict = card, layer: str = layer
            ) -> None:
                bar.progress(
                    (n + i / max(total, 1)) / len(settings),
                    text=f"{card['model']}, {layer} layer: image {i}/{total}",
                )

            cfg = common.with_local_paths(scores.card_data_config(card))
            results.append(scores.split_maps(card, cfg, sal, progress))
        bar.empty()
        table = scores.goodness_table(results, mode, value)
        st.dataframe(table, hide_index=True, width="stretch")
        export.table_buttons(
            table, f"goodness-{dataset}", key="good", caption="Mean goodness Q (%)"
        )

        st.subheader("Threshold sweep over the dataset")
        names = {
            i: f"{r.card['model']}, {r.layer} layer ({r.card['name'][-8:]})"
            for i, r in enumerate(results)
        }
        pick = st.selectbox(
            "Checkpoint and layer", list(names), format_func=names.get, key="met_sweep"
        )
        res = results[pick]
        df_t, df_r = scores.sweeps(res)
        fig = sweep_plotly(df_t, df_r)
        fig.update_layout(height=380, legend={"orientation": "h", "y": -0.3})
        st.plotly_chart(fig, key="met_sweep_chart")
        st.caption(
            "Mean Q over the test images with boxes at each threshold; AUC = average Q over the swept "
            "range. Absolute λ depends on each model's gradient scale; percentiles compare across models."
        )
        sweep_table = pd.concat(
            [df_t.assign(network="trained"), df_r.assign(network="random twin")]
        )
        export.figure_buttons(
            lambda: sweep_figure(df_t, df_r), f"sweep-{res.card['name']}-{res.layer}", key="met_fig"
        )
        export.table_buttons(sweep_table, f"sweep-{res.card['name']}-{res.layer}", key="met_sw")
        export.bundle_button(
            {"sweep": lambda: sweep_figure(df_t, df_r)},
            {"goodness": table, "sweep": sweep_table, "rotation_accuracy": acc},
            {
                "page": "metrics",
                "dataset": dataset,
                "method": method,
                "aggregate": aggregate,
                "threshold_mode": mode,
                "threshold_value": value,
            },
            [next(c for c in ds_cards if c["card_path"] == p) for p in chosen],
            f"metrics-{dataset}",
            key="met_bundle",
        )
