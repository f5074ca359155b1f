"""Class-contrastive components (beyond the paper): contrast="others" | "softmax" for CAM and FG-CAM methods.

The contrastive components are the target's minus those of a dual output ``y_d = sum_n c_n y_n``.  The tests
build that dual output independently (a linear head ``c`` on top of the model, or Score-CAM's masked passes by
hand) and check that the contrastive map is the difference of the two separately propagated maps (the rules are
linear in the relevance)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgcam
from fgcam import components as comp, zoo
from fgcam.denoise import denoise_components
from fgcam.graph import explaining, record
from fgcam.lrp import dual_coefficients
from fgcam.propagation import image_bounds, propagate


REAL = zoo.real_models_folder() or zoo.REAL_MODELS_DIR  # bundled with the package
ROOT = Path(__file__).resolve().parents[1]
BASES = ["grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "score-cam"]


def test_dual_coefficients_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([2])
    torch.testing.assert_close(dual_coefficients(logits, t, "others"),
                               torch.tensor([[1 / 3, 1 / 3, 0.0, 1 / 3]], dtype=torch.float64))
    p = torch.softmax(logits, 1)[0]
    expected = torch.tensor([p[0], p[1], 0.0, p[3]], dtype=torch.float64) / (1 - p[2])
    torch.testing.assert_close(dual_coefficients(logits, t, "softmax")[0], expected)
    huge = torch.tensor([[0.0, 1000.0, 1.0]])                    # p_t rounds to 1: still a distribution
    torch.testing.assert_close(dual_coefficients(huge, torch.tensor([1]), "softmax"),
                               torch.softmax(torch.tensor([[0.0, -float("inf"), 1.0]]), 1))
    with pytest.raises(ValueError, match="unknown contrast"):
        dual_coefficients(logits, t, "all")


def _small(golden):
    """The golden input at 96 x 96 (features.43: 32 x 3 x 3): float64 convolutions on the CPU are slow."""
    return F.interpolate(golden["input"], size=(96, 96), mode="bilinear", align_corners=False)


@pytest.fixture()
def golden64(golden, golden_model):
    return golden_model.double(), _small(golden).double()


def _propagated(model, x, comps, cam):
    with explaining(model):
        trace = record(model, x)
        return propagate(trace, comps, cam, "input", bounds=image_bounds(x)).sum(1)


def _dual_components(model, x, base, coefficients, cam):
    """The dual output's components, built independently of fgcam's contrast code."""
    if base == "score-cam":                                        # Score-CAM by hand: sum_n c_n p_n(x * M_k)
        with explaining(model), torch.no_grad():
            A = record(model, x, keep_outputs=(cam,)).outputs[cam]
            masks = comp.score_cam_masks(A, x.shape[-2:])[0]
            probs = torch.softmax(model(x * masks[:, None]), dim=1)
        return (probs @ coefficients[0])[None, :, None, None] * A
    head = nn.Linear(coefficients.shape[1], 1, bias=False).to(x.dtype)  # y_d = c . logits, a model of its own
    with torch.no_grad():
        head.weight.copy_(coefficients)
    dual, _ = fgcam.Explainer(nn.Sequential(model, head), cam_layer=f"0.{cam}").components(x, base, target=0)
    return dual


@pytest.mark.parametrize("contrast", ["others", "softmax"])
@pytest.mark.parametrize("base", BASES)
def test_contrastive_map_is_the_difference_of_propagated_maps(golden64, base, contrast):
    model, x = golden64
    target = 3
    with torch.no_grad():
        c = dual_coefficients(model(x), torch.tensor([target]), contrast)
    own, _ = fgcam.Explainer(model).components(x, base, target=target)
    dual = _dual_components(model, x, base, c, "features.43")
    contrastive, t = fgcam.Explainer(model).components(x, base, target=target, contrast=contrast)
    assert int(t) == target
    torch.testing.assert_close(contrastive, own - dual, rtol=1e-9, atol=1e-12 * float(own.abs().max()))
    ours = fgcam.explain(model, x, f"fg-{base}", "input", target=target, contrast=contrast)
    diff = _propagated(model, x, own, "features.43") - _propagated(model, x, dual, "features.43")
    assert (ours - diff).abs().max() <= 1e-9 * diff.abs().max()
    assert not torch.allclose(ours, _propagated(model, x, own, "features.43"))
    cam = fgcam.explain(model, x, base, "features.43", target=target, contrast=contrast)  # plain CAM: summed
    torch.testing.assert_close(cam, (own - dual).sum(1), rtol=1e-9, atol=1e-12 * float(own.abs().max()))


@pytest.mark.parametrize("base", BASES)
def test_contrast_none_is_the_paper(golden_model, golden, base):
    """contrast=None is the paper, bit for bit: the same as not passing it, and as components + propagation."""
    x = _small(golden)
    paper = fgcam.explain(golden_model, x, f"fg-{base}", "input")
    assert torch.equal(fgcam.explain(golden_model, x, f"fg-{base}", "input", contrast=None), paper)
    comps, _ = fgcam.Explainer(golden_model).components(x, base)
    assert torch.equal(_propagated(golden_model, x, comps, "features.43").detach(), paper)


def test_contrast_with_denoising_and_errors(golden64):
    model, x = golden64
    comps, _ = fgcam.Explainer(model).components(x, "grad-cam", contrast="others")
    ours = fgcam.explain(model, x, "fg-grad-cam", "input", denoise=2, contrast="others")
    manual = _propagated(model, x, denoise_components(comps, 2), "features.43")
    assert (ours - manual).abs().max() <= 1e-9 * manual.abs().max()
    with pytest.raises(ValueError, match=r"contrast must be None \(the paper\) or one of 'others', 'softmax'"):
        fgcam.explain(model, x, "fg-grad-cam", "input", contrast="clrp")
    with pytest.raises(ValueError, match="not clrp.*'clrp' \\(contrast='others'\\)"):
        fgcam.explain(model, x, "clrp", "input", contrast="others")


def test_score_cam_contrast_weights_share_the_passes(golden64):
    model, x = golden64
    with explaining(model), torch.no_grad():
        A = record(model, x, keep_outputs=("features.43",)).outputs["features.43"]
        c = dual_coefficients(model(x), torch.tensor([1]), "softmax")
    wt, wd = comp.score_cam_contrast_weights(model, x, A, torch.tensor([1]), c, batch_size=7)
    assert torch.equal(wt, comp.score_cam_weights(model, x, A, torch.tensor([1]), batch_size=7))
    assert wd.shape == wt.shape and bool((wd > 0).all())


@pytest.mark.parametrize("contrast", ["others", "softmax"])
def test_real_mobilenet_v1_contrast_linearity(contrast):
    """The real MobileNet V1 (float64) on pets.png, Italian greyhound (172) and Boston bull (196): the contrastive
    FG-Grad-CAM map is the target's map minus the dual head's map, with the paper's and with a conserving rule."""
    if not (REAL / "validation.json").exists():
        pytest.fail(f"{REAL} is missing: the real MobileNets ship with the package (fgcam/weights/real-imagenet)")
    model, spec = zoo.load_spec(REAL, "mobilenet_v1_0.75_192")
    model = model.double()
    x = zoo.preprocess_photo(REAL / "photos" / "pets.png", spec).double()
    for target, zd in ((172, "drop"), (196, "flat")):
        with torch.no_grad():
            c = dual_coefficients(model(x), torch.tensor([target]), contrast)
        ex = fgcam.Explainer(model, zero_denominator=zd)
        ours = ex.explain(x, "fg-grad-cam", "input", target=target, contrast=contrast)
        own = ex.explain(x, "fg-grad-cam", "input", target=target)
        head = nn.Linear(1001, 1, bias=False).double()
        with torch.no_grad():
            head.weight.copy_(c)
        dual = fgcam.Explainer(nn.Sequential(model, head), cam_layer="0.features.58", zero_denominator=zd).explain(
            x, "fg-grad-cam", "input", target=0)
        assert (ours - (own - dual)).abs().max() <= 1e-9 * own.abs().max(), (target, zd)
