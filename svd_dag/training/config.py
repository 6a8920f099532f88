"""Training configuration: one dataclass for every stage, with the paper's numbers as the
`full` profile and a CPU-sized `tiny` profile that runs the same code end to end.

SVD (SPEC section 3): stage I 256x384 images, ln s ~ N(-1.2, 1.0), first 1k steps train
only the time embedding; stage II 14 x 256x384, N(-1.2, 1.0), 150k x 1536 at 1e-4;
stage III 14 x 576x1024, N(0.5, 1.4), 50k x 768 at 3e-5 with EMA 0.9999.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

STAGES = ("image", "video")
PROFILES = ("tiny", "full")
# What conditions the video model: text (stages I-III), one image (I2V, and multi-view with
# camera elevation), or the first and last frames (interpolation). See conditioning_frames.py.
TASKS = ("text", "i2v", "interpolation", "multiview")


@dataclass
class TrainConfig:
    stage: str  # "image" (stage I) | "video" (stages II, III)
    profile: str
    manifest_uri: str
    output_uri: str  # final weights (storage: local folder or s3://)
    state_dir: str  # local scratch of this machine: model and parent copies, downloaded states
    init_from: str | None = None  # parent checkpoint folder (diffusers layout) or None
    # Resumable state (resume_state.py): a folder or s3:// prefix under the storage root that
    # every machine of the run reads; "" keeps it in state_dir/states (tests, ad-hoc runs).
    state_uri: str = ""
    steps: int = 20  # optimizer steps
    batch_size: int = 2  # micro-batch: samples per process per forward pass
    # The batch one optimizer step sees: batch_size x processes x gradient_accumulation
    # (`with_processes` derives the accumulation). 0: batch_size x processes, no accumulation.
    global_batch: int = 0
    gradient_accumulation: int = 1
    dataloader_workers: int = 0  # processes decoding clips beside each training process (0: in it)
    pin_memory: bool = True  # page-locked host batches for faster copies to the GPU (ignored on CPU)
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9999
    p_mean: float = -1.2
    p_std: float = 1.0
    num_frames: int = 1
    height: int = 32
    width: int = 48
    target_fps: float = 8.0
    time_embedding_only_steps: int = 0
    checkpoint_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    text_dropout: float = 0.15
    text_arch: str = "svd-tiny-text"
    motion_saturation: float = 20.0
    cond_noise_strength: float = 0.0
    seed: int = 0
    # Tiny profile, stage I: fit the small VAE to the data's frames first (0 = keep it random).
    vae_fit_steps: int = 0
    # A video stage with no parent inflates the base image model, what stage I starts from (SD 2.1
    # in the full profile): the filter ablation, whose cells must not descend from data it judges.
    inflate_base_image: bool = False
    task: str = "text"
    # I2V family: the conditioning frame is noised in pixel space with ln s ~ N(cond_p_mean, cond_p_std^2)
    # (that s is also the noise-strength micro-condition); image embedding and conditioning latent
    # are dropped independently for classifier-free guidance.
    cond_p_mean: float = -3.0
    cond_p_std: float = 0.5
    image_dropout: float = 0.1
    latent_dropout: float = 0.1
    image_encoder: str = "svd-tiny-vision"  # a tiny random CLIP vision tower, or "store" (<model store>/image_encoder/)
    lora_rank: int = 0  # > 0: train only a LoRA of this rank on the temporal attention layers (camera LoRAs)
    # The sample-generation step after an image-conditioned fine-tune (svd_dag.sampling.samples).
    sample_count: int = 2  # fixed inputs (first items of the data in a stable order); 0 = none
    sample_seeds: list = field(default_factory=lambda: [0])
    sample_steps: int = 25
    sample_guidance: list = field(default_factory=list)  # [min, max]; empty: SVD's ramp for the frame count
    sample_manifest_uri: str = ""  # fixed sample inputs from this manifest instead of the training data
    orbits_exclude: list = field(default_factory=list)  # multi-view: held-out object ids (evaluation)
    orbits_uri: str = ""  # multi-view: folder of orbit renders (svd_dag.training.orbits) instead of a manifest
    models_uri: str = ""
    storage_options: dict = field(default_factory=dict)
    raw_options: dict = field(default_factory=dict)
    mlflow_tracking_uri: str = ""
    mlflow_run_id: str = ""

    def validate(self) -> "TrainConfig":
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if self.stage == "image" and self.num_frames != 1:
            raise ValueError("the image stage trains on single frames: num_frames must be 1")
        if self.stage == "video" and self.num_frames < 2:
            raise ValueError("a video stage needs num_frames >= 2")
        if self.dataloader_workers < 0:
            raise ValueError(f"dataloader_workers must be >= 0, got {self.dataloader_workers}")
        for name in ("steps", "batch_size", "checkpoint_every", "height", "width", "gradient_accumulation"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout must be in [0, 1), got {self.text_dropout}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task != "text" and self.stage != "video":
            raise ValueError(f"the {self.task} fine-tune is a video stage: stage must be 'video'")
        if self.inflate_base_image and (self.stage != "video" or self.task != "text" or self.init_from):
            raise ValueError("inflate_base_image is for a text-to-video stage with no parent checkpoint")
        if self.task == "interpolation" and self.num_frames < 3:
            raise ValueError("interpolation needs num_frames >= 3 (first and last are given)")
        if self.task == "multiview" and not self.orbits_uri:
            raise ValueError("the multiview fine-tune reads orbit renders: orbits_uri is required")
        if len(self.sample_guidance) not in (0, 2) or self.sample_steps < 1 or self.sample_count < 0:
            raise ValueError("sample_guidance must be [] or [min, max], sample_steps >= 1, sample_count >= 0")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        for name in ("image_dropout", "latent_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no|fp16|bf16, got {self.mixed_precision!r}")
        return self

    def with_processes(self, processes: int) -> "TrainConfig":
        """The config for a launch of `processes` training processes (all machines): the
        micro-batch (capped at global_batch / processes) and the gradient accumulation that
        make one optimizer step see exactly `global_batch` samples."""
        micro, accumulation = resolve_batch(self.global_batch, self.batch_size, processes)
        return dataclasses.replace(self, batch_size=micro, gradient_accumulation=accumulation)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls(**json.loads(text)).validate()

    def hyperparameters(self) -> dict[str, Any]:
        """What defines the result (for code versions and MLflow params): not where it goes."""
        skip = {"manifest_uri", "output_uri", "sample_manifest_uri", "state_dir", "state_uri", "init_from", "storage_options", "raw_options", "orbits_uri",
                "mlflow_tracking_uri", "mlflow_run_id", "models_uri"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def digest(self) -> str:
        """Hash of what changes the result: not how the data is fed (a restart with more loader
        workers resumes the same run)."""
        feeding = {"dataloader_workers", "pin_memory"}
        kept = {k: v for k, v in self.hyperparameters().items() if k not in feeding}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def resolve_batch(global_batch: int, micro_batch: int, processes: int) -> tuple[int, int]:
    """(micro-batch, gradient accumulation) with micro x processes x accumulation = global_batch."""
    if processes < 1 or micro_batch < 1:
        raise ValueError(f"processes and batch_size must be >= 1, got {processes} and {micro_batch}")
    if not global_batch:
        return micro_batch, 1
    micro = min(micro_batch, global_batch // processes)
    if micro < 1 or global_batch % (micro * processes):
        raise ValueError(f"a global batch of {global_batch} cannot be split over {processes} processes with micro-batches "
                         f"of at most {micro_batch}: use a process count that divides {global_batch} "
                         f"(micro-batch x processes x accumulation = global batch)")
    return micro, global_batch // (micro * processes)


# Per-stage presets: (tiny, full). Only what differs from the dataclass defaults. Full profile:
# `global_batch` is the paper's (SPEC section 3); `batch_size` is the per-GPU micro-batch, chosen
# to fit one 80 GB GPU in bf16 with gradient checkpointing (not yet measured: no GPU here).
STAGE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "stage1": {
        "tiny": dict(stage="image", num_frames=1, steps=12, batch_size=4, time_embedding_only_steps=4, checkpoint_every=6,
                     vae_fit_steps=120),
        "full": dict(dataloader_workers=8, stage="image", num_frames=1, height=256, width=384, steps=31_000, global_batch=256, batch_size=32,
                     time_embedding_only_steps=1_000, checkpoint_every=1_000, text_arch="ViT-H-14", mixed_precision="bf16",
                     gradient_checkpointing=True),
    },
    "stage2": {
        "tiny": dict(stage="video", num_frames=4, steps=10, batch_size=2, checkpoint_every=5, sample_steps=4),
        "full": dict(dataloader_workers=8, stage="video", num_frames=14, height=256, width=384, steps=150_000, global_batch=1536, batch_size=8,
                     checkpoint_every=1_000, text_arch="ViT-H-14", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "stage3": {
        "tiny": dict(stage="video", num_frames=4, steps=10, batch_size=2, checkpoint_every=5, p_mean=0.5, p_std=1.4,
                     learning_rate=3e-5, sample_steps=4),
        "full": dict(dataloader_workers=8, stage="video", num_frames=14, height=576, width=1024, steps=50_000, global_batch=768, batch_size=1,
                     learning_rate=3e-5, p_mean=0.5, p_std=1.4, checkpoint_every=1_000, text_arch="ViT-H-14",
                     mixed_precision="bf16", gradient_checkpointing=True),
    },
    # SVD's stage II hi-res step (SPEC section 3): stage II continued at 320x576 with (0.0, 1.0).
    "stage2_hires": {
        "tiny": dict(stage="video", num_frames=4, height=40, width=72, steps=6, batch_size=2, checkpoint_every=3,
                     p_mean=0.0, p_std=1.0, sample_steps=4),
        "full": dict(dataloader_workers=8, stage="video", num_frames=14, height=320, width=576, steps=100_000, global_batch=768, batch_size=4,
                     p_mean=0.0, p_std=1.0, checkpoint_every=1_000, text_arch="ViT-H-14", mixed_precision="bf16",
                     gradient_checkpointing=True),
    },
    # The filter ablation (SPEC 2.6): one small video model per candidate subset, inflated from
    # the base image model (SD 2.1 in the full profile, as the paper's study; not stage I, which
    # trains on the lvd_f the study decides); the same architecture, steps and probe samples for
    # every cell. The tiny profile fits its small VAE first, as stage I does.
    "ablation": {
        "tiny": dict(stage="video", num_frames=4, steps=8, batch_size=2, checkpoint_every=8, sample_steps=4,
                     sample_count=3, learning_rate=3e-4, inflate_base_image=True, vae_fit_steps=120),
        "full": dict(dataloader_workers=8, stage="video", num_frames=14, height=256, width=384, steps=10_000, global_batch=256, batch_size=8,
                     inflate_base_image=True,
                     checkpoint_every=1_000, sample_count=64, text_arch="ViT-H-14", mixed_precision="bf16",
                     gradient_checkpointing=True),
    },
    # Fine-tunes (issue 4). Full sizes are the paper's; "image_encoder=store" reads SVD's CLIP vision tower.
    "i2v": {
        "tiny": dict(sample_steps=4, stage="video", task="i2v", num_frames=4, steps=10, batch_size=2, checkpoint_every=5,
                     p_mean=0.7, p_std=1.6, learning_rate=3e-4),
        "full": dict(dataloader_workers=8, stage="video", task="i2v", num_frames=14, height=320, width=576, steps=50_000, global_batch=768, batch_size=4,
                     learning_rate=3e-5, p_mean=0.7, p_std=1.6, checkpoint_every=1_000, text_arch="ViT-H-14",
                     image_encoder="store", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "i2v25": {
        "tiny": dict(sample_steps=4, stage="video", task="i2v", num_frames=6, steps=10, batch_size=2, checkpoint_every=5,
                     p_mean=1.0, p_std=1.6, learning_rate=3e-4),
        "full": dict(dataloader_workers=8, stage="video", task="i2v", num_frames=25, height=576, width=1024, steps=50_000, global_batch=768, batch_size=1,
                     learning_rate=3e-5, p_mean=1.0, p_std=1.6, checkpoint_every=1_000, text_arch="ViT-H-14",
                     image_encoder="store", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "interpolation": {
        "tiny": dict(sample_steps=4, stage="video", task="interpolation", num_frames=5, steps=10, batch_size=2, checkpoint_every=5,
                     p_mean=1.0, p_std=1.2, learning_rate=1e-3),
        "full": dict(dataloader_workers=8, stage="video", task="interpolation", num_frames=5, height=576, width=1024, steps=10_000,
                     global_batch=256, batch_size=2, learning_rate=1e-4, p_mean=1.0, p_std=1.2, checkpoint_every=1_000,
                     text_arch="ViT-H-14", image_encoder="store", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "multiview": {
        "tiny": dict(sample_steps=4, stage="video", task="multiview", num_frames=6, height=32, width=32, steps=10, batch_size=2,
                     checkpoint_every=5, p_mean=0.7, p_std=1.6, learning_rate=3e-4),
        "full": dict(dataloader_workers=8, stage="video", task="multiview", num_frames=21, height=576, width=576, steps=12_000, global_batch=16, batch_size=1,
                     learning_rate=1e-5, p_mean=0.7, p_std=1.6, checkpoint_every=1_000, text_arch="ViT-H-14",
                     image_encoder="store", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "camera_lora": {
        "tiny": dict(sample_steps=4, stage="video", task="i2v", lora_rank=16, num_frames=4, steps=6, batch_size=2, checkpoint_every=3,
                     p_mean=0.7, p_std=1.6, learning_rate=1e-3),
        "full": dict(dataloader_workers=8, stage="video", task="i2v", lora_rank=16, num_frames=14, height=320, width=576, steps=5_000,
                     global_batch=64, batch_size=4, learning_rate=1e-4, p_mean=0.7, p_std=1.6, checkpoint_every=500,
                     text_arch="ViT-H-14", image_encoder="store", mixed_precision="bf16", gradient_checkpointing=True),
    },
}
