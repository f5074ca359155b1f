"""FG-CAM beyond VGG: grouped/depthwise convs, padding, ReLU6 and residual additions; torchvision ResNet-18 and
MobileNet V2 with random weights (float64, 64x64), a zennit cross-check on ResNet-18, and the real ImageNet
MobileNets that ship with the package (fgcam/weights/real-imagenet) on its 13 real photos, plus, where the ImageNet
sample photos are available (FGCAM_IMAGENET_SAMPLES), their top-1 accuracy on those."""
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fgcam
from fgcam import canonizers, metrics, zoo
from fgcam.real import BadPhotosError
from fgcam.graph import ChainError, explaining, record, resolve_leaf
from fgcam.propagation import image_bounds, propagate
from fgcam.rules import AddShare, Context, Crop, ZPlus, dropped_relevance

from conftest import randomise_batchnorm, require, zennit_fgcam_map

REAL = zoo.REAL_MODELS_DIR


def _smooth(n, size=64, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.randn(n, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    return (x + 0.1 * torch.randn(x.shape, generator=g)).double()


@pytest.fixture(scope="module")
def resnet18():
    """Random ResNet-18 in float64 with non-trivial BatchNorm statistics (as conftest's VGG16-BN)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    randomise_batchnorm(model, torch.Generator().manual_seed(0))
    return model.double().eval()


@pytest.fixture(scope="module")
def mobilenet_v2():
    """Random torchvision MobileNet V2 in float64.  BatchNorm variances are calibrated on random images (so the
    activations are of order 1) and its means and shifts are 0, so BN(0) = 0: a depthwise window of zeros then
    gives a zero activation, which carries no relevance, and the z+ rule drops (almost) nothing."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(_smooth(8, seed=7).float())              # in float32: training-mode BN in float64 is very slow
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.bias.zero_()
                m.weight.uniform_(0.5, 1.5)
    return model.double().eval()


# --- rules by hand ----------------------------------------------------------------------------------------

def test_depthwise_conv_zplus_by_hand():
    """z+ per group: each output's relevance goes only to its own channel, split by a_i w_ij^+ (bias ignored)."""
    conv = nn.Conv2d(2, 2, (1, 2), groups=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, -1.0]]], [[[2.0, 3.0]]]]))
        conv.bias.copy_(torch.tensor([5.0, -7.0]))
    r = torch.tensor([[[[4.0]], [[10.0]]]])
    x = torch.tensor([[[[1.0, 2.0]], [[1.0, 1.0]]]])
    # channel 0: Z = 1*1 (w- meets a positive input: no term) -> [4, 0]; channel 1: Z = 2 + 3 -> [4, 6]
    out = ZPlus().relprop(conv, x, r, Context())
    torch.testing.assert_close(out, torch.tensor([[[[4.0, 0.0]], [[4.0, 6.0]]]]))
    # a negative input meets the negative weight: Z = 1*1 + (-2)(-1) = 3 -> [4/3, 8/3]
    x[0, 0, 0, 1] = -2.0
    out = ZPlus().relprop(conv, x, r, Context())
    torch.testing.assert_close(out, torch.tensor([[[[4 / 3, 8 / 3]], [[4.0, 6.0]]]]))
    # the same as a dense conv with block-diagonal weights
    dense = nn.Conv2d(2, 2, (1, 2), bias=False)
    with torch.no_grad():
        dense.weight.zero_()
        dense.weight[0, 0] = conv.weight[0, 0]
        dense.weight[1, 1] = conv.weight[1, 0]
    torch.testing.assert_close(ZPlus().relprop(dense, x, r, Context()), out)


def test_zero_pad_crop_by_hand():
    pad = nn.ZeroPad2d((0, 1, 0, 1))
    r = torch.arange(6.0).view(1, 1, 2, 3)                      # output of padding a 1x2 input
    with dropped_relevance() as drops:
        out = Crop().relprop(pad, torch.zeros(1, 1, 1, 2), r, Context())
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 1.0]]]]))
    assert float(sum(drops)) == 2.0 + 3.0 + 4.0 + 5.0            # the padded positions' relevance
    crop = nn.ConstantPad2d((-1, 0, 0, 0), 0.0)                  # negative padding crops; its inverse pads
    torch.testing.assert_close(Crop().relprop(crop, torch.zeros(1, 1, 1, 3), torch.tensor([[[[2.0, 3.0]]]]),
                                              Context()), torch.tensor([[[[0.0, 2.0, 3.0]]]]))


def test_zbox_after_zero_pad_by_hand():
    """The first conv after a ZeroPad2d gets z^B with bounds padded like the image, so padded positions
    (x = l = h = 0) contribute nothing and all relevance reaches real pixels."""
    conv = nn.Conv2d(1, 1, (1, 2), bias=False)
    fc = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.fill_(1.0)
    model = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 0)), conv, nn.Flatten(), fc).eval()
    x = torch.tensor([[[[1.0, 3.0]]]])                            # padded [1, 3, 0]; conv out [4, 3]; logit 7
    out = fgcam.explain(model, x, "lrp", "input", target=0)
    # l = 1, h = 3 (padded: [1, 1, 0]): Z_0 = (1-1) + (3-1) = 2 -> all of R_0 = 4 to pixel 1;
    # Z_1 = (3-1) + (0-0) = 2 -> all of R_1 = 3 to pixel 1.  Unpadded bounds would give the pad -1 there.
    torch.testing.assert_close(out, torch.tensor([[[0.0, 7.0]]]))


def test_relu6_passes_relevance_by_hand():
    fc1, fc2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        fc1.weight.copy_(2 * torch.eye(2))
        fc2.weight.fill_(1.0)
    model = nn.Sequential(nn.Flatten(), fc1, nn.ReLU6(), fc2).eval()
    x = torch.tensor([[[[1.0, 4.0]]]])                            # fc1 -> [2, 8], ReLU6 -> [2, 6] (saturated)
    out = fgcam.explain(model, x, "lrp", "input", target=0)
    torch.testing.assert_close(out, torch.tensor([[[2.0, 6.0]]]))  # [2, 6] passes ReLU6 and fc1 unchanged


def test_add_share_by_hand():
    a = torch.tensor([1.0, 2.0, 0.0, -1.0])
    b = torch.tensor([3.0, -1.0, 0.0, 2.0])
    r = torch.tensor([4.0, 1.0, 5.0, 1.0])                        # a + b = [4, 1, 0, 1]
    with dropped_relevance() as drops:
        ra, rb = AddShare().relprop(canonizers.Add(), (a, b), r, Context())
    torch.testing.assert_close(ra, torch.tensor([1.0, 2.0, 0.0, -1.0]))
    torch.testing.assert_close(rb, torch.tensor([3.0, -1.0, 0.0, 2.0]))
    assert float(sum(drops)) == 5.0                               # 0/0 := 0 drops the third entry's relevance


def test_residual_toy_by_hand():
    """y = x + relu(w x) on two pixels, then a sum: the block's input gets its skip share plus the body's."""
    class Block(zoo.Residual):
        pass

    block = zoo.Residual(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        block.body[0].weight.fill_(3.0)
    fc = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(1.0)
    model = nn.Sequential(nn.Identity(), block, nn.Flatten(), fc).eval()
    x = torch.tensor([[[[1.0, 2.0]]]])                            # y = [1 + 3, 2 + 6] = [4, 8], logit 12
    out = fgcam.explain(model, x, "lrp", "0")
    # fc: R = [4, 8]; add: skip share x/y R = [1, 2], body share 3x/y R = [3, 6], which the conv passes back
    torch.testing.assert_close(out, torch.tensor([[[4.0, 8.0]]]))
    body = fgcam.explain(model, x, "lrp", "1.body.0")             # inside the block: the body's share only
    torch.testing.assert_close(body, torch.tensor([[[3.0, 6.0]]]))
    with pytest.raises(ChainError, match=r"module '2'.*canonizers\.register"):    # a subclass is not matched
        fgcam.explain(nn.Sequential(nn.Identity(), Block(nn.ReLU()), nn.Flatten(), nn.Linear(2, 1)).eval(), x,
                      "lrp", "input")


def test_register_canonizer_and_inplace_addition_error():
    class MyBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            out = self.conv(x)
            out += x                                              # in place: the conv's output is overwritten
            return out

    model = nn.Sequential(nn.Conv2d(3, 3, 1), MyBlock(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 2)).eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ChainError, match=r"output of module '1\.conv' was modified in place"):
        fgcam.explain(model, x, "fg-grad-cam", "input", cam_layer="2")

    def canonize(block):
        return (lambda self, x: self.fgcam_add(self.conv(x), x)), {"fgcam_add": canonizers.Add()}

    canonizers.register(MyBlock, canonize)
    try:
        model.double()
        comps, _ = fgcam.Explainer(model, cam_layer="2").components(x.double(), "grad-cam")
        with explaining(model), dropped_relevance() as drops:
            assert resolve_leaf(model, "1") == "1.fgcam_add"
            trace = record(model, x.double())
            out = propagate(trace, comps, "2", "input", bounds=image_bounds(x.double()))
        assert abs(float(out.sum() + sum(drops) - comps.sum())) <= 1e-9 * float(comps.abs().sum())
    finally:
        del canonizers.CANONIZERS[canonizers._key(MyBlock)]
    assert "fgcam_add" not in dict(model[1].named_children()) and "forward" not in model[1].__dict__


# --- torchvision residual networks ------------------------------------------------------------------------

def _snapshot(model):
    return ([(name, id(m), type(m)) for name, m in model.named_modules()],
            [id(m.__dict__.get("forward")) if "forward" in m.__dict__ else None for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
              len(m._backward_pre_hooks)) for m in model.modules()],
            [m.training for m in model.modules()],
            [getattr(m, "inplace", None) for m in model.modules()])


@pytest.mark.parametrize("which,inside", [("resnet18", "layer2.0.conv2"), ("mobilenet_v2", "features.5.conv.1.0")])
def test_model_unchanged(request, which, inside):
    model = request.getfixturevalue(which)
    x = _smooth(1)
    before, ref = _snapshot(model), model(x).detach()
    with canonizers.canonized(model):                              # the canonized forward computes the same
        assert _snapshot(model) != before
        assert torch.equal(model(x), ref)
    fgcam.explain(model, x, "fg-grad-cam", "input")
    fgcam.explain(model, x, "grad-cam", inside)
    fgcam.explain(model, x, "lrp", inside)
    with pytest.raises(ValueError, match="unknown layer"):
        fgcam.explain(model, x, "fg-grad-cam", "nope")
    assert _snapshot(model) == before
    assert torch.equal(model(x), ref)
    assert all(p.grad is None for p in model.parameters())


CASES = {
    "resnet18": [("fg-grad-cam", "input"), ("fg-grad-cam++", "layer2"), ("lrp", "input"),
                 ("grad-cam", "layer3.0.conv1"), ("fg-layer-cam", "layer1.0.bn2")],
    "mobilenet_v2": [("fg-grad-cam", "input"), ("clrp", "features.6"), ("grad-cam", "features.13.conv.1.0")],
}


@pytest.mark.parametrize("which,method,layer", [(k, m, l) for k, v in CASES.items() for m, l in v])
def test_batch_equals_singles(request, which, method, layer):
    model = request.getfixturevalue(which)
    x, target = _smooth(2, seed=4), torch.tensor([3, 11])
    batched = fgcam.explain(model, x, method, layer, target=target)
    singles = torch.cat([fgcam.explain(model, x[i:i + 1], method, layer, target=int(target[i])) for i in range(2)])
    scale = singles.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-300)
    assert batched.dtype == torch.float64 and batched.shape == singles.shape
    assert ((batched - singles).abs() / scale).max() < 1e-9


def _stage_sums(model, x, method, stages):
    """Components' sum, and per stage (block outputs and the input): relevance sum and relevance dropped."""
    comps, _ = fgcam.Explainer(model).components(x, method)
    out = {}
    with explaining(model):
        cam = resolve_leaf(model, fgcam.default_cam_layer(model))
        trace = record(model, x)
        for stage in stages:
            leaf = "input" if stage == "input" else resolve_leaf(model, stage)
            with dropped_relevance() as drops:
                r = propagate(trace, comps, cam, leaf, bounds=image_bounds(x))
            out[stage] = (float(r.sum()), float(sum(drops)) if drops else 0.0)
    return float(comps.sum()), float(comps.abs().sum()), out


@pytest.mark.parametrize("which,stages", [
    ("resnet18", ["layer3", "layer2.0", "layer1", "maxpool", "input"]),
    ("mobilenet_v2", ["features.14", "features.7", "features.3", "features.1", "input"])])
def test_conservation_through_residual_blocks(request, which, stages):
    """Sum of relevance at every block output and at the input = components' sum - relevance dropped on zero
    denominators (1e-9 relative, float64).  ResNet-18 drops nothing here; MobileNet V2 almost nothing."""
    model = request.getfixturevalue(which)
    total, scale, sums = _stage_sums(model, _smooth(1, seed=5), "grad-cam", stages)
    for stage, (s, dropped) in sums.items():
        assert abs(s + dropped - total) <= 1e-9 * scale, (stage, s, dropped, total)
        assert abs(dropped) <= 1e-4 * scale, (stage, dropped)         # within 1e-4 even without accounting
        if which == "resnet18":
            assert dropped == 0.0
    print(which, "components", total, {k: v for k, v in sums.items()})


@pytest.mark.parametrize("bn", ["pass", "fold"])
def test_fgcam_input_matches_zennit_resnet18(resnet18, bn):
    """FG-CAM at the input of ResNet-18 = zennit (ZBox on conv1, ZPlus with bias zeroed elsewhere, Norm on the
    residual Sum, Pass on BN/ReLU, gradient through the max-pool, exact stabiliser), from the same components.

    ``bn="pass"``: zennit's ``ResNetBasicBlockCanonizer`` (additions only).  ``bn="fold"``: zennit's
    ``ResNetCanonizer``, which also merges each BN into its conv: fgcam's ``bn="fold"`` computes the same.  zennit
    leaves the merged BN as ``x / sqrt(1 + eps)``, not quite the identity, and where a residual sum nearly cancels
    the summands' shares amplify that (2e-4 relative differences with eps = 1e-5); so the model's eps is moved
    into its running variances first (``var + eps`` unchanged, the same model).
    """
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetCanonizer
    import copy

    model = copy.deepcopy(resnet18)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var += m.eps
                m.eps = 0.0
            if isinstance(m, nn.ReLU):
                m.inplace = False                                   # zennit's hooks and in-place ReLU do not mix
    x = _smooth(1, seed=6)
    comps, _ = fgcam.Explainer(model).components(x, "grad-cam", target=5)
    ours = fgcam.explain(model, x, "fg-grad-cam", "input", target=5, bn=bn)

    canonizer = ResNetBasicBlockCanonizer() if bn == "pass" else ResNetCanonizer()
    theirs = zennit_fgcam_map(model, x, comps, canonizer, epsilon=0.0)
    assert torch.isfinite(theirs).all()
    assert (ours - theirs).abs().max() <= 1e-9 * theirs.abs().max()


def test_default_cam_layers(random_vgg16_bn, resnet18, mobilenet_v2):
    assert fgcam.default_cam_layer(random_vgg16_bn) == "features.43"
    assert fgcam.default_cam_layer(resnet18) == "layer4"
    assert fgcam.default_cam_layer(mobilenet_v2) == "features.18.2"
    comps, _ = fgcam.Explainer(resnet18).components(_smooth(1), "grad-cam")
    assert comps.shape == (1, 512, 2, 2)
    assert "layer1.0.fgcam_add" in fgcam.leaf_names(resnet18)
    assert "layer1.0.fgcam_add" not in dict(resnet18.named_modules())


def test_load_torchvision_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd\.pth(.|\n)*checkpoints"):
        zoo.load_torchvision("resnet18")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        zoo.load_torchvision("resnet19")
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None).eval()
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    model = zoo.load_torchvision("resnet18")
    x = torch.randn(1, 3, 64, 64)
    assert not model.training
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


# --- the real ImageNet MobileNets -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    """The bundled MobileNets, loaded by name through ``fgcam.models.load`` with ``FGCAM_REAL_MODELS`` unset (no
    folder beside the checkout, no environment variable), and the 13 bundled photos preprocessed for each."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FGCAM_REAL_MODELS", raising=False)
        out = {}
        for name in zoo.REAL_MODELS:
            model = fgcam.models.load(name)
            spec = fgcam.models.card(name)
            files = zoo.photos()
            out[name] = (model, spec, files, torch.cat([fgcam.models.preprocess(name, f) for f in files]))
    return out


def test_real_models_are_bundled_and_named():
    """Both MobileNets ship inside the package, with their licence, labels, photos and the photos' attributions."""
    assert set(zoo.REAL_MODELS) <= set(fgcam.models.NAMES)
    for name in ("LICENSE-Apache-2.0.txt", "imagenet_labels.txt", "validation.json", "photos/COPYRIGHT"):
        assert (REAL / name).is_file(), name
    assert "Apache License" in (REAL / "LICENSE-Apache-2.0.txt").read_text()
    assert "Attribution 2.0" in (REAL / "photos" / "COPYRIGHT").read_text()
    for name in zoo.REAL_MODELS:
        assert "Apache-2.0" in fgcam.models.card(name)["source"]["licence"]
        labels = fgcam.models.labels(name)
        assert len(labels) == 1001 and labels[0] == "background" and labels[20] == "chickadee"


def test_real_models_top1_matches_validation(real):
    """The recorded top-1 of validation.json (the float PyTorch model, which agrees with the TFLite reference on all
    13 photos) on every photo, for both models; the photos are preprocessed by ``fgcam.models.preprocess``."""
    for name, (model, spec, files, x) in real.items():
        expected = zoo.validation(REAL, name)
        assert len(files) == len(expected) == 13
        assert x.shape == (13, *spec["input"]["shape"][1:])
        with torch.no_grad():
            top1 = model(x).argmax(1).tolist()
        assert top1 == [expected[f.name][0] for f in files], name
    assert fgcam.default_cam_layer(real["mobilenet_v1_0.75_192"][0]) == "features.58"
    assert fgcam.default_cam_layer(real["mobilenet_v2_1.0_224"][0]) == "features.51"


def test_preprocess_accepts_a_pil_image(real):
    from PIL import Image

    name = "mobilenet_v2_1.0_224"
    path = real[name][2][0]
    with Image.open(path) as img:
        torch.testing.assert_close(fgcam.models.preprocess(name, img), fgcam.models.preprocess(name, path))
    with pytest.raises(ValueError, match="make_shapes"):
        fgcam.models.preprocess("shapes-vgg16bn", path)


def test_real_models_folder_override(tmp_path, monkeypatch):
    """``FGCAM_REAL_MODELS`` still names another folder of the same layout; a wrong one is a clear error."""
    monkeypatch.setenv("FGCAM_REAL_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="FGCAM_REAL_MODELS='.*nowhere'"):
        fgcam.models.load("mobilenet_v1_0.75_192")
    monkeypatch.setenv("FGCAM_REAL_MODELS", str(tmp_path))
    with pytest.raises(RuntimeError, match="no model spec .*mobilenet_v1_0.75_192.json"):
        fgcam.models.load("mobilenet_v1_0.75_192")


@pytest.mark.slow
def test_real_models_on_imagenet_samples():
    """Top-1 of both MobileNets on the ImageNet sample photos (one per class; not shipped: FGCAM_IMAGENET_SAMPLES).

    The README of those photos records 71.9 % (V1) and 81.8 % (V2) over all 1000 of the source repository; on any
    200 of them the accuracy must stay within a wide band around that (a wrong class order or preprocessing gives
    ~0 %).  The first 200 by file name keep the test short."""
    folder = require(zoo.imagenet_samples_folder(),
                     f"no ImageNet sample photos: set {zoo.IMAGENET_SAMPLES_ENV} to a folder of <synset>_<name>.JPEG "
                     "photos (e.g. a clone of github.com/EliSchwartz/imagenet-sample-images)")
    samples = zoo.imagenet_samples(folder)
    assert len(samples) >= 200
    samples = samples[:200]
    for name, low in (("mobilenet_v1_0.75_192", 0.6), ("mobilenet_v2_1.0_224", 0.7)):
        model = fgcam.models.load(name)
        correct = 0
        batch = metrics.default_batch_size(model, fgcam.models.preprocess(name, samples[0][0]))
        with torch.no_grad():
            for start in range(0, len(samples), batch):
                chunk = samples[start:start + batch]
                x = torch.cat([fgcam.models.preprocess(name, path) for path, _ in chunk])
                pred = model(x).argmax(1) - 1          # logit 0 is "background"
                correct += int((pred == torch.tensor([c for _, c in chunk])).sum())
        accuracy = correct / len(samples)
        print(name, f"top-1 on {len(samples)} ImageNet sample photos: {accuracy:.3f}")
        assert low <= accuracy <= 0.97, (name, accuracy)


def test_imagenet_samples_folder_variable(tmp_path, monkeypatch):
    """``FGCAM_IMAGENET_SAMPLES`` names the folder; a wrong value is an error naming the variable, not a silent
    fallback; class ids follow synsets.txt."""
    monkeypatch.setenv(zoo.IMAGENET_SAMPLES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="FGCAM_IMAGENET_SAMPLES=.*nowhere: no such folder"):
        zoo.imagenet_samples_folder()
    synsets = [f"n{k:08d}" for k in range(1000)]
    (tmp_path / "synsets.txt").write_text("\n".join(synsets) + "\n")
    (tmp_path / f"{synsets[7]}_cock.JPEG").write_bytes(b"")
    (tmp_path / f"{synsets[0]}_tench.JPEG").write_bytes(b"")
    monkeypatch.setenv(zoo.IMAGENET_SAMPLES_ENV, str(tmp_path))
    assert zoo.imagenet_samples_folder() == tmp_path
    assert [(p.name, c) for p, c in zoo.imagenet_samples()] == [(f"{synsets[0]}_tench.JPEG", 0),
                                                                (f"{synsets[7]}_cock.JPEG", 7)]
    (tmp_path / "README.md").write_text("not a photo, ignored")
    (tmp_path / "holiday.JPEG").write_bytes(b"")
    (tmp_path / "n99999999_unicorn.JPEG").write_bytes(b"")
    with pytest.raises(BadPhotosError) as err:      # the same scanner as the real profile's
        zoo.imagenet_samples()
    assert [p.name for p, _ in err.value.problems] == ["holiday.JPEG", "n99999999_unicorn.JPEG"]


@pytest.mark.parametrize("name", zoo.REAL_MODELS)
def test_real_fgcam_to_input_on_every_photo(real, name):
    """FG-Grad-CAM from the last ReLU6 to the input on all 13 photos: finite, non-zero, and the relevance that
    reaches the input plus the relevance dropped on zero denominators is the components' sum.  (Most of it is
    dropped: z+ ignores biases, and a depthwise conv whose window is all zero but whose folded-BN bias keeps the
    ReLU6 output positive has Z = 0.)"""
    model, spec, files, x = real[name]
    comps, target = fgcam.Explainer(model).components(x, "grad-cam")
    with explaining(model), dropped_relevance() as drops:
        trace = record(model, x)
        maps = propagate(trace, comps, resolve_leaf(model, "features"), "input", bounds=image_bounds(x)).sum(1)
    assert maps.shape == (13, *x.shape[-2:]) and torch.isfinite(maps).all()
    assert (maps.flatten(1).abs().amax(1) > 0).all()
    total, dropped = comps.double().sum(), torch.stack(drops).double().sum()
    assert abs(maps.double().sum() + dropped - total) <= 1e-4 * comps.abs().sum()
    two = fgcam.explain(model, x[:2], "fg-grad-cam", "input")
    assert (two - maps[:2]).abs().max() <= 1e-4 * maps[:2].abs().max()
    print(name, "relevance reaching the input:", float(maps.sum() / total))


def _own_half(maps, side):
    """Share of each map's positive energy (bilinearly upsampled to 224) in the left (0) / right (1) half."""
    m = F.interpolate(maps[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
    half = m[..., :112] if side == 0 else m[..., 112:]
    return (half.sum((1, 2)) / m.sum((1, 2))).tolist()


@pytest.mark.parametrize("name", zoo.REAL_MODELS)
def test_two_dogs(real, name):
    """pets.png: Italian greyhound (logit 172, left half) and Boston bull (196, right half), both in the top 5.

    Holds: the FG-CAM maps of the two classes differ (Spearman < 0.999, though high: z+ maps share much of
    their structure); the class-difference map (greyhound map - Boston map, each normalised by its L1 norm) puts
    > 85 % of its positive part on the greyhound's half and of its negative part on the Boston's half, at least as
    much as Grad-CAM's difference map does; and the difference map is more concentrated on each dog's half than
    that class's own map is: the subtraction removes the structure the two maps share (their Spearman is near 1),
    which covers both dogs.  Not asserted, only printed: whether each class's own map puts more energy on its
    own dog's half than Grad-CAM does (it does for 2 of the 4 cases, so it is no property of the method)."""
    from fgcam.metrics import spearman

    model, spec, files, x = real[name]
    photo = x[[f.name for f in files].index("pets.png")][None].repeat(2, 1, 1, 1)
    target = torch.tensor([172, 196])
    with torch.no_grad():
        assert set(target.tolist()) <= set(model(photo[:1]).topk(5).indices[0].tolist())
    fg = fgcam.explain(model, photo, "fg-grad-cam", "input", target=target)
    cam = fgcam.explain(model, photo, "grad-cam", fgcam.default_cam_layer(model), target=target)
    rho = float(spearman(fg[:1], fg[1:]))
    assert rho < 0.999 and not torch.equal(fg[0], fg[1])
    report = {"spearman(fg greyhound, fg boston)": rho, "grad-cam": float(spearman(cam[:1], cam[1:]))}
    for label, maps in (("fg", fg), ("grad-cam", cam)):
        diff = maps[0] / maps[0].abs().sum() - maps[1] / maps[1].abs().sum()
        report[f"{label} diff: greyhound half, boston half"] = (_own_half(diff[None], 0)[0],
                                                                 _own_half(-diff[None], 1)[0])
        report[f"{label} own half: greyhound, boston"] = (_own_half(maps[:1], 0)[0], _own_half(maps[1:], 1)[0])
    print(name, json.dumps(report, indent=1))
    fg_diff, cam_diff = report["fg diff: greyhound half, boston half"], report["grad-cam diff: greyhound half, boston half"]
    assert min(fg_diff) > 0.85
    assert fg_diff[0] >= cam_diff[0] and fg_diff[1] >= cam_diff[1]
    fg_own, cam_own = report["fg own half: greyhound, boston"], report["grad-cam own half: greyhound, boston"]
    assert fg_diff[0] > fg_own[0] and fg_diff[1] > fg_own[1], (fg_diff, fg_own)
    print(name, "FG own half > Grad-CAM own half (greyhound, boston):", [f > c for f, c in zip(fg_own, cam_own)])
