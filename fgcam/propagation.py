"""Relevance propagation down a recorded chain: the IR step of FG-CAM (paper Eq. 4).

:func:`propagate` takes a relevance tensor at the output of one module and applies one rule per module
(:mod:`fgcam.rules`), from that module down to the output of a shallower module or to the input image.  The same
walk started from the logits gives LRP, CLRP and SGLRP.
"""
from __future__ import annotations

from typing import Callable

import torch

from .graph import Trace
from .rules import Context, rule_for


def image_bounds(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z^B bounds of the reference: the global min and max of each image (all channels and pixels), ``[B,1,1,1]``."""
    flat = images.detach().flatten(1)
    shape = (-1,) + (1,) * (images.ndim - 1)
    return flat.min(1).values.view(shape), flat.max(1).values.view(shape)


def box_bounds(mean, std, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel z^B bounds of the normalised [0, 1] pixel box: ``l_c = -mean_c/std_c``, ``h_c = (1-mean_c)/std_c``."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return -mean / std, (1 - mean) / std


def resolve_bounds(bounds, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``"image"`` (reference), ``("box", mean, std)`` or an explicit ``(low, high)`` pair of numbers/tensors."""
    if isinstance(bounds, str) and bounds == "image":
        return image_bounds(images)
    if isinstance(bounds, tuple) and len(bounds) == 3 and bounds[0] == "box":
        return box_bounds(bounds[1], bounds[2], images)
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        lo, hi = (torch.as_tensor(b, dtype=images.dtype, device=images.device) for b in bounds)
        if lo.ndim == 1:
            lo, hi = lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)
        return lo, hi
    raise ValueError(f"zb_bounds must be 'image', ('box', mean, std) or (low, high); got {bounds!r}")


def propagate(trace: Trace, relevance: torch.Tensor, start: str, stop: str, *, bounds=None, fold_bn: bool = False,
              rules: dict | None = None, on_step: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Propagate ``relevance`` (at the output of module ``start``) down to the output of ``stop`` (or ``"input"``).

    Rules are applied to the modules that ran after ``stop`` up to and including ``start``, last first; the
    module that received the image gets the z^B rule with ``bounds`` (``(low, high)``).  ``on_step(name, r)`` is
    called with the relevance at the input of each module after its rule ran.  Returns the channel-resolved
    relevance at ``stop``'s output (``[B, C, h, w]``, or the input's shape).
    """
    hi = trace.index(start)
    lo = -1 if stop == "input" else trace.index(stop)
    if lo > hi:
        raise ValueError(f"layer {stop!r} runs after {start!r}: relevance can only be propagated to shallower layers")
    r = relevance
    for i in range(hi, lo, -1):
        step = trace.steps[i]
        if step.input is None:
            raise RuntimeError(f"the input of {step.name!r} was not recorded (record(store_from=...) too high)")
        following = trace.steps[i + 1].module if i + 1 < len(trace.steps) else None
        ctx = Context(first=i == 0, bounds=bounds, following=following, fold_bn=fold_bn)
        rule = rule_for(step.name, step.module, first=i == 0, rules=rules)
        r = rule.relprop(step.module, step.input, r.reshape(step.output_shape), ctx)
        if on_step is not None:
            on_step(step.name, r)
    if lo >= 0:
        r = r.reshape(trace.steps[lo].output_shape)
    return r
