"""Speed of every method on VGG16-BN (random weights, 224x224), as ratios to Grad-CAM measured in the same run.

    python -m fgcam.bench [--batch-sizes 1 16] [--repeats 3] [--device cpu|cuda] [--methods ...]

Methods are timed in interleaved rounds (each round runs every method once) and the median per method is
reported, so slow drifts of the machine affect all methods alike.  The target of the engine issue: FG-Grad-CAM
down to ``features.13`` costs at most 2.5x Grad-CAM at the last max-pool (``features.43``) on the same batch.
Score-CAM runs one forward pass per channel (512 per image at the last max-pool), so it is left out on the CPU
unless named with ``--methods``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torchvision

import fgcam

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
TARGET = ("fg-grad-cam@features.13", 2.5)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(batch_sizes=(1, 16), repeats=3, device=None, methods=None, size=224, out=sys.stdout):
    """Time the cases; returns a list of result dicts and prints a table with ratios to Grad-CAM."""
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
    p = argparse.ArgumentParser(prog="python -m fgcam.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--methods", nargs="*", default=None, help="method names or case labels (default: all)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    a = p.parse_args(argv)
    res = run(a.batch_sizes, a.repeats, a.device, a.methods, a.size)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
