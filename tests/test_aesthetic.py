"""LAION aesthetic heads: known answers on real CLIP embeddings of images rated 0..9."""

from __future__ import annotations

import os

import numpy as np
import pytest

from svd_dag.curation.aesthetic import load_aesthetic_head, score_embeddings
from svd_dag.model_store import ModelStore


def _ratings(shared_weights: str, sub: str) -> np.ndarray:
    folder = os.path.join(shared_weights, "laion-aesthetic", f"{sub}_embeddings")
    return np.concatenate([np.load(os.path.join(folder, f"rating{i}.npy")) for i in range(10)])


def _store(tmp_path, extra=()) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), str(tmp_path / "cache"), tuple(extra))


def _link(tmp_path, shared_weights, file: str, as_name: str | None = None) -> str:
    """Put one shared head into the store itself, under aesthetic/<name>."""
    target = tmp_path / "models" / "aesthetic" / (as_name or file)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(os.path.join(shared_weights, "laion-aesthetic", file))
    return str(target)


def _assert_increasing(scores: np.ndarray, first: float, last: float):
    assert np.all(np.diff(scores) > 0), scores
    assert scores[0] == pytest.approx(first, abs=0.3) and scores[-1] == pytest.approx(last, abs=0.3), scores


def test_v2_mlp_preferred_for_l14_and_scores_ratings_in_order(tmp_path, shared_weights):
    head = load_aesthetic_head("ViT-L-14", _store(tmp_path, [shared_weights]))
    assert (head.kind, head.file, head.embed_dim) == ("mlp_v2", "sac+logos+ava1-l14-linearMSE.pth", 768)
    assert head.version == "sac+logos+ava1-l14-linearMSE.pth@sha256:21dd590f3ccd"  # README's sha256
    _assert_increasing(score_embeddings(head, _ratings(shared_weights, "vit_l_14")), 1.66, 5.75)


def test_v1_linear_l14_from_the_store_itself(tmp_path, shared_weights):
    _link(tmp_path, shared_weights, "sa_0_4_vit_l_14_linear.pth")
    head = load_aesthetic_head("ViT-L-14", _store(tmp_path))
    assert (head.kind, head.embed_dim) == ("linear", 768)
    assert head.version.startswith("sa_0_4_vit_l_14_linear.pth@sha256:2cd4e60f4f24")
    _assert_increasing(score_embeddings(head, _ratings(shared_weights, "vit_l_14")), -2.5, 11.3)


def test_b32_linear_head_and_renormalisation(tmp_path, shared_weights):
    head = load_aesthetic_head("ViT-B-32", _store(tmp_path, [shared_weights]))
    assert (head.kind, head.embed_dim) == ("linear", 512)
    emb = _ratings(shared_weights, "vit_b_32")
    scores = score_embeddings(head, emb)
    _assert_increasing(scores, -1.47, 11.01)
    np.testing.assert_allclose(score_embeddings(head, 3.0 * emb), scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="512"):
        score_embeddings(head, np.ones((2, 768), np.float32))


def test_missing_head_lists_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_aesthetic_head("ViT-B-16", _store(tmp_path))
    msg = str(err.value)
    assert "aesthetic/sa_0_4_vit_b_16_linear.pth" in msg and "laion-aesthetic/sa_0_4_vit_b_16_linear.pth" in msg
    with pytest.raises(FileNotFoundError, match="RN50"):
        load_aesthetic_head("RN50", _store(tmp_path))


def test_head_of_the_wrong_shape_names_the_file(tmp_path, shared_weights):
    path = _link(tmp_path, shared_weights, "sa_0_4_vit_b_32_linear.pth", as_name="sa_0_4_vit_l_14_linear.pth")
    with pytest.raises(ValueError, match="sa_0_4_vit_l_14_linear.pth") as err:
        load_aesthetic_head("ViT-L-14", _store(tmp_path))
    assert path in str(err.value)


def test_unreadable_head_names_the_file(tmp_path):
    path = tmp_path / "models" / "aesthetic" / "sa_0_4_vit_b_32_linear.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=str(path)):
        load_aesthetic_head("ViT-B-32", _store(tmp_path))


def test_random_head_is_labelled_and_has_the_right_shape():
    from svd_dag.curation.aesthetic import random_head

    head = random_head(512)
    assert "random" in head.version and head.embed_dim == 512
    scores = score_embeddings(head, np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32))
    assert scores.shape == (3,)
