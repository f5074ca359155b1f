"""Image sources of the runner: objects with ``ids``, ``kinds`` (``faithfulness`` / ``localisation`` per image),
``has_masks``, ``description`` and ``load(positions) -> {"images", "labels", "boxes", "masks"[, "targets"]}``.

:class:`ShapesSource` (offline profile) and :class:`ImageNetSource` (paper profile) live here; the real profile's
photo and grid sources are in :mod:`fgcam.real`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

__all__ = ["ShapesSource", "ImageNetSource"]



class ShapesSource:
    """The offline profile's images: ``fgcam.data.make_shapes(n, seed)``; ids ``shapes-s{seed}-{index:05d}``.

    The first ``n_faithfulness`` images serve AD/AI and insertion/deletion, the first ``n_localisation`` the
    pointing game (the same stream, so the smaller set is a prefix of the larger). Masks are exact.
    """

    has_masks = True

    def __init__(self, n_faithfulness: int, n_localisation: int, seed: int):
        from fgcam import data

        self._data = data
        self.seed = int(seed)
        n = max(n_faithfulness, n_localisation)
        self.ids = [f"shapes-s{self.seed}-{i:05d}" for i in range(n)]
        self.kinds = [frozenset(k for k, m in (("faithfulness", n_faithfulness), ("localisation", n_localisation))
                                if i < m) for i in range(n)]
        self.description = (f"fgcam.data.make_shapes(n, seed={self.seed}): {n_faithfulness} faithfulness, "
                            f"{n_localisation} localisation images")

    def load(self, positions: Sequence[int]) -> dict:
        lo, hi = min(positions), max(positions) + 1
        d = self._data.make_shapes(hi - lo, self.seed, raw=False, offset=lo)
        sel = torch.as_tensor([p - lo for p in positions])
        return {k: d[k][sel] for k in ("images", "labels", "boxes", "masks")}


class ImageNetSource:
    """The paper profile's images: ILSVRC2012 validation images sampled from ``seed``
    (``fgcam.imagenet.sample_faithfulness`` / ``sample_localisation``); ids are the file stems."""

    has_masks = False  # box masks only: the mask energy would repeat the box energy

    def __init__(self, profile, n_faithfulness: int, n_localisation: int, seed: int):
        from fgcam import imagenet, profiles

        self._ds = profiles._imagenet_dataset(**profile.imagenet)
        faith = imagenet.sample_faithfulness(self._ds, n_faithfulness, seed) if n_faithfulness else []
        loc = imagenet.sample_localisation(self._ds, n_localisation, seed) if n_localisation else []
        f, l_ = set(faith), set(loc)
        self._indices = sorted(f | l_)
        self.ids = [Path(self._ds.files[i]).stem for i in self._indices]
        self.kinds = [frozenset(k for k, s in (("faithfulness", f), ("localisation", l_)) if i in s)
                      for i in self._indices]
        self.description = (f"ILSVRC2012 val in {self._ds.root}: {n_faithfulness} faithfulness and "
                            f"{n_localisation} localisation images drawn from seed {seed}")

    def load(self, positions: Sequence[int]) -> dict:
        d = self._ds.load([self._indices[p] for p in positions])
        return {"images": d["images"], "labels": d["labels"], "boxes": d.get("boxes"), "masks": None}
