"""Train page: choose data and recipe, see the store's status, train off the script thread."""

from __future__ import annotations

import streamlit as st

from rotviz.app import common, training

common.page_header(
    "Train",
    "Train a network on the rotation pretext task (predict 0/90/180/270°). The store keeps every "
    "finished checkpoint; asking for one it already has loads it instead of training.",
)

with common.shown_errors("reading the training settings"):
    data_cfg, train_cfg = training.settings_form()
    training.store_status(data_cfg, train_cfg)

job_key = st.session_state.get(training.JOB_KEY)
if job_key:
    training.job_panel(job_key)
