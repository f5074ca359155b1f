"""The ``real`` profile: photo folders (checks, class indices, odd files), the paper's layers by resolution,
grid composites, and the profile end to end (with resume after SIGKILL).

The photo folders here are made by the tests (synthetic images, or copies of the 13 bundled photos renamed to the
synset of the class the model predicts for them), so nothing depends on the ImageNet sample photos."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from fgcam import experiments as E
from fgcam import metrics as M
from fgcam import real, zoo

ROOT = Path(__file__).resolve().parents[1]
SYNSETS = real.read_synsets()


def _jpeg(path: Path, mode: str = "RGB", seed: int = 0, size=(40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    img.save(path, "JPEG")
    return path


# --- photo folders -------------------------------------------------------------------------------------------

def test_synsets_shipped_in_imagenet_order():
    assert len(SYNSETS) == 1000 and SYNSETS == sorted(SYNSETS)  # ILSVRC-2012 class order is the sorted WNIDs
    assert SYNSETS[0] == "n01440764" and SYNSETS[999] == "n15075141"


def test_scan_reads_grayscale_cmyk_and_apostrophes_with_class_indices(tmp_path):
    _jpeg(tmp_path / f"{SYNSETS[2]}_great_white_shark.JPEG", seed=1)
    _jpeg(tmp_path / f"{SYNSETS[500]}_gray.JPEG", mode="L", seed=2)
    _jpeg(tmp_path / f"{SYNSETS[10]}_carpenter's_kit.JPEG", mode="CMYK", seed=3)
    (tmp_path / "README.md").write_text("not a photo, ignored")
    photos = real.scan_photos(tmp_path)
    assert [p.class_index for p in photos] == [2, 10, 500]  # sorted by class, index = line of synsets.txt
    assert [p.synset for p in photos] == [SYNSETS[2], SYNSETS[10], SYNSETS[500]]
    assert photos[1].name == "carpenter's kit"
    spec = {"input": {"shape": [1, 3, 16, 16], "pixel_mean": [128.0] * 3, "pixel_std": [128.0] * 3}}
    x = real.load_photos(photos, spec)
    assert x.shape == (3, 3, 16, 16)
    gray = x[2]
    torch.testing.assert_close(gray[0], gray[1])  # grayscale -> three equal channels
    torch.testing.assert_close(gray[0], gray[2])
    assert x.min() >= -1.0 and x.max() <= 127 / 128
    assert [p.class_index for p in real.scan_photos(tmp_path, classes=[10, 2])] == [2, 10]


def test_scan_uses_the_folders_synsets_file_when_present(tmp_path):
    order = list(reversed(SYNSETS))
    (tmp_path / "synsets.txt").write_text("\n".join(order) + "\n")
    _jpeg(tmp_path / f"{SYNSETS[0]}_tench.JPEG")
    assert real.scan_photos(tmp_path)[0].class_index == 999


def test_scan_lists_every_bad_file_in_one_error(tmp_path):
    _jpeg(tmp_path / f"{SYNSETS[0]}_tench.JPEG")
    good = (tmp_path / f"{SYNSETS[0]}_tench.JPEG").read_bytes()
    (tmp_path / f"{SYNSETS[1]}_goldfish.JPEG").write_bytes(good[: len(good) // 3])  # truncated: corrupt
    (tmp_path / f"{SYNSETS[2]}_shark.JPEG").write_bytes(b"")  # empty
    (tmp_path / f"{SYNSETS[3]}_notes.JPEG").write_text("plain text, not an image")  # not an image
    (tmp_path / "holiday.jpg").write_bytes(good)  # foreign name
    (tmp_path / "n99999999_unicorn.JPEG").write_bytes(good)  # unknown synset
    with pytest.raises(real.BadPhotosError) as info:
        real.scan_photos(tmp_path)
    problems = {p.name: why for p, why in info.value.problems}
    assert problems == {
        f"{SYNSETS[1]}_goldfish.JPEG": problems[f"{SYNSETS[1]}_goldfish.JPEG"],
        f"{SYNSETS[2]}_shark.JPEG": "empty file",
        f"{SYNSETS[3]}_notes.JPEG": "not an image PIL can decode",
        "holiday.jpg": "not a photo named <synset>_<name>.JPEG",
        "n99999999_unicorn.JPEG": "unknown synset n99999999 (not one of the 1000 ImageNet-1k classes)",
    }
    assert problems[f"{SYNSETS[1]}_goldfish.JPEG"].startswith("corrupt image")
    message = str(info.value)
    assert message.startswith(f"5 bad file(s) in {tmp_path}") and all(name in message for name in problems)


def test_samples_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(real.SAMPLES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=real.SAMPLES_ENV):
        real.samples_folder()
    monkeypatch.setenv(real.SAMPLES_ENV, str(tmp_path))
    assert real.samples_folder() == tmp_path


# --- the paper's layers by resolution ------------------------------------------------------------------------

def test_layer_map_of_vgg16_bn_is_the_papers():
    m = torchvision.models.vgg16_bn(weights=None).eval()
    assert real.paper_layer_map(m, (1, 3, 224, 224)) == {
        "Layer33": "features.33", "Layer23": "features.23", "Layer13": "features.13", "Input": "input",
        "cam": "features.43"}


@pytest.fixture(scope="module")
def mobilenets():
    return {name: real.load_model(name) for name in zoo.REAL_MODELS}


def _resolution(model, module, shape):
    out = {}
    h = dict(model.named_modules())[module].register_forward_hook(lambda m, i, o: out.update(s=o.shape))
    with torch.no_grad():
        model(torch.zeros(shape))
    h.remove()
    return tuple(out["s"][-2:])


@pytest.mark.parametrize("name", zoo.REAL_MODELS)
def test_layer_map_of_the_mobilenets_by_resolution(mobilenets, name):
    model, spec = mobilenets[name]
    shape = spec["input"]["shape"]
    layers = real.paper_layer_map(model, shape)
    size = shape[-1]
    for layer, r in real.PAPER_RESOLUTIONS.items():
        module = layers[layer]
        assert _resolution(model, module, shape) == (size // r, size // r)
        mod = dict(model.named_modules())[module]
        assert isinstance(mod, (torch.nn.ReLU6, torch.nn.ReLU)), (layer, module, mod)  # an activation, not a conv
        # the first activation at that resolution: no earlier module has that size
        idx = int(module.split(".")[1])
        earlier = [f"features.{i}" for i in range(idx - 1)]
        assert all(_resolution(model, e, shape) != (size // r, size // r) for e in earlier[-3:])
    assert layers["cam"] == fgcam_default(model)
    assert _resolution(model, layers["cam"], shape) == (size // 32, size // 32)


def fgcam_default(model):
    import fgcam

    return fgcam.default_cam_layer(model)


# --- grid composites -----------------------------------------------------------------------------------------

def _fake_photos(n):
    return [real.Photo(Path(f"/x/{SYNSETS[i]}_c{i}.JPEG"), SYNSETS[i], i, f"c{i}") for i in range(n)]


def test_composite_plan_is_deterministic_distinct_and_prefix_stable():
    photos = _fake_photos(12)
    a = real.composite_plan(photos, 30, seed=5)
    assert a == real.composite_plan(photos, 30, seed=5)
    assert a[:10] == real.composite_plan(photos, 10, seed=5)  # a longer run extends the plan
    assert a != real.composite_plan(photos, 30, seed=6)
    for cells in a:
        assert len({p.class_index for p in cells}) == 4
    with pytest.raises(ValueError, match="4 distinct classes"):
        real.composite_plan(photos[:3], 1, seed=0)


def test_cell_geometry_and_ground_truth(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    photos = []
    for i, c in enumerate(colours):
        path = tmp_path / f"{SYNSETS[i]}_c{i}.png"
        Image.new("RGB", (37, 23), c).save(path)
        photos.append(real.Photo(path, SYNSETS[i], i, f"c{i}"))
    spec = {"input": {"shape": [1, 3, 10, 14], "pixel_mean": [0.0] * 3, "pixel_std": [1.0] * 3}}
    x = real.make_composites([photos], spec)
    assert x.shape == (1, 3, 10, 14)
    boxes = real.cell_boxes((10, 14))
    assert boxes.tolist() == [[0, 0, 7, 5], [7, 0, 14, 5], [0, 5, 7, 10], [7, 5, 14, 10]]
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), colours):
        cell = x[0, :, y1:y2, x1:x2]
        assert torch.equal(cell, torch.tensor(c, dtype=torch.float32).view(3, 1, 1).expand_as(cell))
    # a map that is positive exactly on cell 1 scores 1 there and 0 elsewhere, for both scores
    sal = torch.zeros(4, 10, 14)
    sal[:, 0:5, 7:14] = 1.0
    for score in (M.energy_pointing_game(sal, boxes, size=(10, 14)), M.positive_energy_share(sal, boxes)):
        assert score.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_positive_energy_share_is_not_min_max_normalised():
    sal = torch.tensor([[[3.0, 1.0], [2.0, 1.5]]])  # all positive: min-max normalising changes the shares
    box = torch.tensor([[0, 0, 1, 1]])  # the top-left pixel
    assert float(M.positive_energy_share(sal, box)) == pytest.approx(3 / 7.5)
    # the paper's energy score min-max normalises first: [1, 0, 0.5, 0.25]
    assert float(M.energy_pointing_game(sal, box)) == pytest.approx(1 / 1.75)
    signed = torch.tensor([[[3.0, 1.0], [-5.0, 0.0]]])  # with a non-positive value both are the positive share
    assert float(M.positive_energy_share(signed, box)) == float(M.energy_pointing_game(signed, box)) == 0.75


# --- the profile end to end ----------------------------------------------------------------------------------

def _bundled_photo_folder(tmp_path: Path, model_name: str) -> Path:
    """The bundled photos renamed ``<synset of the predicted class>_<stem>.png``: classified correctly by
    construction, five of distinct classes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    src = zoo.real_models_folder()
    top1 = {photo: top5[0] for photo, top5 in zoo.validation(src, model_name).items()}
    used = set()
    for photo in sorted(top1):
        cls = top1[photo] - 1
        if cls < 0 or cls in used or photo == "pets.png":
            continue
        used.add(cls)
        shutil.copy(src / "photos" / photo, folder / f"{SYNSETS[cls]}_{Path(photo).stem}.png")
        if len(used) == 5:
            break
    return folder


def test_screening_keeps_the_correctly_classified_photos_at_any_batch_size(tmp_path, mobilenets):
    """The grid's candidates: the bundled photos named by their predicted class are kept, the same photos renamed to
    another class are not; the default batch (sized from the model) keeps what batches of 1 and 64 keep."""
    model, spec = mobilenets[real.DEFAULT_MODEL]
    folder = _bundled_photo_folder(tmp_path, real.DEFAULT_MODEL)
    right = sorted(folder.iterdir())
    for k, path in enumerate(right[:2]):
        wrong_synset = SYNSETS[(SYNSETS.index(path.name.split("_")[0]) + 500) % 1000]
        shutil.copy(path, folder / f"{wrong_synset}_wrong{k}.png")
    photos = real.scan_photos(folder, check=False)
    kept = real.correctly_classified(model, photos, spec)
    assert sorted(p.path.name for p in kept) == sorted(p.name for p in right)
    assert kept == real.correctly_classified(model, photos, spec, batch_size=1) \
        == real.correctly_classified(model, photos, spec, batch_size=64)
    assert real.correctly_classified(model, [], spec) == []
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        real.correctly_classified(model, photos, spec, batch_size=0)


def test_real_profile_end_to_end(tmp_path):
    folder = _bundled_photo_folder(tmp_path, real.DEFAULT_MODEL)
    config = E.EvalConfig(out=tmp_path / "store", profile="real", images=folder, n=2, n_localisation=1,
                          methods=["Grad-CAM", "FG-Grad-CAM"], layers=["Layer13", "Input"], batch_size=3,
                          quiet=True)
    E.evaluate(config)
    rows = E.read_rows(config.out)
    manifest = json.loads((config.out / "manifest.json").read_text())
    model, spec = real.load_model(real.DEFAULT_MODEL)
    assert manifest["layer_map"] == real.paper_layer_map(model, spec["input"]["shape"])
    photo_rows = [r for r in rows if not r["image_id"].startswith("grid-")]
    grid_rows = [r for r in rows if r["image_id"].startswith("grid-")]
    # 2 photos x (Grad-CAM@13, FG-Grad-CAM@13, FG-Grad-CAM@input) x (adai, insdel); 4 cells x 3 settings x pointing
    assert len(photo_rows) == 2 * 3 * 2 and len(grid_rows) == 4 * 3
    assert {r["module"] for r in rows if r["layer"] == "Layer13"} == {manifest["layer_map"]["Layer13"]}
    for r in photo_rows:
        assert r["target"] == r["prediction"]  # the paper explains the predicted class
        # the label is the model's logit of the photo's class: class index (synsets.txt line) + the background logit
        assert r["label"] == SYNSETS.index(r["image_id"].split("_")[0]) + 1
        assert r["prediction"] == r["label"]  # the folder's photos are classified correctly by construction
    source = real.GridSource(model, real.scan_photos(folder), spec, 1, 0)
    for r in grid_rows:
        cell = int(r["image_id"][-1])
        assert r["target"] == r["label"] == source.plan[0][cell].class_index + 1
        assert set(r["values"]) == {"energy_proportion", "positive_share"}
    # the stored grid score is the metric recomputed on the composite for that cell
    r = next(x for x in grid_rows if x["method"] == "FG-Grad-CAM" and x["layer"] == "Input" and x["image_id"].endswith("c2"))
    import fgcam

    batch = source.load([2])
    sal = fgcam.explain(model, batch["images"], "fg-grad-cam", "input", target=batch["targets"])
    assert r["values"]["positive_share"] == pytest.approx(float(M.positive_energy_share(sal, batch["boxes"])), rel=1e-5)


def test_real_profile_resumes_after_sigkill(tmp_path):
    """Kill a real-profile run with SIGKILL once its first unit is stored, run it again: every row once.  (Average
    Drop and the pointing game only: insertion/deletion's 170 passes per photo add time, not coverage, here.)"""
    folder = _bundled_photo_folder(tmp_path, real.DEFAULT_MODEL)
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "fgcam", "evaluate", "--profile", "real", "--images", str(folder), "--n", "2",
           "--n-localisation", "1", "--methods", "Grad-CAM", "FG-Grad-CAM", "--layers", "Layer13", "Input",
           "--metrics", "adai", "pointing", "--batch-size", "1", "--threads", "1", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "shards").glob("*.jsonl")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = E.read_rows(out)
    # 2 photos x 3 settings x adai + 4 cells x 3 settings x pointing
    assert 0 < len(partial) < 2 * 3 + 4 * 3
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 3 + 4 * 3
    assert {r["key"]: r for r in partial}.keys() <= set(keys)
