"""Run profiles: one switch, ``FGCAM_PROFILE=offline|paper``, picks the model and the data.

* ``offline`` (default): the bundled ``shapes-vgg16bn`` model (``fgcam.models.load``) on generated
  shapes images (``fgcam.data.make_shapes``).  Needs nothing outside the package.
* ``paper``: the paper's setup -- torchvision VGG16-BN with ImageNet weights on the user's ILSVRC2012
  validation images, 2,000 images for faithfulness and 500 for localisation (see ``fgcam.imagenet``).

Environment variables
---------------------
``FGCAM_PROFILE``          ``offline`` (default) or ``paper``.
``FGCAM_N``                number of images for both kinds of data (overrides the profile's sizes).
``FGCAM_IMAGENET_VAL``     paper: folder of ``ILSVRC2012_val_*.JPEG`` (required).
``FGCAM_IMAGENET_BBOX``    paper: folder of the bounding-box XMLs ``ILSVRC2012_val_*.xml``, or Kaggle's
                           ``LOC_val_solution.csv``.  Required unless the XMLs sit in ``FGCAM_IMAGENET_VAL``.
``FGCAM_IMAGENET_LABELS``  paper, optional: devkit ``ILSVRC2012_validation_ground_truth.txt`` (with the
                           devkit's ``meta.mat`` next to it, or only cross-checked) or caffe ``val.txt``.
``FGCAM_IMAGENET_SYNSETS`` paper, optional: ``LOC_synset_mapping.txt`` (the 1000 WNIDs).  Needed when the
                           image folder is a subset of the 50,000 images and no ``meta.mat`` is given.
``FGCAM_OFFLINE``          ``1`` forbids downloading the VGG16-BN weights (see ``fgcam.imagenet``).
``TORCH_HOME``             where the weights are looked for: ``$TORCH_HOME/hub/checkpoints``.

The paper profile is checked when it is selected (:func:`get_profile` calls :meth:`Profile.check`):
anything missing raises :class:`~fgcam.imagenet.MissingResourceError` at once, listing every missing
item.  There is never a silent fallback to the offline profile.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["PROFILES", "Profile", "get_profile", "default_device"]

PROFILES = ("offline", "paper")
OFFLINE_SIZES = (200, 100)  # (faithfulness, localisation) images for the offline profile
PAPER_SIZES = (2000, 500)  # the paper's


def default_device() -> str:
    """``"cuda"`` when a GPU is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Profile:
    """What a run uses: the model, the data and their sizes.  Build it with :func:`get_profile`.

    ``imagenet`` holds the paper profile's data paths (``val``, ``bbox``, ``labels``, ``synsets``) as
    read from the environment when the profile was made; empty for the offline profile.
    """

    name: str
    model_name: str
    device: str
    n_faithfulness: int
    n_localisation: int
    imagenet: dict = field(default_factory=dict, hash=False)

    def check(self) -> None:
        """Raise ``MissingResourceError`` listing everything the profile needs and lacks (paper only).

        Checks are quick (no file is parsed): the image folder is set, exists and holds
        ``ILSVRC2012_val_*.JPEG``; the annotations and optional label/synset files exist; the weights
        file exists -- or, when it does not and the data is all there and downloads are allowed, it is
        downloaded now.
        """
        if self.name != "paper":
            return
        from fgcam import imagenet

        problems = []
        val, bbox = self.imagenet.get("val"), self.imagenet.get("bbox")
        if not val:
            problems.append("FGCAM_IMAGENET_VAL is not set: set it to the folder of ILSVRC2012_val_*.JPEG images")
        elif not Path(val).is_dir():
            problems.append(f"FGCAM_IMAGENET_VAL={val}: no such folder")
        elif next(Path(val).glob("ILSVRC2012_val_*.JPEG"), None) is None:
            problems.append(f"FGCAM_IMAGENET_VAL={val}: no ILSVRC2012_val_*.JPEG images in that folder")
        elif not bbox and next(Path(val).glob("ILSVRC2012_val_*.xml"), None) is None:
            problems.append(
                "FGCAM_IMAGENET_BBOX is not set (and no XMLs in FGCAM_IMAGENET_VAL): set it to the folder of "
                "bounding-box XMLs ILSVRC2012_val_*.xml or to LOC_val_solution.csv"
            )
        for var, key in (("FGCAM_IMAGENET_BBOX", "bbox"), ("FGCAM_IMAGENET_LABELS", "labels"),
                         ("FGCAM_IMAGENET_SYNSETS", "synsets")):
            p = self.imagenet.get(key)
            if p and not Path(p).exists():
                problems.append(f"{var}={p}: no such file or folder")

        weights = imagenet.vgg16_bn_weights_path()
        if not weights.is_file():
            if problems or not imagenet.downloads_allowed():
                why = (
                    "FGCAM_OFFLINE=1 forbids downloading it"
                    if not imagenet.downloads_allowed()
                    else "it is downloaded automatically once the data is in place"
                )
                problems.append(
                    f"VGG16-BN weights {weights} are missing ({why}); or download {imagenet.VGG16_BN_URL} "
                    f"into {weights.parent}"
                )
            else:
                try:
                    imagenet.download_vgg16_bn_weights(weights)
                except imagenet.MissingResourceError as err:
                    problems.append(str(err))
        if problems:
            raise imagenet.MissingResourceError(
                "The paper profile (FGCAM_PROFILE=paper) cannot run; missing:\n  - " + "\n  - ".join(problems)
            )

    def load_model(self) -> torch.nn.Module:
        """The profile's model, in eval mode, on ``self.device``."""
        if self.name == "paper":
            from fgcam.imagenet import load_vgg16_bn

            return load_vgg16_bn(self.device)
        from fgcam import models

        return models.load(self.model_name).eval().to(self.device)

    def load_data(self, kind: str = "faithfulness", n: int | None = None, seed: int = 0) -> dict:
        """A batch of images for ``kind`` (``"faithfulness"`` or ``"localisation"``), as CPU tensors.

        ``n`` defaults to the profile's size for that kind.  Returns a dict with at least ``images``
        ``[n, 3, H, W]``, ``labels`` ``[n]``, ``boxes`` ``[n, 4]`` and ``masks`` ``[n, H, W]``.

        * offline: ``fgcam.data.make_shapes(n, seed, objects=1)``.
        * paper: ``n`` images of the ImageNet validation folder drawn from ``seed`` by
          ``fgcam.imagenet.sample_faithfulness`` / ``sample_localisation`` and loaded by
          ``ImageNetVal.load`` (also returns ``paths`` and ``indices``).
        """
        if kind not in ("faithfulness", "localisation"):
            raise ValueError(f"kind must be 'faithfulness' or 'localisation', not {kind!r}")
        if n is None:
            n = self.n_faithfulness if kind == "faithfulness" else self.n_localisation
        if self.name == "paper":
            from fgcam import imagenet

            ds = _imagenet_dataset(**self.imagenet)
            sample = imagenet.sample_faithfulness if kind == "faithfulness" else imagenet.sample_localisation
            return ds.load(sample(ds, n, seed))
        from fgcam import data

        return data.make_shapes(n, seed, objects=1)


@functools.lru_cache(maxsize=2)
def _imagenet_dataset(val=None, bbox=None, labels=None, synsets=None):
    """The ImageNetVal of the paper profile, read once per set of paths."""
    from fgcam.imagenet import ImageNetVal

    return ImageNetVal(val, labels=labels, annotations=bbox, synsets=synsets)


def _env_n() -> int | None:
    value = os.environ.get("FGCAM_N", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"FGCAM_N must be a positive integer, not {value!r}")
    return int(value)


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``, or ``$FGCAM_PROFILE``, or ``"offline"``; the paper profile is checked at once.

    Raises ``ValueError`` for an unknown name and ``fgcam.imagenet.MissingResourceError`` when the paper
    profile lacks weights or data.
    """
    name = (name or os.environ.get("FGCAM_PROFILE") or "offline").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown fgcam profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    n = _env_n()
    if name == "offline":
        sizes = OFFLINE_SIZES if n is None else (n, n)
        return Profile("offline", "shapes-vgg16bn", default_device(), *sizes)
    sizes = PAPER_SIZES if n is None else (n, n)
    paths = {
        key: os.environ.get(var) or None
        for key, var in (("val", "FGCAM_IMAGENET_VAL"), ("bbox", "FGCAM_IMAGENET_BBOX"),
                         ("labels", "FGCAM_IMAGENET_LABELS"), ("synsets", "FGCAM_IMAGENET_SYNSETS"))
    }
    profile = Profile("paper", "vgg16_bn (torchvision IMAGENET1K_V1)", default_device(), *sizes, imagenet=paths)
    profile.check()
    return profile
