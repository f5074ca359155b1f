"""Conservation (beyond the paper): the report of where relevance is dropped, and the rules that keep it
(fgcam.conservation), by hand and on the real ImageNet MobileNets bundled with the package."""
import pytest
import torch
from torch import nn

import fgcam
from fgcam import canonizers, conservation as cons, zoo
from fgcam.graph import explaining, record
from fgcam.propagation import image_bounds, propagate
from fgcam.rules import AddShare, Context, Crop, PoolLRP0, ZBox, ZPlus, dropped_relevance

REAL = zoo.real_models_folder() or zoo.REAL_MODELS_DIR  # bundled with the package
SPREADS = [cons.Flat(), cons.WSquare()]


def _dropped(fn):
    with dropped_relevance() as drops:
        out = fn()
    return out, float(sum(drops)) if drops else 0.0


# --- rules by hand --------------------------------------------------------------------------------------

def _depthwise(weight, bias=1.0, padding=0):
    conv = nn.Conv2d(1, 1, 3, padding=padding, groups=1)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).view(1, 1, 3, 3))
        conv.bias.fill_(bias)
    return conv


W = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 0.0, 1.0]]


def test_zero_window_dropped_by_zplus_kept_by_flat_and_w2():
    """A 3x3 window that is all zero after ReLU (z+ denominator exactly 0) while the bias keeps the output (and
    its relevance) positive: the paper's z+ drops R = 9, flat gives each input 1, w^2 gives R w^2 / sum w^2."""
    conv, x, r = _depthwise(W), torch.zeros(1, 1, 3, 3), torch.tensor([[[[9.0]]]])
    out, dropped = _dropped(lambda: ZPlus().relprop(conv, x, r, Context()))
    assert dropped == 9.0 and torch.equal(out, torch.zeros_like(x))
    flat, dropped = _dropped(lambda: cons.ZPlusConserving(cons.Flat()).relprop(conv, x, r, Context()))
    torch.testing.assert_close(flat, torch.ones_like(x))
    assert dropped == 0.0
    w2, dropped = _dropped(lambda: cons.ZPlusConserving(cons.WSquare()).relprop(conv, x, r, Context()))
    w = torch.tensor(W) ** 2
    torch.testing.assert_close(w2, (9.0 * w / w.sum()).view(1, 1, 3, 3))
    assert dropped == 0.0


def test_zero_windows_with_conv_padding_spread_over_real_inputs_only():
    """2x2 zero input, 3x3 kernel, padding 1: every output window holds the 4 real inputs (the conv's own padding
    gets nothing), so flat gives each input sum(R) / 4 = 10."""
    conv = _depthwise(W, padding=1)
    x, r = torch.zeros(1, 1, 2, 2), torch.tensor([[[[4.0, 8.0], [12.0, 16.0]]]])
    flat = cons.ZPlusConserving(cons.Flat()).relprop(conv, x, r, Context())
    torch.testing.assert_close(flat, torch.full_like(x, 10.0))
    w2 = cons.ZPlusConserving(cons.WSquare()).relprop(conv, x, r, Context())
    torch.testing.assert_close(w2.sum(), r.sum())
    # output (0, 0) sees inputs (0, 0), (0, 1), (1, 0), (1, 1) through kernel taps (1, 1), (1, 2), (2, 1), (2, 2)
    w = torch.tensor(W) ** 2
    taps = [w[1:, 1:], w[1:, :2], w[:2, 1:], w[:2, :2]]           # the window of each output, over the input
    expected = sum(rj * t / t.sum() for rj, t in zip([4.0, 8.0, 12.0, 16.0], taps))
    torch.testing.assert_close(w2[0, 0], expected)


@pytest.mark.parametrize("spread", SPREADS, ids=lambda s: s.name)
def test_conserving_zplus_equals_zplus_where_nothing_is_dropped(spread, monkeypatch):
    """Where no denominator is zero the conserving rules compute exactly the reference's z+ (bit for bit),
    also with negative inputs and for a grouped conv."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():                                  # weights independent of the tests run before
        torch.manual_seed(0)
        conv = nn.Conv2d(8, 4, 3, padding=1, groups=4)             # 8-18 inputs per window: no zero Z here
    x = torch.randn(2, 8, 5, 5, generator=g)
    r = torch.randn(2, 4, 5, 5, generator=g)
    ref, dropped = _dropped(lambda: ZPlus().relprop(conv, x, r, Context()))
    assert dropped == 0.0
    got = cons.ZPlusConserving(spread).relprop(conv, x, r, Context())
    # ZPlus runs its convolutions channels-last on the CPU (fgcam.rules.CHANNELS_LAST), which changes the order of
    # float32 sums: equal to rounding there, and bit for bit in the same memory format
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    monkeypatch.setitem(fgcam.rules.CHANNELS_LAST, "cpu", False)
    assert torch.equal(got, ZPlus().relprop(conv, x, r, Context()))


@pytest.mark.parametrize("spread", SPREADS, ids=lambda s: s.name)
def test_depthwise_mixed_windows_conserve(spread):
    """Depthwise conv over ReLU-like inputs with many all-zero windows: z+ drops, the conserving rule keeps the
    total, only spreads within each channel, and agrees with z+ on the windows z+ keeps."""
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(3, 3, 3, padding=1, groups=3).double()
    x = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) - 1.2).clamp(min=0)
    r = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    ref, dropped = _dropped(lambda: ZPlus().relprop(conv, x, r, Context()))
    out, left = _dropped(lambda: cons.ZPlusConserving(spread).relprop(conv, x, r, Context()))
    assert dropped > 0.05 * float(r.sum()) and left == 0.0
    torch.testing.assert_close(out.sum((2, 3)), r.sum((2, 3)))            # per channel: its group only
    kept = torch.nn.functional.conv2d(x, conv.weight.detach().clamp(min=0), padding=1, groups=3) != 0
    ref_kept = ZPlus().relprop(conv, x, r * kept, Context())
    spread_part = cons.ZPlusConserving(spread).relprop(conv, x, r * ~kept, Context())
    torch.testing.assert_close(out, ref_kept + spread_part)
    torch.testing.assert_close(ref, ref_kept)


def test_w2_falls_back_to_flat_for_an_all_zero_kernel():
    conv, x, r = _depthwise([[0.0] * 3] * 3), torch.zeros(1, 1, 3, 3), torch.tensor([[[[9.0]]]])
    out, dropped = _dropped(lambda: cons.ZPlusConserving(cons.WSquare()).relprop(conv, x, r, Context()))
    torch.testing.assert_close(out, torch.ones_like(x))
    assert dropped == 0.0


def test_zbox_zero_denominator_by_hand():
    """z^B: Z_j = (x_0 - l) w_0+ ... = 0 when every input sits at the bound its weight sign selects."""
    conv = nn.Conv2d(1, 1, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, -1.0]]]]))
    x, r = torch.tensor([[[[-1.0, 2.0]]]]), torch.tensor([[[[6.0]]]])
    ctx = Context(first=True, bounds=(torch.tensor(-1.0).view(1, 1, 1, 1), torch.tensor(2.0).view(1, 1, 1, 1)))
    out, dropped = _dropped(lambda: ZBox().relprop(conv, x, r, ctx))
    assert dropped == 6.0
    for spread in SPREADS:                                         # weights 1 and -1: w^2 = flat here
        out, dropped = _dropped(lambda: cons.ZBoxConserving(spread).relprop(conv, x, r, ctx))
        torch.testing.assert_close(out, torch.tensor([[[[3.0, 3.0]]]]))
        assert dropped == 0.0


def test_pool_add_and_pad_by_hand():
    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[-1.0, -2.0, 1.0, 0.0], [-3.0, 0.0, 0.0, 3.0]]]])   # window 0: max 0; window 1: max 3
    r = torch.tensor([[[[8.0, 6.0]]]])
    _, dropped = _dropped(lambda: PoolLRP0().relprop(pool, x, r, Context()))
    assert dropped == 8.0
    out = cons.PoolConserving(cons.Flat()).relprop(pool, x, r, Context())
    torch.testing.assert_close(out, torch.tensor([[[[2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 6.0]]]]))
    avg = nn.AvgPool2d(2, padding=1)                               # corner windows hold 1 real input
    x, r = torch.zeros(1, 1, 2, 2), torch.tensor([[[[4.0, 4.0], [4.0, 4.0]]]])
    torch.testing.assert_close(cons.PoolConserving(cons.Flat()).relprop(avg, x, r, Context()), x + 4.0)

    a, b = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([3.0, -1.0, 1.0])
    r = torch.tensor([4.0, 1.0, 6.0])
    _, dropped = _dropped(lambda: AddShare().relprop(canonizers.Add(), (a, b), r, Context()))
    assert dropped == 6.0
    ra, rb = cons.AddShareConserving(cons.Flat()).relprop(canonizers.Add(), (a, b), r, Context())
    torch.testing.assert_close(ra, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(rb, torch.tensor([3.0, -1.0, 3.0]))

    pad = nn.ZeroPad2d((0, 1, 0, 1))                               # MobileNet's stride-2 padding
    r = torch.arange(1.0, 10.0).view(1, 1, 3, 3)                   # output of padding a 2x2 input
    _, dropped = _dropped(lambda: Crop().relprop(pad, torch.zeros(1, 1, 2, 2), r, Context()))
    assert dropped == 3.0 + 6.0 + 7.0 + 8.0 + 9.0
    out = cons.FoldPad().relprop(pad, torch.zeros(1, 1, 2, 2), r, Context())
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 2.0 + 3.0], [4.0 + 7.0, 5.0 + 6.0 + 8.0 + 9.0]]]]))
    crop = nn.ConstantPad2d((-1, 0, 0, 0), 0.0)
    torch.testing.assert_close(cons.FoldPad().relprop(crop, torch.zeros(1, 1, 1, 3), torch.tensor([[[[2.0, 3.0]]]]),
                                                      Context()), torch.tensor([[[[0.0, 2.0, 3.0]]]]))


def _toy():
    """Pad, full conv (z^B), ReLU6, depthwise conv with a positive bias after it, ReLU6, 1x1 conv, head."""
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU6(),
                          nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6(), nn.Conv2d(4, 6, 1), nn.ReLU6(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model[1].bias.sub_(2.0)                                    # many zeros after the first ReLU6
        model[3].bias.copy_(torch.tensor([1.0, 1.5, 2.0, 0.5]))     # a zero window still gives a positive output
        model[5].bias.fill_(0.5)
    return model.double().eval(), torch.randn(2, 3, 10, 10, generator=g).double()


@pytest.mark.parametrize("zero_denominator", ["flat", "w2"])
def test_explain_option_conserves_on_a_toy_mobilenet(zero_denominator):
    model, x = _toy()
    comps, _ = fgcam.Explainer(model, cam_layer="6").components(x, "grad-cam")
    paper, dropped = _dropped(lambda: fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="6"))
    assert dropped > 0.01 * float(comps.abs().sum())               # the toy does drop relevance
    ours, left = _dropped(lambda: fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="6",
                                                zero_denominator=zero_denominator))
    assert left == 0.0
    torch.testing.assert_close(ours.sum((1, 2)), comps.sum((1, 2, 3)), rtol=1e-12, atol=1e-12)
    rep = fgcam.Explainer(model, cam_layer="6", zero_denominator=zero_denominator).report(x, "fg-grad-cam")
    torch.testing.assert_close(rep.maps, ours, rtol=1e-10, atol=1e-12)
    assert float(rep.dropped_share.max()) < 1e-12 and float((1 - rep.reached_share).abs().max()) < 1e-12
    # lrp family too, and at a hidden layer
    for method, layer in (("lrp", "input"), ("clrp", "2"), ("sglrp", "input")):
        _, left = _dropped(lambda: fgcam.explain(model, x, method, layer, zero_denominator=zero_denominator))
        assert left == 0.0


def test_options_validated_and_default_unchanged():
    model, x = _toy()
    with pytest.raises(ValueError, match=r"zero_denominator must be one of \['drop', 'flat', 'w2'\]"):
        fgcam.Explainer(model, zero_denominator="keep")
    with pytest.raises(TypeError, match="zero_denominator must be a name"):
        fgcam.explain(model, x, "lrp", "input", zero_denominator=3)
    assert torch.equal(fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="6", zero_denominator="drop"),
                       fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="6"))
    # a user's rule overrides the conserving table
    class Half(ZPlus):
        def relprop(self, module, x, r, ctx):
            return super().relprop(module, x, r, ctx) / 2
    ex = fgcam.Explainer(model, zero_denominator="flat", rules={nn.Linear: Half()})
    assert isinstance(ex._rules[nn.Linear], Half) and isinstance(ex._rules[nn.Conv2d], cons.ZPlusConserving)
    with pytest.raises(ValueError, match="report\\(\\) applies to FG-CAM and LRP"):
        ex.report(x, "grad-cam", "3")


def test_report_matches_recorded_drops_on_the_toy():
    """The report's per-module deficits add up to the drops that safe_divide and Crop record, and name the
    depthwise conv (the toy's only dropping module besides the first conv's and the pad's)."""
    model, x = _toy()
    rep, dropped = _dropped(lambda: fgcam.Explainer(model, cam_layer="6").report(x, "fg-grad-cam"))
    assert abs(float(rep.dropped.sum()) - dropped) <= 1e-10 * float(rep.scale.sum())
    paper = fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="6")
    torch.testing.assert_close(rep.maps, paper, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rep.start, rep.reached + rep.dropped.sum(0), rtol=1e-10, atol=1e-12)
    assert rep.bypassed.abs().max() < 1e-10 * rep.scale.max()
    big = {n for n, s in rep.by_module().items() if s > 1e-9}    # (the rest: float64 rounding)
    assert big <= {"1", "3", "5"} and "3" in big
    assert {t for t, s in rep.by_type().items() if s > 1e-9} == {"Conv2d"}
    assert "of |R| reaches the layer" in str(rep)


# --- the real MobileNets --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real64():
    """Both real MobileNets in float64 (so that rounding stays far below the 1e-6 bound) with two photos."""
    if not (REAL / "validation.json").exists():
        pytest.fail(f"{REAL} is missing: the real MobileNets ship with the package (fgcam/weights/real-imagenet)")
    out = {}
    for name in zoo.REAL_MODELS:
        model, spec = zoo.load_spec(REAL, name)
        files = [f for f in zoo.photos(REAL) if f.name in ("pets.png", "bird.png")] or zoo.photos(REAL)[:2]
        out[name] = (model.double(), torch.cat([zoo.preprocess_photo(f, spec) for f in files]).double())
    return out


@pytest.mark.parametrize("name", zoo.REAL_MODELS)
def test_real_report_paper_rules_drop_at_depthwise_convs(real64, name):
    """With the paper's rules most of the components' relevance never reaches the input, and the depthwise
    convs drop (almost all of) it; the report's deficits equal the drops safe_divide and Crop record."""
    model, x = real64[name]
    rep, dropped = _dropped(lambda: fgcam.Explainer(model).report(x, "fg-grad-cam"))
    print(name, rep, sep="\n")
    assert abs(float(rep.dropped.sum()) - dropped) <= 1e-9 * float(rep.scale.sum())
    assert float(rep.reached_share.max()) < 0.5
    modules = dict(model.named_modules())
    with explaining(model):
        modules.update(dict(model.named_modules()))
    depthwise = sum(s for n, s in rep.by_module().items()
                    if isinstance(modules[n], nn.Conv2d) and modules[n].groups > 1)
    assert depthwise > 0.9 * sum(rep.by_module().values())


@pytest.mark.parametrize("zero_denominator", ["flat", "w2"])
@pytest.mark.parametrize("name", zoo.REAL_MODELS)
def test_real_conserving_rules_keep_relevance(real64, name, zero_denominator):
    """Both real MobileNets: with a conserving rule, the relevance dropped is <= 1e-6 of the components' total
    (recorded drops and the report's deficits), for FG-Grad-CAM (paper and contrastive) and LRP."""
    model, x = real64[name]
    ex = fgcam.Explainer(model, zero_denominator=zero_denominator)
    comps, _ = ex.components(x, "grad-cam")
    maps, dropped = _dropped(lambda: ex.explain(x, "fg-grad-cam", "input"))
    assert abs(dropped) <= 1e-6 * float(comps.abs().sum())
    assert (maps.sum((1, 2)) - comps.sum((1, 2, 3))).abs().max() <= 1e-6 * comps.abs().sum()
    for method, contrast in (("fg-grad-cam", "softmax"), ("lrp", None)):
        rep, dropped = _dropped(lambda: ex.report(x, method, contrast=contrast))
        assert abs(dropped) <= 1e-6 * float(rep.scale.sum())
        assert float(rep.dropped_share.max()) <= 1e-6, (method, rep.dropped_share)
        print(name, zero_denominator, method, contrast, rep.reached_share.tolist())
