"""Conservation of relevance: where the rules drop it, and opt-in rules that keep it (beyond the paper).

The reference's rules (:mod:`fgcam.rules`) divide with ``0 / 0 := 0``: the relevance ``R_j`` of an output whose
denominator ``Z_j`` is exactly zero is dropped.  On real CNNs that is most of it: a MobileNet's depthwise conv sees
a 3x3 single-channel window that is all zero after ``ReLU6`` (so ``Z_j = 0`` under z+, which ignores the bias)
while its folded-BatchNorm bias keeps the output, and hence ``R_j``, positive.

* :func:`report` propagates an explanation and returns a :class:`ConservationReport`: how much of the relevance
  reaches the layer, and which modules (and module types) drop the rest.
* ``zero_denominator="flat"`` or ``"w2"`` (an option of :func:`fgcam.explain` and :class:`fgcam.Explainer`;
  ``"drop"``, the reference, is the default) keeps the rules of the reference wherever ``Z_j != 0`` and spreads
  ``R_j`` over the inputs of ``j``'s window where ``Z_j == 0``: uniformly (:class:`Flat`) or in proportion to
  ``w_ij^2`` (:class:`WSquare`).  :func:`conserving_rules` gives the rule tables:

  ======================  =====================================================================================
  module                  conserving rule
  ======================  =====================================================================================
  Conv2d, Linear          :class:`ZPlusConserving` (z+; a grouped conv spreads within its group)
  first Conv2d, Linear    :class:`ZBoxConserving` (z^B)
  Max/Avg/AdaptiveAvg     :class:`PoolConserving` (LRP-0 on the clamped input; a window whose maximum or mean is
  Pool2d                  0 spreads uniformly over its positions)
  Add                     :class:`AddShareConserving` (``R_a = R_b = R / 2`` where ``a + b = 0``)
  ConstantPad1d/2d/3d     :class:`FoldPad`: a padded position's relevance goes to the input position it copies
                          under replicate padding (the spread rules can send relevance to padded positions)
  ======================  =====================================================================================

  Where ``Z_j != 0`` these rules compute exactly what the reference's rules compute, so they change a map only
  where the reference drops relevance.  They conserve it exactly (up to rounding) for every module of
  :data:`fgcam.rules.RULES` (``Pass`` rules conserve trivially).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .canonizers import Add
from .rules import RULES, Context, Rule, _folded, _linear_map, safe_divide, zbox_terms


# -- how a zero denominator's relevance is spread ------------------------------------------------------------

class Spread:
    """A zero-denominator rule: where ``Z_j == 0``, ``R_i = sum_j f_ij / (sum_i' f_i'j) R_j`` with the
    non-negative ``f = weights(w)`` over the inputs ``i`` of ``j``'s window (its group for a grouped conv)."""

    name = "spread"
    #: The spread used, in turn, for a window whose ``f`` sums to zero (None: such a window drops its relevance).
    fallback: "Spread | None" = None

    def weights(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Flat(Spread):
    """Flat rule (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what machines really
    learn", Nat. Commun. 10:1096; zennit's ``Flat``): ``f_ij = 1``, each input of the window gets an equal share,
    whatever the weights and the input values.  For a pooling window, every position gets an equal share."""

    name = "flat"

    def weights(self, weight):
        return torch.ones_like(weight)


class WSquare(Spread):
    """w^2 rule (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor
    decomposition", Pattern Recognit. 65:211-222; zennit's ``WSquare``): ``f_ij = w_ij^2``, independent of the input
    values (which are all zero where z+ drops).  A pool's weights are uniform, so for pools this is the flat rule.
    A window whose weights are all zero (quantized models have such depthwise kernels) falls back to :class:`Flat`."""

    name = "w2"
    fallback = Flat()

    def weights(self, weight):
        return weight * weight


#: ``zero_denominator`` option -> spread (``"drop"``: the reference, ``0 / 0 := 0``).
ZERO_DENOMINATOR: dict[str, Spread | None] = {"drop": None, "flat": Flat(), "w2": WSquare()}


def relprop_linear_conserving(fn, inputs: tuple[torch.Tensor, ...], r: torch.Tensor, spreads) -> torch.Tensor:
    """:func:`fgcam.rules.relprop_linear` where ``Z_j != 0``; where ``Z_j == 0``, ``R_j`` is spread instead of dropped.

    ``spreads`` are linear maps of an all-ones tensor shaped like ``inputs[0]`` with non-negative weights ``f_ij``
    (a conv with a :class:`Spread`'s weights, a pool); the input ``i`` gets ``sum_j f_ij R_j / sum_i' f_i'j`` from the
    outputs with ``Z_j == 0``.  A window whose ``f`` sums to zero goes to the next map; after the last one it drops
    its relevance through :func:`fgcam.rules.safe_divide`, which records it.
    """
    inputs = tuple(t.detach().requires_grad_(True) for t in inputs)
    with torch.enable_grad():
        z = fn(*inputs)
    zd = z.detach()
    r = r.reshape(z.shape)
    zero = zd == 0
    s = (r / zd).masked_fill_(zero, 0)
    grads = torch.autograd.grad(z, inputs, s)
    out = inputs[0].detach() * grads[0]
    for t, g in zip(inputs[1:], grads[1:]):
        out = out + t.detach() * g
    rest = r.masked_fill(~zero, 0)
    for k, spread in enumerate(spreads):
        if not bool((rest != 0).any()):
            break
        ones = torch.ones_like(out).requires_grad_(True)
        with torch.enable_grad():
            f = spread(ones)
        fd = f.detach()
        empty = fd == 0
        s = safe_divide(rest, fd) if k == len(spreads) - 1 else (rest / fd).masked_fill_(empty, 0)
        out = out + torch.autograd.grad(f, ones, s)[0]
        rest = rest.masked_fill(~empty, 0)
    return out


def _spreads(spread: Spread, weight: torch.Tensor, fn) -> list:
    """``[o -> fn(o, f)]`` for ``spread`` and its fallbacks, ``f`` their weights."""
    out = []
    while spread is not None:
        out.append(lambda o, f=spread.weights(weight): fn(o, f))
        spread = spread.fallback
    return out


# -- conserving variants of the reference's rules ------------------------------------------------------------

class ZPlusConserving(Rule):
    """:class:`fgcam.rules.ZPlus` (paper Eq. 5-6, bias ignored) where ``Z_j != 0``; where ``Z_j == 0`` the
    relevance is spread over the window by ``spread`` (:class:`Flat` or :class:`WSquare`; a grouped conv spreads
    within its group, a conv's own zero padding gets nothing)."""

    def __init__(self, spread: Spread):
        self.spread = spread

    def relprop(self, module, x, r, ctx):
        weight, fn = _linear_map(module)
        weight = _folded(weight.detach(), ctx)
        wp, spread = weight.clamp(min=0), _spreads(self.spread, weight, fn)
        if bool(x.min() < 0):
            wn = weight.clamp(max=0)
            return relprop_linear_conserving(lambda a, b: fn(a, wp) + fn(b, wn), (x.clamp(min=0), x.clamp(max=0)),
                                             r, spread)
        return relprop_linear_conserving(lambda a: fn(a, wp), (x,), r, spread)

    def __repr__(self):
        return f"{type(self).__name__}({self.spread!r})"


class ZBoxConserving(ZPlusConserving):
    """:class:`fgcam.rules.ZBox` (paper Eq. 7) where ``Z_j != 0``; spread by ``spread`` where ``Z_j == 0``
    (every input at its bound: ``x_i = l_i`` where ``w_ij > 0`` and ``x_i = h_i`` where ``w_ij < 0``)."""

    def relprop(self, module, x, r, ctx):
        weight, fn, wp, wn, low, high = zbox_terms(module, x, ctx)
        return relprop_linear_conserving(lambda a, lo, hi: fn(a, weight) - fn(lo, wp) - fn(hi, wn),
                                         (x, low, high), r, _spreads(self.spread, weight, fn))


class PoolConserving(ZPlusConserving):
    """:class:`fgcam.rules.PoolLRP0` (LRP-0 on the clamped input) where the pooled value is non-zero; a window whose
    value is 0 spreads its relevance uniformly over its input positions (flat and w^2 agree: a pool's weights are
    uniform).  The window is the pool's own for an average pool and an average pool of the same kernel, stride,
    padding and ``ceil_mode`` (counting only real positions) for a max-pool."""

    def relprop(self, module, x, r, ctx):
        if isinstance(module, nn.MaxPool2d):
            if module.dilation not in (1, (1, 1)):
                raise ValueError(f"{type(self).__name__} supports max-pools without dilation; got {module}")
            spread = lambda o: F.avg_pool2d(o, module.kernel_size, module.stride, module.padding,  # noqa: E731
                                            module.ceil_mode, count_include_pad=False)
        else:
            spread = module
        return relprop_linear_conserving(module, (x.clamp(min=0) if bool(x.min() < 0) else x,), r, [spread])


class AddShareConserving(ZPlusConserving):
    """:class:`fgcam.rules.AddShare` (``R_a = a R / y``, ``R_b = b R / y``) where ``y = a + b != 0``;
    ``R_a = R_b = R / 2`` where ``y == 0`` (flat and w^2 agree: both summands have weight 1)."""

    def relprop(self, module, x, r, ctx):
        a, b = x
        y = module(a, b)
        zero = y == 0
        s = (r / y).masked_fill_(zero, 0)
        half = r.masked_fill(~zero, 0) / 2
        return a * s + half, b * s + half


class FoldPad(Rule):
    """Constant padding that keeps the relevance of the padded positions: each goes to the input position it
    would copy under replicate padding (the adjoint of ``F.pad(x, padding, mode="replicate")``), i.e. to the
    nearest border position.  Under the reference's rules the padded positions (value 0) get no relevance, so
    this equals :class:`fgcam.rules.Crop` there; the spread rules can send relevance to them.  A negative
    padding (a crop) gives the cropped-away positions zero relevance, as :class:`fgcam.rules.Crop`."""

    def relprop(self, module, x, r, ctx):
        grow = tuple(max(p, 0) for p in module.padding)
        crop = tuple(min(p, 0) for p in module.padding)
        xx = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = F.pad(F.pad(xx, grow, mode="replicate") if any(grow) else xx, crop)
        (out,) = torch.autograd.grad(y, xx, r.reshape(y.shape))
        return out


def conserving_rules(zero_denominator: str | Spread) -> tuple[dict, dict]:
    """``(rules, first_rules)``: the rule tables for ``zero_denominator`` (``"drop"``: empty, the reference;
    ``"flat"``, ``"w2"`` or a :class:`Spread`: the conserving rules of this module's table)."""
    spread = zero_denominator
    if isinstance(zero_denominator, str):
        if zero_denominator not in ZERO_DENOMINATOR:
            raise ValueError(f"zero_denominator must be one of {sorted(ZERO_DENOMINATOR)} or a "
                             f"fgcam.conservation.Spread; got {zero_denominator!r}")
        spread = ZERO_DENOMINATOR[zero_denominator]
    elif not isinstance(zero_denominator, Spread):
        raise TypeError(f"zero_denominator must be a name ({sorted(ZERO_DENOMINATOR)}) or a Spread; "
                        f"got {type(zero_denominator).__name__}")
    if spread is None:
        return {}, {}
    pool, pad = PoolConserving(spread), FoldPad()
    rules = {nn.Conv2d: ZPlusConserving(spread), nn.Linear: ZPlusConserving(spread), nn.MaxPool2d: pool,
             nn.AvgPool2d: pool, nn.AdaptiveAvgPool2d: pool, Add: AddShareConserving(spread),
             nn.ConstantPad1d: pad, nn.ConstantPad2d: pad, nn.ConstantPad3d: pad}
    assert set(rules) <= set(RULES)
    return rules, {nn.Conv2d: ZBoxConserving(spread), nn.Linear: ZBoxConserving(spread)}


# -- where relevance goes ------------------------------------------------------------------------------------

@dataclass
class ConservationReport:
    """Where an explanation's relevance goes between the layer it starts at and the layer it is asked at.

    The relevance ``R`` at the start (components at the CAM layer, or the output relevance of LRP) is split into
    its positive and negative parts, which are propagated separately (the rules are linear, so their maps add up
    to the explanation).  For each module that ran, ``dropped`` is the relevance that entered it from above minus
    the relevance it handed down (the conservation deficit: relevance lost to zero denominators and padding);
    ``magnitude`` counts the two parts' drops without cancelling.  All sums are per image, in float64.

    Attributes: ``method``, ``layer``, ``maps`` ``[B, h, w]`` (the explanation), ``start`` (``sum R``), ``scale``
    (``sum |R|``), ``reached`` (the sum at the layer), ``names`` and ``types`` of the modules, ``dropped`` and
    ``magnitude`` (``[modules, B]``), ``bypassed`` (relevance that flowed around the layer through a skip
    connection: ``start - reached - dropped``, zero at the input).
    """

    method: str
    layer: str
    maps: torch.Tensor
    start: torch.Tensor
    scale: torch.Tensor
    reached: torch.Tensor
    names: list[str]
    types: list[str]
    dropped: torch.Tensor
    magnitude: torch.Tensor
    bypassed: torch.Tensor

    @property
    def dropped_share(self) -> torch.Tensor:
        """``[B]``: relevance dropped (positive and negative parts counted apart) / ``sum |R|`` at the start."""
        return self.magnitude.sum(0) / self.scale

    @property
    def reached_share(self) -> torch.Tensor:
        """``[B]``: ``1 - dropped_share - |bypassed| / sum |R|``, the share of the relevance that reaches the layer."""
        return 1 - self.dropped_share - self.bypassed.abs() / self.scale

    def by_module(self) -> dict[str, float]:
        """Module name -> share of the batch's ``sum |R|`` it drops (modules that drop nothing left out)."""
        shares = self.magnitude.sum(1) / self.scale.sum()
        return {n: float(s) for n, s in zip(self.names, shares) if s != 0}

    def by_type(self) -> dict[str, float]:
        """Module type -> share of the batch's ``sum |R|`` that modules of that type drop."""
        out: dict[str, float] = {}
        for t, s in zip(self.types, (self.magnitude.sum(1) / self.scale.sum()).tolist()):
            out[t] = out.get(t, 0.0) + s
        return {t: s for t, s in out.items() if s != 0}

    def __str__(self) -> str:
        lines = [f"{self.method} -> {self.layer}: {float(self.reached_share.mean()):.4g} of |R| reaches the layer, "
                 f"{float(self.dropped_share.mean()):.4g} dropped (mean over {len(self.scale)} images; shares of "
                 "sum |R| at the start, float rounding included)", "  dropped by module type:"]
        lines += [f"  {t:<20} {s:.3g}" for t, s in sorted(self.by_type().items(), key=lambda kv: -kv[1])]
        top = sorted(self.by_module().items(), key=lambda kv: -kv[1])[:10]
        lines += ["  largest drops by module:"] + [f"  {n:<20} {s:.3g}" for n, s in top]
        return "\n".join(lines)


def _flow(trace, relevance, start, stop, bounds, fold_bn, rules, first_rules):
    """Propagate; returns (relevance at ``stop``, per-step deficit ``[steps, B]`` in float64: the sum of the relevance a
    step received from above minus the sum it handed down, from the ``on_step`` sums)."""
    from .propagation import propagate

    steps = trace.steps
    index = {s.name: i for i, s in enumerate(steps)}
    received: dict[int, torch.Tensor] = {index[start]: relevance.detach().double().flatten(1).sum(1)}
    handed: dict[int, torch.Tensor] = {}

    def on_step(name, r):
        i = index[name]
        shares = r if len(steps[i].parents) > 1 else (r,)
        sums = [s.detach().double().reshape(len(relevance), -1).sum(1) for s in shares]
        handed[i] = sum(sums)
        for parent, s in zip(steps[i].parents, sums):
            received[parent] = received[parent] + s if parent in received else s

    out = propagate(trace, relevance, start, stop, bounds=bounds, fold_bn=fold_bn, rules=rules,
                    first_rules=first_rules, on_step=on_step)
    deficit = torch.zeros(len(steps), len(relevance), dtype=torch.float64, device=relevance.device)
    for i, h in handed.items():
        deficit[i] = received[i] - h
    return out, deficit


def report(model: nn.Module, images: torch.Tensor, method: str, layer: str = "input", target=None, denoise=False,
           contrast=None, cam_layer: str | None = None, **options) -> ConservationReport:
    """Explain as :func:`fgcam.explain` does (same arguments and options) and report where the relevance goes.

    >>> print(fgcam.conservation.report(model, images, "fg-grad-cam", "input"))   # doctest: +SKIP
    """
    from .explain import Explainer

    return Explainer(model, cam_layer=cam_layer, **options).report(images, method, layer, target=target,
                                                                    denoise=denoise, contrast=contrast)


def build_report(method, layer, trace, relevance, start, stop, bounds, fold_bn, rules, first_rules):
    """The :class:`ConservationReport` of propagating ``relevance`` from ``start`` to ``stop`` (used by
    :meth:`fgcam.Explainer.report`)."""
    pos, neg = relevance.clamp(min=0), relevance.clamp(max=0)
    map_p, drop_p = _flow(trace, pos, start, stop, bounds, fold_bn, rules, first_rules)
    map_n, drop_n = _flow(trace, neg, start, stop, bounds, fold_bn, rules, first_rules)
    maps = map_p + map_n
    total = relevance.detach().double().flatten(1)
    dropped = drop_p + drop_n
    reached = maps.detach().double().flatten(1).sum(1)
    if maps.ndim != 4:
        raise ValueError(f"layer {stop!r} outputs shape {list(maps.shape)}; a map needs [B, C, h, w]")
    return ConservationReport(
        method=method, layer=stop, maps=maps.sum(dim=1).detach(), start=total.sum(1), scale=total.abs().sum(1),
        reached=reached, names=[s.name for s in trace.steps], types=[type(s.module).__name__ for s in trace.steps],
        dropped=dropped, magnitude=drop_p.abs() + drop_n.abs(),
        bypassed=total.sum(1) - reached - dropped.sum(0))
