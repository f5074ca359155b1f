"""Tests of the procedural Shapes data set (fgcam.data)."""

import pytest
import torch

from fgcam import data

torch.set_num_threads(1)

N = 256  # enough for every class to appear (8 classes, p(miss) ~ 1e-14)


@pytest.fixture(scope="module")
def one():
    return data.make_shapes(N, seed=7)


@pytest.fixture(scope="module")
def two():
    return data.make_shapes(N, seed=7, objects=2)


def _bytes(d):
    return b"".join(d[k].numpy().tobytes() for k in sorted(d) if torch.is_tensor(d[k]))


def test_constants():
    assert len(data.CLASSES) >= 6 and len(set(data.CLASSES)) == len(data.CLASSES)
    assert data.IMAGE_SIZE == 128
    assert len(data.MEAN) == len(data.STD) == 3


def test_same_seed_same_bytes(one):
    again = data.make_shapes(N, seed=7)
    assert _bytes(again) == _bytes(one)
    assert data.make_shapes(8, 3, objects=2)["images"].numpy().tobytes() == \
        data.make_shapes(8, 3, objects=2)["images"].numpy().tobytes()


def test_different_seed_differs(one):
    other = data.make_shapes(N, seed=8)
    assert other["images"].numpy().tobytes() != one["images"].numpy().tobytes()
    assert not torch.equal(other["labels"], one["labels"])


def test_prefix_and_offset(one):
    head = data.make_shapes(10, seed=7)
    assert torch.equal(head["images"], one["images"][:10])
    part = data.make_shapes(50, seed=7, offset=100)
    assert torch.equal(part["images"], one["images"][100:150])
    assert torch.equal(part["masks"], one["masks"][100:150])


@pytest.mark.parametrize("objects", [1, 2])
def test_keys_shapes_dtypes(objects, one, two):
    d = one if objects == 1 else two
    s = data.IMAGE_SIZE
    suffixes = [""] if objects == 1 else ["", "2"]
    assert d["images"].shape == (N, 3, s, s) and d["images"].dtype == torch.float32
    assert d["raw"].shape == (N, 3, s, s) and d["raw"].dtype == torch.float32
    for suf in suffixes:
        assert d["labels" + suf].shape == (N,) and d["labels" + suf].dtype == torch.int64
        assert d["masks" + suf].shape == (N, s, s) and d["masks" + suf].dtype == torch.bool
        assert d["boxes" + suf].shape == (N, 4)
        assert not d["boxes" + suf].is_floating_point()
    assert d["classes"] == data.CLASSES
    if objects == 1:
        assert "labels2" not in d and "masks2" not in d and "boxes2" not in d


@pytest.mark.parametrize("objects", [1, 2])
def test_masks_inside_tight_boxes(objects, one, two):
    d = one if objects == 1 else two
    for suf in [""] if objects == 1 else ["", "2"]:
        masks, boxes = d["masks" + suf], d["boxes" + suf]
        for m, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):
            assert 0 <= x1 < x2 <= data.IMAGE_SIZE and 0 <= y1 < y2 <= data.IMAGE_SIZE
            inside = torch.zeros_like(m)
            inside[y1:y2, x1:x2] = True
            assert m.any()
            assert not (m & ~inside).any()  # mask inside the box
            # tight: every edge row/column of the box touches the mask
            assert m[y1, x1:x2].any() and m[y2 - 1, x1:x2].any()
            assert m[y1:y2, x1].any() and m[y1:y2, x2 - 1].any()


def test_object_sizes(one):
    side = (one["boxes"][:, 2:] - one["boxes"][:, :2]).max(1).values.float() / data.IMAGE_SIZE
    assert side.min() >= 0.10 and side.max() <= 0.50
    area = one["masks"].float().mean((1, 2))
    assert area.min() > 0.005


def test_every_class_appears(one, two):
    k = len(data.CLASSES)
    assert set(one["labels"].tolist()) == set(range(k))
    assert set(two["labels"].tolist()) == set(range(k))
    assert set(two["labels2"].tolist()) == set(range(k))


def test_two_objects_are_distinct(two):
    assert (two["labels"] != two["labels2"]).all()
    assert two["masks"].flatten(1).any(1).all() and two["masks2"].flatten(1).any(1).all()
    assert not (two["masks"] & two["masks2"]).any()  # the objects do not overlap


def test_normalisation(one):
    raw = data.denormalize(one["images"])
    assert raw.min() >= 0 and raw.max() <= 1
    assert torch.allclose(raw, one["raw"], atol=1e-5)
    assert torch.allclose(data.normalize(one["raw"]), one["images"], atol=1e-6)
    # the data are not degenerate: images span the range and differ from each other
    assert one["raw"].std() > 0.1 and (one["raw"][0] - one["raw"][1]).abs().mean() > 0.05


def test_colour_independent_of_class(one):
    """Mean object colour is similar across classes (colour is not a cue)."""
    raw, masks, labels = one["raw"], one["masks"], one["labels"]
    colour = (raw * masks[:, None]).sum((2, 3)) / masks[:, None].sum((2, 3))
    per_class = torch.stack([colour[labels == c].mean(0) for c in range(len(data.CLASSES))])
    assert (per_class - colour.mean(0)).abs().max() < 0.2


def test_bad_arguments():
    with pytest.raises(ValueError):
        data.make_shapes(4, 0, objects=3)
    assert data.make_shapes(0, 0)["images"].shape == (0, 3, data.IMAGE_SIZE, data.IMAGE_SIZE)
