"""Tests for fgcam.metrics: hand-computed toys, a naive reference loop, batching invariance, sanity checks."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from fgcam import metrics as M

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------
# Toy models and helpers
# ----------------------------------------------------------------------------------------------------------------


class RegionModel(nn.Module):
    """logits = [k * mean(channel 0 over rows r0:r1, cols c0:c1), 0]: softmax score of class 0 = sigmoid(k * m)."""

    def __init__(self, rows=(0, 2), cols=(0, 4), k=4.0):
        super().__init__()
        self.rows, self.cols, self.k = rows, cols, k

    def forward(self, x):
        m = x[:, 0, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]].mean(dim=(1, 2))
        return torch.stack([self.k * m, torch.zeros_like(m)], dim=1)


def small_cnn(classes=5, seed=0, bn=True):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
               nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes)]
    model = nn.Sequential(*layers)
    if bn:  # non-trivial running statistics so that train/eval differ
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def toy_image(n=1, h=8, w=8):
    """Channel 0 is 1 on the RegionModel's default region (rows 0-1, cols 0-3), 0 elsewhere."""
    x = torch.zeros(n, 3, h, w)
    x[:, 0, 0:2, 0:4] = 1.0
    return x


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def trapezoid(values):
    steps = len(values) - 1
    return (sum(values) - values[0] / 2 - values[-1] / 2) / steps


ZERO = M.Protocol(name="toy-zero", pixels_per_step=4, ad_substrate="zero",
                  deletion_substrate="zero", insertion_substrate="zero")


def naive_curves(model, images, saliency, target, protocol):
    """Reference implementation: one forward per image per step, pixels assigned one ranking slice at a time."""
    p = M.get_protocol(protocol)
    n, c, h, w = images.shape
    sal = torch.nn.functional.interpolate(saliency[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    sub_del = M.blur(images, p) if p.deletion_substrate == "blur" else torch.zeros_like(images)
    sub_ins = M.blur(images, p) if p.insertion_substrate == "blur" else torch.zeros_like(images)
    step = p.pixels_per_step
    steps = math.ceil(h * w / step)
    out = {}
    for mode, start_all, finish_all in (("deletion", images, sub_del), ("insertion", sub_ins, images)):
        curves = []
        for i in range(n):
            order = sorted(range(h * w), key=lambda q: (-sal[i].flatten()[q].item(), q))
            cur = start_all[i].clone().view(c, -1)
            fin = finish_all[i].view(c, -1)
            vals = []
            for s in range(steps + 1):
                with torch.no_grad():
                    vals.append(torch.softmax(model(cur.view(1, c, h, w)), 1)[0, target[i]].item())
                idx = torch.tensor(order[s * step:(s + 1) * step], dtype=torch.long)
                cur[:, idx] = fin[:, idx]
            curves.append(vals)
        out[mode] = torch.tensor(curves)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------------------------


def test_protocol_frozen_presets_and_errors():
    p = M.get_protocol("fgcam-paper")
    assert p is M.PROTOCOLS["fgcam-paper"]
    assert M.get_protocol(p) is p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.pixels_per_step = 10
    d = p.as_dict()
    assert d["pixels_per_step"] == 448 and d["blur_kernel"] == 11 and d["blur_sigma"] == 5.0
    assert d["blur_padding"] == "reflect" and d["keep_fraction"] == 0.5 and d["ad_mode"] == "keep-top"
    assert M.get_protocol("fgcam-paper-input").positive_only_if_at_most_half
    assert M.get_protocol("gradcam++").ad_mode == "multiply"
    rise = M.get_protocol("rise-2018")
    assert (rise.pixels_per_step, rise.deletion_substrate, rise.insertion_substrate) == (224, "zero", "blur")
    with pytest.raises(ValueError, match="fgcam-paper"):  # lists the valid names
        M.get_protocol("nope")
    with pytest.raises(ValueError):
        M.Protocol(blur_kernel=10)
    with pytest.raises(ValueError):
        M.Protocol(deletion_substrate="mean")


def test_protocol_dict_in_results():
    model, x = RegionModel(), toy_image()
    sal = torch.rand(1, 8, 8)
    assert M.average_drop_increase(model, x, sal, protocol=ZERO)["protocol"] == ZERO.as_dict()
    assert M.insertion_deletion(model, x, sal, protocol=ZERO)["protocol"] == ZERO.as_dict()
    with pytest.raises(ValueError, match="valid names"):
        M.insertion_deletion(model, x, sal, protocol="fgcam")


def test_blur_matches_torchvision_and_rise_kernel():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(M.blur(x), tvf.gaussian_blur(x, [11, 11], [5.0, 5.0]), atol=1e-5, rtol=1e-5)
    # RISE's gkern: scipy.ndimage.gaussian_filter of a Dirac in an 11 x 11 array
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np
    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    ref = torch.from_numpy(ndimage.gaussian_filter(delta, 5))
    g = M._rise_gkern_1d(11, 5.0)
    torch.testing.assert_close(torch.outer(g, g), ref, atol=1e-12, rtol=1e-9)
    # blurring a constant image is the identity (reflect padding, normalised kernel)
    c = torch.full((1, 3, 16, 16), 0.7)
    torch.testing.assert_close(M.blur(c), c)


# ----------------------------------------------------------------------------------------------------------------
# Insertion / deletion
# ----------------------------------------------------------------------------------------------------------------


def test_deletion_insertion_hand_computed():
    """8x8 image, region = rows 0-1 x cols 0-3 (8 px) at value 1; 4 px per step -> 16 steps, zero substrate."""
    model, x, k = RegionModel(), toy_image(), 4.0
    perfect = torch.ones(1, 8, 8)
    perfect[0, 0:2, 0:4] = 2.0  # region first; its pixels tie -> raster order: row 0 cols 0-3, then row 1
    res = M.insertion_deletion(model, x, perfect, protocol=ZERO)
    assert res["steps"] == 16 and res["target"].tolist() == [0]
    expected_del = [sig(k), sig(k / 2)] + [0.5] * 15
    expected_ins = [0.5, sig(k / 2)] + [sig(k)] * 15
    torch.testing.assert_close(res["deletion_curve"][0], torch.tensor(expected_del))
    torch.testing.assert_close(res["insertion_curve"][0], torch.tensor(expected_ins))
    torch.testing.assert_close(res["deletion"][0], torch.tensor(trapezoid(expected_del)))
    torch.testing.assert_close(res["insertion"][0], torch.tensor(trapezoid(expected_ins)))
    torch.testing.assert_close(res["overall"], res["insertion"] - res["deletion"])

    # reversed: the 56 background pixels come first (raster order), the region last
    rev = M.insertion_deletion(model, x, 3.0 - perfect, protocol=ZERO)
    expected_rdel = [sig(k)] * 15 + [sig(k / 2), 0.5]
    expected_rins = [0.5] * 15 + [sig(k / 2), sig(k)]
    torch.testing.assert_close(rev["deletion_curve"][0], torch.tensor(expected_rdel))
    torch.testing.assert_close(rev["insertion_curve"][0], torch.tensor(expected_rins))
    assert res["deletion"][0] < rev["deletion"][0]
    assert res["insertion"][0] > rev["insertion"][0]


def test_constant_saliency_ranks_in_raster_order():
    flat = torch.zeros(2, 4, 5)
    assert torch.equal(M._ranks(flat), torch.arange(20).expand(2, 20))
    ties = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]])  # pixels 0,2,3,5 first (raster), then 1,4
    assert M._ranks(ties)[0].tolist() == [0, 4, 1, 2, 5, 3]
    # constant saliency deletes in raster order; the region (rows 0-1, cols 0-3) is raster positions 0-3 and
    # 8-11: step 1 deletes 0-3 (half the region), step 2 deletes 4-7 (outside), step 3 deletes 8-11 (the rest)
    res = M.insertion_deletion(RegionModel(), toy_image(), torch.zeros(1, 8, 8), protocol=ZERO)
    expected = torch.tensor([sig(4.0), sig(2.0), sig(2.0)] + [0.5] * 14)
    torch.testing.assert_close(res["deletion_curve"][0], expected)


def test_curves_end_points_auc_range_and_partial_last_step():
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    sal = torch.rand(3, 4, 4)
    p = M.Protocol(pixels_per_step=48)  # 256 px -> ceil(256 / 48) = 6 steps, last one partial
    res = M.insertion_deletion(model, x, sal, protocol=p, batch_size=5)
    assert res["steps"] == 6 and res["deletion_curve"].shape == (3, 7) and res["insertion_curve"].shape == (3, 7)
    with torch.no_grad():
        probs, probs_blur = torch.softmax(model(x), 1), torch.softmax(model(M.blur(x, p)), 1)
    tgt = probs.argmax(1)
    assert torch.equal(res["target"], tgt)
    y, yb = probs[torch.arange(3), tgt], probs_blur[torch.arange(3), tgt]
    torch.testing.assert_close(res["deletion_curve"][:, 0], y)
    torch.testing.assert_close(res["deletion_curve"][:, -1], yb)
    torch.testing.assert_close(res["insertion_curve"][:, 0], yb)
    torch.testing.assert_close(res["insertion_curve"][:, -1], y)
    for key in ("insertion", "deletion"):
        assert ((res[key] >= 0) & (res[key] <= 1)).all()


@pytest.mark.parametrize("protocol", [M.Protocol(pixels_per_step=37), "rise-2018"])
def test_insertion_deletion_matches_naive_loop_and_batching(protocol):
    model = small_cnn()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 16, 16)
    sal = torch.rand(3, 8, 8)
    sal[0, :2] = 0.5  # some ties
    if protocol == "rise-2018":
        protocol = dataclasses.replace(M.get_protocol("rise-2018"), pixels_per_step=40)
    ref = M.insertion_deletion(model, x, sal, protocol=protocol, batch_size=64)
    naive = naive_curves(model, x, sal, ref["target"], protocol)
    torch.testing.assert_close(ref["deletion_curve"], naive["deletion"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ref["insertion_curve"], naive["insertion"], atol=1e-6, rtol=1e-5)
    for bs in (1, 7):
        other = M.insertion_deletion(model, x, sal, protocol=protocol, batch_size=bs)
        for key in ("insertion_curve", "deletion_curve", "insertion", "deletion", "overall"):
            torch.testing.assert_close(other[key], ref[key], atol=1e-6, rtol=1e-5)
    for i in range(3):  # one image at a time
        single = M.insertion_deletion(model, x[i:i + 1], sal[i:i + 1], protocol=protocol)
        torch.testing.assert_close(single["deletion_curve"][0], ref["deletion_curve"][i], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(single["insertion"][0], ref["insertion"][i], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Average drop / increase
# ----------------------------------------------------------------------------------------------------------------


def test_average_drop_increase_hand_computed():
    """8x8 (k = 32 kept pixels), zero substrate, RegionModel with k = 4."""
    model = RegionModel()
    x = toy_image(3)
    x[2, 0, 0:2, 0:2] = -1.0  # image 2: region = half -1, half +1 -> mean 0, Y = 0.5
    sal = torch.zeros(3, 8, 8)
    sal[0, 0:4] = 1.0          # keeps rows 0-3 (32 px) incl. the region: O = Y
    sal[1, 4:8] = 1.0          # keeps rows 4-7, region zeroed: O = 0.5
    sal[2, 4:8] = 1.0
    sal[2, 0:2, 2:4] = 2.0     # image 2 keeps the +1 half of the region (and 28 px of rows 4-7): mean 0.5
    res = M.average_drop_increase(model, x, sal, protocol=ZERO)
    Y = torch.tensor([sig(4), sig(4), 0.5])
    O = torch.tensor([sig(4), 0.5, sig(2)])
    torch.testing.assert_close(res["Y"], Y)
    torch.testing.assert_close(res["O"], O)
    drop = torch.tensor([0.0, (sig(4) - 0.5) / sig(4), 0.0])
    torch.testing.assert_close(res["drop"], drop)
    assert res["increase"].tolist() == [False, False, True]
    assert res["average_drop"] == pytest.approx(100 * drop.mean().item())
    assert res["average_increase"] == pytest.approx(100 / 3)
    assert isinstance(res["average_drop"], float) and isinstance(res["average_increase"], float)


def test_average_drop_positive_only_variant():
    model, x = RegionModel(), toy_image()
    sal = -torch.ones(1, 8, 8)
    sal[0, 0, 0:2] = 1.0  # 2 positive pixels of the region: keep only them -> mean 2/8
    sal[0, 1, :] = 0.5 * torch.arange(8) / 8 - 0.9  # negative, but ranked above the other negatives
    proto = dataclasses.replace(ZERO, positive_only_if_at_most_half=True)
    res = M.average_drop_increase(model, x, sal, protocol=proto)
    torch.testing.assert_close(res["O"], torch.tensor([sig(4 * 2 / 8)]))
    # without the flag the top-32 pixels (incl. rows 0 and 1 entirely) are kept: O = Y
    res = M.average_drop_increase(model, x, sal, protocol=ZERO)
    torch.testing.assert_close(res["O"], res["Y"])
    # more than half positive: the flag falls back to the top-k rule
    many = torch.rand(1, 8, 8) + 0.1
    a = M.average_drop_increase(model, x, many, protocol=proto)
    b = M.average_drop_increase(model, x, many, protocol=ZERO)
    torch.testing.assert_close(a["O"], b["O"])


def test_average_drop_gradcampp_multiply():
    model, x = RegionModel(), toy_image(2)
    sal = torch.full((2, 8, 8), 0.5)
    sal[0, 0:2, 0:4] = 1.0   # normalised: region 1, rest 0 -> image unchanged on the region: O = Y
    sal[1, 0:2, 0:4] = 0.75  # normalised: region 0.5 -> mean 0.5
    sal[1, 7, 7] = 1.0
    res = M.average_drop_increase(model, x, sal, protocol="gradcam++")
    torch.testing.assert_close(res["O"], torch.tensor([sig(4), sig(2)]))
    assert res["protocol"]["name"] == "gradcam++"


def test_average_drop_increase_batching_and_blur():
    model = small_cnn()
    torch.manual_seed(3)
    x = torch.randn(5, 3, 16, 16)
    sal = torch.randn(5, 4, 4)
    ref = M.average_drop_increase(model, x, sal, batch_size=64)
    # hand reference for the paper protocol: top 128 of 256 pixels kept, the rest blurred
    up = torch.nn.functional.interpolate(sal[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    keep = torch.zeros(5, 256, dtype=torch.bool)
    for i in range(5):
        keep[i, sorted(range(256), key=lambda q: (-up[i].flatten()[q].item(), q))[:128]] = True
    kept = torch.where(keep.view(5, 1, 16, 16), x, M.blur(x))
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        t = p.argmax(1)
        O = torch.softmax(model(kept), 1)[torch.arange(5), t]
    torch.testing.assert_close(ref["O"], O)
    for bs in (1, 2):
        other = M.average_drop_increase(model, x, sal, batch_size=bs)
        for key in ("Y", "O", "drop"):
            torch.testing.assert_close(other[key], ref[key])
        assert torch.equal(other["increase"], ref["increase"])
    single = M.average_drop_increase(model, x[3:4], sal[3:4], target=int(ref["target"][3]))
    torch.testing.assert_close(single["O"][0], ref["O"][3])


def test_forward_batch_size_from_the_largest_activation():
    """small_cnn on 3x16x16: its largest leaf output is the first convolution's 4x16x16 floats (4,096 bytes)."""
    model = small_cnn().train()
    assert M.forward_batch_size(model, (3, 16, 16), budget=10_000) == 2
    assert M.forward_batch_size(model, (3, 16, 16), budget=4096) == 1
    assert M.forward_batch_size(model, (3, 16, 16), budget=100) == 1  # at least one image
    assert M.forward_batch_size(model, (3, 16, 16)) == M.FORWARD_BYTES_BUDGET // 4096
    assert M.forward_batch_size(model.double(), (3, 16, 16), budget=16_384) == 2  # 8-byte elements
    assert model.training and all(m.training for m in model.modules())  # the pass ran in eval mode, restored


def test_default_batch_size_is_measured_once_per_shape_on_the_cpu():
    """``batch_size=None`` (the metrics' and Score-CAM's default): forward_batch_size of the images' shape on the CPU,
    probed once per model, image shape and dtype; DEVICE_BATCH_SIZE off the CPU, with no probe; results as with any
    other batch size."""
    from fgcam import components as comp

    model = small_cnn()
    probes = []
    model.register_forward_hook(lambda m, args, out: probes.append(args[0].shape[0]))
    x = torch.randn(3, 3, 16, 16)
    assert M.default_batch_size(model, x) == M.FORWARD_BYTES_BUDGET // 4096 and probes == [1]
    assert M.default_batch_size(model, x[:1]) == M.FORWARD_BYTES_BUDGET // 4096 and probes == [1]  # remembered
    assert M.default_batch_size(model, torch.randn(1, 3, 8, 8)) == M.FORWARD_BYTES_BUDGET // 1024
    assert M.default_batch_size(small_cnn().double(), x.double()) == M.FORWARD_BYTES_BUDGET // 8192
    assert probes == [1, 1]
    assert M.default_batch_size(model, torch.empty(2, 3, 16, 16, device="meta")) == M.DEVICE_BATCH_SIZE
    assert probes == [1, 1]

    p = M.Protocol(pixels_per_step=64)
    sal = torch.rand(3, 16, 16)
    for metric in (M.insertion_deletion, M.average_drop_increase):
        auto, one = metric(model, x, sal, protocol=p), metric(model, x, sal, protocol=p, batch_size=1)
        for k in auto:
            if isinstance(auto[k], torch.Tensor):
                torch.testing.assert_close(auto[k], one[k], rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
            metric(model, x, sal, protocol=p, batch_size=0)
    A, t = torch.rand(3, 4, 4, 4), torch.tensor([0, 2, 1])
    torch.testing.assert_close(comp.score_cam_weights(model, x, A, t), comp.score_cam_weights(model, x, A, t, 1),
                               rtol=1e-5, atol=1e-6)


def test_model_mode_restored_and_eval_used():
    model = small_cnn().train()
    model[0].eval()  # mixed modes must be restored exactly
    torch.manual_seed(4)
    x, sal = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    p = M.Protocol(pixels_per_step=64)
    res = M.insertion_deletion(model, x, sal, protocol=p)
    assert model.training and not model[0].training and model[1].training
    ref = M.insertion_deletion(small_cnn().eval(), x, sal, protocol=p)
    torch.testing.assert_close(res["deletion_curve"], ref["deletion_curve"])


def test_target_argument():
    model = small_cnn()
    torch.manual_seed(5)
    x, sal = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    p = M.Protocol(pixels_per_step=128)
    res = M.insertion_deletion(model, x, sal, target=torch.tensor([1, 3]), protocol=p)
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)
    torch.testing.assert_close(res["deletion_curve"][:, 0], probs[[0, 1], [1, 3]])
    assert M.average_drop_increase(model, x, sal, target=2)["target"].tolist() == [2, 2]
    with pytest.raises(ValueError):
        M.average_drop_increase(model, x, sal, target=torch.tensor([1, 2, 3]))


def test_input_validation():
    model, x = RegionModel(), toy_image(2)
    with pytest.raises(ValueError, match="batch size"):
        M.insertion_deletion(model, x, torch.rand(3, 8, 8), protocol=ZERO)
    bad = torch.rand(2, 8, 8)
    bad[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.average_drop_increase(model, x, bad, protocol=ZERO)
    with pytest.raises(ValueError, match=r"\[N, h, w\]"):
        M.average_drop_increase(model, x, torch.rand(2, 3, 8, 8), protocol=ZERO)
    with pytest.raises(ValueError, match="boxes"):
        M.energy_pointing_game(torch.rand(2, 8, 8), torch.zeros(2, 5))
    with pytest.raises(ValueError):
        M.energy_pointing_game(torch.rand(2, 8, 8), torch.zeros(2, 2, 2, 2))
    # [N, 1, h, w] is accepted
    r1 = M.average_drop_increase(model, x, bad.nan_to_num()[:, None], protocol=ZERO)
    r2 = M.average_drop_increase(model, x, bad.nan_to_num(), protocol=ZERO)
    torch.testing.assert_close(r1["O"], r2["O"])


# ----------------------------------------------------------------------------------------------------------------
# Localisation
# ----------------------------------------------------------------------------------------------------------------


def test_energy_pointing_game_hand_examples():
    sal = torch.zeros(3, 8, 8)
    sal[0, 2:4, 1:5] = torch.rand(2, 4) + 0.5  # all energy inside the box
    sal[1] = 1.0
    sal[1, 7] = 0.0                             # uniform except a zero bottom row -> box area / 56
    sal[2] = -1.0                               # all negative: ReLU -> 0 -> 0/0 := 0
    boxes = torch.tensor([[1, 2, 5, 4], [0, 0, 4, 2], [0, 0, 8, 8]])  # x1, y1, x2, y2 (x2, y2 exclusive)
    epg = M.energy_pointing_game(sal, boxes)
    torch.testing.assert_close(epg, torch.tensor([1.0, 8 / 56, 0.0]))
    masks = M._boxes_to_masks(boxes, 3, (8, 8), "cpu")
    assert masks.sum((1, 2)).tolist() == [8, 8, 64]
    torch.testing.assert_close(M.energy_pointing_game(sal, masks), epg)
    torch.testing.assert_close(M.mask_energy(sal, masks), epg)
    # constant map: min-max gives 0 everywhere -> 0 (0/0 := 0)
    assert M.energy_pointing_game(torch.ones(1, 8, 8), boxes[:1]).item() == 0.0
    # min-max matters: a positive offset is removed before the ratio
    off = torch.full((1, 8, 8), 5.0)
    off[0, 0, 0] = 6.0
    assert M.energy_pointing_game(off, torch.tensor([[0, 0, 1, 1]])).item() == pytest.approx(1.0)


def test_energy_pointing_game_upsamples_to_box_grid():
    sal = torch.zeros(1, 4, 4)
    sal[0, 0:2, 0:2] = 1.0
    boxes = torch.tensor([[0, 0, 8, 8]])
    up = torch.nn.functional.interpolate(sal[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    up = up / up.max()
    expected = up[0, :8, :8].sum() / up.sum()
    torch.testing.assert_close(M.energy_pointing_game(sal, boxes, size=(16, 16))[0], expected)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, :8, :8] = True
    torch.testing.assert_close(M.energy_pointing_game(sal, mask)[0], expected)
    with pytest.raises(ValueError):
        M.energy_pointing_game(sal, mask, size=(8, 8))


def test_topk_mask_scores():
    sal = torch.arange(100, 0, -1).float().view(1, 10, 10)  # raster order = saliency order
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 0, :] = True                                   # first 10 raster pixels
    res = M.topk_mask_scores(sal, mask, fractions=(0.05, 0.1, 0.2))
    assert set(res) == {0.05, 0.1, 0.2}
    torch.testing.assert_close(res[0.05]["precision"], torch.tensor([1.0]))
    torch.testing.assert_close(res[0.05]["recall"], torch.tensor([0.5]))
    torch.testing.assert_close(res[0.05]["iou"], torch.tensor([0.5]))
    torch.testing.assert_close(res[0.1]["iou"], torch.tensor([1.0]))
    torch.testing.assert_close(res[0.2]["precision"], torch.tensor([0.5]))
    torch.testing.assert_close(res[0.2]["recall"], torch.tensor([1.0]))
    torch.testing.assert_close(res[0.2]["iou"], torch.tensor([0.5]))
    empty = M.topk_mask_scores(sal, torch.zeros_like(mask), fractions=(0.1,))
    assert empty[0.1]["recall"].item() == 0.0 and empty[0.1]["iou"].item() == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Similarity and sanity checks
# ----------------------------------------------------------------------------------------------------------------


def test_spearman_and_ssim():
    torch.manual_seed(6)
    a, b = torch.rand(3, 12, 12), torch.rand(3, 12, 12)
    torch.testing.assert_close(M.spearman(a, a), torch.ones(3))
    torch.testing.assert_close(M.spearman(a, -a), -torch.ones(3))
    torch.testing.assert_close(M.spearman(a, torch.exp(3 * a)), torch.ones(3))  # rank-based
    torch.testing.assert_close(M.ssim(a, a), torch.ones(3))
    torch.testing.assert_close(M.ssim(a, 2 * a + 1), torch.ones(3))          # min-max normalised first
    assert torch.equal(M.ssim(a, b), M.ssim(b, a))
    assert (M.ssim(a, b) < 0.5).all()
    # ties: average ranks (hand value from scipy.stats.spearmanr([1,2,2,3],[1,2,3,4]) = 0.9486833)
    x, y = torch.tensor([[[1.0, 2.0], [2.0, 3.0]]]), torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert M._average_ranks(x.flatten(1)).tolist() == [[0.0, 1.5, 1.5, 3.0]]
    assert M.spearman(x, y).item() == pytest.approx(0.9486833, abs=1e-6)
    assert M.spearman(torch.ones(1, 2, 2), y).item() == 0.0  # constant map: 0/0 := 0
    assert M.ssim(torch.rand(2, 5, 5), torch.rand(2, 5, 5)).shape == (2,)  # window shrinks to fit


def grad_x_input(model, images, target=None):
    x = images.clone().requires_grad_(True)
    out = model(x)
    t = out.argmax(1) if target is None else torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), x)
    return (grad * x).sum(1).detach()


def test_cascading_randomization_structure_and_original_untouched():
    model = small_cnn(seed=7).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(8)
    x = torch.randn(2, 3, 16, 16)
    rng_before = torch.random.get_rng_state()
    res = M.cascading_randomization(model, x, lambda m, im: grad_x_input(m, im, target=0), seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert model.training  # mode untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [r["layer"] for r in res] == ["8", "4", "1", "0"]  # Linear first, then conv, BN, conv
    for r in res:
        assert {"spearman", "spearman_abs", "ssim"} <= set(r)
        assert r["spearman_per_image"].shape == (2,) and r["ssim_per_image"].shape == (2,)
        assert -1.0 <= r["spearman"] <= 1.0
    assert res[-1]["spearman_abs"] < 0.9  # fully randomised: the explanation has changed
    again = M.cascading_randomization(model, x, lambda m, im: grad_x_input(m, im, target=0), seed=0)
    assert [r["spearman"] for r in again] == [r["spearman"] for r in res]  # seeded
    sub = M.cascading_randomization(model, x, lambda m, im: grad_x_input(m, im, target=0), layers=["4"])
    assert [r["layer"] for r in sub] == ["4"]
    with pytest.raises(ValueError):
        M.cascading_randomization(model, x, grad_x_input, layers=["nope"])


def test_class_swap():
    model = small_cnn(seed=9).train()
    torch.manual_seed(10)
    x = torch.randn(2, 3, 16, 16)
    same = M.class_swap(model, x, grad_x_input, 1, 1)
    assert model.training
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)
    diff = M.class_swap(model, x, grad_x_input, 0, 3)
    assert diff["spearman_per_image"].shape == (2,) and diff["spearman"] < 1.0


# ----------------------------------------------------------------------------------------------------------------
# Device
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = small_cnn()
    torch.manual_seed(11)
    x, sal = torch.randn(3, 3, 16, 16), torch.rand(3, 8, 8)
    sal[0] = 0.25  # ties: raster order on both devices
    p = M.Protocol(pixels_per_step=32)
    cpu_id = M.insertion_deletion(model, x, sal, protocol=p)
    cpu_ad = M.average_drop_increase(model, x, sal)
    gpu_model = small_cnn().cuda()
    gpu_id = M.insertion_deletion(gpu_model, x.cuda(), sal.cuda(), protocol=p)
    gpu_ad = M.average_drop_increase(gpu_model, x.cuda(), sal.cuda())
    assert gpu_id["deletion_curve"].is_cuda
    for key in ("insertion_curve", "deletion_curve"):
        torch.testing.assert_close(gpu_id[key].cpu(), cpu_id[key], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gpu_ad["O"].cpu(), cpu_ad["O"], atol=1e-4, rtol=1e-3)
    assert torch.equal(M._ranks(sal.cuda()).cpu(), M._ranks(sal))
    boxes = torch.tensor([[0, 0, 4, 4]] * 3)
    torch.testing.assert_close(M.energy_pointing_game(sal.cuda(), boxes.cuda()).cpu(),
                               M.energy_pointing_game(sal, boxes))
    torch.testing.assert_close(M.ssim(sal.cuda(), sal.flip(0).cuda()).cpu(), M.ssim(sal, sal.flip(0)))
    torch.testing.assert_close(M.spearman(sal.cuda(), sal.flip(0).cuda()).cpu(), M.spearman(sal, sal.flip(0)))
