"""Data-parallel runs under PyTorch's own launcher, ``torchrun``: rank, world, collectives.

``torchrun --nproc-per-node N -m rotviz COMMAND`` starts N processes with WORLD_SIZE, RANK
and LOCAL_RANK set; ``session()`` joins them into one process group (NCCL on CUDA, gloo
on CPU) with a timeout on every collective. Outside torchrun every helper here is a no-op
for a world of one, so the same code runs single-process. Rank 0 alone writes files;
sharded work splits whole batches of images across ranks, so every image is computed in
exactly the batch a single process would use and gathered results are bit-identical.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rotviz.errors import RotvizError

T = TypeVar("T")

# Seconds a collective may wait for the slowest rank (rank 0 building a large preprocessing
# cache is the longest wait); past it the job fails instead of hanging.
DEFAULT_TIMEOUT_S = 1800


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) outside it."""
    try:
        return (
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as err:
        raise RotvizError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from err


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes files and prints results."""
    return rank() == 0


def rank_prefix() -> str:
    """``"rank N: "`` inside a torchrun job of several ranks, else empty (for error lines)."""
    r, world, _ = env_world()
    return f"rank {r}: " if world > 1 else ""


def timeout_s() -> int:
    """Collective timeout in seconds: $ROTVIZ_DIST_TIMEOUT, default 1800."""
    return int(os.environ.get("ROTVIZ_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def backend_for(device: str) -> str:
    """NCCL when the job trains on CUDA, gloo on CPU."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_cuda and dist.is_nccl_available() else "gloo"


def init(device: str = "auto") -> bool:
    """Join the torchrun process group if WORLD_SIZE > 1; returns whether this is a multi-rank job."""
    _, world, local = env_world()
    if world <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s()))
    return True


def _terminate(signum: int, _frame: Any) -> None:
    # torchrun stops the surviving ranks with SIGTERM; raising lets atomic writes delete their
    # temporary file instead of leaving it in the store.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[None]:
    """Run one command as a rank of a torchrun job (or plainly outside one).

    Inside a multi-rank job: joins the process group, silences stdout of ranks other than 0
    (rank 0 prints the results once), turns SIGTERM into a clean exit, and reports any
    failure as one line ``rank N: <cause>`` on stderr before leaving with exit code 1.
    RotvizError passes through (the CLI prints it; ``rank_prefix()`` names the rank).
    """
    if not init(device):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    stdout = sys.stdout
    devnull = None
    if not is_main():
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed in finally
        sys.stdout = devnull
    try:
        yield
    except (RotvizError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        print(f"{rank_prefix()}{type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        sys.stdout = stdout
        if devnull is not None:
            devnull.close()
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op single-process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the others wait, then run it (load)."""
    if not is_distributed():
        yield
        return
    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's value of a picklable object, on every rank."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's object, in rank order (a list of one single-process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of t over ranks, in place (t on the device the backend uses)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sync_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them before each forward, but the last forward of training leaves each
    rank with its own update; after this every rank evaluates exactly the saved model.
    """
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b, src=0)


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of n items split into contiguous parts, the first n % parts one larger."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def rank_slice(n: int, r: int | None = None, world: int | None = None) -> slice:
    """The contiguous share of n items (e.g. the images of one global batch) that rank r takes."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    sizes = split_sizes(n, world)
    start = sum(sizes[:r])
    return slice(start, start + sizes[r])


def shard_batches(n: int, batch_size: int) -> list[slice]:
    """The batches of range(n) (in steps of batch_size) that this rank computes: batch b -> rank b % world."""
    batches = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return batches[rank() :: world_size()]


def gather_batches(local: Sequence[T], n_batches: int) -> list[T]:
    """Per-batch results of shard_batches from all ranks, back in batch order (every rank gets them)."""
    if not is_distributed():
        return list(local)
    parts = all_gather(list(local))
    world = len(parts)
    return [parts[b % world][b // world] for b in range(n_batches)]
