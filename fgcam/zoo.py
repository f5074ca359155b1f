"""Models beyond the paper's VGG16-BN: the bundled real ImageNet MobileNets, ImageNet sample photos, torchvision.

Real MobileNets (bundled in ``fgcam/weights/real-imagenet``, see its README)
-------------------------------------------------------------------------------
MobileNet V1 0.75 at 192 px and MobileNet V2 1.0 at 224 px, converted from TensorFlow's quantized releases to plain
``torch.nn`` modules (Apache-2.0, from google-coral/test_data; ``LICENSE-Apache-2.0.txt`` in that folder).  The
package ships them: ``fgcam.models.load("mobilenet_v1_0.75_192")`` works offline, with no environment variable.
The folder holds, per model, a JSON spec (the ordered layers with their ``torch.nn`` arguments; ``"Residual"``
means ``y = x + Sequential(*body)(x)``; the input size and preprocessing) and its ``state_dict`` split into
safetensors shards, some tensors themselves split in row blocks (``weights.split_tensors``), plus
``imagenet_labels.txt`` (1001 labels: logit ``i`` is line ``i``, line 0 is ``background``), 13 photos
(``photos/*.png``, attributions in ``photos/COPYRIGHT``) and ``validation.json`` (the converted models' recorded
top-5 on each photo).  ``$FGCAM_REAL_MODELS`` may name another folder of the same layout; nothing needs it.

* :func:`load_real` loads a bundled model by name; :func:`load_spec` builds one from any folder of that format, in
  eval mode: ``nn.Sequential(features=..., classifier=...)``.  Nothing is unpickled: the spec is JSON, the
  weights are safetensors, and only ``torch.nn`` classes (and :class:`Residual`) are built.
* :func:`preprocess_photo`: RGB, resized as a whole with PIL's bilinear filter (no crop), ``(pixel - 128) / 128``.
* :func:`labels`, :func:`photos`, :func:`validation`, :func:`real_models_folder`.

For explanations: the CAM layer is the last module of ``features`` (a ``ReLU6``: ``features.58``, 768 x 6 x 6 for
V1; ``features.51``, 1280 x 7 x 7 for V2).  The first conv follows a ``ZeroPad2d``; it gets the z^B rule with the
same image-global ``(min, max)`` bounds as VGG (fgcam's default ``zb_bounds="image"``), the bounds being padded
like the image (see :mod:`fgcam.propagation`).  Depthwise convs get z+ per group, ``ReLU6`` passes the relevance,
``ZeroPad2d`` crops it, and V2's :class:`Residual` additions split it in proportion to the summands
(:mod:`fgcam.canonizers`).

ImageNet sample photos (not shipped)
------------------------------------
:func:`imagenet_samples_folder` finds a folder of ImageNet photos named ``<synset>_<name>.JPEG`` (one per class,
as in the public repository EliSchwartz/imagenet-sample-images): ``$FGCAM_IMAGENET_SAMPLES``, else
``../shared/imagenet-sample-images`` beside the checkout if it exists.  ImageNet's terms do not allow shipping
them.  :func:`imagenet_samples` lists ``(path, ImageNet-1k class id)`` pairs.

torchvision models
------------------
:func:`load_torchvision` returns ``resnet18``, ``resnet50`` or ``mobilenet_v2`` with their ImageNet weights,
read from the torch hub cache (``torch.hub.get_dir()/checkpoints/<file name of the weights' URL>``) with
``torch.load(weights_only=True)``; nothing is downloaded.  They take the usual ImageNet normalisation
(:data:`fgcam.imagenet.IMAGENET_MEAN`, ``IMAGENET_STD``) and output 1000 logits.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .imagenet import MissingResourceError

__all__ = ["Residual", "REAL_MODELS", "REAL_MODELS_DIR", "TORCHVISION_MODELS", "real_models_folder", "load_spec",
           "load_real", "preprocess_photo", "labels", "photos", "validation", "IMAGENET_SAMPLES_ENV",
           "imagenet_samples_folder", "imagenet_samples", "torchvision_weights_path", "load_torchvision"]

#: The bundled real ImageNet models (``fgcam/weights/real-imagenet``).
REAL_MODELS = ("mobilenet_v1_0.75_192", "mobilenet_v2_1.0_224")
#: Where the package keeps them, with their labels, photos, licence and ``validation.json``.
REAL_MODELS_DIR = Path(__file__).resolve().parent / "weights" / "real-imagenet"
#: The environment variable naming the folder of ImageNet sample photos.
IMAGENET_SAMPLES_ENV = "FGCAM_IMAGENET_SAMPLES"


class Residual(nn.Module):
    """``y = x + body(x)``, the residual block of the real-imagenet MobileNet V2 (the README's 6-line class)."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def real_models_folder(default: str | Path | None = None) -> Path | None:
    """The folder of real models: ``$FGCAM_REAL_MODELS`` if set, else ``default``, else the bundled
    :data:`REAL_MODELS_DIR`; None if that folder does not exist."""
    folder = Path(os.environ.get("FGCAM_REAL_MODELS") or default or REAL_MODELS_DIR)
    return folder if folder.is_dir() else None


def load_real(name: str) -> nn.Module:
    """Bundled real ImageNet model ``name`` (one of :data:`REAL_MODELS`), in eval mode on the CPU.

    Read from :func:`real_models_folder` (the package's copy unless ``$FGCAM_REAL_MODELS`` names another folder).
    It takes ``[B, 3, H, W]`` images preprocessed by :func:`preprocess_photo` (``(pixel - 128) / 128``) and
    returns 1001 logits named by :func:`labels` (``0`` is ``background``; logit ``i`` is ImageNet-1k class
    ``i - 1``).  ``fgcam.models.card(name)`` is its JSON spec (input size, preprocessing, source, licence).
    """
    if name not in REAL_MODELS:
        raise ValueError(f"unknown real ImageNet model {name!r}; valid: {', '.join(REAL_MODELS)}")
    folder = real_models_folder()
    if folder is None:
        raise MissingResourceError(f"the real-model folder is missing: FGCAM_REAL_MODELS="
                                   f"{os.environ.get('FGCAM_REAL_MODELS')!r}, bundled copy {REAL_MODELS_DIR}")
    return load_spec(folder, name)[0]


def _build(entries: list[dict], where: str) -> list[nn.Module]:
    layers = []
    for i, e in enumerate(entries):
        kind = e.get("type")
        if kind == "Residual":
            layers.append(Residual(*_build(e.get("body", []), f"{where}.{i}.body")))
            continue
        cls = getattr(nn, str(kind), None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"spec entry {where}.{i}: unknown layer type {kind!r} (expected a torch.nn module or "
                             "'Residual')")
        layers.append(cls(**e.get("args", {})))
    return layers


def load_spec(folder: str | Path, name: str) -> tuple[nn.Module, dict]:
    """Build model ``name`` of ``folder`` (``<name>.json`` + safetensors shards); returns ``(model, spec)``.

    The model is ``nn.Sequential(features=..., classifier=...)`` in eval mode, float32, on the CPU; its state dict
    is loaded strictly (every key present, no other).  Tensors split in row blocks are concatenated as
    ``spec["weights"]["split_tensors"]`` says.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / f"{name}.json"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.json") if p.name != "validation.json")
        raise MissingResourceError(f"no model spec {path} (models in {folder}: {', '.join(have) or 'none'})")
    spec = json.loads(path.read_text())
    model = nn.Sequential(OrderedDict(features=nn.Sequential(*_build(spec["features"], "features")),
                                      classifier=nn.Sequential(*_build(spec["classifier"], "classifier"))))
    state: dict[str, torch.Tensor] = {}
    for file in spec["weights"]["files"]:
        shard = folder / file
        if not shard.is_file():
            raise MissingResourceError(f"weights shard {shard} of {name} is missing")
        state.update(load_file(str(shard)))
    for key, parts in spec["weights"].get("split_tensors", {}).items():
        state[key] = torch.cat([state.pop(p) for p in parts], dim=0)
    model.load_state_dict(state, strict=True)
    return model.eval(), spec


def preprocess_photo(path, spec: dict) -> torch.Tensor:
    """A photo (a path or a PIL image) as the model expects it: ``[1, 3, H, W]`` float32, ``(pixel - mean) / std``
    (128 and 128).

    RGB, resized as a whole to the spec's input size with PIL's bilinear filter (no crop), as in the README.
    """
    from PIL import Image

    _, _, h, w = spec["input"]["shape"]
    mean = torch.tensor(spec["input"].get("pixel_mean", [128.0] * 3)).view(3, 1, 1)
    std = torch.tensor(spec["input"].get("pixel_std", [128.0] * 3)).view(3, 1, 1)
    if isinstance(path, Image.Image):
        pixels = np.asarray(path.convert("RGB").resize((w, h), Image.BILINEAR))
    else:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()
    return ((x - mean) / std)[None]


def labels(folder: str | Path | None = None) -> list[str]:
    """The 1001 labels of ``folder/imagenet_labels.txt`` (index 0 is ``background``; default: the bundled folder)."""
    return (Path(folder or REAL_MODELS_DIR) / "imagenet_labels.txt").read_text().splitlines()


def photos(folder: str | Path | None = None) -> list[Path]:
    """The photos of ``folder/photos``, sorted by name (default: the 13 bundled photos)."""
    return sorted((Path(folder or REAL_MODELS_DIR) / "photos").glob("*.png"))


def validation(folder: str | Path | None, name: str) -> dict[str, list[int]]:
    """``{photo file name: top-5 logit indices of the float PyTorch model}`` from ``validation.json``."""
    rows = json.loads((Path(folder or REAL_MODELS_DIR) / "validation.json").read_text())[name]["rows"]
    return {row["photo"]: [e["index"] for e in row["ours_top5"]] for row in rows}


# -- ImageNet sample photos (read from a folder; never shipped) --------------------------------------------

def _default_samples_folder() -> Path:
    """``../shared/imagenet-sample-images`` beside the checkout (the checkout holds the ``fgcam`` package)."""
    return Path(__file__).resolve().parents[2] / "shared" / "imagenet-sample-images"


def imagenet_samples_folder(required: bool = False) -> Path | None:
    """The folder of ImageNet sample photos: ``$FGCAM_IMAGENET_SAMPLES``, else ``../shared/imagenet-sample-images``
    beside the checkout.  None when there is none, or, with ``required=True``, a
    :class:`~fgcam.imagenet.MissingResourceError` that says what to set.  A variable naming a folder that does
    not exist is always an error (a typo should not silently fall back)."""
    value = os.environ.get(IMAGENET_SAMPLES_ENV)
    if value:
        folder = Path(value)
        if not folder.is_dir():
            raise MissingResourceError(f"{IMAGENET_SAMPLES_ENV}={value}: no such folder")
        return folder
    folder = _default_samples_folder()
    if folder.is_dir():
        return folder
    if required:
        raise MissingResourceError(
            f"no ImageNet sample photos: set {IMAGENET_SAMPLES_ENV} to a folder of <synset>_<name>.JPEG photos "
            f"(e.g. a clone of github.com/EliSchwartz/imagenet-sample-images); the default {folder} does not exist")
    return None


def imagenet_samples(folder: str | Path | None = None) -> list[tuple[Path, int]]:
    """``(path, ImageNet-1k class id)`` of every photo in ``folder`` (default: :func:`imagenet_samples_folder`),
    in class order.  The listing is :func:`fgcam.real.scan_photos` without decoding the images: the class id is
    the synset's line in the folder's ``synsets.txt``, else in the list shipped with fgcam (logit ``id + 1`` of the
    bundled MobileNets); misnamed and unknown-synset files are reported together in one
    :class:`fgcam.real.BadPhotosError`, and a missing folder is a ``FileNotFoundError`` naming the variable."""
    from fgcam import real

    return [(p.path, p.class_index) for p in real.scan_photos(folder, check=False)]


# -- torchvision --------------------------------------------------------------------------------------------

#: Name -> (torchvision builder, weights enum class name, weights member).
TORCHVISION_MODELS = {
    "resnet18": ("resnet18", "ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet50": ("resnet50", "ResNet50_Weights", "IMAGENET1K_V1"),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", "IMAGENET1K_V1"),
}


def _weights(name: str):
    import torchvision

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision model {name!r}; valid: {', '.join(TORCHVISION_MODELS)}")
    builder, enum, member = TORCHVISION_MODELS[name]
    return getattr(torchvision.models, builder), getattr(getattr(torchvision.models, enum), member)


def torchvision_weights_path(name: str) -> Path:
    """Where the weights of ``name`` are expected: ``torch.hub.get_dir()/checkpoints/<file of the weights URL>``."""
    _, weights = _weights(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_torchvision(name: str) -> nn.Module:
    """torchvision's ``resnet18``, ``resnet50`` or ``mobilenet_v2`` with ImageNet weights (``IMAGENET1K_V1``),
    in eval mode on the CPU, from the local torch hub cache only.

    The ``.pth`` file is read with ``torch.load(..., weights_only=True)`` (no code from the file runs).  A missing
    file raises :class:`fgcam.imagenet.MissingResourceError` (a ``RuntimeError``) naming the file, the folder to
    put it in and the URL to get it from.
    """
    build, weights = _weights(name)
    path = torchvision_weights_path(name)
    if not path.is_file():
        raise MissingResourceError(
            f"{name} ImageNet weights not found: {path}.\nDownload {weights.url}\nand put the file, named "
            f"{path.name}, in the folder {path.parent}\n(that folder is torch.hub.get_dir()/checkpoints; set "
            "TORCH_HOME to use another one). fgcam does not download it.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):        # no random initialisation: every tensor comes from the checkpoint
        model = build(weights=None)
    model.load_state_dict(state, assign=True)
    return model.eval()
