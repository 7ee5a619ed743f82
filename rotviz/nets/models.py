"""Model registry: every network is a RotationNet with ``features``, ``embed`` and ``head``.

Names: ``six_layer`` (ours), ``mobilenet_v2`` (torchvision), ``efficientnet_b0`` and any
other timm model name. Weights always start random from the seed; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rotviz.errors import RotvizError


class RotationNet(nn.Module):
    """A backbone with a global-pooled embedding and a linear rotation head.

    features(x): (N, C, h, w) last feature map; embed(x): (N, D) pooled features (the
    study's "embedding layer"); head: Linear(D, m) whose logits are the "rotation layer".
    """

    def __init__(
        self, name: str, backbone: nn.Module, num_features: int, rotations: int | Sequence[int]
    ):
        super().__init__()
        self.name = name
        # logit i means "rotated rotations[i] x 90 degrees": saliency and evaluation read the
        # order from here, so a network trained on e.g. (2, 0) is never explained as (0, 1)
        rotations = range(rotations) if isinstance(rotations, int) else rotations
        self.rotations = tuple(int(k) for k in rotations)
        self.num_rotations = len(self.rotations)
        self.backbone = backbone
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(num_features, self.num_rotations)

    @property
    def num_features(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map, (N, C, h, w)."""
        if hasattr(self.backbone, "forward_features"):
            return self.backbone.forward_features(x)
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding before the head, (N, D)."""
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation logits, (N, m)."""
        return self.head(self.embed(x))

    @property
    def gradcam_layer(self) -> nn.Module:
        """The module whose output is the last feature map (Grad-CAM's layer)."""
        if hasattr(self.backbone, "conv_head") and hasattr(self.backbone, "bn2"):
            return self.backbone.bn2  # timm EfficientNet: blocks() wraps conv_head+bn2 anew
        return self.blocks()[-2]

    def blocks(self) -> list[nn.Module]:
        """Ordered stages from the input to the head (head last), for cascading randomisation."""
        bb = self.backbone
        if hasattr(bb, "blocks") and hasattr(bb, "conv_stem"):  # timm EfficientNet family
            stages = [nn.Sequential(bb.conv_stem, bb.bn1), *bb.blocks]
            if hasattr(bb, "conv_head"):
                stages.append(nn.Sequential(bb.conv_head, bb.bn2))
        elif isinstance(bb, nn.Sequential):
            stages = list(bb)
        elif hasattr(bb, "features"):
            stages = list(bb.features)
        else:
            stages = [bb]
        return [*stages, self.head]


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def six_layer_backbone() -> tuple[nn.Module, int]:
    """Six Conv-BN-ReLU blocks, no residuals (~107k parameters with a 4-way head)."""
    widths = [16, 32, 32, 64, 64, 64]
    strides = [2, 1, 2, 1, 2, 2]
    layers, cin = [], 3
    for cout, stride in zip(widths, strides, strict=True):
        layers.append(conv_bn_relu(cin, cout, stride))
        cin = cout
    return nn.Sequential(*layers), cin


def mobilenet_v2_backbone() -> tuple[nn.Module, int]:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    return net.features, net.last_channel


def timm_backbone(name: str) -> tuple[nn.Module, int]:
    import timm

    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise RotvizError(
            f"unknown model {name!r}: use six_layer, efficientnet_b0, mobilenet_v2 or a timm model name"
        ) from err
    return net, net.num_features


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "six_layer": six_layer_backbone,
    "mobilenet_v2": mobilenet_v2_backbone,
    "efficientnet_b0": lambda: timm_backbone("efficientnet_b0"),
}
STUDY_MODELS = ("efficientnet_b0", "mobilenet_v2", "six_layer")


def build_model(name: str, rotations: int | Sequence[int] = 4, seed: int = 0) -> RotationNet:
    """A freshly initialised RotationNet; the same (name, number of rotations, seed) gives the same weights.

    rotations: the rotation of each logit, in order (e.g. (2, 0): logit 0 means 180 degrees),
    or a count m for rotations 0..m-1.
    """
    make = BACKBONES.get(name) or (lambda: timm_backbone(name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, num_features = make()
        model = RotationNet(name, backbone, num_features, rotations)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
