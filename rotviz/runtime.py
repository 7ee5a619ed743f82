"""Runtime choices (device, precision, compilation): what a run asked for, resolved once.

A ``RunConfig`` is what the user asked (``--device auto --amp auto``); ``Runtime`` is that
request resolved on this machine (``cuda:0``, bfloat16). Entry points resolve once with
``as_runtime`` and pass the ``Runtime`` down; ``as_runtime`` returns a ``Runtime`` unchanged,
so nothing below resolves the same device twice. Of all this only the resolved training
precision is part of a checkpoint's name.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rotviz import distributed
from rotviz.errors import RotvizError

AMP_MODES = ("auto", "bf16", "fp16", "off")
PRECISIONS = ("float32", "bfloat16", "float16")

# Architectures whose training step bf16 autocast speeds up on a CPU with native bf16: one
# interleaved run of bench/train_throughput.py --precision on a 2-core AVX512-BF16/AMX Xeon
# gave six_layer 2.0-2.5x; MobileNetV2 1.0x and EfficientNet-b0 0.6-0.8x (depthwise
# convolutions gain nothing in bf16 there), so auto keeps those in float32.
CPU_BF16_FASTER = frozenset({"six_layer"})


@dataclass(frozen=True)
class RunConfig:
    """How a run executes (speed, not the recipe), recorded in the card; only the training
    precision it resolves to is part of the checkpoint hash.

    device: auto, cpu or cuda. amp: auto (bf16 on CUDA where supported; on a CPU with native
    bf16 for the architectures it speeds up, CPU_BF16_FASTER; else off), bf16, fp16 (CUDA
    only, with a gradient scaler) or off. compile: torch.compile the model,
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

    def card(self, device: torch.device, model: str | None = None) -> dict[str, Any]:
        """What the card records: the requested knobs, the device used and the resolved precision."""
        dtype = resolve_amp(self.amp, device, model)
        return {
            **asdict(self),
            "device_used": str(device),
            "amp_used": "off" if dtype is None else precision_name(dtype),
        }


@dataclass(frozen=True)
class Runtime:
    """A RunConfig resolved on this machine: the device and autocast dtype every step uses."""

    config: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None  # for work of no one architecture (the probe's head)

    def training_dtype(self, model: str) -> torch.dtype | None:
        """The autocast dtype of training this architecture (None: float32)."""
        return resolve_amp(self.config.amp, self.device, model)

    def precision(self, model: str) -> str:
        """The training precision of this architecture, as the store keys it."""
        return precision_name(self.training_dtype(model))

    def served_precisions(self, model: str) -> tuple[str, ...]:
        """Precisions of a finished network this run accepts, its own first: --amp auto takes
        any (the card says which it got); an explicit --amp only its own."""
        own = self.precision(model)
        return preferring(own) if self.config.amp == "auto" else (own,)

    def precision_choice(self, model: str) -> str:
        """The training precision in words, with why --amp auto chose it."""
        dtype = self.training_dtype(model)
        said = "float32" if dtype is None else f"{precision_name(dtype)} autocast"
        if self.config.amp != "auto" or self.device.type != "cpu":
            return f"{said} (--amp {self.config.amp})"
        if dtype is not None:
            return f"{said} (--amp auto: this CPU has native bf16 and {model} trains faster in it)"
        why = (
            f"{model} trains no faster in bf16 on a CPU"
            if cpu_has_native_bf16()
            else "this CPU has no native bf16"
        )
        return f"{said} (--amp auto: {why})"

    def card(self, model: str | None = None) -> dict[str, Any]:
        """What a checkpoint card records of the run."""
        return self.config.card(self.device, model)


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


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16), not by
    emulation, which is slower than float32."""
    try:
        flags = torch._C._cpu._get_cpu_capability()  # private, hence the fallback below
        return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return False
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def preferring(precision: str) -> tuple[str, ...]:
    """Every precision, the given one first."""
    return (precision, *(p for p in PRECISIONS if p != precision))


def precision_name(dtype: torch.dtype | None) -> str:
    """float32 (no autocast), bfloat16 or float16."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def resolve_amp(amp: str, device: torch.device, model: str | None = None) -> torch.dtype | None:
    """The autocast dtype for --amp on this device and architecture (None: full float32)."""
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        cpu_bf16 = model in CPU_BF16_FASTER and cpu_has_native_bf16()
        return torch.bfloat16 if cpu_bf16 else None
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
