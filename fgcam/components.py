"""CAM channel weights and explanation components (paper Eq. 1-3).

A CAM method explains class c at a layer with activations ``A`` (``[B, C, h, w]``) by channel weights
``alpha_k`` (Eq. 1: ``L = sum_k alpha_k A_k``).  FG-CAM keeps the *components* ``I_k = alpha_k A_k`` (Eq. 3)
instead of summing them, so that they can be propagated to shallower layers.  Layer-CAM has pixel weights
(``ReLU(dy/dA) * A``), which are components too.

Every function here is pure tensor algebra (no hooks, no NumPy): the gradients ``G = dy^c/dA`` of the raw logit
are computed by :mod:`fgcam.explain` in one backward pass that stops at the layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import default_batch_size
from .rules import safe_divide


def grad_cam_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``alpha_k = mean_i dy^c/dA_ki`` (raw logit, no softmax). ``[B, C]``."""
    return G.mean(dim=(2, 3))


def grad_cam_pp_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-output closed form used in practice.

    ``a_ki = g^2 / (2 g^2 + sum_i A_ki g^3)`` (``0/0 := 0``), ``alpha_k = sum_i a_ki ReLU(g_ki)``.
    """
    g2 = G.pow(2)
    a = safe_divide(g2, 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g2 * G)
    return (a * G.clamp(min=0)).sum(dim=(2, 3))


def xgrad_cam_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): ``alpha_k = sum_i (A_ki / sum_j A_kj) g_ki`` (``0/0 := 0``)."""
    return safe_divide((A * G).sum(dim=(2, 3)), A.sum(dim=(2, 3)))


def layer_cam_components(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021): pixel-weighted components ``ReLU(g_ki) A_ki``. ``[B, C, h, w]``."""
    return G.clamp(min=0) * A


def score_cam_masks(A: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM masks, reference semantics: each channel upsampled bilinearly (align_corners=False) to the input
    size and min-max normalised, ``(a - min) / (max - min)``, with 1e-9 added to the denominator only when
    ``max == 0`` (as the reference).  Where the reference divides 0 by 0 (a constant non-zero channel, NaN
    there), fgcam uses ``0/0 := 0``.  ``[B, C, H, W]``.
    """
    up = F.interpolate(A, size=size, mode="bilinear", align_corners=False)
    flat = up.flatten(2)
    lo = flat.min(dim=2, keepdim=True).values
    hi = flat.max(dim=2, keepdim=True).values
    den = hi - lo
    den = torch.where(hi == 0, den + 1e-9, den)
    return safe_divide(flat - lo, den).view_as(up)


def _masked_probabilities(model, images: torch.Tensor, A: torch.Tensor, batch_size: int | None):
    """Yield ``(slice, owner, softmax(f(x * M_k)))`` over the ``B x C`` masked images, in chunks of ``batch_size``
    (row ``i`` of the flattened ``[B * C]`` order is image ``owner[i]`` with the mask of channel ``i mod C``); ``None``:
    :func:`fgcam.metrics.default_batch_size` (the weights do not depend on it)."""
    b, c = A.shape[:2]
    if batch_size is None:
        batch_size = default_batch_size(model, images)
    flat_masks = score_cam_masks(A, images.shape[-2:]).reshape(b * c, 1, *images.shape[-2:])
    owner = torch.arange(b, device=images.device).repeat_interleave(c)
    for start in range(0, b * c, batch_size):
        sl = slice(start, start + batch_size)
        yield sl, owner[sl], torch.softmax(model(images[owner[sl]] * flat_masks[sl]), dim=1)


def _distinct(images: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, inverse)``: the index of the first of each distinct ``(image, activations)`` pair, and for each of
    the ``B`` items the position of its pair in ``first``.  Equal pairs give equal masked images, hence equal
    masked passes: a grid composite explained for each of its four cells is one image four times."""
    first: list[int] = []
    inverse: list[int] = []
    for i in range(images.shape[0]):
        for j, f in enumerate(first):
            if torch.equal(images[i], images[f]) and torch.equal(A[i], A[f]):
                inverse.append(j)
                break
        else:
            inverse.append(len(first))
            first.append(i)
    as_index = lambda v: torch.as_tensor(v, dtype=torch.long, device=images.device)
    return as_index(first), as_index(inverse)


@torch.no_grad()
def score_cam_weights(model, images: torch.Tensor, A: torch.Tensor, target: torch.Tensor,
                      batch_size: int | None = None) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020), reference semantics: ``alpha_k = softmax(f(x * M_k))[c]`` with ``M_k`` from
    :func:`score_cam_masks`; no baseline subtraction and no normalisation across channels.

    The masked images of each distinct image are run once, in chunks of ``batch_size`` (None: as the metrics'
    default, :func:`fgcam.metrics.default_batch_size`), and serve every item of ``images`` equal to it, whatever
    its target (a grid composite's four cells: 4x fewer passes).  Returns ``[B, C]``.
    """
    c = A.shape[1]
    first, inverse = _distinct(images, A)
    classes, column = torch.unique(target, return_inverse=True)
    probs = torch.empty(len(first) * c, len(classes), dtype=images.dtype, device=images.device)
    for sl, _, p in _masked_probabilities(model, images[first], A[first], batch_size):
        probs[sl] = p[:, classes]
    return probs.view(len(first), c, len(classes))[inverse, :, column]


@torch.no_grad()
def score_cam_contrast_weights(model, images: torch.Tensor, A: torch.Tensor, target: torch.Tensor,
                               coefficients: torch.Tensor,
                               batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-CAM weights of the target and of a dual output from the same masked forward passes (class-contrastive
    components, beyond the paper): ``alpha_k = p_t(x * M_k)`` as :func:`score_cam_weights` and
    ``alpha^d_k = sum_n c_n p_n(x * M_k)`` with ``coefficients`` ``c`` ``[B, K]``
    (:func:`fgcam.lrp.dual_coefficients`).  Returns two ``[B, C]`` tensors."""
    b, c = A.shape[:2]
    weights = torch.empty(b * c, dtype=images.dtype, device=images.device)
    dual = torch.empty(b * c, dtype=images.dtype, device=images.device)
    cls = target.repeat_interleave(c)
    for sl, owner, probs in _masked_probabilities(model, images, A, batch_size):
        weights[sl] = probs.gather(1, cls[sl, None]).squeeze(1)
        dual[sl] = (probs * coefficients[owner]).sum(1)
    return weights.view(b, c), dual.view(b, c)
