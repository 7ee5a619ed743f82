"""Saliency page: one test image, trained vs random maps, thresholded masks and Q."""

from __future__ import annotations

import streamlit as st

from rotviz.app import cached, common, cost, explore, faithfulness
from rotviz.nets.checkpoint import Card

common.page_header(
    "Saliency",
    "Where does the network look? Saliency maps of the trained network and of its random twin "
    "(same architecture and seed, untrained) on one test image, thresholded and scored against "
    "the image's boxes.",
)


@st.fragment
def threshold_section(
    card: Card, pair: cached.ModelPair, image, boxes, maps, sweeps, title, settings
) -> None:
    """Only this part reruns when the threshold moves: maps stay as they are."""
    with common.shown_errors("thresholding the maps"):
        threshold = explore.threshold_widgets(
            "sal", card.model, settings["layer"], has_boxes=len(boxes) > 0
        )
        shown = explore.threshold_panel(image, boxes, maps, threshold, sweeps, key="sal")
        explore.exports(
            image,
            boxes,
            maps,
            shown,
            threshold,
            title,
            dict(settings, threshold=threshold.describe()),
            [card],
            key="sal",
        )


with common.shown_errors("the saliency page"):
    c1, c2 = st.columns([1, 2])
    with c1:
        dataset = common.dataset_select("sal_dataset")
    with c2:
        card = common.checkpoint_select("sal_ckpt", dataset, others=True)
    if card is None:
        st.stop()
    cross = card.dataset != dataset  # viewing_config: the network's own preprocessing either way
    data = common.data_config(dataset) if cross else common.with_local_paths(card.data_config)
    if cross:
        st.caption(
            f"Cross-dataset: network {card.name} (trained on {card.dataset}), "
            f"data {dataset} test split; not the network's own test split."
        )
    cfg = cached.viewing_config(card, data)
    _, split = cached.split(cached.data_key(cfg), cfg)

    only_boxed = st.checkbox("Only images with boxes (Q needs boxes)", value=True, key="sal_boxed")
    candidates = [i for i in range(len(split)) if not only_boxed or len(split.boxes[i])]
    if not candidates:
        st.info(
            "No test image of this dataset has boxes; showing all images (Q is n/a without boxes)."
        )
        candidates = list(range(len(split)))
    if st.session_state.get("sal_image") not in candidates:
        size = split.images.shape[-1]
        st.session_state["sal_image"] = explore.first_image(split.boxes, candidates, size)
    pos = candidates.index(st.session_state["sal_image"])
    strip = candidates[max(0, pos - 4) : pos + 8]
    st.image(
        [explore.render.hwc(split.images[i]) for i in strip],
        caption=[f"#{i}" + (" ◀" if i == candidates[pos] else "") for i in strip],
        width=88,
    )
    s1, s2 = st.columns([3, 1])
    index = s1.selectbox(
        f"Test image ({len(candidates)} to choose from)",
        candidates,
        format_func=lambda i: f"#{i}: {split.records[i].relpath} ({len(split.boxes[i])} boxes)",
        key="sal_image",
    )
    s2.button(
        "Random image",
        on_click=explore.random_choice,
        args=(candidates, "sal_image"),
        key="sal_random",
    )

    sal_cfg = explore.settings_widgets("sal")
    twin = explore.twin_select("sal")
    pair = cached.pair_with_twin(
        card, twin, common.with_local_paths(card.data_config), fallback=data
    )
    st.caption(pair.calibration_text)
    explore.warn_method(pair.trained, sal_cfg.method)
    image, boxes = split.images[index].copy(), split.boxes[index]
    image_key = f"{cached.data_key(cfg)}:{index}"
    maps = cost.image_maps(pair, image, sal_cfg, key="sal")
    if maps is None:
        st.stop()  # a long map set waits for its button
    sweeps = None
    if len(boxes):
        mask = cached.boxes_mask(boxes, image.shape[-1])
        sweeps = cached.image_sweeps(pair.ident, image_key, sal_cfg.key(), maps, mask)
    explore.maps_panel(image, boxes, maps, f"#{index} {split.records[index].relpath}")
    settings = {
        "page": "saliency",
        "dataset": dataset,
        "checkpoint": card.name,
        "twin": pair.twin_name,
        "twin_calibration": pair.calibration_text,
        "trained on": card.dataset,
        "cross_dataset": cross,
        "image": split.records[index].relpath,
        **sal_cfg.__dict__,
    }
    with st.expander("Rotation consistency: maps of the rotated image, turned back"):
        st.caption(
            "Each map is of the image rotated by k x 90°, turned back; a map about the object "
            "matches the upright one (Spearman 1). `python -m rotviz consistency` scores the test set."
        )
        if st.checkbox("Compute the four back-rotated maps", key="sal_consistency"):
            explore.consistency_panel(pair, image, sal_cfg)
    with (
        st.expander("Does the network use what the map points at? Deletion, insertion, ROAD"),
        common.shown_errors("the faithfulness curves"),
    ):
        faithfulness.image_section(pair, image, maps[0], sal_cfg, key="sal")
    threshold_section(
        card,
        pair,
        image,
        boxes,
        maps,
        sweeps,
        f"{card.model}-{split.records[index].relpath}",
        settings,
    )
