"""The command line (``python -m fgcam``): explain on real image files, evaluate/summary, and one-line errors.

The offline model is replaced by the tiny seeded model of ``test_experiments`` (with a model card asking for
64 x 64 inputs), so these tests do not need the trained weights; a few run ``python -m fgcam`` in a real
subprocess to check exit codes and that no traceback reaches the user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgcam import experiments as E
from fgcam.__main__ import main

try:
    from tests.test_experiments import tiny_model
except ImportError:
    from tiny_eval import tiny_model

ROOT = Path(__file__).resolve().parents[1]
CARD = {"classes": ["a", "b", "c", "d", "e"], "input_size": [3, 64, 64], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225]}


@pytest.fixture()
def fake_offline_model(monkeypatch):
    """The offline profile's model and card -> the tiny model and a 64 x 64 card."""
    from fgcam import models, profiles

    monkeypatch.setattr(models, "load", lambda name, device=None: tiny_model().to(device or "cpu"))
    monkeypatch.setattr(models, "card", lambda name=models.SHAPES_NAME: dict(CARD))
    monkeypatch.setattr(profiles.Profile, "load_model", lambda self: tiny_model())
    monkeypatch.delenv("FGCAM_PROFILE", raising=False)
    monkeypatch.delenv("FGCAM_N", raising=False)
    torch.set_num_threads(1)


@pytest.fixture()
def offline_explain(fake_offline_model, monkeypatch):
    """``explain`` defaults to the real profile (photos): these tests explain with the (fake) offline model."""
    monkeypatch.setenv("FGCAM_PROFILE", "offline")


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    """Real files: RGB PNG, grayscale PNG, RGBA PNG, and a JPEG of odd size."""
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    paths = []
    rgb = Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "RGB")
    rgb.save(d / "rgb.png")
    paths.append(d / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (70, 70), dtype=np.uint8), "L").save(d / "gray.png")
    paths.append(d / "gray.png")
    Image.fromarray(rng.integers(0, 255, (33, 65, 4), dtype=np.uint8), "RGBA").save(d / "rgba.png")
    paths.append(d / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (61, 97, 3), dtype=np.uint8), "RGB").save(d / "odd.jpg", quality=90)
    paths.append(d / "odd.jpg")
    return paths


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("fgcam: error: ")
    return lines[0]


# ------------------------------------------------------------------------------------------------ explain


@pytest.mark.parametrize("method, layer, denoise, shape", [
    ("fg-grad-cam", "features.13", False, (16, 16)),
    ("FG-Score-CAMD", "input", False, (64, 64)),
    ("grad-cam", "Layer23", False, (8, 8)),
    ("lrp", "input", False, (64, 64)),
    ("fg-grad-cam", "input", True, (64, 64)),
])
def test_explain_writes_overlay_and_map_per_image(tmp_path, images, offline_explain, capsys, method, layer,
                                                  denoise, shape):
    out = tmp_path / "out"
    argv = ["explain", *map(str, images), "--method", method, "--layer", layer, "-o", str(out)]
    assert main(argv + (["--denoise"] if denoise else [])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(images)
    for p in images:
        png = sorted(out.glob(f"{p.stem}_*.png"))
        npy = sorted(out.glob(f"{p.stem}_*.npy"))
        assert len(png) == len(npy) == 1
        tag = ("fg-score-cam-d" if method == "FG-Score-CAMD" else method + ("-d" if denoise else "")) + "_"
        module = {"Layer23": "features.23"}.get(layer, layer)
        assert png[0].name == f"{p.stem}_{tag}{module}.png" and npy[0].name == f"{p.stem}_{tag}{module}.npy"
        with Image.open(p) as src, Image.open(png[0]) as ov:
            assert ov.mode == "RGB" and ov.size == src.size  # overlay at the original size
        m = np.load(npy[0])
        assert m.shape == shape and np.isfinite(m).all() and m.dtype == np.float32


def test_explain_target_and_matches_the_library(tmp_path, images, offline_explain, capsys):
    import fgcam
    import torchvision.transforms.functional as TF

    out = tmp_path / "out"
    assert main(["explain", str(images[0]), "--method", "fg-grad-cam", "--layer", "features.13", "--target", "3",
                 "-o", str(out), "--alpha", "0.3"]) == 0
    assert "class 3 'd'" in capsys.readouterr().out
    with Image.open(images[0]) as im:
        x = TF.normalize(TF.to_tensor(TF.resize(im.convert("RGB"), [64, 64], antialias=True)), CARD["mean"],
                         CARD["std"])
    ref = fgcam.explain(tiny_model(), x[None], "fg-grad-cam", "features.13", target=3)[0]
    got = np.load(next(out.glob("rgb_*.npy")))
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-7)


def test_same_stems_do_not_overwrite(tmp_path, images, offline_explain):
    other = tmp_path / "other"
    other.mkdir()
    (other / "rgb.png").write_bytes(images[0].read_bytes())
    out = tmp_path / "out"
    assert main(["explain", str(images[0]), str(other / "rgb.png"), "-m", "lrp", "-o", str(out), "-q"]) == 0
    assert len(list(out.glob("*.png"))) == 2 and len(list(out.glob("*.npy"))) == 2


@pytest.mark.parametrize("argv, message", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--layer", "features.99"], "unknown layer 'features.99'"),
    (["--method", "grad-cam", "--layer", "input"], "needs a hidden layer"),
    (["--method", "lrp", "--denoise"], "--denoise applies to FG-CAM methods only"),
    (["--target", "7"], "out of range"),
    (["--profile", "imagenet"], "unknown profile"),
    (["--alpha", "2"], "--alpha"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_explain_bad_options_give_one_line_and_code_2(tmp_path, images, offline_explain, capsys, argv, message):
    assert main(["explain", str(images[0]), "-o", str(tmp_path / "out"), *argv]) == 2
    captured = capsys.readouterr()
    assert message in one_error_line(captured.err) and captured.out == ""


def test_explain_bad_files_give_one_line_and_code_2(tmp_path, images, offline_explain, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("this is not a PNG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(images[3].read_bytes()[:200])
    for path, message in ((tmp_path / "missing.png", "no such file"), (bad, "cannot read image"),
                          (truncated, "cannot read image"), (tmp_path, "it is a folder")):
        assert main(["explain", str(images[0]), str(path), "-o", str(tmp_path / "out")]) == 2
        assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # every file is checked before anything is written


def test_missing_weights_give_one_line(tmp_path, images, monkeypatch, capsys):
    from fgcam import models

    def missing(name, device=None):
        raise FileNotFoundError(f"weights file {models.weights_path(name)} is missing; create it with "
                                f"`{models.TRAIN_COMMAND}`")

    monkeypatch.setattr(models, "load", missing)
    assert main(["explain", str(images[0]), "--profile", "offline", "-o", str(tmp_path / "out")]) == 2
    assert "python -m fgcam.train_shapes" in one_error_line(capsys.readouterr().err)


def test_explain_a_photo_with_the_real_model_by_default(tmp_path, capsys, monkeypatch):
    """``explain`` explains photos with the real ImageNet MobileNet unless told otherwise, names the class, and
    maps the paper's layer names by resolution."""
    from fgcam import real, zoo

    monkeypatch.delenv("FGCAM_PROFILE", raising=False)
    folder = zoo.real_models_folder()
    photo = folder / "photos" / "bird.png"
    expected = zoo.validation(folder, real.DEFAULT_MODEL)["bird.png"][0]
    label = zoo.labels(folder)[expected]
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--method", "grad-cam", "--layer", "Layer23", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"class {expected} {label!r}" in printed
    model, spec = real.load_model(real.DEFAULT_MODEL)
    module = real.paper_layer_map(model, spec["input"]["shape"])["Layer23"]
    m = np.load(out / f"bird_grad-cam_{module}.npy")
    assert m.shape == (24, 24)  # 1/8 of 192
    assert main(["explain", str(photo), "--model", "resnet9", "-o", str(out)]) == 2
    assert "unknown real model 'resnet9'" in one_error_line(capsys.readouterr().err)


def _run(args, **kw):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fgcam", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=kw.get("cwd", ROOT))


def test_real_process_errors(tmp_path):
    """In a real ``python -m fgcam`` process: exit code 2, one line on stderr, no traceback."""
    r = _run(["explain", str(tmp_path / "nope.jpg"), "--method", "fg-grad-cam", "--layer", "features.13",
              "-o", str(tmp_path / "o")])
    assert r.returncode == 2 and "no such file" in one_error_line(r.stderr) and r.stdout == ""
    r = _run(["evaluate", "--out", str(tmp_path / "s"), "--metrics", "adai", "nope", "--quiet"])
    assert r.returncode == 2 and "unknown metric 'nope'" in one_error_line(r.stderr)
    r = _run(["frobnicate"])
    assert r.returncode == 2 and "invalid choice" in one_error_line(r.stderr)


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_and_summary_commands(tmp_path, fake_offline_model, capsys):
    out = tmp_path / "store"
    argv = ["evaluate", "--profile", "offline", "--n", "3", "--n-localisation", "2", "--seed", "5",
            "--methods", "FG-Grad-CAM,Grad-CAM", "--layers", "Layer13", "--metrics", "adai", "pointing",
            "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fgcam evaluate:" in err and "img" in err  # messages and the progress bar (rank 0, not quiet)
    rows = E.read_rows(out)
    assert len(rows) == 2 * (3 + 2)
    assert {r["image_id"] for r in rows} == {f"shapes-s5-0000{i}" for i in range(3)}
    assert {r["method"] for r in rows} == {"FG-Grad-CAM", "Grad-CAM"} and {r["layer"] for r in rows} == {"Layer13"}
    assert all(r["profile"] == "offline" and r["seed"] == 5 for r in rows)
    assert set(next(r for r in rows if r["metric"] == "pointing")["values"]) == {"energy_proportion",
                                                                                 "mask_energy"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "offline" and manifest["model"] == "shapes-vgg16bn"
    # again, quiet, with the summary: nothing to compute, tables printed and written
    assert main(argv + ["--quiet", "--summary"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "### Table 1:" in captured.out and "### Table 3:" in captured.out
    assert (out / "summary.csv").exists() and (out / "comparison.csv").exists() and (out / "summary.md").exists()
    assert main(["summary", str(out), "-q"]) == 0
    assert main(["summary", str(tmp_path / "none")]) == 2
    assert "no results store" in one_error_line(capsys.readouterr().err)
    # another seed into the same store is refused
    assert main([*argv[:7], "--seed", "6", *argv[9:], "--quiet"]) == 2
    assert "seed" in one_error_line(capsys.readouterr().err)
