"""Writes a tiny, format-exact ILSVRC2012 validation set into a folder (test fixtures, generated at test time).

Layout written by :func:`make_imagenet_val` under ``root``::

    val/ILSVRC2012_val_00000001.JPEG ... 00000012.JPEG   images of various sizes; RGB, grayscale (L), CMYK
    bbox/ILSVRC2012_val_00000001.xml ...                  bounding boxes, official ImageNet XML schema
    devkit/data/ILSVRC2012_validation_ground_truth.txt    devkit ILSVRC2012_IDs (meta.mat order), line i = image i
    devkit/data/meta.mat                                  only via write_meta_mat() (needs scipy)
    LOC_synset_mapping.txt                                Kaggle: 1000 lines 'nXXXXXXXX description', sorted
    LOC_val_solution.csv                                  Kaggle: 'ImageId,PredictionString'
    val.txt                                               caffe: 'ILSVRC2012_val_00000001.JPEG <index>'

The 1000 WNIDs are made up (plausible ``n0xxxxxxx``); the devkit order is a fixed shuffle of them, so
devkit IDs differ from PyTorch indices, as in the real devkit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# number, width, height, PIL mode, class (PyTorch index), boxes (xmin, ymin, xmax, ymax) in original pixels
SPECS = [
    (1, 500, 375, "RGB", 0, [(111, 108, 441, 286)]),  # 31 % -> eligible (the brief's example XML)
    (2, 320, 240, "RGB", 999, [(10, 10, 100, 100), (150, 120, 300, 230)]),  # two boxes
    (3, 300, 200, "L", 65, [(30, 40, 120, 160)]),  # grayscale, 18 % -> eligible
    (4, 256, 256, "RGB", 65, [(0, 0, 250, 240)]),  # 92 % -> not eligible
    (5, 400, 300, "CMYK", 500, [(50, 60, 150, 200)]),  # CMYK, 12 % -> eligible
    (6, 200, 100, "RGB", 1, [(0, 0, 100, 100)]),  # exactly 50 % -> eligible
    (7, 640, 480, "RGB", 2, [(0, 0, 640, 480)]),  # 100 % -> not eligible
    (8, 333, 500, "L", 3, [(20, 30, 200, 300), (40, 50, 60, 70), (1, 2, 3, 4)]),  # three boxes
    (9, 224, 224, "RGB", 998, [(56, 56, 168, 168)]),  # 25 %, scale 1 -> eligible
    (10, 500, 333, "RGB", 123, [(100, 50, 300, 250)]),  # 24 % -> eligible
    (11, 150, 450, "RGB", 456, [(10, 10, 140, 300)]),  # 56 % -> not eligible
    (12, 375, 500, "RGB", 789, [(20, 40, 180, 220)]),  # 15 % -> eligible
]
ELIGIBLE_NUMBERS = [1, 3, 5, 6, 9, 10, 12]  # exactly one box with area <= 50 %

XML_TEMPLATE = """<annotation>
	<folder>val</folder>
	<filename>{stem}</filename>
	<source>
		<database>ILSVRC_2012</database>
	</source>
	<size>
		<width>{width}</width>
		<height>{height}</height>
		<depth>3</depth>
	</size>
	<segmented>0</segmented>
{objects}</annotation>
"""
OBJECT_TEMPLATE = """	<object>
		<name>{wnid}</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>{0}</xmin>
			<ymin>{1}</ymin>
			<xmax>{2}</xmax>
			<ymax>{3}</ymax>
		</bndbox>
	</object>
"""


def make_wnids() -> list[str]:
    """1000 distinct, sorted, plausible WNIDs ``n0xxxxxxx``."""
    numbers = np.random.default_rng(2012).choice(np.arange(1_000_000, 15_000_000), size=1000, replace=False)
    return sorted(f"n{int(x):08d}" for x in numbers)


@dataclass
class ImageNetFixture:
    root: Path
    val: Path  # JPEG folder
    bbox: Path  # XML folder
    ground_truth: Path  # devkit ILSVRC2012_validation_ground_truth.txt
    synsets: Path  # LOC_synset_mapping.txt
    loc_solution: Path  # LOC_val_solution.csv
    val_txt: Path  # caffe val.txt
    wnids: list[str]  # sorted: PyTorch index k <-> wnids[k]
    devkit_order: list[str]  # devkit ILSVRC2012_ID k (1-based) <-> devkit_order[k - 1]
    labels: list[int]  # expected PyTorch labels of images 1..12

    def image(self, number: int) -> Path:
        return self.val / f"ILSVRC2012_val_{number:08d}.JPEG"

    def xml(self, number: int) -> Path:
        return self.bbox / f"ILSVRC2012_val_{number:08d}.xml"


def _pixels(rng, width, height, channels):
    """Smooth random content (JPEG-friendly), uint8 [height, width, channels]."""
    coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), channels), dtype=np.uint8)
    img = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse)
    return np.asarray(img.resize((width, height), Image.BILINEAR))


def make_imagenet_val(root: str | Path) -> ImageNetFixture:
    """Write the fixture set under ``root`` (see the module docstring) and return its description."""
    root = Path(root)
    val, bbox, devkit = root / "val", root / "bbox", root / "devkit" / "data"
    for d in (val, bbox, devkit):
        d.mkdir(parents=True, exist_ok=True)
    wnids = make_wnids()
    devkit_order = [wnids[k] for k in np.random.default_rng(7).permutation(1000)]
    devkit_id = {w: k + 1 for k, w in enumerate(devkit_order)}
    rng = np.random.default_rng(0)

    gt_lines, csv_lines, val_lines = [], ["ImageId,PredictionString"], []
    for number, width, height, mode, label, boxes in SPECS:
        stem = f"ILSVRC2012_val_{number:08d}"
        channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
        Image.fromarray(_pixels(rng, width, height, channels), mode).save(val / f"{stem}.JPEG", quality=95)
        wnid = wnids[label]
        objects = "".join(OBJECT_TEMPLATE.format(*b, wnid=wnid) for b in boxes)
        (bbox / f"{stem}.xml").write_text(XML_TEMPLATE.format(stem=stem, width=width, height=height, objects=objects))
        gt_lines.append(str(devkit_id[wnid]))
        csv_lines.append(f"{stem}," + " ".join(f"{wnid} {' '.join(map(str, b))}" for b in boxes) + " ")
        val_lines.append(f"{stem}.JPEG {label}")

    (val / "README.txt").write_text("not an image; must be ignored\n")
    ground_truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    ground_truth.write_text("\n".join(gt_lines) + "\n")
    synsets = root / "LOC_synset_mapping.txt"
    synsets.write_text("".join(f"{w} made-up class {k}, synonym\n" for k, w in enumerate(wnids)))
    loc_solution = root / "LOC_val_solution.csv"
    loc_solution.write_text("\n".join(csv_lines) + "\n")
    val_txt = root / "val.txt"
    val_txt.write_text("\n".join(val_lines) + "\n")
    return ImageNetFixture(
        root, val, bbox, ground_truth, synsets, loc_solution, val_txt, wnids, devkit_order, [s[4] for s in SPECS]
    )


def write_meta_mat(fx: ImageNetFixture) -> Path:
    """Write a devkit-style ``meta.mat`` next to the ground-truth file (needs scipy).

    Like the real one: a struct array ``synsets`` with fields ``ILSVRC2012_ID``, ``WNID``, ``words``,
    ``num_children``; 1000 leaves (IDs 1..1000 in devkit order) plus one non-leaf entry.
    """
    import scipy.io

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(k + 1, w, f"class {w}", 0) for k, w in enumerate(fx.devkit_order)]
    rows.append((1001, "n00001740", "entity", 3))
    synsets = np.array(rows, dtype=dtype)
    path = fx.ground_truth.parent / "meta.mat"
    scipy.io.savemat(str(path), {"synsets": synsets})
    return path


def write_random_vgg16_bn_weights(hub_dir: str | Path, seed: int = 0) -> Path:
    """Save a seeded random ``vgg16_bn(weights=None)`` state dict where ``load_vgg16_bn`` looks for the real one.

    ``hub_dir`` plays ``torch.hub.get_dir()``; the file is ``hub_dir/checkpoints/vgg16_bn-6c64b313.pth``
    (about 550 MB: delete it when done).
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    path = Path(hub_dir) / "checkpoints" / Path(torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.vgg16_bn(weights=None).state_dict(), path)
    return path
