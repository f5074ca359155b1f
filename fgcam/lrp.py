"""Output-layer relevances of LRP, CLRP and SGLRP.

The three methods differ only in the relevance they put on the output layer (paper, related work); the same rules
(z+ in hidden layers, z^B at the input) then carry it to the input.  All rules are linear in the relevance, so a
signed output relevance gives the difference of the target's and the "dual" explanations in one pass.

* LRP (Bach et al. 2015): ``R_n = z_t`` for the target t, 0 otherwise (z = logits).
* CLRP (Gu, Yang and Tresp 2018), the dual virtual class made of all other classes:
  ``R_t = z_t`` and ``R_n = -z_t / (K - 1)`` for n != t.
* SGLRP (Iwana, Kuroki and Uchida 2019), the gradient of the softmax output ``p_t``:
  ``R_t = p_t (1 - p_t)`` and ``R_n = -p_t p_n`` for n != t.

The same dual classes give class-contrastive CAM components (``contrast=`` of :func:`fgcam.explain`):
:func:`dual_coefficients`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("lrp", "clrp", "sglrp")

#: The dual outputs of :func:`dual_coefficients`.
CONTRASTS = ("others", "softmax")


def output_relevance(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``[B, K]`` initial relevance at the logits for ``kind`` in :data:`KINDS`."""
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    z_t = logits.gather(1, target[:, None])
    if kind == "lrp":
        return onehot * z_t
    if kind == "clrp":
        return onehot * z_t - (1 - onehot) * z_t / (logits.shape[1] - 1)
    if kind == "sglrp":
        p = torch.softmax(logits, dim=1)
        return p.gather(1, target[:, None]) * (onehot - p)
    raise ValueError(f"unknown output relevance {kind!r}; valid: {KINDS}")


def dual_coefficients(logits: torch.Tensor, target: torch.Tensor, contrast: str) -> torch.Tensor:
    """``[B, K]`` coefficients ``c`` of the dual output ``y_d = sum_n c_n y_n`` (``c_t = 0``, ``sum_n c_n = 1``).

    * ``"others"``: ``c_n = 1 / (K - 1)``, the mean of the other classes' logits: CLRP's dual, whose output
      relevance is ``z_t (e_t - c)``.
    * ``"softmax"``: ``c_n = p_n / (1 - p_t)``, the other classes weighted by their softmax probabilities (computed
      as the softmax over the other classes' logits, stable when ``p_t`` rounds to 1): SGLRP's dual, whose output
      relevance is ``p_t (1 - p_t) (e_t - c)``.

    A CAM method's contrastive components are the target's minus those of ``y_d`` (constant coefficients: they are
    computed on the clean image and not differentiated).
    """
    onehot = F.one_hot(target, logits.shape[1]).bool()
    if contrast == "others":
        return (~onehot).to(logits.dtype) / (logits.shape[1] - 1)
    if contrast == "softmax":
        return torch.softmax(logits.masked_fill(onehot, float("-inf")), dim=1)
    raise ValueError(f"unknown contrast {contrast!r}; valid: {CONTRASTS}")
