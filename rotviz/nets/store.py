"""Checkpoint store: safetensors weights plus a JSON card, keyed by a hash of the full config.

Two stores: the shipped networks, read-only inside the package (``checkpoints/`` at the top of a checkout, ``rotviz/checkpoints/`` once installed), and the
user's store where new ones are written (``$ROTVIZ_STORE``, else ``~/.cache/rotviz/checkpoints``
under ``$XDG_CACHE_HOME`` when set). ``default_store()`` reads both and writes only the latter.

Files in a store folder, for a checkpoint named N:
``N.safetensors`` + ``N.json`` (finished), ``N.partial.safetensors`` + ``N.partial.json``
(the last finished epoch of a run in progress, with optimiser state, for resume), and
``N.lock`` while a process trains it. Every write goes to a temporary file renamed into
place, weights before the card, while holding ``N.pair.lock``; the card carries the weights'
SHA-256 and its own (``card_sha256``, over its canonical JSON without that field; older
cards lack it). Readers take no lock: a pair that does not match may be a write in progress
(new weights beside the old card, or weights whose card is not renamed in yet), so it is
read again under ``N.pair.lock`` and set aside as corrupt only if it still does not match.
Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from rotviz.config import DataConfig, TrainConfig, __version__, stable_hash
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import (
    SHIPPED_STORE,
    Card,
    Checkpoint,
    TrainState,
    train_config_from_dict,
)
from rotviz.nets.models import RotationNet, build_model

OPT_PREFIX = "optimizer."
PAIR_LOCK_TIMEOUT_S = 300.0


def checkpoint_key(data: DataConfig, train: TrainConfig, fingerprint: str) -> str:
    """The store key: data identity (no local paths), training recipe, dataset content."""
    return stable_hash(data.identity(), train, fingerprint)


def checkpoint_name(data: DataConfig, train: TrainConfig, key: str) -> str:
    """A readable file stem, e.g. ``lfw-six_layer-e10-1a2b3c4d5e6f7a8b``."""
    return f"{data.dataset}-{train.model}-e{train.epochs}-{key}"


def library_versions() -> dict[str, str]:
    import timm
    import torchvision

    return {
        "rotviz": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def card_digest(card: dict[str, Any]) -> str:
    """SHA-256 of the card's canonical JSON (sorted keys, compact), without ``card_sha256`` itself."""
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def check_card(card: Any) -> None:
    """Raise ValueError unless card is a JSON object whose ``card_sha256`` (when present) matches it."""
    if not isinstance(card, dict):
        raise ValueError("the card is not a JSON object")
    if "card_sha256" in card and card["card_sha256"] != card_digest(card):
        raise ValueError("the card was edited or damaged (it does not match its card_sha256)")


def user_store_root() -> Path:
    """Where new networks go: $ROTVIZ_STORE, else <cache>/rotviz/checkpoints (read now, not at import)."""
    if env := os.environ.get("ROTVIZ_STORE"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rotviz" / "checkpoints"


def default_store() -> CheckpointStore:
    """The user's store, which also reads the shipped networks."""
    return CheckpointStore(user_store_root(), shipped=True)


class _Mismatch(Exception):
    """A weights/card pair that cannot be read as one checkpoint (yet, or at all)."""


def command_line() -> str:
    """The command that is running, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("rotviz", "__main__.py")):
        argv[0] = "python -m rotviz"
    return " ".join(argv)


def new_card(data: DataConfig, train: TrainConfig, key: str, fingerprint: str) -> dict[str, Any]:
    """The JSON card of a checkpoint about to be trained."""
    return {
        "name": checkpoint_name(data, train, key),
        "key": key,
        "dataset": data.dataset,
        "model": train.model,
        "data_config": dataclasses.asdict(data),
        "train_config": dataclasses.asdict(train),
        "dataset_fingerprint": fingerprint,
        "epochs_done": 0,
        "history": [],
        "metrics": {},
        "versions": library_versions(),
        "command": command_line(),
    }


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, slots in state["state"].items():
        meta["state"][str(idx)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{OPT_PREFIX}{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                meta["state"][str(idx)][name] = value
    return tensors, meta


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["state"].items()}
    for name, value in tensors.items():
        idx, slot = name[len(OPT_PREFIX) :].split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class CheckpointStore:
    """A folder of checkpoints; see the module docstring for the file layout.

    With shipped=True, ``load`` and ``cards`` also read the shipped networks (root first);
    writes, locks and set-aside only ever touch root.
    """

    def __init__(self, root: str | Path, shipped: bool = False):
        self.root = Path(root)
        self.shipped = shipped and self.root.resolve() != SHIPPED_STORE.resolve()

    def folders(self) -> list[Path]:
        """The folders read: root, then the shipped one when asked."""
        return [self.root, SHIPPED_STORE] if self.shipped else [self.root]

    def describe(self) -> str:
        return f"{self.root} (and the shipped {SHIPPED_STORE})" if self.shipped else str(self.root)

    def paths(self, name: str, partial: bool = False) -> tuple[Path, Path]:
        stem = f"{name}.partial" if partial else name
        return self.root / f"{stem}.safetensors", self.root / f"{stem}.json"

    @contextlib.contextmanager
    def pair_lock(self, name: str) -> Iterator[None]:
        """Held briefly by a writer while it replaces a pair, and by a reader before it sets one aside."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f"{name}.pair.lock"), timeout=PAIR_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout as err:
            raise RotvizError(
                f"checkpoint {name}: a writer has held {lock.lock_file} for over "
                f"{PAIR_LOCK_TIMEOUT_S:.0f} s; is a process stuck?"
            ) from err
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Held while one process trains a checkpoint; another asking for it waits, then reuses."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f"{name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"[rotviz] {name} is being trained by another process; waiting", file=sys.stderr)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def write(
        self,
        name: str,
        model: torch.nn.Module,
        card: dict[str, Any],
        partial: bool = False,
        optimizer_state: dict | None = None,
        half: bool = False,
    ) -> Path:
        """Save weights (optionally float16) then the card, each atomically, holding the pair lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        weights_path, card_path = self.paths(name, partial)
        tensors = {}
        for k, v in model.state_dict().items():
            v = v.detach().cpu().contiguous()
            tensors[k] = v.half() if half and v.is_floating_point() else v
        card = {k: v for k, v in card.items() if k != "card_sha256"}
        card["weights_dtype"] = "float16" if half else "float32"
        if optimizer_state is not None:
            opt_tensors, card["optimizer"] = optimizer_to_tensors(optimizer_state)
            tensors.update(opt_tensors)
        blob = save_safetensors(tensors)
        card["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        card["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        card = json.loads(json.dumps(card, default=str))  # exactly what the file will hold
        card["card_sha256"] = card_digest(card)
        with self.pair_lock(name):
            atomic_write_bytes(weights_path, blob)
            atomic_write_bytes(card_path, json.dumps(card, indent=2).encode())
            if not partial:  # card first: weights alone read as "being written", never as done
                for p in reversed(self.paths(name, partial=True)):
                    p.unlink(missing_ok=True)
        return weights_path

    def read(
        self, name: str, partial: bool = False
    ) -> tuple[RotationNet, dict, dict | None] | None:
        """(model, card, optimizer_state) or None if absent; a corrupt pair is reported and set aside."""
        try:
            return self._read_pair(name, partial)
        except _Mismatch:
            pass  # maybe a write in progress: decide only while no writer holds the pair
        with self.pair_lock(name):
            try:
                return self._read_pair(name, partial)
            except _Mismatch as err:
                self.set_aside(name, partial, str(err))
                return None

    def _read_pair(self, name: str, partial: bool) -> tuple[RotationNet, dict, dict | None] | None:
        """One lock-free attempt: the pair, None if absent, or _Mismatch."""
        weights_path, card_path = self.paths(name, partial)
        try:
            card_text = card_path.read_text()
        except FileNotFoundError:
            if weights_path.exists():
                raise _Mismatch("weights without a card (a write was interrupted)") from None
            return None
        try:
            card = json.loads(card_text)
            check_card(card)
            blob = weights_path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != card.get("weights_sha256"):
                raise ValueError("the weights do not match the SHA-256 in the card")
            tensors = load_safetensors(blob)
            opt_tensors = {k: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
            weights = {
                k: v.float() if v.is_floating_point() else v
                for k, v in tensors.items()
                if k not in opt_tensors
            }
            cfg = train_config_from_dict(card["train_config"])
            model = build_model(cfg.model, cfg.rotations, cfg.seed)
            model.load_state_dict(weights)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
            raise _Mismatch(str(err)) from err
        optimizer_state = (
            optimizer_from_tensors(opt_tensors, card["optimizer"]) if "optimizer" in card else None
        )
        return model.eval(), card, optimizer_state

    def set_aside(self, name: str, partial: bool, reason: str) -> None:
        """Rename a corrupt pair to *.corrupt so it is retrained, and say so (call with the pair lock held)."""
        warnings.warn(
            f"checkpoint {name}{' (partial)' if partial else ''} is corrupt ({reason}); it will be retrained",
            stacklevel=3,
        )
        for p in reversed(self.paths(name, partial)):
            if p.exists():
                os.replace(p, p.with_name(p.name + ".corrupt"))

    def load(self, name: str) -> Checkpoint | None:
        """The finished checkpoint called name (the user's store first, then the shipped), or None."""
        got = self.read(name)
        if got is not None:
            model, card, _ = got
            weights_path, card_path = self.paths(name)
            return Checkpoint(model, Card(card, card_path), weights_path)
        if self.shipped:
            return CheckpointStore(SHIPPED_STORE).load(name)
        return None

    def load_file(self, card_path: str | Path) -> Checkpoint:
        """Load a finished checkpoint from its card's path (any store folder)."""
        card_path = Path(card_path)
        store = CheckpointStore(card_path.parent)
        name = card_path.name.removesuffix(".json")
        ckpt = store.load(name)
        if ckpt is None:
            raise RotvizError(f"checkpoint {card_path} is missing or corrupt")
        return ckpt

    def resume_state(self, name: str) -> tuple[RotationNet, TrainState, dict] | None:
        """Model, TrainState and card of an interrupted run, or None."""
        got = self.read(name, partial=True)
        if got is None:
            return None
        model, card, opt = got
        return model, TrainState(card["epochs_done"], opt, Card(card).history), card

    def cards(self) -> list[Card]:
        """Cards of all finished checkpoints, newest first; an edited or damaged card is left out, with a warning."""
        out, seen = [], set()
        for p in (p for folder in self.folders() for p in sorted(folder.glob("*.json"))):
            if p.name.endswith(".partial.json") or p.name in seen:
                continue
            try:
                card = json.loads(p.read_text())
                check_card(card)
            except OSError:
                continue  # removed or set aside meanwhile
            except ValueError as err:
                warnings.warn(f"{p}: {err}; not listed", stacklevel=2)
                continue
            if "key" in card and "train_config" in card:
                seen.add(p.name)
                out.append(Card(card, p))
        return sorted(out, key=lambda c: c.saved, reverse=True)


def cards_table(cards: list[Card]) -> pd.DataFrame:
    """One row per checkpoint: its recipe, test rotation accuracy (%) trained and random, images."""
    rows = []
    for c in cards:
        acc_t, acc_r = c.test_accuracy("trained"), c.test_accuracy("initial")
        rows.append(
            {
                "checkpoint": c.name,
                "store": c.origin,
                **c.recipe.columns(),
                "epochs": c.epochs_done,
                "train images": c.n_train_images,
                "test images": c.n_test_images,
                "accuracy trained (%)": None if acc_t is None else round(100 * acc_t, 1),
                "accuracy random (%)": None if acc_r is None else round(100 * acc_r, 1),
                "study recipe": "yes" if c.recipe.is_study() else "no",
                "precise BN": "yes" if c.precise_bn else "no",
                "weights": c.weights_dtype,
                "saved": c.saved,
            }
        )
    return pd.DataFrame(rows).set_index("checkpoint") if rows else pd.DataFrame()


def load_checkpoint(ref: str | Path, store: CheckpointStore | None = None) -> Checkpoint:
    """A finished checkpoint by name (as ``python -m rotviz checkpoints`` lists it) or by path
    to its card (.json) or weights (.safetensors); names are looked up in store (default: the
    user's store and the shipped networks)."""
    path = Path(ref)
    if path.suffix in (".json", ".safetensors") or path.parent != Path("."):
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            raise RotvizError(f"checkpoint {ref}: no card {card_path} beside it")
        return CheckpointStore(card_path.parent).load_file(card_path)
    store = store or default_store()
    ckpt = store.load(str(ref))
    if ckpt is None:
        names = ", ".join(c.name for c in store.cards()) or "none"
        raise RotvizError(f"no checkpoint called {ref!r} in {store.describe()} (it has: {names})")
    return ckpt
