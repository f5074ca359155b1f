"""A tiny seeded evaluation for the runner's tests: a narrow VGG16-BN-layout model and 32 x 32 images.

Its own module (no pytest, no ``conftest``, so no torchvision) because the subprocess tests of
``tests/test_experiments.py`` import it in fresh interpreters: each import of torchvision costs seconds.
"""
from __future__ import annotations

import torch

from fgcam.models import build_shapes_vgg16bn


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A VGG16-BN-layout model (features.13/23/33/43 are max-pools), narrow, seeded, with non-trivial BN stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = build_shapes_vgg16bn(num_classes=5, widths=(4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8), hidden=12)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
    m.fgcam_name = "tiny-test-vgg"
    return m.eval()


class TinySource:
    """``n`` seeded 32 x 32 images with a bright square (box and mask); image ``i`` depends on (seed, i) only."""

    has_masks = True

    def __init__(self, n: int, seed: int = 0, n_localisation: int | None = None):
        self.seed = seed
        n_loc = n if n_localisation is None else n_localisation
        self.ids = [f"tiny-{seed}-{i:04d}" for i in range(max(n, n_loc))]
        self.kinds = [frozenset(k for k, m in (("faithfulness", n), ("localisation", n_loc)) if i < m)
                      for i in range(len(self.ids))]
        self.description = f"tiny test images, seed {seed}"

    def _one(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        x = 0.3 * torch.randn(3, 32, 32, generator=g)
        x0, y0 = torch.randint(0, 20, (2,), generator=g).tolist()
        s = int(torch.randint(6, 12, (1,), generator=g))
        x[:, y0:y0 + s, x0:x0 + s] += 1.5
        mask = torch.zeros(32, 32, dtype=torch.bool)
        mask[y0:y0 + s, x0:x0 + s] = True
        return x, int(torch.randint(0, 5, (1,), generator=g)), torch.tensor([x0, y0, x0 + s, y0 + s]), mask

    def load(self, positions):
        items = [self._one(p) for p in positions]
        return {"images": torch.stack([a[0] for a in items]), "labels": torch.tensor([a[1] for a in items]),
                "boxes": torch.stack([a[2] for a in items]), "masks": torch.stack([a[3] for a in items])}


METHODS = ["Grad-CAM", "FG-Grad-CAM", "FG-Grad-CAMD", "FG-Score-CAM", "LRP"]
LAYERS = ["Layer13", "Input"]
