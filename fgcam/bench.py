"""Speed of fgcam: against the authors' code in one process, and every method as ratios to Grad-CAM.

    python -m fgcam.bench --reference DIR [--device cpu|cuda] [--threads 2] [--rounds 5]   # benchmark of record
    python -m fgcam.bench [--batch-sizes 1 16] [--repeats 3] [--device cpu|cuda] [--methods ...]  # method table

**Against the reference** (``--reference DIR``, a checkout of GitHub ``dongmo-qcq/FG-CAM``; its modules are
imported from ``DIR``, never copied): one random-weight half-width VGG16-BN (:func:`half_vgg16_bn`, 224x224) is
built once; the authors' ``VGG`` (its own ``create_features_modules`` and layer classes) gets the same weights
(:meth:`Reference.model_like`).  Their ``FG_CAM(model, "grad_cam")(x, False, 13, None)`` explains the predicted
class of one image at a time (their code explains image 0 of a batch only), on an input with ``requires_grad`` as
their pipeline (``util.apply_transforms``) makes it; fgcam's ``fg-grad-cam`` at ``features.13`` explains the same
images in one batch.  Before timing, the maps of both are compared (largest difference relative to the map's max
|value|); a mismatch aborts the run, so the ratio always compares the same computation.  The reference registers
a forward hook on every module at every call and never removes them; the benchmark removes them (and the
parameter gradients its backward pass accumulates) after each call, outside the timed region, so that the
reference does not get slower from call to call.

Cases are timed in interleaved rounds (each round runs every case once, in alternating order) and the median per
case is reported, so slow drifts of a shared machine affect all cases alike.  Printed: images/s of each case;
fgcam FG-Grad-CAM (batch 8) / reference (batch 1) images/s (target >= 3.2 on the CPU with 2 threads); FG-Grad-CAM
to ``features.13`` / Grad-CAM at ``features.43`` seconds on the same batch (target <= 2.3, batches 1 and 16).  On
CUDA (``--device cuda``) the batch size of fgcam's FG-Grad-CAM is also swept up to the memory
(:func:`sweep`), with the peak memory per image (``torch.cuda.max_memory_allocated``).  The JSON (machine, load
average, versions, command, every timing) goes to ``results/bench/``.

Hooks for other code (the evaluation runner's photos/hour): :func:`throughput` times any batch-explaining
callable (images/s, photos/hour, peak memory per image), :func:`explain_throughput` does it for one
``fgcam.explain`` setting, :func:`sweep` finds the largest batch that fits.  They work on every device; off CUDA
the memory figures are ``None``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fgcam
from fgcam.models import vgg16_cfg

# -- the method table (no --reference) -----------------------------------------------------------------------

#: (label, method, layer, denoise)
CASES = [
    ("grad-cam@features.43", "grad-cam", "features.43", False),
    ("grad-cam@features.13", "grad-cam", "features.13", False),
    ("layer-cam@features.13", "layer-cam", "features.13", False),
    ("grad-cam++@features.13", "grad-cam++", "features.13", False),
    ("xgrad-cam@features.13", "xgrad-cam", "features.13", False),
    ("fg-grad-cam@features.33", "fg-grad-cam", "features.33", False),
    ("fg-grad-cam@features.23", "fg-grad-cam", "features.23", False),
    ("fg-grad-cam@features.13", "fg-grad-cam", "features.13", False),
    ("fg-grad-cam-D@features.13", "fg-grad-cam", "features.13", True),
    ("fg-grad-cam@input", "fg-grad-cam", "input", False),
    ("lrp@input", "lrp", "input", False),
    ("clrp@input", "clrp", "input", False),
    ("sglrp@input", "sglrp", "input", False),
    ("score-cam@features.43", "score-cam", "features.43", False),
    ("fg-score-cam@features.13", "fg-score-cam", "features.13", False),
]
BASELINE = "grad-cam@features.43"
TARGET = ("fg-grad-cam@features.13", 2.3)

# -- targets of the benchmark of record -----------------------------------------------------------------------

#: fgcam FG-Grad-CAM at this batch size against the reference at batch 1: images/s ratio at least this (CPU).
REFERENCE_TARGET = (8, 3.2)
#: FG-Grad-CAM to features.13 / Grad-CAM at features.43 on the same batch: at most this, at these batch sizes.
GRADCAM_TARGET = ((1, 16), 2.3)
#: Relative parity tolerance between the reference's maps and fgcam's (max |diff| / max |ref|).
PARITY_TOL = 1e-3

HALF_WIDTHS = (32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256)
HALF_HIDDEN = 2048
REFERENCE_FILES = ("FG_CAM.py", "models/vgg.py", "models/layers.py")


def half_vgg16_bn(seed: int = 0, num_classes: int = 1000, widths=HALF_WIDTHS, hidden: int = HALF_HIDDEN) -> nn.Module:
    """torchvision's VGG16-BN layout (``features.0`` ... ``features.43``, ``avgpool`` 7x7, ``classifier``) with every
    width halved: convs ``32 ... 256``, classifier ``256*7*7 -> 2048 -> 2048 -> 1000``.  Random weights (seeded,
    torchvision's initialisation) and non-trivial BatchNorm statistics; eval mode."""
    torch.manual_seed(seed)
    from torchvision.models.vgg import make_layers
    model = torchvision.models.VGG(make_layers(vgg16_cfg(widths), batch_norm=True), num_classes=num_classes)
    model.classifier[0] = nn.Linear(widths[-1] * 7 * 7, hidden)
    model.classifier[3] = nn.Linear(hidden, hidden)
    model.classifier[6] = nn.Linear(hidden, num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, (2.0 / m.in_features) ** 0.5, generator=g)
                m.bias.normal_(0, 0.05, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def smooth_images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random "images" of the normalised scale (the golden data's recipe): 28x28 Gaussian noise
    upsampled bicubically, times 0.9, plus 0.15 x Gaussian noise.  ``[n, 3, size, size]``."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, max(size // 8, 1), max(size // 8, 1), generator=g)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return 0.9 * x + 0.15 * torch.randn(n, 3, size, size, generator=g)


# -- the authors' code ----------------------------------------------------------------------------------------

class Reference:
    """The authors' FG-CAM code (GitHub ``dongmo-qcq/FG-CAM``: ``FG_CAM.py``, ``models/vgg.py``, ``models/layers.py``),
    imported from a checkout ``path``.

    Their ``FG_CAM.py`` says ``from models.vgg import VGG``, so the checkout is put first on ``sys.path`` for the
    import (and taken off again).  A module called ``models`` or ``FG_CAM`` imported from elsewhere is an error.
    """

    def __init__(self, path):
        path = Path(path).expanduser().resolve()
        missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a checkout of the authors' code (GitHub dongmo-qcq/FG-CAM): "
                                    f"missing {', '.join(missing)}")
        for name in ("FG_CAM", "models", "models.vgg", "models.layers"):
            mod = sys.modules.get(name)
            where = getattr(mod, "__file__", None) if mod is not None else None
            if mod is not None and not (where and Path(where).resolve().is_relative_to(path)):
                raise RuntimeError(f"a module {name!r} is already imported from {where or mod!r}; the reference "
                                   f"needs its own ({path}): run the benchmark in a fresh process")
        sys.path.insert(0, str(path))
        try:
            self.layers = importlib.import_module("models.layers")
            self.vgg = importlib.import_module("models.vgg")
            self.fg_cam = importlib.import_module("FG_CAM")
        finally:
            sys.path.remove(str(path))
        self.path = path
        digest = hashlib.sha256()
        for f in REFERENCE_FILES:
            digest.update((path / f).read_bytes())
        self.sha256 = digest.hexdigest()
        self.commit = _git_commit(path)

    def model_like(self, model: nn.Module) -> nn.Module:
        """The reference's ``VGG`` with the layout and weights of ``model`` (a torchvision-layout VGG-BN).

        ``features`` comes from their ``create_features_modules(cfg, batch_norm=True)`` (their ``Conv2d``,
        ``BatchNorm2d``, ``ReLU``, ``MaxPool2d`` with the ``IR`` rules); their ``VGG`` hard-codes a 512*7*7
        classifier, which is replaced by one of ``model``'s shape (``nn.Linear``, their ``ReLU``, ``nn.Dropout``).
        The weights are loaded with ``strict=True``, so any layout difference is an error.
        """
        cfg = []
        for m in model.features:
            if isinstance(m, nn.Conv2d):
                cfg.append(m.out_channels)
            elif isinstance(m, nn.MaxPool2d):
                cfg.append("M")
        ref = self.vgg.VGG(self.vgg.create_features_modules(cfg, batch_norm=True))
        layers = []
        for m in model.classifier:
            if isinstance(m, nn.Linear):
                layers.append(nn.Linear(m.in_features, m.out_features))
            elif isinstance(m, nn.ReLU):
                layers.append(self.layers.ReLU(True))
            elif isinstance(m, nn.Dropout):
                layers.append(nn.Dropout(m.p))
            else:
                raise TypeError(f"classifier module {type(m).__name__} has no counterpart in the reference's VGG")
        ref.classifier = nn.Sequential(*layers)
        ref.load_state_dict(model.state_dict(), strict=True)
        return ref.to(next(model.parameters()).device).eval()

    def explainer(self, ref_model: nn.Module, base_cam: str = "grad_cam"):
        """Their ``FG_CAM(ref_model, base_cam)``."""
        return self.fg_cam.FG_CAM(ref_model, base_cam)

    @staticmethod
    def explain(explainer, image: torch.Tensor, target_layer: int) -> tuple[torch.Tensor, int]:
        """``explainer(image, False, target_layer, None)`` on one image ``[1, 3, H, W]`` (a leaf that requires grad,
        as their pipeline makes it); returns ``(map [1, h, w], class)``."""
        out, cls = explainer(image, False, target_layer, None)
        return out.detach(), int(cls)

    @staticmethod
    def tidy(ref_model: nn.Module) -> None:
        """Undo what a reference call leaves behind: the forward hooks its ``VGG.register_hook`` adds to every
        ``features`` module (its ``remove_hook`` removes none) and the parameter gradients of its backward pass."""
        for m in ref_model.features:
            m._forward_hooks.clear()
        ref_model.zero_grad(set_to_none=True)


# -- device helpers and hooks ---------------------------------------------------------------------------------

def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> int | None:
    """Reset the peak-memory counter; returns the memory allocated now (None off CUDA)."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak(device) -> int | None:
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def photos_per_hour(images_per_s: float) -> float:
    """Images explained per hour at ``images_per_s``."""
    return 3600.0 * images_per_s


def throughput(fn: Callable[[], object], batch: int, device="cpu", repeats: int = 3, warmup: int = 1) -> dict:
    """Time ``fn()``, which explains one batch of ``batch`` images on ``device``: median of ``repeats`` runs after
    ``warmup`` untimed ones.

    Returns ``seconds_per_batch``, ``images_per_s``, ``photos_per_hour``, ``peak_bytes`` (CUDA:
    ``torch.cuda.max_memory_allocated`` during the runs) and ``peak_bytes_per_image`` (the peak above the memory
    allocated before the runs, divided by ``batch``); the memory figures are None off CUDA.
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be at least 1; got batch={batch}, repeats={repeats}")
    for _ in range(warmup):
        fn()
    before = _reset_peak(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = _peak(device)
    t = statistics.median(times)
    return {"batch": batch, "device": str(device), "seconds_per_batch": t, "images_per_s": batch / t,
            "photos_per_hour": photos_per_hour(batch / t), "peak_bytes": peak,
            "peak_bytes_per_image": None if peak is None else (peak - before) / batch}


def explain_throughput(model: nn.Module, images: torch.Tensor, method: str = "fg-grad-cam",
                       layer: str = "features.13", repeats: int = 3, **kwargs) -> dict:
    """:func:`throughput` of ``fgcam.explain(model, images, method, layer, **kwargs)`` on the images' device."""
    return throughput(lambda: fgcam.explain(model, images, method, layer, **kwargs), images.shape[0],
                      images.device, repeats=repeats)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def sweep(fn_for_batch: Callable[[int], Callable[[], object]], device="cpu", start: int = 1, cap: int = 256,
          repeats: int = 2) -> list[dict]:
    """:func:`throughput` at batch sizes ``start, 2 start, 4 start, ...`` up to ``cap`` or until the device runs
    out of memory (that batch size is then not reported).  ``fn_for_batch(b)`` returns the callable that explains
    a batch of ``b`` images.  Returns one row per batch size that ran; the last is the largest that fits."""
    rows, b = [], start
    while b <= cap:
        try:
            rows.append(throughput(fn_for_batch(b), b, device, repeats=repeats))
        except (RuntimeError, MemoryError) as err:   # torch.OutOfMemoryError is a RuntimeError
            if not _is_oom(err) and not isinstance(err, MemoryError):
                raise
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            break
        b *= 2
    return rows


# -- machine and versions -------------------------------------------------------------------------------------

def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _git_dirty(path: Path) -> bool | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def machine(device) -> dict:
    """What the numbers were measured on: CPU, cores, threads, load average, GPU."""
    device = torch.device(device)
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        info["cpu_model"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_bytes=p.total_memory, cuda=torch.version.cuda)
    return info


def versions() -> dict:
    repo = Path(fgcam.__file__).resolve().parents[1]
    import numpy
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "fgcam": fgcam.__version__, "fgcam_commit": _git_commit(repo),
            "fgcam_dirty": _git_dirty(repo)}


def _command(argv) -> str:
    return "python -m fgcam.bench" + ("" if not argv else " " + shlex.join(argv))


# -- the benchmark of record: fgcam against the authors' code -------------------------------------------------

def _interleave(cases: list[tuple[str, int, Callable[[], None], Callable[[], None] | None]], rounds: int,
                device) -> dict[str, list[float]]:
    """Run each case once per round, alternating the order every round; returns seconds per image per round.

    A case is ``(label, images per call, call, after)``; ``after`` runs untimed after each call.  A call that
    returns a number has timed itself (the seconds it returns are used).
    """
    times = {c[0]: [] for c in cases}
    for k in range(rounds):
        for label, n, call, after in (cases if k % 2 == 0 else cases[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            own = call()
            _sync(device)
            elapsed = time.perf_counter() - t0
            times[label].append((own if isinstance(own, float) else elapsed) / n)
            if after is not None:
                after()
    return times


def compare(reference: str | Path, device="cpu", rounds: int = 5, fg_batch: int = REFERENCE_TARGET[0],
            batch_sizes=GRADCAM_TARGET[0], size: int = 224, layer: int = 13, do_sweep: bool | None = None,
            sweep_cap: int = 1024, out=None) -> dict:
    """fgcam against the authors' code, in this process (see the module docstring).  Returns the result dict
    (also printed as a table with the ratios and their targets)."""
    device = torch.device(device)
    ref = Reference(reference)
    model = half_vgg16_bn().to(device)
    ref_model = ref.model_like(model)
    ref_explainer = ref.explainer(ref_model)
    n = max([fg_batch, *batch_sizes])
    images = smooth_images(n, size).to(device)
    stop = f"features.{layer}"
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    # parity: the reference's map of each of the fg_batch images against fgcam's batch
    ours = fgcam.explain(model, images[:fg_batch], "fg-grad-cam", stop)
    with torch.no_grad():
        classes = model(images[:fg_batch]).argmax(1).tolist()
    leaves = [images[i:i + 1].clone().requires_grad_(True) for i in range(fg_batch)]
    parity = []
    for i, x in enumerate(leaves):
        theirs, cls = ref.explain(ref_explainer, x, layer)
        ref.tidy(ref_model)
        err = float((ours[i] - theirs[0]).abs().max() / theirs.abs().max())
        parity.append({"image": i, "class_reference": cls, "class_fgcam": classes[i], "max_rel_diff": err})
        if cls != classes[i] or not err <= PARITY_TOL:
            raise RuntimeError(f"image {i}: the reference and fgcam disagree (class {cls} vs {classes[i]}, max "
                               f"relative difference {err:.2e} > {PARITY_TOL}): the benchmark would not compare "
                               "the same computation")

    def ref_round() -> float:
        """The reference on each image at batch 1; its clean-up after each call is not timed."""
        total = 0.0
        for x in leaves:
            _sync(device)
            t0 = time.perf_counter()
            ref.explain(ref_explainer, x, layer)
            _sync(device)
            total += time.perf_counter() - t0
            ref.tidy(ref_model)
        return total

    def fg(method, lay, b):
        x = images[:b]
        return lambda: fgcam.explain(model, x, method, lay)

    cases = [("reference fg-grad-cam@features.%d b1" % layer, fg_batch, ref_round, None),
             (f"fgcam fg-grad-cam@{stop} b{fg_batch}", fg_batch, fg("fg-grad-cam", stop, fg_batch), None)]
    for b in batch_sizes:
        cases.append((f"fgcam grad-cam@features.43 b{b}", b, fg("grad-cam", "features.43", b), None))
        cases.append((f"fgcam fg-grad-cam@{stop} b{b}", b, fg("fg-grad-cam", stop, b), None))
    seen, unique = set(), []
    for c in cases:
        if c[0] not in seen:
            seen.add(c[0])
            unique.append(c)
    for label, n_img, call, after in unique[1:]:  # warm-up (the parity check warmed the reference up)
        call()
    times = _interleave(unique, rounds, device)
    med = {label: statistics.median(t) for label, t in times.items()}

    ref_label, fg_label = unique[0][0], unique[1][0]
    ratios = {"fgcam_vs_reference": {
        "what": f"images/s of fgcam fg-grad-cam@{stop} at batch {fg_batch} / the reference's at batch 1",
        "value": med[ref_label] / med[fg_label], "target": f">= {REFERENCE_TARGET[1]}",
        "meets": med[ref_label] / med[fg_label] >= REFERENCE_TARGET[1]}}
    b1 = f"fgcam fg-grad-cam@{stop} b1"
    if b1 in med:
        ratios["fgcam_b1_vs_reference"] = {"what": f"images/s of fgcam fg-grad-cam@{stop} at batch 1 / the "
                                           "reference's at batch 1", "value": med[ref_label] / med[b1]}
    for b in batch_sizes:
        r = med[f"fgcam fg-grad-cam@{stop} b{b}"] / med[f"fgcam grad-cam@features.43 b{b}"]
        ratios[f"fg_over_gradcam_b{b}"] = {
            "what": f"seconds of fg-grad-cam@{stop} / grad-cam@features.43, batch {b}", "value": r,
            "target": f"<= {GRADCAM_TARGET[1]}", "meets": r <= GRADCAM_TARGET[1]}
    result = {"benchmark": "fgcam vs the authors' FG-CAM code", "device": str(device), "image_size": size,
              "model": f"half-width VGG16-BN (widths {list(HALF_WIDTHS)}, classifier hidden {HALF_HIDDEN}, 1000 "
                       "classes), random weights (seed 0)",
              "rounds": rounds, "reference": {"path": str(ref.path), "commit": ref.commit, "sha256": ref.sha256,
                                               "files": list(REFERENCE_FILES)},
              "parity": parity, "cases": [{"case": label, "seconds_per_image": med[label],
                                            "images_per_s": 1.0 / med[label], "per_round": times[label]}
                                           for label in med], "ratios": ratios}

    if do_sweep if do_sweep is not None else device.type == "cuda":
        full = smooth_images(1, size).to(device)

        def batch_fn(b):
            x = full.expand(b, -1, -1, -1).contiguous()
            return lambda: fgcam.explain(model, x, "fg-grad-cam", stop)
        result["sweep"] = sweep(batch_fn, device, cap=sweep_cap)
        if device.type == "cuda":
            result["reference_peak"] = throughput(lambda: (ref.explain(ref_explainer, leaves[0], layer),
                                                           ref.tidy(ref_model)), 1, device, repeats=2)
    result["loadavg_before"], result["loadavg_after"] = load_before, (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    _print_compare(result, out or sys.stdout)
    return result


def _print_compare(res: dict, out) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    worst = max(r["max_rel_diff"] for r in res["parity"])
    p(f"# fgcam vs reference ({res['reference']['path']}, commit {res['reference']['commit'] or 'unknown'}, "
      f"sha256 {res['reference']['sha256'][:12]}), {res['model']}, {res['image_size']}x{res['image_size']}, "
      f"device {res['device']}, threads {torch.get_num_threads()}, median of {res['rounds']} interleaved rounds")
    p(f"parity: {len(res['parity'])} images, same classes, max relative difference {worst:.1e}")
    p(f"{'case':44s} {'s/image':>9s} {'images/s':>9s}")
    for c in res["cases"]:
        p(f"{c['case']:44s} {c['seconds_per_image']:9.4f} {c['images_per_s']:9.2f}")
    for name, r in res["ratios"].items():
        tgt = f"  (target {r['target']}: {'meets' if r['meets'] else 'MISSES'})" if "target" in r else ""
        p(f"{name:24s} {r['value']:6.2f}  {r['what']}{tgt}")
    for row in res.get("sweep", []):
        mem = "" if row["peak_bytes_per_image"] is None else \
            f", peak {row['peak_bytes'] / 2**20:.0f} MiB, {row['peak_bytes_per_image'] / 2**20:.1f} MiB/image"
        p(f"sweep fg-grad-cam batch {row['batch']:5d}: {row['images_per_s']:9.1f} images/s, "
          f"{row['photos_per_hour']:,.0f} photos/hour{mem}")
    p(f"load average before/after: {res['loadavg_before']} / {res['loadavg_after']}")


# -- the method table ---------------------------------------------------------------------------------------

def run(batch_sizes=(1, 16), repeats=3, device=None, methods=None, size=224, out=None):
    """Time the cases; returns a list of result dicts and prints a table with ratios to Grad-CAM."""
    out = out or sys.stdout
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = torchvision.models.vgg16_bn(weights=None).eval().to(device)
    if methods:
        cases = [c for c in CASES if c[1] in methods or c[0] in methods]
        if not any(c[0] == BASELINE for c in cases):
            cases = [CASES[0]] + cases
    else:
        cases = [c for c in CASES if device.type == "cuda" or "score-cam" not in c[1]]
    results = []
    print(f"# fgcam {fgcam.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"threads {torch.get_num_threads()}, VGG16-BN random weights, {size}x{size}, median of {repeats}", file=out)
    for b in batch_sizes:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)).to(device)
        times = {c[0]: [] for c in cases}
        for c in cases:  # warm-up
            fgcam.explain(model, x, c[1], c[2], denoise=c[3])
        for _ in range(repeats):
            for label, method, layer, denoise in cases:
                _sync(device)
                t0 = time.perf_counter()
                fgcam.explain(model, x, method, layer, denoise=denoise)
                _sync(device)
                times[label].append(time.perf_counter() - t0)
        base = statistics.median(times[BASELINE])
        print(f"\nbatch {b}\n{'case':28s} {'s/batch':>9s} {'images/s':>9s} {'x Grad-CAM':>10s}", file=out)
        for label, *_ in cases:
            t = statistics.median(times[label])
            row = {"batch": b, "case": label, "seconds": t, "images_per_s": b / t, "ratio": t / base,
                   "device": str(device)}
            results.append(row)
            print(f"{label:28s} {t:9.3f} {b / t:9.2f} {t / base:10.2f}", file=out)
        label, limit = TARGET
        ratio = statistics.median(times[label]) / base if label in times else float("nan")
        verdict = "meets" if ratio <= limit else "MISSES"
        print(f"target: {label} / {BASELINE} = {ratio:.2f} ({verdict} <= {limit})", file=out)
    return results


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m fgcam.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="checkout of GitHub dongmo-qcq/FG-CAM: run the benchmark of record against it")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="batch sizes (default: 1 16)")
    p.add_argument("--repeats", type=int, default=3, help="method table: timed runs per case")
    p.add_argument("--rounds", type=int, default=5, help="--reference: interleaved rounds")
    p.add_argument("--fg-batch", type=int, default=REFERENCE_TARGET[0],
                   help="--reference: fgcam's batch size against the reference's batch 1 (default 8)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="--reference: sweep fgcam's batch size up to the memory (default: on CUDA only)")
    p.add_argument("--sweep-cap", type=int, default=1024, help="largest batch size the sweep tries")
    p.add_argument("--methods", nargs="*", default=None, help="method names or case labels (default: all)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--json", default=None, help="write the results as JSON to this file (--reference: default "
                   "results/bench/vs-reference-<device>-<threads>threads.json)")
    a = p.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    if a.reference is None:
        res = run(a.batch_sizes or [1, 16], a.repeats, a.device, a.methods, a.size)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"torch": torch.__version__, "results": res}, f, indent=1)
        return res
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ver = versions()                                  # the code that runs, before anything can change it
    res = compare(a.reference, device, rounds=a.rounds, fg_batch=a.fg_batch,
                  batch_sizes=tuple(a.batch_sizes or GRADCAM_TARGET[0]), size=a.size, do_sweep=a.sweep,
                  sweep_cap=a.sweep_cap)
    res.update(command=_command(argv), machine=machine(device), versions=ver)
    path = Path(a.json or f"results/bench/vs-reference-{device.type}-{torch.get_num_threads()}threads.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
