"""What a checkpoint is: its recipe, its typed card, its training state, and the loaded network.

The card is the JSON file beside the weights (``rotviz.nets.store`` reads and writes it); ``Card``
is the one typed view of it that every caller uses, so no module reads ``card["..."]`` keys of
its own. ``Recipe`` is what was trained, as one value that can be compared, printed and
filtered: the Metrics page shows a network beside the study's published figures only when its
recipe is the study's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotviz.config import ALL_ROTATIONS, IMAGE_SIZE, DataConfig, TrainConfig, bundled
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

SHIPPED_STORE = bundled("checkpoints")  # the networks that ship with rotviz (read-only)
# the networks whose test metrics a card records, each with the name older cards give it
CARD_NETWORKS = {"trained": "trained", "initial": "random", "calibrated": "random_calibrated"}


@dataclass
class EpochResult:
    """Mean loss and accuracy of one finished epoch."""

    epoch: int  # 1-based count of finished epochs
    loss: float
    accuracy: float
    lr: float
    world_size: int = 1  # ranks that trained this epoch (a resumed job may use another)


@dataclass
class TrainState:
    """Everything needed to resume: finished epochs, optimiser state, history."""

    epochs_done: int = 0
    optimizer_state: dict | None = None
    history: list[EpochResult] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    """What was trained on what: the fields that decide whether two networks are comparable."""

    dataset: str
    model: str
    epochs: int
    rotations: tuple[int, ...]
    seed: int
    shuffle_labels: bool
    max_images: int | None
    resize: str
    image_size: int
    root: str | None = None

    @classmethod
    def of(cls, data: DataConfig, train: TrainConfig) -> Recipe:
        return cls(
            dataset=data.dataset,
            model=train.model,
            epochs=train.epochs,
            rotations=tuple(train.rotations),
            seed=train.seed,
            shuffle_labels=train.shuffle_labels,
            max_images=data.max_images,
            resize=data.resize,
            image_size=data.image_size,
            root=data.root,
        )

    def deviations(self) -> list[str]:
        """How this recipe differs from the study's (empty: it is the study's recipe)."""
        out = []
        if tuple(self.rotations) != ALL_ROTATIONS:
            out.append(f"rotations {self.rotations_text()} (the study: all four)")
        if self.shuffle_labels:
            out.append("shuffled labels (a data-randomisation baseline)")
        if self.max_images is not None:
            out.append(f"--max-images {self.max_images} (a quick run on part of the data)")
        if self.resize != "stretch" or self.image_size != IMAGE_SIZE:
            out.append(
                f"preprocessing {self.resize} {self.image_size}px (the study: stretch 128px)"
            )
        return out

    def is_study(self) -> bool:
        """All four rotations, real labels, all images, the study's preprocessing."""
        return not self.deviations()

    def rotations_text(self) -> str:
        return ",".join(str(90 * k) for k in self.rotations)

    def columns(self) -> dict[str, Any]:
        """The recipe as table columns."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "epochs": self.epochs,
            "rotations (°)": self.rotations_text(),
            "seed": self.seed,
            "labels": "shuffled" if self.shuffle_labels else "real",
            "max images": self.max_images,
            "resize": f"{self.resize} {self.image_size}px",
        }

    def describe(self) -> str:
        """One line, e.g. "six_layer on demo, 15 epochs, rotations 0,90,180,270, seed 0"."""
        text = (
            f"{self.model} on {self.dataset}, {self.epochs} epochs, "
            f"rotations {self.rotations_text()}, seed {self.seed}"
        )
        extra = [d.split(" (")[0] for d in self.deviations() if not d.startswith("rotations")]
        return text + (f" ({'; '.join(extra)})" if extra else "")


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    d["rotations"] = tuple(d["rotations"])
    return TrainConfig(**d)


def data_config_from_dict(d: dict[str, Any]) -> DataConfig:
    d = dict(d)
    d["categories"] = tuple(d.get("categories", ()))
    return DataConfig(**d)


@dataclass(frozen=True)
class Card:
    """A checkpoint's card, typed. ``raw`` is the JSON as stored; ``path`` its file, if any."""

    raw: dict[str, Any]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def key(self) -> str:
        return self.raw["key"]

    @property
    def train_config(self) -> TrainConfig:
        return train_config_from_dict(self.raw["train_config"])

    @property
    def data_config(self) -> DataConfig:
        return data_config_from_dict(self.raw["data_config"])

    @property
    def recipe(self) -> Recipe:
        return Recipe.of(self.data_config, self.train_config)

    @property
    def dataset(self) -> str:
        return self.raw["dataset"]

    @property
    def model(self) -> str:
        return self.raw["model"]

    @property
    def rotations(self) -> tuple[int, ...]:
        return tuple(self.raw["train_config"]["rotations"])

    @property
    def precision(self) -> str:
        """The training precision (float32, bfloat16, float16); cards from before the store
        keyed precision say it only in run.amp_used, or not at all (float32)."""
        if "precision" in self.raw:
            return self.raw["precision"]
        amp = self.raw.get("run", {}).get("amp_used", "off")
        return "float32" if amp == "off" else amp

    @property
    def epochs_done(self) -> int:
        return int(self.raw.get("epochs_done", 0))

    @property
    def history(self) -> list[EpochResult]:
        return [EpochResult(**h) for h in self.raw.get("history", [])]

    @property
    def n_train_images(self) -> int | None:
        return self.raw.get("n_train_images")

    @property
    def n_test_images(self) -> int | None:
        return self.raw.get("n_test_images")

    @property
    def weights_sha256(self) -> str:
        return self.raw.get("weights_sha256", "")

    @property
    def weights_dtype(self) -> str | None:
        return self.raw.get("weights_dtype")

    @property
    def saved(self) -> str:
        return str(self.raw.get("saved", ""))

    @property
    def command(self) -> str:
        return str(self.raw.get("command", ""))

    def test_accuracy(self, network: str = "trained") -> float | None:
        """Test rotation accuracy (a fraction) recorded at training time: "trained", "initial"
        (the twin with initial BatchNorm statistics) or "calibrated"."""
        value = (self.test_eval(network) or {}).get("accuracy")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def precise_bn(self) -> bool:
        """Whether the BatchNorm statistics were recomputed after training (PreciseBN)."""
        return bool(self.raw.get("precise_bn", {}).get("applied"))

    @property
    def train_accuracy(self) -> dict[str, Any] | None:
        """Training accuracy on a sample in eval mode and with batch statistics (and a warning)."""
        return self.raw.get("train_accuracy")

    def test_eval(self, network: str = "trained") -> dict[str, Any] | None:
        """The recorded test evaluation (accuracy, per rotation, confusion) of one network:
        "trained", "initial" or "calibrated" (older cards name the twins "random" and
        "random_calibrated": read too)."""
        if network not in CARD_NETWORKS:
            raise RotvizError(f"network {network!r}: choose one of {', '.join(CARD_NETWORKS)}")
        test = self.raw.get("metrics", {}).get("test", {})
        found = test.get(network)
        return found if found is not None else test.get(CARD_NETWORKS[network])

    @property
    def dataset_fingerprint(self) -> str:
        return str(self.raw.get("dataset_fingerprint", ""))

    @property
    def origin(self) -> str:
        """ "shipped" (read-only, inside the package) or "yours" (the user's store), from its path."""
        if self.path is not None and self.path.parent.resolve() == SHIPPED_STORE.resolve():
            return "shipped"
        return "yours"

    @property
    def ident(self) -> str:
        """Identifies these weights (cache keys): card path (or name) and weights hash."""
        return f"{self.path or self.name}:{self.weights_sha256}"

    def label(self) -> str:
        """One line naming the checkpoint: recipe, accuracy, short key."""
        acc = self.test_accuracy()
        acc_text = f", rotation accuracy {acc:.1%}" if acc is not None else ""
        return f"{self.recipe.describe()}{acc_text} ({self.name[-8:]})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, float32, rotations attached) and its card."""

    model: RotationNet
    card: Card
    path: Path

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def train_config(self) -> TrainConfig:
        return self.card.train_config

    @property
    def data_config(self) -> DataConfig:
        return self.card.data_config

    @property
    def rotations(self) -> tuple[int, ...]:
        return self.card.rotations

    @property
    def recipe(self) -> Recipe:
        return self.card.recipe
