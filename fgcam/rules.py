"""Relevance propagation rules, one small object per module type (paper Eq. 5-7).

A rule maps the relevance ``r`` at a module's output to the relevance at its input, given the input ``x`` the
module received on the clean forward pass.  All rules are linear in ``r``, and every division uses
``0 / 0 := 0`` with no epsilon, exactly as the authors' reference code (see ``../shared/golden/README.md``):
relevance whose denominator is exactly zero is dropped.

=====================  ==========================================================================================
module                 rule
=====================  ==========================================================================================
Conv2d, Linear         :class:`ZPlus` (Eq. 5-6): ``z_ij = a_i^+ w_ij^+ + a_i^- w_ij^-``, bias ignored; a grouped
                       or depthwise conv (``groups > 1``) applies it per group (each output's relevance goes
                       only to the inputs of its group, as the conv itself computes)
first Conv2d           :class:`ZBox` (Eq. 7): the z^B rule with input bounds ``l, h`` (also after constant
                       padding of the image, e.g. MobileNet's ``ZeroPad2d``: the bounds are padded like the image)
MaxPool2d              :class:`PoolLRP0`: LRP-0 on the clamped input, i.e. all of a window's relevance to
                       its arg-max (the one PyTorch picks)
Avg/AdaptiveAvgPool2d  :class:`PoolLRP0`, which is z+ for the pool's (positive, uniform) weights
ZeroPad2d,             :class:`Crop`: the relevance of the padded positions is dropped, the rest passed back
ConstantPad1d/2d/3d
Add (residual sum)     :class:`AddShare`: each summand gets the share of the sum it contributed,
                       ``R_a = a R / (a + b)``, ``R_b = b R / (a + b)`` (LRP-0 on the sum; zennit's ``Norm``)
ReLU, ReLU6, Hardtanh, :class:`Pass`: relevance unchanged (BatchNorm may instead be folded into the conv before it)
LeakyReLU, BatchNorm2d,
Dropout, Identity, ...
=====================  ==========================================================================================

New module types are supported by adding an entry to :data:`RULES` (or passing ``rules=`` to the propagation).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .canonizers import Add


_DROPS: list[torch.Tensor] | None = None      # set by dropped_relevance()


@contextlib.contextmanager
def dropped_relevance():
    """Collect the relevance the rules drop, for checking conservation: ``with dropped_relevance() as drops:``.

    Inside the block, every :func:`safe_divide` appends ``sum(num[den == 0])`` to ``drops`` (in the rules ``num``
    is the relevance at the module's output, so that is the relevance lost to ``0/0 := 0``), and :class:`Crop`
    appends the relevance of the padded positions.  One 0-d tensor per call, in call order (not thread-safe).
    """
    global _DROPS
    outer, _DROPS = _DROPS, []
    try:
        yield _DROPS
    finally:
        _DROPS = outer


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0 / 0 := 0`` (in fact ``x / 0 := 0`` for any x), no epsilon: the reference's division."""
    zero = den == 0
    if _DROPS is not None:
        _DROPS.append(torch.where(zero, num, 0).sum())
    return (num / den).masked_fill_(zero, 0)


#: Device type -> whether the z+ rule runs its convolutions in ``torch.channels_last`` (NHWC).  On the CPU the
#: oneDNN kernels are faster in NHWC (about 25 % for VGG16-BN's layers, forward and transposed); the rule converts
#: its input and relevance (one cheap copy each) and hands on NHWC relevance.  Off the CPU (CUDA, float32) NCHW.
CHANNELS_LAST: dict[str, bool] = {"cpu": True}


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.ndim == 4 and CHANNELS_LAST.get(x.device.type, False) else torch.contiguous_format


def _conv_args(module: nn.Module):
    """``(stride, padding, dilation, groups)`` of a ``Conv2d`` with plain zero padding given as numbers, else None
    (``padding="same"`` or another ``padding_mode``: the rules then take the generic autograd step)."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return list(module.stride), list(module.padding), list(module.dilation), module.groups
    return None


def relprop_conv(module: nn.Conv2d, terms, r: torch.Tensor) -> torch.Tensor:
    """The LRP step of a sum of bias-free convolutions, computed directly (no autograd graph).

    ``terms`` is a list of ``(sign, x_k, w_k)``; ``Z = sum_k sign_k conv(x_k, w_k)`` (summed left to right),
    ``R = sum_k sign_k x_k * conv^T(R / Z, w_k)`` with ``0/0 := 0``, the transposed convolution being the gradient
    of the convolution with respect to its input (``aten.convolution_backward``, the kernel autograd calls).  So
    this gives bit for bit what :func:`relprop_linear` gives for ``fn = sum_k sign_k conv(., w_k)``, with one
    convolution and one transposed convolution per term and nothing kept for a backward pass.
    """
    stride, padding, dilation, groups = _conv_args(module)
    z = None
    for sign, x, w in terms:
        y = F.conv2d(x, w, None, stride, padding, dilation, groups)
        z = y if z is None else (z + y if sign > 0 else z - y)
    s = safe_divide(r.reshape(z.shape), z)
    out = None
    for sign, x, w in terms:
        g = torch.ops.aten.convolution_backward(s, x, w, None, stride, padding, dilation, False, [0, 0], groups,
                                                [True, False, False])[0]
        g = g.mul_(x) if g.shape == x.shape else g * x
        out = g if out is None else (out.add_(g) if sign > 0 else out.sub_(g))
    return out


def relprop_linear(fn, inputs: tuple[torch.Tensor, ...], r: torch.Tensor) -> torch.Tensor:
    """The generic LRP step: ``Z = fn(*inputs)``, ``R_in = sum_k inputs_k * d<Z, R/Z>/d inputs_k``.

    ``fn`` is linear in each input, so ``inputs_k * grad_k`` splits ``Z`` into the contributions of the inputs and
    each gets its share of ``R / Z`` (``0 / 0 := 0``).  One forward and one backward of ``fn``.
    """
    inputs = tuple(t.detach().requires_grad_(True) for t in inputs)
    with torch.enable_grad():
        z = fn(*inputs)
    s = safe_divide(r.reshape(z.shape), z.detach())
    grads = torch.autograd.grad(z, inputs, s)
    out = inputs[0].detach() * grads[0]
    for t, g in zip(inputs[1:], grads[1:]):
        out = out + t.detach() * g
    return out


@dataclass
class Context:
    """What a rule may need besides the module, its input and the relevance.

    ``first``: the module receives the model's input (so the z^B rule applies); ``bounds``: the z^B bounds
    ``(low, high)`` broadcastable to the input; ``following``: the module that ran right after this one (for BN
    folding); ``fold_bn``: fold a following BatchNorm2d into this layer's weights; ``nonnegative``: True when the
    input is known to be >= 0 from the modules that produced it (a ReLU, possibly followed by pooling), so a rule
    need not look for negative entries (None: not known).
    """

    first: bool = False
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    following: nn.Module | None = None
    fold_bn: bool = False
    nonnegative: bool | None = None


def _has_negative(x: torch.Tensor, ctx: Context) -> bool:
    """Whether ``x`` has an entry < 0; skips the pass over ``x`` (and, on a GPU, the synchronisation) when the
    context knows the input is non-negative."""
    return False if ctx.nonnegative else bool(x.min() < 0)


def _linear_map(module: nn.Module):
    """``(weight, fn)`` with ``fn(x, w)`` the module's linear map without bias (conv, linear or average pool)."""
    if isinstance(module, nn.Conv2d):
        return module.weight, lambda x, w: module._conv_forward(x, w, None)
    if isinstance(module, nn.Linear):
        return module.weight, lambda x, w: F.linear(x, w)
    raise TypeError(type(module).__name__)


def _folded(weight: torch.Tensor, ctx: Context) -> torch.Tensor:
    bn = ctx.following
    if ctx.fold_bn and isinstance(bn, nn.BatchNorm2d) and weight.ndim == 4:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(
            bn.running_var + bn.eps)
        return weight * scale.view(-1, 1, 1, 1)
    return weight


class Rule:
    """Base class: ``relprop(module, x, r, ctx)`` returns the relevance at the module's input.

    ``needs_input``: whether the rule reads the values of ``x`` (the module's input on the forward pass).  When it
    is False, fgcam does not keep that input in memory and the rule gets a tensor of the right shape, dtype and
    device but without data (on the ``meta`` device).
    """

    needs_input: bool = True

    def relprop(self, module: nn.Module, x: torch.Tensor, r: torch.Tensor, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Pass(Rule):
    """Relevance passes unchanged (ReLU, BatchNorm2d as in the reference, Dropout, Identity, Flatten)."""

    needs_input = False

    def relprop(self, module, x, r, ctx):
        return r.reshape(x.shape)


class ZPlus(Rule):
    """z+ rule with the negative-input branch, bias ignored (paper Eq. 5-6; reference ``Conv2d.IR``).

    ``Z_j = sum_i a_i^+ w_ij^+ + a_i^- w_ij^-``, ``R_i = a_i^+ sum_j w_ij^+ R_j / Z_j + a_i^- sum_j w_ij^- R_j / Z_j``.
    For non-negative inputs (after ReLU or max-pool) the second branch is zero and is skipped.  A ``Conv2d`` takes
    the direct route of :func:`relprop_conv` (one convolution with ``W+`` and one transposed convolution per
    branch), in the memory format of :data:`CHANNELS_LAST`; a ``Linear`` (or a conv with ``padding="same"``) the
    autograd step of :func:`relprop_linear`.
    """

    def relprop(self, module, x, r, ctx):
        weight, fn = _linear_map(module)
        weight = _folded(weight.detach(), ctx)
        wp = weight.clamp(min=0)
        negative = _has_negative(x, ctx)
        if _conv_args(module) is not None:
            fmt = _memory_format(x)
            x, r = x.contiguous(memory_format=fmt), r.contiguous(memory_format=fmt)
            if negative:
                terms = [(1, x.clamp(min=0), wp), (1, x.clamp(max=0), weight.clamp(max=0))]
            else:
                terms = [(1, x, wp)]
            return relprop_conv(module, [(sg, a, w.contiguous(memory_format=fmt)) for sg, a, w in terms], r)
        if negative:
            wn = weight.clamp(max=0)
            return relprop_linear(lambda a, b: fn(a, wp) + fn(b, wn), (x.clamp(min=0), x.clamp(max=0)), r)
        return relprop_linear(lambda a: fn(a, wp), (x,), r)


def zbox_terms(module, x, ctx):
    """What every z^B rule needs: ``(weight, fn, W+, W-, low, high)``, the weight folded as ``ctx`` says and the
    bounds ``ctx.bounds`` broadcast to the input's shape; an error when the context has no bounds."""
    if ctx.bounds is None:
        raise ValueError("the z^B rule needs input bounds")
    weight, fn = _linear_map(module)
    weight = _folded(weight.detach(), ctx)
    low, high = (b.expand_as(x) for b in ctx.bounds)
    return weight, fn, weight.clamp(min=0), weight.clamp(max=0), low, high


class ZBox(Rule):
    """z^B rule for the first layer (paper Eq. 7; reference ``Conv2d.IR`` with 3 input channels).

    ``Z_j = sum_i x_i w_ij - l_i w_ij^+ - h_i w_ij^-``, ``R_i = (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / Z_j R_j``
    summed over j, bias ignored.  ``ctx.bounds = (low, high)`` broadcast to the input's shape (zero padding applies
    to the bound images as to the input, as in the reference).
    """

    def relprop(self, module, x, r, ctx):
        weight, fn, wp, wn, low, high = zbox_terms(module, x, ctx)
        if _conv_args(module) is not None:
            return relprop_conv(module, [(1, x, weight), (-1, low, wp), (-1, high, wn)], r)
        return relprop_linear(lambda a, lo, hi: fn(a, weight) - fn(lo, wp) - fn(hi, wn), (x, low, high), r)


class PoolLRP0(Rule):
    """Pooling rule of the reference: LRP-0 on the clamped input.

    ``X+ = max(X, 0)``, ``Y = pool(X+)``, ``R_in = X+ * grad(Y . (R / Y))`` with ``R / Y := 0`` where ``Y == 0``.
    For a max-pool all of a window's relevance goes to its arg-max (the one PyTorch picks); a window whose maximum
    is 0 drops its relevance (this matters after denoising, which puts relevance where the activation is 0).  For
    an average pool, whose weights are positive, this is the z+ rule.  The input is put in the relevance's memory
    format (NHWC after a z+ step on the CPU), which gives the same numbers.
    """

    def relprop(self, module, x, r, ctx):
        if x.ndim == 4 and r.ndim == 4 and r.is_contiguous(memory_format=torch.channels_last) \
                and not r.is_contiguous():
            x = x.contiguous(memory_format=torch.channels_last)
        return relprop_linear(module, (x.clamp(min=0) if _has_negative(x, ctx) else x,), r)


class Crop(Rule):
    """Constant padding (``ZeroPad2d``, ``ConstantPad2d``): the input's relevance is the relevance at the
    positions the input was copied to; that of the padded positions is dropped (they carry no input).  A negative
    padding (a crop) gives the cropped-away positions zero relevance."""

    needs_input = False

    def relprop(self, module, x, r, ctx):
        out = F.pad(r, tuple(-p for p in module.padding))
        if _DROPS is not None:
            _DROPS.append(r.sum() - out.sum())
        return out


class AddShare(Rule):
    """Residual addition ``y = a + b`` (:class:`fgcam.canonizers.Add`): ``R_a = a R / y``, ``R_b = b R / y``.

    Conserves the relevance exactly (``R_a + R_b = R``) except where ``y == 0``, which drops it (``0/0 := 0``).
    ``x`` is the pair ``(a, b)``; returns the pair ``(R_a, R_b)``.
    """

    def relprop(self, module, x, r, ctx):
        a, b = x
        s = safe_divide(r, module(a, b))
        return a * s, b * s


#: Module type -> rule for hidden layers (z+ everywhere, as in the paper and the reference code).
RULES: dict[type, Rule] = {
    nn.Conv2d: ZPlus(),
    nn.Linear: ZPlus(),
    nn.MaxPool2d: PoolLRP0(),
    nn.AvgPool2d: PoolLRP0(),
    nn.AdaptiveAvgPool2d: PoolLRP0(),
    nn.ReLU: Pass(),
    nn.ReLU6: Pass(),
    nn.Hardtanh: Pass(),
    nn.LeakyReLU: Pass(),
    nn.ConstantPad1d: Crop(),
    nn.ConstantPad2d: Crop(),             # also ZeroPad2d, a subclass
    nn.ConstantPad3d: Crop(),
    Add: AddShare(),
    nn.BatchNorm2d: Pass(),
    nn.Dropout: Pass(),
    nn.Identity: Pass(),
    nn.Flatten: Pass(),
}

#: Module type -> rule for the module that receives the model's input.
FIRST_RULES: dict[type, Rule] = {nn.Conv2d: ZBox(), nn.Linear: ZBox()}


class UnsupportedModuleError(TypeError):
    """A module on the propagation path has no rule."""


def rule_for(name: str, module: nn.Module, first: bool, rules: dict | None = None,
             first_rules: dict | None = None) -> Rule:
    """The rule for ``module`` (exact type first, then base classes); an error names the module otherwise."""
    table = {**RULES, **(rules or {})}
    if first:
        table = {**table, **FIRST_RULES, **(first_rules or {})}
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    raise UnsupportedModuleError(
        f"module {name!r} of type {type(module).__name__} lies on the propagation path and fgcam has no rule for "
        f"it (supported: {', '.join(sorted(c.__name__ for c in table))}); add one to fgcam.rules.RULES")
