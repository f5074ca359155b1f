"""The paper's ImageNet setup: torchvision VGG16-BN and a reader for the ILSVRC2012 validation set.

Nothing here downloads data.  The user supplies the ILSVRC2012 validation images, and, in one of the
official formats, their class labels and bounding boxes.  The model weights come from the local torch
hub cache, and are downloaded into it only when downloads are allowed (see :func:`load_vgg16_bn`).

The paper's setup
-----------------
* Model: ``torchvision.models.vgg16_bn`` with the ``IMAGENET1K_V1`` weights, in eval mode.
* Preprocessing (:func:`preprocess`): resize to 224x224 **without** cropping (bilinear, antialiased,
  aspect ratio not kept), scale to [0, 1], normalise with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
* Faithfulness metrics: 2,000 images drawn at random from a seed (:func:`sample_faithfulness`).
* Localisation: 500 images drawn at random from a seed among those with exactly **one** bounding box
  covering at most 50 % of the image area (:func:`sample_localisation`).

Class labels
------------
A label is the PyTorch / torchvision class index: the position of the image's WNID (e.g.
``n01751748``) in the **sorted** list of the 1,000 ILSVRC2012 WNIDs.  This is *not* the devkit's
``ILSVRC2012_ID`` (1..1000 in ``meta.mat`` order), which is a different ordering.

The WNID of each image is read from its bounding-box annotation (every object of a validation image
carries the image's WNID in ``<object><name>``), or, for the devkit ground-truth file, through the
devkit's ``meta.mat`` (ID -> WNID).  See :class:`ImageNetVal` for the accepted files.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "VGG16_BN_URL",
    "MissingResourceError",
    "ImageNetFormatError",
    "vgg16_bn_weights_path",
    "downloads_allowed",
    "download_vgg16_bn_weights",
    "load_vgg16_bn",
    "preprocess",
    "load_image",
    "box_mask",
    "ImageNetVal",
    "sample_faithfulness",
    "localisation_candidates",
    "sample_localisation",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224
VGG16_BN_URL = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
"""torchvision's ``VGG16_BN_Weights.IMAGENET1K_V1.url`` (``tests/test_models.py`` checks that they agree).  Typed
here because importing torchvision costs about 5 s per process; this module imports it only where it is used."""

_IMAGE_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_WNID_RE = re.compile(r"^n\d{8}$")


class MissingResourceError(RuntimeError):
    """A file or folder the paper profile needs (weights, images, labels, annotations) is missing."""


class ImageNetFormatError(ValueError):
    """A dataset file exists but is not in the expected format; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def vgg16_bn_weights_path() -> Path:
    """Where the VGG16-BN weights are expected: ``torch.hub.get_dir()/checkpoints/vgg16_bn-6c64b313.pth``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``), or whatever
    ``torch.hub.set_dir`` set.  This is the same place torchvision itself caches the file.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG16_BN_URL)


def downloads_allowed() -> bool:
    """False when the environment variable ``FGCAM_OFFLINE`` is ``1``/``true``/``yes``/``on``."""
    return os.environ.get("FGCAM_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}


def _missing_weights_message(path: Path, reason: str) -> str:
    return (
        f"VGG16-BN ImageNet weights not found: {path} ({reason}).\n"
        f"Download {VGG16_BN_URL}\n"
        f"and put the file, named {path.name}, in the folder {path.parent}\n"
        f"(that folder is torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another one)."
    )


def download_vgg16_bn_weights(path: Path | None = None, timeout_s: float = 30.0) -> Path:
    """Download :data:`VGG16_BN_URL` to ``path`` (default :func:`vgg16_bn_weights_path`), hash-checked.

    Ignores ``FGCAM_OFFLINE``.  Any network or hash error becomes a :class:`MissingResourceError` that says
    where to put the file by hand.  Returns the path.
    """
    path = Path(path) if path is not None else vgg16_bn_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # urllib has no timeout of its own here: never hang for long
    try:
        hash_prefix = re.search(r"-([a-f0-9]+)\.", path.name).group(1)
        torch.hub.download_url_to_file(VGG16_BN_URL, str(path), hash_prefix=hash_prefix)
    except (OSError, RuntimeError) as err:  # URLError, timeouts, DNS errors are OSErrors; bad hash is RuntimeError
        raise MissingResourceError(_missing_weights_message(path, f"download failed: {err}")) from err
    finally:
        socket.setdefaulttimeout(old_timeout)
    return path


def load_vgg16_bn(device: str | torch.device | None = None) -> torch.nn.Module:
    """torchvision's ``vgg16_bn`` with the ``IMAGENET1K_V1`` weights, in eval mode, on ``device``.

    The weights are read from :func:`vgg16_bn_weights_path`.  If that file is absent it is downloaded
    from :data:`VGG16_BN_URL` (with a 30 s network timeout and torchvision's hash check), unless
    ``FGCAM_OFFLINE=1`` forbids downloads.  Either way, a missing file ends in a
    :class:`MissingResourceError` that names the file, the folder to put it in and the URL.

    The ``.pth`` file is a pickle; it is read with ``torch.load(..., weights_only=True)``, PyTorch's safe
    loader, which only rebuilds tensors and plain containers and never runs code from the file.

    ``device=None`` means CPU.  The model outputs ``[N, 1000]`` logits for ``[N, 3, 224, 224]`` inputs
    prepared by :func:`preprocess`.
    """
    path = vgg16_bn_weights_path()
    if not path.is_file():
        if not downloads_allowed():
            raise MissingResourceError(_missing_weights_message(path, "FGCAM_OFFLINE=1 forbids downloading it"))
        download_vgg16_bn_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MissingResourceError(
            f"Could not read the VGG16-BN weights {path}: {err}. Delete the file and download it again "
            f"from {VGG16_BN_URL}."
        ) from err
    import torchvision

    with torch.device("meta"):  # no random initialisation: every tensor is replaced by the checkpoint's
        model = torchvision.models.vgg16_bn(weights=None)
    model.load_state_dict(state, assign=True)  # strict: every key must be present and no other
    return model.eval().to(device or "cpu")


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file with PIL and convert it to RGB (grayscale, CMYK, palette... all become RGB)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def preprocess(image: Image.Image) -> torch.Tensor:
    """The paper's preprocessing: PIL image -> normalised float tensor ``[3, 224, 224]``.

    Exactly ``Resize((224, 224))`` (bilinear, antialiased; no crop, aspect ratio not kept), then
    ``ToTensor()`` (scale to [0, 1]), then ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.  Nothing else.
    The image is converted to RGB first.
    """
    import torchvision.transforms.functional as TF

    image = image.convert("RGB")
    x = TF.resize(image, [IMAGE_SIZE, IMAGE_SIZE], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.normalize(TF.to_tensor(x), IMAGENET_MEAN, IMAGENET_STD)


def box_mask(box, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Boolean ``[size, size]`` mask of a box ``(x1, y1, x2, y2)`` given in pixel units of that grid.

    Pixel ``(row r, column c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` lies in
    ``[x1, x2] x [y1, y2]``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    cols = (centres >= x1) & (centres <= x2)
    rows = (centres >= y1) & (centres <= y2)
    return rows[:, None] & cols[None, :]


# --------------------------------------------------------------------------------------------------
# Annotation files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Annotation:
    width: int | None  # None when the format does not give the size (LOC_val_solution.csv)
    height: int | None
    wnid: str
    boxes: tuple  # ((xmin, ymin, xmax, ymax), ...) in original pixels


def _parse_xml(path: Path) -> _Annotation:
    """One ImageNet bounding-box XML (PASCAL-VOC-like schema)."""
    try:
        root = ET.parse(path).getroot()
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
        objects = root.findall("object")
        if not objects:
            raise ValueError("no <object>")
        wnid = objects[0].findtext("name").strip()
        boxes = tuple(
            tuple(float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")) for o in objects
        )
    except (ET.ParseError, TypeError, ValueError, AttributeError) as err:
        raise ImageNetFormatError(
            f"Malformed ImageNet annotation {path}: {err}. Expected <annotation><size><width/><height/></size>"
            "<object><name>nXXXXXXXX</name><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>...</annotation>"
        ) from err
    if not _WNID_RE.match(wnid) or width <= 0 or height <= 0:
        raise ImageNetFormatError(f"Malformed ImageNet annotation {path}: WNID {wnid!r}, size {width}x{height}")
    return _Annotation(width, height, wnid, boxes)


def _read_loc_solution(path: Path) -> dict[str, _Annotation]:
    """Kaggle ``LOC_val_solution.csv``: ``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax ...``."""
    out = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            if [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise ValueError(f"header {header!r} is not 'ImageId,PredictionString'")
            for row in reader:
                if not row:
                    continue
                fields = row[1].split()
                if not fields or len(fields) % 5:
                    raise ValueError(f"row {row!r}: PredictionString is not groups of 'wnid xmin ymin xmax ymax'")
                groups = [fields[i : i + 5] for i in range(0, len(fields), 5)]
                boxes = tuple(tuple(float(v) for v in g[1:]) for g in groups)
                out[row[0].strip()] = _Annotation(None, None, groups[0][0], boxes)
    except (OSError, ValueError, IndexError, StopIteration) as err:
        raise ImageNetFormatError(f"Malformed LOC_val_solution.csv file {path}: {err}") from err
    return out


def _read_synsets(path: Path) -> list[str]:
    """Sorted WNIDs from a file whose lines start with a WNID (``LOC_synset_mapping.txt``, caffe ``synsets.txt``)."""
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or not all(_WNID_RE.match(w) for w in wnids):
        raise ImageNetFormatError(
            f"Malformed synset list {path}: expected 1000 distinct lines 'nXXXXXXXX description', "
            f"got {len(wnids)} lines ({len(set(wnids))} distinct)"
        )
    return sorted(wnids)


def _read_meta_mat(path: Path) -> dict[int, str]:
    """Devkit ``meta.mat``: ILSVRC2012_ID -> WNID for the 1000 leaf classes (needs scipy)."""
    try:
        import scipy.io
    except ImportError as err:
        raise MissingResourceError(f"Reading the devkit file {path} needs scipy (pip install scipy).") from err
    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
        table = {
            int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0
        }
    except Exception as err:
        raise ImageNetFormatError(f"Malformed devkit meta.mat {path}: {err}") from err
    if sorted(table) != list(range(1, 1001)):
        raise ImageNetFormatError(f"Malformed devkit meta.mat {path}: expected leaf IDs 1..1000")
    return table


def _read_annotations(annotations: Path, files: list[Path]) -> list[_Annotation]:
    """The annotation of each image in ``files``, from an XML folder or ``LOC_val_solution.csv``."""
    if annotations.is_dir():
        out = []
        for f in files:
            xml = annotations / (f.stem + ".xml")
            if not xml.is_file():
                raise MissingResourceError(f"Missing bounding-box annotation {xml} for image {f}")
            out.append(_parse_xml(xml))
        return out
    table = _read_loc_solution(annotations)
    out = []
    for f in files:
        if f.stem not in table:
            raise MissingResourceError(f"No row for {f.stem} in {annotations} (image {f})")
        with Image.open(f) as img:  # reads the header only: the CSV has no image sizes
            width, height = img.size
        out.append(_Annotation(width, height, table[f.stem].wnid, table[f.stem].boxes))
    return out


def _read_label_file(path: Path, files: list[Path], numbers: list[int]):
    """Per-image labels: returns ``("index", {number: index})`` for ``val.txt`` or ``("devkit", {number: id})``."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if lines and all(len(parts) == 2 for parts in lines):  # val.txt: 'ILSVRC2012_val_00000001.JPEG 65'
        table = {}
        for name, value in lines:
            m = re.match(r"^ILSVRC2012_val_(\d{8})", name)
            if not m or not value.isdigit() or not 0 <= int(value) < 1000:
                raise ImageNetFormatError(f"Malformed label file {path}: line {name} {value}")
            table[int(m.group(1))] = int(value)
        missing = [f.name for f, n in zip(files, numbers) if n not in table]
        if missing:
            raise ImageNetFormatError(f"Label file {path} has no line for {len(missing)} image(s), e.g. {missing[0]}")
        return "index", table
    if not all(len(parts) == 1 and parts[0].isdigit() and 1 <= int(parts[0]) <= 1000 for parts in lines):
        raise ImageNetFormatError(
            f"Malformed label file {path}: expected ILSVRC2012_validation_ground_truth.txt (one ID 1..1000 per line) "
            "or val.txt ('ILSVRC2012_val_00000001.JPEG <index 0..999>' per line)"
        )
    if len(lines) < max(numbers):
        raise ImageNetFormatError(
            f"Label file {path} has {len(lines)} lines but the image folder holds "
            f"ILSVRC2012_val_{max(numbers):08d}.JPEG; "
            "line i must hold the label of image i (the full file has 50000 lines)"
        )
    return "devkit", {n: int(lines[n - 1][0]) for n in numbers}


def _check_one_to_one(path: Path, ids: list[int], wnids: list[str], files: list[Path]) -> None:
    """Devkit IDs (from ``path``) and annotation WNIDs of the same images must correspond one to one."""
    id_of: dict[str, int] = {}
    wnid_of: dict[int, str] = {}
    for gt, w, f in zip(ids, wnids, files):
        if wnid_of.setdefault(gt, w) != w or id_of.setdefault(w, gt) != gt:
            raise ImageNetFormatError(
                f"Label file {path} gives ID {gt} to {f.name} (annotation: {w}), which contradicts other images "
                f"(ID {gt} = {wnid_of[gt]}, {w} = ID {id_of[w]}): the label file does not match the annotations"
            )


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


class ImageNetVal:
    """The ILSVRC2012 validation images in ``root``, with labels and bounding boxes.

    Arguments (paths):

    * ``root`` -- folder holding ``ILSVRC2012_val_00000001.JPEG`` ... (all or any subset of the 50,000;
      other files are ignored).  Index ``i`` of the dataset is the ``i``-th of these files by name.
    * ``annotations`` -- the bounding boxes, either the folder of official XMLs
      (``ILSVRC2012_val_00000001.xml`` ..., from ``ILSVRC2012_bbox_val_v3.tgz``; one per image, or an
      error names the missing one) or Kaggle's ``LOC_val_solution.csv``.  ``None``: use ``root`` if it
      holds the XMLs, otherwise there are no boxes (then ``labels`` must be given).
    * ``labels`` -- optional per-image label file: the devkit's ``ILSVRC2012_validation_ground_truth.txt``
      (line ``i`` = ``ILSVRC2012_ID`` of image ``i``), or caffe-style ``val.txt``
      (``ILSVRC2012_val_00000001.JPEG 65``, already PyTorch class indices).
    * ``synsets`` -- optional list of the 1000 WNIDs: Kaggle ``LOC_synset_mapping.txt``
      (``n01440764 tench, Tinca tinca``) or any file with one WNID first on each line.

    How labels are resolved (``self.labels``, PyTorch class indices, see the module docstring):

    1. Each image's WNID comes from its annotation (the first ``<object><name>``).  With a devkit
       ground-truth file, the devkit ID is turned into a WNID by ``meta.mat`` found next to that file
       (``ILSVRC2012_devkit_t12/data/meta.mat``); without ``meta.mat`` the ground-truth file is only
       checked for consistency with the annotations (one WNID per devkit ID), since devkit IDs are not
       PyTorch indices.  Two sources that disagree raise :class:`ImageNetFormatError`.
    2. The class list is ``synsets`` if given, else the 1000 leaf WNIDs of ``meta.mat``, else the WNIDs
       found in the annotations -- only if there are exactly 1000 of them (the full validation set).
    3. label = position of the WNID in the sorted class list.  A ``val.txt`` gives it directly.

    Boxes are kept in original pixels (``self.boxes[i]``, list of ``(xmin, ymin, xmax, ymax)``) and
    rescaled to the 224x224 image by :meth:`boxes224` (x times 224/width, y times 224/height, where
    width/height come from the XML's ``<size>``, or the JPEG header for ``LOC_val_solution.csv``).

    All files are read and checked when the dataset is created (a few seconds for 50,000 XMLs);
    images are decoded only by :meth:`load`.
    """

    def __init__(self, root, labels=None, annotations=None, synsets=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingResourceError(f"ImageNet validation image folder not found: {self.root}")
        named = sorted((p for p in self.root.iterdir() if _IMAGE_RE.match(p.name)), key=lambda p: p.name)
        if not named:
            raise MissingResourceError(
                f"No ILSVRC2012_val_*.JPEG images in {self.root} (expected ILSVRC2012_val_00000001.JPEG ...)"
            )
        self.files: list[Path] = named
        self.numbers: list[int] = [int(_IMAGE_RE.match(p.name).group(1)) for p in named]
        n = len(named)

        for what, p in (("label file", labels), ("synset list", synsets), ("annotations", annotations)):
            if p is not None and not Path(p).exists():
                raise MissingResourceError(f"ImageNet {what} not found: {p}")
        if annotations is None and any(self.root.glob("ILSVRC2012_val_*.xml")):
            annotations = self.root
        if annotations is None and labels is None:
            raise MissingResourceError(
                f"No labels for the images in {self.root}: give the bounding-box XML folder (annotations=) "
                "and/or a label file (labels=)"
            )

        # Annotations: WNID, size and boxes per image.
        anns = None if annotations is None else _read_annotations(Path(annotations), named)
        self.annotations = None if annotations is None else Path(annotations)
        self.sizes: list[tuple[int, int]] | None = None if anns is None else [(a.width, a.height) for a in anns]
        self.boxes: list[tuple] | None = None if anns is None else [a.boxes for a in anns]
        wnids: list[str] | None = None if anns is None else [a.wnid for a in anns]

        # Per-image label file.
        direct = None  # PyTorch indices given directly by val.txt
        classes = _read_synsets(Path(synsets)) if synsets is not None else None
        if labels is not None:
            labels = Path(labels)
            kind, table = _read_label_file(labels, named, self.numbers)
            if kind == "index":
                direct = [table[k] for k in self.numbers]
            else:
                meta = labels.parent / "meta.mat"
                if meta.is_file():
                    id_to_wnid = _read_meta_mat(meta)
                    from_devkit = [id_to_wnid[table[k]] for k in self.numbers]
                    classes = classes or sorted(id_to_wnid.values())
                    if wnids is not None:
                        for f, a, b in zip(named, wnids, from_devkit):
                            if a != b:
                                raise ImageNetFormatError(
                                    f"{labels} (via {meta}) says {b} for {f.name}, its annotation {a}"
                                )
                    wnids = from_devkit
                elif wnids is not None:
                    _check_one_to_one(labels, [table[k] for k in self.numbers], wnids, named)
                else:
                    raise MissingResourceError(
                        f"{labels} holds devkit ILSVRC2012_IDs, which are not PyTorch class indices; put the devkit's "
                        f"meta.mat next to it ({meta}) or give the bounding-box XMLs (annotations=)"
                    )
        self.label_file = labels

        # Class list and labels.
        if wnids is not None and classes is None:
            found = sorted(set(wnids))
            if len(found) != 1000:
                raise MissingResourceError(
                    f"The annotations of the images in {self.root} name {len(found)} classes, not 1000, so the class "
                    "order cannot be derived from them: give the synset list (synsets=LOC_synset_mapping.txt)"
                )
            classes = found
        self.classes: list[str] | None = classes
        self.wnids = wnids
        if wnids is not None:
            index = {w: k for k, w in enumerate(classes)}
            unknown = [w for w in wnids if w not in index]
            if unknown:
                raise ImageNetFormatError(f"WNID {unknown[0]} of the annotations is not in the synset list {synsets}")
            from_wnids = [index[w] for w in wnids]
            if direct is not None and direct != from_wnids:
                i = next(i for i in range(n) if direct[i] != from_wnids[i])
                raise ImageNetFormatError(
                    f"Label file {labels} gives {named[i].name} class {direct[i]}, its annotation says "
                    f"{wnids[i]} = class {from_wnids[i]}"
                )
            direct = from_wnids
        self.labels = np.asarray(direct, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def has_boxes(self) -> bool:
        """Whether bounding boxes are known (an annotation folder or CSV was given)."""
        return self.boxes is not None

    def _need_boxes(self):
        if self.boxes is None:
            raise MissingResourceError(
                f"No bounding boxes for the images in {self.root}: give the XML folder or LOC_val_solution.csv"
            )

    def box_area_fractions(self, i: int) -> list[float]:
        """Area of each box of image ``i`` divided by the image area (same at any scale)."""
        self._need_boxes()
        w, h = self.sizes[i]
        return [(x2 - x1) * (y2 - y1) / (w * h) for x1, y1, x2, y2 in self.boxes[i]]

    def boxes224(self, i: int) -> torch.Tensor:
        """All boxes of image ``i`` as a float ``[k, 4]`` tensor ``(x1, y1, x2, y2)`` on the 224x224 image."""
        self._need_boxes()
        w, h = self.sizes[i]
        scale = torch.tensor([IMAGE_SIZE / w, IMAGE_SIZE / h] * 2, dtype=torch.float64)
        return (torch.tensor(self.boxes[i], dtype=torch.float64) * scale).float()

    def load(self, indices) -> dict:
        """Decode and preprocess images ``indices`` (dataset positions).

        Returns a dict of CPU tensors: ``images`` ``[N, 3, 224, 224]`` float, ``labels`` ``[N]`` int64,
        ``indices`` ``[N]`` int64, ``paths`` (list of str), ``classes`` (the sorted WNIDs, label k =
        ``classes[k]``; None with a ``val.txt`` alone); and, when boxes are known, ``boxes`` ``[N, 4]``
        float (the **first** box, at 224 scale) and ``masks`` ``[N, 224, 224]`` bool (:func:`box_mask`
        of that box).  2,000 images take about 1.2 GB as float32.
        """
        indices = [int(i) for i in indices]
        out = {
            "images": torch.stack([preprocess(load_image(self.files[i])) for i in indices])
            if indices
            else torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE),
            "labels": torch.as_tensor(self.labels[indices], dtype=torch.int64),
            "indices": torch.tensor(indices, dtype=torch.int64),
            "paths": [str(self.files[i]) for i in indices],
            "classes": self.classes,
        }
        if self.has_boxes():
            boxes = [self.boxes224(i)[0] for i in indices]
            out["boxes"] = torch.stack(boxes) if boxes else torch.empty(0, 4)
            empty = torch.empty(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
            out["masks"] = torch.stack([box_mask(b) for b in boxes]) if boxes else empty
        return out


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def _sample(candidates: list[int], n: int, seed: int, what: str) -> list[int]:
    if n > len(candidates):
        raise ValueError(f"Asked for {n} {what} images but only {len(candidates)} are eligible")
    order = np.random.default_rng(seed).permutation(len(candidates))[:n]
    return sorted(candidates[k] for k in order)


def sample_faithfulness(dataset: ImageNetVal, n: int = 2000, seed: int = 0) -> list[int]:
    """``n`` dataset indices drawn uniformly without replacement, from ``seed``; returned sorted.

    Draw: ``numpy.random.default_rng(seed).permutation(len(dataset))[:n]``.  The same seed and the same
    image folder give the same indices.  Raises ``ValueError`` when ``n > len(dataset)`` (never returns
    fewer than asked, so a run is either the paper's size or fails).
    """
    return _sample(list(range(len(dataset))), n, seed, "faithfulness")


def localisation_candidates(dataset: ImageNetVal) -> list[int]:
    """Indices of images with exactly one box whose area is at most 50 % of the image area."""
    return [i for i in range(len(dataset)) if len(fr := dataset.box_area_fractions(i)) == 1 and fr[0] <= 0.5]


def sample_localisation(dataset: ImageNetVal, n: int = 500, seed: int = 0) -> list[int]:
    """``n`` indices drawn from :func:`localisation_candidates`, from ``seed``; returned sorted.

    Box area is ``(xmax - xmin) * (ymax - ymin)`` in the annotation's pixels, compared with
    ``width * height``; exactly 50 % is kept.  Draw:
    ``numpy.random.default_rng(seed).permutation(len(candidates))[:n]``.  Raises ``ValueError`` when fewer
    than ``n`` images are eligible.
    """
    return _sample(localisation_candidates(dataset), n, seed, "localisation")
