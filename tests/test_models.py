"""Tests of the Shapes model: layout, safe loading, card and accuracy."""

import pytest
import torch
from torch import nn

from fgcam import data, models
from fgcam.metrics import default_batch_size

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return models.load("shapes-vgg16bn")


def test_layout_matches_torchvision_vgg16_bn():
    from torchvision.models.vgg import cfgs, make_layers

    ours = models.build_shapes_vgg16bn(num_classes=len(data.CLASSES))
    ref = nn.Module()
    ref.features = make_layers(cfgs["D"], batch_norm=True)  # torchvision's vgg16_bn.features
    assert len(ours.features) == len(ref.features) == 44
    for i, (a, b) in enumerate(zip(ours.features, ref.features)):
        assert type(a) is type(b), i
        if isinstance(a, nn.Conv2d):
            assert (a.kernel_size, a.padding, a.stride) == (b.kernel_size, b.padding, b.stride) == ((3, 3), (1, 1), (1, 1))
        if isinstance(a, nn.ReLU):
            assert a.inplace and b.inplace
        if isinstance(a, nn.MaxPool2d):
            assert (a.kernel_size, a.stride) == (b.kernel_size, b.stride) == (2, 2)
    pools = [i for i, m in enumerate(ours.features) if isinstance(m, nn.MaxPool2d)]
    assert pools == [6, 13, 23, 33, 43] == list(models.MAXPOOL_INDICES)
    assert isinstance(ours.avgpool, nn.AdaptiveAvgPool2d)
    assert isinstance(ours.classifier, nn.Sequential)
    assert all(isinstance(m, (nn.Linear, nn.ReLU, nn.Dropout)) for m in ours.classifier)
    assert ours.classifier[-1].out_features == len(data.CLASSES)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_make_layers_equals_torchvisions_seed_for_seed(batch_norm):
    """fgcam's own ``make_layers`` (so that ``import fgcam`` skips torchvision) builds torchvision's stack: the same
    modules with the same settings, created in the same order, so a seeded initialisation gives the same tensors."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(3)
    ref = make_layers(cfgs["D"], batch_norm=batch_norm)
    torch.manual_seed(3)
    ours = models.make_layers(cfgs["D"], batch_norm=batch_norm)
    assert [repr(m) for m in ours] == [repr(m) for m in ref]
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))


def test_importing_fgcam_does_not_import_torchvision():
    """``import torchvision`` costs about 5 s per process (every chapter's kernel, every CLI call)."""
    import subprocess
    import sys

    code = ("import sys, fgcam, fgcam.imagenet, fgcam.models, fgcam.profiles, fgcam.report, fgcam.claims, "
            "fgcam.real, fgcam.zoo, fgcam.variants; fgcam.models.load('mobilenet_v1_0.75_192'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_vgg16_bn_url_is_torchvisions():
    import torchvision

    from fgcam import imagenet

    assert imagenet.VGG16_BN_URL == torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.url


def test_forward_order_and_map_size():
    m = models.build_shapes_vgg16bn(num_classes=len(data.CLASSES)).eval()
    x = torch.randn(2, 3, data.IMAGE_SIZE, data.IMAGE_SIZE)
    with torch.no_grad():
        feats = m.features(x)
        assert feats.shape[-2] >= 4 and feats.shape[-1] >= 4  # last max-pool output
        manual = m.classifier(torch.flatten(m.avgpool(feats), 1))
        assert torch.equal(m(x), manual)


def test_weights_file_small():
    assert models.weights_path().stat().st_size <= 10 * 1024 * 1024


def test_load_never_unpickles(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load / pickle must not be used")

    monkeypatch.setattr(torch, "load", refuse)
    import pickle

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    m = models.load("shapes-vgg16bn")
    assert not m.training
    assert next(m.parameters()).dtype == torch.float32


def test_card_fields():
    c = models.card("shapes-vgg16bn")
    assert c["classes"] == data.CLASSES
    assert c["input_size"] == [3, data.IMAGE_SIZE, data.IMAGE_SIZE]
    assert c["mean"] == list(data.MEAN) and c["std"] == list(data.STD)
    assert c["test_seed"] == data.TEST_SEED == 12345
    assert c["test_images"] == 2000 and c["test_accuracy"] >= 0.97
    assert c["train_seconds"] <= 20 * 60
    for key in ("torch", "torchvision", "python", "command", "model_seed", "train_seeds", "widths"):
        assert c[key] not in (None, "")
    assert c["command"].startswith("python -m fgcam.train_shapes")


@pytest.mark.slow
def test_accuracy_on_fresh_test_set(model):
    """The committed model classifies >= 97 % of the held-out test set."""
    correct = 0
    with torch.no_grad():
        for offset in range(0, 2000, 256):  # multiples of data.CHUNK: no chunk drawn twice
            d = data.make_shapes(min(256, 2000 - offset), data.TEST_SEED, raw=False, offset=offset)
            x = d["images"].contiguous(memory_format=torch.channels_last)  # faster on CPU
            bs = default_batch_size(model, x)  # activations small enough for malloc to reuse
            correct += sum((model(x[i:i + bs]).argmax(1) == d["labels"][i:i + bs]).sum().item()
                           for i in range(0, len(x), bs))
    acc = correct / 2000
    assert acc >= 0.97, acc


def test_unknown_name():
    with pytest.raises(ValueError) as e:
        models.load("alexnet")
    assert "shapes-vgg16bn" in str(e.value) and "vgg16_bn" in str(e.value)


def test_torchvision_names_dispatch_to_the_zoo(monkeypatch, tmp_path):
    """resnet18/resnet50/mobilenet_v2 come from the torch hub cache only; a missing file names file and URL."""
    from fgcam.imagenet import MissingResourceError
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingResourceError, match=r"resnet50-0676ba61\.pth.*\n.*https://"):
        models.load("resnet50")


def test_missing_file_names_file_and_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        models.load("shapes-vgg16bn")
    msg = str(e.value)
    assert "shapes-vgg16bn.safetensors" in msg and "fgcam.train_shapes" in msg


def test_vgg16_bn_dispatches_to_imagenet(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("fgcam.imagenet")
    fake.load_vgg16_bn = lambda device=None: ("imagenet", device)
    monkeypatch.setitem(sys.modules, "fgcam.imagenet", fake)
    assert models.load("vgg16_bn", device="cpu") == ("imagenet", "cpu")
