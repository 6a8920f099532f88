"""Stage models: the stage-I image UNet and its inflation into the stage-II video UNet.

Stage I is a diffusers `UNet2DConditionModel` (SD 2.1's architecture at full size).
Stage II inflates it into diffusers' `UNetSpatioTemporalConditionModel` (SVD's
architecture, so later checkpoints load in the SVD pipeline): every spatial layer is
copied; the temporal layers (temporal resnets with 3x1x1 convolutions, temporal
attention, the frame-index embedding) and the micro-conditioning MLP are new.

Inflation mapping (image key -> video key):
  * `<down_blocks.i|up_blocks.i|mid_block>.resnets.j.<rest>` ->
    `<same>.resnets.j.spatial_res_block.<rest>` (the ResnetBlock2D inside a
    SpatioTemporalResBlock);
  * every other key is identical: conv_in, time_embedding, attentions.* (norm, proj_in,
    transformer_blocks, proj_out of a TransformerSpatioTemporalModel are named as in
    Transformer2DModel), down/upsamplers, conv_norm_out, conv_out.
  Video keys not produced by the mapping must be temporal (`temporal_res_block`,
  `temporal_transformer_blocks`, `time_pos_embed`, `time_mixer`) or the
  micro-conditioning `add_embedding`; anything else is an error.

Initialisation of the new parts:
  * every AlphaBlender `mix_factor` is set to logit(mix_alpha) so that the spatial branch
    gets weight sigmoid(mix_factor) = mix_alpha = 0.5 (SPEC). diffusers' and sgm's own
    default is mix_factor = 0.5, i.e. a weight of sigmoid(0.5) = 0.62, not 0.5.
  * `add_embedding.linear_2` (the last layer of the micro-conditioning MLP) is zero, so
    fps / motion / noise-strength add nothing to the time embedding at init.
  * the rest keeps diffusers' default initialisation.

Temporal path switch. `UNetSpatioTemporalConditionModel.forward` builds its own
`image_only_indicator` (all zeros: every frame is video) and does not expose it. Rather
than subclassing (which would change the class name saved in checkpoints that the SVD
pipeline must load), `image_only_indicator(unet, 1.0)` is a context manager that rewrites
the indicator the forward passes to each down/mid/up block, through forward pre-hooks.
With the indicator at 1 every AlphaBlender ("learned_with_images") uses alpha = 1: the
output is the spatial branch alone, i.e. the stage-I UNet applied frame by frame.

One known numerical difference: diffusers' CrossAttnDownBlockSpatioTemporal builds its
spatial resnets with GroupNorm eps 1e-6 where UNet2DConditionModel (SD 2.1) uses 1e-5.
That eps is hard-coded in diffusers (not in the config, not in the weights, so changing it
on a model would not survive save/load) and is left alone: on the tiny random-init model
the spatial-only output then differs from stage I by ~1e-4 (outputs of order 1), and by
~1e-6 with that eps aligned.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from diffusers import UNet2DConditionModel, UNetSpatioTemporalConditionModel
from diffusers.models.resnet import AlphaBlender

logger = logging.getLogger(__name__)

NUM_MICRO_CONDITIONS = 3  # fps - 1, motion bucket id, conditioning-noise strength
FULL_ADDITION_TIME_EMBED_DIM = 256
TINY_ADDITION_TIME_EMBED_DIM = 32

_BLOCK_MAP = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlockSpatioTemporal",
    "DownBlock2D": "DownBlockSpatioTemporal",
    "UpBlock2D": "UpBlockSpatioTemporal",
    "CrossAttnUpBlock2D": "CrossAttnUpBlockSpatioTemporal",
}

# Image-UNet options the spatio-temporal UNet hard-codes: any other value would make the
# inflated model compute something different from stage I.
_REQUIRED_IMAGE_CONFIG = {
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "encoder_hid_dim": None,
    "dual_cross_attention": False,
    "use_linear_projection": True,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}


# --------------------------------------------------------------------------- configs


def full_image_unet_config(latent_channels: int = 4) -> dict[str, Any]:
    """SD 2.1's UNet (stabilityai/stable-diffusion-2-1 unet/config.json), ~866M params."""
    return {
        "sample_size": 96,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "cross_attention_dim": 1024,
        # diffusers' legacy name: for UNet2DConditionModel this is the number of heads.
        "attention_head_dim": (5, 10, 20, 20),
        "use_linear_projection": True,
        "upcast_attention": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
    }


def tiny_image_unet_config(
    latent_channels: int = 4, cross_attention_dim: int = 32, sample_size: int = 16
) -> dict[str, Any]:
    """A small UNet with SD 2.1's structure (channels multiple of 32 for GroupNorm)."""
    return {
        "sample_size": sample_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": (2, 4),  # heads; 16 channels per head
        "use_linear_projection": True,
        "upcast_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
    }


def _heads(image_config: Mapping[str, Any]) -> tuple[int, ...]:
    heads = image_config.get("num_attention_heads") or image_config.get("attention_head_dim", 8)
    n_blocks = len(image_config["down_block_types"])
    return (heads,) * n_blocks if isinstance(heads, int) else tuple(heads)


def _full_image_config(image_config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with UNet2DConditionModel's defaults filled in."""
    params = inspect.signature(UNet2DConditionModel.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in image_config.items() if not k.startswith("_")}}


def check_inflatable(image_config: Mapping[str, Any]) -> None:
    """ValueError listing every option of the image UNet the video UNet cannot reproduce."""
    cfg = _full_image_config(image_config)
    problems = [
        f"{k}={cfg.get(k)!r} (needs {v!r})"
        for k, v in _REQUIRED_IMAGE_CONFIG.items()
        if not (cfg.get(k) == v or (isinstance(v, float) and math.isclose(cfg.get(k) or 0.0, v)))
    ]
    only_cross = cfg.get("only_cross_attention", False)
    if any(only_cross if isinstance(only_cross, (list, tuple)) else [only_cross]):
        problems.append(f"only_cross_attention={only_cross!r} (needs False)")
    if cfg.get("mid_block_only_cross_attention"):
        problems.append("mid_block_only_cross_attention=True (needs False)")
    if cfg.get("dropout", 0.0) != 0.0:
        problems.append(f"dropout={cfg['dropout']!r} (needs 0.0)")
    for name in ("down_block_types", "up_block_types"):
        unknown = [b for b in cfg[name] if b not in _BLOCK_MAP]
        if unknown:
            problems.append(f"{name} has blocks without a spatio-temporal twin: {unknown}")
    tlpb = cfg.get("transformer_layers_per_block", 1)
    if not isinstance(tlpb, int) and any(not isinstance(t, int) for t in tlpb):
        problems.append(f"transformer_layers_per_block={tlpb!r} (needs ints)")
    if problems:
        raise ValueError("image UNet config cannot be inflated exactly: " + "; ".join(problems))


def video_unet_config_from_image(
    image_config: Mapping[str, Any],
    *,
    num_frames: int,
    in_channels: int | None = None,
    addition_time_embed_dim: int = FULL_ADDITION_TIME_EMBED_DIM,
    sample_size: int | None = None,
) -> dict[str, Any]:
    """UNetSpatioTemporalConditionModel config with the image UNet's spatial structure.

    in_channels: latent channels of the input (default: the image UNet's; 4 for T2V
    stages II/III, 8 for image-to-video where the conditioning latent is concatenated).
    addition_time_embed_dim: sinusoidal width of each of the 3 micro-conditions
    (256 full size; TINY_ADDITION_TIME_EMBED_DIM for the tiny profile).
    """
    check_inflatable(image_config)
    if addition_time_embed_dim % 2:
        raise ValueError("addition_time_embed_dim must be even (sin/cos halves)")
    cfg = _full_image_config(image_config)
    return {
        "sample_size": sample_size if sample_size is not None else cfg["sample_size"],
        "in_channels": in_channels if in_channels is not None else cfg["in_channels"],
        "out_channels": cfg["out_channels"],
        "down_block_types": tuple(_BLOCK_MAP[b] for b in cfg["down_block_types"]),
        "up_block_types": tuple(_BLOCK_MAP[b] for b in cfg["up_block_types"]),
        "block_out_channels": tuple(cfg["block_out_channels"]),
        "addition_time_embed_dim": addition_time_embed_dim,
        "projection_class_embeddings_input_dim": NUM_MICRO_CONDITIONS * addition_time_embed_dim,
        "layers_per_block": cfg["layers_per_block"],
        "cross_attention_dim": cfg["cross_attention_dim"],
        "transformer_layers_per_block": cfg.get("transformer_layers_per_block", 1),
        "num_attention_heads": _heads(cfg),
        "num_frames": num_frames,
    }


def build_image_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    """Stage-I UNet from a config (random init)."""
    return UNet2DConditionModel.from_config(dict(config))


def build_video_unet(config: Mapping[str, Any]) -> UNetSpatioTemporalConditionModel:
    """Spatio-temporal UNet from a config (random init; use inflate_image_unet for stage II)."""
    return UNetSpatioTemporalConditionModel.from_config(dict(config))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------- inflation

_RESNET_KEY = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.resnets\.(\d+)\.")
_TEMPORAL_KEY = re.compile(
    r"(^|\.)(temporal_res_block|temporal_transformer_blocks|time_pos_embed|time_mixer)\.|^add_embedding\."
)


def video_key_for(image_key: str) -> str:
    """The video-UNet state-dict key that receives an image-UNet key's weight."""
    return _RESNET_KEY.sub(r"\1.resnets.\2.spatial_res_block.", image_key)


@dataclass
class InflationReport:
    copied: dict[str, str] = field(default_factory=dict)  # video key -> image key
    expanded: list[str] = field(default_factory=list)  # copied with zero-padded input channels
    new: list[str] = field(default_factory=list)  # newly initialised video keys
    copied_params: int = 0
    new_params: int = 0

    def summary(self) -> str:
        return (
            f"inflation: {len(self.copied)} tensors copied ({self.copied_params:,} params), "
            f"{len(self.new)} new ({self.new_params:,} params)"
            + (f", input channels expanded: {self.expanded}" if self.expanded else "")
        )


class Inflation(NamedTuple):
    unet: UNetSpatioTemporalConditionModel
    report: InflationReport


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError("mix_alpha must be in (0, 1)")
    return math.log(p / (1.0 - p))


@torch.no_grad()
def inflate_image_unet(
    image_unet: UNet2DConditionModel,
    video_config: Mapping[str, Any],
    *,
    mix_alpha: float = 0.5,
) -> Inflation:
    """Stage-II video UNet: stage-I spatial weights copied, temporal layers new.

    Returns the model (float32, on CPU, train mode) and a report of copied and new keys.
    Raises ValueError if an image key has no video counterpart, a shape differs, or a
    video key outside the temporal layers would be left uninitialised. conv_in may gain
    input channels (image-to-video): the extra ones start at zero.
    """
    check_inflatable(image_unet.config)
    video = build_video_unet(video_config)
    image_sd = image_unet.state_dict()
    video_sd = video.state_dict()
    report = InflationReport()
    load: dict[str, torch.Tensor] = {}
    unmapped, mismatched = [], []
    for key, value in image_sd.items():
        vkey = video_key_for(key)
        if vkey not in video_sd:
            unmapped.append(f"{key} -> {vkey}")
            continue
        target = video_sd[vkey]
        if target.shape != value.shape:
            grows_input = (
                vkey == "conv_in.weight"
                and target.ndim == 4
                and target.shape[0] == value.shape[0]
                and target.shape[1] > value.shape[1]
                and target.shape[2:] == value.shape[2:]
            )
            if not grows_input:
                mismatched.append(f"{key} {tuple(value.shape)} -> {vkey} {tuple(target.shape)}")
                continue
            padded = torch.zeros_like(target)
            padded[:, : value.shape[1]] = value
            value = padded
            report.expanded.append(vkey)
        load[vkey] = value
        report.copied[vkey] = key
    report.new = [k for k in video_sd if k not in report.copied]
    non_temporal = [k for k in report.new if not _TEMPORAL_KEY.search(k)]
    problems = {
        "image keys with no video key": unmapped,
        "shape mismatches": mismatched,
        "video keys left uninitialised outside the temporal layers": non_temporal,
    }
    if any(problems.values()):
        raise ValueError(
            "cannot inflate the image UNet:" + "".join(f"\n  {what}: {keys}" for what, keys in problems.items() if keys)
        )
    missing, unexpected = video.load_state_dict(load, strict=False)
    assert not unexpected and set(missing) == set(report.new)

    for module in video.modules():
        if isinstance(module, AlphaBlender):
            module.mix_factor.fill_(_logit(mix_alpha))
    video.add_embedding.linear_2.weight.zero_()
    video.add_embedding.linear_2.bias.zero_()

    params = dict(video.named_parameters())
    report.copied_params = sum(params[k].numel() for k in report.copied if k in params)
    report.new_params = sum(params[k].numel() for k in report.new if k in params)
    logger.info(report.summary())
    return Inflation(video, report)


@contextmanager
def image_only_indicator(
    unet: UNetSpatioTemporalConditionModel, indicator: float | torch.Tensor = 1.0
) -> Iterator[UNetSpatioTemporalConditionModel]:
    """Run `unet`'s forward with a chosen image_only_indicator ([B, F], 1 = image frame).

    A float fills the indicator the forward would have built (1.0: temporal path off in
    every block, the spatial-only model; 0.0: diffusers' default). A tensor [B, F] sets
    it per frame, e.g. for joint image/video batches.
    """

    def hook(module, args, kwargs):
        current = kwargs.get("image_only_indicator")
        if current is None:
            raise RuntimeError(f"{type(module).__name__} was called without image_only_indicator")
        if isinstance(indicator, torch.Tensor):
            if indicator.shape != current.shape:
                raise ValueError(f"indicator shape {tuple(indicator.shape)} != {tuple(current.shape)}")
            kwargs["image_only_indicator"] = indicator.to(current)
        else:
            kwargs["image_only_indicator"] = torch.full_like(current, float(indicator))
        return args, kwargs

    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in blocks]
    try:
        yield unet
    finally:
        for h in handles:
            h.remove()


__all__ = [
    "FULL_ADDITION_TIME_EMBED_DIM",
    "NUM_MICRO_CONDITIONS",
    "TINY_ADDITION_TIME_EMBED_DIM",
    "Inflation",
    "InflationReport",
    "build_image_unet",
    "build_video_unet",
    "check_inflatable",
    "count_parameters",
    "full_image_unet_config",
    "image_only_indicator",
    "inflate_image_unet",
    "tiny_image_unet_config",
    "video_key_for",
    "video_unet_config_from_image",
]
