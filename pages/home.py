"""Home page: what rotviz does, the datasets on offer, the networks in the store."""

from __future__ import annotations

import streamlit as st

from rotviz.app import common, cost, export, summaries

st.title("rotviz")
st.markdown(
    "Train small CNNs to tell whether an image was rotated by 0, 90, 180 or 270 degrees "
    "(self-supervised RotNet).  \n"
    "Then compare **saliency maps** of the trained network with the same network "
    "**randomly initialised**.  \n"
    "And measure how well the thresholded maps fall on annotated objects: "
    "**Q** = IoU of the thresholded map and the bounding boxes."
)

st.header("Datasets")
table_slot = st.container()  # filled last, so a dataset added below is listed at once
with st.expander("Add LFW, COCO, Cityscapes or an image folder (path on this machine)"):
    kind = st.selectbox(
        "Dataset", list(common.PATH_DATASETS), format_func=common.DATASET_LABELS.get, key="add_kind"
    )
    root_help, ann_help = common.PATH_DATASETS[kind]
    root = st.text_input(root_help, key="add_root", placeholder="/path/to/folder")
    ann = st.text_input(ann_help, key="add_ann") if ann_help else None
    if st.button("Use this dataset", key="add_button"):
        with common.shown_errors("checking the dataset path"):
            counts = summaries.add_dataset(kind, root, ann)
            st.success(
                f"{kind}: {counts['train']} training and {counts['test']} test images; "
                "it is now offered on every page for this session."
            )
with table_slot, common.shown_errors("listing the datasets"):
    summaries.show_table(summaries.dataset_table())

st.header("Checkpoints in the store")
st.caption(
    f"Store folder: `{common.store_root()}` (set ROTVIZ_STORE to use another). Rotation "
    "accuracy = share of test images (each at every rotation) whose rotation is predicted "
    "correctly; the random twin is the same network untrained (chance = 1 / number of rotations)."
)
with common.shown_errors("reading the checkpoint store"):
    table = summaries.checkpoint_table(common.store().cards())
    if table.empty:
        st.info("No checkpoint yet: train one on the Train page (about a minute on the demo).")
    else:
        summaries.show_table(table)
        export.table_buttons(
            table, "checkpoints", key="home-ckpt", caption="Checkpoints in the store"
        )

with st.expander("Map cache"), common.shown_errors("the map cache"):
    cost.cache_panel()
