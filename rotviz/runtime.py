"""Runtime choices (device, precision, compilation): what a run asked for, resolved once.

A ``RunConfig`` is what the user asked (``--device auto --amp auto``); ``Runtime`` is that
request resolved on this machine (``cuda:0``, bfloat16). Entry points resolve once with
``as_runtime`` and pass the ``Runtime`` down; ``as_runtime`` returns a ``Runtime`` unchanged,
so nothing below resolves the same device twice. None of this changes a checkpoint's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from rotviz import distributed
from rotviz.errors import RotvizError

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class RunConfig:
    """How a run executes (speed, not the recipe): not part of the checkpoint hash, recorded in the card.

    device: auto, cpu or cuda. amp: auto (bf16 on CUDA where supported, else off), bf16,
    fp16 (CUDA only, with a gradient scaler) or off. compile: torch.compile the model,
    falling back to eager with one warning where it fails. sync_bn: SyncBatchNorm across
    ranks of a torchrun job (CUDA only); by default BatchNorm statistics are per rank.
    """

    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise RotvizError(f"--amp {self.amp!r}: choose one of {', '.join(AMP_MODES)}")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda"):
            raise RotvizError(f"--device {self.device!r}: choose auto, cpu or cuda")

    def card(self, device: torch.device) -> dict[str, Any]:
        """What the card records: the requested knobs, the device used and the resolved precision."""
        dtype = resolve_amp(self.amp, device)
        return {
            **asdict(self),
            "device_used": str(device),
            "amp_used": "off" if dtype is None else str(dtype).removeprefix("torch."),
        }


@dataclass(frozen=True)
class Runtime:
    """A RunConfig resolved on this machine: the device and autocast dtype every step uses."""

    config: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None

    def card(self) -> dict[str, Any]:
        """What a checkpoint card records of the run."""
        return self.config.card(self.device)


RuntimeLike = str | torch.device | RunConfig | Runtime


def resolve_device(device: str | torch.device | RunConfig = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU; under torchrun, CUDA means this rank's cuda:LOCAL_RANK."""
    if isinstance(device, RunConfig):
        device = device.device
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RotvizError("--device cuda: no CUDA device is visible; use --device cpu or auto")
        return torch.device(
            "cuda", distributed.env_world()[2] if distributed.is_distributed() else 0
        )
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp on this device (None: full float32)."""
    if amp == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if amp == "fp16" and device.type != "cuda":
        raise RotvizError("--amp fp16 needs CUDA; on CPU use --amp bf16 or off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def as_runtime(run: RuntimeLike = "auto") -> Runtime:
    """Resolve a device name, torch.device or RunConfig once; a Runtime is returned as it is."""
    if isinstance(run, Runtime):
        return run
    if isinstance(run, RunConfig):
        config = run
        device = resolve_device(run)
    else:
        device = resolve_device(run)
        config = RunConfig(device=device.type if isinstance(run, torch.device) else str(run))
    return Runtime(config, device, resolve_amp(config.amp, device))
