"""The ``real`` profile: real ImageNet photos, real ImageNet CNNs, the paper's layers by resolution, grid composites.

This is the closest this project gets to the paper's setup (VGG16-BN on ILSVRC2012 val) without ImageNet: a folder
of ImageNet photos named ``<synset>_<name>.JPEG`` (for example the 900 photos of ``imagenet-sample-images``, one per
class; never shipped with fgcam) and the two real ImageNet MobileNets of :mod:`fgcam.zoo`.

* :func:`scan_photos` checks every file of the folder before any work starts and raises :class:`BadPhotosError`
  listing each corrupt, empty, non-image or unknown-synset file and why.
* :func:`paper_layer_map` maps the paper's layer names to the modules of any plain-chain CNN **by resolution**,
  computed from the model: ``Layer33``, ``Layer23``, ``Layer13`` are the first activations at 1/16, 1/8 and 1/4 of
  the input resolution, the CAM layer the last module at 1/32 (see the function for the exact rule; VGG16-BN gives
  the paper's ``features.33/23/13`` and ``features.43``).
* :class:`PhotoSource` (faithfulness: AD/AI, insertion/deletion) and :class:`GridSource` (localisation: the grid
  pointing game) are image sources for :func:`fgcam.experiments.evaluate`.

The grid pointing game (Böhle et al. 2021, "Convolutional Dynamic Alignment Networks", GridPG): a composite is a 2x2
grid of four photos of four different classes, each classified correctly by the model on its own, each resized to
one cell.  Each cell's class is explained in turn; the ground truth is the cell, by construction.  The score is the
paper's energy-based pointing game (:func:`fgcam.metrics.energy_pointing_game`) with the cell as the box, and the
share of the map's positive energy that lies in the cell (:func:`fgcam.metrics.positive_energy_share`, no min-max
normalisation).  Chance is 1/4 for both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fgcam import zoo
from fgcam.metrics import default_batch_size

__all__ = ["SAMPLES_ENV", "Photo", "BadPhotosError", "samples_folder", "read_synsets", "scan_photos", "load_photos",
           "paper_layer_map", "PhotoSource", "GridSource", "composite_plan", "make_composites"]

#: Environment variable naming the folder of ImageNet sample photos (the one :mod:`fgcam.zoo` reads).
SAMPLES_ENV = zoo.IMAGENET_SAMPLES_ENV
#: The 1000 ILSVRC-2012 synsets in class order (line i = class i), shipped with fgcam.
SYNSETS_FILE = Path(__file__).resolve().parent / "resources" / "imagenet_synsets.txt"
_NAME = re.compile(r"^(n\d{8})_(.+)\.(jpe?g|png)$", re.IGNORECASE)
_METADATA = {".md", ".json", ".txt"}  # README.md, SHA256SUMS.json, synsets.txt: not photos, ignored


class BadPhotosError(ValueError):
    """Some files of a photo folder cannot be used; ``problems`` is a list of ``(path, why)``."""

    def __init__(self, folder: Path, problems: list[tuple[Path, str]]):
        self.problems = problems
        lines = "\n".join(f"  {p.name}: {why}" for p, why in problems)
        super().__init__(f"{len(problems)} bad file(s) in {folder}:\n{lines}")


@dataclass(frozen=True)
class Photo:
    """One photo: its file, synset, ImageNet class index (0-999) and readable name."""

    path: Path
    synset: str
    class_index: int
    name: str

    @property
    def id(self) -> str:
        return self.path.stem


def samples_folder(folder: str | Path | None = None) -> Path:
    """The photo folder: ``folder``, else :func:`fgcam.zoo.imagenet_samples_folder` (``$FGCAM_IMAGENET_SAMPLES``,
    else ``../shared/imagenet-sample-images`` beside a source checkout).  Raises ``FileNotFoundError`` naming the
    variable when there is none."""
    from fgcam.imagenet import MissingResourceError

    if folder is None:
        try:
            return zoo.imagenet_samples_folder(required=True)
        except MissingResourceError as err:
            raise FileNotFoundError(f"pass --images DIR or set {SAMPLES_ENV}: {err}") from None
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet photo folder {folder} does not exist (from --images or {SAMPLES_ENV})")
    return folder


def read_synsets(folder: str | Path | None = None) -> list[str]:
    """The 1000 synsets in class order: ``folder/synsets.txt`` when it exists, else the list shipped with fgcam."""
    path = Path(folder) / "synsets.txt" if folder is not None else None
    if path is None or not path.is_file():
        path = SYNSETS_FILE
    synsets = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        raise ValueError(f"{path}: expected 1000 distinct synsets, found {len(synsets)} ({len(set(synsets))} distinct)")
    return synsets


def _check_image(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or None."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:  # verify() does not decode: a truncated file fails only here
            img.load()
    except UnidentifiedImageError:
        return "not an image PIL can decode"
    except (OSError, ValueError, SyntaxError) as err:
        return f"corrupt image ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


def scan_photos(folder: str | Path | None = None, classes: Sequence[int] | None = None,
                check: bool = True) -> list[Photo]:
    """Every photo of ``folder`` (see :func:`samples_folder`), sorted by class index, optionally only ``classes``.

    Every file is checked first (``check=True`` decodes each image once): files that are empty, corrupt, not
    images, not named ``<synset>_<name>.<ext>`` or of a synset outside ImageNet-1k are collected and reported
    together in one :class:`BadPhotosError`.  ``README.md``, ``*.json`` and ``*.txt`` files are ignored.
    """
    folder = samples_folder(folder)
    index = {s: i for i, s in enumerate(read_synsets(folder))}
    photos, problems = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in _METADATA:
            continue
        m = _NAME.match(path.name)
        if m is None:
            problems.append((path, "not a photo named <synset>_<name>.JPEG"))
            continue
        synset, name = m.group(1), m.group(2)
        if synset not in index:
            problems.append((path, f"unknown synset {synset} (not one of the 1000 ImageNet-1k classes)"))
            continue
        why = _check_image(path) if check else None
        if why is not None:
            problems.append((path, why))
            continue
        photos.append(Photo(path, synset, index[synset], name.replace("_", " ")))
    if problems:
        raise BadPhotosError(folder, problems)
    if classes is not None:
        wanted = {int(c) for c in classes}
        photos = [p for p in photos if p.class_index in wanted]
    photos.sort(key=lambda p: (p.class_index, p.path.name))
    if not photos:
        raise FileNotFoundError(f"no photos in {folder}" + (" for the classes asked" if classes is not None else ""))
    return photos


def _pixels(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8: RGB (grayscale, palette and CMYK converted), the whole photo resized (bilinear)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def _normalise(pixels: np.ndarray, spec: dict) -> torch.Tensor:
    mean = torch.tensor(spec["input"].get("pixel_mean", [128.0] * 3)).view(3, 1, 1)
    std = torch.tensor(spec["input"].get("pixel_std", [128.0] * 3)).view(3, 1, 1)
    x = torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)
    return (x - mean) / std


def input_size(spec: dict) -> tuple[int, int]:
    _, _, h, w = spec["input"]["shape"]
    return int(h), int(w)


def label_offset(spec: dict) -> int:
    """Logit of ImageNet class ``i`` is ``i + label_offset``: 1 for models with a ``background`` logit at 0."""
    out = spec.get("output", {})
    if "label_offset" in out:
        return int(out["label_offset"])
    return 1 if int(out.get("num_classes", 1000)) == 1001 else 0


def load_photos(photos: Sequence[Photo], spec: dict) -> torch.Tensor:
    """``[N, 3, H, W]`` model inputs: each photo resized as a whole to the model's input size, then normalised
    as the model's spec says (:func:`fgcam.zoo.preprocess_photo` for one photo)."""
    size = input_size(spec)
    return torch.stack([_normalise(_pixels(p.path, size), spec) for p in photos])


# ----------------------------------------------------------------------------------------------------------------
# The paper's layers, by resolution
# ----------------------------------------------------------------------------------------------------------------

_PASS_THROUGH = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.LeakyReLU)
#: Paper layer name -> fraction of the input resolution.
PAPER_RESOLUTIONS = {"Layer33": 16, "Layer23": 8, "Layer13": 4}


def paper_layer_map(model: nn.Module, input_shape: Sequence[int]) -> dict[str, str]:
    """The paper's layer names -> module names of ``model``, computed from its output sizes.

    The paper explains VGG16-BN at ``features.33``, ``features.23`` and ``features.13``: the max-pools that bring
    the resolution to 1/16, 1/8 and 1/4 of the input.  For any chain ``features`` the same places are: the first
    module whose output has exactly ``1/r`` of the input's height and width, followed through the elementwise
    modules directly after it (BatchNorm, ReLU, ReLU6, Dropout, Identity), so that a strided convolution maps to
    the activation after it.  ``"cam"`` is the last module of ``features`` (1/32 for these models: VGG16-BN's
    ``features.43``); ``"Input"`` is ``"input"``.  Raises ``ValueError`` naming the resolution that no module has.
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError(f"{type(model).__name__} has no 'features' sequence: the paper's layers cannot be mapped")
    h, w = int(input_shape[-2]), int(input_shape[-1])
    sizes: list[tuple[str, nn.Module, tuple[int, int]]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: sizes.append((n, mod, tuple(o.shape[-2:]))))
             for name, m in features.named_children()]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            features(torch.zeros(1, int(input_shape[-3]), h, w, dtype=p.dtype, device=p.device))
    finally:
        for hk in hooks:
            hk.remove()
    out = {}
    for layer, r in PAPER_RESOLUTIONS.items():
        if h % r or w % r:
            raise ValueError(f"input size {h}x{w} is not divisible by {r}: no {layer} at 1/{r} resolution")
        first = next((i for i, (_, _, s) in enumerate(sizes) if s == (h // r, w // r)), None)
        if first is None:
            have = sorted({s for _, _, s in sizes}, reverse=True)
            raise ValueError(f"no module of {type(model).__name__}.features outputs {h // r}x{w // r} (1/{r} of "
                             f"{h}x{w}) for {layer}; output sizes: {have}")
        while first + 1 < len(sizes) and isinstance(sizes[first + 1][1], _PASS_THROUGH):
            first += 1
        out[layer] = f"features.{sizes[first][0]}"
    out["Input"] = "input"
    out["cam"] = f"features.{sizes[-1][0]}"
    return out


# ----------------------------------------------------------------------------------------------------------------
# Sources for the runner
# ----------------------------------------------------------------------------------------------------------------


def _order(n_total: int, seed: int) -> list[int]:
    """A fixed permutation of ``range(n_total)`` from ``seed``: the first ``n`` of it are the run's ``n`` photos,
    so a larger ``n`` with the same seed extends a store instead of starting another."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g).tolist()


class PhotoSource:
    """Faithfulness images of the ``real`` profile: ``n`` photos of the folder (a seeded prefix of a fixed
    permutation), labels = the model's logit of their class.  Ids are the file stems."""

    has_masks = False

    def __init__(self, photos: Sequence[Photo], spec: dict, n: int | None, seed: int):
        order = _order(len(photos), seed)
        n = len(photos) if n is None else min(int(n), len(photos))
        self.photos = [photos[i] for i in order[:n]]
        self.spec = spec
        self.offset = label_offset(spec)
        self.ids = [p.id for p in self.photos]
        self.kinds = [frozenset({"faithfulness"})] * len(self.photos)
        self.description = (f"{n} ImageNet photos of {photos[0].path.parent.name} (seeded order, seed {seed}), "
                            f"resized to {input_size(spec)}")

    def load(self, positions: Sequence[int]) -> dict:
        chosen = [self.photos[p] for p in positions]
        labels = torch.tensor([p.class_index + self.offset for p in chosen])
        return {"images": load_photos(chosen, self.spec), "labels": labels, "boxes": None, "masks": None}


def correctly_classified(model: nn.Module, photos: Sequence[Photo], spec: dict,
                         batch_size: int | None = None) -> list[Photo]:
    """The photos whose arg-max logit (on the photo alone) is their class.  ``batch_size`` defaults to
    :func:`fgcam.metrics.default_batch_size` (on the CPU, batches of 64 page-faulted their activations in at every
    pass: screening the 900 ImageNet sample photos took 34 s for MobileNet V1 and 76 s for V2, against 15 s and 25 s;
    the same photos are kept)."""
    if not photos:
        return []
    offset = label_offset(spec)
    p0 = next(model.parameters())
    if batch_size is None:
        batch_size = default_batch_size(model, load_photos(list(photos[:1]), spec).to(p0.device))
    if batch_size < 1:
        raise ValueError(f"correctly_classified: batch_size must be at least 1, got {batch_size}")
    keep = []
    for i in range(0, len(photos), batch_size):
        chunk = list(photos[i:i + batch_size])
        with torch.no_grad():
            pred = model(load_photos(chunk, spec).to(p0.device)).argmax(1).cpu()
        keep += [p for p, k in zip(chunk, pred.tolist()) if k == p.class_index + offset]
    return keep


def composite_plan(candidates: Sequence[Photo], n: int, seed: int) -> list[tuple[Photo, Photo, Photo, Photo]]:
    """``n`` composites of four photos of four distinct classes, drawn from ``candidates``: composite ``k`` is drawn
    with a generator seeded by ``(seed, k)``, so the plan for ``n`` is a prefix of the plan for any larger ``n``.
    Cells are in raster order (top-left, top-right, bottom-left, bottom-right)."""
    by_class: dict[int, list[Photo]] = {}
    for p in candidates:
        by_class.setdefault(p.class_index, []).append(p)
    classes = sorted(by_class)
    if len(classes) < 4:
        raise ValueError(f"a grid composite needs photos of 4 distinct classes; only {len(classes)} available")
    plan = []
    for k in range(int(n)):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + k)
        chosen = torch.randperm(len(classes), generator=g)[:4].tolist()
        cells = []
        for c in chosen:
            pool = by_class[classes[c]]
            cells.append(pool[int(torch.randint(len(pool), (1,), generator=g))])
        plan.append(tuple(cells))
    return plan


def cell_boxes(size: tuple[int, int]) -> torch.Tensor:
    """``[4, 4]`` boxes ``x1, y1, x2, y2`` (half-open) of the 2x2 cells of an image of ``size = (H, W)``."""
    h, w = size
    hh, hw = h // 2, w // 2
    return torch.tensor([[0, 0, hw, hh], [hw, 0, w, hh], [0, hh, hw, h], [hw, hh, w, h]])


def make_composites(plan: Sequence[Sequence[Photo]], spec: dict) -> torch.Tensor:
    """``[N, 3, H, W]`` composites: each photo resized as a whole to its cell (H/2 x W/2, the lower-right cells get
    the remainder of an odd size), pasted in raster order, then normalised as the model's spec says."""
    h, w = input_size(spec)
    boxes = cell_boxes((h, w)).tolist()
    out = []
    for cells in plan:
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        for photo, (x1, y1, x2, y2) in zip(cells, boxes):
            canvas[y1:y2, x1:x2] = _pixels(photo.path, (y2 - y1, x2 - x1))
        out.append(_normalise(canvas, spec))
    return torch.stack(out)


class GridSource:
    """Localisation items of the ``real`` profile: ``n`` 2x2 composites x 4 cells.

    Item ``4k + c`` is composite ``k`` explained for the class of cell ``c``: its ``targets`` (explained logit) and
    ``labels`` are that class's logit, its box is the cell.  The candidates are the photos the model classifies
    correctly on their own.  Ids: ``grid-s{seed}-{k:05d}-c{c}``.
    """

    has_masks = False

    def __init__(self, model: nn.Module, photos: Sequence[Photo], spec: dict, n: int, seed: int):
        self.spec = spec
        self.offset = label_offset(spec)
        candidates = correctly_classified(model, photos, spec)
        self.plan = composite_plan(candidates, n, seed)
        self.boxes = cell_boxes(input_size(spec))
        self.ids = [f"grid-s{seed}-{k:05d}-c{c}" for k in range(len(self.plan)) for c in range(4)]
        self.kinds = [frozenset({"localisation"})] * len(self.ids)
        self.description = (f"{len(self.plan)} 2x2 composites (seed {seed}) of {len(candidates)} photos of "
                            f"{photos[0].path.parent.name} that the model classifies correctly alone; each cell's "
                            "class explained in turn")

    def load(self, positions: Sequence[int]) -> dict:
        ks = sorted({p // 4 for p in positions})
        images = make_composites([self.plan[k] for k in ks], self.spec)
        row = {k: i for i, k in enumerate(ks)}
        idx = torch.tensor([row[p // 4] for p in positions])
        cls = torch.tensor([self.plan[p // 4][p % 4].class_index + self.offset for p in positions])
        return {"images": images[idx], "labels": cls, "targets": cls,
                "boxes": self.boxes[torch.tensor([p % 4 for p in positions])], "masks": None}


class RealSource:
    """The ``real`` profile's items: the faithfulness photos, then the grid items (:class:`PhotoSource` followed by
    :class:`GridSource`; either may be absent).  Photo items have target ``-1`` (the run's target mode: the
    predicted class, as the paper); grid items fix their target to their cell's class."""

    has_masks = False
    positive_share = True

    def __init__(self, photos: PhotoSource | None, grid: GridSource | None):
        self.parts = [p for p in (photos, grid) if p is not None]
        self.ids = [i for p in self.parts for i in p.ids]
        self.kinds = [k for p in self.parts for k in p.kinds]
        self.description = "; ".join(p.description for p in self.parts)

    def load(self, positions: Sequence[int]) -> dict:
        loaded, start = [], 0
        for part in self.parts:
            mine = [p - start for p in positions if start <= p < start + len(part.ids)]
            if mine:
                d = part.load(mine)
                n = len(mine)
                d["targets"] = d.get("targets") if d.get("targets") is not None else torch.full((n,), -1)
                h, w = d["images"].shape[-2:]
                d["boxes"] = d["boxes"] if d.get("boxes") is not None else torch.tensor([[0, 0, w, h]] * n)
                loaded.append(d)
            start += len(part.ids)
        return {k: torch.cat([torch.as_tensor(d[k]) for d in loaded]) for k in ("images", "labels", "targets", "boxes")} \
            | {"masks": None}


#: The real profile's default model: MobileNet V1, a plain chain like VGG.
DEFAULT_MODEL = "mobilenet_v1_0.75_192"
#: Default sizes of the real profile: all photos of the folder for faithfulness, 200 composites.
DEFAULT_COMPOSITES = 200


def load_model(name: str | None = None) -> tuple[nn.Module, dict]:
    """A real ImageNet model by name (:data:`fgcam.zoo.REAL_MODELS`) -> ``(model, spec)``, in eval mode."""
    name = name or DEFAULT_MODEL
    if name not in zoo.REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}; valid: {', '.join(zoo.REAL_MODELS)}")
    folder = zoo.real_models_folder()  # the package's copy unless $FGCAM_REAL_MODELS names another
    if folder is None:
        raise FileNotFoundError(f"the real ImageNet models are missing (FGCAM_REAL_MODELS or {zoo.REAL_MODELS_DIR})")
    model, spec = zoo.load_spec(folder, name)
    model.fgcam_name = name
    return model, spec


def setup(config, model=None, source=None, device="cpu"):
    """The runner's setup for ``--profile real``: ``(model, source, model name, layer map)``."""
    name = config.model or DEFAULT_MODEL
    loaded, spec = load_model(name)
    model = (model if model is not None else loaded).eval().to(device)
    layer_map = paper_layer_map(model, spec["input"]["shape"])
    if source is None:
        photos = scan_photos(config.images)
        n_f = config.n if config.n is not None else len(photos)
        n_l = config.n_localisation if config.n_localisation is not None else (
            config.n if config.n is not None else DEFAULT_COMPOSITES)
        source = RealSource(PhotoSource(photos, spec, n_f, config.seed) if n_f else None,
                            GridSource(model, photos, spec, n_l, config.seed) if n_l else None)
    if isinstance(source, RealSource):
        record_photos(config.out, source)
    return model, source, name, layer_map


def record_photos(out: str | Path, source: RealSource) -> Path:
    """Write ``DIR/photos.sha256`` (``sha256sum`` format, sorted, merged with the lines already there): the bytes of
    every photo the store's rows come from, so a reader can check that another copy of the folder is the same."""
    import hashlib

    used = {p.path for part in source.parts for p in getattr(part, "photos", [])}
    used |= {p.path for part in source.parts for cells in getattr(part, "plan", []) for p in cells}
    path = Path(out) / "photos.sha256"
    lines = set(path.read_text().splitlines()) if path.exists() else set()
    lines |= {f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in used}
    from fgcam.store import _atomic_write

    Path(out).mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "".join(line + "\n" for line in sorted(lines, key=lambda x: x.split("  ", 1)[1])))
    return path


def class_labels(spec: dict) -> list[str]:
    """The model's label per logit (``imagenet_labels.txt`` beside the real models: 1001 with ``background``)."""
    return zoo.labels(zoo.real_models_folder())
