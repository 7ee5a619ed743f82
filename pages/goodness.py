"""Goodness page: mean Q of thresholded saliency maps over a dataset's test images with boxes,
trained vs random twin, with intervals, the dataset's threshold sweep and exports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from rotviz.app import common, explore, export, faithfulness, scores, summaries
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.nets.checkpoint import Card
from rotviz.report.charts import sweep_plotly
from rotviz.report.figures import sweep_figure

RECIPE = (
    "layer",
    "dataset",
    "data",
    "model",
    "epochs",
    "rotations (°)",
    "seed",
    "labels",
    "max images",
)

common.page_header(
    "Goodness Q",
    "The study's goodness table from this store: the mean Q of thresholded saliency maps on the "
    "test images with boxes, trained network vs its random twin. " + common.Q_HELP,
)

with common.shown_errors("the goodness tables"):
    cards = common.store().cards()
    boxed = [d for d in common.available_datasets() if d in ("demo", "coco")]
    dataset = st.selectbox("Dataset (with boxes)", boxed, key="good_dataset")
    ds_cards = {str(c.path): c for c in cards}
    if not ds_cards:
        st.info("No checkpoint in the store: train one on the Train page.")
        st.stop()
    # the networks trained on this dataset, study recipe first; then the others (cross-dataset)
    study_first = sorted(
        ds_cards,
        key=lambda p: (ds_cards[p].dataset != dataset, not ds_cards[p].recipe.is_study()),
    )
    label = {
        p: c.label() + ("" if c.dataset == dataset else f" — trained on {c.dataset}")
        for p, c in ds_cards.items()
    }
    chosen = st.multiselect(
        "Checkpoints (each row shows its recipe; the published figures stand only beside the "
        "study's recipe and protocol)",
        study_first,
        default=[
            p
            for p in study_first
            if ds_cards[p].recipe.is_study() and ds_cards[p].dataset == dataset
        ][:3],
        format_func=label.get,
        key="good_ckpts",
    )
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox(
        "Method",
        list(explore.METHOD_LABELS),
        format_func=explore.METHOD_LABELS.get,
        key="good_method",
    )
    aggregate = c2.selectbox(
        "Aggregation over rotations",
        list(explore.AGGREGATE_LABELS),
        format_func=explore.AGGREGATE_LABELS.get,
        key="good_aggregate",
    )
    modes = {"study": "the study's λ per model and layer", **explore.MODES}
    mode = c3.selectbox("Threshold", list(modes), format_func=modes.get, key="good_mode")
    value = None
    if mode == "absolute":
        value = st.select_slider(
            "λ (log scale)",
            explore.lambda_options(),
            value=8e-4,
            format_func=lambda v: f"{v:.1e}",
            key="good_lam",
        )
    elif mode == "percentile":
        value = st.slider("percentile p", 0.0, 100.0, 90.0, 0.5, key="good_pct")

    with (
        st.expander(
            "Faithfulness: does the network use what the map points at? (deletion, insertion, ROAD)"
        ),
        common.shown_errors("the faithfulness table"),
    ):
        faithfulness.dataset_section([ds_cards[p] for p in chosen], dataset, method, aggregate)
    twin = explore.twin_select("good")
    settings = [(path, layer) for path in chosen for layer in ("rotation", "embedding")]
    run_key = ("good_done", tuple(settings), method, aggregate, twin)
    done = st.session_state.get("good_done") == run_key
    if not done:
        st.info(f"{len(settings)} maps sets to compute (all neurons; cached once computed).")
        done = st.button("Compute the goodness tables", type="primary", key="good_compute")
    if not done or not settings:
        st.stop()
    st.session_state["good_done"] = run_key
    results = []
    bar = st.progress(0.0, text="Computing maps...")
    for n, (path, layer) in enumerate(settings):
        card = ds_cards[path]
        sal = SaliencyConfig(
            layer=layer, neurons="all", method=method, aggregate=aggregate, rotations=card.rotations
        )

        def progress(i: int, total: int, n: int = n, card: Card = card, layer: str = layer) -> None:
            bar.progress(
                (n + i / max(total, 1)) / len(settings),
                text=f"{card.model}, {layer} layer: image {i}/{total}",
            )

        results.append(
            scores.layer_run(
                card,
                common.data_config(dataset) if card.dataset != dataset else None,
                common.with_local_paths(card.data_config),
                sal,
                twin,
                progress,
            )
        )
    bar.empty()
    table = scores.goodness_table(results, mode, value)
    for text in dict.fromkeys(r.calibration_text for r in results if r.calibration_text):
        st.caption(text)
    shown = [c for c in table.columns if c in scores.DISPLAY_COLUMNS or c in RECIPE]
    summaries.show_table(table, column_order=shown)
    st.caption(
        "Intervals: 95% percentile bootstrap over the test images with boxes (1,000 resamples); "
        "p: Wilcoxon signed-rank test, trained vs random twin. The numeric columns of the CSV "
        "export equal those `python -m rotviz study` writes for the same settings."
    )
    export.table_buttons(table, f"goodness-{dataset}", key="good", caption="Mean goodness Q (%)")

    st.subheader("Threshold sweep over the dataset")
    names = {
        i: f"{r.card.model}, {r.layer} layer ({r.card.name[-8:]})" for i, r in enumerate(results)
    }
    pick = st.selectbox(
        "Checkpoint and layer", list(names), format_func=names.get, key="good_sweep"
    )
    res = results[pick]
    df_t, df_r = scores.sweep_frames(res)
    fig = sweep_plotly(df_t, df_r)
    fig.update_layout(height=380, legend={"orientation": "h", "y": -0.3})
    st.plotly_chart(fig, key="good_sweep_chart")
    st.caption(
        "Mean Q over the test images with boxes at each threshold; AUC = average Q over the swept "
        "range. Absolute λ depends on each model's gradient scale; percentiles compare across models."
    )
    sweep_table = pd.concat([df_t.assign(network="trained"), df_r.assign(network="random twin")])
    stem = f"sweep-{res.card.name}-{res.layer}"
    export.figure_buttons(lambda: sweep_figure(df_t, df_r), stem, key="good_fig")
    export.table_buttons(sweep_table, stem, key="good_sw")
    export.bundle_button(
        {"sweep": lambda: sweep_figure(df_t, df_r)},
        {
            "goodness": table,
            "sweep": sweep_table,
            "rotation_accuracy": summaries.accuracy_tables(cards)[0],
        },
        {
            "page": "goodness",
            "dataset": dataset,
            "method": method,
            "aggregate": aggregate,
            "threshold_mode": mode,
            "threshold_value": value,
        },
        [ds_cards[p] for p in chosen],
        f"goodness-{dataset}",
        key="good_bundle",
    )
