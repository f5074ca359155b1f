"""Speed of the metrics' perturbed forward passes: batch size and memory format, side by side in one run.

    python -m fgcam.bench_metrics [--models mobilenet_v1_0.75_192 mobilenet_v2_1.0_224] [--batch-sizes auto 16 128]
                                  [--rounds 3] [--threads 2] [--json FILE]

Insertion/deletion dominates the evaluation's wall time (about 170 forward passes per photo and setting at 192 px,
``fgcam.runner``'s ``forward_share`` is above 0.9 on the faithfulness grid).  For each bundled model this times
:func:`fgcam.metrics.insertion_deletion` of one image (a smooth random input of the model's size and a random
saliency map: the passes do not depend on the content) for every metric batch size (``auto`` =
:func:`fgcam.metrics.forward_batch_size`) on the model as it is and on a channels-last copy (what
``fgcam.runner`` uses on CPU by default).  Cases run in interleaved rounds (alternating order) and the median per
case is printed, with the CPU time the process spent in the kernel during the case (page faults of freshly
``mmap``-ed activations: see ``fgcam.metrics.FORWARD_BYTES_BUDGET``) and the speed relative to the first case.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import time

import torch

from fgcam import metrics as M
from fgcam import models
from fgcam.bench import smooth_images

DEFAULT_MODELS = ("mobilenet_v1_0.75_192", "mobilenet_v2_1.0_224")
DEFAULT_BATCHES = ("128", "auto")  # the runner's old default (128, channels-last) first: the ratios' reference


def _input(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One smooth random image (:func:`fgcam.bench.smooth_images`) and a random saliency map at 1/16 of its size."""
    sal = torch.rand(1, size // 16, size // 16, generator=torch.Generator().manual_seed(seed))
    return smooth_images(1, size, seed), sal


def run(model_name: str, batch_sizes=DEFAULT_BATCHES, rounds: int = 3, out=sys.stdout) -> list[dict]:
    """Time the cases for one bundled model; returns one dict per case and prints a table."""
    return time_cases(models.load(model_name), model_name, models.card(model_name)["input"]["shape"][-1],
                      batch_sizes, rounds, out)


def time_cases(model: torch.nn.Module, model_name: str, size: int, batch_sizes=DEFAULT_BATCHES, rounds: int = 3,
               out=sys.stdout) -> list[dict]:
    """Time the cases for ``model`` on ``size`` x ``size`` inputs (:func:`run`)."""
    model = model.eval()
    x, sal = _input(size)
    auto = M.forward_batch_size(model, x.shape[1:])
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cases = [(b, fmt) for fmt in ("channels-last", "contiguous") for b in batch_sizes]
    with torch.no_grad():
        target = model(x).argmax(1)
    times = {c: [] for c in cases}
    kernel = {c: [] for c in cases}
    for k in range(rounds + 1):  # round 0 warms up, untimed
        for b, fmt in (cases if k % 2 == 0 else cases[::-1]):
            bs = auto if b == "auto" else int(b)
            m, xi = (last, x.contiguous(memory_format=torch.channels_last)) if fmt == "channels-last" else (model, x)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            M.insertion_deletion(m, xi, sal, target=target, batch_size=bs)
            dt = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            if k:
                times[(b, fmt)].append(dt)
                kernel[(b, fmt)].append(r1.ru_stime - r0.ru_stime)
    base = statistics.median(times[cases[0]])
    print(f"\n{model_name} ({size} px, torch {torch.__version__}, {torch.get_num_threads()} threads): insertion + "
          f"deletion of one image, median of {rounds} interleaved rounds; auto batch = {auto}", file=out)
    print(f"{'batch':>6s} {'format':14s} {'s/image':>8s} {'images/h':>9s} {'kernel s':>9s} {'speed-up':>9s}",
          file=out)
    res = []
    for b, fmt in cases:
        t = statistics.median(times[(b, fmt)])
        row = {"model": model_name, "batch": b, "batch_size": auto if b == "auto" else int(b), "format": fmt,
               "seconds": t, "kernel_seconds": statistics.median(kernel[(b, fmt)]), "speedup": base / t,
               "rounds": times[(b, fmt)]}
        res.append(row)
        print(f"{str(b):>6s} {fmt:14s} {t:8.2f} {3600 / t:9.0f} {row['kernel_seconds']:9.2f} {base / t:8.2f}x", file=out)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fgcam.bench_metrics", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--batch-sizes", nargs="+", default=list(DEFAULT_BATCHES),
                   help="metric batch sizes, or 'auto' (default: 128 auto; the first is the ratios' reference)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    a = p.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    for b in a.batch_sizes:
        if b != "auto" and not (b.isdigit() and int(b) >= 1):
            p.error(f"--batch-sizes: {b!r} is neither 'auto' nor a positive integer")
    res = [r for name in a.models for r in run(name, a.batch_sizes, a.rounds)]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "argv": argv or sys.argv[1:],
                       "results": res}, f, indent=1)
    return res


if __name__ == "__main__":
    main()
