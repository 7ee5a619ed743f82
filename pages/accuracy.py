"""Rotation accuracy page: the study's table from this store beside the published figures, the
other networks apart, and background training of what a dataset is missing."""

from __future__ import annotations

import streamlit as st

from rotviz.app import common, export, jobs, summaries, training
from rotviz.config import TrainConfig
from rotviz.nets.models import STUDY_MODELS

common.page_header(
    "Rotation accuracy",
    "Test rotation accuracy per dataset and model from this store, beside the study's published "
    "numbers; trained network and its random twin.",
)

cards = []
with common.shown_errors("the accuracy table"):
    cards = common.store().cards()
    acc, others = summaries.accuracy_tables(cards)
    st.caption(
        "Test rotation accuracy (%) of the newest network of the study's recipe (all four "
        "rotations, real labels, all images) per dataset and model, beside the seed report's "
        "number. Empty cells (—): not trained yet (use the Train page)."
    )
    summaries.show_table(acc)
    export.table_buttons(acc, "rotation_accuracy", key="acc", caption="Rotation accuracy (%)")
    if not others.empty:
        st.subheader("Other networks in the store")
        st.caption(
            "Not the study's recipe, so never shown beside its figures: shuffled labels (chance "
            "by design), rotation subsets (other chance level), quick runs on part of the data."
        )
        summaries.show_table(others)

with (
    common.shown_errors("training the missing checkpoints"),
    st.expander("Train what is missing for a dataset"),
):
    c1, c2 = st.columns(2)
    with c1:
        dataset = common.dataset_select("acc_miss_dataset")
    epochs = c2.number_input("Epochs", 1, 500, TrainConfig().epochs, key="acc_miss_epochs")
    have = {c.model for c in cards if c.dataset == dataset and c.recipe.is_study()}
    missing = [m for m in STUDY_MODELS if m not in have]
    keys = st.session_state.setdefault("acc_miss_jobs", [])
    if missing:
        st.caption(
            f"No checkpoint of the study's recipe for {', '.join(missing)} on {dataset} yet."
        )
        if st.button(f"Train {len(missing)} missing model(s)", key="acc_miss_train"):
            data = common.data_config(dataset)
            for model in missing:
                job = jobs.registry().start(
                    data, TrainConfig(model=model, epochs=int(epochs)), common.store().root
                )
                if job.key not in keys:
                    keys.append(job.key)
    else:
        st.caption(f"The store has every study model on {dataset}.")
    for key in keys:
        training.job_panel(key)
