"""fgcam.explain: batching, conservation, cross-checks with pytorch-grad-cam and zennit, LRP-family toys, errors."""
import math

import pytest
import torch
from torch import nn

import fgcam
from fgcam.explain import METHODS
from fgcam.graph import record
from fgcam.propagation import image_bounds, propagate

REQUIRED = {"grad-cam", "score-cam", "layer-cam", "grad-cam++", "xgrad-cam", "fg-grad-cam", "fg-score-cam",
            "fg-grad-cam++", "fg-xgrad-cam", "lrp", "clrp", "sglrp"}


def test_methods_listed():
    assert REQUIRED <= set(fgcam.METHODS)


def _batch(golden, n=8, size=64):
    """n noisy copies of the golden input at size x size (the golden model's adaptive pool takes any size)."""
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.interpolate(golden["input"], size=(size, size), mode="bilinear").repeat(n, 1, 1, 1)
    return x + 0.5 * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("method,layer,denoise", [
    ("fg-grad-cam", "input", False), ("fg-grad-cam", "features.13", True), ("fg-score-cam", "features.23", False),
    ("fg-grad-cam++", "features.6", False), ("fg-xgrad-cam", "features.33", 2), ("fg-layer-cam", "input", False),
    ("grad-cam", "features.13", False), ("score-cam", "features.33", False), ("layer-cam", "features.23", False),
    ("grad-cam++", "features.33", False), ("xgrad-cam", "features.13", False),
    ("lrp", "input", False), ("clrp", "features.13", False), ("sglrp", "input", False)])
def test_batch_equals_singles(golden, golden_model, method, layer, denoise):
    """In float64, so that float rounding (which the z^B denominators amplify) cannot hide a real difference."""
    golden_model.double()
    x = _batch(golden).double()
    target = torch.tensor([0, 1, 2, 3, 4, 5, 6, 9])
    batched = fgcam.explain(golden_model, x, method, layer, target=target, denoise=denoise)
    singles = torch.cat([fgcam.explain(golden_model, x[i:i + 1], method, layer, target=int(target[i]),
                                       denoise=denoise) for i in range(len(x))])
    scale = singles.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    assert batched.dtype == torch.float64
    assert ((batched - singles).abs() / scale).max() < 1e-9


def test_target_none_is_argmax(golden, golden_model):
    x = _batch(golden, 4)
    pred = golden_model(x).argmax(1)
    a = fgcam.explain(golden_model, x, "fg-grad-cam", "features.13")
    b = fgcam.explain(golden_model, x, "fg-grad-cam", "features.13", target=pred)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fg_at_cam_layer_is_the_cam_map(golden, golden_model):
    x = _batch(golden, 2)
    for base in ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam"):
        fg = fgcam.explain(golden_model, x, f"fg-{base}", "features.43")
        cam = fgcam.explain(golden_model, x, base, "features.43")
        torch.testing.assert_close(fg, cam, rtol=1e-6, atol=1e-7)


def _conservation(model, x, method):
    explainer = fgcam.Explainer(model)
    comps, _ = explainer.components(x, method)
    sums = [comps.sum().item()]
    with fgcam.graph.explaining(model):
        trace = record(model, x, store_from="input")
        propagate(trace, comps, "features.43", "input", bounds=image_bounds(x),
                  on_step=lambda name, r: sums.append(r.sum().item()))
    return sums


@pytest.mark.parametrize("method", ["grad-cam", "xgrad-cam"])
def test_conservation_random_vgg16_bn(random_vgg16_bn, method):
    """Without denoising, the sum of relevance is kept from layer to layer (no zero denominators occur here)."""
    x = torch.nn.functional.interpolate(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)),
                                        size=(64, 64), mode="bilinear")
    sums = _conservation(random_vgg16_bn, x, method)
    assert len(sums) == 45
    for before, after in zip(sums, sums[1:]):
        assert abs(after - before) <= 1e-5 * abs(sums[0]) + 1e-9


def test_conservation_golden_matches_reference_drop(golden, golden_model):
    """Denoised components lose exactly the relevance that sits where the last max-pool's output is 0."""
    out = fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "features.33", denoise=True)
    comps = golden["components_denoised/grad_cam"]
    dropped = comps[golden["activations/features43"][0] == 0].sum()
    assert abs(out.sum() - (comps.sum() - dropped)) < 1e-5 * comps.abs().sum()


def _post(cam, size):
    """pytorch-grad-cam's own post-processing, applied to our maps: ReLU, min-max + resize, min-max again
    (``BaseCAM.compute_cam_per_layer`` then ``aggregate_multi_layers``)."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    return torch.from_numpy(scale_cam_image(scale_cam_image(cam.clamp(min=0).numpy(), size)))


@pytest.mark.parametrize("name", ["grad-cam", "layer-cam", "xgrad-cam"])
def test_cam_matches_pytorch_grad_cam(random_vgg16_bn, smooth_images, name):
    from pytorch_grad_cam import GradCAM, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cls = {"grad-cam": GradCAM, "layer-cam": LayerCAM, "xgrad-cam": XGradCAM}[name]
    x = smooth_images[:1]
    model = random_vgg16_bn
    with cls(model=model, target_layers=[model.features[33]]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(7)]))
    ours = fgcam.explain(model, x, name, "features.33", target=7)
    assert ours.shape == (1, 14, 14)
    assert (_post(ours, (224, 224)) - theirs).abs().max() < 1e-4


def test_grad_cam_pp_weights_match_pytorch_grad_cam():
    """pytorch-grad-cam adds eps = 1e-6 to the Grad-CAM++ denominator, which dominates it for the small gradients
    of a real network (so their maps differ from the formula there); with gradients of order 1 the eps is
    negligible and the two formulas must agree."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from fgcam.components import grad_cam_pp_weights
    g = torch.Generator().manual_seed(0)
    A = torch.rand(2, 6, 5, 5, generator=g, dtype=torch.float64) * (torch.rand(2, 6, 5, 5, generator=g) > 0.3)
    G = 10 * torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64)
    G[0, 0] = 0
    theirs = GradCAMPlusPlus.get_cam_weights(None, None, None, None, A.numpy(), G.numpy())
    torch.testing.assert_close(grad_cam_pp_weights(A, G), torch.from_numpy(theirs), rtol=1e-5, atol=1e-8)


def test_fgcam_input_matches_zennit(random_vgg16_bn, smooth_images):
    """FG-CAM at the input = zennit LRP (ZBox first conv, ZPlus with bias zeroed, Pass on BN/ReLU, gradient
    through max-pool) started from the same components at the last max-pool."""
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.core import Stabilizer
    from zennit.rules import Pass, ZBox, ZPlus
    from zennit.types import Activation, BatchNorm, Convolution
    from zennit.attribution import Gradient

    model, x = random_vgg16_bn, smooth_images[:1]
    comps, _ = fgcam.Explainer(model).components(x, "grad-cam", target=5)
    ours = fgcam.explain(model, x, "fg-grad-cam", "input", target=5)

    exact = Stabilizer(epsilon=0.0, clip=False, norm_scale=False)  # no epsilon: division as in the reference
    low, high = x.min().expand_as(x), x.max().expand_as(x)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (BatchNorm, Pass()), (Convolution, ZPlus(stabilizer=exact, zero_params="bias"))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=exact, zero_params="bias"))])
    with Gradient(model=model.features, composite=composite) as attributor:
        _, rel = attributor(x, comps)
    theirs = rel.sum(1)
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


class Toy(nn.Module):
    """logits = W relu(x) for x of shape [B,1,1,2]: relevances can be worked out by hand."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 1.0]]))

    def forward(self, x):
        return self.fc(self.relu(self.flatten(x)))


def test_lrp_family_by_hand():
    model, x = Toy(), torch.tensor([[[[1.0, 2.0]]]])      # logits [5, 1, 0]
    # z+ at fc: class 0 shares 5 as [1*1, 2*2]/5; class 1 only via input 0 (w+ = [3, 0]); class 2 via input 1.
    lrp = fgcam.explain(model, x, "lrp", "input", target=0)
    torch.testing.assert_close(lrp, torch.tensor([[[1.0, 4.0]]]))
    clrp = fgcam.explain(model, x, "clrp", "input", target=0)   # R_out = [5, -2.5, -2.5]
    torch.testing.assert_close(clrp, torch.tensor([[[1.0 - 2.5, 4.0 - 2.5]]]))
    e = [math.exp(5), math.exp(1), math.exp(0)]
    p = [v / sum(e) for v in e]
    r0, r1, r2 = p[0] * (1 - p[0]), -p[0] * p[1], -p[0] * p[2]
    sglrp = fgcam.explain(model, x, "sglrp", "input", target=0)
    torch.testing.assert_close(sglrp, torch.tensor([[[r0 / 5 + r1, 4 * r0 / 5 + r2]]]))
    assert sglrp.sum().item() == pytest.approx(r0 + r1 + r2, abs=1e-6)


def test_zbox_first_layer_by_hand():
    """One 1x1 conv on the input: z^B with l = min(x), h = max(x) over the image."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 3.0]]]])
    out = fgcam.explain(model, x, "lrp", "input", target=0)
    # conv out = [2, 6]; fc z+ gives R = [2, 6]; z^B at conv: Z_j = 2 x_j - 2 l = 2(x_j - 1), so pixel 0 (Z=0) drops.
    torch.testing.assert_close(out, torch.tensor([[[0.0, 6.0]]]))


# --- model state and bad input ---------------------------------------------------------------------------

def test_model_state_restored(golden, golden_model):
    model = golden_model.train()
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]
    out = fgcam.explain(model, golden["input"], "fg-grad-cam", "features.13")
    assert all(m.training for m in model.modules())
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace and any(inplace)
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                     for m in model.modules()]
    model.eval()
    torch.testing.assert_close(out, fgcam.explain(model, golden["input"], "fg-grad-cam", "features.13"))
    assert all(p.grad is None for p in model.parameters())


def test_unknown_layer_lists_names(golden, golden_model):
    with pytest.raises(ValueError, match=r"unknown layer 'features\.99'.*features\.13"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "features.99")


def test_unknown_method(golden, golden_model):
    with pytest.raises(ValueError, match="unknown method 'gradcam'.*fg-grad-cam"):
        fgcam.explain(golden_model, golden["input"], "gradcam", "features.13")


@pytest.mark.parametrize("target", [10, -1, [0, 1]])
def test_target_out_of_range(golden, golden_model, target):
    with pytest.raises(ValueError, match="target"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "features.13", target=target)


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 1, 224, 224), (1, 4, 64, 64)])
def test_bad_image_shape(golden_model, shape):
    with pytest.raises(ValueError, match=r"images must have shape \[B, 3, H, W\]"):
        fgcam.explain(golden_model, torch.zeros(shape), "fg-grad-cam", "features.13")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_images(golden, golden_model, bad):
    x = golden["input"].repeat(2, 1, 1, 1).clone()
    x[1, 0, 5, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf \(images \[1\]"):
        fgcam.explain(golden_model, x, "fg-grad-cam", "features.13")


def test_unsupported_module_named(golden, golden_model):
    golden_model.features[14] = nn.Conv2d(16, 32, 3, padding=1, padding_mode="zeros")
    golden_model.features[16] = nn.GELU()
    with pytest.raises(TypeError, match=r"module 'features\.16' of type GELU"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "features.13")
    # above the target layer only: fine.  The GELU lies below features.23, so the map there is the propagation
    # through features.24-43 alone: it conserves the components' relevance (up to the 0/0 drops).
    from fgcam.rules import dropped_relevance
    comps, _ = fgcam.Explainer(golden_model).components(golden["input"], "grad-cam")
    with dropped_relevance() as drops:
        above = fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "features.23")
    assert above.shape == (1, 28, 28) and above.abs().max() > 0
    lost = float(sum(drops)) if drops else 0.0
    assert abs(above.sum().item() + lost - comps.sum().item()) <= 1e-5 * comps.abs().sum().item()


def test_non_chain_model_error():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.features(x)
            h = self.conv(h) + h
            return self.fc(h.mean((2, 3)))

    with pytest.raises(RuntimeError, match="module 'fc'.*not a plain chain"):
        fgcam.explain(Residual().eval(), torch.randn(1, 3, 8, 8), "fg-grad-cam", "input")


def test_layer_above_cam_layer(golden, golden_model):
    with pytest.raises(ValueError, match="above the CAM layer"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "classifier.0")


def test_cam_layer_required_without_features():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="cam_layer="):
        fgcam.explain(model, torch.randn(1, 3, 8, 8), "fg-grad-cam", "input")
    out = fgcam.explain(model, torch.randn(1, 3, 8, 8), "fg-grad-cam", "input", cam_layer="1")
    assert out.shape == (1, 8, 8)


def test_plain_cam_at_input_rejected(golden, golden_model):
    with pytest.raises(ValueError, match="needs a hidden layer"):
        fgcam.explain(golden_model, golden["input"], "grad-cam", "input")


def test_bad_options(golden, golden_model):
    with pytest.raises(TypeError, match="unknown option"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "input", zb_bound="image")
    with pytest.raises(ValueError, match="denoise"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "input", denoise=-2)
    with pytest.raises(ValueError, match="exceeds"):
        fgcam.explain(golden_model, golden["input"], "fg-grad-cam", "input", denoise=49)


def test_box_bounds_and_bn_fold_options(golden, golden_model):
    x = golden["input"]
    ref = fgcam.explain(golden_model, x, "fg-grad-cam", "input")
    box = fgcam.explain(golden_model, x, "fg-grad-cam", "input", zb_bounds=("box", [0.485, 0.456, 0.406],
                                                                             [0.229, 0.224, 0.225]))
    same = fgcam.explain(golden_model, x, "fg-grad-cam", "input", zb_bounds=(x.min().item(), x.max().item()))
    torch.testing.assert_close(same, ref)
    assert not torch.allclose(box, ref)
    fold = fgcam.explain(golden_model, x, "fg-grad-cam", "features.13", bn="fold")
    assert fold.shape == (1, 56, 56) and not torch.allclose(fold, fgcam.explain(golden_model, x, "fg-grad-cam",
                                                                                  "features.13"))
