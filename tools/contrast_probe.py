"""Probe for issue 13: class discrimination and conservation of FG-Grad-CAM variants on 2x2 photo composites.

Each composite holds four photos of distinct ImageNet classes (``../shared/imagenet-sample-images``), each resized
as a whole to half the input size (PIL bilinear) and placed in one cell; each photo is classified correctly by
the real MobileNet V1 (``../shared/real-imagenet``) on its own (resized as a whole to the input size).  The photos
are drawn in a seeded random order and taken in turn; every group of four consecutive correct photos is one
composite.  Each composite is explained once for each of its four classes, at the input, by:

* FG-Grad-CAM as in the paper, with ``contrast="others"`` / ``"softmax"``, with the conserving rules
  ``zero_denominator="flat"`` / ``"w2"``, and combinations of both;
* LRP, CLRP and SGLRP (the paper's rules), and Grad-CAM at the CAM layer (6 x 6, upsampled by the metric).

Measured, per variant (mean and range over the composites):

* ``reached``: the share of the relevance (sum |R| at the start, positive and negative parts counted apart)
  that reaches the input (:class:`fgcam.conservation.ConservationReport`);
* ``rank corr``: the Spearman correlation of two classes' maps on the same composite, mean over the 6 pairs;
* ``cell share``: the share of the map's positive energy in the explained class's cell
  (:func:`fgcam.metrics.energy_pointing_game` with the cell as the mask; chance 0.25).

    python tools/contrast_probe.py --n 8 --seed 0 [--json out.json]

Folders: ``--photos`` (default ``$FGCAM_IMAGENET_SAMPLES`` or ``../shared/imagenet-sample-images``) and ``--models``
(default ``$FGCAM_REAL_MODELS`` or ``../shared/real-imagenet``), both relative to the checkout's parent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fgcam  # noqa: E402
from fgcam import zoo  # noqa: E402
from fgcam.metrics import energy_pointing_game, spearman  # noqa: E402

MODEL = "mobilenet_v1_0.75_192"

#: (label, method, layer, options, contrast).  "input" is the map at the input; Grad-CAM lives at the CAM layer.
VARIANTS = [
    ("FG-Grad-CAM (paper)", "fg-grad-cam", "input", {}, None),
    ("FG-Grad-CAM contrast=others", "fg-grad-cam", "input", {}, "others"),
    ("FG-Grad-CAM contrast=softmax", "fg-grad-cam", "input", {}, "softmax"),
    ("FG-Grad-CAM flat", "fg-grad-cam", "input", {"zero_denominator": "flat"}, None),
    ("FG-Grad-CAM w2", "fg-grad-cam", "input", {"zero_denominator": "w2"}, None),
    ("FG-Grad-CAM others + flat", "fg-grad-cam", "input", {"zero_denominator": "flat"}, "others"),
    ("FG-Grad-CAM softmax + flat", "fg-grad-cam", "input", {"zero_denominator": "flat"}, "softmax"),
    ("FG-Grad-CAM softmax + w2", "fg-grad-cam", "input", {"zero_denominator": "w2"}, "softmax"),
    ("LRP", "lrp", "input", {}, None),
    ("CLRP", "clrp", "input", {}, None),
    ("SGLRP", "sglrp", "input", {}, None),
    ("Grad-CAM (6x6)", "grad-cam", "features.58", {}, None),
]


def default_folder(env: str, name: str) -> Path:
    return Path(os.environ.get(env) or ROOT.parent / "shared" / name)


def load_photo(path: Path, size: tuple[int, int], spec: dict) -> torch.Tensor:
    """``[3, h, w]``: the photo resized as a whole to ``size`` (PIL bilinear), ``(pixel - mean) / std``."""
    from PIL import Image

    mean = torch.tensor(spec["input"]["pixel_mean"]).view(3, 1, 1)
    std = torch.tensor(spec["input"]["pixel_std"]).view(3, 1, 1)
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
    return (torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() - mean) / std


def pick_photos(model, spec, folder: Path, count: int, seed: int) -> list[tuple[Path, int]]:
    """``count`` photos (with their logit index), in a seeded random order, each classified correctly alone."""
    synsets = (folder / "synsets.txt").read_text().split()
    files = sorted(folder.glob("*.JPEG"))
    if not files:
        raise FileNotFoundError(f"no *.JPEG photos in {folder}")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    offset = spec["output"]["label_offset"]
    size = tuple(spec["input"]["shape"][-2:])
    picked: list[tuple[Path, int]] = []
    for start in range(0, len(order), 16):
        chunk = [files[i] for i in order[start:start + 16]]
        x = torch.stack([load_photo(f, size, spec) for f in chunk])
        with torch.no_grad():
            top1 = model(x).argmax(1).tolist()
        for f, p in zip(chunk, top1):
            label = synsets.index(f.name.split("_")[0]) + offset
            if p == label and len(picked) < count:
                picked.append((f, label))
        if len(picked) == count:
            return picked
    raise RuntimeError(f"only {len(picked)} of the photos in {folder} are classified correctly; {count} needed")


def composite(photos: list[Path], spec: dict) -> torch.Tensor:
    """``[1, 3, H, W]``: four photos at half the input size in the cells top-left, top-right, bottom-left,
    bottom-right."""
    h, w = spec["input"]["shape"][-2:]
    cells = [load_photo(p, (h // 2, w // 2), spec) for p in photos]
    return torch.cat([torch.cat(cells[:2], dim=2), torch.cat(cells[2:], dim=2)], dim=1)[None]


def cell_masks(h: int, w: int) -> torch.Tensor:
    """``[4, h, w]`` boolean masks of the four cells, in :func:`composite`'s order."""
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    for k in range(4):
        r, c = divmod(k, 2)
        masks[k, r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2] = True
    return masks


def explain_variant(model, x4, labels, variant, conservation: bool = True):
    """Maps ``[4, h, w]`` of the four classes on one composite, and the share reaching the input (None for
    Grad-CAM, or when ``conservation`` is False: then one propagation instead of the report's two)."""
    _, method, layer, options, contrast = variant
    ex = fgcam.Explainer(model, **options)
    if method.startswith("grad-cam") or not conservation:
        return ex.explain(x4, method, layer, target=labels, contrast=contrast), None
    rep = ex.report(x4, method, layer, target=labels, contrast=contrast)
    return rep.maps, rep.reached_share


def measure(model, x, labels, variant, conservation: bool = True) -> dict:
    """The three measures for one composite ``x`` ``[1, 3, H, W]`` and its four cell classes ``labels``."""
    x4 = x.repeat(4, 1, 1, 1)
    maps, reached = explain_variant(model, x4, torch.tensor(labels), variant, conservation)
    cell = energy_pointing_game(maps, cell_masks(*x.shape[-2:]))
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    rho = spearman(maps[[a for a, _ in pairs]], maps[[b for _, b in pairs]])
    return {"cell_share": float(cell.mean()), "rank_corr": float(rho.mean()),
            "reached": None if reached is None else float(reached.mean())}


def run(n: int = 8, seed: int = 0, photos: Path | None = None, models: Path | None = None,
        variants=VARIANTS, log=print, conservation: bool = True) -> dict:
    """Measure every variant on ``n`` composites; returns ``{"composites": [...], "variants": {label: rows}}``."""
    photos = photos or default_folder("FGCAM_IMAGENET_SAMPLES", "imagenet-sample-images")
    models = models or default_folder("FGCAM_REAL_MODELS", "real-imagenet")
    model, spec = zoo.load_spec(models, MODEL)
    picked = pick_photos(model, spec, photos, 4 * n, seed)
    names = zoo.labels(models)
    out = {"model": MODEL, "seed": seed, "composites": [], "variants": {v[0]: [] for v in variants}}
    for i in range(n):
        group = picked[4 * i:4 * i + 4]
        x = composite([p for p, _ in group], spec)
        labels = [lab for _, lab in group]
        with torch.no_grad():
            logits = model(x)[0]
        ranks = [int((logits > logits[lab]).sum()) + 1 for lab in labels]
        out["composites"].append({"photos": [p.name for p, _ in group], "classes": [names[lab] for lab in labels],
                                  "rank_in_composite": ranks})
        for v in variants:
            t = time.perf_counter()
            out["variants"][v[0]].append(measure(model, x, labels, v, conservation))
            log(f"composite {i} {v[0]}: {out['variants'][v[0]][-1]} ({time.perf_counter() - t:.1f} s)")
    return out


def summary(result: dict) -> str:
    """Markdown table: mean [min, max] over the composites of each measure."""
    def cell(rows, key):
        vals = [r[key] for r in rows if r[key] is not None]
        return f"{np.mean(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]" if vals else "n/a"

    lines = [f"{len(result['composites'])} composites of {result['model']} (seed {result['seed']}); "
             "mean [min, max] over composites",
             "", "| variant | reached input | rank corr (2 classes) | cell share |", "|---|---|---|---|"]
    for label, rows in result["variants"].items():
        lines.append(f"| {label} | {cell(rows, 'reached')} | {cell(rows, 'rank_corr')} | {cell(rows, 'cell_share')} |")
    ranks = [r for c in result["composites"] for r in c["rank_in_composite"]]
    lines += ["", f"rank of the cell classes among the composite's logits: median {int(np.median(ranks))}, "
                  f"{sum(r <= 5 for r in ranks)} of {len(ranks)} in the top 5"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="number of composites")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=Path)
    ap.add_argument("--models", type=Path)
    ap.add_argument("--json", type=Path, help="write the per-composite numbers here")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    result = run(args.n, args.seed, args.photos, args.models, log=lambda s: print(s, file=sys.stderr))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(summary(result))
    print(f"\n({time.perf_counter() - t:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
