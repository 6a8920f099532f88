"""UNet surgery for the fine-tunes: wider inputs, one more vector condition, temporal LoRAs.

- `widen_conv_in`: the text-to-video UNet takes 4 latent channels; I2V takes 8 (latent +
  conditioning latent), interpolation 9 (+ mask). The new input channels start at zero, so
  the widened model computes exactly what its parent did until training moves them.
- `add_vector_conditions`: multi-view conditions on camera elevation. diffusers' video UNet
  embeds each entry of `added_time_ids` sinusoidally (`addition_time_embed_dim`) and
  projects their concatenation into the time embedding; one more entry widens that
  projection by one embedding's worth of zero-initialised columns (SV3D does the same).
- `add_temporal_lora` / `lora_state_dict` / `load_temporal_lora`: camera-motion adapters,
  peft LoRA on the temporal attention layers only (`temporal_transformer_blocks.*.attn1/attn2`),
  saved as small safetensors files with their peft config.
"""

from __future__ import annotations

import json
import os

import torch

LORA_TARGETS = r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _rebuild(unet, **changes):
    cls = type(unet)
    config = {**dict(unet.config), **changes}
    return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def widen_conv_in(unet, in_channels: int):
    """A copy of `unet` taking `in_channels` inputs; existing channels keep their weights, new ones are zero."""
    old = unet.conv_in.weight
    if in_channels == old.shape[1]:
        return unet
    if in_channels < old.shape[1]:
        raise ValueError(f"cannot narrow conv_in from {old.shape[1]} to {in_channels} channels")
    new = _rebuild(unet, in_channels=in_channels)
    state = unet.state_dict()
    weight = old.new_zeros(old.shape[0], in_channels, *old.shape[2:])
    weight[:, : old.shape[1]] = old
    state["conv_in.weight"] = weight
    new.load_state_dict(state)
    return new


def num_vector_conditions(unet) -> int:
    return unet.add_embedding.linear_1.in_features // unet.config.addition_time_embed_dim


def add_vector_conditions(unet, total: int):
    """A copy of `unet` whose `added_time_ids` has `total` entries (the new ones zero-initialised)."""
    dim = unet.config.addition_time_embed_dim
    have = num_vector_conditions(unet)
    if total == have:
        return unet
    if total < have:
        raise ValueError(f"cannot drop vector conditions ({have} -> {total})")
    new = _rebuild(unet, projection_class_embeddings_input_dim=total * dim)
    state = unet.state_dict()
    old = state["add_embedding.linear_1.weight"]
    weight = old.new_zeros(old.shape[0], total * dim)
    weight[:, : have * dim] = old
    state["add_embedding.linear_1.weight"] = weight
    new.load_state_dict(state)
    return new


def add_temporal_lora(unet, rank: int, alpha: float | None = None):
    """Inject a LoRA of `rank` on the temporal attention projections; freeze everything else.

    Returns the peft config. Only the LoRA matrices require grad afterwards."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS, init_lora_weights="gaussian")
    unet.requires_grad_(False)
    inject_adapter_in_model(config, unet)
    trainable = [n for n, p in unet.named_parameters() if "lora_" in n]
    if not trainable:
        raise ValueError("no temporal attention layer matched the LoRA targets: is this a video UNet?")
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    return config


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def save_temporal_lora(unet, config, folder: str) -> str:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    save_file(lora_state_dict(unet), os.path.join(folder, ADAPTER_FILE))
    with open(os.path.join(folder, ADAPTER_CONFIG), "w") as f:
        json.dump({"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": LORA_TARGETS,
                   "peft_type": "LORA", "base": "UNetSpatioTemporalConditionModel temporal attention"}, f, indent=2)
    return folder


def load_temporal_lora(unet, folder: str):
    """Inject and load a saved camera adapter into `unet` (in place); returns the unet."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    for name in (ADAPTER_FILE, ADAPTER_CONFIG):
        if not os.path.exists(os.path.join(folder, name)):
            raise FileNotFoundError(f"{folder}: not a camera adapter folder ({name} is missing)")
    with open(os.path.join(folder, ADAPTER_CONFIG)) as f:
        meta = json.load(f)
    config = LoraConfig(r=meta["r"], lora_alpha=meta["lora_alpha"], target_modules=meta["target_modules"])
    inject_adapter_in_model(config, unet)
    result = set_peft_model_state_dict(unet, load_file(os.path.join(folder, ADAPTER_FILE)))
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{folder}: adapter keys do not match this UNet: {result.unexpected_keys[:3]}")
    return unet
