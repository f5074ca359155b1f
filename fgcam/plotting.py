"""Overlay rendering for saliency maps: ReLU, min-max, colour map, alpha-blended over the image, saved as PNG.

Only numpy, torch and PIL are needed: the default colour map ``"jet"`` is computed here (matplotlib's
piecewise-linear jet); any other matplotlib colour map name works when matplotlib is installed.

>>> from fgcam.plotting import save_overlay
>>> save_overlay("cat_fg-grad-cam.png", pil_image, saliency_map)   # map [h, w] at any resolution
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["normalize_map", "resize_map", "colorize", "overlay", "save_overlay"]


def _as_numpy(saliency) -> np.ndarray:
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu().double().numpy()
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"a saliency map must be [h, w]; got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("the saliency map contains NaN or inf")
    return m


def normalize_map(saliency) -> np.ndarray:
    """ReLU then per-map min-max to [0, 1] (a map with no positive value gives all zeros)."""
    m = np.maximum(_as_numpy(saliency), 0.0)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def resize_map(saliency, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False, as the metrics) resize of an ``[h, w]`` map to ``size = (H, W)``."""
    m = torch.from_numpy(np.ascontiguousarray(_as_numpy(saliency)))
    if tuple(m.shape) == tuple(size):
        return m.numpy()
    return F.interpolate(m[None, None], size=tuple(int(s) for s in size), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def _jet(x: np.ndarray) -> np.ndarray:
    """matplotlib's ``jet`` (segment data of ``_jet_data``) for values in [0, 1] -> RGB in [0, 1]."""
    def seg(points):
        xs, ys = zip(*points)
        return np.interp(x, xs, ys)

    r = seg([(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)])
    g = seg([(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)])
    b = seg([(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)])
    return np.stack([r, g, b], axis=-1)


def colorize(values01: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Values in [0, 1] ``[H, W]`` -> ``uint8`` RGB ``[H, W, 3]`` with colour map ``cmap``."""
    x = np.clip(np.asarray(values01, dtype=np.float64), 0.0, 1.0)
    if cmap == "jet":
        rgb = _jet(x)
    else:
        try:
            import matplotlib
        except ImportError as err:  # pragma: no cover - matplotlib is in requirements.txt
            raise ValueError(f"colour map {cmap!r} needs matplotlib (only 'jet' is built in)") from err
        try:
            rgb = matplotlib.colormaps[cmap](x)[..., :3]
        except KeyError:
            raise ValueError(f"unknown colour map {cmap!r}") from None
    return np.round(rgb * 255.0).astype(np.uint8)


def overlay(image: Image.Image, saliency, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """The image (converted to RGB) with the coloured map blended on top: ``(1 - alpha) * image + alpha * heat``.

    The map is ReLU'd and min-max normalised (:func:`normalize_map`) at its own resolution, then resized
    bilinearly to the image's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat = colorize(np.clip(resize_map(normalize_map(saliency), rgb.shape[:2]), 0.0, 1.0), cmap)
    out = (1.0 - alpha) * rgb + alpha * heat.astype(np.float64)
    return Image.fromarray(np.round(out).clip(0, 255).astype(np.uint8), mode="RGB")


def save_overlay(path, image: Image.Image, saliency, alpha: float = 0.5, cmap: str = "jet") -> Path:
    """Render :func:`overlay` and save it as PNG at ``path``; returns the path."""
    path = Path(path)
    overlay(image, saliency, alpha, cmap).save(path, format="PNG")
    return path


def interval_plot(ax, cell_rows, metric: str, layers, methods, title: str | None = None, chance: float | None = None):
    """Means with their 95 % intervals (error bars) of ``metric`` per layer (x) and method (one series each, with
    a legend), from :func:`fgcam.tables.cells` rows; ``chance`` draws a dashed reference line."""
    cells = {(c["layer"], c["method"]): c for c in cell_rows if c["metric"] == metric}
    x = np.arange(len(layers))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        got = [cells.get((la, m)) for la in layers]
        xs = [x[j] + (i - (len(methods) - 1) / 2) * width for j, c in enumerate(got) if c is not None]
        cs = [c for c in got if c is not None]
        if not cs:
            continue
        mean = np.array([c["mean"] for c in cs])
        err = np.array([[c["mean"] - c["ci_low"] for c in cs], [c["ci_high"] - c["mean"] for c in cs]])
        ax.errorbar(xs, mean, yerr=err, fmt="o", capsize=3, label=m)
    if chance is not None:
        ax.axhline(chance, ls="--", c="gray", lw=1, label="chance")
    ax.set_xticks(x, layers)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax
