"""The end of a training run: final weights in diffusers layout, the clips it used, the code
that trained it, and sample videos, published to storage once (rank 0 only)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

from svd_dag.training.config import TrainConfig

def _weights_digest(folder: str) -> str:
    from svd_dag.storage import Store, tree_digest

    return tree_digest(Store(folder), folder, ".safetensors")[:16]


def save_final(cfg: TrainConfig, unet, ema, trainable, vae, vae_weights: str, encoder, lora, info: dict,
                parent_meta: dict, dataset, say, usage) -> dict[str, Any]:
    """Write the final weights to `cfg.output_uri`.

    Text stages: unet/ (raw), unet_ema/, vae/. Image fine-tunes: a diffusers pipeline layout with
    unet/ = EMA weights (what a user samples with), unet_raw/, vae/, image_encoder/,
    feature_extractor/, scheduler/; the I2V one also gets model_index.json so that
    `StableVideoDiffusionPipeline.from_pretrained` loads it. Camera LoRAs: the adapter only.
    Every layout also holds `clips_used.parquet` (what it trained on) and, in
    `svd_dag_training.json`, the code that trained it.
    """
    import copy

    from svd_dag.lineage.code_record import code_record
    from svd_dag.storage import Store
    from svd_dag.training import clip_usage

    with tempfile.TemporaryDirectory(dir=cfg.state_dir) as tmp:
        layout: dict[str, Any] = {}
        if lora is not None:
            from svd_dag.training.finetune_models import save_temporal_lora

            save_temporal_lora(unet, lora, os.path.join(tmp, "adapter"))
            layout = {"adapter": "adapter", "base_checkpoint": info["init"].removeprefix("continued from ")}
        else:
            ema_unet = copy.deepcopy(unet)
            ema.copy_to([p for p in ema_unet.parameters() if p.requires_grad])
            if encoder is None:
                unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
                ema_unet.save_pretrained(os.path.join(tmp, "unet_ema"), safe_serialization=True)
                vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
                layout = {"raw": "unet", "ema": "unet_ema"}
            else:
                layout = _save_image_model(cfg, tmp, unet, ema_unet, vae, encoder)
        digest = _weights_digest(tmp)
        used = clip_usage.usage_rows(getattr(dataset, "all_rows", None) or _item_rows(dataset), usage,
                                     dataset.excluded)
        clip_usage.write_usage(tmp, used)
        code = code_record()
        meta = {"config": json.loads(cfg.to_json()), "vae_weights": vae_weights, "init": info, "layout": layout,
                "weights_digest": digest, "task": cfg.task, "parent": parent_meta.get("weights_digest"),
                "code": code, "clips": clip_usage.summary(used)}
        with open(os.path.join(tmp, "svd_dag_training.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
        renders = cfg.sample_count and (encoder is not None or (cfg.stage == "video" and not lora))
        rendered = _render_samples(cfg, tmp, dataset, say) if renders else []
        root, rel = cfg.output_uri.rsplit("/", 1)
        uri = _publish_once(Store(root, cfg.storage_options), tmp, rel, digest)
    out = {"checkpoint_uri": uri, "data_version": digest, "vae_weights": vae_weights, "task": cfg.task, **info,
           "code": json.dumps(code, sort_keys=True), "clips_used_uri": f"{uri}/{clip_usage.FILE}",
           **clip_usage.summary(used)}
    if rendered:
        out.update(samples_index=f"{uri}/samples/samples.json", sample_videos=len(rendered),
                   sample_seconds_per_video=round(sum(r.seconds for r in rendered) / len(rendered), 3))
    return out


def _publish_once(store, folder: str, rel: str, digest: str) -> str:
    """Copy the finished checkpoint folder to storage. A folder is written once: when the same
    key already holds these weights (a re-materialization that resumed a finished run) it is
    kept as it is; other weights under the key are an error, never an overwrite. An S3 upload
    that died before its listing was published is finished, unless it names other weights
    (then it is left for a person to look at: it may be a folder from before listings)."""
    from svd_dag.storage import ImmutableArtefactError

    meta_uri = f"{store.uri(rel)}/svd_dag_training.json"
    existing = json.loads(store.read_bytes(meta_uri)).get("weights_digest") if store.exists(meta_uri) else None
    published = store.folder_published(rel)
    if existing not in (None, digest):
        state = "holds" if published else "holds an unpublished upload (no .published listing) of"
        raise ImmutableArtefactError(f"{store.uri(rel)} already {state} weights {existing}, not {digest}: a "
                                     "checkpoint folder is written once; its key should have changed with what "
                                     "trained it")
    return store.uri(rel) if published else store.put_dir(folder, rel)


def _render_samples(cfg: TrainConfig, folder: str, dataset, say) -> list:
    """Fixed inputs x seeds through the just-saved weights (EMA UNet; LoRA: base + adapter)."""
    from svd_dag.sampling.euler import Guidance
    from svd_dag.sampling.generate import load_video_model
    from svd_dag.sampling.samples import SampleInput, render_samples
    from svd_dag.training.data import dataset_for

    if cfg.lora_rank:
        model = load_video_model(cfg.init_from, adapter=os.path.join(folder, "adapter"))
    else:
        model = load_video_model(folder)
    if cfg.sample_manifest_uri:  # a fixed probe set shared by several models (the filter ablation)
        import dataclasses

        dataset = dataset_for(dataclasses.replace(cfg, manifest_uri=cfg.sample_manifest_uri))
    inputs = []
    for i in range(len(dataset)):
        if len(inputs) == cfg.sample_count:
            break
        ref = dataset.reference(i)
        if ref is not None:
            inputs.append(SampleInput(*ref))
    if cfg.sample_guidance:
        guidance = Guidance(*cfg.sample_guidance)
    else:
        guidance = Guidance.svd14() if cfg.num_frames <= 14 else Guidance.svd25()
    # On the training's GPU in bf16 (minutes for a full-size model there, hours on a CPU).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        model.to(device, torch.bfloat16)
    rendered = render_samples(model, inputs, folder, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                              steps=cfg.sample_steps, guidance=guidance, seeds=list(cfg.sample_seeds), device=device)
    say(f"rendered {len(rendered)} sample videos on {device} ({cfg.sample_steps} steps, guidance "
        f"{guidance.min_scale}->{guidance.max_scale})")
    return rendered


def _save_image_model(cfg: TrainConfig, folder: str, unet, ema_unet, vae, encoder) -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    from svd_dag.sampling.euler import SVD_SCHEDULER_CONFIG

    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    encoder.model.config.svd_dag_weights = encoder.weights
    if cfg.task == "i2v":
        pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder.model, unet=ema_unet, scheduler=scheduler,
                                            feature_extractor=encoder.processor)
        pipe.save_pretrained(folder, safe_serialization=True)
    else:  # same layout, no model_index.json: diffusers' SVD pipeline cannot drive these inputs
        ema_unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
        vae.save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)
        encoder.model.save_pretrained(os.path.join(folder, "image_encoder"), safe_serialization=True)
        encoder.processor.save_pretrained(os.path.join(folder, "feature_extractor"))
        scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    unet.save_pretrained(os.path.join(folder, "unet_raw"), safe_serialization=True)
    return {"ema": "unet", "raw": "unet_raw", "diffusers_pipeline": cfg.task == "i2v"}


def _item_rows(dataset) -> list[dict[str, Any]]:
    """The items a dataset without manifest rows (orbits) may draw, as usage rows."""
    return [{"clip_id": os.path.basename(u.rstrip("/"))} for u in getattr(dataset, "objects", [])]
