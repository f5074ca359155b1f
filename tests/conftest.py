"""Shared test fixtures: the golden tensors of the authors' reference code, small models, and optional resources.

Optional resources: data that must not ship with the repository (the ImageNet sample photos, named by
``FGCAM_IMAGENET_SAMPLES``) and tools a user may lack (a headless Chromium).  A test that needs one calls
:func:`require`; it is skipped with the reason (naming the variable or the package to install), except when
``FGCAM_REQUIRE_ALL=1`` (set by ``.ci/run``), where the missing resource fails the test instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

TESTS = Path(__file__).resolve().parent
GOLDEN = TESTS / "data" / "golden" / "fgcam_golden.safetensors"  # vendored: tests/data/README.md
PUBLISHED_CSV = TESTS / "data" / "published_tables.csv"  # the paper's Tables 1-6, vendored
REQUIRE_ALL_ENV = "FGCAM_REQUIRE_ALL"
GOLDEN_CFG = [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M", 32, 32, 32, "M"]

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class GoldenVGG(nn.Module):
    """The golden model exactly as ``tests/data/golden/README.md`` describes it (official ``VGG.forward``)."""

    def __init__(self):
        super().__init__()
        self.features = torchvision.models.vgg.make_layers(GOLDEN_CFG, batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(1568, 64), nn.ReLU(inplace=True), nn.Linear(64, 10))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = x.view(x.shape[0], -1)
        return self.classifier(x)


@pytest.fixture(scope="session")
def golden():
    """All golden tensors (dict name -> tensor). Fails, never skips, when the file is missing."""
    from safetensors.torch import load_file
    if not GOLDEN.exists():
        pytest.fail(f"golden file {GOLDEN} is missing: it is part of the repository (tests/data/golden)")
    return load_file(str(GOLDEN))


def require_all() -> bool:
    """Whether a missing optional resource fails the test instead of skipping it (``FGCAM_REQUIRE_ALL=1``)."""
    return os.environ.get(REQUIRE_ALL_ENV, "") not in ("", "0")


def require(available, reason: str):
    """Skip the calling test with ``reason`` when ``available`` is falsy; fail instead under ``FGCAM_REQUIRE_ALL``.

    ``reason`` says what is missing and how to provide it (the environment variable, the package).
    Returns ``available``.
    """
    if not available:
        if require_all():
            pytest.fail(f"{reason} ({REQUIRE_ALL_ENV} is set: missing resources are failures)", pytrace=False)
        pytest.skip(reason)
    return available


@pytest.fixture()
def golden_model(golden):
    model = GoldenVGG()
    state = {k[len("model."):]: (v.long() if k.endswith("num_batches_tracked") else v)
             for k, v in golden.items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, drawn from ``generator`` (in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0, 0.1, generator=generator)
    return model


@pytest.fixture(scope="session")
def random_vgg16_bn():
    """torchvision VGG16-BN with seeded random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16_bn(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def random_hub(tmp_path_factory):
    """A torch hub folder holding random VGG16-BN weights under the official file name (written once)."""
    from fixtures_imagenet import write_random_vgg16_bn_weights
    hub = tmp_path_factory.mktemp("hub")
    path = write_random_vgg16_bn_weights(hub)
    yield hub
    path.unlink()  # 550 MB: do not leave it in pytest's kept temporary folders


@pytest.fixture(scope="session")
def smooth_images():
    """Two smooth random 224x224 'images' (normalised scale), seeded."""
    g = torch.Generator().manual_seed(1)
    low = torch.randn(2, 3, 28, 28, generator=g)
    x = torch.nn.functional.interpolate(low, size=(224, 224), mode="bicubic", align_corners=False)
    return 0.9 * x + 0.15 * torch.randn(2, 3, 224, 224, generator=g)


def resnet_features(model: nn.Module) -> nn.Sequential:
    """A torchvision ResNet's layers up to ``layer4`` as one chain (the part FG-CAM propagates through)."""
    return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                         model.layer3, model.layer4)


def zennit_fgcam_map(model: nn.Module, x: torch.Tensor, comps: torch.Tensor, canonizer,
                     epsilon: float = 1e-100) -> torch.Tensor:
    """The independent reference for FG-CAM on a torchvision ResNet: zennit propagates the ``layer4`` components
    ``comps`` to the input (z+ in every hidden convolution, z^B with the image's min and max at the first, BatchNorm
    and activations passed, residual sums split by ``Norm``, ``canonizer`` applied; stabiliser ``epsilon``, no
    clipping) and the channels are summed: ``[B, H, W]``."""
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.core import Stabilizer
    from zennit.layer import Sum
    from zennit.rules import Norm, Pass, ZBox, ZPlus
    from zennit.types import Activation, BatchNorm, Convolution

    exact = Stabilizer(epsilon=epsilon, clip=False, norm_scale=False)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (BatchNorm, Pass()), (Sum, Norm(stabilizer=exact)),
                   (Convolution, ZPlus(stabilizer=exact, zero_params="bias"))],
        first_map=[(Convolution, ZBox(x.min().expand_as(x), x.max().expand_as(x), stabilizer=exact,
                                      zero_params="bias"))],
        canonizers=[canonizer])
    with Gradient(model=resnet_features(model), composite=composite) as attributor:
        _, rel = attributor(x, comps)
    return rel.sum(1)


def pytest_collection_modifyitems(session, config, items):
    """Tests of modules that wait for the background chapter executions (``AFTER_CHAPTERS = True``) run last, so
    that the main process runs every other test before it waits (the order within each group is kept)."""
    items[:] = sorted(items, key=lambda item: bool(getattr(getattr(item, "module", None), "AFTER_CHAPTERS", False)))


def pytest_collection_finish(session):
    """Start the selected chapters' executions now, in the background (``tests/book_runs.py``); not for
    ``--collect-only``."""
    if session.config.option.collectonly:
        return
    for module in {item.module for item in session.items if getattr(item.module, "BOOK_CHAPTER_TESTS", False)}:
        module.submit_selected(session.items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The chapters' execution times, slowest first (what the budgets of tests/test_notebooks.py are set from)."""
    import book_runs

    text = book_runs.summary()
    if text:
        terminalreporter.write_sep("-", f"chapter executions ({book_runs.JOBS} at a time, beside the other tests)")
        terminalreporter.write_line(text)


def pytest_sessionfinish(session, exitstatus):
    """Cancel the chapters not started (a session stopped early) and wait for the workers; runs before the summary."""
    import book_runs

    book_runs.stop()
