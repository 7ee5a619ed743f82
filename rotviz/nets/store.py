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

The shipped folder is only read: a damaged shipped network is reported and not used, never
renamed. A checkpoint given by path (``load_checkpoint("DIR/net.safetensors")``) is the
user's file: it is read and nothing else, wherever it lies; one that cannot be read raises
``UnreadableCheckpoint`` naming the file and what is wrong with it.
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


def checkpoint_key(
    data: DataConfig, train: TrainConfig, fingerprint: str, precision: str = "float32"
) -> str:
    """The store key: data identity (no local paths), training recipe, dataset content and
    training precision (a float32 key is hashed as before precision was part of it)."""
    if precision == "float32":
        return stable_hash(data.identity(), train, fingerprint)
    return stable_hash(data.identity(), train, fingerprint, {"precision": precision})


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
    """A pair that cannot be read as one checkpoint (yet, or at all); path: the file at fault."""

    def __init__(self, reason: str, path: Path):
        super().__init__(reason)
        self.path = path


class UnreadableCheckpoint(RotvizError):
    """A checkpoint file given by path that cannot be read; the message names the file and the fault."""

    exit_code = 1


def safetensors_problem(blob: bytes) -> str | None:
    """Why blob is not a whole safetensors file (empty, truncated, another format), or None."""
    if not blob:
        return "empty file"
    if len(blob) < 9 or blob[8:9] != b"{":
        if blob[:4] == b"PK\x03\x04":
            return "not a safetensors file (a zip archive, as torch.save writes; rotviz never unpickles)"
        if blob[:1] == b"\x80":
            return "not a safetensors file (a pickle; rotviz never unpickles)"
        if len(blob) < 9:
            return f"truncated or not a safetensors file (only {len(blob)} bytes)"
        return "not a safetensors file (no safetensors header at its start)"
    header_len = int.from_bytes(blob[:8], "little")
    if 8 + header_len > len(blob):
        return f"truncated ({len(blob)} bytes, shorter than its own header)"
    try:
        header = json.loads(blob[8 : 8 + header_len])
        end = max(
            (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "not a safetensors file (its header is not a safetensors header)"
    if len(blob) < 8 + header_len + end:
        return f"truncated ({len(blob)} of {8 + header_len + end} bytes)"
    return None


def read_pair(weights_path: Path, card_path: Path) -> tuple[RotationNet, dict, dict | None] | None:
    """(model, card, optimizer_state) of one weights/card pair, None if neither file exists, or
    _Mismatch saying which file is at fault and why. Takes no lock and writes nothing."""
    try:
        card_text = card_path.read_text()
    except FileNotFoundError:
        if weights_path.exists():
            raise _Mismatch(
                f"no card {card_path.name} beside it (a checkpoint is the .safetensors weights "
                "and the .json card written with them)",
                weights_path,
            ) from None
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise _Mismatch(f"the card cannot be read ({err})", card_path) from err
    try:
        card = json.loads(card_text)
    except ValueError as err:
        raise _Mismatch(f"the card is not JSON ({err})", card_path) from err
    try:
        check_card(card)
    except ValueError as err:
        raise _Mismatch(str(err), card_path) from err
    try:
        blob = weights_path.read_bytes()
    except FileNotFoundError:
        raise _Mismatch(f"no weights {weights_path.name} beside the card", card_path) from None
    except OSError as err:
        raise _Mismatch(f"the weights cannot be read ({err})", weights_path) from err
    if hashlib.sha256(blob).hexdigest() != card.get("weights_sha256"):
        problem = safetensors_problem(blob)
        raise _Mismatch(
            problem or f"the weights do not match the SHA-256 in the card {card_path.name}",
            weights_path,
        )
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        problem = safetensors_problem(blob) or f"not a readable safetensors file ({err})"
        raise _Mismatch(problem, weights_path) from err
    try:
        cfg = train_config_from_dict(card["train_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise _Mismatch(
            f"the card has no valid train_config ({err!r}): not a rotviz checkpoint card",
            card_path,
        ) from err
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    weights = {
        k: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k not in opt_tensors
    }
    try:
        model = build_model(cfg.model, cfg.rotations, cfg.seed)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = next((line for line in lines if not line.startswith("Error(s) in loading")), "")
        raise _Mismatch(
            f"the weights do not fit the network the card describes ({cfg.model}, "
            f"{len(cfg.rotations)} rotations): {first[:200] or type(err).__name__}",
            weights_path,
        ) from err
    optimizer_state = (
        optimizer_from_tensors(opt_tensors, card["optimizer"]) if "optimizer" in card else None
    )
    return model.eval(), card, optimizer_state


def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """The weights and card paths of a checkpoint given by either file; UnreadableCheckpoint
    when path is missing, a folder or neither a .safetensors nor a .json file."""
    path = Path(path)
    if not path.exists():
        raise UnreadableCheckpoint(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise UnreadableCheckpoint(
            f"checkpoint {path}: a folder, not a checkpoint (give its .safetensors weights or "
            ".json card)"
        )
    if path.suffix not in (".safetensors", ".json"):
        raise UnreadableCheckpoint(
            f"checkpoint {path}: not a checkpoint file (give its .safetensors weights or .json card)"
        )
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def read_checkpoint_file(path: str | Path) -> Checkpoint:
    """The finished checkpoint whose weights or card is at path, wherever it lies. Reads only:
    nothing in its folder is renamed, locked or written; a pair that cannot be read raises
    UnreadableCheckpoint naming the file and what is wrong with it."""
    weights_path, card_path = checkpoint_files(path)
    try:
        got = read_pair(weights_path, card_path)
    except _Mismatch as err:
        raise UnreadableCheckpoint(f"checkpoint {err.path}: {err}") from None
    if got is None:  # removed between the two looks
        raise UnreadableCheckpoint(f"checkpoint {path}: no such file")
    model, card, _ = got
    return Checkpoint(model, Card(card, card_path), weights_path)


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

    @property
    def read_only(self) -> bool:
        """The shipped folder: read, never locked, renamed or written."""
        return self.root.resolve() == SHIPPED_STORE.resolve()

    def read(
        self, name: str, partial: bool = False
    ) -> tuple[RotationNet, dict, dict | None] | None:
        """(model, card, optimizer_state) or None if absent; a corrupt pair is reported and set
        aside (in the shipped folder: reported and not used)."""
        try:
            return read_pair(*self.paths(name, partial))
        except _Mismatch as err:
            if self.read_only:
                warnings.warn(
                    f"shipped checkpoint {name} is damaged ({err.path.name}: {err}); not used "
                    "(reinstall rotviz to restore it)",
                    stacklevel=2,
                )
                return None
            # maybe a write in progress: decide only while no writer holds the pair
        with self.pair_lock(name):
            try:
                return read_pair(*self.paths(name, partial))
            except _Mismatch as err:
                self.set_aside(name, partial, f"{err.path.name}: {err}")
                return None

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

    def load_file(self, path: str | Path) -> Checkpoint:
        """A finished checkpoint of this store's folder given by path (weights or card). Read
        only: a pair that does not match is read again once no writer holds it, then reported
        (UnreadableCheckpoint), never set aside."""
        _, card_path = checkpoint_files(path)
        try:
            return read_checkpoint_file(path)
        except UnreadableCheckpoint:
            if self.read_only:
                raise
        with self.pair_lock(card_path.name.removesuffix(".json")):  # maybe a write in progress
            return read_checkpoint_file(path)

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
    user's store and the shipped networks). A path is only read, never renamed, locked or
    written (inside the store's own folder, a write in progress is waited for); one that
    cannot be read raises UnreadableCheckpoint naming the file and the fault."""
    path = Path(ref)
    store = store or default_store()
    if path.suffix in (".json", ".safetensors") or path.parent != Path("."):
        if path.exists() and path.parent.resolve() == store.root.resolve():
            return store.load_file(path)
        return read_checkpoint_file(path)
    ckpt = store.load(str(ref))
    if ckpt is None:
        names = ", ".join(c.name for c in store.cards()) or "none"
        raise RotvizError(f"no checkpoint called {ref!r} in {store.describe()} (it has: {names})")
    return ckpt
