"""fgcam.profiles: the offline/paper switch, the paper profile's immediate checks, and an end-to-end paper run
on generated ILSVRC2012 fixtures with random VGG16-BN weights.  No network, CPU only."""

from __future__ import annotations

import pytest
import torch

from fgcam import imagenet, profiles
from fgcam.imagenet import MissingResourceError
from fgcam.profiles import get_profile

try:
    from tests.fixtures_imagenet import ELIGIBLE_NUMBERS, make_imagenet_val
except ImportError:
    from fixtures_imagenet import ELIGIBLE_NUMBERS, make_imagenet_val

torch.set_num_threads(1)

ENV = ("FGCAM_PROFILE", "FGCAM_N", "FGCAM_OFFLINE", "FGCAM_IMAGENET_VAL", "FGCAM_IMAGENET_BBOX",
       "FGCAM_IMAGENET_LABELS", "FGCAM_IMAGENET_SYNSETS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No fgcam variable from the caller's shell, an empty hub folder, and no download can happen."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)



@pytest.fixture()
def paper_env(monkeypatch, tmp_path, random_hub):
    """Everything the paper profile needs: fixture images and random weights, offline."""
    fx = make_imagenet_val(tmp_path / "imagenet")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(random_hub))
    monkeypatch.setenv("FGCAM_OFFLINE", "1")
    monkeypatch.setenv("FGCAM_IMAGENET_VAL", str(fx.val))
    monkeypatch.setenv("FGCAM_IMAGENET_BBOX", str(fx.bbox))
    monkeypatch.setenv("FGCAM_IMAGENET_SYNSETS", str(fx.synsets))
    return fx


def test_default_is_offline():
    p = get_profile()
    assert p.name == "offline" and p.model_name == "shapes-vgg16bn"
    assert (p.n_faithfulness, p.n_localisation) == profiles.OFFLINE_SIZES
    assert p.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert get_profile("OFFLINE") == p


def test_fgcam_n_overrides_sizes(monkeypatch):
    monkeypatch.setenv("FGCAM_N", "7")
    p = get_profile("offline")
    assert (p.n_faithfulness, p.n_localisation) == (7, 7)
    monkeypatch.setenv("FGCAM_N", "seven")
    with pytest.raises(ValueError, match="FGCAM_N"):
        get_profile("offline")


def test_unknown_profile_lists_valid_names(monkeypatch):
    with pytest.raises(ValueError, match="offline, paper"):
        get_profile("imagenet")
    monkeypatch.setenv("FGCAM_PROFILE", "papr")
    with pytest.raises(ValueError, match="'papr'.*offline, paper"):
        get_profile()


def test_paper_without_anything_fails_at_once_naming_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("FGCAM_PROFILE", "paper")
    for offline in ("1", None):  # with or without downloads allowed: nothing is downloaded while data is missing
        if offline:
            monkeypatch.setenv("FGCAM_OFFLINE", offline)
        else:
            monkeypatch.delenv("FGCAM_OFFLINE")
        with pytest.raises(MissingResourceError) as err:
            get_profile()
        message = str(err.value)
        assert "FGCAM_IMAGENET_VAL is not set" in message
        assert str(tmp_path / "empty-hub" / "checkpoints" / "vgg16_bn-6c64b313.pth") in message
        assert imagenet.VGG16_BN_URL in message


def test_paper_with_data_but_no_weights(monkeypatch, paper_env, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(MissingResourceError) as err:
        get_profile("paper")
    message = str(err.value)
    assert "vgg16_bn-6c64b313.pth" in message and "FGCAM_OFFLINE=1" in message
    assert "FGCAM_IMAGENET_VAL" not in message


def test_paper_with_weights_but_bad_data(monkeypatch, paper_env, tmp_path):
    monkeypatch.setenv("FGCAM_IMAGENET_VAL", str(tmp_path / "no-such-folder"))
    with pytest.raises(MissingResourceError, match="FGCAM_IMAGENET_VAL=.*no-such-folder: no such folder") as err:
        get_profile("paper")
    assert "vgg16_bn" not in str(err.value)
    monkeypatch.setenv("FGCAM_IMAGENET_VAL", str(paper_env.root))  # a folder without images
    with pytest.raises(MissingResourceError, match="no ILSVRC2012_val_.*JPEG images"):
        get_profile("paper")
    monkeypatch.setenv("FGCAM_IMAGENET_VAL", str(paper_env.val))
    monkeypatch.delenv("FGCAM_IMAGENET_BBOX")
    with pytest.raises(MissingResourceError, match="FGCAM_IMAGENET_BBOX is not set"):
        get_profile("paper")
    monkeypatch.setenv("FGCAM_IMAGENET_BBOX", str(tmp_path / "bbox.csv"))
    with pytest.raises(MissingResourceError, match="FGCAM_IMAGENET_BBOX=.*bbox.csv: no such file"):
        get_profile("paper")


def test_paper_end_to_end_on_fixtures(monkeypatch, paper_env):
    monkeypatch.setenv("FGCAM_PROFILE", "paper")
    assert (get_profile().n_faithfulness, get_profile().n_localisation) == profiles.PAPER_SIZES
    monkeypatch.setenv("FGCAM_N", "3")
    p = get_profile()
    assert p.name == "paper" and (p.n_faithfulness, p.n_localisation) == (3, 3)
    model = p.load_model()
    assert not model.training

    loc = p.load_data("localisation", seed=0)
    assert loc["images"].shape == (3, 3, 224, 224)
    assert set(loc["indices"].tolist()) <= {k - 1 for k in ELIGIBLE_NUMBERS}
    assert loc["labels"].tolist() == [paper_env.labels[i] for i in loc["indices"]]
    assert loc["boxes"].shape == (3, 4) and loc["masks"].shape == (3, 224, 224)
    assert p.load_data("localisation", seed=0)["indices"].tolist() == loc["indices"].tolist()

    faith = p.load_data("faithfulness", n=2, seed=5)
    assert faith["images"].shape == (2, 3, 224, 224)
    with torch.no_grad():
        logits = model(torch.cat([loc["images"], faith["images"]]).to(p.device))
    assert logits.shape == (5, 1000) and torch.isfinite(logits).all()

    with pytest.raises(ValueError, match="kind"):
        p.load_data("segmentation")
    with pytest.raises(ValueError, match="only 7"):
        p.load_data("localisation", n=8)


def test_offline_profile_loads_model_and_data():
    p = get_profile("offline")
    batch = p.load_data("localisation", n=4, seed=0)
    assert batch["images"].shape[0] == 4 and batch["labels"].shape == (4,)
    assert batch["masks"].shape[0] == 4 and batch["boxes"].shape == (4, 4)
    model = p.load_model()
    assert not model.training
    with torch.no_grad():
        assert model(batch["images"].to(p.device)).shape[0] == 4


def test_paper_check_downloads_missing_weights_only_when_allowed(monkeypatch, paper_env, tmp_path, random_hub):
    import os
    import urllib.error

    hub = tmp_path / "hub-to-fill"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv("FGCAM_OFFLINE")
    calls = []

    def no_route(url, dst, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)
    with pytest.raises(MissingResourceError, match="download failed.*no route to host"):
        get_profile("paper")
    assert calls == [imagenet.VGG16_BN_URL]

    def fake_download(url, dst, hash_prefix=None, **kwargs):  # a "download" that links the random weights
        assert hash_prefix == "6c64b313"
        os.link(random_hub / "checkpoints" / "vgg16_bn-6c64b313.pth", dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert get_profile("paper").name == "paper"
    downloaded = hub / "checkpoints" / "vgg16_bn-6c64b313.pth"
    assert downloaded.is_file()
    downloaded.unlink()
