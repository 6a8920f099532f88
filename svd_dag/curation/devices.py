"""Where a model annotator runs: `device` (auto | cpu | cuda | cuda:N) and `dtype` (auto | fp32 | fp16 | bf16).

`auto` means CUDA when this process sees a GPU, else the CPU; bf16 on a GPU, fp32 on the
CPU (CPU half precision is slow and less exact). The resolved pair is what rows record.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Placement:
    device: str = "auto"
    dtype: str = "auto"
    batch_frames: int = 32  # frames per forward pass, across the clips of a batch

    def validate(self) -> "Placement":
        """Settings that can never work, refused where they are given (no torch needed)."""
        device, dtype = self.device.strip().lower(), self.dtype.strip().lower()
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1, got {self.batch_frames}")
        return Placement(device, dtype, self.batch_frames)

    def resolve(self) -> "Placement":
        """The concrete device and dtype in this process (a Ray actor resolves its own)."""
        import torch

        p = self.validate()
        device = p.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} asked for, but this process sees no CUDA device")
        dtype = p.dtype if p.dtype != "auto" else ("fp32" if device == "cpu" else "bf16")
        return Placement(device, dtype, p.batch_frames)

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]

    def label(self) -> dict:
        return {"device": self.device, "dtype": self.dtype}


def resolve(placement: Placement | None) -> Placement:
    """`placement` resolved in this process; None is `Placement()` (auto: CUDA bf16 where a
    GPU is seen, else CPU fp32)."""
    return (placement if placement is not None else Placement()).resolve()


def place_module(module, placement: Placement):
    """Move a CPU-built module to a resolved placement (a no-op for CPU fp32)."""
    if (placement.device, placement.dtype) == ("cpu", "fp32"):
        return module
    return module.to(device=placement.device, dtype=placement.torch_dtype)
