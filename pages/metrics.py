"""Metrics page: rotation accuracy from the store, goodness tables with intervals, dataset threshold
sweeps, the downstream probe and the saliency sanity checks (trained vs random)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import (
    cached,
    common,
    downstream,
    explore,
    export,
    jobs,
    scores,
    summaries,
    training,
)
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import TrainConfig
from rotviz.nets.checkpoint import Card
from rotviz.nets.models import STUDY_MODELS
from rotviz.report.charts import sweep_plotly
from rotviz.report.figures import close_figure, sweep_figure
from rotviz.scores.stats import percent

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
DISPLAY_ACCURACY = ["trained (%)", "random (%)", "difference (%)", "p (Wilcoxon)", "test images"]
PERCENT_COLUMNS = {
    c: st.column_config.NumberColumn(c, format="%.1f")
    for c in (
        "ours, trained (%)",
        "ours, random twin, initial statistics (%)",
        "ours, random twin, calibrated statistics (%)",
        "accuracy, trained (%)",
        "accuracy, random twin, initial statistics (%)",
        "accuracy, random twin, calibrated statistics (%)",
        "chance (%)",
    )
}

common.page_header(
    "Metrics",
    "The study's tables from this store: rotation accuracy per dataset and model, and the mean "
    "goodness Q of thresholded saliency maps on the test images with boxes, trained vs random.",
)


def goodness_section(cards: list[Card], acc: pd.DataFrame) -> None:
    """Goodness tables with intervals, sweeps and exports for the chosen checkpoints."""
    boxed = [d for d in common.available_datasets() if d in ("demo", "coco")]
    dataset = st.selectbox("Dataset (with boxes)", boxed, key="met_dataset")
    ds_cards = {str(c.path): c for c in cards}
    if not ds_cards:
        st.info("No checkpoint in the store: train one on the Train page.")
        return
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

    twin = explore.twin_select("met")
    settings = [(path, layer) for path in chosen for layer in ("rotation", "embedding")]
    run_key = ("met_done", tuple(settings), method, aggregate, twin)
    done = st.session_state.get("met_done") == run_key
    if not done:
        st.info(f"{len(settings)} maps sets to compute (all neurons; cached once computed).")
        done = st.button("Compute the goodness tables", type="primary", key="met_compute")
    if not done or not settings:
        return
    st.session_state["met_done"] = run_key
    results = []
    bar = st.progress(0.0, text="Computing maps...")
    for n, (path, layer) in enumerate(settings):
        card = ds_cards[path]
        sal = SaliencyConfig(
            layer=layer,
            neurons="all",
            method=method,
            aggregate=aggregate,
            rotations=card.rotations,
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
    st.dataframe(table, hide_index=True, width="stretch", column_order=shown)
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
    pick = st.selectbox("Checkpoint and layer", list(names), format_func=names.get, key="met_sweep")
    res = results[pick]
    df_t, df_r = scores.sweep_frames(res)
    fig = sweep_plotly(df_t, df_r)
    fig.update_layout(height=380, legend={"orientation": "h", "y": -0.3})
    st.plotly_chart(fig, key="met_sweep_chart")
    st.caption(
        "Mean Q over the test images with boxes at each threshold; AUC = average Q over the swept "
        "range. Absolute λ depends on each model's gradient scale; percentiles compare across models."
    )
    sweep_table = pd.concat([df_t.assign(network="trained"), df_r.assign(network="random twin")])
    stem = f"sweep-{res.card.name}-{res.layer}"
    export.figure_buttons(lambda: sweep_figure(df_t, df_r), stem, key="met_fig")
    export.table_buttons(sweep_table, stem, key="met_sw")
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
        [ds_cards[p] for p in chosen],
        f"metrics-{dataset}",
        key="met_bundle",
    )


def missing_section(cards: list[dict]) -> None:
    """Train, in the background, the study's models a dataset has no checkpoint for."""
    with st.expander("Train what is missing for a dataset"):
        c1, c2 = st.columns(2)
        with c1:
            dataset = common.dataset_select("met_miss_dataset")
        epochs = c2.number_input("Epochs", 1, 500, TrainConfig().epochs, key="met_miss_epochs")
        have = {c.model for c in cards if c.dataset == dataset and c.recipe.is_study()}
        missing = [m for m in STUDY_MODELS if m not in have]
        keys = st.session_state.setdefault("met_miss_jobs", [])
        if missing:
            st.caption(
                f"No checkpoint of the study's recipe for {', '.join(missing)} on {dataset} yet."
            )
            if st.button(f"Train {len(missing)} missing model(s)", key="met_miss_train"):
                data = common.data_config(dataset)
                for model in missing:
                    train = TrainConfig(model=model, epochs=int(epochs))
                    job = jobs.registry().start(data, train, common.store().root)
                    if job.key not in keys:
                        keys.append(job.key)
        else:
            st.caption(f"The store has every study model on {dataset}.")
        for key in keys:
            training.job_panel(key)


def show_figure(fig) -> None:  # noqa: ANN001 (a matplotlib Figure)
    """Draw a matplotlib figure on the page and free it."""
    try:
        st.pyplot(fig, clear_figure=False)
    finally:
        close_figure(fig)


def trained_vs_random_section() -> None:
    """Accuracy intervals, the probe table and curve, and the sanity checks of one checkpoint."""
    from rotviz.report.figures import cascading_figure, label_efficiency_figure
    from rotviz.study.probe import DEFAULT_TASK, probe_table

    dataset = common.dataset_select("met_dn_dataset")
    card = common.checkpoint_select("met_dn_ckpt", dataset, others=True)
    if card is None:
        return
    own = common.with_local_paths(card.data_config)
    cross = card.dataset != dataset
    cfg = cached.viewing_config(card, common.data_config(dataset) if cross else own)
    if cross:
        st.caption(
            f"Cross-dataset: a network trained on {card.dataset}, applied to the {dataset} test "
            "split (not its own test split)."
        )
    dkey, ckpt_id = cached.data_key(cfg), cached.checkpoint_id(card)
    stem = f"{card.dataset}-{card.model}-{card.name[-8:]}"
    st.caption(f"Recipe: {card.recipe.describe()}")

    twin = explore.twin_select("met_dn")
    pair = None
    with common.shown_errors("the random twin"):
        pair = cached.pair_with_twin(card, twin, own, fallback=common.data_config(dataset))
    if pair is None:
        return
    st.caption(pair.calibration_text)

    st.subheader("Rotation accuracy, mean [95% CI] over test images")
    with common.shown_errors("the accuracy intervals"):
        ivs = downstream.accuracy_intervals(pair.ident, dkey, pair, cfg)
        st.caption(
            "Each test image counts once (its share of rotations predicted right); 95% percentile "
            "bootstrap, 1,000 resamples; p: Wilcoxon signed-rank test, trained vs random twin."
        )
        st.dataframe(ivs, hide_index=True, width="stretch", column_order=DISPLAY_ACCURACY)
        export.table_buttons(ivs, f"accuracy-ci-{stem}", key="met_acc_ci")

    st.subheader("Downstream probe: does rotation pretraining help a labelled task?")
    with common.shown_errors("the probe"):
        task = DEFAULT_TASK.get(dataset, "folder")
        fractions = st.multiselect(
            "Training labels used",
            [0.01, 0.1, 1.0],
            default=[0.01, 0.1, 1.0],
            format_func=lambda f: f"{f:.0%}",
            key="met_probe_fractions",
        )
        st.caption(
            f"Task '{task}' on {dataset}: linear probe (logistic regression, L2 chosen on a "
            "validation part of the training split) and 20-NN (cosine) on frozen embed() "
            "features of the trained network and of its random twin; test images are only predicted."
        )
        probe_key = (pair.ident, dkey, tuple(sorted(fractions)))
        done = st.session_state.get("met_probe_done") == probe_key
        if not done:
            done = st.button("Run the probe", key="met_probe", disabled=not fractions)
        if done:
            st.session_state["met_probe_done"] = probe_key
            with st.spinner(
                f"Probing {task} on {dataset}: features, fits at each label fraction..."
            ):
                probed = downstream.probe(pair.ident, dkey, task, probe_key[2], cfg, pair)
                numbers = probed.numbers
            table = probe_table(numbers)
            caption = (
                f"Probe accuracy (%) on {dataset} ({probed.task}, {len(probed.classes)} classes, "
                f"{probed.n_train} training and {probed.n_test} test images, chance "
                f"{percent(probed.chance)}), mean [95% CI] over test images"
            )
            st.caption(caption + ("; " + "; ".join(probed.notes) if probed.notes else ""))
            st.dataframe(table.reset_index(), hide_index=True, width="stretch")
            show_figure(label_efficiency_figure(numbers))
            export.table_buttons(table, f"probe-{stem}", key="met_probe_t", caption=caption)
            export.table_buttons(numbers, f"probe-numbers-{stem}", key="met_probe_n")
            export.figure_buttons(
                lambda: label_efficiency_figure(numbers), f"label-efficiency-{stem}", key="met_le"
            )

    st.subheader("Sanity checks for the saliency maps (Adebayo et al. 2018)")
    with common.shown_errors("the sanity checks"):
        _, split = cached.split(dkey, cfg)
        if len(split) == 0:
            st.info("This dataset has no test image.")
            return
        index = st.selectbox(
            "Test image",
            list(range(len(split))),
            format_func=lambda i: f"{i}: {split.records[i].relpath}",
            key="met_san_image",
        )
        c1, c2, c3 = st.columns(3)
        layer = c1.selectbox("Layer", ["rotation", "embedding"], key="met_san_layer")
        neurons = c2.selectbox("Neurons", ["all", "predicted"], key="met_san_neurons")
        method = c3.selectbox(
            "Method",
            list(explore.METHOD_LABELS),
            format_func=explore.METHOD_LABELS.get,
            key="met_san_method",
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
        san_key = (ckpt_id, dkey, index, sal.key())
        done = st.session_state.get("met_san_done") == san_key
        if not done:
            done = st.button("Run the sanity checks", key="met_sanity")
        if done:
            st.session_state["met_san_done"] = san_key
            image = np.ascontiguousarray(split.images[index])
            mask = cached.boxes_mask(split.boxes[index], image.shape[-1])
            with st.spinner(
                "Maps of the trained net, then with its blocks re-initialised from the head down..."
            ):
                sims, rows = downstream.image_sanity(
                    ckpt_id,
                    f"{dkey}:{index}",
                    sal.key(),
                    shuffled is not None,
                    image,
                    mask,
                    sal,
                    shuffled,
                )
            shown = downstream.similarity_display(sims)
            st.dataframe(shown, hide_index=True, width="stretch")
            title = f"Cascading randomisation: {split.records[index].relpath}"
            show_figure(cascading_figure(rows, image=0, title=title))
            image_stem = f"sanity-{stem}-{index}"
            export.table_buttons(shown, image_stem, key="met_san_t")
            export.table_buttons(rows, f"cascading-{stem}-{index}", key="met_san_c")
            export.figure_buttons(
                lambda: cascading_figure(rows, image=0, title=title),
                f"cascading-{stem}-{index}",
                key="met_san_f",
            )
            export.bundle_button(
                {"cascading": lambda: cascading_figure(rows, image=0, title=title)},
                {"similarities": shown, "cascading": rows},
                {
                    "page": "metrics",
                    "section": "sanity",
                    "image": split.records[index].relpath,
                    "saliency": sal.key(),
                },
                [card],
                image_stem,
                key="met_san_bundle",
            )


cards: list[Card] = []
acc = pd.DataFrame()
st.header("Rotation accuracy")
with common.shown_errors("the accuracy table"):
    cards = common.store().cards()
    acc, others = summaries.accuracy_tables(cards)
    st.caption(
        "Test rotation accuracy (%) of the newest network of the study's recipe (all four "
        "rotations, real labels, all images) per dataset and model, beside the seed report's "
        "number. Empty cells: not trained yet (use the Train page)."
    )
    st.dataframe(acc, hide_index=True, width="stretch", column_config=PERCENT_COLUMNS)
    export.table_buttons(acc, "rotation_accuracy", key="acc", caption="Rotation accuracy (%)")
    if not others.empty:
        st.subheader("Other networks in the store")
        st.caption(
            "Not the study's recipe, so never shown beside its figures: shuffled labels (chance "
            "by design), rotation subsets (other chance level), quick runs on part of the data."
        )
        st.dataframe(others, hide_index=True, width="stretch", column_config=PERCENT_COLUMNS)

with common.shown_errors("training the missing checkpoints"):
    missing_section(cards)

st.header("Saliency goodness Q")
st.caption(common.Q_HELP + " Mean over the test images that have boxes.")
with common.shown_errors("the goodness tables"):
    goodness_section(cards, acc)

st.header("Trained vs random: probe and sanity checks")
st.caption(
    "For one checkpoint: rotation accuracy with 95% intervals, a downstream task on its frozen "
    "features against its random twin, and whether its saliency maps change when the weights "
    "are randomised."
)
with common.shown_errors("the trained-vs-random section"):
    trained_vs_random_section()
