"""Train the Shapes VGG16-BN-layout model and write its weights and card.

    python -m fgcam.train_shapes [--epochs 10] [--steps 200] [--out fgcam/weights]

Deterministic and single-process on the CPU: ``torch.manual_seed``, fixed data
seeds and a fixed thread count (the CPU kernels used -- oneDNN convolutions,
BatchNorm, AdamW -- are deterministic for a given thread count and machine).
``--strict`` also sets ``torch.use_deterministic_algorithms(True)``; it is off by
default because on the CPU it swaps oneDNN convolution backward for a reference
kernel about 7x slower, which would not fit the 20-minute budget.  Every
epoch draws fresh images on the fly from seed ``1000 + epoch`` (the data set is
procedural, so there is no over-fitting to a fixed training set and no need for
augmentation), validation uses seed 999, and the final accuracy is measured on
the held-out test set ``make_shapes(2000, 12345)`` -- a seed never used in
training.  Writes ``<out>/shapes-vgg16bn.safetensors`` and the JSON card
``<out>/shapes-vgg16bn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from fgcam import data
from fgcam.models import SHAPES_DROPOUT, SHAPES_HIDDEN, SHAPES_NAME, SHAPES_POOL, SHAPES_WIDTHS, WEIGHTS_DIR, build_shapes_vgg16bn

TRAIN_SEED_BASE = 1000
VAL_SEED = 999
MODEL_SEED = 0
BLOCK = 16  # batches drawn per call of make_shapes


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 200) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on a tensor set."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = images[i : i + batch].contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1) == labels[i : i + batch]).sum().item()
    return correct / len(images)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=200, help="steps (batches) per epoch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", type=str, default=",".join(map(str, SHAPES_WIDTHS)),
                   help="13 comma-separated conv widths")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--strict", action="store_true", help="torch.use_deterministic_algorithms(True) (slow)")
    args = p.parse_args(argv)

    start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(MODEL_SEED)
    torch.use_deterministic_algorithms(args.strict)
    widths = [int(w) for w in args.widths.split(",")]
    model = build_shapes_vgg16bn(num_classes=len(data.CLASSES), widths=widths)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.epochs * args.steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.1)
    val = data.make_shapes(512, VAL_SEED, raw=False)
    print(f"training {SHAPES_NAME}: widths={widths} params={sum(p.numel() for p in model.parameters())}"
          f" epochs={args.epochs} steps={args.steps} batch={args.batch}", flush=True)

    for epoch in range(args.epochs):
        model.train()
        seed, loss_sum, correct = TRAIN_SEED_BASE + epoch, 0.0, 0
        for step in range(args.steps):
            if step % BLOCK == 0:  # draw the next BLOCK batches at once (cheaper per image)
                n = min(BLOCK, args.steps - step) * args.batch
                block = data.make_shapes(n, seed, raw=False, offset=step * args.batch)
            i = (step % BLOCK) * args.batch
            x = block["images"][i : i + args.batch].contiguous(memory_format=torch.channels_last)
            y = block["labels"][i : i + args.batch]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
            if (step + 1) % 50 == 0:
                print(f"  epoch {epoch + 1} step {step + 1}/{args.steps} loss={loss_sum / (step + 1):.4f} "
                      f"elapsed={time.time() - start:.0f}s", flush=True)
        acc = evaluate(model, val["images"], val["labels"])
        print(f"epoch {epoch + 1}/{args.epochs} seed={seed} loss={loss_sum / args.steps:.4f} "
              f"train_acc={correct / (args.steps * args.batch):.4f} val_acc={acc:.4f} "
              f"lr={sched.get_last_lr()[0]:.2e} elapsed={time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start

    test = data.make_shapes(2000, data.TEST_SEED, raw=False)
    test_acc = evaluate(model, test["images"], test["labels"])
    print(f"test accuracy (2000 images, seed {data.TEST_SEED}): {test_acc:.4f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    weights = args.out / f"{SHAPES_NAME}.safetensors"
    save_file(state, str(weights), metadata={"name": SHAPES_NAME})
    info = {
        "name": SHAPES_NAME,
        "architecture": "torchvision vgg16_bn layout (features 0-43, avgpool, flatten, classifier), narrow",
        "widths": widths,
        "hidden": SHAPES_HIDDEN,
        "dropout": SHAPES_DROPOUT,
        "pool": list(SHAPES_POOL),
        "classes": list(data.CLASSES),
        "num_classes": len(data.CLASSES),
        "input_size": [3, data.IMAGE_SIZE, data.IMAGE_SIZE],
        "mean": list(data.MEAN),
        "std": list(data.STD),
        "dataset": "fgcam.data.make_shapes (procedural, single object)",
        "model_seed": MODEL_SEED,
        "train_seeds": f"{TRAIN_SEED_BASE} + epoch, epochs 0..{args.epochs - 1}",
        "train_images": total * args.batch,
        "val_seed": VAL_SEED,
        "val_accuracy": acc,
        "test_seed": data.TEST_SEED,
        "test_images": len(test["labels"]),
        "test_accuracy": test_acc,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps,
        "batch": args.batch,
        "optimizer": f"AdamW lr={args.lr} wd=1e-4, OneCycle",
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python -m fgcam.train_shapes", *(sys.argv[1:] if argv is None else argv)]),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # >2 means a shared, slower CPU
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "weights_file": weights.name,
        "weights_bytes": weights.stat().st_size,
    }
    card_path = args.out / f"{SHAPES_NAME}.json"
    card_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {weights} ({info['weights_bytes']} bytes) and {card_path}; "
          f"total {info['total_seconds']:.0f}s", flush=True)
    return info


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") is None:
        # Idle OpenMP threads must sleep, not spin: on a 2-core machine shared with
        # other processes, spinning threads make training 5-20x slower.  The
        # variable is read when torch loads, hence the re-exec.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "fgcam.train_shapes", *sys.argv[1:]])
    main()
