"""CLIP embeddings: random-init ViT-B-32, and the store loader on a tiny registered arch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data

from svd_dag.curation import clip_model
from svd_dag.curation.clip_model import embed_images, embed_texts, load_clip, load_clip_text
from svd_dag.curation.devices import Placement
from svd_dag.model_store import ModelStore, file_sha256

TINY = "svdtest-tiny-clip"
TINY_NARROW = "svdtest-tiny-clip-narrow"


def _tiny_cfg(embed_dim: int) -> dict:
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module", autouse=True)
def tiny_archs(tmp_path_factory):
    from svd_dag.curation.compat import import_open_clip

    folder = tmp_path_factory.mktemp("open_clip_cfgs")
    (folder / f"{TINY}.json").write_text(json.dumps(_tiny_cfg(32)))
    (folder / f"{TINY_NARROW}.json").write_text(json.dumps(_tiny_cfg(16)))
    import_open_clip().add_model_config(folder)
    yield
    clip_model.clear_cache()


@pytest.fixture
def frames():
    return [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]


def _store(tmp_path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), str(tmp_path / "cache"))


def _save_state(model, path, fmt: str):
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, str(path))


def test_random_vit_b32_embeds_images_and_texts(frames):
    m = load_clip("ViT-B-32", None)
    assert (m.arch, m.weights, m.version, m.embed_dim) == ("ViT-B-32", "random", "ViT-B-32@random-init-seed0", 512)
    assert load_clip("ViT-B-32", None) is m  # cached: one load per process

    emb = embed_images(m, frames + [frames[0]])
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[3], emb[0], atol=1e-6)
    assert np.abs(emb[0] - emb[1]).max() > 1e-3 and np.abs(emb[1] - emb[2]).max() > 1e-3
    np.testing.assert_allclose(embed_images(m, frames, batch_size=2), emb[:3], atol=1e-5)
    assert embed_images(m, []).shape == (0, 512)

    txt = embed_texts(m, ["a cat on a sofa", "a cup of coffee"])
    assert txt.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert np.abs(txt[0] - txt[1]).max() > 1e-3


def test_random_init_is_seeded(frames):
    a = embed_images(load_clip(TINY, None, seed=0), frames)
    clip_model.clear_cache()
    b = embed_images(load_clip(TINY, None, seed=0), frames)
    c = embed_images(load_clip(TINY, None, seed=1), frames)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert load_clip(TINY, None, seed=1).version == f"{TINY}@random-init-seed1"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_stored_weights_are_loaded_and_versioned(tmp_path, frames, fmt):
    source = load_clip(TINY, None, seed=7)
    path = tmp_path / "models" / "clip" / f"{TINY}.{fmt}"
    _save_state(source.model, path, fmt)

    m = load_clip(TINY, _store(tmp_path), seed=0)
    assert m.weights == "pretrained"
    assert m.version == f"{TINY}@sha256:{file_sha256(str(path))[:12]}"
    np.testing.assert_allclose(embed_images(m, frames), embed_images(source, frames), atol=1e-6)
    assert np.abs(embed_images(m, frames) - embed_images(load_clip(TINY, None, seed=0), frames)).max() > 1e-3


def test_corrupt_weight_file_names_the_file(tmp_path):
    path = tmp_path / "models" / "clip" / f"{TINY}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match=str(path)):
        load_clip(TINY, _store(tmp_path))


@pytest.mark.parametrize("loader, message", [(load_clip, "size mismatch"), (load_clip_text, "text tower")])
def test_mismatched_weight_file_names_the_file(tmp_path, loader, message):
    path = tmp_path / "models" / "clip" / f"{TINY}.safetensors"
    _save_state(load_clip(TINY_NARROW, None).model, path, "safetensors")
    with pytest.raises(ValueError, match=message) as err:
        loader(TINY, _store(tmp_path))
    assert str(path) in str(err.value)


def test_the_text_tower_alone_embeds_like_the_whole_clip(tmp_path):
    texts = ["a cat on a sofa", "a cup of coffee", ""]
    path = tmp_path / "models" / "clip" / f"{TINY}.safetensors"
    _save_state(load_clip(TINY, None, seed=3).model, path, "safetensors")
    whole, text = load_clip(TINY, _store(tmp_path)), load_clip_text(TINY, _store(tmp_path))
    assert text.weights == "pretrained" and text.version == whole.version
    np.testing.assert_allclose(embed_texts(text, texts), embed_texts(whole, texts), atol=1e-6)
    assert sum(p.numel() for p in text.model.parameters()) < sum(p.numel() for p in whole.model.parameters())
    random_text = load_clip_text(TINY, None)
    assert (random_text.weights, random_text.version) == ("random", f"{TINY}-text@random-init-seed0")
    assert embed_texts(random_text, texts).shape == (3, 32)



def _clip_frames(image, n: int = 3) -> list[np.ndarray]:
    """n frames of one 'clip': the image panning right a few pixels a frame."""
    return [np.ascontiguousarray(image[:, 8 * i: image.shape[1] - 8 * (n - i)]) for i in range(n)]


def test_frames_of_two_clips_embed_alike_in_one_batch_and_one_by_one():
    m = load_clip("ViT-B-32", None)
    assert (m.device, m.dtype, m.batch_frames) == ("cpu", "fp32", 32)  # Placement() without CUDA
    frames = _clip_frames(skimage.data.astronaut()) + _clip_frames(skimage.data.coffee())  # two sizes
    batched = embed_images(m, frames)  # one forward pass of all six
    single = np.concatenate([embed_images(m, [f]) for f in frames])
    assert batched.shape == (6, 512) and batched.dtype == np.float32
    assert np.abs(batched - single).max() <= 1e-5  # measured ~1e-7 (fp32 rounding)
    assert (batched * single).sum(axis=1).min() >= 0.99999
    m4 = load_clip("ViT-B-32", None, placement=Placement("cpu", "fp32", batch_frames=4))
    assert m4.batch_frames == 4 and m4.model is m.model  # the batch size does not reload the model
    assert np.abs(embed_images(m4, frames) - single).max() <= 1e-5


def test_bf16_on_cpu_is_close_to_fp32_and_cached_apart(frames):
    import torch

    fp32 = load_clip(TINY, None)
    bf16 = load_clip(TINY, None, placement=Placement("cpu", "bf16"))
    assert (bf16.device, bf16.dtype) == ("cpu", "bf16") and bf16.version == fp32.version
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32  # the cached fp32 model is untouched
    assert load_clip(TINY, None, placement=Placement("cpu", "bf16")) is bf16
    a, b = embed_images(fp32, frames), embed_images(bf16, frames)
    assert b.dtype == np.float32
    assert (a * b).sum(axis=1).min() >= 0.999 and np.abs(a - b).max() <= 0.02  # measured cos >= 0.9999, 3e-3
    texts = ["a cat on a sofa", "a cup of coffee"]
    ta = embed_texts(fp32, texts)
    for tm in (bf16, load_clip_text(TINY, None, placement=Placement("cpu", "bf16"))):
        tb = embed_texts(tm, texts)
        assert tb.dtype == np.float32
        ref = ta if tm is bf16 else embed_texts(load_clip_text(TINY, None), texts)
        assert (ref * tb).sum(axis=1).min() >= 0.999 and np.abs(ref - tb).max() <= 0.02


def test_cuda_on_a_machine_without_one_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for loader in (load_clip, load_clip_text):
        with pytest.raises(RuntimeError, match="no CUDA device"):
            loader(TINY, None, placement=Placement(device="cuda"))
