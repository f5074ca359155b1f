"""One recorded forward pass of a model, seen as a chain of leaf modules.

FG-CAM's relevance propagation (paper Eq. 4) walks a network backwards, module by module, from the CAM layer down
to a shallower layer.  To do that it needs, for every module on the way, the tensor that went *into* it on a clean
forward pass of the image.  This module records exactly that, in one forward pass:

* :func:`leaf_names` lists the modules whose output can be asked for (``"features.13"``).
* :func:`record` runs the model once and returns a :class:`Trace`: the logits, the leaf modules in the order they
  ran, and the inputs of the leaves that lie above a chosen layer (nothing is stored below it, to save memory).
  Optionally it cuts the autograd graph at one module's output so that a gradient taken there (Grad-CAM) needs no
  backward pass through the layers below it, and builds no graph for them.
* :func:`explaining` puts a model in the state an explanation needs (eval mode, no in-place activations, residual
  additions made visible by :mod:`fgcam.canonizers`) and restores it exactly afterwards.

The recorded pass is a graph of leaf modules: every tensor a leaf receives must be the model's input or the output
of a leaf that ran before it (a reshape such as ``torch.flatten`` between two leaves is allowed; a leaf's
channels-last output is replaced by a contiguous copy so that such a reshape remains a view).  Each
:class:`Step` notes which steps produced its inputs (``parents``).  For VGG-like models this is a plain chain
(each step's parent is the step before it).  Branches are fine as long as they meet in a leaf module: a residual
block's ``x + body(x)`` is made a leaf (:class:`fgcam.canonizers.Add`) by the canonizers that
:func:`explaining` applies.  A model that applies functional operations between modules (an addition in
``forward()`` that no canonizer knows, a functional pooling, ...) or modifies a module's output in place is
reported with the name of the module where the graph breaks.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .canonizers import canonized


class ChainError(RuntimeError):
    """The model's forward pass is not a graph of leaf modules that fgcam can follow, at the reported place."""


def leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Named modules without children, in registration order (``{"features.0": Conv2d, ...}``)."""
    return {name: m for name, m in model.named_modules() if name and not any(True for _ in m.children())}


def leaf_names(model: nn.Module) -> list[str]:
    """Names of the leaf modules, i.e. the values ``layer=`` and ``cam_layer=`` accept (besides ``"input"``).

    Seen as while explaining: with the leaves that :mod:`fgcam.canonizers` adds to residual blocks
    (``"layer1.0.fgcam_add"``); any module name, a block's or a stage's (``"layer1.0"``), is accepted too.
    """
    with canonized(model):
        return list(leaf_modules(model))


def resolve_leaf(model: nn.Module, name: str, what: str = "layer") -> str:
    """Map a module name to the leaf whose output is that module's output.

    A container (``"features"``) stands for its last leaf module (``"features.43"`` in VGG16-BN).  An unknown name
    raises a :class:`ValueError` that lists the valid names.  Call it on a canonized model (inside
    :func:`explaining`), where a residual block's last leaf is the one that produces its output.
    """
    try:
        module = model.get_submodule(name) if isinstance(name, str) and name else None
    except AttributeError:
        module = None
    if module is None:
        valid = leaf_names(model)
        shown = ", ".join(valid[:60]) + (" ..." if len(valid) > 60 else "")
        raise ValueError(f"unknown {what} {name!r}: the model has no module of that name. "
                         f"Valid names: 'input', {shown}")
    if any(True for _ in module.children()):
        leaves = [n for n, m in module.named_modules() if not any(True for _ in m.children())]
        if not leaves:
            raise ValueError(f"{what} {name!r} is an empty container")
        return f"{name}.{leaves[-1]}"
    return name


@dataclass
class Step:
    """One leaf module as it ran: its name, the module, its input (when recorded) and output shape.

    ``parents`` holds, for each tensor the module received, the index of the step that produced it (``-1``: the
    model's input).  A module with several inputs (:class:`fgcam.canonizers.Add`) has a tuple as ``input`` and
    ``input_shape``.
    """

    name: str
    module: nn.Module
    input: torch.Tensor | tuple[torch.Tensor, ...] | None
    input_shape: torch.Size | tuple[torch.Size, ...]
    output_shape: torch.Size
    parents: tuple[int, ...] = (-1,)


@dataclass
class Trace:
    """Result of :func:`record`: logits, the chain of steps, the activation at ``grad_at`` (a grad leaf)."""

    logits: torch.Tensor
    steps: list[Step]
    images: torch.Tensor
    cut: torch.Tensor | None = None          # output of the module named by grad_at, requires grad
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # outputs kept on request

    def index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        ran = ", ".join(s.name for s in self.steps)
        raise ValueError(f"module {name!r} did not run in the forward pass (modules that ran: {ran})")


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.numel() == b.numel() and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype)


def record(model: nn.Module, images: torch.Tensor, *, store_from: str | None = "input",
           grad_at: str | None = None, keep_outputs: tuple[str, ...] = (),
           store: Callable[[str, nn.Module], bool] | None = None) -> Trace:
    """Run ``model(images)`` once and record the graph of leaf modules (a chain for VGG), in execution order.

    Parameters
    ----------
    store_from:
        ``"input"`` stores the input of every leaf; a leaf name stores the inputs of the leaves that run *after*
        it (those a propagation down to that leaf's output needs); ``None`` stores none.
    grad_at:
        Leaf name whose output is detached and made to require grad; grad mode is off before that module and on
        after it, so ``torch.autograd.grad(logits..., trace.cut)`` touches only the layers above it.
    keep_outputs:
        Leaf names whose outputs are kept in ``trace.outputs`` (detached).
    store:
        Optional ``store(name, module) -> bool``: of the leaves ``store_from`` selects, keep only the inputs of
        those it accepts (the others get ``input=None``; their ``input_shape`` is recorded).  Inputs not kept are
        freed as soon as the forward pass no longer needs them
        (:func:`fgcam.propagation.needs_input` keeps those the propagation rules read).
    """
    steps: list[Step] = []
    state = {"store": store_from == "input"}
    produced: list[tuple[int, weakref.ref, int]] = []   # (step, its output, the output's version) newest last
    cut: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    handles = []

    def producer(x: torch.Tensor, name: str, module: nn.Module, in_place: bool) -> int:
        """Index of the step whose output ``x`` is (newest first), -1 for the model's input."""
        for i, ref, version in reversed(produced):
            out = ref()
            if out is not None and _same_tensor(x, out):
                if x._version != version and not in_place:
                    raise ChainError(
                        f"the output of module {steps[i].name!r} was modified in place before module {name!r} "
                        "received it (an in-place operation such as `out += identity` in forward()?); fgcam "
                        "needs each module's output unchanged")
                return i
        if _same_tensor(x, images):
            return -1
        if not steps:
            raise ChainError(f"the first module that ran, {name!r}, did not receive the model's input")
        raise ChainError(
            f"module {name!r} ({type(module).__name__}) does not receive the output of the module that ran before "
            f"it ({steps[-1].name!r}) nor that of any other module: the forward pass is not a plain chain here (a "
            "residual connection or a functional operation between modules?). fgcam.canonizers makes the "
            "additions of known residual blocks visible; register one for this block with "
            "fgcam.canonizers.register")

    def hook(name):
        def fn(module, args, output):
            if (not args or not all(isinstance(a, torch.Tensor) for a in args)
                    or not isinstance(output, torch.Tensor)):
                raise ChainError(f"module {name!r} ({type(module).__name__}) does not map tensors to one "
                                 "tensor; fgcam supports graphs of such modules")
            if name in seen:
                raise ChainError(f"module {name!r} ({type(module).__name__}) runs twice in one forward pass; "
                                 "shared modules are not supported")
            seen.add(name)
            parents = tuple(producer(a, name, module, _same_tensor(a, output)) for a in args)
            if not output.is_contiguous():
                # A channels-last output (channels-last input or weights): made contiguous, so that a reshape
                # between two leaves (``torch.flatten``) stays a view of it that the next leaf can be traced to.
                output = output.contiguous()
            keep = state["store"] and (store is None or store(name, module))
            if len(args) == 1:
                x = args[0]
                stored, shape = (x.detach() if keep else None), x.shape
            else:
                stored = tuple(a.detach() for a in args) if keep else None
                shape = tuple(a.shape for a in args)
            steps.append(Step(name, module, stored, shape, output.shape, parents))
            if name in keep_outputs:
                outputs[name] = output.detach()
            if name == store_from:
                state["store"] = True
            if name == grad_at:
                output = output.detach().requires_grad_(True)
                cut["a"] = output
                torch.set_grad_enabled(True)
            produced.append((len(steps) - 1, weakref.ref(output), output._version))
            return output
        return fn

    for name, module in leaf_modules(model).items():
        handles.append(module.register_forward_hook(hook(name)))
    grad_mode = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        logits = model(images)
    finally:
        torch.set_grad_enabled(grad_mode)
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ChainError(f"the model must return logits of shape [B, classes]; got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    last = produced[-1][1]() if produced else None
    if steps and (last is None or not _same_tensor(logits, last)):
        raise ChainError(f"the model's output is not the output of its last module ({steps[-1].name!r}): "
                         "a functional operation follows it in forward()")
    if grad_at is not None and "a" not in cut:
        raise ChainError(f"module {grad_at!r} did not run in the forward pass")
    return Trace(logits=logits, steps=steps, images=images, cut=cut.get("a"), outputs=outputs)


@contextlib.contextmanager
def explaining(model: nn.Module):
    """Eval mode, out-of-place activations and canonized blocks for the duration of an explanation.

    In-place activations (``ReLU(inplace=True)``) would overwrite the tensors the propagation rules read, so their
    ``inplace`` flag is switched off while explaining.  Residual blocks get the forward of
    :func:`fgcam.canonizers.canonized`.  The modules' ``training`` flags, ``inplace`` flags, ``forward``
    attributes and children are restored exactly, also when an error is raised.
    """
    modes = {m: m.training for m in model.modules()}
    inplace = {m: m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)}
    try:
        model.eval()
        for m in inplace:
            m.inplace = False
        with canonized(model):
            yield model
    finally:
        for m, flag in inplace.items():
            m.inplace = flag
        for m, mode in modes.items():
            m.training = mode
