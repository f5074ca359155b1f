"""fgcam's command line.

    python -m fgcam evaluate --profile offline --out results/offline [--methods ...] [--layers ...]
                             [--metrics adai insdel pointing] [--n N] [--seed S] [--summary] [--quiet]
    python -m fgcam summary results/offline
    python -m fgcam explain IMAGE... --method fg-grad-cam --layer features.13 [--target N] [--denoise]
                            [--profile offline] -o OUTDIR

``evaluate`` is resumable (kill it, run the same command again: it continues) and runs sharded under
``torchrun --nproc_per_node=K -m fgcam evaluate ...`` (there, write ``--num-images`` for ``--n``: torchrun's own
parser reads ``--n`` as an abbreviation of its options). See :mod:`fgcam.experiments` for the store format.
Errors in what the user gave (options, names, paths, missing weights or data) print one line on stderr and
exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fgcam.experiments import METRICS, PAPER_LAYERS, UsageError

_EXAMPLES = """examples:
  python -m fgcam evaluate --profile offline --n 20 --out results/try --summary
  python -m fgcam evaluate --methods FG-Grad-CAM Grad-CAM --layers Layer13 --metrics adai --out results/try
  torchrun --standalone --nproc_per_node=2 -m fgcam evaluate --num-images 20 --out results/try --quiet
  python -m fgcam summary results/try
  python -m fgcam explain cat.jpg dog.png --method fg-grad-cam --layer features.13 -o maps/
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises :class:`UsageError` (printed as one line by :func:`main`)."""

    def error(self, message):
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise UsageError(f"{sub}: {message}" if sub else message)


def _split(values) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None stays None."""
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fgcam", description="FG-CAM (Fine-Grained CAM, AAAI 2024): explain images and reproduce the "
                                          "paper's experiments.", epilog=_EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{evaluate,summary,explain}")
    sub.required = True

    e = sub.add_parser("evaluate", help="evaluate methods x layers x metrics into a resumable results store",
                       description="Evaluate every (image, method, layer, metric) and append one row each to the "
                                   "results store in --out. Killed runs continue where they stopped when started "
                                   "again; under torchrun the images are sharded across processes.")
    e.add_argument("--profile", default=None, help="offline (shapes model, default), real (real ImageNet MobileNet "
                   "on ImageNet photos) or paper (VGG16-BN, ILSVRC2012 val; see fgcam.profiles); default "
                   "$FGCAM_PROFILE or offline")
    e.add_argument("--model", default=None, help="real profile: mobilenet_v1_0.75_192 (default) or "
                   "mobilenet_v2_1.0_224")
    e.add_argument("--images", type=Path, default=None, help="real profile: folder of <synset>_<name>.JPEG photos "
                   "(default $FGCAM_IMAGENET_SAMPLES)")
    e.add_argument("--methods", nargs="+", default=None,
                   help="methods (paper names such as Grad-CAM, FG-Grad-CAMD, LRP, or fgcam names such as "
                        "fg-score-cam); default: the paper's methods for each layer")
    e.add_argument("--layers", nargs="+", default=None,
                   help=f"layers: {', '.join(PAPER_LAYERS)} or module names (features.13, input); default: all four")
    e.add_argument("--metrics", nargs="+", default=list(METRICS), help=f"any of {', '.join(METRICS)} (default all)")
    e.add_argument("--n", "--num-images", dest="n", type=int, default=None,
                   help="number of images (default: the profile's: offline 200 faithfulness / 100 localisation, "
                        "paper 2000 / 500); under torchrun write --num-images (torchrun takes --n for its own "
                        "--nnodes/--nproc-per-node)")
    e.add_argument("--n-localisation", type=int, default=None, help="images for the pointing game (default --n)")
    e.add_argument("--seed", type=int, default=0, help="image sampling seed (default 0)")
    e.add_argument("--out", "-o", type=Path, required=True, help="results store folder")
    e.add_argument("--batch-size", type=int, default=16, help="images per explain call (default 16)")
    e.add_argument("--metric-batch-size", type=int, default=None,
                   help="perturbed images per forward pass in the metrics (default on the CPU: as many as keep "
                        "the largest activation of a pass within 16 MiB, fgcam.metrics.forward_batch_size; "
                        "elsewhere 128)")
    e.add_argument("--score-batch-size", type=int, default=None,
                   help="masked images per forward pass in Score-CAM (default: as --metric-batch-size)")
    e.add_argument("--target", choices=("predicted", "label"), default="predicted",
                   help="class explained: the model's prediction (default, as the paper) or the true label")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    e.add_argument("--max-units", type=int, default=None, help=argparse.SUPPRESS)
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages (CI)")
    e.add_argument("--summary", action="store_true",
                   help="afterwards, write summary.csv, comparison.csv and summary.md and print the tables "
                        "(also with --quiet)")
    e.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("summary", help="write and print the paper's tables from a results store",
                       description="Mean per (table, layer, metric, method) of a results store, beside the paper's "
                                   "published values: writes summary.csv, comparison.csv, summary.md in DIR.")
    s.add_argument("out", type=Path, metavar="DIR", help="results store folder")
    s.add_argument("--quiet", "-q", action="store_true", help="write the files, print nothing")
    s.set_defaults(func=_cmd_summary)

    x = sub.add_parser("explain", help="explain image files: overlay PNG and raw map (.npy) per image",
                       description="Explain JPEG/PNG images (any mode and size; converted to RGB and preprocessed "
                                   "as the profile's model expects). Writes <stem>_<method>_<layer>.png (overlay "
                                   "on the image) and .npy (the signed map at the layer's resolution).")
    x.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    x.add_argument("--method", "-m", default="fg-grad-cam",
                   help="fgcam method or paper name (default fg-grad-cam; FG-Grad-CAMD = denoised)")
    x.add_argument("--layer", "-l", default="input", help="module name, paper layer name, or input (default input)")
    x.add_argument("--target", "-t", type=int, default=None, help="class index (default: the predicted class)")
    x.add_argument("--denoise", action="store_true", help="FG-CAM denoising (the paper's FG-...-CAMD)")
    x.add_argument("--profile", default=None, help="real (real ImageNet MobileNet, the default for photos), offline "
                   "(shapes model) or paper (ImageNet VGG16-BN); default $FGCAM_PROFILE or real")
    x.add_argument("--model", default=None, help="real profile: mobilenet_v1_0.75_192 (default) or "
                   "mobilenet_v2_1.0_224")
    x.add_argument("--out", "-o", type=Path, required=True, metavar="OUTDIR", help="output folder")
    x.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    x.add_argument("--cmap", default="jet", help="colour map (default jet; others need matplotlib)")
    x.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    x.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    x.set_defaults(func=_cmd_explain)
    return p


# --------------------------------------------------------------------------------------------------------------
# evaluate / summary
# --------------------------------------------------------------------------------------------------------------


def _cmd_evaluate(args) -> int:
    import torch

    from fgcam import experiments

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = _split(args.methods)
    if methods is not None and [m.lower() for m in methods] == ["paper"]:
        methods = None
    config = experiments.EvalConfig(
        out=args.out, profile=(args.profile or os.environ.get("FGCAM_PROFILE") or "offline").strip().lower(),
        methods=methods, layers=_split(args.layers), metrics=_split(args.metrics), n=args.n,
        n_localisation=args.n_localisation, seed=args.seed, batch_size=args.batch_size,
        metric_batch_size=args.metric_batch_size, score_batch_size=args.score_batch_size, target=args.target,
        device=args.device, quiet=args.quiet, max_units=args.max_units, model=args.model, images=args.images)
    experiments.evaluate(config)
    if args.summary and int(os.environ.get("RANK", "0") or 0) == 0:
        _print_summary(args.out, print_tables=True, quiet=args.quiet)  # asked for: printed even when quiet
    return 0


def _print_summary(out: Path, print_tables: bool, quiet: bool) -> None:
    from fgcam import experiments

    result = experiments.summarize(out)
    if print_tables:
        print(result["markdown"])
    if not quiet:
        print("wrote " + ", ".join(str(p) for p in result["files"]), file=sys.stderr)


def _cmd_summary(args) -> int:
    if not args.out.is_dir():
        raise UsageError(f"no results store at {args.out}: no such folder")
    _print_summary(args.out, print_tables=not args.quiet, quiet=args.quiet)
    return 0


# --------------------------------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------------------------------


def _open_image(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise UsageError(f"cannot read image {path}: no such file")
    if path.is_dir():
        raise UsageError(f"cannot read image {path}: it is a folder")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
                import numpy as np

                a = np.asarray(im, dtype=np.float64)
                hi = a.max() if a.max() > 0 else 1.0
                im = Image.fromarray(np.round(a / hi * 255).astype(np.uint8), mode="L")
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise UsageError(f"cannot read image {path}: not an image file PIL can decode") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise UsageError(f"cannot read image {path}: {_one_line(err)}") from None


def _explain_model(profile: str, device: str, model_name: str | None = None):
    """(model, preprocess(PIL) -> [3, H, W], class names, paper layer map or None) of a profile."""
    import torchvision.transforms.functional as TF

    if profile == "real":
        import numpy as np

        from fgcam import real

        try:
            model, spec = real.load_model(model_name)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(_one_line(err)) from None
        size = real.input_size(spec)
        labels = real.class_labels(spec)

        def preprocess(im):
            from PIL import Image

            return real._normalise(np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)), spec)

        return model.to(device), preprocess, labels, real.paper_layer_map(model, spec["input"]["shape"])
    if profile == "offline":
        from fgcam import data, models

        try:
            model = models.load(models.SHAPES_NAME, device=device)
            card = models.card(models.SHAPES_NAME)
        except FileNotFoundError as err:
            raise UsageError(_one_line(err)) from None
        size = tuple(card.get("input_size", (3, data.IMAGE_SIZE, data.IMAGE_SIZE))[1:])
        mean, std = tuple(card.get("mean", data.MEAN)), tuple(card.get("std", data.STD))
        classes = list(card.get("classes", data.CLASSES))

        def preprocess(im):
            x = TF.resize(im, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            return TF.normalize(TF.to_tensor(x), mean, std)

        return model, preprocess, classes, None
    if profile == "paper":
        import torchvision

        from fgcam import imagenet

        try:
            model = imagenet.load_vgg16_bn(device)
        except imagenet.MissingResourceError as err:
            raise UsageError(_one_line(err)) from None
        classes = list(torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.meta["categories"])
        return model, imagenet.preprocess, classes, None
    raise UsageError(f"unknown profile {profile!r}; valid profiles: real, offline, paper")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def _cmd_explain(args) -> int:
    import numpy as np
    import torch

    import fgcam
    from fgcam import experiments, plotting
    from fgcam.explain import METHODS
    from fgcam.graph import leaf_names

    display, method, denoise = experiments.resolve_method(args.method)
    if args.denoise and not denoise:
        denoise = True
        display = experiments.PAPER_METHOD_NAMES.get((method, True), f"{method}-d")
    if denoise and METHODS[method].family != "fg":
        raise UsageError(f"--denoise applies to FG-CAM methods only (fg-grad-cam, fg-score-cam, ...), not {method}")
    layer_name, module = experiments.resolve_layer(args.layer)  # checked again against the model's map below
    if module == "input" and METHODS[method].family == "cam":
        raise UsageError(f"{method} is a plain CAM method and needs a hidden layer (e.g. features.13); "
                         f"use fg-{method} for an input-resolution map")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.cmap != "jet":
        try:
            plotting.colorize(np.zeros((1, 1)), args.cmap)
        except ValueError as err:
            raise UsageError(str(err)) from None
    images = [_open_image(p) for p in args.images]  # every file is checked before any work

    profile = (args.profile or os.environ.get("FGCAM_PROFILE") or "real").strip().lower()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model is not None and profile != "real":
        raise UsageError(f"--model applies to the real profile only, not {profile!r}")
    model, preprocess, classes, layer_map = _explain_model(profile, device, args.model)
    layer_name, module = experiments.resolve_layer(args.layer, layer_map)
    if module != "input" and module not in {name for name, _ in model.named_modules() if name}:
        raise UsageError(f"unknown layer {args.layer!r} for the {profile} model; valid layers: input, "
                         f"{', '.join(n for n in leaf_names(model) if n.startswith('features.'))}, ...")
    if args.target is not None and not 0 <= args.target < len(classes):
        raise UsageError(f"--target {args.target} out of range: the {profile} model has {len(classes)} classes "
                         f"(0..{len(classes) - 1})")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output folder {args.out}: {_one_line(err)}") from None

    stems = [p.stem for p in args.images]
    clash = {s for s in stems if stems.count(s) > 1}
    tag = f"{_safe(method)}{'-d' if denoise else ''}_{_safe(module)}"
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        x = torch.stack([preprocess(im) for im in chunk]).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=1)
        target = probs.argmax(1) if args.target is None else torch.full((len(chunk),), args.target, device=device)
        try:
            maps = fgcam.explain(model, x, method, module, target=target, denoise=denoise)
        except (ValueError, TypeError) as err:
            raise UsageError(_one_line(err)) from None
        for i, im in enumerate(chunk):
            k = start + i
            stem = _safe(stems[k]) if stems[k] not in clash else f"{k:03d}_{_safe(stems[k])}"
            png, npy = args.out / f"{stem}_{tag}.png", args.out / f"{stem}_{tag}.npy"
            try:
                np.save(npy, maps[i].detach().cpu().numpy())
                plotting.save_overlay(png, im, maps[i], alpha=args.alpha, cmap=args.cmap)
            except OSError as err:
                raise UsageError(f"cannot write {png}: {_one_line(err)}") from None
            t = int(target[i])
            if not args.quiet:
                print(f"{args.images[k]} -> {png} ({display} at {layer_name}, "
                      f"class {t} {classes[t]!r}, p={float(probs[i, t]):.3f}, "
                      f"map {tuple(maps[i].shape)})")
    return 0


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------


def _one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 usage or resource error, 130 interrupted)."""
    if argv is None and os.environ.get("OMP_WAIT_POLICY") is None and os.environ.get("FGCAM_NO_REEXEC") is None:
        # Idle OpenMP threads must sleep, not spin (a 2-core machine shared with other processes runs several
        # times slower otherwise). The variable is read when torch loads, hence the re-exec (same PID).
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "fgcam", *sys.argv[1:]])
    from fgcam.imagenet import ImageNetFormatError, MissingResourceError

    quiet_rank = int(os.environ.get("RANK", "0") or 0) != 0
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except (UsageError, MissingResourceError, ImageNetFormatError, FileNotFoundError) as err:
        if not quiet_rank:
            print(f"fgcam: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgcam: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
