"""Independent references for what the other tests let through (issue 15; ``tools/mutants.py`` checks that each
of these tests kills the plausible bug it is written against).

Each test states its reference: a recomputation with the public functions of :mod:`fgcam.metrics`, a naive
per-pixel implementation, a hand-built sequence, a hand-worked toy, zennit, or a linear-algebra identity that the
implementation does not use itself.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import fgcam
from fgcam import experiments as E
from fgcam import metrics as M
from fgcam.lrp import output_relevance
from fgcam.propagation import box_bounds

from conftest import randomise_batchnorm, resnet_features, zennit_fgcam_map
from tiny_eval import TinySource, tiny_model


def _smooth(n, size, seed, channels=3):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.randn(n, channels, size // 4, size // 4, generator=g), size=(size, size),
                      mode="bilinear", align_corners=False)
    return x + 0.1 * torch.randn(x.shape, generator=g)


# --- the runner: every stored value recomputed with fgcam.metrics -------------------------------------------

class _Float64Source(TinySource):
    """The runner's test images in float64, for a float64 model: recomputing a row in another batch composition
    then differs by ~1e-15, not by float32 rounding (which, amplified by ties in the pixel ranking, reaches 1e-3)."""

    def load(self, positions):
        d = super().load(positions)
        return {**d, "images": d["images"].double()}


def test_evaluate_rows_are_the_metrics_of_their_own_image(tmp_path):
    """A small ``evaluate`` run (7 images in units of 3, so the last unit holds one image; perturbed images in
    forward batches of 5, which split every image's curve; the metrics on the runner's channels-last model copy)
    is recomputed row by row: the image alone, its map from ``fgcam.explain`` on that image alone, then
    ``average_drop_increase`` / ``insertion_deletion`` / ``energy_pointing_game`` / ``mask_energy`` on it.  A
    runner that pairs an image with another image's map, target, box or mask, or that stores one metric under
    another's name, disagrees here: values of different images differ by 1e-4 and more, the tolerance is 1e-6."""
    n, methods, layers = 7, ["Grad-CAM", "FG-Grad-CAM", "FG-Score-CAM", "CLRP"], ["Layer13", "Input"]
    cfg = E.EvalConfig(out=tmp_path / "store", methods=methods, layers=layers, batch_size=3, metric_batch_size=5,
                       score_batch_size=7, quiet=True, channels_last=True)
    model, source = tiny_model().double(), _Float64Source(n, n_localisation=5)
    with torch.no_grad():
        model.classifier[-1].weight.mul_(30)                # confident scores: the metrics differ between images
    E.evaluate(cfg, model=model, source=source)
    rows = E.read_rows(tmp_path / "store")
    data = source.load(list(range(n)))
    with torch.no_grad():
        logits = model(data["images"])
    grid = E.make_grid(methods, layers)
    assert len(rows) == len(grid) * (2 * n + 5)             # adai + insdel on 7 images, pointing on 5
    maps = {}
    checked = 0
    for row in rows:
        p = row["image_index"]
        assert row["image_id"] == source.ids[p]
        assert row["label"] == int(data["labels"][p])
        assert row["prediction"] == row["target"] == int(logits[p].argmax())
        x, t = data["images"][p:p + 1], torch.tensor([row["target"]])
        key = (row["fgcam_method"], row["denoise"], row["module"], p)
        if key not in maps:
            maps[key] = fgcam.explain(model, x, row["fgcam_method"], row["module"], target=t,
                                      denoise=row["denoise"])
        sal = maps[key]
        v = row["values"]
        if row["metric"] == "adai":
            proto = "fgcam-paper-input" if row["module"] == "input" else "fgcam-paper"
            assert row["protocol"] == proto
            r = M.average_drop_increase(model, x, sal, target=t, protocol=proto)
            expected = {"average_drop_pct": r["average_drop"], "average_increase_pct": r["average_increase"]}
            tol = 1e-4                                       # percent
        elif row["metric"] == "insdel":
            r = M.insertion_deletion(model, x, sal, target=t, protocol="fgcam-paper")
            expected = {k: float(r[k]) for k in ("insertion", "deletion", "overall")}
            tol = 1e-6
        else:
            expected = {"energy_proportion": float(M.energy_pointing_game(sal, data["boxes"][p:p + 1],
                                                                          size=x.shape[-2:])),
                        "mask_energy": float(M.mask_energy(sal, data["masks"][p:p + 1]))}
            tol = 1e-6
        assert v.keys() == expected.keys(), row["key"]
        for name, value in expected.items():
            assert abs(v[name] - value) <= tol, (row["key"], name, v[name], value)
        checked += 1
    assert checked == len(rows)
    # the check can tell images apart: the stored values are not all alike across images
    ins = [r["values"]["insertion"] for r in rows if r["metric"] == "insdel" and r["method"] == "CLRP"]
    assert max(ins) - min(ins) > 0.01
    assert len({r["values"]["energy_proportion"] for r in rows if r["metric"] == "pointing"}) > 10


# --- SSIM against a naive per-window implementation ------------------------------------------------------

def _naive_ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004, Eq. 13-16 and the MATLAB reference ``ssim_index.m``: per valid window position, weighted
    means, variances and covariance with the circular Gaussian window (std 1.5, sum 1), K1 = 0.01, K2 = 0.03 and
    L = 1 on min-max normalised maps; the mean of the per-position SSIM.  Written with explicit loops."""
    def norm(m):
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    a, b = norm(a.astype(np.float64)), norm(b.astype(np.float64))
    size = min(window, *a.shape)
    size -= 1 - size % 2
    r = (size - 1) / 2
    w = np.array([[math.exp(-((i - r) ** 2 + (j - r) ** 2) / (2 * sigma ** 2)) for j in range(size)]
                  for i in range(size)])
    w /= w.sum()
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    vals = []
    for y in range(a.shape[0] - size + 1):
        for x in range(a.shape[1] - size + 1):
            pa, pb = a[y:y + size, x:x + size], b[y:y + size, x:x + size]
            mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - mu_a) ** 2).sum(), (w * (pb - mu_b) ** 2).sum()
            cov = (w * (pa - mu_a) * (pb - mu_b)).sum()
            vals.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("shape", [(16, 16), (13, 19), (7, 5)])
def test_ssim_matches_naive_windowed_ssim(shape):
    """Smooth maps and a noisy variant (SSIM between 0 and 1, not near either end), three sizes: the 11 x 11
    window, a non-square map, and a map smaller than the window (the window shrinks to 5 x 5)."""
    g = torch.Generator().manual_seed(4)
    a = F.interpolate(torch.randn(2, 1, 4, 4, generator=g), size=shape, mode="bilinear")[:, 0]
    b = a + 0.4 * torch.randn(a.shape, generator=g)
    b[1] = torch.rand(shape, generator=g)
    ours = M.ssim(a, b)
    theirs = [_naive_ssim(a[i].numpy(), b[i].numpy()) for i in range(2)]
    assert max(theirs) < 0.95 and abs(theirs[0]) > 0.05               # far from the trivial 1 and 0
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6)


def test_spearman_matches_scipy():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 9, 7, generator=g), torch.randn(3, 9, 7, generator=g)
    b[0] = a[0] + 0.5 * b[0]
    a[2, :3] = 0.25                                         # ties
    ours = M.spearman(a, b)
    theirs = [stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(3)]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6)


# --- sanity checks: cascading randomisation step by step, class swap ------------------------------------

def _small_cnn(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(24, 5))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    return model.eval()


def _grad_x_input(model, images, target=0):
    x = images.clone().requires_grad_(True)
    out = model(x)
    t = torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), x)
    return (grad * x).sum(1).detach()


def test_cascading_randomization_is_the_hand_built_cumulative_sequence():
    """Reference: one deep copy, randomised layer after layer (each layer's ``reset_parameters()`` under
    ``manual_seed(seed + step)``), explained after each step and compared with the untouched model's maps by
    scipy's Spearman and the naive SSIM.  A fresh copy per step, another seed or another order disagrees from the
    second step on."""
    model, seed = _small_cnn(7), 3
    x = _smooth(2, 16, 8)
    layers = ["8", "4", "1", "0"]
    res = M.cascading_randomization(model, x, _grad_x_input, seed=seed)
    assert [r["layer"] for r in res] == layers
    reference = _grad_x_input(model, x)
    hand = copy.deepcopy(model)
    modules = dict(hand.named_modules())
    for i, (name, r) in enumerate(zip(layers, res)):
        torch.manual_seed(seed + i)
        with torch.no_grad():
            modules[name].reset_parameters()
        maps = _grad_x_input(hand, x)
        for k in range(len(x)):
            rho = stats.spearmanr(reference[k].flatten().numpy(), maps[k].flatten().numpy()).statistic
            rho_abs = stats.spearmanr(reference[k].abs().flatten().numpy(), maps[k].abs().flatten().numpy()).statistic
            assert float(r["spearman_per_image"][k]) == pytest.approx(rho, abs=1e-5), (name, k)
            assert float(r["spearman_abs_per_image"][k]) == pytest.approx(rho_abs, abs=1e-5), (name, k)
            assert float(r["ssim_per_image"][k]) == pytest.approx(_naive_ssim(reference[k].numpy(),
                                                                              maps[k].numpy()), abs=1e-5)
    # the cumulative sequence differs from randomising each layer alone (so the check above can tell them apart)
    alone = copy.deepcopy(model)
    torch.manual_seed(seed + 3)
    with torch.no_grad():
        dict(alone.named_modules())["0"].reset_parameters()
    assert not torch.allclose(_grad_x_input(alone, x), maps, atol=1e-4)


def test_class_swap_compares_the_two_classes_maps():
    """Reference: the two maps computed here, compared with scipy's Spearman and the naive SSIM."""
    model, x = _small_cnn(9), _smooth(2, 16, 10)
    res = M.class_swap(model, x, _grad_x_input, 0, 3)
    a, b = _grad_x_input(model, x, 0), _grad_x_input(model, x, 3)
    for k in range(2):
        assert float(res["spearman_per_image"][k]) == pytest.approx(
            stats.spearmanr(a[k].flatten().numpy(), b[k].flatten().numpy()).statistic, abs=1e-5)
        assert float(res["ssim_per_image"][k]) == pytest.approx(_naive_ssim(a[k].numpy(), b[k].numpy()), abs=1e-5)
    assert res["spearman"] == pytest.approx(float(res["spearman_per_image"].mean()))


# --- insertion/deletion AUC: numpy's trapezoid rule ------------------------------------------------------

def test_auc_is_numpy_trapezoid_on_the_curve():
    """The AUC of each stored curve is ``numpy.trapezoid`` on x = 0, 1/steps, ..., 1 (a partial last step too:
    10 x 10 pixels in steps of 30 gives 4 steps)."""
    model, x = _small_cnn(11), _smooth(3, 10, 12)
    with torch.no_grad():
        model[-1].weight.mul_(40)                          # confident scores: curves that rise and fall
    sal = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(13))
    r = M.insertion_deletion(model, x, sal, protocol=M.Protocol(pixels_per_step=30))
    assert r["steps"] == 4
    xs = np.linspace(0, 1, r["steps"] + 1)
    for kind in ("insertion", "deletion"):
        curve = r[f"{kind}_curve"].double().numpy()
        assert np.ptp(curve, axis=1).min() > 1e-3                      # curves that are not flat
        np.testing.assert_allclose(r[kind].numpy(), np.trapezoid(curve, xs, axis=1), rtol=1e-6, atol=1e-7)


# --- z^B bounds: box values by hand, padded bounds by an equivalent model ---------------------------------

def test_box_bounds_values_and_zbox_by_hand():
    """``l_c = -mean_c / std_c``, ``h_c = (1 - mean_c) / std_c`` (the normalised images of [0, 1] pixels), and the
    z^B rule with them on a 1 x 2 conv worked by hand."""
    low, high = box_bounds([0.5, 0.25, 0.0], [0.25, 0.5, 2.0], torch.zeros(1, 3, 2, 2))
    assert low.flatten().tolist() == [-2.0, -0.5, 0.0] and high.flatten().tolist() == [2.0, 1.5, 0.5]
    assert low.shape == high.shape == (1, 3, 1, 1)

    conv = nn.Conv2d(1, 1, (1, 2), bias=False)
    fc = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, -1.0]]]]))
        fc.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.Flatten(), fc)
    x = torch.tensor([[[[3.0, 1.0]]]])                      # logit z = 3 - 1 = 2, all relevance R = 2 at the conv
    # z^B: Z = (x0 - l) w0+ + (h - x1)(-w1-) = (x0 - l) + (h - x1); R_i = share_i / Z * R
    # box (mean 0.5, std 0.25): l = -2, h = 2 -> Z = 5 + 1 = 6 -> R = [10/6, 2/6]
    box = fgcam.explain(model, x, "lrp", "input", target=0, zb_bounds=("box", [0.5], [0.25]))
    torch.testing.assert_close(box, torch.tensor([[[5 / 3, 1 / 3]]]))
    # image bounds: l = 1, h = 3 -> Z = 2 + 2 = 4 -> R = [1, 1]
    torch.testing.assert_close(fgcam.explain(model, x, "lrp", "input", target=0), torch.tensor([[[1.0, 1.0]]]))


def test_zbox_bounds_padded_like_the_image():
    """Reference: a conv with its own zero padding pads the input and the bound images alike (the reference code),
    so ``ZeroPad2d(1)`` + conv without padding must give the same input map as the conv with ``padding=1``.  The
    bounds of the padded image are 0 at the border, not the image's min/max."""
    torch.manual_seed(14)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    tail = [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)]
    own = nn.Sequential(conv, *tail).double().eval()
    pad_conv = nn.Conv2d(3, 4, 3, padding=0)
    pad_conv.load_state_dict(conv.state_dict())
    padded = nn.Sequential(nn.ZeroPad2d(1), pad_conv, *copy.deepcopy(tail)).double().eval()
    padded[-1].load_state_dict(own[-1].state_dict())
    x = _smooth(2, 8, 15).double() + 0.5                    # min and max of each image far from 0
    for method in ("lrp", "sglrp"):
        a = fgcam.explain(own, x, method, "input", target=1)
        b = fgcam.explain(padded, x, method, "input", target=1)
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


# --- z+ with negative inputs: zennit on a chain without ReLU between convs --------------------------------

def test_zplus_negative_inputs_match_zennit():
    """The second conv and the linear layer receive negative inputs (BN output, no ReLU; a conv output), so the
    z+ rule's negative branch ``a^- w^-`` carries relevance; zennit's ZPlus (exact stabiliser, bias zeroed) has
    both branches.  LRP from the target logit to the input (z^B at the first conv, gradient through the max-pool,
    which receives a ReLU output as in VGG: fgcam's pool rule clamps negative inputs, zennit's gradient does not)."""
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.core import Stabilizer
    from zennit.rules import Pass, ZBox, ZPlus
    from zennit.types import Activation, BatchNorm, Convolution, Linear

    torch.manual_seed(16)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 5))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model = model.double().eval()
    x = _smooth(1, 8, 17).double()
    ours = fgcam.explain(model, x, "lrp", "input", target=2)

    exact = Stabilizer(epsilon=0.0, clip=False, norm_scale=False)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (BatchNorm, Pass()),
                   (Convolution, ZPlus(stabilizer=exact, zero_params="bias")),
                   (Linear, ZPlus(stabilizer=exact, zero_params="bias"))],
        first_map=[(Convolution, ZBox(x.min().expand_as(x), x.max().expand_as(x), stabilizer=exact,
                                      zero_params="bias"))])
    with torch.no_grad():
        logits = model(x)
        h = model[1](model[0](x))
        flat = model[:6](x)
    assert h.min() < 0 and flat.min() < 0                               # the negative branch is exercised
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, torch.eye(5, dtype=x.dtype)[[2]] * logits[:, 2:3])
    theirs = rel.sum(1)
    assert (ours - theirs).abs().max() <= 1e-9 * theirs.abs().max()


# --- CLRP and SGLRP: combinations of per-class LRP maps -----------------------------------------------------

def test_clrp_sglrp_are_combinations_of_per_class_lrp():
    """Every rule is linear in the relevance, so with ``L_n`` the LRP map of class n (output relevance z_n on n),
    CLRP = ``L_t - z_t / (K - 1) sum_{n != t} L_n / z_n`` (Gu et al. 2018: the dual class's relevance -z_t spread
    over the K - 1 other classes) and SGLRP = ``sum_n (d p_t / d z_n) L_n / z_n`` with the softmax Jacobian taken
    by autograd (Iwana et al. 2019).  Neither formula is the one :mod:`fgcam.lrp` uses."""
    model, x = _small_cnn(18).double(), _smooth(2, 16, 19).double()
    with torch.no_grad():
        z = model(x)
    k, t = z.shape[1], torch.tensor([1, 4])
    lrp = torch.stack([fgcam.explain(model, x, "lrp", "input", target=n) for n in range(k)], 1)    # [B, K, H, W]
    unit = lrp / z[:, :, None, None]                                            # the map of relevance 1 on class n
    clrp = fgcam.explain(model, x, "clrp", "input", target=t)
    sglrp = fgcam.explain(model, x, "sglrp", "input", target=t)
    for i in range(2):
        ti = int(t[i])
        others = [n for n in range(k) if n != ti]
        expected = lrp[i, ti] - z[i, ti] / (k - 1) * unit[i, others].sum(0)
        torch.testing.assert_close(clrp[i], expected, rtol=1e-9, atol=1e-12)
        jac = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0)[ti], z[i])
        torch.testing.assert_close(sglrp[i], (jac[:, None, None] * unit[i]).sum(0), rtol=1e-9, atol=1e-12)
    # and the output relevances themselves
    r = output_relevance(z, t, "clrp")
    assert torch.allclose(r.gather(1, t[:, None])[:, 0], z.gather(1, t[:, None])[:, 0])
    assert torch.allclose(r.sum(1), torch.zeros(2, dtype=z.dtype), atol=1e-12)


# --- a Bottleneck ResNet against zennit ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bottleneck_resnet():
    """torchvision ResNet with Bottleneck blocks (one per stage, narrow bodies), random weights, float64."""
    from torchvision.models.resnet import Bottleneck, ResNet
    torch.manual_seed(20)
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)
    randomise_batchnorm(model, torch.Generator().manual_seed(21))
    return model.double().eval()


def test_bottleneck_resnet_matches_zennit(bottleneck_resnet):
    """As the ResNet-18 test in test_beyond_vgg.py, for ResNet-50's block type: zennit's
    ``ResNetBottleneckCanonizer`` (the addition as a ``Sum``), ZBox on conv1, ZPlus (bias zeroed) elsewhere, Norm
    on the sum, Pass on BN/ReLU, started from fgcam's components at layer4.  One denominator is exactly 0 here
    (fgcam drops that relevance, ``0/0 := 0``; zennit's exact stabiliser would give NaN), so zennit gets an
    epsilon of 1e-100, which turns 0/0 into 0 and changes no other quotient in float64."""
    from zennit.torchvision import ResNetBottleneckCanonizer

    model = copy.deepcopy(bottleneck_resnet)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = _smooth(1, 64, 22).double()
    comps, _ = fgcam.Explainer(model).components(x, "grad-cam", target=3)
    assert comps.shape == (1, 2048, 2, 2)
    ours = fgcam.explain(model, x, "fg-grad-cam", "input", target=3)
    with torch.no_grad():
        torch.testing.assert_close(fgcam.explain(model, x, "grad-cam", "layer4", target=3), comps.sum(1))

    with torch.no_grad():                                   # zennit's canonized forward is the model's forward
        torch.testing.assert_close(model.fc(torch.flatten(model.avgpool(resnet_features(model)(x)), 1)), model(x))
    theirs = zennit_fgcam_map(model, x, comps, ResNetBottleneckCanonizer())
    assert torch.isfinite(theirs).all() and theirs.abs().max() > 0
    assert (ours - theirs).abs().max() <= 1e-9 * theirs.abs().max()


def test_bottleneck_resnet_bn_fold_matches_zennit(bottleneck_resnet):
    """``bn="fold"`` against zennit's ``ResNetCanonizer`` (which merges every BN into its conv), with a third of
    the BN scales negative: z+ and z^B are invariant to a positive per-channel scale of a conv's outputs, so only
    the sign of ``gamma / sqrt(var + eps)`` changes a map, and only negative scales can show a wrong fold.
    zennit leaves a merged BN as ``x / sqrt(1 + eps)``, so the model's eps is moved into its running variances
    (the same model), as in the ResNet-18 test."""
    from zennit.torchvision import ResNetCanonizer

    model = copy.deepcopy(bottleneck_resnet)
    g = torch.Generator().manual_seed(27)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.where(torch.rand(m.num_features, generator=g) < 1 / 3, -1.0, 1.0).double())
                m.running_var += m.eps
                m.eps = 0.0
            if isinstance(m, nn.ReLU):
                m.inplace = False
    x = _smooth(1, 64, 28).double()
    comps, _ = fgcam.Explainer(model).components(x, "grad-cam", target=6)
    ours = fgcam.explain(model, x, "fg-grad-cam", "input", target=6, bn="fold")
    passed = fgcam.explain(model, x, "fg-grad-cam", "input", target=6, bn="pass")
    assert not torch.allclose(ours, passed)                 # the fold matters here (negative scales)

    theirs = zennit_fgcam_map(model, x, comps, ResNetCanonizer())
    assert torch.isfinite(theirs).all()
    assert (ours - theirs).abs().max() <= 1e-9 * theirs.abs().max()


def test_bottleneck_canonized_forward_is_the_models(bottleneck_resnet):
    """While explaining, every block computes what it computes outside (the canonizer reorders nothing)."""
    from fgcam.graph import explaining
    x = _smooth(2, 32, 23).double()
    with torch.no_grad():
        before = bottleneck_resnet(x)
        with explaining(bottleneck_resnet):
            inside = bottleneck_resnet(x)
    torch.testing.assert_close(inside, before, rtol=0, atol=0)


# --- channels_last, no_grad, inference_mode -------------------------------------------------------------

class _FlatNet(nn.Module):
    """A VGG-like net whose forward flattens functionally after a 2 x 2 pool: on a channels-last tensor
    ``torch.flatten`` must copy, which broke the recorded chain before leaf outputs were made contiguous."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(24, 5)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


CASES = [("fg-grad-cam", "input", False), ("fg-score-cam", "features.3", True), ("grad-cam", "features.3", False),
         ("layer-cam", "features.6", False), ("sglrp", "input", False)]


@pytest.fixture(scope="module")
def flat_net():
    torch.manual_seed(24)
    model = _FlatNet()
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.3, 0.3)
    return model.double().eval()


@pytest.mark.parametrize("method,layer,denoise", CASES)
def test_channels_last_inputs_and_models_give_the_same_maps(flat_net, method, layer, denoise):
    x = _smooth(2, 16, 25).double()
    ref = fgcam.explain(flat_net, x, method, layer, target=[1, 3], denoise=denoise)
    xl = x.to(memory_format=torch.channels_last)
    model_l = copy.deepcopy(flat_net).to(memory_format=torch.channels_last)
    for model, images in ((flat_net, xl), (model_l, x), (model_l, xl)):
        out = fgcam.explain(model, images, method, layer, target=[1, 3], denoise=denoise)
        assert out.is_contiguous()
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    assert model_l.features[0].weight.is_contiguous(memory_format=torch.channels_last)   # left as it was


@pytest.mark.parametrize("method,layer,denoise", CASES)
def test_no_grad_and_inference_mode_give_the_same_maps(flat_net, method, layer, denoise):
    x = _smooth(2, 16, 26).double()
    ref = fgcam.explain(flat_net, x, method, layer, target=[0, 2], denoise=denoise)
    with torch.no_grad():
        out = fgcam.explain(flat_net, x, method, layer, target=[0, 2], denoise=denoise)
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with torch.inference_mode():
        xi, ti = x.clone(), torch.tensor([0, 2])             # inference tensors
        out = fgcam.explain(flat_net, xi, method, layer, target=ti, denoise=denoise)
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with torch.inference_mode():
        comps, t = fgcam.Explainer(flat_net).components(x, "grad-cam", target=0)
    assert comps.shape == (2, 6, 4, 4) and t.tolist() == [0, 0]


def test_model_built_in_inference_mode_is_refused_with_advice():
    with torch.inference_mode():
        model = _FlatNet().eval()
    with pytest.raises(RuntimeError, match=r"'features\.0\.weight' was created under torch\.inference_mode\(\)"
                                           r".*outside torch\.inference_mode"):
        fgcam.explain(model, torch.randn(1, 3, 16, 16), "fg-grad-cam", "input")


# --- the pooling rule on negative inputs, by hand ----------------------------------------------------------

def test_pool_rule_clamps_negative_inputs_by_hand():
    """Reference code's pooling rule: LRP-0 on ``X+ = max(X, 0)``.  A window whose values are all negative has
    ``Y = max(X+) = 0`` and drops its relevance; a window with a positive maximum gives it all to its arg-max.
    (Without the clamp, the first window would send 5 to its arg-max -1.)"""
    from fgcam.rules import Context, PoolLRP0
    x = torch.tensor([[[[-1.0, -2.0, 0.5, 3.0]]]])
    r = torch.tensor([[[[5.0, 7.0]]]])
    out = PoolLRP0().relprop(nn.MaxPool2d((1, 2)), x, r, Context())
    assert out.tolist() == [[[[0.0, 0.0, 0.0, 7.0]]]]
    avg = PoolLRP0().relprop(nn.AvgPool2d((1, 2)), x, r, Context())     # z+ with the pool's weights 1/2
    assert avg.tolist() == [[[[0.0, 0.0, 7 * 0.5 / 3.5, 7 * 3.0 / 3.5]]]]


# --- the energy pointing game on a signed map, by hand --------------------------------------------------------

def test_energy_pointing_game_signed_map_by_hand():
    """The maps are signed (fgcam returns them before any ReLU); the energy pointing game (Wang et al. 2020, on
    ReLU'd CAM maps) ReLUs first, then min-max normalises.  ``[[2, -2], [0, 0]]`` -> ReLU ``[[2, 0], [0, 0]]`` ->
    ``[[1, 0], [0, 0]]``: all energy in pixel (0, 0).  (Normalising the signed map would give ``[[1, 0],
    [0.5, 0.5]]`` and 1/2.)"""
    sal = torch.tensor([[[2.0, -2.0], [0.0, 0.0]]])
    assert float(M.energy_pointing_game(sal, torch.tensor([[0, 0, 1, 1]]))) == 1.0
    assert float(M.energy_pointing_game(sal, torch.tensor([[0, 1, 2, 2]]))) == 0.0     # the bottom row
    assert float(M.mask_energy(sal, torch.tensor([[[False, True], [True, True]]]))) == 0.0
