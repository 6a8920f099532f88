"""LPIPS and CLIP-S (svd_dag.evaluation.perceptual) on weight files written into a tmp model store.

The weights here are fake: a randomly initialised torchvision AlexNet, random non-negative
LPIPS lin layers and a tiny random open_clip model, saved with the real file names and key
names. They test the mechanics only (loading, key checks, the LPIPS forward against a
reference written after the lpips package, CLIP-S arithmetic); the numbers are not
perceptual distances.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch
import torchvision

from svd_dag.curation import clip_model
from svd_dag.curation.clip_model import build_open_clip, load_clip
from svd_dag.evaluation.perceptual import (
    LPIPS_CHANNELS,
    clip_similarity,
    load_clip_for_scoring,
    load_lpips,
)
from svd_dag.model_store import ModelStore, file_sha256

TINY_CLIP = "svdtest-perceptual-clip"


def _small(image: np.ndarray, size: int = 64) -> np.ndarray:
    return (skimage.transform.resize(image, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def views() -> np.ndarray:
    return np.stack([_small(skimage.data.astronaut()), _small(skimage.data.coffee()), _small(skimage.data.chelsea())])


@pytest.fixture(scope="module")
def fake_lpips_state() -> tuple[dict, dict]:
    """(random torchvision AlexNet features state, random non-negative lin weights), real key names."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        features = torchvision.models.alexnet().features
        alexnet = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
        lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}
    return alexnet, lins


def _store(tmp_path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), str(tmp_path / "cache"))


def _write(tmp_path, relpath: str, state) -> str:
    path = tmp_path / "models" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path))
    return str(path)


@pytest.fixture
def lpips_store(tmp_path, fake_lpips_state):
    alexnet, lins = fake_lpips_state
    _write(tmp_path, "lpips/alexnet.pth", alexnet)
    _write(tmp_path, "lpips/alex.pth", lins)
    return _store(tmp_path)


def _reference_lpips(x0: np.ndarray, x1: np.ndarray, alexnet_state: dict, lins: dict) -> float:
    """LPIPS of one uint8 image pair, written after lpips.LPIPS(net='alex', version='0.1').forward."""
    net = torchvision.models.alexnet()
    net.load_state_dict(alexnet_state, strict=False)  # features only; the classifier is unused
    slices = [net.features[a:b] for a, b in ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))]
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(x):
        h = (torch.tensor(x, dtype=torch.float32).permute(2, 0, 1)[None] / 255 * 2 - 1 - shift) / scale
        out = []
        for s in slices:
            h = s(h)
            out.append(h / (torch.sqrt(torch.sum(h**2, dim=1, keepdim=True)) + 1e-10))
        return out

    with torch.no_grad():
        val = 0.0
        for k, (f0, f1) in enumerate(zip(feats(x0), feats(x1))):
            lin = torch.nn.Conv2d(LPIPS_CHANNELS[k], 1, 1, bias=False)
            lin.weight.copy_(lins[f"lin{k}.model.1.weight"])
            val += lin((f0 - f1) ** 2).mean([2, 3]).item()
    return val


def _noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8)


# --- LPIPS ---


def test_lpips_matches_reference_and_is_labelled(lpips_store, fake_lpips_state, views, tmp_path):
    lp = load_lpips(lpips_store)
    assert lp is not None and lp.weights == "pretrained"
    sha_a = file_sha256(str(tmp_path / "models/lpips/alexnet.pth"))[:12]
    sha_l = file_sha256(str(tmp_path / "models/lpips/alex.pth"))[:12]
    assert lp.version == f"lpips-alex-v0.1@sha256:{sha_a}+{sha_l}"
    assert load_lpips(lpips_store) is lp  # cached per file version

    pred, target = views, views[[1, 2, 0]]
    expected = [_reference_lpips(p, t, *fake_lpips_state) for p, t in zip(pred, target)]
    np.testing.assert_allclose(lp.per_view(pred, target), expected, rtol=1e-4)
    np.testing.assert_allclose(lp.per_view(pred, target, batch_size=2), expected, rtol=1e-4)
    assert lp.distance(pred, target) == pytest.approx(np.mean(expected), rel=1e-4)
    assert lp.distance(pred[0], target[0]) == pytest.approx(expected[0], rel=1e-4)


def test_lpips_identity_symmetry_and_noise_monotone(lpips_store, views):
    lp = load_lpips(lpips_store)
    assert lp.distance(views, views) == 0.0
    a, b = views[0], views[1]
    assert lp.distance(a, b) > 0
    assert lp.distance(a, b) == pytest.approx(lp.distance(b, a), rel=1e-6)
    by_noise = [lp.distance(_noisy(views, s), views) for s in (4.0, 16.0, 48.0)]
    assert 0 < by_noise[0] < by_noise[1] < by_noise[2], by_noise


def test_lpips_rejects_bad_images(lpips_store, views):
    lp = load_lpips(lpips_store)
    with pytest.raises(ValueError, match="shapes differ"):
        lp.distance(views, views[:2])
    with pytest.raises(ValueError, match="uint8"):
        lp.distance(views.astype(np.float32), views.astype(np.float32))
    with pytest.raises(ValueError, match="at least 31x31"):
        lp.distance(views[:, :30, :30], views[:, :30, :30])


@pytest.mark.parametrize("present", ["lpips/alexnet.pth", "lpips/alex.pth", None])
def test_lpips_missing_file_gives_none(tmp_path, fake_lpips_state, present):
    alexnet, lins = fake_lpips_state
    if present is not None:
        _write(tmp_path, present, alexnet if present.endswith("alexnet.pth") else lins)
    (tmp_path / "models").mkdir(exist_ok=True)
    assert load_lpips(_store(tmp_path)) is None
    assert load_lpips(None) is None


@pytest.mark.parametrize("relpath", ["lpips/alexnet.pth", "lpips/alex.pth"])
def test_lpips_corrupt_file_names_it(tmp_path, fake_lpips_state, relpath):
    alexnet, lins = fake_lpips_state
    _write(tmp_path, "lpips/alexnet.pth", alexnet)
    _write(tmp_path, "lpips/alex.pth", lins)
    bad = tmp_path / "models" / relpath
    bad.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot be read") as err:
        load_lpips(_store(tmp_path))
    assert str(bad) in str(err.value)


def _renamed_lins(lins):  # the no-dropout NetLinLayer layout: model.0 instead of model.1
    return {k.replace("model.1", "model.0"): v for k, v in lins.items()}


def _narrow_lin3(lins):
    return {**lins, "lin3.model.1.weight": torch.rand(1, 128, 1, 1)}


def _classifier_only(alexnet):
    return {"classifier.1.weight": torch.rand(4, 4)}


def _alexnet_missing_conv5(alexnet):
    return {k: v for k, v in alexnet.items() if not k.startswith("features.10.")}


def _alexnet_wrong_shape(alexnet):
    return {**alexnet, "features.3.weight": torch.rand(192, 32, 5, 5)}


@pytest.mark.parametrize(
    "relpath, corrupt, message",
    [
        ("lpips/alex.pth", _renamed_lins, r"missing keys \['lin0.model.1.weight'"),
        ("lpips/alex.pth", _narrow_lin3, r"lin3.model.1.weight has shape \(1, 128, 1, 1\)"),
        ("lpips/alexnet.pth", _classifier_only, "no 'features.\\*' keys"),
        ("lpips/alexnet.pth", _alexnet_missing_conv5, "Missing key.*10.weight"),
        ("lpips/alexnet.pth", _alexnet_wrong_shape, "size mismatch for 3.weight"),
    ],
)
def test_lpips_wrong_keys_name_the_file(tmp_path, fake_lpips_state, relpath, corrupt, message):
    alexnet, lins = fake_lpips_state
    is_alexnet = relpath.endswith("alexnet.pth")
    _write(tmp_path, "lpips/alexnet.pth", corrupt(alexnet) if is_alexnet else alexnet)
    _write(tmp_path, "lpips/alex.pth", lins if is_alexnet else corrupt(lins))
    with pytest.raises(ValueError, match=message) as err:
        load_lpips(_store(tmp_path))
    assert str(tmp_path / "models" / relpath) in str(err.value)


# --- CLIP-S ---


@pytest.fixture(scope="module")
def tiny_clip_arch(tmp_path_factory):
    from svd_dag.curation.compat import import_open_clip

    folder = tmp_path_factory.mktemp("perceptual_open_clip_cfgs")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    import_open_clip().add_model_config(folder)
    yield TINY_CLIP
    clip_model.clear_cache()


def test_clip_similarity_from_stored_weights(tmp_path, tiny_clip_arch, views):
    source = build_open_clip(tiny_clip_arch, "clip", None, seed=3).model
    _write(tmp_path, f"clip/{tiny_clip_arch}.pt", {k: v.clone() for k, v in source.state_dict().items()})
    clip = load_clip_for_scoring(_store(tmp_path), arch=tiny_clip_arch)
    assert clip is not None and clip.weights == "pretrained"

    assert clip_similarity(views, views, clip) == pytest.approx(1.0, abs=1e-5)
    assert clip_similarity(views[0], views[0], clip) == pytest.approx(1.0, abs=1e-5)
    swapped = views[[1, 2, 0]]
    s = clip_similarity(views, swapped, clip)
    assert -1.0 <= s < 1.0 - 1e-4
    assert s == pytest.approx(clip_similarity(swapped, views, clip), abs=1e-6)
    # Mean over views of the per-pair cosine: the 3-view score is the mean of the 1-view ones.
    singles = [clip_similarity(p, t, clip) for p, t in zip(views, swapped)]
    assert s == pytest.approx(np.mean(singles), abs=1e-6)


def test_clip_similarity_not_computed_without_weights(tmp_path, tiny_clip_arch, views):
    (tmp_path / "models").mkdir()
    assert load_clip_for_scoring(_store(tmp_path), arch=tiny_clip_arch) is None
    assert load_clip_for_scoring(None, arch=tiny_clip_arch) is None
    with pytest.raises(ValueError, match="weights='random'"):
        clip_similarity(views, views, load_clip(tiny_clip_arch, None))
