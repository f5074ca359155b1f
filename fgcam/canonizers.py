"""Canonizers: make the operations hidden in a block's ``forward()`` visible as leaf modules, reversibly.

fgcam records one forward pass as a graph of *leaf modules* (:mod:`fgcam.graph`) and gives each leaf a rule
(:mod:`fgcam.rules`).  A residual block computes ``x + body(x)`` inside its ``forward()``: the addition is no
module, so no rule could split the relevance between the two summands.  A canonizer (the idea and the name are
zennit's) temporarily replaces such a block's ``forward`` by an equivalent one that routes the addition through a
small :class:`Add` leaf (rule: each summand gets the share of the sum it contributed, ``R_a = a R / (a + b)``)
and, where the block calls one stateless module several times (torchvision's ``Bottleneck`` calls ``self.relu``
three times), through fresh copies of it, so that every leaf runs once.

:func:`canonized` applies the registered canonizers to every block of a model and undoes them on exit, also on
error: afterwards the model has the same modules, the same ``forward`` attributes and no hooks, and it computes
the same outputs while canonized (the same operations in the same order).  Extra modules are registered *after*
the block's own children, so a block's last registered leaf is the one that produces its output (``"layer4"``
stands for ``"layer4.1.fgcam_relu"`` while explaining).  Their names start with ``fgcam_``.

=========================================  ================================================================
block (exact class)                        canonized forward
=========================================  ================================================================
``torchvision...resnet.BasicBlock``        ``fgcam_relu(fgcam_add(bn2(...), downsample(x) or x))``
``torchvision...resnet.Bottleneck``        the same, with ``fgcam_relu2`` for the second ReLU
``torchvision...InvertedResidual``         ``fgcam_add(conv(x), x)`` when ``use_res_connect``
``torchvision...MobileNetV2`` (the model)  ``classifier(flatten(fgcam_pool(features(x))))``: its functional
                                           global average pool becomes an ``nn.AdaptiveAvgPool2d`` leaf
``fgcam.zoo.Residual``                     ``fgcam_add(body(x), x)``
=========================================  ================================================================

Blocks are matched by their exact class (a subclass may have changed ``forward``).  Other blocks can be added
with :func:`register`.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable

import torch
from torch import nn


class Add(nn.Module):
    """``a + b`` as a leaf module, so that a residual addition is a step of the recorded graph."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


#: A canonizer: ``fn(block)`` returns ``(forward, {name: new module})`` or ``None`` (leave the block alone).
Canonizer = Callable[[nn.Module], "tuple[Callable, dict[str, nn.Module]] | None"]


def _basic_block(block):
    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.fgcam_relu(self.fgcam_add(out, identity))
    return forward, {"fgcam_add": Add(), "fgcam_relu": nn.ReLU()}


def _bottleneck(block):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.fgcam_relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.fgcam_relu(self.fgcam_add(out, identity))
    return forward, {"fgcam_relu2": nn.ReLU(), "fgcam_add": Add(), "fgcam_relu": nn.ReLU()}


def _inverted_residual(block):
    if not block.use_res_connect:
        return None                       # a plain chain already

    def forward(self, x):
        return self.fgcam_add(self.conv(x), x)
    return forward, {"fgcam_add": Add()}


def _mobilenet_v2(model):
    def forward(self, x):
        return self.classifier(torch.flatten(self.fgcam_pool(self.features(x)), 1))
    return forward, {"fgcam_pool": nn.AdaptiveAvgPool2d((1, 1))}


def _residual_body(block):
    def forward(self, x):
        return self.fgcam_add(self.body(x), x)
    return forward, {"fgcam_add": Add()}


#: Qualified class name (``module.QualName``) -> canonizer.  Names, so that torchvision is not imported here.
CANONIZERS: dict[str, Canonizer] = {
    "torchvision.models.resnet.BasicBlock": _basic_block,
    "torchvision.models.resnet.Bottleneck": _bottleneck,
    "torchvision.models.mobilenetv2.InvertedResidual": _inverted_residual,
    "torchvision.models.mobilenetv2.MobileNetV2": _mobilenet_v2,
    "fgcam.zoo.Residual": _residual_body,
}


def _key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type | str, canonizer: Canonizer) -> None:
    """Register ``canonizer`` for blocks of exactly class ``cls`` (a class or its qualified name).

    ``canonizer(block)`` returns ``(forward, extra)``: ``forward(self, *args)`` is bound to the block for the
    duration of an explanation, and ``extra`` (a dict of fresh modules, names starting with ``fgcam_``) is
    registered on the block meanwhile; or ``None`` to leave that block alone.
    """
    CANONIZERS[cls if isinstance(cls, str) else _key(cls)] = canonizer


@contextlib.contextmanager
def canonized(model: nn.Module):
    """Apply the registered canonizers to every block of ``model``; undo them on exit (also on error).

    Re-entrant: a block that is already canonized (it has the extra modules) is left as it is.
    """
    done = []
    try:
        for block in list(model.modules()):
            canonizer = CANONIZERS.get(_key(type(block)))
            spec = canonizer(block) if canonizer is not None else None
            if spec is None:
                continue
            forward, extra = spec
            if any(name in block._modules for name in extra):
                continue                  # canonized by an enclosing call
            own = block.__dict__.get("forward", _MISSING)
            done.append((block, own, list(extra)))
            for name, module in extra.items():
                block.add_module(name, module)
            block.forward = types.MethodType(forward, block)
        yield model
    finally:
        for block, own, names in reversed(done):
            if own is _MISSING:
                del block.forward
            else:
                block.forward = own
            for name in names:
                del block._modules[name]


_MISSING = object()
