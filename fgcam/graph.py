"""One recorded forward pass of a model, seen as a chain of leaf modules.

FG-CAM's relevance propagation (paper Eq. 4) walks a network backwards, module by module, from the CAM layer down
to a shallower layer.  To do that it needs, for every module on the way, the tensor that went *into* it on a clean
forward pass of the image.  This module records exactly that, in one forward pass:

* :func:`leaf_names` lists the modules whose output can be asked for (``"features.13"``).
* :func:`record` runs the model once and returns a :class:`Trace`: the logits, the leaf modules in the order they
  ran, and the inputs of the leaves that lie above a chosen layer (nothing is stored below it, to save memory).
  Optionally it cuts the autograd graph at one module's output so that a gradient taken there (Grad-CAM) needs no
  backward pass through the layers below it, and builds no graph for them.
* :func:`explaining` puts a model in the state an explanation needs (eval mode, no in-place activations) and
  restores it exactly afterwards.

Only plain chains are supported: every leaf must receive the tensor the previous leaf produced (a reshape such as
``torch.flatten`` between two leaves is allowed).  A model whose ``forward`` adds branches (residual connections)
or applies functional operations between modules is reported with the name of the module where the chain breaks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn


class ChainError(RuntimeError):
    """The model's forward pass is not a plain chain of leaf modules at the reported place."""


def leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Named modules without children, in registration order (``{"features.0": Conv2d, ...}``)."""
    return {name: m for name, m in model.named_modules() if name and not any(True for _ in m.children())}


def leaf_names(model: nn.Module) -> list[str]:
    """Names of the leaf modules, i.e. the values ``layer=`` and ``cam_layer=`` accept (besides ``"input"``)."""
    return list(leaf_modules(model))


def resolve_leaf(model: nn.Module, name: str, what: str = "layer") -> str:
    """Map a module name to the leaf whose output is that module's output.

    A container (``"features"``) stands for its last leaf module (``"features.43"`` in VGG16-BN).  An unknown name
    raises a :class:`ValueError` that lists the valid names.
    """
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        valid = leaf_names(model)
        shown = ", ".join(valid[:60]) + (" ..." if len(valid) > 60 else "")
        raise ValueError(f"unknown {what} {name!r}: the model has no module of that name. "
                         f"Valid names: 'input', {shown}")
    module = modules[name]
    if any(True for _ in module.children()):
        leaves = [n for n, m in module.named_modules() if not any(True for _ in m.children())]
        if not leaves:
            raise ValueError(f"{what} {name!r} is an empty container")
        return f"{name}.{leaves[-1]}"
    return name


@dataclass
class Step:
    """One leaf module as it ran: its name, the module, its input (when recorded) and output shape."""

    name: str
    module: nn.Module
    input: torch.Tensor | None
    input_shape: torch.Size
    output_shape: torch.Size


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
           grad_at: str | None = None, keep_outputs: tuple[str, ...] = ()) -> Trace:
    """Run ``model(images)`` once and record the chain of leaf modules.

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
    """
    steps: list[Step] = []
    state = {"store": store_from == "input", "prev": None, "prev_name": None}
    cut: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    handles = []

    def hook(name):
        def fn(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
                raise ChainError(f"module {name!r} ({type(module).__name__}) does not map one tensor to one "
                                 "tensor; fgcam supports chains of such modules")
            x = args[0]
            if name in seen:
                raise ChainError(f"module {name!r} ({type(module).__name__}) runs twice in one forward pass; "
                                 "shared modules are not supported")
            seen.add(name)
            prev = state["prev"]
            if prev is None:
                if not _same_tensor(x, images):
                    raise ChainError(f"the first module that ran, {name!r}, did not receive the model's input")
            elif not _same_tensor(x, prev):
                raise ChainError(
                    f"module {name!r} ({type(module).__name__}) does not receive the output of the module that ran "
                    f"before it ({state['prev_name']!r}): the forward pass is not a plain chain here (a residual "
                    "connection or a functional operation between modules?)")
            steps.append(Step(name, module, x.detach() if state["store"] else None, x.shape, output.shape))
            if name in keep_outputs:
                outputs[name] = output.detach()
            if name == store_from:
                state["store"] = True
            if name == grad_at:
                output = output.detach().requires_grad_(True)
                cut["a"] = output
                torch.set_grad_enabled(True)
            state["prev"], state["prev_name"] = output, name
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
    if state["prev"] is not None and not _same_tensor(logits, state["prev"]):
        raise ChainError(f"the model's output is not the output of its last module ({state['prev_name']!r}): "
                         "a functional operation follows it in forward()")
    if grad_at is not None and "a" not in cut:
        raise ChainError(f"module {grad_at!r} did not run in the forward pass")
    return Trace(logits=logits, steps=steps, images=images, cut=cut.get("a"), outputs=outputs)


@contextlib.contextmanager
def explaining(model: nn.Module):
    """Eval mode and out-of-place activations for the duration of an explanation; both restored afterwards.

    In-place activations (``ReLU(inplace=True)``) would overwrite the tensors the propagation rules read, so their
    ``inplace`` flag is switched off while explaining.  The modules' ``training`` flags and ``inplace`` flags are
    restored exactly, also when an error is raised.
    """
    modes = {m: m.training for m in model.modules()}
    inplace = {m: m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)}
    try:
        model.eval()
        for m in inplace:
            m.inplace = False
        yield model
    finally:
        for m, flag in inplace.items():
            m.inplace = flag
        for m, mode in modes.items():
            m.training = mode
