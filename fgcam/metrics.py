"""Evaluation metrics for saliency maps: the FG-CAM paper's protocols, exact and batched, plus ground truth and sanity.

Faithfulness (the model is queried on perturbed images; scores are softmax probabilities of the target class):

* :func:`average_drop_increase` -- Average Drop / Average Increase (paper Tables 1 and 4; the metric is from
  Chattopadhay et al. 2018, "Grad-CAM++", WACV, used in the FG-CAM paper as in Wang et al. 2020 "Score-CAM").
* :func:`insertion_deletion` -- insertion, deletion and Over-all = insertion - deletion (paper Tables 2 and 5;
  the metric is from Petsiuk et al. 2018, "RISE", BMVC; Over-all from Zhang et al. 2021, "Group-CAM").

Localisation and ground truth:

* :func:`energy_pointing_game` -- proportion of (positive, min-max normalised) saliency energy inside the box
  (paper Tables 3 and 6; the metric is from Wang et al. 2020, "Score-CAM", CVPR-W).
* :func:`mask_energy`, :func:`topk_mask_scores` -- pixel-exact localisation against segmentation masks.

Sanity (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS):

* :func:`cascading_randomization`, :func:`class_swap`, with the helpers :func:`spearman` and :func:`ssim`.

Every faithfulness setting lives in a frozen :class:`Protocol`; results carry ``protocol.as_dict()`` so that a
number is never separated from the settings that produced it. Presets: ``"fgcam-paper"`` (default),
``"fgcam-paper-input"`` (Table 4: input-layer rule for AD/AI), ``"gradcam++"`` and ``"rise-2018"``.

Conventions shared by all functions (each is also stated where it matters):

* ``images`` are ``[N, C, H, W]`` model inputs (for the paper: normalised with the ImageNet mean/std); the blur
  and the zero substrate act on these normalised tensors, as in the RISE reference code.
* ``saliency`` is ``[N, h, w]`` (``[N, 1, h, w]`` is accepted); it is upsampled bilinearly
  (``align_corners=False``) to the image size; NaN/inf are rejected.
* pixel rankings sort the saliency in descending order with a *stable* sort, so equal values keep raster
  (row-major) order; a constant map therefore ranks pixels in raster order.
* the target class is the model's arg-max on the clean image unless ``target`` (int or ``[N]``) is given.
* every division uses 0/0 := 0.
* all work happens on ``images.device`` with torch ops; the model is put in eval mode for the call and its
  (per-module) training flags are restored afterwards; forward passes run under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "blur",
    "average_drop_increase",
    "insertion_deletion",
    "energy_pointing_game",
    "mask_energy",
    "positive_energy_share",
    "topk_mask_scores",
    "spearman",
    "ssim",
    "cascading_randomization",
    "class_swap",
]


# --------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------

_SUBSTRATES = ("blur", "zero")


@dataclass(frozen=True)
class Protocol:
    """Settings of the faithfulness metrics (frozen; ``as_dict()`` is written next to every result).

    Blur (the "blurred image" of the paper): a Gaussian blur of the (normalised) input, per channel.
    The paper writes the blurred image as a Gaussian blur with a kernel size and sigma whose values did not
    survive text extraction; the default ``blur_kernel=11, blur_sigma=5`` are the RISE reference values
    (Petsiuk et al. 2018, ``klen=11, ksig=5``) that papers in this line reuse, with reflect padding.

    Attributes:
        name: preset name (informative only).
        blur_kernel, blur_sigma: Gaussian kernel size (odd) and standard deviation, in pixels.
        blur_padding: ``"reflect"`` | ``"replicate"`` | ``"zeros"`` (border handling of the blur).
        blur_kernel_type: ``"gaussian"``: the sampled, normalised Gaussian (same as
            ``torchvision.transforms.functional.gaussian_blur``); ``"rise-gkern"``: the RISE code's kernel,
            ``scipy.ndimage.gaussian_filter`` of a Dirac in a ``klen x klen`` array (truncate 4, reflect mode,
            so the tails fold back into the window).
        keep_fraction: AD/AI keeps the top ``k = floor(keep_fraction * H * W + 0.5)`` pixels (round half up).
        ad_mode: ``"keep-top"`` (FG-CAM paper: keep the top-k pixels, replace the rest with ``ad_substrate``)
            or ``"multiply"`` (Grad-CAM++ form: the image is multiplied by the ReLU'd, per-image min-max
            normalised saliency).
        ad_substrate: what replaces the dropped pixels in ``"keep-top"`` mode: ``"blur"`` or ``"zero"``.
        positive_only_if_at_most_half: FG-CAM Table 4 (input layer): if the number of pixels with saliency > 0
            is at most ``keep_fraction * H * W``, keep exactly the positive pixels instead of the top-k.
        pixels_per_step: insertion/deletion change this many pixels per step; ``steps = ceil(H*W / step)``
            (224 x 224 with 448 -> 112 steps); the last step may be partial.
        deletion_substrate: what deleted pixels become (``"blur"`` or ``"zero"``).
        insertion_substrate: the image insertion starts from (``"blur"`` or ``"zero"``).
    """

    name: str = "custom"
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    blur_padding: str = "reflect"
    blur_kernel_type: str = "gaussian"
    keep_fraction: float = 0.5
    ad_mode: str = "keep-top"
    ad_substrate: str = "blur"
    positive_only_if_at_most_half: bool = False
    pixels_per_step: int = 448
    deletion_substrate: str = "blur"
    insertion_substrate: str = "blur"

    def __post_init__(self):
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")
        if not self.blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0, got {self.blur_sigma}")
        _check_choice("blur_padding", self.blur_padding, ("reflect", "replicate", "zeros"))
        _check_choice("blur_kernel_type", self.blur_kernel_type, ("gaussian", "rise-gkern"))
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        _check_choice("ad_mode", self.ad_mode, ("keep-top", "multiply"))
        for field in ("ad_substrate", "deletion_substrate", "insertion_substrate"):
            _check_choice(field, getattr(self, field), _SUBSTRATES)
        if self.pixels_per_step < 1:
            raise ValueError(f"pixels_per_step must be >= 1, got {self.pixels_per_step}")

    def as_dict(self) -> dict:
        """The settings as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


def _check_choice(field: str, value, choices):
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices}, got {value!r}")


PROTOCOLS: dict[str, Protocol] = {
    # The FG-CAM paper (Tables 1-3): keep-top-50% AD/AI, 448 px/step, blurred substrate everywhere.
    "fgcam-paper": Protocol(name="fgcam-paper"),
    # The FG-CAM paper's input layer (Tables 4-6): AD/AI keeps only the positive pixels when they are <= 50 %.
    "fgcam-paper-input": Protocol(name="fgcam-paper-input", positive_only_if_at_most_half=True),
    # Chattopadhay et al. 2018 (Grad-CAM++), also Score-CAM: O = score on saliency_normalised * image.
    "gradcam++": Protocol(name="gradcam++", ad_mode="multiply"),
    # Petsiuk et al. 2018 (RISE) reference code: 224 px/step, zero substrate for deletion, blurred substrate
    # for insertion, their gkern(11, 5) applied with zero padding (conv2d(padding=klen // 2)).
    "rise-2018": Protocol(
        name="rise-2018",
        blur_padding="zeros",
        blur_kernel_type="rise-gkern",
        pixels_per_step=224,
        deletion_substrate="zero",
        insertion_substrate="blur",
    ),
}


def get_protocol(protocol: str | Protocol = "fgcam-paper") -> Protocol:
    """Return the preset named ``protocol`` (or ``protocol`` itself if it is already a :class:`Protocol`)."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        return PROTOCOLS[protocol]
    raise ValueError(f"unknown protocol {protocol!r}; valid names: {sorted(PROTOCOLS)} (or pass a Protocol)")


# --------------------------------------------------------------------------------------------------------------
# Small building blocks
# --------------------------------------------------------------------------------------------------------------


def _gaussian_1d(size: int, sigma: float) -> Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _rise_gkern_1d(size: int, sigma: float) -> Tensor:
    """1-D factor of RISE's ``gkern``: ``scipy.ndimage.gaussian_filter1d`` (truncate 4, mode 'reflect') of a
    Dirac at ``size // 2`` in an array of length ``size``. The 2-D kernel is its outer product."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-0.5 * (offsets.double() / sigma) ** 2)
    weights = weights / weights.sum()
    out = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        j = (i + offsets) % (2 * size)  # scipy 'reflect' = half-sample symmetric, period 2 * size
        j = torch.where(j < size, j, 2 * size - 1 - j)
        out[i] = weights[j == size // 2].sum()
    return out


def blur(images: Tensor, protocol: str | Protocol = "fgcam-paper") -> Tensor:
    """The protocol's blurred image: a per-channel (depthwise) Gaussian blur of ``images`` ``[N, C, H, W]``."""
    p = get_protocol(protocol)
    k = p.blur_kernel
    g = _gaussian_1d(k, p.blur_sigma) if p.blur_kernel_type == "gaussian" else _rise_gkern_1d(k, p.blur_sigma)
    c = images.shape[1]
    kernel = torch.outer(g, g).to(images.device, images.dtype).expand(c, 1, k, k)
    r = k // 2
    if p.blur_padding == "zeros":
        padded = F.pad(images, (r, r, r, r))
    else:
        padded = F.pad(images, (r, r, r, r), mode=p.blur_padding)
    return F.conv2d(padded, kernel, groups=c)


def _substrate(images: Tensor, kind: str, p: Protocol) -> Tensor:
    return blur(images, p) if kind == "blur" else torch.zeros_like(images)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the duration of the block; restores every module's own training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _check_images(images) -> Tensor:
    if not torch.is_tensor(images) or images.ndim != 4:
        raise ValueError(f"images must be a [N, C, H, W] tensor, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    return images


def _check_maps(maps, n: int | None, what: str = "saliency") -> Tensor:
    """Validate a batch of 2-D maps: ``[N, h, w]`` (or ``[N, 1, h, w]``), finite; returns float (>= float32)."""
    maps = torch.as_tensor(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"{what} must be [N, h, w] (or [N, 1, h, w]), got shape {tuple(maps.shape)}")
    if n is not None and maps.shape[0] != n:
        raise ValueError(f"{what} has batch size {maps.shape[0]} but there are {n} images")
    if maps.dtype != torch.float64:
        maps = maps.float()
    if not torch.isfinite(maps).all():
        raise ValueError(f"{what} contains NaN or inf")
    return maps


def _resize(maps: Tensor, size) -> Tensor:
    """Bilinear (align_corners=False) resize of ``[N, h, w]`` maps to ``size``; identity if already that size."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _prepare_saliency(saliency, images: Tensor) -> Tensor:
    sal = _check_maps(saliency, images.shape[0]).to(images.device)
    return _resize(sal, images.shape[-2:])


def _ranks(sal: Tensor) -> Tensor:
    """``rank[n, p]`` = position of pixel ``p`` (raster index) when image ``n``'s saliency is sorted in
    descending order with a stable sort (ties keep raster order). ``sal`` is ``[N, H, W]``; returns ``[N, H*W]``."""
    flat = sal.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _minmax(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation to [0, 1] over the last two dims (a constant map -> 0, i.e. 0/0 := 0)."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    """a / b with 0/0 := 0 (and x/0 := 0)."""
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(a))


def _scores(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Softmax probability of ``target[i]`` for ``x[i]``."""
    probs = torch.softmax(model(x).float(), dim=1)
    return probs.gather(1, target[:, None]).squeeze(1)


def _batched_scores(model, x: Tensor, target: Tensor, batch_size: int) -> Tensor:
    return torch.cat([_scores(model, x[i : i + batch_size], target[i : i + batch_size])
                      for i in range(0, x.shape[0], batch_size)])


def _resolve_target(model, images: Tensor, target, batch_size: int) -> tuple[Tensor, Tensor]:
    """Target classes ``[N]`` (arg-max on the clean images when ``target`` is None) and their scores ``Y``."""
    n = images.shape[0]
    if target is None:
        chunks = []
        for i in range(0, n, batch_size):
            chunks.append(torch.softmax(model(images[i : i + batch_size]).float(), dim=1))
        probs = torch.cat(chunks)
        tgt = probs.argmax(dim=1)
        return tgt, probs.gather(1, tgt[:, None]).squeeze(1)
    tgt = torch.as_tensor(target, device=images.device)
    if tgt.is_floating_point() or tgt.is_complex():
        raise ValueError(f"target must hold integer class indices, got {tgt.dtype}")
    tgt = tgt.long()
    if tgt.ndim == 0:
        tgt = tgt.expand(n)
    if tgt.shape != (n,):
        raise ValueError(f"target must be an int or a [N] tensor with N={n}, got shape {tuple(tgt.shape)}")
    return tgt, _batched_scores(model, images, tgt, batch_size)


#: Largest activation of one forward pass that :func:`forward_batch_size` aims for.  glibc's malloc hands blocks
#: above its mmap threshold (at most 32 MiB on 64-bit Linux, whatever ``mallopt`` asks) to ``mmap`` and returns them
#: at ``free``, so every pass over a larger batch page-faults its activations in again: on 2 CPU cores the metrics'
#: passes of MobileNet V1 at batch 128 spent about as much time in the kernel as in the convolutions
#: (``python -m fgcam.bench_metrics`` prints the batch sizes side by side).
FORWARD_BYTES_BUDGET = 16 * 2**20


def forward_batch_size(model: nn.Module, image_shape, budget: int = FORWARD_BYTES_BUDGET) -> int:
    """The number of images per forward pass whose largest module output fits in ``budget`` bytes (at least 1).

    One forward pass of a zero image of ``image_shape`` (``[C, H, W]``, on the model's device and dtype, under
    ``torch.no_grad()``) measures the largest output of any leaf module per image.  For forward passes on the CPU
    (see :data:`FORWARD_BYTES_BUDGET`); CUDA's caching allocator keeps its blocks, so the budget is not meant for it.
    """
    largest = [0]

    def hook(module, args, output):
        if isinstance(output, Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, *image_shape, device=None if p is None else p.device,
                        dtype=None if p is None else p.dtype)
        with torch.no_grad(), _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return max(1, int(budget) // max(1, largest[0]))


#: Images per forward pass off the CPU when the caller gives no batch size (CUDA's caching allocator keeps its blocks,
#: so :data:`FORWARD_BYTES_BUDGET` does not apply there).
DEVICE_BATCH_SIZE = 128

_measured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(shape, dtype, device): batch size}


def default_batch_size(model: nn.Module, images: Tensor) -> int:
    """Images per forward pass when the caller gives none (``batch_size=None`` in this module's metrics,
    ``score_batch_size=None`` in Score-CAM, the runner's defaults): :func:`forward_batch_size` for ``images``' shape
    on the CPU, measured once per model, image shape, dtype and device; :data:`DEVICE_BATCH_SIZE` elsewhere.

    The batch size changes the speed, not the results: each image's passes are independent of the others' (up to
    float rounding: a batched convolution may sum in another order)."""
    if images.device.type != "cpu":
        return DEVICE_BATCH_SIZE
    key = (tuple(images.shape[1:]), images.dtype, str(images.device))
    known = _measured.setdefault(model, {})
    if key not in known:
        known[key] = forward_batch_size(model, images.shape[1:])
    return known[key]


def _batch_size(model: nn.Module, images: Tensor, batch_size: int | None) -> int:
    """``batch_size`` checked (>= 1), or :func:`default_batch_size` when None."""
    if batch_size is None:
        return default_batch_size(model, images)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


# --------------------------------------------------------------------------------------------------------------
# Average Drop / Average Increase
# --------------------------------------------------------------------------------------------------------------


def average_drop_increase(model: nn.Module, images: Tensor, saliency: Tensor, target=None,
                          protocol: str | Protocol = "fgcam-paper", batch_size: int | None = None) -> dict:
    """Average Drop and Average Increase (FG-CAM paper Tables 1 and 4; Chattopadhay et al. 2018, Grad-CAM++).

    ``Y_i`` is the softmax score of the target on image i, ``O_i`` the score on the perturbed image;
    ``AD = 100 * mean_i max(0, Y_i - O_i) / Y_i`` and ``AI = 100 * mean_i 1[O_i > Y_i]``.

    Perturbation (``protocol.ad_mode``):

    * ``"keep-top"`` (``"fgcam-paper"``): keep the ``k = floor(keep_fraction * H * W + 0.5)`` most salient pixels
      (stable descending sort: ties keep raster order) and replace all others by the substrate (the blurred
      image). With ``positive_only_if_at_most_half`` (``"fgcam-paper-input"``, Table 4): if the number of pixels
      with saliency > 0 is at most ``keep_fraction * H * W``, keep exactly those positive pixels.
    * ``"multiply"`` (``"gradcam++"``): ``O`` is the score on ``s * image`` with ``s`` = ReLU'd saliency
      min-max normalised to [0, 1] per image (a constant map gives ``s = 0``).

    Returns a dict: ``average_drop``, ``average_increase`` (python floats, percent), ``drop`` (``[N]`` fraction),
    ``increase`` (``[N]`` bool), ``Y``, ``O``, ``target`` (``[N]``), ``protocol`` (``as_dict()``).
    """
    p = get_protocol(protocol)
    images = _check_images(images)
    sal = _prepare_saliency(saliency, images)
    batch_size = _batch_size(model, images, batch_size)
    n, _, h, w = images.shape
    with torch.no_grad(), _eval_mode(model):
        tgt, Y = _resolve_target(model, images, target, batch_size)
        if p.ad_mode == "multiply":
            perturbed = images * _minmax(sal.clamp(min=0))[:, None].to(images.dtype)
        else:
            k = int(math.floor(p.keep_fraction * h * w + 0.5))
            keep = (_ranks(sal) < k).view(n, h, w)
            if p.positive_only_if_at_most_half:
                positive = sal > 0
                few = positive.flatten(1).sum(1) <= p.keep_fraction * h * w
                keep = torch.where(few[:, None, None], positive, keep)
            perturbed = torch.where(keep[:, None], images, _substrate(images, p.ad_substrate, p))
        O = _batched_scores(model, perturbed, tgt, batch_size)
    drop = _safe_div((Y - O).clamp(min=0), Y)
    increase = O > Y
    return {
        "average_drop": 100.0 * drop.mean().item(),
        "average_increase": 100.0 * increase.float().mean().item(),
        "drop": drop,
        "increase": increase,
        "Y": Y,
        "O": O,
        "target": tgt,
        "protocol": p.as_dict(),
    }


# --------------------------------------------------------------------------------------------------------------
# Insertion / Deletion
# --------------------------------------------------------------------------------------------------------------


def _auc(curve: Tensor) -> Tensor:
    """Trapezoid rule on ``x = s / steps`` for ``s = 0..steps`` (curve ``[N, steps + 1]``), as RISE's ``auc``."""
    steps = curve.shape[1] - 1
    return (curve.sum(1) - 0.5 * curve[:, 0] - 0.5 * curve[:, -1]) / steps


def _causal_curve(model, start: Tensor, finish: Tensor, ranks: Tensor, step: int, steps: int,
                  target: Tensor, batch_size: int) -> Tensor:
    """Scores of ``start`` with its first ``s * step`` ranked pixels taken from ``finish``, for s = 0..steps.

    All (image, step) pairs are flattened into one index and evaluated ``batch_size`` at a time; each chunk's
    images are built at once from masks ``ranks < s * step``. Returns ``[N, steps + 1]``.
    """
    n, c, h, w = start.shape
    total = n * (steps + 1)
    out = torch.empty(total, device=start.device)
    for i in range(0, total, batch_size):
        idx = torch.arange(i, min(i + batch_size, total), device=start.device)
        img, s = idx // (steps + 1), idx % (steps + 1)
        changed = ranks[img] < (s * step)[:, None]  # [b, H*W]
        x = torch.where(changed.view(-1, 1, h, w), finish[img], start[img])
        out[i : i + len(idx)] = _scores(model, x, target[img])
    return out.view(n, steps + 1)


def insertion_deletion(model: nn.Module, images: Tensor, saliency: Tensor, target=None,
                       protocol: str | Protocol = "fgcam-paper", batch_size: int | None = None) -> dict:
    """Insertion, deletion and Over-all (FG-CAM paper Tables 2 and 5; Petsiuk et al. 2018, RISE).

    Pixels are ranked by saliency (stable descending sort: ties keep raster order). With ``step =
    protocol.pixels_per_step`` and ``steps = ceil(H * W / step)`` (the last step may be partial), the image at
    step ``s`` has its first ``min(s * step, H * W)`` ranked pixels changed:

    * deletion starts from the original image and replaces them by ``deletion_substrate`` (blurred image);
    * insertion starts from ``insertion_substrate`` (blurred image) and puts back the original pixels.

    Curves hold both end points (``steps + 1`` softmax scores of the target): deletion goes from the score on
    the original image to the score on the substrate, insertion the reverse. AUC is the trapezoid rule on
    ``x = s / steps`` in [0, 1] with equally spaced points (also with a partial last step), i.e. RISE's ``auc``.
    ``overall = insertion - deletion`` (Zhang et al. 2021, as used by the FG-CAM paper).

    All (image, step) pairs are batched ``batch_size`` forward passes at a time (results do not depend on it;
    None: :func:`default_batch_size`).

    Returns a dict: ``insertion``, ``deletion``, ``overall`` (``[N]``), ``insertion_curve``, ``deletion_curve``
    (``[N, steps + 1]``), ``target`` (``[N]``), ``steps`` (int), ``protocol`` (``as_dict()``).
    """
    p = get_protocol(protocol)
    images = _check_images(images)
    sal = _prepare_saliency(saliency, images)
    batch_size = _batch_size(model, images, batch_size)
    _, _, h, w = images.shape
    step = p.pixels_per_step
    steps = math.ceil(h * w / step)
    with torch.no_grad(), _eval_mode(model):
        tgt, _ = _resolve_target(model, images, target, batch_size)
        ranks = _ranks(sal)
        deletion_curve = _causal_curve(model, images, _substrate(images, p.deletion_substrate, p),
                                       ranks, step, steps, tgt, batch_size)
        insertion_curve = _causal_curve(model, _substrate(images, p.insertion_substrate, p), images,
                                        ranks, step, steps, tgt, batch_size)
    insertion, deletion = _auc(insertion_curve), _auc(deletion_curve)
    return {
        "insertion": insertion,
        "deletion": deletion,
        "overall": insertion - deletion,
        "insertion_curve": insertion_curve,
        "deletion_curve": deletion_curve,
        "target": tgt,
        "steps": steps,
        "protocol": p.as_dict(),
    }


# --------------------------------------------------------------------------------------------------------------
# Localisation
# --------------------------------------------------------------------------------------------------------------


def _boxes_to_masks(boxes, n: int, size, device) -> Tensor:
    boxes = torch.as_tensor(boxes, device=device)
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must be [N, 4] (x1, y1, x2, y2) with N={n}, got shape {tuple(boxes.shape)}")
    if not torch.isfinite(boxes.double()).all():
        raise ValueError("boxes contain NaN or inf")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError("boxes need x2 >= x1 and y2 >= y1")
    h, w = size
    ys = torch.arange(h, device=device)[None, :, None]
    xs = torch.arange(w, device=device)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)


def energy_pointing_game(saliency: Tensor, boxes_or_masks: Tensor, size=None) -> Tensor:
    """Energy-based pointing game (FG-CAM paper Tables 3 and 6; Wang et al. 2020, Score-CAM).

    The saliency is upsampled (bilinear, align_corners=False) to the box/mask grid, ReLU'd, min-max normalised
    per image, and the result is ``sum(sal * inside) / sum(sal)`` per image (0/0 := 0; so a constant map,
    which normalises to 0, scores 0).

    ``boxes_or_masks``: boolean masks ``[N, H, W]`` (the grid is ``(H, W)``) or boxes ``[N, 4]`` as
    ``x1, y1, x2, y2`` in pixel coordinates of the grid ``size = (H, W)`` (default: the saliency's own size).
    Box convention: pixel (row ``i``, column ``j``) is inside iff ``x1 <= j < x2`` and ``y1 <= i < y2``
    (x1, y1 inclusive; x2, y2 exclusive); the box covers ``(x2 - x1) * (y2 - y1)`` pixels, clipped to the grid.

    Returns ``[N]`` proportions in [0, 1].
    """
    bm = torch.as_tensor(boxes_or_masks)
    sal = _check_maps(saliency, None)
    n = sal.shape[0]
    if bm.ndim == 3:
        if bm.shape[0] != n:
            raise ValueError(f"masks have batch size {bm.shape[0]} but saliency has {n}")
        if size is not None and tuple(size) != tuple(bm.shape[-2:]):
            raise ValueError(f"size {tuple(size)} disagrees with the mask size {tuple(bm.shape[-2:])}")
        inside = bm.to(sal.device).bool()
    elif bm.ndim == 2:
        size = tuple(sal.shape[-2:]) if size is None else tuple(size)
        inside = _boxes_to_masks(bm, n, size, sal.device)
    else:
        raise ValueError(f"expected boxes [N, 4] or masks [N, H, W], got shape {tuple(bm.shape)}")
    s = _minmax(_resize(sal, inside.shape[-2:]).clamp(min=0))
    return _safe_div((s * inside).sum(dim=(1, 2)), s.sum(dim=(1, 2)))


def positive_energy_share(saliency: Tensor, boxes: Tensor, size=None) -> Tensor:
    """Share of a map's positive energy inside a box: ``sum(relu(sal) * inside) / sum(relu(sal))`` per image
    (0/0 := 0), with the saliency upsampled as in :func:`energy_pointing_game` but **not** min-max normalised, so
    the score does not depend on the map's minimum.  ``boxes`` and ``size`` as there.  Returns ``[N]`` in [0, 1].
    The grid pointing game reports it beside the paper's energy score (chance: the box's share of the image)."""
    sal = _check_maps(saliency, None)
    size = tuple(sal.shape[-2:]) if size is None else tuple(size)
    inside = _boxes_to_masks(torch.as_tensor(boxes), sal.shape[0], size, sal.device)
    s = _resize(sal, inside.shape[-2:]).clamp(min=0)
    return _safe_div((s * inside).sum(dim=(1, 2)), s.sum(dim=(1, 2)))


def mask_energy(saliency: Tensor, masks: Tensor) -> Tensor:
    """Proportion of saliency energy inside a pixel-exact mask ``[N, H, W]``: the energy-based pointing game
    with masks instead of boxes (see :func:`energy_pointing_game`)."""
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    return energy_pointing_game(saliency, masks)


def topk_mask_scores(saliency: Tensor, masks: Tensor, fractions: Sequence[float] = (0.05, 0.1, 0.2)) -> dict:
    """Precision / recall / IoU of the top-k % saliency pixels against a ground-truth mask, per image.

    The saliency (signed, no ReLU: only its order matters) is upsampled to the mask size and ranked with a
    stable descending sort (ties keep raster order); for each fraction ``f`` the top ``k = max(1, floor(f * H * W
    + 0.5))`` pixels form the predicted region ``P``; with ``M`` the mask, ``precision = |P & M| / |P|``,
    ``recall = |P & M| / |M|``, ``iou = |P & M| / |P | M|`` (0/0 := 0).

    Returns ``{f: {"precision": [N], "recall": [N], "iou": [N]}}``.
    """
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    sal = _check_maps(saliency, masks.shape[0])
    masks = masks.to(sal.device).bool()
    h, w = masks.shape[-2:]
    ranks = _ranks(_resize(sal, (h, w)))
    m = masks.flatten(1)
    out = {}
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must be in (0, 1], got {f}")
        k = max(1, int(math.floor(f * h * w + 0.5)))
        top = ranks < k
        tp = (top & m).sum(1).float()
        pred, true = top.sum(1).float(), m.sum(1).float()
        out[f] = {"precision": _safe_div(tp, pred), "recall": _safe_div(tp, true),
                  "iou": _safe_div(tp, pred + true - tp)}
    return out


# --------------------------------------------------------------------------------------------------------------
# Similarity of maps
# --------------------------------------------------------------------------------------------------------------


def _pair(a, b) -> tuple[Tensor, Tensor]:
    a, b = _check_maps(a, None, "a"), _check_maps(b, None, "b")
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.double(), b.double().to(a.device)


def _average_ranks(x: Tensor) -> Tensor:
    """Per-row ranks (0-based) with ties given their average rank. ``x`` is ``[N, D]``."""
    s = torch.sort(x, dim=1).values
    lo = torch.searchsorted(s, x, right=False)
    hi = torch.searchsorted(s, x, right=True)
    return (lo + hi - 1).double() / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between maps ``a`` and ``b`` (``[N, h, w]``), per image -> ``[N]``.

    Pearson correlation of the average ranks (ties share their mean rank, as ``scipy.stats.spearmanr``);
    if either map is constant the correlation is undefined and reported as 0 (0/0 := 0).
    """
    a, b = _pair(a, b)
    ra, rb = _average_ranks(a.flatten(1)), _average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    num = (ra * rb).sum(1)
    den = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return _safe_div(num, den).float()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004), single scale, between maps ``a`` and ``b`` -> ``[N]``.

    Each map is first min-max normalised to [0, 1] per image (data range L = 1; a constant map becomes 0).
    Local statistics use a normalised Gaussian window (size ``window``, std ``sigma``) without padding ("valid"
    positions only, as in the reference MATLAB code); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``; the result is the
    mean of the SSIM map. For maps smaller than the window, the window shrinks to the largest odd size that fits
    (same sigma). Symmetric in ``a`` and ``b``; 1 for identical maps.
    """
    a, b = _pair(a, b)
    a, b = _minmax(a)[:, None], _minmax(b)[:, None]
    size = min(window, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2
    g = _gaussian_1d(size, sigma).to(a.device)
    kernel = torch.outer(g, g)[None, None]

    def filt(x):
        return F.conv2d(x, kernel)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a * mu_a
    var_b = filt(b * b) - mu_b * mu_b
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return m.mean(dim=(1, 2, 3)).float()


def _compare(reference: Tensor, maps: Tensor) -> dict:
    rho_abs, rho, s = spearman(reference.abs(), maps.abs()), spearman(reference, maps), ssim(reference, maps)
    return {
        "spearman_abs": rho_abs.mean().item(),
        "spearman": rho.mean().item(),
        "ssim": s.mean().item(),
        "spearman_abs_per_image": rho_abs,
        "spearman_per_image": rho,
        "ssim_per_image": s,
    }


# --------------------------------------------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------------------------------------------


def _default_layers(model: nn.Module) -> list[str]:
    """Modules with parameters of their own and a ``reset_parameters()`` method, from the output downwards
    (reverse registration order, which for ``nn.Sequential`` models like VGG is reverse forward order)."""
    names = [name for name, m in model.named_modules()
             if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def cascading_randomization(model: nn.Module, images: Tensor, explain_fn: Callable[[nn.Module, Tensor], Tensor],
                            layers: Sequence[str] | None = None, seed: int = 0) -> list[dict]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

    ``explain_fn(model, images) -> [N, h, w]`` is first called on a deep copy of the (eval-mode) model to get the
    reference explanation. A second deep copy is then randomised layer by layer, cumulatively, in the order
    ``layers`` (default: every module with own parameters and a ``reset_parameters()`` method, from the output
    downwards, e.g. for VGG16-BN ``classifier.6, classifier.3, classifier.0, features.41 (BN), features.40
    (conv), ...``). Randomising a layer calls its own ``reset_parameters()`` under ``torch.manual_seed(seed + i)``
    (i = step index; the global RNG state is saved and restored): Conv2d/Linear get PyTorch's default
    (Kaiming-uniform) initialisation, BatchNorm resets its affine parameters to (1, 0) and its running
    statistics to (0, 1). After each step ``explain_fn`` is called on the copy (grad enabled, eval mode).
    To explain a fixed class rather than the (changing) prediction, bind the class inside ``explain_fn``.

    The model passed in is never modified.

    Returns one dict per randomised layer, in order: ``layer`` (name), ``spearman_abs`` and ``spearman``
    (mean over images of the Spearman rank correlation of the absolute / signed maps with the reference),
    ``ssim`` (mean SSIM of the min-max normalised signed maps, see :func:`ssim`), and the per-image tensors
    ``spearman_abs_per_image``, ``spearman_per_image``, ``ssim_per_image``.
    """
    images = _check_images(images)
    modules = dict(model.named_modules())
    layers = _default_layers(model) if layers is None else list(layers)
    for name in layers:
        if name not in modules:
            raise ValueError(f"no module named {name!r} in the model")
        if not hasattr(modules[name], "reset_parameters"):
            raise ValueError(f"module {name!r} has no reset_parameters()")

    reference_model = copy.deepcopy(model).eval()
    reference = _check_maps(explain_fn(reference_model, images), images.shape[0], "explain_fn output").detach()
    del reference_model

    randomized = copy.deepcopy(model).eval()
    copied = dict(randomized.named_modules())
    devices = [p.device for p in randomized.parameters() if p.device.type == "cuda"]
    results = []
    for i, name in enumerate(layers):
        with torch.random.fork_rng(devices=sorted({d.index for d in devices})):
            torch.manual_seed(seed + i)
            with torch.no_grad():
                copied[name].reset_parameters()
        maps = _check_maps(explain_fn(randomized, images), images.shape[0], "explain_fn output").detach()
        if maps.shape != reference.shape:
            raise ValueError(f"explain_fn returned {tuple(maps.shape)} after randomising {name!r}, "
                             f"expected {tuple(reference.shape)}")
        results.append({"layer": name, **_compare(reference, maps)})
    return results


def class_swap(model: nn.Module, images: Tensor, explain_fn: Callable[[nn.Module, Tensor, object], Tensor],
               target_a, target_b) -> dict:
    """Class-swap test: explain class A and class B on the same images and compare the two explanations.

    ``explain_fn(model, images, target) -> [N, h, w]`` (``target``: int or ``[N]``). A class-discriminative
    method gives low similarity. The model is in eval mode during the calls and its modes are restored.

    Returns ``spearman_abs``, ``spearman``, ``ssim`` (means, floats) and their ``*_per_image`` ``[N]`` tensors.
    """
    images = _check_images(images)
    with _eval_mode(model):
        a = _check_maps(explain_fn(model, images, target_a), images.shape[0], "explain_fn output").detach()
        b = _check_maps(explain_fn(model, images, target_b), images.shape[0], "explain_fn output").detach()
    return _compare(a, b)
