"""The Train page's widgets: settings, store status, the live job panel, the result."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from rotviz.app import common, export
from rotviz.app.jobs import Job, registry
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import parse_rotations
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card
from rotviz.nets.models import STUDY_MODELS
from rotviz.report import charts
from rotviz.training.pipeline import find_checkpoint

JOB_KEY = "train_job"  # session_state: the key of this session's last job
OTHER_MODEL = "other timm model..."
POLL_SECONDS = 1.0


def model_select(key: str) -> str:
    """The study's three models, or any timm model name typed in."""
    choice = st.selectbox(
        "Model",
        [*STUDY_MODELS[::-1], OTHER_MODEL],
        key=key,
        help="six_layer: ~100k parameters (fast on CPU); EfficientNet-b0 and MobileNetV2: millions.",
    )
    if choice != OTHER_MODEL:
        return choice
    name = st.text_input("timm model name", value="resnet18", key=f"{key}-timm").strip()
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] if name else []
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise RotvizError(f"timm has no model called {name!r}.{hint}")
    return name


def settings_form() -> tuple[DataConfig, TrainConfig]:
    """Widgets for the dataset and the training recipe (defaults: the study's preset)."""
    d = TrainConfig()
    c1, c2, c3 = st.columns(3)
    with c1:
        dataset = common.dataset_select("train_dataset")
        model = model_select("train_model")
    with c2:
        epochs = st.number_input("Epochs", 1, 500, d.epochs, key="train_epochs")
        degrees = st.multiselect(
            "Rotation set (degrees)",
            [0, 90, 180, 270],
            default=[0, 90, 180, 270],
            key="train_rotations",
            help="The classes of the pretext task; at least two.",
        )
    with c3:
        seed = st.number_input("Seed", 0, 2**31 - 1, d.seed, key="train_seed")
        max_images = st.number_input(
            "Images per split (0 = all)",
            0,
            1_000_000,
            0,
            key="train_max_images",
            help="Use fewer images for a quick run.",
        )
    with st.expander("Optimiser and preprocessing (the study's preset by default)"):
        a1, a2, a3 = st.columns(3)
        batch_size = a1.number_input("Batch size (images)", 1, 4096, d.batch_size, key="train_bs")
        lr = a2.number_input("Learning rate", 1e-7, 1.0, d.lr, format="%.1e", key="train_lr")
        lr_gamma = a3.number_input(
            "LR decay factor every 10 epochs",
            0.01,
            1.0,
            d.lr_gamma,
            key="train_gamma",
            help="The study lists 'Regularization = 1': no decay.",
        )
        resize = a1.selectbox("Resize to 128x128", ["stretch", "center-crop"], key="train_resize")
    rotations = parse_rotations(",".join(str(x) for x in degrees))
    data_cfg = common.data_config(
        dataset, resize=resize, max_images=int(max_images) if max_images else None
    )
    train_cfg = TrainConfig(
        model=model,
        rotations=rotations,
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        lr_gamma=float(lr_gamma),
        seed=int(seed),
    )
    return data_cfg, train_cfg


def _partial_epochs(store_root: Any, name: str) -> int | None:
    path = store_root / f"{name}.partial.json"
    try:
        return int(json.loads(path.read_text())["epochs_done"])
    except (OSError, ValueError, KeyError):
        return None


def store_status(data_cfg: DataConfig, train_cfg: TrainConfig) -> None:
    """Say whether the store has this checkpoint; show it, or offer to train it."""
    store = common.store()
    name, ckpt = find_checkpoint(data_cfg, train_cfg, store)
    running = registry().get_running(data_cfg, train_cfg, store.root)
    if ckpt is not None:
        st.success(f"The store has this checkpoint (`{name}`): shown below, no training needed.")
        st.session_state.pop(JOB_KEY, None)
        result_panel(ckpt.card)
        return
    if running is not None:
        st.info("This checkpoint is being trained right now (by this or another session).")
        st.session_state[JOB_KEY] = running.key
        return
    done = _partial_epochs(store.root, name)
    if done is not None:
        st.warning(
            f"An interrupted run of this checkpoint stopped after epoch {done} of "
            f"{train_cfg.epochs}; training resumes from there."
        )
    else:
        st.info(f"Not in the store yet (`{name}`): training takes it from scratch.")
    if st.button("Train", type="primary", key="train_start"):
        job = registry().start(data_cfg, train_cfg, store.root)
        st.session_state[JOB_KEY] = job.key


def job_panel(key: str) -> None:
    """The live view of a job while it runs; its result (or error) once it has finished."""
    job = registry().get(key)
    if job is None:  # the server restarted since
        st.session_state.pop(JOB_KEY, None)
        return
    if not job.finished:
        live_job(key)
        return
    snap = job.snapshot()
    if snap["status"] == "failed":
        st.error(f"Training failed: {snap['error']}", icon=":material/warning:")
    elif snap["outcome"] is not None and not snap["outcome"].from_store:
        st.caption(f"Trained in this session's job in {snap['elapsed']:.0f} s.")


@st.fragment(run_every=POLL_SECONDS)
def live_job(key: str) -> None:
    """Progress bar, live loss/accuracy chart and log of a running job, redrawn every second."""
    job: Job | None = registry().get(key)
    if job is None:
        return
    if job.finished:
        st.rerun()  # draw the result outside the fragment, and stop polling
    snap = job.snapshot()
    last = snap["last"]
    if last is None:
        st.progress(0.0, text=f"Preparing data and model... ({snap['elapsed']:.0f} s)")
    else:
        done = (last.epoch * last.steps + last.step) / (last.epochs * last.steps)
        st.progress(
            min(done, 1.0),
            text=f"epoch {last.epoch + 1}/{last.epochs}, step {last.step}/{last.steps}: "
            f"loss {last.loss:.3f}, batch accuracy {last.accuracy:.0%} ({snap['elapsed']:.0f} s)",
        )
    st.plotly_chart(charts.training_chart(snap["steps"]), key=f"live-{key}")
    if snap["log"]:
        st.code("\n".join(snap["log"][-6:]), language=None)
    st.caption("Training runs in the background: you may switch pages and come back.")


def result_panel(card: Card) -> None:
    """Trained vs random rotation accuracy, per rotation, confusion matrices, training curve."""
    trained, random = card.test_eval("trained"), card.test_eval("initial")
    if not trained or not random:
        st.warning("This checkpoint's card has no test metrics.")
        return
    st.caption(f"Recipe: {card.recipe.describe()}")
    chance = 1 / len(trained["rotations_degrees"])
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Rotation accuracy, trained",
        f"{trained['accuracy']:.1%}",
        f"{100 * (trained['accuracy'] - random['accuracy']):+.1f} points vs random",
        help="Share of test images (each at every rotation) whose rotation is predicted correctly.",
    )
    c2.metric(
        "Rotation accuracy, random twin",
        f"{random['accuracy']:.1%}",
        help="Same network, untrained.",
    )
    c3.metric("Chance level", f"{chance:.1%}", help="1 / number of rotations")
    per_rotation = pd.DataFrame(
        {
            "rotation": [f"{d}°" for d in trained["rotations_degrees"]],
            "trained accuracy (%)": [round(100 * a, 1) for a in trained["per_rotation"]],
            "random twin accuracy (%)": [round(100 * a, 1) for a in random["per_rotation"]],
        }
    )
    st.dataframe(per_rotation, hide_index=True)
    conf_t, conf_r = charts.confusion_frame(trained), charts.confusion_frame(random)
    left, right = st.columns(2)
    left.plotly_chart(charts.confusion_chart(conf_t, "Confusion matrix, trained"), key="conf-t")
    right.plotly_chart(
        charts.confusion_chart(conf_r, "Confusion matrix, random twin"), key="conf-r"
    )
    history = [vars(h) for h in card.history]
    if history:
        st.plotly_chart(charts.training_chart([], history), key="history")
    stem = f"train-{card.name}"
    tables = {"per_rotation": per_rotation, "confusion_trained": conf_t, "confusion_random": conf_r}
    if history:
        tables["history"] = pd.DataFrame(history)
    figures = {
        "confusion": lambda: figures.confusion_figure(conf_t, conf_r),
        **({"training": lambda: figures.history_figure(history)} if history else {}),
    }
    st.caption("Export")
    export.figure_buttons(figures["confusion"], f"{stem}-confusion", key="train-conf")
    export.table_buttons(conf_t, f"{stem}-confusion-trained", key="train-conf-t")
    export.bundle_button(figures, tables, {"page": "train"}, [card], stem, key="train-bundle")
