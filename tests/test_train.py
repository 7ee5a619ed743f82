import contextlib
import copy
import dataclasses

import numpy as np
import torch

from rotviz.config import ALL_ROTATIONS, TrainConfig
from rotviz.nets.checkpoint import TrainState
from rotviz.nets.evaluate import rotation_accuracy
from rotviz.nets.models import build_model
from rotviz.training.loop import lr_at, train

CPU = torch.device("cpu")


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_few_steps_lower_the_loss_on_real_images(real_images):
    cfg = TrainConfig(model="six_layer", epochs=15, batch_size=8, lr=1e-3)
    model = build_model("six_layer", 4, 0)
    state = train(model, real_images, cfg, CPU)
    losses = [h.loss for h in state.history]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1
    assert not model.training


def test_training_is_deterministic_for_a_seed(real_images):
    cfg = TrainConfig(epochs=2, batch_size=4)
    a, b = build_model("six_layer", 4, 0), build_model("six_layer", 4, 0)
    train(a, real_images, cfg, CPU)
    train(b, real_images, cfg, CPU)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resuming_after_an_epoch_equals_an_uninterrupted_run(real_images):
    cfg = TrainConfig(epochs=2, batch_size=4)
    full = build_model("six_layer", 4, 0)
    train(full, real_images, cfg, CPU)

    saved = {}

    def stop_after_first(state, optimizer):
        saved["weights"] = weights(model)
        saved["state"] = TrainState(
            state.epochs_done, copy.deepcopy(optimizer.state_dict()), list(state.history)
        )
        raise KeyboardInterrupt

    model = build_model("six_layer", 4, 0)
    with contextlib.suppress(KeyboardInterrupt):
        train(model, real_images, cfg, CPU, on_epoch_end=stop_after_first)
    resumed = build_model("six_layer", 4, 0)
    resumed.load_state_dict(saved["weights"])
    state = train(resumed, real_images, cfg, CPU, state=saved["state"])
    assert state.epochs_done == 2 and len(state.history) == 2
    wf, wr = weights(full), weights(resumed)
    assert all(torch.allclose(wf[k].float(), wr[k].float(), atol=1e-6) for k in wf)


def test_step_callback_reports_every_step(real_images):
    seen = []
    train(
        build_model("six_layer", 4, 0),
        real_images,
        TrainConfig(epochs=1, batch_size=3),
        CPU,
        on_step=seen.append,
    )
    assert [s.step for s in seen] == [1, 2, 3] and seen[-1].steps == 3
    assert all(0 <= s.accuracy <= 1 for s in seen)


def test_shuffled_labels_train_something_else(real_images):
    """The same images, start and schedule; only the labels lose their meaning: the real labels
    are learnt (the eight photos, 32 px, at every rotation), the shuffled ones leave the network
    at chance on the true rotations."""
    small = np.ascontiguousarray(real_images[:, :, ::4, ::4])  # 32 px: fast, still learnable
    cfg = TrainConfig(epochs=20, batch_size=8, lr=3e-3)
    real, shuffled = build_model("six_layer", 4, 0), build_model("six_layer", 4, 0)
    real_run = train(real, small, cfg, CPU)
    shuffled_run = train(shuffled, small, dataclasses.replace(cfg, shuffle_labels=True), CPU)
    assert [h.lr for h in real_run.history] == [h.lr for h in shuffled_run.history]
    assert real_run.history[-1].loss < 0.5 < 1.2 < shuffled_run.history[-1].loss  # ln 4 = 1.39
    chance = 1 / 4
    assert rotation_accuracy(real, small, ALL_ROTATIONS, "cpu").accuracy >= 0.75
    assert abs(rotation_accuracy(shuffled, small, ALL_ROTATIONS, "cpu").accuracy - chance) <= 0.2


def test_learning_rate_steps():
    cfg = TrainConfig(lr=1e-4, lr_step=10, lr_gamma=0.1)
    assert lr_at(0, cfg) == 1e-4 and lr_at(9, cfg) == 1e-4
    assert abs(lr_at(10, cfg) - 1e-5) < 1e-12
    assert lr_at(25, TrainConfig()) == 1e-4  # the study's listed factor 1: no decay
