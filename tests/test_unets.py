"""Stage-I image UNet and its inflation into the stage-II spatio-temporal UNet."""

from __future__ import annotations

import os

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.resnet import AlphaBlender

from svd_dag.training.edm import edm_scalings
from svd_dag.training.unets import (
    TINY_ADDITION_TIME_EMBED_DIM,
    build_image_unet,
    check_inflatable,
    count_parameters,
    full_image_unet_config,
    image_only_indicator,
    inflate_image_unet,
    tiny_image_unet_config,
    video_key_for,
    video_unet_config_from_image,
)

B, F, C, H, W = 2, 3, 4, 16, 16


def _video_config(image_unet, **kw):
    kw.setdefault("num_frames", F)
    kw.setdefault("addition_time_embed_dim", TINY_ADDITION_TIME_EMBED_DIM)
    return video_unet_config_from_image(image_unet.config, **kw)


@pytest.fixture(scope="module")
def image_unet():
    torch.manual_seed(0)
    return build_image_unet(tiny_image_unet_config()).eval()


@pytest.fixture(scope="module")
def inflated(image_unet):
    torch.manual_seed(1)
    unet, report = inflate_image_unet(image_unet, _video_config(image_unet))
    return unet.eval(), report


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(B, F, C, H, W, generator=g)
    c_noise = edm_scalings(torch.tensor([0.3, 4.0]))[3]  # EDM timestep: 0.25 ln sigma, per video
    text = torch.randn(B, 7, 32, generator=g)  # one text embedding per video
    ids = torch.tensor([[6.0, 127.0, 0.02], [24.0, 30.0, 0.1]])
    return sample, c_noise, text, ids


def _stage1_per_frame(image_unet, sample, c_noise, text):
    with torch.no_grad():
        out = image_unet(
            sample.flatten(0, 1), c_noise.repeat_interleave(F), text.repeat_interleave(F, dim=0)
        ).sample
    return out.reshape(B, F, C, H, W)


def _run(unet, inputs, indicator=None):
    sample, c_noise, text, ids = inputs
    with torch.no_grad():
        if indicator is None:
            return unet(sample, c_noise, text, ids).sample
        with image_only_indicator(unet, indicator):
            return unet(sample, c_noise, text, ids).sample


def _spatial_resnet_norms(unet):
    return [
        norm
        for name, module in unet.named_modules()
        if name.endswith("spatial_res_block")
        for norm in (module.norm1, module.norm2)
    ]


def test_spatial_only_path_reproduces_stage1_frame_by_frame(image_unet, inflated, inputs):
    unet, _ = inflated
    expected = _stage1_per_frame(image_unet, *inputs[:3])
    assert expected.abs().mean() > 0.1

    # As built: diffusers hard-codes GroupNorm eps 1e-6 in CrossAttnDownBlockSpatioTemporal's
    # resnets (SD uses 1e-5), the one difference the weights cannot carry.
    torch.testing.assert_close(_run(unet, inputs, 1.0), expected, atol=1e-3, rtol=0)

    norms = _spatial_resnet_norms(unet)
    original_eps = [n.eps for n in norms]
    assert sorted(set(original_eps)) == [1e-6, 1e-5]
    for n in norms:
        n.eps = image_unet.config.norm_eps
    try:
        torch.testing.assert_close(_run(unet, inputs, 1.0), expected, atol=1e-5, rtol=0)
        # Per-frame tensor indicator works the same way.
        torch.testing.assert_close(_run(unet, inputs, torch.ones(B, F)), expected, atol=1e-5, rtol=0)
    finally:
        for n, eps in zip(norms, original_eps):
            n.eps = eps


def test_temporal_path_is_live_by_default(image_unet, inflated, inputs):
    unet, _ = inflated
    expected = _stage1_per_frame(image_unet, *inputs[:3])
    default = _run(unet, inputs)
    assert (default - expected).abs().max() > 1e-2
    torch.testing.assert_close(_run(unet, inputs, 0.0), default, atol=0, rtol=0)
    # The hooks are gone after the context manager: back to the temporal path.
    _run(unet, inputs, 1.0)
    torch.testing.assert_close(_run(unet, inputs), default, atol=0, rtol=0)


def test_new_layers_initialisation(inflated, inputs):
    unet, _ = inflated
    blenders = [m for m in unet.modules() if isinstance(m, AlphaBlender)]
    assert len(blenders) > 0
    for m in blenders:
        assert m.merge_strategy == "learned_with_images"
        assert torch.sigmoid(m.mix_factor).item() == pytest.approx(0.5)
    # Zero last layer of the micro-conditioning MLP: fps/motion/noise ids change nothing yet.
    sample, c_noise, text, ids = inputs
    other = (sample, c_noise, text, ids * torch.tensor([3.0, 0.5, 10.0]))
    torch.testing.assert_close(_run(unet, other), _run(unet, inputs), atol=0, rtol=0)


def test_micro_conditioning_reaches_output_once_trained(image_unet, inputs):
    unet, _ = inflate_image_unet(image_unet, _video_config(image_unet))
    unet.eval()
    with torch.no_grad():
        unet.add_embedding.linear_2.weight.normal_(std=0.1)
    sample, c_noise, text, ids = inputs
    other = (sample, c_noise, text, ids * torch.tensor([3.0, 0.5, 10.0]))
    assert (_run(unet, other) - _run(unet, inputs)).abs().max() > 1e-3


def test_inflation_report(image_unet, inflated):
    unet, report = inflated
    image_keys = set(image_unet.state_dict())
    assert set(report.copied.values()) == image_keys
    assert set(report.copied) | set(report.new) == set(unet.state_dict())
    resnet_conv = "down_blocks.0.resnets.0.spatial_res_block.conv1.weight"
    assert report.copied[resnet_conv] == "down_blocks.0.resnets.0.conv1.weight"
    assert report.copied["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    )
    assert "add_embedding.linear_2.weight" in report.new
    assert report.copied_params == count_parameters(image_unet)
    assert report.copied_params + report.new_params == count_parameters(unet)
    print(f"\ntiny: {report.summary()}; total {count_parameters(unet):,}")
    # Copied weights are values, not shared storage with stage I.
    w = unet.conv_out.weight
    assert torch.equal(w, image_unet.conv_out.weight) and w.data_ptr() != image_unet.conv_out.weight.data_ptr()


def test_full_size_inflation_matches_paper_counts():
    # Meta tensors: the full SD 2.1 -> SVD mapping is checked without allocating 6 GB.
    with init_empty_weights():
        image = build_image_unet(full_image_unet_config())
        unet, report = inflate_image_unet(image, video_unet_config_from_image(image.config, num_frames=14))
    n_image, n_video = count_parameters(image), count_parameters(unet)
    assert report.copied_params == n_image
    assert 860e6 < n_image < 870e6  # SD 2.1 UNet: 866M
    temporal = report.new_params - count_parameters(unet.add_embedding)
    assert abs(temporal - 656e6) / 656e6 < 0.01  # SPEC: 656M new params
    assert abs(n_video - 1521e6) / 1521e6 < 0.01  # SPEC: 1521M total
    print(f"\nfull: image {n_image:,}; video {n_video:,}; {report.summary()}")


def test_conv_in_gains_zero_channels_for_image_to_video(image_unet, inputs):
    unet, report = inflate_image_unet(image_unet, _video_config(image_unet, in_channels=8))
    unet.eval()
    assert report.expanded == ["conv_in.weight"]
    sample, c_noise, text, ids = inputs
    cond_a = torch.cat([sample, torch.randn_like(sample)], dim=2)
    cond_b = torch.cat([sample, torch.randn_like(sample)], dim=2)
    out_a = _run(unet, (cond_a, c_noise, text, ids), 1.0)
    torch.testing.assert_close(out_a, _run(unet, (cond_b, c_noise, text, ids), 1.0), atol=0, rtol=0)


def test_inflation_fails_loudly_on_mismatch(image_unet):
    bad = _video_config(image_unet)
    bad["cross_attention_dim"] = 64
    with pytest.raises(ValueError, match="attn2.to_k.weight"):
        inflate_image_unet(image_unet, bad)
    bad = _video_config(image_unet)
    bad["layers_per_block"] = 2
    with pytest.raises(ValueError, match="uninitialised outside the temporal layers"):
        inflate_image_unet(image_unet, bad)
    with pytest.raises(ValueError, match="use_linear_projection"):
        check_inflatable({**tiny_image_unet_config(), "use_linear_projection": False})
    with pytest.raises(ValueError, match="spatio-temporal twin"):
        blocks = ("SimpleCrossAttnDownBlock2D", "DownBlock2D")
        check_inflatable({**tiny_image_unet_config(), "down_block_types": blocks})


def test_key_mapping_rules():
    assert video_key_for("up_blocks.1.resnets.2.norm1.weight") == "up_blocks.1.resnets.2.spatial_res_block.norm1.weight"
    assert video_key_for("mid_block.resnets.1.conv2.bias") == "mid_block.resnets.1.spatial_res_block.conv2.bias"
    unchanged = (
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "up_blocks.0.attentions.1.proj_in.weight",
        "up_blocks.0.attentions.1.transformer_blocks.0.ff.net.2.weight",
        "conv_norm_out.bias",
    )
    for same in unchanged:
        assert video_key_for(same) == same


def test_save_and_load_roundtrip(inflated, inputs, tmp_path):
    unet, _ = inflated
    unet.save_pretrained(tmp_path, safe_serialization=True)
    assert os.path.exists(tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_run(loaded, inputs), _run(unet, inputs), atol=0, rtol=0)
    torch.testing.assert_close(_run(loaded, inputs, 1.0), _run(unet, inputs, 1.0), atol=0, rtol=0)
