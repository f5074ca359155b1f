"""Models: a small VGG16-BN-layout classifier for Shapes, and a loader by name.

``build_shapes_vgg16bn`` keeps the exact module layout of torchvision's
``vgg16_bn``: ``features`` is an ``nn.Sequential`` with indices 0-43 (13 blocks
of Conv2d 3x3 pad 1 / BatchNorm2d / ReLU(inplace=True), MaxPool2d(2, 2) at
indices 6, 13, 23, 33 and 43), then ``avgpool``, ``torch.flatten(x, 1)`` and a
``classifier`` of Linear/ReLU/Dropout.  Only the channel widths are narrower and
the pooled map is 4x4 (128x128 inputs after five max-pools), so every layer
index used for torchvision's ``vgg16_bn`` means the same layer here.

``load(name)`` returns a ready model in eval mode:

* ``"shapes-vgg16bn"``: the model trained by ``python -m fgcam.train_shapes``,
  read from ``fgcam/weights/shapes-vgg16bn.safetensors`` (never with pickle);
  its card (classes, input size, mean/std, seeds, accuracy, ...) is
  ``card("shapes-vgg16bn")``.
* ``"vgg16_bn"``: the ImageNet model, via ``fgcam.imagenet.load_vgg16_bn``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import make_layers

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHAPES_NAME = "shapes-vgg16bn"
NAMES = (SHAPES_NAME, "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2")
TRAIN_COMMAND = "python -m fgcam.train_shapes"

# torchvision's vgg16_bn cfg "D" is [64,64,M,128,128,M,256x3,M,512x3,M,512x3,M];
# same structure, narrower.
SHAPES_WIDTHS = (8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64)
SHAPES_HIDDEN = 256
SHAPES_POOL = (1, 1)  # global average pool over the 4x4 map (see build_shapes_vgg16bn)
SHAPES_DROPOUT = 0.1
MAXPOOL_INDICES = (6, 13, 23, 33, 43)


def vgg16_cfg(widths) -> list:
    """The vgg16 ``make_layers`` cfg for 13 conv widths (``"M"`` = max-pool)."""
    w = list(widths)
    if len(w) != 13:
        raise ValueError(f"vgg16 has 13 conv layers, got {len(w)} widths")
    return w[0:2] + ["M"] + w[2:4] + ["M"] + w[4:7] + ["M"] + w[7:10] + ["M"] + w[10:13] + ["M"]


class ShapesVGG(nn.Module):
    """VGG with torchvision's attribute names and forward order
    (``features -> avgpool -> torch.flatten(x, 1) -> classifier``)."""

    def __init__(self, features: nn.Sequential, num_classes: int, channels: int,
                 pool=SHAPES_POOL, hidden: int = SHAPES_HIDDEN, dropout: float = SHAPES_DROPOUT):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool[0] * pool[1], hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        # torchvision's VGG initialisation for the convolutions; the Linear layers
        # keep PyTorch's default (torchvision's N(0, 0.01) stalls short trainings)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build_shapes_vgg16bn(num_classes: int = 8, widths=SHAPES_WIDTHS,
                         hidden: int = SHAPES_HIDDEN, pool=SHAPES_POOL) -> ShapesVGG:
    """A randomly initialised VGG16-BN-layout model (see the module docstring).

    ``features`` is exactly torchvision's vgg16_bn layout with the 13 conv
    ``widths``; at 128x128 input it ends in a ``widths[-1]`` x 4 x 4 map.
    ``avgpool`` defaults to a global average pool, ``(1, 1)``: with 4x4 the
    classifier has to learn every shape at every position separately, and in
    short CPU trainings it learned about half as fast.  ``pool=(4, 4)`` gives
    torchvision's exact "avgpool is the identity on the last map" variant.
    """
    features = make_layers(vgg16_cfg(widths), batch_norm=True)
    return ShapesVGG(features, num_classes, channels=list(widths)[-1], pool=tuple(pool), hidden=hidden)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(NAMES)}")


def weights_path(name: str = SHAPES_NAME) -> Path:
    """Path of the safetensors file of a bundled model."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def card(name: str = SHAPES_NAME) -> dict:
    """The JSON model card of a bundled model (written by the training script)."""
    _check_name(name)
    if name != SHAPES_NAME:
        raise ValueError(f"model {name!r} has no bundled card; only {SHAPES_NAME!r} has one")
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"model card {path} is missing; create it with `{TRAIN_COMMAND}`")
    return json.loads(path.read_text())


def load(name: str, device=None) -> nn.Module:
    """Build model ``name``, load its weights and return it in eval mode.

    ``"shapes-vgg16bn"`` reads the bundled safetensors file (no pickle);
    ``"vgg16_bn"`` is delegated to ``fgcam.imagenet.load_vgg16_bn``; ``"resnet18"``, ``"resnet50"`` and
    ``"mobilenet_v2"`` to ``fgcam.zoo.load_torchvision`` (ImageNet weights from the local torch hub cache).
    """
    _check_name(name)
    if name == "vgg16_bn":
        from fgcam.imagenet import load_vgg16_bn

        return load_vgg16_bn(device=device)
    if name in ("resnet18", "resnet50", "mobilenet_v2"):
        from fgcam.zoo import load_torchvision

        return load_torchvision(name).to(device or "cpu")

    from safetensors.torch import load_file

    path = weights_path(name)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} is missing; create it with `{TRAIN_COMMAND}`")
    info = card(name)
    model = build_shapes_vgg16bn(num_classes=len(info["classes"]), widths=info["widths"],
                                 hidden=info["hidden"], pool=info["pool"])
    model.load_state_dict(load_file(str(path)))
    model.eval()
    if device is not None:
        model.to(device)
    return model
