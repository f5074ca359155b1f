"""Mutation check: does the test suite catch the bugs that matter?

Each :class:`Mutant` is a small, plausible bug in ``fgcam`` written as a textual patch (file, exact old snippet, new
snippet) plus the tests that should catch it (pytest node ids or files).  For every mutant this script applies the
patch to a temporary copy of the repository (the files ``git ls-files`` lists, tracked and untracked-not-ignored,
with ``../shared`` linked beside it), runs only that mutant's tests there (``pytest -x``, ``OMP_NUM_THREADS=1``) and
restores the file (each run is a forked child of this process, which has imported torch, zennit, ... once;
``--subprocess`` starts a fresh python instead).  A mutant is *killed* when a test fails; the first failing test is reported.  It prints a table
and exits with status 1 if any mutant survived or timed out, 2 if a mutant's old snippet is not found exactly once
in its file (code moved: fix the mutant) or a test id selects nothing.

A mutant may name a file that does not exist yet (``requires``): it is skipped, not failed, until that code lands.
Before the mutants, the union of their tests is run once on the unmodified copy (the baseline): it must pass, or a
"kill" would mean nothing.

Usage (a development command, not part of ``make test``)::

    .venv/bin/python tools/mutants.py                  # all mutants
    .venv/bin/python tools/mutants.py -k clrp -k ssim  # those whose name contains one of the words
    .venv/bin/python tools/mutants.py --list           # names, areas, files and tests, then exit
    .venv/bin/python tools/mutants.py --check          # only check that every snippet is found exactly once
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    area: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""
    requires: str | None = None  # a path that must exist for the mutant to apply (code that has not landed yet)


H = "tests/test_mutation_holes.py::"
ENGINE = "tests/test_engine.py::"
BEYOND = "tests/test_beyond_vgg.py::"
METRICS = "tests/test_metrics.py::"
GOLDEN = "tests/test_golden.py"

MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------------------------------------------- rules
    Mutant("zplus-without-negative-branch", "rules", "fgcam/rules.py",
           "        negative = _has_negative(x, ctx)\n        if _conv_args(module) is not None:",
           "        negative = False\n        if _conv_args(module) is not None:",
           (H + "test_zplus_negative_inputs_match_zennit", BEYOND + "test_depthwise_conv_zplus_by_hand"),
           "negative inputs (BN without ReLU) only get the a+ w+ branch"),
    Mutant("zplus-with-bias", "rules", "fgcam/rules.py",
           "        y = F.conv2d(x, w, None, stride, padding, dilation, groups)",
           "        y = F.conv2d(x, w, module.bias, stride, padding, dilation, groups)",
           (GOLDEN + "::test_fgcam_output",), "the bias enters the z+ denominators (the reference ignores it)"),
    Mutant("zbox-bound-weights-swapped", "rules", "fgcam/rules.py",
           "[(1, x, weight), (-1, low, wp), (-1, high, wn)]", "[(1, x, weight), (-1, low, wn), (-1, high, wp)]",
           (ENGINE + "test_zbox_first_layer_by_hand", H + "test_box_bounds_values_and_zbox_by_hand"),
           "l pairs with w- and h with w+"),
    Mutant("first-layer-zplus", "rules", "fgcam/rules.py",
           "FIRST_RULES: dict[type, Rule] = {nn.Conv2d: ZBox(), nn.Linear: ZBox()}",
           "FIRST_RULES: dict[type, Rule] = {nn.Conv2d: ZPlus(), nn.Linear: ZBox()}",
           (GOLDEN + "::test_fgcam_output",), "the first conv gets z+ instead of z^B"),
    Mutant("pool-without-clamp", "rules", "fgcam/rules.py",
           "return relprop_linear(module, (x.clamp(min=0) if _has_negative(x, ctx) else x,), r)",
           "return relprop_linear(module, (x,), r)",
           (H + "test_pool_rule_clamps_negative_inputs_by_hand",), "LRP-0 on X instead of X+"),
    Mutant("add-share-halves", "rules", "fgcam/rules.py",
           "        return a * s, b * s", "        return 0.5 * r, 0.5 * r",
           (BEYOND + "test_add_share_by_hand", BEYOND + "test_fgcam_input_matches_zennit_resnet18"),
           "a residual sum split in halves, not by contribution"),
    Mutant("epsilon-stabiliser", "rules", "fgcam/rules.py",
           "    return (num / den).masked_fill_(zero, 0)", "    return (num / (den + 1e-6)).masked_fill_(zero, 0)",
           (BEYOND + "test_fgcam_input_matches_zennit_resnet18", H + "test_zplus_negative_inputs_match_zennit"),
           "zennit's default epsilon 1e-6 in every denominator (the reference has none)"),
    # (Folding with the variance instead of the std is an equivalent mutant: z+ and z^B ignore a positive scale of
    # a conv's output channels, so only the sign of gamma / sqrt(var + eps) can change a map.)
    Mutant("bn-fold-without-gamma", "rules", "fgcam/rules.py",
           "scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine",
           "scale = 1.0 / torch.sqrt(bn.running_var + bn.eps) if bn.affine",
           (H + "test_bottleneck_resnet_bn_fold_matches_zennit",), "BN folded without its scale gamma (and its sign)"),
    # ---------------------------------------------------------------------------------------------- propagation
    Mutant("image-bounds-of-the-batch", "propagation", "fgcam/propagation.py",
           "    flat = images.detach().flatten(1)\n", "    flat = images.detach().flatten().expand(len(images), -1)\n",
           (ENGINE + "test_batch_equals_singles[fg-grad-cam-input-False]",), "z^B bounds from the whole batch, not per image"),
    Mutant("box-bounds-swapped", "propagation", "fgcam/propagation.py",
           "    return -mean / std, (1 - mean) / std", "    return (1 - mean) / std, -mean / std",
           (H + "test_box_bounds_values_and_zbox_by_hand",), "low and high of the pixel box swapped"),
    Mutant("padded-bounds-not-padded", "propagation", "fgcam/propagation.py",
           "            return tuple(prev.module(b.expand(prev.input_shape)) for b in below)",
           "            return below",
           (H + "test_zbox_bounds_padded_like_the_image", BEYOND + "test_zbox_after_zero_pad_by_hand"),
           "the z^B bounds skip the ZeroPad2d that the image went through"),
    Mutant("residual-shares-overwrite", "propagation", "fgcam/propagation.py",
           "pending[parent] = share if parent not in pending else pending[parent] + share",
           "pending[parent] = share",
           (BEYOND + "test_residual_toy_by_hand", BEYOND + "test_fgcam_input_matches_zennit_resnet18"),
           "the skip connection's relevance replaces the body's instead of adding to it"),
    # ----------------------------------------------------------------------------------------------- components
    Mutant("grad-cam-sum-not-mean", "components", "fgcam/components.py",
           "    return G.mean(dim=(2, 3))", "    return G.sum(dim=(2, 3))",
           (GOLDEN + "::test_components",), "Grad-CAM weights summed, not averaged"),
    Mutant("grad-cam-pp-without-g3", "components", "fgcam/components.py",
           "2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g2 * G", "2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g2",
           (ENGINE + "test_grad_cam_pp_weights_match_pytorch_grad_cam",), "g^2 instead of g^3 in the denominator"),
    Mutant("xgrad-cam-unnormalised", "components", "fgcam/components.py",
           "    return safe_divide((A * G).sum(dim=(2, 3)), A.sum(dim=(2, 3)))", "    return (A * G).sum(dim=(2, 3))",
           (ENGINE + "test_cam_matches_pytorch_grad_cam[xgrad-cam]",), "XGrad-CAM without dividing by sum A_k"),
    Mutant("layer-cam-without-relu", "components", "fgcam/components.py",
           "    return G.clamp(min=0) * A", "    return G * A",
           (ENGINE + "test_cam_matches_pytorch_grad_cam[layer-cam]",), "Layer-CAM keeps negative gradients"),
    Mutant("score-cam-logits", "components", "fgcam/components.py",
           "        yield sl, owner[sl], torch.softmax(model(images[owner[sl]] * flat_masks[sl]), dim=1)",
           "        yield sl, owner[sl], model(images[owner[sl]] * flat_masks[sl])",
           (GOLDEN + "::test_components",), "Score-CAM weights from logits, not softmax"),
    Mutant("score-cam-owner-repeat", "components", "fgcam/components.py",
           "    owner = torch.arange(b, device=images.device).repeat_interleave(c)",
           "    owner = torch.arange(b, device=images.device).repeat(c)",
           (ENGINE + "test_batch_equals_singles[fg-score-cam-features.23-False]",),
           "masks applied to the wrong image of the batch"),
    Mutant("score-cam-distinct-target-of-first", "components", "fgcam/components.py",
           "    return probs.view(len(first), c, len(classes))[inverse, :, column]",
           "    return probs.view(len(first), c, len(classes))[inverse, :, column[first][inverse]]",
           ("tests/test_weights.py::test_score_cam_runs_each_distinct_image_once",),
           "a composite's four cells all get the first cell's class"),
    Mutant("score-cam-distinct-image-only", "components", "fgcam/components.py",
           "            if torch.equal(images[i], images[f]) and torch.equal(A[i], A[f]):",
           "            if torch.equal(images[i], images[f]):",
           ("tests/test_weights.py::test_score_cam_runs_each_distinct_image_once",),
           "pairs keyed by the image alone: other activations reuse the first masks"),
    # ------------------------------------------------------------------------------------------------ denoising
    Mutant("denoise-not-centred", "denoising", "fgcam/denoise.py",
           "    m = m - m.mean(dim=2, keepdim=True)\n", "",
           (GOLDEN + "::test_components",), "SVD of the raw components, not the channel-centred ones"),
    Mutant("denoise-rank-max", "denoising", "fgcam/denoise.py",
           "    return int(0.1 * min(channels, pixels))", "    return int(0.1 * max(channels, pixels))",
           (GOLDEN + "::test_components",), "rank from max(C, HW) instead of min"),
    # -------------------------------------------------------------------------------------------------- LRP outputs
    Mutant("clrp-dual-sign", "lrp outputs", "fgcam/lrp.py",
           "return onehot * z_t - (1 - onehot) * z_t / (logits.shape[1] - 1)",
           "return onehot * z_t + (1 - onehot) * z_t / (logits.shape[1] - 1)",
           (H + "test_clrp_sglrp_are_combinations_of_per_class_lrp",), "CLRP adds the dual instead of subtracting"),
    Mutant("clrp-dual-over-k", "lrp outputs", "fgcam/lrp.py",
           "(1 - onehot) * z_t / (logits.shape[1] - 1)", "(1 - onehot) * z_t / logits.shape[1]",
           (H + "test_clrp_sglrp_are_combinations_of_per_class_lrp",), "the dual spread over K, not K - 1 classes"),
    Mutant("sglrp-without-p-t", "lrp outputs", "fgcam/lrp.py",
           "        return p.gather(1, target[:, None]) * (onehot - p)", "        return onehot - p",
           (H + "test_clrp_sglrp_are_combinations_of_per_class_lrp",), "SGLRP without the factor p_t"),
    Mutant("lrp-starts-from-one", "lrp outputs", "fgcam/lrp.py",
           "        return onehot * z_t\n", "        return onehot\n",
           (ENGINE + "test_lrp_family_by_hand",), "LRP starts from 1 instead of the logit"),
    # ----------------------------------------------------------------------------------------------------- metrics
    Mutant("ssim-c2", "metrics", "fgcam/metrics.py",
           "    c1, c2 = 0.01 ** 2, 0.03 ** 2", "    c1, c2 = 0.01 ** 2, 0.3 ** 2",
           (H + "test_ssim_matches_naive_windowed_ssim",), "C2 = 0.3^2"),
    Mutant("ssim-uniform-window", "metrics", "fgcam/metrics.py",
           "    g = _gaussian_1d(size, sigma).to(a.device)",
           "    g = torch.full((size,), 1.0 / size, dtype=torch.float64).to(a.device)",
           (H + "test_ssim_matches_naive_windowed_ssim",), "a uniform window instead of the Gaussian"),
    Mutant("spearman-is-pearson", "metrics", "fgcam/metrics.py",
           "    ra, rb = _average_ranks(a.flatten(1)), _average_ranks(b.flatten(1))",
           "    ra, rb = a.flatten(1), b.flatten(1)",
           (H + "test_spearman_matches_scipy",), "Pearson on the values, not on the ranks"),
    Mutant("auc-mean", "metrics", "fgcam/metrics.py",
           "    return (curve.sum(1) - 0.5 * curve[:, 0] - 0.5 * curve[:, -1]) / steps",
           "    return curve.mean(1)",
           (H + "test_auc_is_numpy_trapezoid_on_the_curve", METRICS + "test_deletion_insertion_hand_computed"),
           "AUC as the mean of the curve, not the trapezoid rule"),
    Mutant("average-drop-unclamped", "metrics", "fgcam/metrics.py",
           "    drop = _safe_div((Y - O).clamp(min=0), Y)", "    drop = _safe_div(Y - O, Y)",
           (METRICS + "test_average_drop_increase_hand_computed",), "negative drops counted"),
    Mutant("ranking-ascending", "metrics", "fgcam/metrics.py",
           "    order = torch.sort(flat, dim=1, descending=True, stable=True).indices",
           "    order = torch.sort(flat, dim=1, descending=False, stable=True).indices",
           (METRICS + "test_deletion_insertion_hand_computed",), "least salient pixels first"),
    Mutant("pointing-without-relu", "metrics", "fgcam/metrics.py",
           "    s = _minmax(_resize(sal, inside.shape[-2:]).clamp(min=0))",
           "    s = _minmax(_resize(sal, inside.shape[-2:]))",
           (H + "test_energy_pointing_game_signed_map_by_hand",), "energy of the signed map"),
    Mutant("box-x-y-swapped", "metrics", "fgcam/metrics.py",
           "    return (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)",
           "    return (xs >= y1) & (xs < y2) & (ys >= x1) & (ys < x2)",
           (METRICS + "test_energy_pointing_game_hand_examples",), "boxes read as (y1, x1, y2, x2)"),
    Mutant("cascade-fresh-copy", "metrics", "fgcam/metrics.py",
           "    for i, name in enumerate(layers):\n        with torch.random.fork_rng(",
           "    for i, name in enumerate(layers):\n        randomized = copy.deepcopy(model).eval()\n"
           "        copied = dict(randomized.named_modules())\n        with torch.random.fork_rng(",
           (H + "test_cascading_randomization_is_the_hand_built_cumulative_sequence",),
           "each step randomises one layer of a fresh copy instead of cumulatively"),
    Mutant("cascade-one-seed", "metrics", "fgcam/metrics.py",
           "            torch.manual_seed(seed + i)", "            torch.manual_seed(seed)",
           (H + "test_cascading_randomization_is_the_hand_built_cumulative_sequence",),
           "every layer re-initialised from the same seed"),
    Mutant("class-swap-same-class", "metrics", "fgcam/metrics.py",
           "        b = _check_maps(explain_fn(model, images, target_b)",
           "        b = _check_maps(explain_fn(model, images, target_a)",
           (H + "test_class_swap_compares_the_two_classes_maps",), "class B explained as class A"),
    # ------------------------------------------------------------------------------------------------------ runner
    Mutant("runner-previous-images-map", "runner", "fgcam/runner.py",
           "        x, sal, t = images[k], maps[j], targets[k]",
           "        x, sal, t = images[k], maps.roll(1, 0)[j], targets[k]",
           (H + "test_evaluate_rows_are_the_metrics_of_their_own_image",), "image j scored with image j-1's map"),
    Mutant("runner-input-protocol", "runner", "fgcam/settings.py",
           'return M.get_protocol("fgcam-paper-input" if setting.is_input else "fgcam-paper")',
           'return M.get_protocol("fgcam-paper")',
           (H + "test_evaluate_rows_are_the_metrics_of_their_own_image",),
           "Table 4's positive-only AD/AI protocol not used at the input"),
    Mutant("runner-label-target", "runner", "fgcam/runner.py",
           '            targets = prediction if config.target == "predicted" else labels',
           "            targets = labels",
           (H + "test_evaluate_rows_are_the_metrics_of_their_own_image",), "the label explained, not the prediction"),
    Mutant("runner-boxes-reversed", "runner", "fgcam/runner.py",
           "M.energy_pointing_game(sal, torch.as_tensor(boxes)[kc].to(sal.device)",
           "M.energy_pointing_game(sal, torch.as_tensor(boxes)[kc.flip(0)].to(sal.device)",
           (H + "test_evaluate_rows_are_the_metrics_of_their_own_image",), "each map scored on another image's box"),
    Mutant("runner-insertion-deletion-swapped", "runner", "fgcam/runner.py",
           'vals = {"insertion": r["insertion"], "deletion": r["deletion"], "overall": r["overall"]}',
           'vals = {"insertion": r["deletion"], "deletion": r["insertion"], "overall": r["overall"]}',
           (H + "test_evaluate_rows_are_the_metrics_of_their_own_image",), "values stored under each other's name"),
    Mutant("runner-score-cam-weights-per-unit", "runner", "fgcam/runner.py",
           "    if key not in shared:\n        shared[key] = explainer.weights(",
           "    if True:\n        shared[key] = explainer.weights(",
           ("tests/test_experiments.py::test_score_cam_weights_once_per_batch",),
           "Score-CAM weights computed again for every FG-Score-CAM setting of a batch"),
    # ----------------------------------------------------------------------------------------------------- sources
    Mutant("shapes-source-offset-ignored", "sources", "fgcam/sources.py",
           "d = self._data.make_shapes(hi - lo, self.seed, raw=False, offset=lo)",
           "d = self._data.make_shapes(hi - lo, self.seed, raw=False, offset=0)",
           ("tests/test_experiments.py::test_sampling_is_deterministic_from_the_seed",),
           "a batch of images other than the first loads the first images again"),
    Mutant("photo-logit-offset-ignored", "sources", "fgcam/real.py",
           "        labels = torch.tensor([p.class_index + self.offset for p in chosen])",
           "        labels = torch.tensor([p.class_index for p in chosen])",
           ("tests/test_real.py::test_real_profile_end_to_end",),
           "photo labels are ImageNet class ids, not the background-first model's logits"),
    Mutant("scan-keeps-unknown-synsets", "sources", "fgcam/real.py",
           "        if synset not in index:\n            problems.append(",
           "        if synset not in index and False:\n            problems.append(",
           ("tests/test_real.py::test_scan_lists_every_bad_file_in_one_error",), "a foreign synset is not reported"),
    Mutant("layer-map-last-module", "sources", "fgcam/real.py",
           "        first = next((i for i, (_, _, s) in enumerate(sizes) if s == (h // r, w // r)), None)",
           "        first = max((i for i, (_, _, s) in enumerate(sizes) if s == (h // r, w // r)), default=None)",
           ("tests/test_real.py::test_layer_map_of_vgg16_bn_is_the_papers",),
           "the paper's layers mapped to the last module at a resolution, not the first"),
    # -------------------------------------------------------------------------------------------------- composites
    Mutant("composite-cells-transposed", "composites", "fgcam/real.py",
           "    return torch.tensor([[0, 0, hw, hh], [hw, 0, w, hh], [0, hh, hw, h], [hw, hh, w, h]])",
           "    return torch.tensor([[0, 0, hw, hh], [0, hh, hw, h], [hw, 0, w, hh], [hw, hh, w, h]])",
           ("tests/test_real.py::test_cell_geometry_and_ground_truth",), "cells 1 and 2 swapped: wrong ground truth"),
    Mutant("composite-duplicate-classes", "composites", "fgcam/real.py",
           "        chosen = torch.randperm(len(classes), generator=g)[:4].tolist()",
           "        chosen = torch.randint(len(classes), (4,), generator=g).tolist()",
           ("tests/test_real.py::test_composite_plan_is_deterministic_distinct_and_prefix_stable",),
           "a composite may hold two photos of one class"),
    Mutant("grid-target-is-prediction", "composites", "fgcam/runner.py",
           "                targets = torch.where(fixed >= 0, fixed, targets)",
           "                targets = targets",
           ("tests/test_real.py::test_real_profile_end_to_end",), "grid cells explained for the predicted class"),
    # -------------------------------------------------------------------------------------------------- statistics
    Mutant("paired-bootstrap-unpaired", "statistics", "fgcam/stats.py",
           "            est, boot = bootstrap_means(a - b, n_resamples, seed)",
           "            est, boot = bootstrap_means(a, n_resamples, seed)\n            est, boot = est - bootstrap_means(b, n_resamples, seed + 1)[0], boot - bootstrap_means(b, n_resamples, seed + 1)[1]",
           ("tests/test_stats.py::test_paired_bootstrap_is_narrower_than_unpaired_on_correlated_pairs",),
           "the paired comparison resamples the two methods' images independently"),
    Mutant("percentile-one-sided", "statistics", "fgcam/stats.py",
           "    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)",
           "    lo, hi = np.quantile(boot, [1 - level, level], axis=0)",
           ("tests/test_stats.py::test_normal_sample_interval_covers_the_mean_at_about_the_nominal_rate",
            "tests/test_stats.py::test_interval_matches_the_normal_theory_width"), "a 90 % interval called 95 %"),
    Mutant("straddle-decided", "statistics", "fgcam/stats.py",
           "        return VERDICTS[0] if lo > t else VERDICTS[1] if hi < t else VERDICTS[2]",
           "        return VERDICTS[0] if hi > t else VERDICTS[1]",
           ("tests/test_stats.py::test_verdict_three_ways_and_on_points",
            "tests/test_stats.py::test_straddling_interval_from_data_is_inconclusive"),
           "an interval straddling the threshold is called a verdict"),
    Mutant("tied-sample-is-a-point", "statistics", "fgcam/stats.py",
           "    sampled = isinstance(interval, Interval) and interval.n is not None",
           "    sampled = False",
           ("tests/test_stats.py::test_verdict_three_ways_and_on_points",
            "tests/test_claims.py::test_images_that_all_tie_do_not_decide_does_not_hold"),
           "images that all tie at the threshold decide 'does not hold' like a published value"),
    # -------------------------------------------------------------------------------------------------- canonizers
    Mutant("bottleneck-without-bn3", "canonizers", "fgcam/canonizers.py",
           "        out = self.bn3(self.conv3(out))", "        out = self.conv3(out)",
           (H + "test_bottleneck_canonized_forward_is_the_models", H + "test_bottleneck_resnet_matches_zennit"),
           "ResNet-50's canonized block skips bn3"),
    Mutant("mobilenet-v2-max-pool", "canonizers", "fgcam/canonizers.py",
           'return forward, {"fgcam_pool": nn.AdaptiveAvgPool2d((1, 1))}',
           'return forward, {"fgcam_pool": nn.AdaptiveMaxPool2d((1, 1))}',
           (BEYOND + "test_model_unchanged",), "MobileNet V2's global pool made a max-pool"),
    # ------------------------------------------------------------------------------------------- graph / explain
    Mutant("channels-last-outputs-kept", "graph", "fgcam/graph.py",
           "                output = output.contiguous()", "                pass",
           (H + "test_channels_last_inputs_and_models_give_the_same_maps",),
           "a channels-last leaf output breaks the recorded chain at torch.flatten"),
    Mutant("weights-of-other-images-accepted", "explain", "fgcam/explain.py",
           "        if _sha1(images) != self.images_sha1:", "        if False:",
           ("tests/test_weights.py::test_weights_that_do_not_belong_to_the_call_are_refused",),
           "weights= of other images (same target) used silently"),
    # (Dropping only torch.enable_grad() there is an equivalent mutant: inference_mode(False) turns grad mode on.)
    Mutant("no-grad-respected", "explain", "fgcam/explain.py",
           "    with torch.inference_mode(False), torch.enable_grad():", "    with contextlib.nullcontext():",
           (H + "test_no_grad_and_inference_mode_give_the_same_maps",),
           "an explanation under torch.no_grad() fails in autograd"),
]


# ------------------------------------------------------------------------------------------------------ machinery

def _check(mutants: list[Mutant], root: Path) -> tuple[list[str], dict[str, str]]:
    """Problems (snippet not found exactly once; unknown test file) and the skipped mutants' reasons."""
    problems, skipped = [], {}
    for m in mutants:
        if m.requires and not (root / m.requires).exists():
            skipped[m.name] = f"needs {m.requires}"
            continue
        path = root / m.file
        if not path.exists():
            problems.append(f"{m.name}: file {m.file} does not exist")
            continue
        n = path.read_text().count(m.old)
        if n != 1:
            problems.append(f"{m.name}: the old snippet occurs {n} times in {m.file} (must be exactly once): "
                            f"{m.old!r}")
        for t in m.tests:
            if not (root / t.split("::")[0]).exists():
                problems.append(f"{m.name}: test file {t.split('::')[0]} does not exist")
    names = [m.name for m in mutants]
    problems += [f"duplicate mutant name {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    return problems, skipped


def _copy_repo(dest: Path) -> Path:
    """The repository's files (tracked and untracked-not-ignored) under ``dest/repo``, ``dest/shared`` linked."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    repo = dest / "repo"
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared, target_is_directory=True)
    return repo


def _env(repo: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    env.pop("FGCAM_PROFILE", None)
    return env


PYTEST_ARGS = ("-x", "-q", "-rfE", "-p", "no:cacheprovider")

#: Heavy modules the tests import, loaded once in this process before it forks one child per pytest run (never
#: ``fgcam`` itself, so that each child imports the copy's current, mutated files).  On 2 busy cores this saves
#: most of each run's time.
PREWARM = ("numpy", "torch", "torchvision", "scipy.stats", "pytest", "zennit.attribution", "zennit.composites",
           "zennit.torchvision", "pytorch_grad_cam", "safetensors.torch")


def _prewarm() -> None:
    import importlib
    for name in PREWARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if any(name == "fgcam" or name.startswith("fgcam.") for name in sys.modules):
        raise RuntimeError("fgcam was imported before forking: the children would not see the mutations")


def _pytest_subprocess(repo: Path, tests, timeout: float) -> tuple[int | None, str, float]:
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", time.time() - t0
    return proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def _pytest_fork(repo: Path, tests, timeout: float) -> tuple[int | None, str, float]:
    """``pytest.main`` in a forked child (cwd and ``sys.path[0]`` = the copy), output to a file; killed on timeout."""
    log = repo.parent / "pytest.log"
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:                                                      # the child
        rc = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(repo)
            os.environ.update(_env(repo))
            sys.path.insert(0, str(repo))
            import pytest
            rc = int(pytest.main([*PYTEST_ARGS, *tests]))
        except BaseException:                                         # noqa: BLE001 - report anything, then exit
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.time() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            rc = None
            break
        time.sleep(0.2)
    return rc, log.read_text(errors="replace") if log.exists() else "", time.time() - t0


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        m = re.match(r"(FAILED|ERROR) (\S+)", line)
        if m:
            return m.group(2)
    return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", action="append", default=[], help="run the mutants whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true", help="only check that every old snippet is found once")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unmodified copy")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    ap.add_argument("--subprocess", action="store_true",
                    help="a fresh python per pytest run instead of forked children of one prewarmed process")
    args = ap.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True

    mutants = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    if args.list:
        for m in mutants:
            print(f"{m.name:36s} {m.area:12s} {m.file:24s} {' '.join(m.tests)}")
        return 0
    problems, skipped = _check(mutants, ROOT)
    if problems:
        print("mutants that do not apply (fix them before running):", *problems, sep="\n  ", file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(mutants) - len(skipped)} mutants apply, {len(skipped)} skipped")
        return 0

    runnable = [m for m in mutants if m.name not in skipped]
    results = []
    with tempfile.TemporaryDirectory(prefix="fgcam-mutants-") as tmp:
        repo = _copy_repo(Path(tmp))
        where = subprocess.run([sys.executable, "-c", "import fgcam; print(fgcam.__file__)"], cwd=repo,
                               env=_env(repo), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(repo)):
            print(f"the copy's fgcam is not the one imported there ({where!r})", file=sys.stderr)
            return 2
        use_fork = hasattr(os, "fork") and not args.subprocess
        if use_fork:
            _prewarm()
        _pytest = _pytest_fork if use_fork else _pytest_subprocess
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in runnable for t in m.tests))
            rc, out, secs = _pytest(repo, tests, args.timeout * 3)
            print(f"baseline: {len(tests)} test ids on the unmodified copy: rc {rc} in {secs:.0f} s", flush=True)
            if rc != 0:
                print(out[-4000:], file=sys.stderr)
                print("the tests fail without any mutant: fix that first", file=sys.stderr)
                return 2
        for i, m in enumerate(runnable, 1):
            path = repo / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            try:
                rc, out, secs = _pytest(repo, m.tests, args.timeout)
            finally:
                path.write_text(original)
            if rc is None:
                status, by = "TIMEOUT", "-"
            elif rc == 0:
                status, by = "SURVIVED", "-"
            elif rc == 1:
                status, by = "killed", _first_failure(out)
            elif rc == 5:
                print(f"{m.name}: its tests select nothing: {m.tests}", file=sys.stderr)
                return 2
            else:
                status, by = f"killed (rc {rc})", _first_failure(out)
            results.append((m, status, by, secs))
            print(f"[{i}/{len(runnable)}] {m.name}: {status} {by} ({secs:.0f} s)", flush=True)

    width = max(len(m.name) for m, *_ in results) if results else 10
    print(f"\n| {'mutant':{width}s} | area        | status   | killed by | s |")
    print(f"|{'-' * (width + 2)}|-------------|----------|-----------|---|")
    for m, status, by, secs in results:
        print(f"| {m.name:{width}s} | {m.area:11s} | {status:8s} | {by} | {secs:.0f} |")
    for name, why in skipped.items():
        print(f"| {name:{width}s} | {'':11s} | skipped  | {why} | |")
    bad = [m.name for m, status, *_ in results if not status.startswith("killed")]
    killed = len(results) - len(bad)
    print(f"\n{killed}/{len(results)} mutants killed, {len(skipped)} skipped"
          + (f"; NOT killed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
