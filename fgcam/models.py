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
* ``"mobilenet_v1_0.75_192"`` and ``"mobilenet_v2_1.0_224"``: real ImageNet MobileNets that ship with the
  package (``fgcam/weights/real-imagenet``, Apache-2.0; see ``fgcam.zoo``).  They load offline, with no
  environment variable; ``labels(name)`` names their 1001 logits, ``preprocess(name, image)`` prepares a photo,
  ``card(name)`` is their JSON spec.
* ``"vgg16_bn"``: the ImageNet model, via ``fgcam.imagenet.load_vgg16_bn``.
* ``"resnet18"``, ``"resnet50"``, ``"mobilenet_v2"``: torchvision's ImageNet models from the local torch hub
  cache, via ``fgcam.zoo.load_torchvision``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHAPES_NAME = "shapes-vgg16bn"
REAL_NAMES = ("mobilenet_v1_0.75_192", "mobilenet_v2_1.0_224")  # bundled: fgcam/weights/real-imagenet
TORCHVISION_NAMES = ("vgg16_bn", "resnet18", "resnet50", "mobilenet_v2")  # from the torch hub cache
NAMES = (SHAPES_NAME, *REAL_NAMES, *TORCHVISION_NAMES)
TRAIN_COMMAND = "python -m fgcam.train_shapes"

# torchvision's vgg16_bn cfg "D" is [64,64,M,128,128,M,256x3,M,512x3,M,512x3,M];
# same structure, narrower.
SHAPES_WIDTHS = (8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64)
SHAPES_HIDDEN = 256
SHAPES_POOL = (1, 1)  # global average pool over the 4x4 map (see build_shapes_vgg16bn)
SHAPES_DROPOUT = 0.1
MAXPOOL_INDICES = (6, 13, 23, 33, 43)


def make_layers(cfg, batch_norm: bool = True) -> nn.Sequential:
    """VGG's feature stack from a cfg list, in torchvision's ``vgg.make_layers`` layout and creation order.

    Each width ``v`` adds ``Conv2d(in, v, 3, padding=1)``, ``BatchNorm2d(v)`` (when ``batch_norm``) and
    ``ReLU(inplace=True)``; ``"M"`` adds ``MaxPool2d(2, 2)``.  Written here so that ``import fgcam`` does not import
    torchvision (about 5 s per process, most of it ``torch._dynamo`` pulled in by ``torchvision.ops``);
    ``tests/test_models.py`` checks it against torchvision's, module by module and seed for seed.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


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
    """The JSON model card of a bundled model: for ``shapes-vgg16bn`` the training script's card (classes, input
    size, mean/std, seeds, accuracy, ...); for the real MobileNets their spec (input shape, preprocessing, source,
    licence, layers)."""
    _check_name(name)
    if name in REAL_NAMES:
        from fgcam import zoo

        return json.loads((zoo.REAL_MODELS_DIR / f"{name}.json").read_text())
    if name != SHAPES_NAME:
        raise ValueError(f"model {name!r} has no bundled card; bundled: {', '.join((SHAPES_NAME, *REAL_NAMES))}")
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"model card {path} is missing; create it with `{TRAIN_COMMAND}`")
    return json.loads(path.read_text())


def labels(name: str) -> list[str]:
    """The names of model ``name``'s outputs, in logit order.

    ``shapes-vgg16bn``: its 8 shape classes; the MobileNets: 1001 labels, ``"background"`` first (logit ``i`` is
    ImageNet-1k class ``i - 1``); the torchvision models: the 1000 ImageNet-1k categories of torchvision's weights
    metadata (no download).
    """
    _check_name(name)
    if name == SHAPES_NAME:
        return list(card(name)["classes"])
    if name in REAL_NAMES:
        from fgcam import zoo

        return zoo.labels(zoo.REAL_MODELS_DIR)
    import torchvision

    return list(torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.meta["categories"])


def preprocess(name: str, image) -> torch.Tensor:
    """A photo (a path or a PIL image) as model ``name`` takes it: ``[1, 3, H, W]`` float32.

    The MobileNets: RGB, resized as a whole to their input size (192 or 224) with PIL's bilinear filter,
    ``(pixel - 128) / 128`` (their spec).  The torchvision models: the paper's preprocessing
    (``fgcam.imagenet.preprocess``: 224x224, no crop, ImageNet mean/std).  ``shapes-vgg16bn`` takes generated
    images (``fgcam.data.make_shapes``), not photos: a ``ValueError``.
    """
    _check_name(name)
    if name == SHAPES_NAME:
        raise ValueError(f"{SHAPES_NAME} takes generated shapes images (fgcam.data.make_shapes), not photos")
    if name in REAL_NAMES:
        from fgcam import zoo

        return zoo.preprocess_photo(image, card(name))
    from fgcam import imagenet

    if isinstance(image, (str, Path)):
        image = imagenet.load_image(image)
    return imagenet.preprocess(image)[None]


def load(name: str, device=None) -> nn.Module:
    """Build model ``name``, load its weights and return it in eval mode.

    ``"shapes-vgg16bn"`` reads the bundled safetensors file (no pickle); ``"mobilenet_v1_0.75_192"`` and
    ``"mobilenet_v2_1.0_224"`` the bundled real MobileNets (``fgcam.zoo.load_real``, offline);
    ``"vgg16_bn"`` is delegated to ``fgcam.imagenet.load_vgg16_bn``; ``"resnet18"``, ``"resnet50"`` and
    ``"mobilenet_v2"`` to ``fgcam.zoo.load_torchvision`` (ImageNet weights from the local torch hub cache).
    """
    _check_name(name)
    if name in REAL_NAMES:
        from fgcam.zoo import load_real

        return load_real(name).to(device or "cpu")
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
