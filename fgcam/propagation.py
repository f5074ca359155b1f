"""Relevance propagation down a recorded graph of modules: the IR step of FG-CAM (paper Eq. 4).

:func:`propagate` takes a relevance tensor at the output of one module and applies one rule per module
(:mod:`fgcam.rules`), from that module down to the output of a shallower module or to the input image.  The same
walk started from the logits gives LRP, CLRP and SGLRP.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .graph import Trace
from .rules import Context, UnsupportedModuleError, rule_for


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


_CONSTANT_PADS = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


def _at_input(trace: Trace, i: int) -> bool:
    """Step ``i`` receives the image, directly or through constant padding only."""
    parents = trace.steps[i].parents
    if len(parents) != 1:
        return False
    return parents[0] == -1 or (isinstance(trace.steps[parents[0]].module, _CONSTANT_PADS)
                                and _at_input(trace, parents[0]))


def _bounds_at(trace: Trace, i: int, bounds):
    """z^B bounds for the input of step ``i`` if that input is the image, possibly constant-padded, else None.

    Padding modules between the image and the first conv (MobileNet's ``ZeroPad2d``) are applied to the bounds as
    to the image, so the padded positions have ``x = l = h`` (the pad value) and contribute nothing, just as a
    conv's own zero padding pads the input and the bound images alike (the reference).
    """
    parents = trace.steps[i].parents
    if len(parents) != 1:
        return None
    if parents[0] == -1:
        return bounds
    prev = trace.steps[parents[0]]
    if isinstance(prev.module, _CONSTANT_PADS):
        below = _bounds_at(trace, parents[0], bounds)
        if below is not None:
            return tuple(prev.module(b.expand(prev.input_shape)) for b in below)
    return None


#: Modules whose output is >= 0 whatever their input.
_NONNEGATIVE_OUT = (nn.ReLU, nn.ReLU6)
#: Modules whose output is >= 0 when their input is.
_KEEPS_NONNEGATIVE = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                      nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
                      nn.Dropout, nn.Identity, nn.Flatten)


def _nonnegative_input(trace: Trace, i: int) -> bool:
    """The input of step ``i`` is >= 0 by construction: produced by a ReLU/ReLU6, possibly through pooling,
    dropout, identity or flatten (which keep the sign).  Then the rules skip their search for negative entries."""
    parents = trace.steps[i].parents
    while len(parents) == 1 and parents[0] >= 0:
        module = trace.steps[parents[0]].module
        if isinstance(module, _NONNEGATIVE_OUT) or (isinstance(module, nn.Hardtanh) and module.min_val >= 0):
            return True
        if not isinstance(module, _KEEPS_NONNEGATIVE):
            return False
        parents = trace.steps[parents[0]].parents
    return False


def _shape_only(shape, like: torch.Tensor):
    """A data-less stand-in (``meta`` device) for an input that was not kept: for rules that need only its shape."""
    if shape and not isinstance(shape[0], int):
        return tuple(torch.empty(s, dtype=like.dtype, device="meta") for s in shape)
    return torch.empty(shape, dtype=like.dtype, device="meta")


def needs_input(rules: dict | None = None) -> Callable[[str, nn.Module], bool]:
    """``store`` predicate for :func:`fgcam.graph.record`: keep a module's input only if its rule reads it
    (:attr:`fgcam.rules.Rule.needs_input`), as a hidden layer or as the layer that receives the image; modules
    without a rule are kept, so that :func:`propagate` reports them."""
    def needs(name: str, module: nn.Module) -> bool:
        for first in (False, True):
            try:
                if getattr(rule_for(name, module, first=first, rules=rules), "needs_input", True):
                    return True
            except UnsupportedModuleError:
                return True
        return False
    return needs


def propagate(trace: Trace, relevance: torch.Tensor, start: str, stop: str, *, bounds=None, fold_bn: bool = False,
              rules: dict | None = None, on_step: Callable[[str, torch.Tensor], None] | None = None,
              first_rules: dict | None = None) -> torch.Tensor:
    """Propagate ``relevance`` (at the output of module ``start``) down to the output of ``stop`` (or ``"input"``).

    Rules are applied to the modules that ran after ``stop`` up to and including ``start``, last first; each
    step's input relevance is handed to the step(s) that produced its input(s) and summed there (a residual
    block's input gets the relevance of its body and of its skip connection).  The conv that receives the image
    (possibly after constant padding) gets the z^B rule with ``bounds`` (``(low, high)``).  ``on_step(name, r)`` is
    called with the relevance at the input of each module after its rule ran (a pair for an addition).  ``rules``
    and ``first_rules`` (type -> rule) override :data:`fgcam.rules.RULES` and, for the module that receives the
    image, :data:`fgcam.rules.FIRST_RULES` (:func:`fgcam.conservation.conserving_rules` gives both).  Returns
    the channel-resolved relevance at ``stop``'s output (``[B, C, h, w]``, or the input's shape).

    Conservation: every rule passes on the relevance it receives (up to ``0/0 := 0`` drops), so the relevance at
    the output of a module that every path from the input to ``start`` passes through (a VGG layer, a residual
    block's output) sums to that at ``start``.  Inside a residual block, ``stop``'s output carries only the share
    that flows through the body; the skip connection's share bypasses it and is not part of the result.
    """
    hi = trace.index(start)
    lo = -1 if stop == "input" else trace.index(stop)
    if lo > hi:
        raise ValueError(f"layer {stop!r} runs after {start!r}: relevance can only be propagated to shallower layers")
    steps = trace.steps
    pending: dict[int, torch.Tensor] = {hi: relevance}        # step index (-1: input) -> relevance at its output
    for i in range(hi, lo, -1):
        r = pending.pop(i, None)
        if r is None:
            continue                                          # no relevance reaches this module's output
        step = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        first = _at_input(trace, i) and not isinstance(step.module, _CONSTANT_PADS)
        ctx = Context(first=first, bounds=_bounds_at(trace, i, bounds) if first and bounds is not None else None,
                      fold_bn=fold_bn, nonnegative=_nonnegative_input(trace, i),
                      following=nxt.module if nxt is not None and nxt.parents == (i,) else None)
        rule = rule_for(step.name, step.module, first=first, rules=rules, first_rules=first_rules)
        x = step.input
        if x is None:
            if getattr(rule, "needs_input", True):
                raise RuntimeError(f"the input of {step.name!r} was not recorded (record(store_from=...) too high, "
                                   "or record(store=...) left it out)")
            x = _shape_only(step.input_shape, r)
        r = rule.relprop(step.module, x, r.reshape(step.output_shape), ctx)
        if on_step is not None:
            on_step(step.name, r)
        for parent, share in zip(step.parents, r if len(step.parents) > 1 else (r,)):
            shape = trace.images.shape if parent == -1 else steps[parent].output_shape
            share = share.reshape(shape)
            pending[parent] = share if parent not in pending else pending[parent] + share
    if lo not in pending:
        shape = trace.images.shape if lo == -1 else steps[lo].output_shape
        return torch.zeros(shape, dtype=relevance.dtype, device=relevance.device)
    return pending[lo]
