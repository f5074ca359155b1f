"""The engine's fast paths: direct convolutions for z+ and z^B, NHWC on the CPU, the non-negativity hint and the
inputs kept for the rules.  Each fast path must give the numbers of the plain autograd step (bit for bit where the
arithmetic is the same, float rounding where the memory format differs).

The GPU takes the NCHW branch (``fgcam.rules.CHANNELS_LAST`` has no ``cuda`` entry); these tests run that branch on
CPU tensors by emptying ``CHANNELS_LAST``.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgcam
from fgcam import rules
from fgcam.graph import explaining, record
from fgcam.propagation import _nonnegative_input, image_bounds, needs_input, propagate
from fgcam.rules import Context, Pass, PoolLRP0, ZBox, ZPlus, relprop_linear

CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),          # odd input: output_padding
    dict(in_channels=4, out_channels=6, kernel_size=5, stride=2, padding=2, dilation=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),          # depthwise
]


def _autograd_zplus(conv, x, r):
    """The z+ rule as the generic autograd step (the engine's route before the fast path)."""
    w = conv.weight.detach()
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    fn = lambda a, v: conv._conv_forward(a, v, None)  # noqa: E731
    if bool(x.min() < 0):
        return relprop_linear(lambda a, b: fn(a, wp) + fn(b, wn), (x.clamp(min=0), x.clamp(max=0)), r)
    return relprop_linear(lambda a: fn(a, wp), (x,), r)


@pytest.fixture
def nchw(monkeypatch):
    """The branch the GPU takes: no NHWC conversion."""
    monkeypatch.setattr(rules, "CHANNELS_LAST", {})


@pytest.mark.parametrize("signed", [False, True], ids=["nonneg", "signed"])
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "-".join(f"{k[:3]}{v}" for k, v in s.items()))
def test_direct_zplus_is_the_autograd_step_bit_for_bit(nchw, spec, signed):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(**spec)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    x = torch.randn(2, 4, 11, 11, generator=g)
    x = x if signed else x.clamp(min=0)
    r = torch.randn(conv(x).shape, generator=g)
    ours = ZPlus().relprop(conv, x, r, Context())
    assert torch.equal(ours, _autograd_zplus(conv, x, r))


def test_direct_zbox_is_the_autograd_step_bit_for_bit(nchw):
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9, generator=g)
    r = torch.randn(conv(x).shape, generator=g)
    bounds = image_bounds(x)
    ours = ZBox().relprop(conv, x, r, Context(first=True, bounds=bounds))
    w = conv.weight.detach()
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    fn = lambda a, v: conv._conv_forward(a, v, None)  # noqa: E731
    low, high = (b.expand_as(x) for b in bounds)
    theirs = relprop_linear(lambda a, lo, hi: fn(a, w) - fn(lo, wp) - fn(hi, wn), (x, low, high), r)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("signed", [False, True], ids=["nonneg", "signed"])
def test_nhwc_on_the_cpu_is_close_and_hands_on_nhwc(signed):
    assert rules.CHANNELS_LAST.get("cpu") and not rules.CHANNELS_LAST.get("cuda")
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 12, 12, generator=g)
    x = x if signed else x.clamp(min=0)
    r = torch.randn(2, 16, 12, 12, generator=g)
    ours = ZPlus().relprop(conv, x, r, Context())
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, _autograd_zplus(conv, x, r), rtol=1e-5, atol=1e-6 * float(ours.abs().max()))
    # a max-pool after it takes NHWC relevance and gives the numbers of NCHW
    pool, xp = nn.MaxPool2d(2), torch.rand(2, 8, 24, 24, generator=g)
    assert torch.equal(PoolLRP0().relprop(pool, xp, ours, Context()),
                       PoolLRP0().relprop(pool, xp, ours.contiguous(), Context()))


def test_padding_same_takes_the_autograd_step():
    conv = nn.Conv2d(3, 4, 3, padding="same")
    x = torch.rand(1, 3, 7, 7)
    r = torch.randn(1, 4, 7, 7)
    assert rules._conv_args(conv) is None
    assert torch.equal(ZPlus().relprop(conv, x, r, Context()), _autograd_zplus(conv, x, r))


def test_nonnegative_hint_skips_the_search_for_negative_inputs(nchw):
    g = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 6, 6, generator=g)
    r = torch.randn(1, 4, 6, 6, generator=g)
    trusting = ZPlus().relprop(conv, x, r, Context(nonnegative=True))       # treats x as >= 0: one branch only
    wp = conv.weight.detach().clamp(min=0)
    assert torch.equal(trusting, relprop_linear(lambda a: conv._conv_forward(a, wp, None), (x,), r))
    assert not torch.equal(trusting, ZPlus().relprop(conv, x, r, Context()))


def test_nonnegative_inputs_known_from_the_graph(random_vgg16_bn):
    model = random_vgg16_bn
    with explaining(model):
        trace = record(model, torch.randn(1, 3, 32, 32))
    known = {s.name for i, s in enumerate(trace.steps) if _nonnegative_input(trace, i)}
    convs = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    assert set(convs[1:]) <= known and "features.0" not in known                 # after ReLU or ReLU + max-pool
    assert {"features.6", "features.43", "avgpool", "classifier.3"} <= known
    assert not any(f"features.{i}" in known for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d))
    assert "classifier.0" in known                                               # max-pool, avgpool, flatten


def test_only_the_inputs_the_rules_read_are_kept(random_vgg16_bn):
    model, x = random_vgg16_bn, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with explaining(model):
        full = record(model, x, store_from="features.13")
        lean = record(model, x, store_from="features.13", store=needs_input())
        r = torch.randn(full.steps[full.index("features.43")].output_shape)
        a = propagate(full, r, "features.43", "features.13")
        b = propagate(lean, r, "features.43", "features.13")
    assert torch.equal(a, b)
    kept = {s.name for s in lean.steps if s.input is not None}
    above = [s for s in lean.steps[lean.index("features.13") + 1:]]
    assert kept == {s.name for s in above if not isinstance(s.module, (nn.BatchNorm2d, nn.ReLU, nn.Dropout))}
    assert all(s.input_shape for s in lean.steps)


def test_a_rule_that_needs_the_input_still_gets_it(random_vgg16_bn):
    """A custom rule on BatchNorm2d that reads x: the lean recording keeps BatchNorm inputs then."""
    seen = []

    class Reads(Pass):
        needs_input = True

        def relprop(self, module, x, r, ctx):
            seen.append(x.device.type)
            return super().relprop(module, x, r, ctx)

    x = torch.randn(1, 3, 32, 32)
    out = fgcam.explain(random_vgg16_bn, x, "fg-grad-cam", "features.33", rules={nn.BatchNorm2d: Reads()})
    assert out.shape == (1, 2, 2) and seen == ["cpu"] * 3


def test_missing_input_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with explaining(model):
        trace = record(model, torch.randn(1, 3, 8, 8), store=lambda name, m: not isinstance(m, nn.Linear))
        with pytest.raises(RuntimeError, match="input of '4' was not recorded"):
            propagate(trace, torch.ones(1, 3), "4", "input", bounds=(-1.0, 1.0))


def test_float64_and_batch_through_the_fast_paths(random_vgg16_bn):
    """dtype and batch pass through the direct convolutions (no float32 or batch-1 assumptions)."""
    model = random_vgg16_bn.double()
    try:
        x = F.interpolate(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)), size=(32, 32),
                          mode="bilinear").double()
        both = fgcam.explain(model, x, "fg-grad-cam", "input")
        one = fgcam.explain(model, x[1:], "fg-grad-cam", "input")
        assert both.dtype == torch.float64
        torch.testing.assert_close(both[1:], one, rtol=1e-10, atol=1e-12 * float(one.abs().max()))
    finally:
        random_vgg16_bn.float()
