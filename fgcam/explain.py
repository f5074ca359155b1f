"""The public entry point: :func:`explain` (and the reusable :class:`Explainer`).

========================  =================================================================================
method                    what it returns at ``layer``
========================  =================================================================================
``grad-cam`` ...          plain CAM (Eq. 1 without the ReLU): ``sum_k alpha_k A_k`` of ``layer``'s activations,
                          at that layer's resolution (``grad-cam``, ``score-cam``, ``layer-cam``,
                          ``grad-cam++``, ``xgrad-cam``)
``fg-grad-cam`` ...       FG-CAM (Eq. 2-4, 8): components ``alpha_k A_k`` at ``cam_layer`` (the last module of
                          ``features`` for VGG, as in the reference; see :func:`default_cam_layer` for other
                          families), optionally denoised, propagated with the
                          rules of :mod:`fgcam.rules` to ``layer``, summed over channels
``lrp``, ``clrp``,        the same rules started from the output relevance of :mod:`fgcam.lrp`
``sglrp``
========================  =================================================================================

All maps are signed, before any ReLU or normalisation, ``[B, h, w]`` on the images' device.

Beyond the paper (both opt-in; the defaults are the reference's):

* ``contrast="others"`` or ``"softmax"`` (CAM and FG-CAM methods): class-contrastive components, the target's
  minus those of a dual output, the mean of the other classes' logits (the CAM analogue of CLRP) or their
  combination weighted by their softmax probabilities (of SGLRP); see :func:`fgcam.lrp.dual_coefficients`.
* ``zero_denominator="flat"`` or ``"w2"`` (an option): rules that keep the relevance the reference drops on zero
  denominators (:mod:`fgcam.conservation`, which also reports where relevance is dropped).

Channel weights computed once, used many times: :meth:`Explainer.weights` returns the ``alpha_k`` of a batch as a
:class:`ChannelWeights`, and ``weights=`` of :meth:`Explainer.explain` (:func:`explain`, :meth:`Explainer.report`)
uses them instead of computing them again.  FG-Score-CAM and FG-Score-CAMD at every layer need the same Score-CAM
weights at the CAM layer, whose ``C`` masked forward passes per image are the expensive step of the experiment grid.

Supported models: CNNs whose forward pass is a graph of leaf modules with rules (:mod:`fgcam.rules`): plain chains
(VGG, MobileNet V1) and residual networks whose additions :mod:`fgcam.canonizers` makes visible (torchvision
ResNet and MobileNet V2, the MobileNet V2 of :mod:`fgcam.zoo`).  The model is left exactly as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from . import components as comp
from .canonizers import canonized
from .conservation import ConservationReport, build_report, conserving_rules
from .denoise import denoise_components, rank_for
from .graph import explaining, leaf_names, record, resolve_leaf
from .lrp import CONTRASTS, dual_coefficients, output_relevance
from .propagation import needs_input, propagate, resolve_bounds


@dataclass(frozen=True)
class Method:
    """A method's recipe: its family (``cam``, ``fg`` or ``lrp``) and its base (weights or output relevance)."""

    name: str
    family: str
    base: str

    @property
    def needs_gradient(self) -> bool:
        return self.base in _GRADIENT_BASES


_GRADIENT_BASES = {"grad-cam": comp.grad_cam_weights, "grad-cam++": comp.grad_cam_pp_weights,
                   "xgrad-cam": comp.xgrad_cam_weights, "layer-cam": None}
_CAM_BASES = ("grad-cam", "score-cam", "layer-cam", "grad-cam++", "xgrad-cam")

#: Every method :func:`explain` accepts, by name.
METHODS: dict[str, Method] = {
    **{b: Method(b, "cam", b) for b in _CAM_BASES},
    **{f"fg-{b}": Method(f"fg-{b}", "fg", b) for b in _CAM_BASES},
    **{k: Method(k, "lrp", k) for k in ("lrp", "clrp", "sglrp")},
}

_OPTIONS = {"zb_bounds": "image", "bn": "pass", "score_batch_size": None, "rules": None, "zero_denominator": "drop"}


def default_cam_layer(model: nn.Module) -> str:
    """The CAM layer used when ``cam_layer`` is not given: the output of the last convolutional stage.

    * a ``features`` sequence (VGG, as the reference: its last max-pool ``"features.43"``; torchvision's
      MobileNet V2: ``"features.18.2"``; the MobileNets of :mod:`fgcam.zoo`: their last ``ReLU6``): the name of
      the last leaf module of ``features``, or ``"features"`` itself when that leaf exists only while explaining
      (a residual block's addition);
    * torchvision ResNet (a ``layer4`` stage): ``"layer4"``, the output of its last residual block.
    """
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 0:
        last, module = next(reversed(features._modules.items()))
        if not any(True for _ in module.children()):
            return f"features.{last}"             # a leaf (VGG's "features.43"): no need to canonize
        with canonized(model):
            leaf = resolve_leaf(model, "features")
        return "features" if ".fgcam_" in f".{leaf}" else leaf
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return "layer4"
    raise ValueError(f"{type(model).__name__} has no 'features' sequence nor a ResNet 'layer4', so fgcam cannot "
                     "choose the CAM layer: pass cam_layer='<module name>' (the last convolutional block's output)")


@dataclass(frozen=True, eq=False)
class ChannelWeights:
    """The channel weights ``alpha_k`` (Eq. 1) of one batch, from :meth:`Explainer.weights`, for ``weights=``.

    A CAM map (Eq. 1) and the FG-CAM components ``alpha_k A_k`` (Eq. 3) multiply the activations ``A`` of a layer by
    these weights; computing them is the expensive step for Score-CAM (``C`` masked forward passes per image), so a
    caller that explains the same images several times (FG-Score-CAM and FG-Score-CAMD at every layer) computes them
    once and passes them to each call.  Such a call gives the same maps, bit for bit, as one that computes them.

    The weights hold what they were computed for; a call whose images, layer activations, target, method base,
    ``contrast`` or batch size differ is refused, naming what differs.  They belong to the model they were computed
    with (the activations' fingerprint tells another model apart only through that layer).

    Attributes: ``alpha`` ``[B, C]`` (with ``contrast``: the target's minus the dual output's), ``target`` ``[B]``,
    ``method`` (the base: ``"score-cam"``, ``"grad-cam"``, ...), ``layer`` (the leaf module whose output ``A`` they
    weigh), ``contrast``, and SHA-1 fingerprints of the images and of ``A``.
    """

    alpha: torch.Tensor
    target: torch.Tensor
    method: str
    layer: str
    contrast: str | None
    images_sha1: str
    activations_sha1: str

    def __repr__(self) -> str:
        return (f"ChannelWeights({self.method!r} at {self.layer!r}, {tuple(self.alpha.shape)}, "
                f"contrast={self.contrast!r}, target={self.target.tolist()})")

    def _check_call(self, m: "Method", contrast, batch: int) -> None:
        """What a call can check before its forward pass: the family, method base, contrast and batch size."""
        if m.family == "lrp":
            raise ValueError(f"weights= applies to CAM and FG-CAM methods; {m.name} starts from the output relevance "
                             "and has no channel weights")
        if m.base == "layer-cam":
            raise ValueError(f"weights= do not apply to {m.name}: Layer-CAM weighs each pixel, not channels")
        if m.base != self.method:
            raise ValueError(f"weights= were computed for {self.method!r}; {m.name} needs {m.base!r} weights")
        if contrast != self.contrast:
            raise ValueError(f"weights= were computed with contrast={self.contrast!r}; this call has "
                             f"contrast={contrast!r}")
        if batch != self.alpha.shape[0]:
            raise ValueError(f"weights= are for a batch of {self.alpha.shape[0]} images; this call has {batch}")

    def _check_layer(self, at: str, images, A, t) -> None:
        """What a call checks after its forward pass: the layer, the target, the images and the activations."""
        if at != self.layer:
            raise ValueError(f"weights= are of layer {self.layer!r}; this call weighs the activations of {at!r}")
        if not torch.equal(t, self.target.to(t.device)):
            raise ValueError(f"weights= are for target {self.target.tolist()}; this call explains {t.tolist()}")
        if _sha1(images) != self.images_sha1:
            raise ValueError("weights= were computed for other images (the images' SHA-1 differs)")
        if _sha1(A) != self.activations_sha1:
            raise ValueError(f"weights= were computed for other activations of {at!r} (their SHA-1 differs: another "
                             "model, or the model changed)")


def _sha1(t: torch.Tensor) -> str:
    """SHA-1 of a tensor's dtype, shape and bytes (the fingerprints of :class:`ChannelWeights`)."""
    t = t.detach().cpu().contiguous()
    return hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy()
                        .tobytes()).hexdigest()


def _check_images(model: nn.Module, images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, C, H, W]; got {type(images).__name__}")
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else images.shape[1] if images.ndim == 4 else 3
    if images.ndim != 4 or images.shape[1] != channels:
        hint = " (add a batch dimension: images[None])" if images.ndim == 3 else ""
        raise ValueError(f"images must have shape [B, {channels}, H, W]; got {list(images.shape)}{hint}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor (normalised as the model expects); got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not bool(torch.isfinite(images).all()):
        bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"images contain NaN or Inf (images {bad} of the batch)")


@contextlib.contextmanager
def _autograd_on(model: nn.Module):
    """Gradients on for the duration of an explanation, also when the caller is under ``torch.no_grad()`` or
    ``torch.inference_mode()``: every method needs autograd (the rules take one backward pass per layer).

    Inside ``torch.inference_mode()`` the block leaves inference mode (``torch.inference_mode(False)``); a model
    whose parameters were created in inference mode cannot take part in autograd at all, which is reported.
    """
    bad = next((name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_inference()), None)
    if bad is not None:
        raise RuntimeError(f"the model's tensor {bad!r} was created under torch.inference_mode(), and inference "
                           "tensors cannot be used by autograd, which every fgcam method needs: create or load the "
                           "model outside torch.inference_mode() (or clone its parameters outside it)")
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _plain(t):
    """``t`` as an ordinary contiguous tensor: an inference-mode tensor is cloned (outside inference mode, inside
    :func:`_autograd_on`), a channels-last one is made contiguous (the maps come back in the usual layout)."""
    if isinstance(t, torch.Tensor):
        if t.is_inference():
            t = t.clone()
        t = t.contiguous()
    return t


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    b, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"target must be an int or integer tensor; got {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"target has {t.numel()} entries for a batch of {b} images")
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"target {t.tolist()} out of range: the model has {k} classes (0..{k - 1})")
    return t.contiguous()


class Explainer:
    """Reusable explainer for one model: ``Explainer(model)(images, "fg-grad-cam", "features.13")``.

    Holds the options (``zb_bounds``, ``bn``, ``score_batch_size``, ``rules``, ``zero_denominator``) and the CAM
    layer; every call records one forward pass and leaves the model as it found it (mode, in-place flags, hooks).
    """

    def __init__(self, model: nn.Module, cam_layer: str | None = None, **options):
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; valid options: {sorted(_OPTIONS)}")
        self.model = model
        self.options = {**_OPTIONS, **options}
        if self.options["bn"] not in ("pass", "fold"):
            raise ValueError(f"bn must be 'pass' (reference) or 'fold'; got {self.options['bn']!r}")
        hidden, self._first_rules = conserving_rules(self.options["zero_denominator"])
        self._rules = {**hidden, **(self.options["rules"] or {})} if hidden else self.options["rules"]
        self.cam_layer = cam_layer

    def _layer(self, layer: str) -> str:
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name or 'input'; got {layer!r}")
        return "input" if layer == "input" else resolve_leaf(self.model, layer)

    def __call__(self, images: torch.Tensor, method: str, layer: str, target=None, denoise=False,
                 contrast=None, weights: ChannelWeights | None = None) -> torch.Tensor:
        return self.explain(images, method, layer, target=target, denoise=denoise, contrast=contrast,
                            weights=weights)

    def _check(self, images, method, layer, denoise, contrast, weights=None) -> Method:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        m = METHODS[method]
        _check_images(self.model, images)
        if m.family == "cam" and layer == "input":
            raise ValueError(f"{method} is a plain CAM method and needs a hidden layer (e.g. 'features.13'); "
                             "for input-resolution maps use fg-" + method + " or lrp/clrp/sglrp")
        if denoise and m.family != "fg":
            raise ValueError(f"denoise applies to FG-CAM methods only, not {method}")
        _check_contrast(contrast, m)
        if weights is not None:
            if not isinstance(weights, ChannelWeights):
                raise TypeError("weights must be ChannelWeights from Explainer.weights(); got "
                                f"{type(weights).__name__}")
            weights._check_call(m, contrast, images.shape[0])
        return m

    def explain(self, images, method, layer, target=None, denoise=False, contrast=None,
                weights: ChannelWeights | None = None) -> torch.Tensor:
        """See :func:`fgcam.explain`."""
        m = self._check(images, method, layer, denoise, contrast, weights)
        with _autograd_on(self.model), explaining(self.model):  # names resolve on the canonized model
            images, target = _plain(images), _plain(target)
            leaf = self._layer(layer)
            if m.family == "cam":
                return self._cam(images, m, leaf, target, contrast, weights)
            return self._propagate(*self._start(images, m, leaf, target, denoise, contrast, weights), leaf, images)

    def report(self, images, method, layer="input", target=None, denoise=False, contrast=None,
               weights: ChannelWeights | None = None) -> ConservationReport:
        """Explain like :meth:`explain` (FG-CAM and LRP methods) and report where the relevance goes: how much
        reaches ``layer`` and which modules drop the rest (:class:`fgcam.conservation.ConservationReport`)."""
        m = self._check(images, method, layer, denoise, contrast, weights)
        if m.family == "cam":
            raise ValueError(f"{method} propagates nothing; report() applies to FG-CAM and LRP methods")
        with _autograd_on(self.model), explaining(self.model):
            images, target = _plain(images), _plain(target)
            leaf = self._layer(layer)
            trace, relevance, start = self._start(images, m, leaf, target, denoise, contrast, weights)
            return build_report(method, leaf, trace, relevance, start, leaf, self._bounds(leaf, images),
                                self.options["bn"] == "fold", self._rules, self._first_rules)

    # -- the three families -------------------------------------------------------------------------------
    def _activation_and_gradient(self, images, m: Method, at: str, store_from, target, contrast=None,
                                 weights: ChannelWeights | None = None):
        """One forward pass; returns (trace, A at ``at``, gradient of the target logit at ``at`` or None, target,
        dual) with ``dual = None`` or ``(coefficients [B, K], gradient of the dual output or None)``.

        With ``weights`` (checked against this pass) neither the gradients nor the dual are needed: None."""
        grad = m.needs_gradient and weights is None
        trace = record(self.model, images, store_from=store_from, grad_at=at if grad else None,
                       keep_outputs=() if grad else (at,), store=needs_input(self._rules))
        t = _targets(target, trace.logits)
        dual = None
        if contrast is not None and weights is None:
            dual = (dual_coefficients(trace.logits.detach(), t, contrast), None)
        if grad:
            y = trace.logits.gather(1, t[:, None]).sum()
            (G,) = torch.autograd.grad(y, trace.cut, retain_graph=dual is not None)
            if dual is not None:                 # one more backward pass: d(sum_n c_n y_n)/dA
                dual = (dual[0], torch.autograd.grad((trace.logits * dual[0]).sum(), trace.cut)[0])
            A = trace.cut.detach()
        else:
            A, G = trace.outputs[at], None
        if A.ndim != 4:
            raise ValueError(f"CAM layer {at!r} outputs shape {list(A.shape)}; CAM methods need [B, C, h, w]")
        if weights is not None:
            weights._check_layer(at, images, A, t)
        return trace, A, G, t, dual

    def _components(self, images, m: Method, A, G, t, dual=None, weights: ChannelWeights | None = None):
        """``alpha_k A_k`` of the target; with ``dual``, minus the dual output's (contrastive components); with
        ``weights``, their ``alpha`` (:meth:`weights`)."""
        if m.base == "layer-cam":
            I = comp.layer_cam_components(A, G)
            return I if dual is None else I - comp.layer_cam_components(A, dual[1])
        w = weights.alpha.to(A.device) if weights is not None else self._channel_weights(images, m, A, G, t, dual)
        return w[:, :, None, None] * A

    def _channel_weights(self, images, m: Method, A, G, t, dual=None) -> torch.Tensor:
        """``alpha_k`` ``[B, C]`` of a channel-weight base (Eq. 1); with ``dual``, minus the dual output's."""
        if m.base == "score-cam":
            if dual is None:
                w = comp.score_cam_weights(self.model, images, A, t, self.options["score_batch_size"])
            else:
                wt, wd = comp.score_cam_contrast_weights(self.model, images, A, t, dual[0],
                                                         self.options["score_batch_size"])
                w = wt - wd
        else:
            w = _GRADIENT_BASES[m.base](A, G)
            if dual is not None:
                w = w - _GRADIENT_BASES[m.base](A, dual[1])
        return w

    def weights(self, images: torch.Tensor, method: str, layer: str | None = None, target=None,
                contrast=None) -> ChannelWeights:
        """The channel weights ``alpha_k`` (Eq. 1) of ``images``, computed once for several calls with
        ``weights=`` (:class:`ChannelWeights`; the maps are bit-equal to those of calls that compute them).

        What it is for: Score-CAM's weights take ``C`` masked forward passes per image, the expensive step of the
        experiment grid, and FG-Score-CAM and FG-Score-CAMD at every layer share them::

            w = explainer.weights(images, "fg-score-cam", target=target)
            maps = {(layer, d): explainer(images, "fg-score-cam", layer, target=target, denoise=d, weights=w)
                    for layer in ("features.13", "input") for d in (False, True)}

        ``method``: a CAM or FG-CAM method with channel weights (``grad-cam``, ``score-cam``, ``grad-cam++``,
        ``xgrad-cam``, or their ``fg-`` names; the weights serve both).  Layer-CAM weighs each pixel, not
        channels, and is refused.  ``layer``: whose activations they weigh; default the CAM layer (where FG-CAM
        methods take their components); a plain CAM method at another layer needs weights of that layer.
        ``target`` and ``contrast`` as in :func:`fgcam.explain` (a call using the weights must explain the same
        target with the same contrast).
        """
        m = METHODS.get(method if method.startswith("fg-") else f"fg-{method}") if isinstance(method, str) else None
        if m is None or m.family != "fg":
            raise ValueError(f"unknown CAM method {method!r}; methods with channel weights: "
                             + ", ".join(b for b in _CAM_BASES if b != "layer-cam"))
        if m.base == "layer-cam":
            raise ValueError("layer-cam weighs each pixel (ReLU(dy/dA)), not channels: it has no channel weights "
                             "(and no masked forward passes to save)")
        _check_images(self.model, images)
        _check_contrast(contrast, m)
        with _autograd_on(self.model), explaining(self.model):
            images, target = _plain(images), _plain(target)
            at = self._cam_leaf() if layer is None else self._layer(layer)
            if at == "input":
                raise ValueError("channel weights belong to a hidden layer's activations, not to 'input'")
            _, A, G, t, dual = self._activation_and_gradient(images, m, at, None, target, contrast)
            alpha = self._channel_weights(images, m, A, G, t, dual).detach()
            return ChannelWeights(alpha, t, m.base, at, contrast, _sha1(images), _sha1(A))

    def components(self, images: torch.Tensor, method: str, target=None,
                   contrast=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Explanation components ``I_k = alpha_k A_k`` (Eq. 3) at the CAM layer, before denoising (with
        ``contrast``: the target's minus the dual output's, see :func:`fgcam.explain`).

        ``method`` is a base (``"grad-cam"``) or FG method name; returns ``(I [B, C, h, w], target [B])``.
        """
        m = METHODS.get(method if method.startswith("fg-") else f"fg-{method}")
        if m is None:
            raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join(_CAM_BASES)}")
        _check_images(self.model, images)
        _check_contrast(contrast, m)
        with _autograd_on(self.model), explaining(self.model):
            images, target = _plain(images), _plain(target)
            _, A, G, t, dual = self._activation_and_gradient(images, m, self._cam_leaf(), None, target, contrast)
            return self._components(images, m, A, G, t, dual).detach(), t

    def _cam_leaf(self) -> str:
        """The CAM layer's leaf; call it while explaining (canonized)."""
        return resolve_leaf(self.model, self.cam_layer or default_cam_layer(self.model), "cam_layer")

    def _cam(self, images, m, leaf, target, contrast, weights=None):
        trace, A, G, t, dual = self._activation_and_gradient(images, m, leaf, None, target, contrast, weights)
        return self._components(images, m, A, G, t, dual, weights).sum(dim=1).detach()

    def _bounds(self, leaf, images):
        return resolve_bounds(self.options["zb_bounds"], images) if leaf == "input" else None

    def _propagate(self, trace, relevance, start, leaf, images):
        r = propagate(trace, relevance, start, leaf, bounds=self._bounds(leaf, images),
                      fold_bn=self.options["bn"] == "fold", rules=self._rules, first_rules=self._first_rules)
        if r.ndim != 4:
            raise ValueError(f"layer {leaf!r} outputs shape {list(r.shape)}; a map needs [B, C, h, w]")
        return r.sum(dim=1).detach()

    def _start(self, images, m, leaf, target, denoise, contrast, weights=None):
        """FG-CAM and LRP methods: ``(trace, relevance, start)``, the relevance to propagate from module ``start``."""
        if m.family == "lrp":
            trace = record(self.model, images, store_from=leaf, store=needs_input(self._rules))
            t = _targets(target, trace.logits)
            return trace, output_relevance(trace.logits, t, m.base), trace.steps[-1].name
        cam = self._cam_leaf()
        trace, A, G, t, dual = self._activation_and_gradient(images, m, cam, leaf, target, contrast, weights)
        if leaf != "input" and trace.index(leaf) > trace.index(cam):
            raise ValueError(f"layer {leaf!r} lies above the CAM layer {cam!r}: FG-CAM refines towards the input")
        I = self._components(images, m, A, G, t, dual, weights)
        rank = rank_for(denoise, I.shape[1], I.shape[2] * I.shape[3])
        if rank is not None:
            I = denoise_components(I, rank)
        return trace, I, cam


def _check_contrast(contrast, m: Method) -> None:
    if contrast is None:
        return
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be None (the paper) or one of {', '.join(map(repr, CONTRASTS))}; "
                         f"got {contrast!r}")
    if m.family == "lrp":
        raise ValueError(f"contrast applies to CAM and FG-CAM methods, not {m.name}; the contrastive LRP methods "
                         "are 'clrp' (contrast='others') and 'sglrp' (contrast='softmax')")


def explain(model: nn.Module, images: torch.Tensor, method: str, layer: str, target=None, denoise=False,
            cam_layer: str | None = None, contrast=None, weights: ChannelWeights | None = None,
            **options) -> torch.Tensor:
    """Explain ``model``'s decision on ``images`` with ``method``, at the output of module ``layer``.

    Parameters
    ----------
    model: a CNN whose forward pass is a graph of modules with rules: a chain (VGG, MobileNet V1) or a residual
        network known to :mod:`fgcam.canonizers` (torchvision ResNet, MobileNet V2); left exactly as it was
        (mode, hooks, ``forward``, modules).
    images: ``[B, C, H, W]`` float tensor, normalised as the model expects; finite.  Any memory format (a
        channels-last input or model gives the same map); the call may be made under ``torch.no_grad()`` or
        ``torch.inference_mode()`` (gradients are enabled inside; a model built in inference mode is refused).
    method: one of :data:`METHODS` (``"fg-grad-cam"``, ``"grad-cam"``, ``"lrp"``, ...).
    layer: module name (``"features.13"``; a block or stage such as ``"layer2"`` stands for its output) whose
        output the map lives at, or ``"input"``.  Inside a residual block the map holds only the relevance that
        flows through the block's body (the skip connection's share bypasses that layer).
    target: ``None`` (each image's predicted class), an int, or a ``[B]`` integer tensor.
    denoise: FG-CAM only. ``False``; ``True`` = the reference's rank ``int(0.1 * min(C, HW))``; an int = that rank.
    cam_layer: FG-CAM only: where the components are taken (default: :func:`default_cam_layer`: last module of
        ``features``, ``layer4`` for ResNet).
        Ignored by the plain CAM methods, which work at ``layer``.
    contrast: CAM and FG-CAM methods (beyond the paper). ``None``: the paper's components ``alpha_k^t A_k``;
        ``"others"`` or ``"softmax"``: the target's components minus those of the dual output
        ``y_d = sum_n c_n y_n`` with the coefficients of :func:`fgcam.lrp.dual_coefficients` (the mean of the other
        classes' logits, or their softmax-weighted combination): the CAM-level analogues of CLRP and SGLRP.  A
        gradient-based method takes one more backward pass (for ``dy_d/dA``); Score-CAM scores the dual from the
        same masked forward passes.  Denoising, if asked, applies to the contrastive components.
    weights: CAM and FG-CAM methods with channel weights: a :class:`ChannelWeights` from
        :meth:`Explainer.weights` (same images, target, contrast, method base, layer), used instead of computing
        the weights again (the same map, bit for bit); an error for LRP methods or when any of these differ.
    options: ``zb_bounds`` (``"image"``: per-image global min/max as the reference; ``("box", mean, std)``;
        ``(low, high)``), ``bn`` (``"pass"`` as the reference, or ``"fold"`` into the preceding conv),
        ``score_batch_size`` (masked images per forward pass for Score-CAM; None, the default:
        :func:`fgcam.metrics.default_batch_size`), ``rules`` (extra type -> rule),
        ``zero_denominator`` (``"drop"``: the reference's ``0/0 := 0``; ``"flat"`` or ``"w2"``: spread the
        relevance of a zero denominator over its window, :mod:`fgcam.conservation`).

    Returns
    -------
    ``[B, h, w]`` float tensor on the images' device: the signed map, before any ReLU or normalisation.
    """
    return Explainer(model, cam_layer=cam_layer, **options).explain(images, method, layer, target, denoise, contrast,
                                                                    weights)


__all__ = ["METHODS", "Method", "Explainer", "ChannelWeights", "explain", "default_cam_layer", "leaf_names"]
