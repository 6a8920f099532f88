"""Micro-conditioning ids (fps - 1, motion bucket, noise strength) and text dropout."""

from __future__ import annotations

import pytest
import torch

from svd_dag.training.conditioning import (
    SVD_DEFAULT_MOTION_BUCKET,
    added_time_ids,
    drop_text_conditioning,
    motion_bucket_id,
    text_dropout_mask,
)


def test_motion_bucket_mapping_is_linear_monotone_and_clipped():
    assert motion_bucket_id(0.0) == 0
    assert motion_bucket_id(-3.0) == 0
    assert motion_bucket_id(20.0) == 255
    assert motion_bucket_id(500.0) == 255
    assert motion_bucket_id(5.0) == 64  # round(255 / 4)
    assert abs(motion_bucket_id(10.0) - SVD_DEFAULT_MOTION_BUCKET) <= 1
    assert motion_bucket_id(4.0, saturation_score=8.0) == 128
    assert motion_bucket_id(1.0, saturation_score=1.0, max_bucket=100) == 100

    scores = torch.linspace(-5, 40, 1000)
    buckets = motion_bucket_id(scores)
    assert buckets.dtype == torch.long and buckets.shape == (1000,)
    assert (buckets[1:] >= buckets[:-1]).all()
    assert buckets.min() == 0 and buckets.max() == 255
    assert len(set(buckets.tolist())) == 256  # every bucket reachable


def test_motion_bucket_rejects_unscored_and_bad_saturation():
    with pytest.raises(ValueError):
        motion_bucket_id(float("nan"))
    with pytest.raises(ValueError):
        motion_bucket_id(1.0, saturation_score=0.0)


def test_added_time_ids_order_and_fps_minus_one():
    ids = added_time_ids(fps=7, motion_bucket_id=127, cond_noise_strength=0.02)
    assert ids.shape == (1, 3) and ids.dtype == torch.float32
    torch.testing.assert_close(ids, torch.tensor([[6.0, 127.0, 0.02]]))

    ids = added_time_ids(torch.tensor([6, 30]), [10, 200], 0.1)
    torch.testing.assert_close(ids, torch.tensor([[5.0, 10.0, 0.1], [29.0, 200.0, 0.1]]))
    assert added_time_ids(8, 1, 0.0, batch_size=4).shape == (4, 3)
    with pytest.raises(ValueError):
        added_time_ids([6, 7], [1, 2, 3], 0.0)
    with pytest.raises(ValueError):
        added_time_ids([6, 7], 1, 0.0, batch_size=3)


def test_text_dropout_rate_and_exact_zeros():
    n, p = 20_000, 0.15
    emb = torch.randn(n, 3, 8) + 5.0  # no accidental zeros
    g = torch.Generator().manual_seed(0)
    out = drop_text_conditioning(emb, p=p, generator=g)
    dropped = (out == 0).all(dim=(1, 2))
    kept_untouched = (out == emb).all(dim=(1, 2))
    assert (dropped ^ kept_untouched).all()  # each sample is either all zeros or unchanged
    rate = dropped.float().mean().item()
    assert abs(rate - p) < 0.01  # standard error sqrt(p(1-p)/n) ~ 0.0025
    assert emb.abs().min() > 0  # input not modified in place


def test_text_dropout_edges_and_reproducibility():
    emb = torch.ones(64, 4)
    assert torch.equal(drop_text_conditioning(emb, p=0.0), emb)
    assert torch.equal(drop_text_conditioning(emb, p=1.0), torch.zeros_like(emb))
    a = text_dropout_mask(64, 0.5, torch.Generator().manual_seed(3))
    b = text_dropout_mask(64, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and 0 < a.sum() < 64
    with pytest.raises(ValueError):
        text_dropout_mask(4, 1.5)
