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


@dataclass
class TrainConfig:
    stage: str  # "image" (stage I) | "video" (stages II, III)
    profile: str
    manifest_uri: str
    output_uri: str  # final weights (storage: local folder or s3://)
    state_dir: str  # resumable accelerate state (local disk)
    init_from: str | None = None  # parent checkpoint folder (diffusers layout) or None
    steps: int = 20
    batch_size: int = 2
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
        for name in ("steps", "batch_size", "checkpoint_every", "height", "width"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout must be in [0, 1), got {self.text_dropout}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no|fp16|bf16, got {self.mixed_precision!r}")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls(**json.loads(text)).validate()

    def hyperparameters(self) -> dict[str, Any]:
        """What defines the result (for code versions and MLflow params): not where it goes."""
        skip = {"manifest_uri", "output_uri", "state_dir", "init_from", "storage_options", "raw_options",
                "mlflow_tracking_uri", "mlflow_run_id", "models_uri"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.hyperparameters(), sort_keys=True).encode()).hexdigest()[:12]


# Per-stage presets: (tiny, full). Only what differs from the dataclass defaults.
STAGE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "stage1": {
        "tiny": dict(stage="image", num_frames=1, steps=12, batch_size=4, time_embedding_only_steps=4, checkpoint_every=6),
        "full": dict(stage="image", num_frames=1, height=256, width=384, steps=31_000, batch_size=256,
                     time_embedding_only_steps=1_000, checkpoint_every=1_000, text_arch="ViT-H-14", mixed_precision="bf16",
                     gradient_checkpointing=True),
    },
    "stage2": {
        "tiny": dict(stage="video", num_frames=4, steps=10, batch_size=2, checkpoint_every=5),
        "full": dict(stage="video", num_frames=14, height=256, width=384, steps=150_000, batch_size=1536,
                     checkpoint_every=1_000, text_arch="ViT-H-14", mixed_precision="bf16", gradient_checkpointing=True),
    },
    "stage3": {
        "tiny": dict(stage="video", num_frames=4, steps=10, batch_size=2, checkpoint_every=5, p_mean=0.5, p_std=1.4,
                     learning_rate=3e-5),
        "full": dict(stage="video", num_frames=14, height=576, width=1024, steps=50_000, batch_size=768,
                     learning_rate=3e-5, p_mean=0.5, p_std=1.4, checkpoint_every=1_000, text_arch="ViT-H-14",
                     mixed_precision="bf16", gradient_checkpointing=True),
    },
}
