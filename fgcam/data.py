"""Shapes: a procedural image data set with exact ground-truth masks and boxes.

Every image is drawn on the fly from a seed (no files): a cluttered background
(smooth random colour field, optional stripes, small distractor marks that are
not of any class shape, pixel noise) and one or two objects whose *form* is the
class.  Position, scale, rotation and colour are random and the colour is
independent of the class, so a classifier has to look at the object's shape.

Main entry point::

    d = make_shapes(n, seed, objects=1)
    d["images"]   # [N,3,H,W] float32, normalised with MEAN/STD (model input)
    d["labels"]   # [N] int64, index into CLASSES
    d["masks"]    # [N,H,W] bool, the labelled object's visible pixels
    d["boxes"]    # [N,4] int64 x1,y1,x2,y2, tight box of the mask, half-open:
                  #   mask[y1:y2, x1:x2] holds every mask pixel, and each of the
                  #   four box edges touches the mask
    d["raw"]      # [N,3,H,W] float32 in [0,1] (what denormalize(images) gives)
    d["classes"]  # list of class names (== CLASSES)

With ``objects=2`` each image holds two objects of different classes that do not
overlap (their enclosing circles are disjoint) and the dict also has
``labels2``, ``masks2``, ``boxes2`` for the second object.

Determinism: image ``i`` depends only on ``(seed, i)`` (images are drawn in
fixed chunks of ``CHUNK`` with their own seeds), so the same seed gives
bitwise-identical tensors and ``make_shapes(10, s)`` is the first ten images of
``make_shapes(2000, s)``.  Generation is element-wise (no reductions), so the
result does not depend on the thread count; masks use no per-pixel
transcendental functions (only each object's sin/cos of its angle).

Seeds used by the project: training draws from seeds 1000 + epoch (see
``fgcam.train_shapes``), validation from seed 999, and the held-out test set is
``make_shapes(2000, 12345)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = ["disk", "square", "triangle", "plus", "ring", "star", "crescent", "heart"]
IMAGE_SIZE = 128
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, the same as the vgg16_bn profile
STD = (0.229, 0.224, 0.225)
TEST_SEED = 12345  # held-out test set seed, never used for training
CHUNK = 64  # images drawn per generator seed

RADIUS = (11.0, 28.0)  # object radius in pixels: diameter 17-44 % of the image side
_MAX_DISTRACTORS = 6
_MIN_CONTRAST = 0.35  # min RGB distance between object colour and local background


def _seed_for(seed: int, chunk: int) -> int:
    """A 63-bit generator seed for chunk ``chunk`` of the data set ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, chunk])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


# --------------------------------------------------------------------------- shapes
# Each shape is an implicit test on object-frame coordinates (u, v) where the
# object's enclosing circle is the unit circle.  Only +, -, *, abs and
# comparisons are used (no transcendental functions).


def _convex(u, v, pts):
    """Inside the convex polygon ``pts`` (counter-clockwise list of (x, y))."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


def _star_kites():
    outer, inner = 1.0, 0.42
    kites = []
    for k in range(5):
        a = math.pi / 2 + 2 * math.pi * k / 5
        tip = (outer * math.cos(a), outer * math.sin(a))
        right = (inner * math.cos(a - math.pi / 5), inner * math.sin(a - math.pi / 5))
        left = (inner * math.cos(a + math.pi / 5), inner * math.sin(a + math.pi / 5))
        kites.append([(0.0, 0.0), right, tip, left])
    return kites


_KITES = _star_kites()
_S3 = math.sqrt(3.0)


def _shape(name: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean mask of shape ``name`` at object coordinates (u, v); v points up."""
    r2 = u * u + v * v
    if name == "disk":
        return r2 <= 0.92**2
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.70
    if name == "triangle":
        return (v >= -0.5) & (v <= 1.0 - _S3 * u.abs())
    if name == "plus":
        au, av = u.abs(), v.abs()
        return ((au <= 0.27) & (av <= 0.96)) | ((av <= 0.27) & (au <= 0.96))
    if name == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if name == "star":
        out = torch.zeros_like(u, dtype=torch.bool)
        for kite in _KITES:
            out |= _convex(u, v, kite)
        return out
    if name == "crescent":
        return (r2 <= 0.95**2) & ((u - 0.42) ** 2 + v * v > 0.78**2)
    if name == "heart":
        x, y = u * 1.36, v * 1.36 + 0.12
        q = x * x + y * y - 1.0
        return q * q * q - x * x * y * y * y <= 0
    raise ValueError(name)


# ------------------------------------------------------------------------ drawing


def _rand(g, *shape, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _background(g, b: int, size: int, xs, ys):
    """Smooth colour field + optional stripes + distractor marks, [B,3,H,W].

    ``xs`` is [1,1,W] and ``ys`` [1,H,1] (pixel-centre coordinates)."""
    field = F.interpolate(_rand(g, b, 3, 4, 4), size=(size, size), mode="bilinear", align_corners=False)
    lo = _rand(g, b, 1, 1, 1, lo=0.0, hi=0.4)
    span = _rand(g, b, 1, 1, 1, lo=0.2, hi=0.6)
    smooth = lo + span * field  # in [0, 1]

    # stripes on about half of the images
    theta = _rand(g, b, 1, 1, hi=math.pi)
    freq = _rand(g, b, 1, 1, lo=3.0, hi=12.0) * (2 * math.pi / size)
    phase = _rand(g, b, 1, 1, hi=2 * math.pi)
    amp = _rand(g, b, 1, 1, lo=0.04, hi=0.15) * (torch.rand(b, 1, 1, generator=g) < 0.5)
    wave = torch.sin((xs * torch.cos(theta) + ys * torch.sin(theta)) * freq + phase)
    tint = _rand(g, b, 3, 1, 1, lo=-1.0, hi=1.0)
    bg = smooth + (amp * wave).unsqueeze(1) * tint

    # distractors: thin short bars and soft blobs, too small/thin to be a class shape
    count = torch.randint(0, _MAX_DISTRACTORS + 1, (b,), generator=g)
    for k in range(_MAX_DISTRACTORS):
        cx = _rand(g, b, 1, 1, hi=size)
        cy = _rand(g, b, 1, 1, hi=size)
        col = _rand(g, b, 3, 1, 1)
        is_bar = torch.rand(b, 1, 1, generator=g) < 0.5
        ang = _rand(g, b, 1, 1, hi=math.pi)
        half_len = _rand(g, b, 1, 1, lo=3.0, hi=8.0)
        half_wid = _rand(g, b, 1, 1, lo=0.6, hi=1.4)
        sigma = _rand(g, b, 1, 1, lo=1.2, hi=2.8)
        dx, dy = xs - cx, ys - cy  # [B,1,W], [B,H,1]
        along = dx * torch.cos(ang) + dy * torch.sin(ang)
        across = dy * torch.cos(ang) - dx * torch.sin(ang)
        bar = (along.abs() <= half_len) & (across.abs() <= half_wid)
        blob = torch.exp(-dx * dx / (2 * sigma * sigma)) * torch.exp(-dy * dy / (2 * sigma * sigma))
        alpha = torch.where(is_bar, bar.float(), blob) * (k < count).view(b, 1, 1)
        bg.lerp_(col, alpha.unsqueeze(1))
    return bg.clamp(0, 1), smooth


def _place(g, b: int, size: int, radius, avoid=None):
    """Random centres keeping the enclosing circle inside the image (and, with
    ``avoid=(cx, cy, r)``, disjoint from that circle)."""
    lo, hi = radius + 1.0, size - radius - 1.0
    cx = lo + (hi - lo) * torch.rand(b, generator=g)
    cy = lo + (hi - lo) * torch.rand(b, generator=g)
    if avoid is None:
        return cx, cy
    ax, ay, ar = avoid
    min_d2 = (ar + radius + 2.0) ** 2
    for _ in range(64):
        bad = (cx - ax) ** 2 + (cy - ay) ** 2 < min_d2
        if not bad.any():
            return cx, cy
        cx = torch.where(bad, lo + (hi - lo) * torch.rand(b, generator=g), cx)
        cy = torch.where(bad, lo + (hi - lo) * torch.rand(b, generator=g), cy)
    # Fallback (rare): move to the corner opposite the first object; the
    # diagonal distance then always exceeds the two radii.
    bad = (cx - ax) ** 2 + (cy - ay) ** 2 < min_d2
    cx = torch.where(bad, torch.where(ax < size / 2, hi, lo), cx)
    cy = torch.where(bad, torch.where(ay < size / 2, hi, lo), cy)
    return cx, cy


def _object(g, labels, cx, cy, radius, xs, ys):
    """Masks [B,H,W] and local coordinate ``u`` for objects of class ``labels``."""
    b = labels.shape[0]
    ang = _rand(g, b, hi=2 * math.pi)
    cos, sin = torch.cos(ang).view(b, 1, 1), torch.sin(ang).view(b, 1, 1)
    dx = (xs - cx.view(b, 1, 1)) / radius.view(b, 1, 1)
    dy = (cy.view(b, 1, 1) - ys) / radius.view(b, 1, 1)  # image y points down, v up
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for c, name in enumerate(CLASSES):
        idx = (labels == c).nonzero().flatten()
        if len(idx):
            mask.index_copy_(0, idx, _shape(name, u[idx], v[idx]))
    return mask, u


def _colour(g, smooth, cx, cy):
    """Object colours at least ``_MIN_CONTRAST`` away from the smooth background
    colour at the object centre (resampled a few times, then inverted)."""
    b = cx.shape[0]
    idx = torch.arange(b)
    local = smooth[idx, :, cy.long(), cx.long()]  # [B,3]
    col = torch.rand(b, 3, generator=g)
    for _ in range(16):
        close = (col - local).pow(2).sum(1) < _MIN_CONTRAST**2
        col = torch.where(close.unsqueeze(1), torch.rand(b, 3, generator=g), col)
    close = (col - local).pow(2).sum(1) < _MIN_CONTRAST**2
    col = torch.where(close.unsqueeze(1), (local <= 0.5).float(), col)  # far corner of the RGB cube
    return col


def _paint(g, img, mask, u, col):
    """Paint a lightly shaded object of colour ``col`` where ``mask``."""
    b = mask.shape[0]
    shade = 1.0 + _rand(g, b, 1, 1, lo=-0.15, hi=0.15) * u
    obj = (col.view(b, 3, 1, 1) * shade.unsqueeze(1)).clamp(0, 1)
    m = mask.unsqueeze(1)
    return torch.where(m, obj, img)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight half-open boxes ``[N,4]`` (x1, y1, x2, y2) of boolean masks ``[N,H,W]``.

    ``masks[i, y1:y2, x1:x2]`` holds every True pixel of mask ``i``; an empty mask
    gives ``(0, 0, 0, 0)``.
    """
    n, h, w = masks.shape
    cols, rows = masks.any(1), masks.any(2)  # [N,W], [N,H]
    x1 = cols.int().argmax(1)
    x2 = w - cols.flip(1).int().argmax(1)
    y1 = rows.int().argmax(1)
    y2 = h - rows.flip(1).int().argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).long()
    boxes[~cols.any(1)] = 0
    return boxes


def _chunk(seed: int, index: int, objects: int, size: int):
    g = torch.Generator().manual_seed(_seed_for(seed, index))
    b = CHUNK
    xs = (torch.arange(size) + 0.5).view(1, 1, size)
    ys = (torch.arange(size) + 0.5).view(1, size, 1)

    img, smooth = _background(g, b, size, xs, ys)
    out = {}
    labels = torch.randint(0, len(CLASSES), (b,), generator=g)
    r1 = _rand(g, b, lo=RADIUS[0], hi=RADIUS[1])
    cx1, cy1 = _place(g, b, size, r1)
    if objects == 2:
        labels2 = (labels + torch.randint(1, len(CLASSES), (b,), generator=g)) % len(CLASSES)
        r2 = _rand(g, b, lo=RADIUS[0], hi=RADIUS[1])
        cx2, cy2 = _place(g, b, size, r2, avoid=(cx1, cy1, r1))
    masks, u = _object(g, labels, cx1, cy1, r1, xs, ys)
    img = _paint(g, img, masks, u, _colour(g, smooth, cx1, cy1))
    out.update(labels=labels, masks=masks, centers=torch.stack([cx1, cy1], 1), radii=r1)
    if objects == 2:
        masks2, u2 = _object(g, labels2, cx2, cy2, r2, xs, ys)
        img = _paint(g, img, masks2, u2, _colour(g, smooth, cx2, cy2))
        masks = masks & ~masks2  # visible pixels (the circles are disjoint anyway)
        out.update(masks=masks, labels2=labels2, masks2=masks2, centers2=torch.stack([cx2, cy2], 1), radii2=r2)

    noise = _rand(g, b, 1, 1, 1, lo=0.0, hi=0.05) * torch.randn(b, 3, size, size, generator=g)
    out["raw"] = (img + noise).clamp(0, 1)
    return out


def normalize(raw: torch.Tensor) -> torch.Tensor:
    """Images in [0,1] -> model input (subtract MEAN, divide by STD per channel)."""
    mean = torch.tensor(MEAN, dtype=raw.dtype, device=raw.device).view(-1, 1, 1)
    std = torch.tensor(STD, dtype=raw.dtype, device=raw.device).view(-1, 1, 1)
    return (raw - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Model input -> images in [0,1] (inverse of :func:`normalize`, clamped)."""
    mean = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def make_shapes(n: int, seed: int, objects: int = 1, raw: bool = True, offset: int = 0) -> dict:
    """Draw ``n`` Shapes images from ``seed`` (see the module docstring for keys).

    ``objects`` is 1 or 2.  ``raw=False`` leaves out the [0,1] copy of the images
    (saves memory on large sets; ``denormalize(images)`` gives it back).
    ``offset`` skips that many images of the seed's stream: ``make_shapes(n, s,
    offset=k)`` is images ``k .. k+n-1`` of ``make_shapes(k + n, s)``.
    """
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2, got {objects}")
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got n={n}, offset={offset}")
    first, last = offset // CHUNK, max(offset // CHUNK + 1, -(-(offset + n) // CHUNK))
    chunks = [_chunk(seed, i, objects, IMAGE_SIZE) for i in range(first, last)]
    skip = offset - first * CHUNK
    d = {k: torch.cat([c[k] for c in chunks])[skip : skip + n] for k in chunks[0]}
    d["images"] = normalize(d["raw"])
    d["boxes"] = boxes_from_masks(d["masks"])
    if objects == 2:
        d["boxes2"] = boxes_from_masks(d["masks2"])
    if not raw:
        del d["raw"]
    d["classes"] = list(CLASSES)
    d["seed"] = seed
    return d
