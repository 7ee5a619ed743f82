"""Your images page: upload photos, see the predicted rotation and trained vs random saliency."""

from __future__ import annotations

import numpy as np
import streamlit as st

from rotviz.app import cached, common, cost, explore, faithfulness
from rotviz.data import uploads
from rotviz.data.datasets import formats_text
from rotviz.nets import evaluate

common.page_header(
    "Your images",
    f"Upload {formats_text()} photos (EXIF orientation is applied). For each: which rotation the "
    "network predicts when the photo is turned each way, and trained vs random saliency; give "
    "boxes to get Q.",
)

with common.shown_errors("the Your images page"):
    card = common.checkpoint_select("up_ckpt")
    if card is None:
        st.stop()
    files = st.file_uploader(
        "Images",
        type=list(uploads.UPLOAD_TYPES),
        accept_multiple_files=True,
        key="up_files",
        help=f"{formats_text()}; at most 20 MB each; anything between 8x8 px and 100 megapixels.",
    )
    box_mode = st.radio(
        "Boxes (optional, for Q)",
        ["none", "type numbers", "COCO json"],
        horizontal=True,
        key="up_box_mode",
    )
    coco_boxes: dict[str, np.ndarray] = {}
    if box_mode == "COCO json":
        coco_file = st.file_uploader(
            "COCO json with boxes for these files", type=["json"], key="up_coco"
        )
        if coco_file is not None:
            with common.shown_errors("reading the boxes file"):
                coco_boxes = uploads.parse_coco_boxes(coco_file.getvalue())
    if not files:
        st.info("Upload one or more images to start.")
        st.stop()

    sal_cfg = explore.settings_widgets("up")
    threshold = explore.threshold_widgets(
        "up", card.model, sal_cfg.layer, has_boxes=box_mode != "none"
    )
    twin = explore.twin_select("up")
    pair = cached.pair_with_twin(
        card, twin, common.with_local_paths(card.data_config), fallback=common.data_config("demo")
    )
    st.caption(pair.calibration_text)
    explore.warn_method(pair.trained, sal_cfg.method)
    size, resize = card.data_config.image_size, card.data_config.resize

    for i, (tab, f) in enumerate(zip(st.tabs([f.name for f in files]), files, strict=True)):
        with tab, common.shown_errors(f"image {f.name}"):
            boxes = coco_boxes.get(f.name)
            if box_mode == "type numbers":
                text = st.text_area(
                    "Boxes: one x0, y0, x1, y1 per line, in pixels of the upright photo",
                    key=f"up_boxes_{i}",
                    placeholder="120, 40, 380, 300",
                )
                boxes = uploads.parse_boxes_text(text)
            elif box_mode == "COCO json" and coco_boxes and boxes is None:
                st.warning(f"The COCO json has no image called {f.name}; no boxes for it.")
            up = uploads.read_upload(f.name, f.getvalue(), boxes, size, resize)
            st.caption(f"{up.original.width} x {up.original.height} px, {len(up.boxes)} boxes")

            st.subheader("Predicted rotation")
            probs = evaluate.rotation_probabilities(
                pair.trained, up.pixels, pair.checkpoint.train_config.rotations
            )
            st.dataframe(probs)
            st.caption(
                f"Each row: the photo turned counter-clockwise, the trained network's probability of "
                f"each rotation (%). Right on {int(probs['correct'].sum())} of {len(probs)}."
            )

            st.subheader("Saliency, trained vs random")
            maps = cost.image_maps(pair, up.pixels, sal_cfg, key=f"up{i}")
            if maps is None:
                continue  # a long map set waits for its button
            explore.maps_panel(up.pixels, up.boxes, maps, f.name)
            if len(up.boxes):
                mask = cached.boxes_mask(up.boxes, size)
                sweeps = cached.image_sweeps(
                    pair.ident,
                    f"upload:{up.digest}:{size}:{resize}",
                    sal_cfg.key(),
                    maps,
                    mask,
                )
            else:
                sweeps = None
                st.caption(
                    "No boxes given: Q is n/a; the masks still show where each map is above the threshold."
                )
            shown = explore.threshold_panel(
                up.pixels, up.boxes, maps, threshold, sweeps, key=f"up{i}"
            )
            settings = {
                "page": "your images",
                "file": f.name,
                "checkpoint": card.name,
                "twin": pair.twin_name,
                "twin_calibration": pair.calibration_text,
                "boxes": up.boxes_original.tolist(),
                **sal_cfg.__dict__,
                "threshold": threshold.describe(),
            }
            explore.exports(
                up.pixels,
                up.boxes,
                maps,
                shown,
                threshold,
                f"{card.model}-{f.name}",
                settings,
                [card],
                key=f"up{i}",
            )
            with (
                st.expander(
                    "Does the network use what the map points at? Deletion, insertion, ROAD"
                ),
                common.shown_errors("the faithfulness curves"),
            ):
                faithfulness.image_section(pair, up.pixels, maps[0], sal_cfg, key=f"up{i}")
