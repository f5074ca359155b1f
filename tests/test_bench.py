"""fgcam.bench: the benchmark against the authors' code and the throughput hooks, on the CPU.

The authors' code is not part of the repository, so the comparison is tested against a stand-in checkout written
here (same file names and interface: ``FG_CAM(model, base_cam)(x, denoising, target_layer, target_class)``, a
``VGG`` that piles up forward hooks as theirs does).  The CUDA branches of the hooks (synchronisation, peak memory,
out-of-memory) run with ``torch.cuda``'s functions replaced by counters, on CPU tensors.
"""
import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from fgcam import bench
from fgcam import metrics as M

LAYERS = '''
from torch import nn

def forward_hook(self, input, output):
    self.X = input[0].detach()

class ReLU(nn.ReLU): pass
class BatchNorm2d(nn.BatchNorm2d): pass
class MaxPool2d(nn.MaxPool2d): pass
class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d): pass
class Conv2d(nn.Conv2d): pass
'''

VGG = '''
from torch import nn
from models.layers import *

class VGG(nn.Module):
    def __init__(self, features, num_classes=1000):
        super().__init__()
        self.features = features
        self.avgpool = AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(64, 10))     # replaced by the benchmark
        self.hook = []

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.view(x.size(0), -1))

    def register_hook(self):                                    # never removed, as in the authors' code
        for m in self.features:
            m.register_forward_hook(forward_hook)

def create_features_modules(layers, batch_norm=False):
    features, c = [], 3
    for v in layers:
        if v == "M":
            features.append(MaxPool2d(kernel_size=2, stride=2))
        else:
            features += [Conv2d(c, v, kernel_size=3, padding=1), BatchNorm2d(v), ReLU(inplace=True)]
            c = v
    return nn.Sequential(*features)
'''

FG_CAM = '''
import fgcam
from models.vgg import VGG

SCALE = 1.0

class FG_CAM:
    """Stand-in with the authors' call signature; computes with fgcam (times SCALE)."""
    def __init__(self, model, base_cam):
        self.model, self.base_cam = model, base_cam

    def __call__(self, input, denoising, target_layer, target_class=None):
        if target_class is None:
            target_class = self.model(input).argmax(dim=-1)[0].item()
        self.model.register_hook()
        self.model(input)
        layer = "input" if target_layer == -1 else f"features.{target_layer}"
        out = fgcam.explain(self.model, input.detach(), "fg-" + self.base_cam.replace("_", "-"), layer,
                            target=target_class, denoise=denoising)
        return SCALE * out, target_class
'''


@pytest.fixture
def fake_reference(tmp_path):
    root = tmp_path / "FG-CAM"
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "layers.py").write_text(textwrap.dedent(LAYERS))
    (root / "models" / "vgg.py").write_text(textwrap.dedent(VGG))
    (root / "FG_CAM.py").write_text(textwrap.dedent(FG_CAM))
    yield root
    for name in ("FG_CAM", "models", "models.vgg", "models.layers"):
        sys.modules.pop(name, None)


_HALF = bench.half_vgg16_bn


def _tiny_half_vgg():
    return _HALF(widths=(4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8), hidden=16)


@pytest.fixture(scope="module")
def small_half_vgg():
    return _tiny_half_vgg()


def test_half_vgg16_bn_layout():
    model = bench.half_vgg16_bn()
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == list(bench.HALF_WIDTHS) == [w // 2 for w in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512,
                                                                 512, 512, 512)]
    assert [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)] == [6, 13, 23, 33, 43]
    assert [(m.in_features, m.out_features) for m in model.classifier if isinstance(m, nn.Linear)] == \
        [(256 * 49, 2048), (2048, 2048), (2048, 1000)]
    assert not model.training
    bn = model.features[1]
    assert bn.running_var.min() >= 0.5 and bn.running_mean.abs().max() > 0


def test_reference_checkout_missing_files(tmp_path):
    (tmp_path / "FG_CAM.py").write_text("")
    with pytest.raises(FileNotFoundError, match=r"missing models/vgg.py, models/layers.py"):
        bench.Reference(tmp_path)


def test_reference_refuses_a_foreign_models_module(fake_reference, monkeypatch):
    monkeypatch.setitem(sys.modules, "models", type(sys)("models"))
    with pytest.raises(RuntimeError, match="module 'models' is already imported"):
        bench.Reference(fake_reference)


def test_reference_model_has_our_weights_and_hooks_are_tidied(fake_reference, small_half_vgg):
    ref = bench.Reference(fake_reference)
    assert ref.commit is None and len(ref.sha256) == 64
    assert str(fake_reference) not in sys.path
    twin = ref.model_like(small_half_vgg)
    assert type(twin).__module__ == "models.vgg" and type(twin.features[0]).__module__ == "models.layers"
    x = bench.smooth_images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), small_half_vgg(x), rtol=0, atol=0)
    explainer = ref.explainer(twin)
    for _ in range(3):
        ref.explain(explainer, x[:1].clone().requires_grad_(True), 13)
    assert len(twin.features[0]._forward_hooks) == 3                       # piled up, as the authors' VGG does
    ref.tidy(twin)
    assert all(len(m._forward_hooks) == 0 for m in twin.features)


def test_compare_end_to_end(fake_reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "half_vgg16_bn",
                        _tiny_half_vgg)
    out = tmp_path / "bench.json"
    res = bench.main(["--reference", str(fake_reference), "--device", "cpu", "--rounds", "2", "--fg-batch", "2",
                      "--batch-sizes", "1", "2", "--size", "32", "--json", str(out)])
    text = capsys.readouterr().out
    assert "fgcam_vs_reference" in text and "fg_over_gradcam_b2" in text and "load average" in text
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m fgcam.bench --reference")
    assert saved["machine"]["torch_threads"] == torch.get_num_threads() and saved["versions"]["torch"]
    assert saved["reference"]["sha256"] == res["reference"]["sha256"]
    assert len(saved["parity"]) == 2 and all(p["max_rel_diff"] <= bench.PARITY_TOL for p in saved["parity"])
    med = {c["case"]: c["seconds_per_image"] for c in saved["cases"]}
    assert all(len(c["per_round"]) == 2 for c in saved["cases"])
    r = saved["ratios"]["fgcam_vs_reference"]
    assert r["value"] == pytest.approx(med["reference fg-grad-cam@features.13 b1"]
                                       / med["fgcam fg-grad-cam@features.13 b2"])
    assert r["meets"] == (r["value"] >= 3.2)
    assert saved["ratios"]["fg_over_gradcam_b1"]["value"] == pytest.approx(
        med["fgcam fg-grad-cam@features.13 b1"] / med["fgcam grad-cam@features.43 b1"])
    assert "sweep" not in saved                                            # on the CPU only with --sweep


def test_compare_aborts_when_the_maps_differ(fake_reference, monkeypatch):
    monkeypatch.setattr(bench, "half_vgg16_bn",
                        _tiny_half_vgg)
    ref = bench.Reference(fake_reference)
    monkeypatch.setattr(ref.fg_cam, "SCALE", 1.5)
    monkeypatch.setattr(bench, "Reference", lambda path: ref)
    with pytest.raises(RuntimeError, match="disagree"):
        bench.compare(fake_reference, rounds=1, fg_batch=1, batch_sizes=(1,), size=32)


def test_throughput_cpu():
    calls = []
    res = bench.throughput(lambda: calls.append(1), batch=4, device="cpu", repeats=3, warmup=2)
    assert len(calls) == 5
    assert res["images_per_s"] == pytest.approx(4 / res["seconds_per_batch"])
    assert res["photos_per_hour"] == pytest.approx(3600 * res["images_per_s"])
    assert res["peak_bytes"] is None and res["peak_bytes_per_image"] is None
    with pytest.raises(ValueError, match="batch and repeats"):
        bench.throughput(lambda: None, batch=0)


class FakeCuda:
    """torch.cuda's timing and memory functions, as counters (the device code runs on CPU tensors)."""

    def __init__(self, monkeypatch, oom_above=None):
        self.syncs, self.allocated, self.peak, self.emptied = 0, 1000, 1000, 0
        for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated",
                     "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def synchronize(self, device=None):
        self.syncs += 1

    def reset_peak_memory_stats(self, device=None):
        self.peak = self.allocated

    def memory_allocated(self, device=None):
        return self.allocated

    def max_memory_allocated(self, device=None):
        return self.peak

    def empty_cache(self):
        self.emptied += 1


def test_throughput_cuda_branch_on_cpu_tensors(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    x = torch.ones(8, 3)

    def explain_batch():
        cuda.peak = max(cuda.peak, cuda.allocated + 800)          # 800 bytes above the resident memory
        return x * 2
    res = bench.throughput(explain_batch, batch=8, device="cuda", repeats=2, warmup=1)
    assert res["peak_bytes"] == 1800 and res["peak_bytes_per_image"] == 100
    assert cuda.syncs >= 2 * 2 + 2                                 # around every timed run, and for the peak


def test_sweep_stops_at_out_of_memory(monkeypatch):
    cuda = FakeCuda(monkeypatch)

    def fn_for_batch(b):
        def run():
            if b > 8:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            cuda.peak = max(cuda.peak, cuda.allocated + 100 * b)
        return run
    rows = bench.sweep(fn_for_batch, device="cuda", cap=64, repeats=1)
    assert [r["batch"] for r in rows] == [1, 2, 4, 8] and cuda.emptied == 1
    assert all(r["peak_bytes_per_image"] == 100 for r in rows)
    assert [r["batch"] for r in bench.sweep(fn_for_batch, device="cpu", start=2, cap=4, repeats=1)] == [2, 4]


def test_sweep_passes_other_errors_on():
    def fn_for_batch(b):
        def run():
            raise RuntimeError("shape mismatch")
        return run
    with pytest.raises(RuntimeError, match="shape mismatch"):
        bench.sweep(fn_for_batch, device="cpu")


def test_explain_throughput_on_a_small_model(small_half_vgg):
    res = bench.explain_throughput(small_half_vgg, bench.smooth_images(2, 32), "fg-grad-cam", "features.13",
                                   repeats=1)
    assert res["batch"] == 2 and res["device"] == "cpu" and res["images_per_s"] > 0


def test_bench_metrics_prints_every_case(capsys):
    """fgcam.bench_metrics times each batch size on both memory formats (a small CNN on 32 x 32, one round)."""
    from fgcam import bench_metrics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    res = bench_metrics.time_cases(model, "small", 32, ("64", "auto"), rounds=1)
    out = capsys.readouterr().out
    assert [(r["batch"], r["format"]) for r in res] == [("64", "channels-last"), ("auto", "channels-last"),
                                                         ("64", "contiguous"), ("auto", "contiguous")]
    largest = 8 * 32 * 32 * 4  # bytes: the first convolution's output for one image
    assert res[1]["batch_size"] == M.forward_batch_size(model, (3, 32, 32)) == M.FORWARD_BYTES_BUDGET // largest
    assert res[0]["speedup"] == 1.0 and all(r["seconds"] > 0 and len(r["rounds"]) == 1 for r in res)
    assert out.count("\n    64 ") == 2 and out.count("\n  auto ") == 2 and "auto batch = 512" in out
    with pytest.raises(SystemExit):
        bench_metrics.main(["--batch-sizes", "0"])
