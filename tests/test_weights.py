"""Channel weights computed once and reused: ``Explainer.weights`` and ``weights=`` of ``explain`` / ``report``.

A call given the weights must give the map of a call that computes them, bit for bit (``torch.equal``), for the
Score-CAM and gradient bases, with and without denoising, at several layers, with ``contrast``; it must skip
Score-CAM's masked forward passes; and weights that do not belong to the call are refused, naming what differs.
"""
from __future__ import annotations

import pytest
import torch

import fgcam
from fgcam import components as comp


def _batch(golden, n=3, size=64):
    g = torch.Generator().manual_seed(5)
    x = torch.nn.functional.interpolate(golden["input"], size=(size, size), mode="bilinear").repeat(n, 1, 1, 1)
    return x + 0.5 * torch.randn(x.shape, generator=g)


@pytest.fixture()
def masked_calls(monkeypatch):
    """Counts the calls of Score-CAM's masked-forward routine (one per weighting of a batch)."""
    calls = []
    original = comp._masked_probabilities

    def counting(*a, **k):
        calls.append(a[1].shape[0])
        yield from original(*a, **k)

    monkeypatch.setattr(comp, "_masked_probabilities", counting)
    return calls


@pytest.mark.parametrize("base", ["score-cam", "grad-cam", "grad-cam++", "xgrad-cam"])
@pytest.mark.parametrize("contrast", [None, "others", "softmax"])
def test_fg_maps_with_weights_are_bit_equal(golden, golden_model, base, contrast, masked_calls):
    x = _batch(golden)
    target = torch.tensor([1, 4, 7])
    ex = fgcam.Explainer(golden_model, score_batch_size=7)
    w = ex.weights(x, f"fg-{base}", target=target, contrast=contrast)
    assert w.alpha.shape == (3, 32) and w.method == base and w.layer == "features.43" and w.contrast == contrast
    n_before = len(masked_calls)
    for layer in ("features.43", "features.23", "features.13", "input"):
        for denoise in (False, True, 3):
            given = ex(x, f"fg-{base}", layer, target=target, denoise=denoise, contrast=contrast, weights=w)
            computed = ex(x, f"fg-{base}", layer, target=target, denoise=denoise, contrast=contrast)
            assert torch.equal(given, computed), (layer, denoise)
    expected = 12 if base == "score-cam" else 0         # the 12 calls without weights=; none with them
    assert len(masked_calls) - n_before == expected


@pytest.mark.parametrize("base", ["score-cam", "grad-cam", "grad-cam++", "xgrad-cam"])
@pytest.mark.parametrize("layer", ["features.33", "features.23"])
def test_plain_cam_maps_with_weights_are_bit_equal(golden, golden_model, base, layer):
    x = _batch(golden)
    ex = fgcam.Explainer(golden_model)
    for contrast in (None, "others"):
        w = ex.weights(x, base, layer=layer, contrast=contrast)          # target None: the predicted classes
        assert w.layer == layer and torch.equal(w.target, golden_model(x).argmax(1))
        assert torch.equal(ex(x, base, layer, contrast=contrast, weights=w), ex(x, base, layer, contrast=contrast))


def test_components_are_alpha_times_activations(golden, golden_model):
    """The weights are the alpha_k of Eq. 1-3: the components of ``Explainer.components`` divided by A_k."""
    x = _batch(golden)
    ex = fgcam.Explainer(golden_model)
    w = ex.weights(x, "score-cam")
    I, t = ex.components(x, "score-cam")
    assert torch.equal(t, w.target)
    A = golden_model.features(x)
    torch.testing.assert_close(I, w.alpha[:, :, None, None] * A, rtol=0, atol=0)


def test_function_and_report_take_weights(golden, golden_model, masked_calls):
    x = _batch(golden, n=2)
    ex = fgcam.Explainer(golden_model)
    w = ex.weights(x, "fg-score-cam")
    assert len(masked_calls) == 1
    assert torch.equal(fgcam.explain(golden_model, x, "fg-score-cam", "features.13", weights=w),
                       fgcam.explain(golden_model, x, "fg-score-cam", "features.13"))
    a = ex.report(x, "fg-score-cam", "input", denoise=True, weights=w)
    b = ex.report(x, "fg-score-cam", "input", denoise=True)
    assert len(masked_calls) == 3                      # the call and the report without weights=
    for field in ("maps", "start", "scale", "reached", "dropped", "magnitude", "bypassed"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_weights_that_do_not_belong_to_the_call_are_refused(golden, golden_model):
    x = _batch(golden)
    ex = fgcam.Explainer(golden_model)
    w = ex.weights(x, "score-cam", target=[1, 2, 3])
    t = torch.tensor([1, 2, 3])
    cases = [
        (dict(method="lrp"), ValueError, "lrp starts from the output relevance"),
        (dict(method="fg-grad-cam"), ValueError, "computed for 'score-cam'; fg-grad-cam needs 'grad-cam'"),
        (dict(method="fg-layer-cam"), ValueError, "Layer-CAM weighs each pixel"),
        (dict(contrast="others"), ValueError, "contrast=None; this call has contrast='others'"),
        (dict(images=x[:2], target=t[:2]), ValueError, "batch of 3 images; this call has 2"),
        (dict(target=torch.tensor([1, 2, 4])), ValueError, r"target \[1, 2, 3\]; this call explains \[1, 2, 4\]"),
        (dict(images=x.flip(0)), ValueError, "other images"),
        (dict(method="score-cam", layer="features.33"), ValueError,
         "of layer 'features.43'; this call weighs the activations of 'features.33'"),
        (dict(weights=w.alpha), TypeError, "ChannelWeights from Explainer.weights"),
    ]
    for change, error, message in cases:
        call = {"images": x, "method": "fg-score-cam", "layer": "features.13", "target": t, "weights": w, **change}
        with pytest.raises(error, match=message):
            ex.explain(**call)
    with pytest.raises(ValueError, match="of layer 'features.43'; this call weighs the activations of 'features.42'"):
        fgcam.Explainer(golden_model, cam_layer="features.42")(x, "fg-score-cam", "input", target=t, weights=w)
    with pytest.raises(ValueError, match="other activations of 'features.43'"):
        with torch.no_grad():
            golden_model.features[40].weight.mul_(1.5)
        ex(x, "fg-score-cam", "input", target=t, weights=w)
    with pytest.raises(ValueError, match="layer-cam weighs each pixel"):
        ex.weights(x, "fg-layer-cam")
    with pytest.raises(ValueError, match="unknown CAM method 'lrp'"):
        ex.weights(x, "lrp")
    with pytest.raises(ValueError, match="not to 'input'"):
        ex.weights(x, "grad-cam", layer="input")


def test_weights_are_frozen(golden, golden_model):
    w = fgcam.Explainer(golden_model).weights(_batch(golden, n=1), "grad-cam")
    with pytest.raises(AttributeError):
        w.alpha = w.alpha * 2
    assert "ChannelWeights('grad-cam' at 'features.43', (1, 32)" in repr(w)


def test_claims_share_the_score_cam_weights(golden, golden_model, masked_calls):
    """claims.denoise_rows explains FG-Score-CAM and FG-Score-CAMD with one Score-CAM weighting, the same values."""
    from fgcam import claims
    from fgcam.metrics import mask_energy

    x = _batch(golden, n=2)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 8:40, 16:48] = True
    rows = claims.denoise_rows(golden_model, x, masks)
    assert masked_calls == [2]
    got = {(r["method"], r["image_id"]): r["value"] for r in rows}
    for name, denoise in (("FG-Score-CAM", False), ("FG-Score-CAMD", True)):
        e = mask_energy(fgcam.explain(golden_model, x, "fg-score-cam", "input", denoise=denoise), masks)
        assert [got[name, str(i)] for i in range(2)] == e.double().tolist()


def test_score_cam_runs_each_distinct_image_once(golden, golden_model, masked_calls):
    """A grid composite is explained once per cell: one image with four targets.  Score-CAM runs the masked images
    of each distinct (image, activations) pair once and reads every item's target from them; the weights equal
    those of each item alone, bit for bit (one masked image per pass on both sides)."""
    x, y = _batch(golden, n=2)
    images, target = torch.stack([x, y, x, x]), torch.tensor([1, 4, 7, 1])
    with torch.no_grad():
        A = golden_model.features[:44](images)
    both = comp.score_cam_weights(golden_model, images, A, target, batch_size=1)
    assert masked_calls == [2]  # x and y, not four images
    for i in range(4):
        alone = comp.score_cam_weights(golden_model, images[i : i + 1], A[i : i + 1], target[i : i + 1], batch_size=1)
        assert torch.equal(both[i : i + 1], alone), i
    assert not torch.equal(both[0], both[2])  # same image, other class
    other = A.clone()
    other[2] = other[2].flip(-1)  # the same image with other activations is another pair
    comp.score_cam_weights(golden_model, images, other, target, batch_size=1)
    assert masked_calls[-1] == 3
