"""fgcam.imagenet on a generated, format-exact ILSVRC2012 validation set; no network, CPU only."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from fgcam import imagenet
from fgcam.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetFormatError,
    ImageNetVal,
    MissingResourceError,
    localisation_candidates,
    sample_faithfulness,
    sample_localisation,
)

try:
    from tests import fixtures_imagenet as fixtures
except ImportError:
    import fixtures_imagenet as fixtures

ELIGIBLE_NUMBERS = fixtures.ELIGIBLE_NUMBERS
make_imagenet_val, write_meta_mat = fixtures.make_imagenet_val, fixtures.write_meta_mat

torch.set_num_threads(1)


@pytest.fixture()
def fx(tmp_path):
    return make_imagenet_val(tmp_path / "imagenet")


@pytest.fixture()
def ds(fx):
    return ImageNetVal(fx.val, annotations=fx.bbox, synsets=fx.synsets)


@pytest.fixture()
def no_network(monkeypatch):
    """Any download attempt fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)



# ---------------------------------------------------------------------------------------------- labels


def test_labels_from_xml_with_synset_list(fx, ds):
    assert len(ds) == 12  # README.txt in the folder is ignored
    assert [p.name for p in ds.files][:2] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    assert ds.labels.tolist() == fx.labels
    assert ds.classes == fx.wnids == sorted(fx.wnids)
    assert ds.wnids[0] == fx.wnids[fx.labels[0]]


def test_class_order_is_sorted_wnids_not_devkit_ids(fx, ds):
    gt = [int(x) for x in fx.ground_truth.read_text().split()]
    assert gt != fx.labels  # the devkit IDs are a different ordering ...
    assert [fx.wnids.index(fx.devkit_order[g - 1]) for g in gt] == ds.labels.tolist()  # ... of the same classes


def test_class_list_from_annotations_needs_all_1000_classes(fx):
    with pytest.raises(MissingResourceError, match="synsets"):
        ImageNetVal(fx.val, annotations=fx.bbox)


def test_devkit_ground_truth_is_cross_checked_against_xml(fx):
    ds = ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox, synsets=fx.synsets)
    assert ds.labels.tolist() == fx.labels
    lines = fx.ground_truth.read_text().split()
    # Without meta.mat only contradictions are detectable: images 3 and 4 share a class, so giving image 1
    # image 3's ID makes one ID name two WNIDs.
    lines[0], lines[2] = lines[2], lines[0]
    fx.ground_truth.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageNetFormatError, match="does not match the annotations"):
        ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox, synsets=fx.synsets)


def test_devkit_ground_truth_alone_needs_meta_mat(fx):
    with pytest.raises(MissingResourceError, match="meta.mat"):
        ImageNetVal(fx.val, labels=fx.ground_truth)


def test_devkit_ground_truth_with_meta_mat(fx):
    pytest.importorskip("scipy")
    write_meta_mat(fx)
    ds = ImageNetVal(fx.val, labels=fx.ground_truth)  # no annotations, no synset list
    assert ds.labels.tolist() == fx.labels
    assert ds.classes == fx.wnids
    assert not ds.has_boxes()
    both = ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox)
    assert both.labels.tolist() == fx.labels and both.has_boxes()
    lines = fx.ground_truth.read_text().split()
    lines[0], lines[1] = lines[1], lines[0]
    fx.ground_truth.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageNetFormatError, match="meta.mat.*ILSVRC2012_val_00000001.JPEG"):
        ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox)


def test_val_txt_and_kaggle_csv_give_the_same_labels_and_boxes(fx, ds):
    assert ImageNetVal(fx.val, labels=fx.val_txt).labels.tolist() == fx.labels
    kaggle = ImageNetVal(fx.val, annotations=fx.loc_solution, synsets=fx.synsets)
    assert kaggle.labels.tolist() == fx.labels
    assert kaggle.sizes == ds.sizes
    for i in range(len(ds)):
        assert torch.equal(kaggle.boxes224(i), ds.boxes224(i))
    checked = ImageNetVal(fx.val, labels=fx.val_txt, annotations=fx.bbox, synsets=fx.synsets)
    assert checked.labels.tolist() == fx.labels


def test_xmls_inside_the_image_folder_are_found(fx):
    for xml in fx.bbox.iterdir():
        xml.rename(fx.val / xml.name)
    assert ImageNetVal(fx.val, synsets=fx.synsets).labels.tolist() == fx.labels


# ----------------------------------------------------------------------------------------------- boxes


def test_boxes_rescaled_to_224_hand_values(ds):
    # image 1: 500x375, box (111, 108, 441, 286)
    expected = torch.tensor([[111 * 224 / 500, 108 * 224 / 375, 441 * 224 / 500, 286 * 224 / 375]])
    assert torch.allclose(ds.boxes224(0), expected)
    assert torch.allclose(ds.boxes224(0), torch.tensor([[49.728, 64.512, 197.568, 170.837333]]))
    assert torch.equal(ds.boxes224(8), torch.tensor([[56.0, 56.0, 168.0, 168.0]]))  # 224x224: unchanged
    assert torch.equal(ds.boxes224(5), torch.tensor([[0.0, 0.0, 112.0, 224.0]]))  # 200x100, box (0,0,100,100)
    assert ds.boxes224(1).shape == (2, 4) and ds.boxes224(7).shape == (3, 4)
    assert ds.box_area_fractions(5) == [0.5]


def test_load_batch(fx, ds):
    batch = ds.load([0, 1, 5])
    assert batch["images"].shape == (3, 3, 224, 224) and batch["images"].dtype == torch.float32
    assert batch["labels"].tolist() == [fx.labels[0], fx.labels[1], fx.labels[5]]
    assert batch["labels"].dtype == torch.int64
    assert batch["paths"] == [str(fx.image(1)), str(fx.image(2)), str(fx.image(6))]
    assert batch["indices"].tolist() == [0, 1, 5]
    assert torch.equal(batch["boxes"][1], ds.boxes224(1)[0])  # the first of the two boxes
    masks = batch["masks"]
    assert masks.shape == (3, 224, 224) and masks.dtype == torch.bool
    # image 1, box (49.728, 64.512, 197.568, 170.837): pixel centres c + 0.5 inside -> columns 50..197, rows 65..170
    assert masks[0].sum() == 148 * 106 and masks[0, 65:171, 50:198].all()
    # image 6: box (0, 0, 112, 224) -> columns 0..111, every row
    assert masks[2].sum() == 112 * 224 and masks[2, :, :112].all()
    assert ds.load([])["images"].shape == (0, 3, 224, 224)


# ------------------------------------------------------------------------------------------- images


def test_preprocess_matches_manual_computation(fx):
    img = Image.open(fx.image(1))
    resized = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float64) / 255.0
    manual = (resized - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    x = imagenet.preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), manual.transpose(2, 0, 1), atol=1e-5)


def test_grayscale_and_cmyk_become_rgb(fx, ds):
    assert Image.open(fx.image(3)).mode == "L" and Image.open(fx.image(5)).mode == "CMYK"
    gray = imagenet.load_image(fx.image(3))
    assert gray.mode == "RGB"
    a = np.asarray(gray)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert imagenet.load_image(fx.image(5)).mode == "RGB"
    images = ds.load([2, 4])["images"]  # images 3 (L) and 5 (CMYK)
    raw = images * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(raw[0, 0], raw[0, 1], atol=1e-5) and torch.allclose(raw[0, 1], raw[0, 2], atol=1e-5)
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5


# ----------------------------------------------------------------------------------------------- sampling


def test_faithfulness_sampling_is_seeded(ds):
    a = sample_faithfulness(ds, n=5, seed=0)
    assert a == sample_faithfulness(ds, n=5, seed=0)
    assert a == sorted(np.random.default_rng(0).permutation(12)[:5].tolist())
    assert len(set(a)) == 5 and a == sorted(a) and all(0 <= i < 12 for i in a)
    assert {tuple(sample_faithfulness(ds, n=5, seed=s)) for s in range(5)} != {tuple(a)}
    assert sample_faithfulness(ds, n=12, seed=3) == list(range(12))
    with pytest.raises(ValueError, match="only 12"):
        sample_faithfulness(ds, n=13)


def test_localisation_sampling_single_box_at_most_half(ds):
    eligible = [k - 1 for k in ELIGIBLE_NUMBERS]
    assert localisation_candidates(ds) == eligible
    for i in eligible:
        assert len(ds.boxes[i]) == 1 and ds.box_area_fractions(i)[0] <= 0.5
    a = sample_localisation(ds, n=4, seed=1)
    assert a == sample_localisation(ds, n=4, seed=1)
    assert a == sorted(eligible[k] for k in np.random.default_rng(1).permutation(len(eligible))[:4])
    assert set(a) <= set(eligible) and len(set(a)) == 4
    assert sample_localisation(ds, n=len(eligible), seed=0) == eligible
    with pytest.raises(ValueError, match="only 7"):
        sample_localisation(ds, n=8)


def test_localisation_needs_boxes(fx):
    ds = ImageNetVal(fx.val, labels=fx.val_txt)
    with pytest.raises(MissingResourceError, match="bounding boxes"):
        sample_localisation(ds, n=1)
    assert "boxes" not in ds.load([0])


# ------------------------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    with pytest.raises(MissingResourceError, match="not found: .*nowhere"):
        ImageNetVal(tmp_path / "nowhere")


def test_folder_without_images(fx, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.jpg").write_bytes(b"")
    with pytest.raises(MissingResourceError, match="No ILSVRC2012_val_.*JPEG images in .*empty"):
        ImageNetVal(tmp_path / "empty", annotations=fx.bbox)


def test_missing_xml_names_it(fx):
    fx.xml(5).unlink()
    with pytest.raises(MissingResourceError, match="ILSVRC2012_val_00000005.xml"):
        ImageNetVal(fx.val, annotations=fx.bbox, synsets=fx.synsets)


@pytest.mark.parametrize(
    "text", ["<annotation><size>", "<annotation><size><width>5</width></size></annotation>",
             "<annotation><size><width>5</width><height>5</height></size></annotation>",  # no <object>
             "<annotation><size><width>5</width><height>5</height></size><object><name>n01751748</name>"
             "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>3</ymax></bndbox></object></annotation>"]
)
def test_malformed_xml_names_it(fx, text):
    fx.xml(2).write_text(text)
    with pytest.raises(ImageNetFormatError, match="ILSVRC2012_val_00000002.xml"):
        ImageNetVal(fx.val, annotations=fx.bbox, synsets=fx.synsets)


def test_bad_label_files(fx):
    lines = fx.ground_truth.read_text().split()
    fx.ground_truth.write_text("\n".join(lines[:11]) + "\n")  # 11 lines for 12 images
    with pytest.raises(ImageNetFormatError, match="has 11 lines"):
        ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox, synsets=fx.synsets)
    fx.ground_truth.write_text("\n".join(lines[:11] + ["tench"]) + "\n")
    with pytest.raises(ImageNetFormatError, match="Malformed label file .*ground_truth"):
        ImageNetVal(fx.val, labels=fx.ground_truth, annotations=fx.bbox, synsets=fx.synsets)
    with pytest.raises(MissingResourceError, match="label file not found: .*missing.txt"):
        ImageNetVal(fx.val, labels=fx.root / "missing.txt", annotations=fx.bbox)
    fx.val_txt.write_text("\n".join(fx.val_txt.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ImageNetFormatError, match="no line for 1 image.*00000001"):
        ImageNetVal(fx.val, labels=fx.val_txt)
    fx.synsets.write_text("n01440764 tench\n")
    with pytest.raises(ImageNetFormatError, match="LOC_synset_mapping.txt"):
        ImageNetVal(fx.val, annotations=fx.bbox, synsets=fx.synsets)


# -------------------------------------------------------------------------------------------------- model


def test_weights_path_is_the_torchvision_file_name(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert imagenet.vgg16_bn_weights_path() == tmp_path / "checkpoints" / "vgg16_bn-6c64b313.pth"
    assert imagenet.VGG16_BN_URL == "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"


def test_load_vgg16_bn_from_hub_cache(monkeypatch, random_hub, no_network):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(random_hub))
    monkeypatch.setenv("FGCAM_OFFLINE", "1")
    model = imagenet.load_vgg16_bn()
    assert not model.training
    saved = torch.load(imagenet.vgg16_bn_weights_path(), weights_only=True)
    assert torch.equal(model.features[0].weight, saved["features.0.weight"])
    assert torch.equal(model.features[1].running_var, saved["features.1.running_var"])
    assert model.features[0].weight.requires_grad
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_missing_weights_offline_names_file_folder_and_url(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("FGCAM_OFFLINE", "1")
    with pytest.raises(MissingResourceError) as err:
        imagenet.load_vgg16_bn()
    message = str(err.value)
    assert "vgg16_bn-6c64b313.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert imagenet.VGG16_BN_URL in message and "FGCAM_OFFLINE" in message


def test_failed_download_becomes_the_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("FGCAM_OFFLINE", raising=False)
    calls = []

    def no_route(url, dst, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)
    with pytest.raises(MissingResourceError, match="download failed.*no route to host") as err:
        imagenet.load_vgg16_bn()
    assert calls == [imagenet.VGG16_BN_URL]
    assert "vgg16_bn-6c64b313.pth" in str(err.value)


def test_corrupt_weights_file(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = imagenet.vgg16_bn_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingResourceError, match="Could not read .*vgg16_bn-6c64b313.pth"):
        imagenet.load_vgg16_bn()
