"""The I3D network (Inception-v1 inflated to 3D; Carreira & Zisserman 2017) used for FVD features.

This is the architecture of DeepMind's `kinetics-i3d` RGB model (the one behind the tf.hub
module that FVD and StyleGAN-V's `i3d_torchscript.pt` use): TensorFlow "SAME" padding,
BatchNorm with eps 1e-3 after every convolution except the classifier, 3x3x3 kernels in
the third Inception branch, and a classifier that average-pools [2, 7, 7], applies a 1x1x1
convolution to `num_classes` outputs and averages the logits over the remaining time steps.

It exists so that FVD can run when the pretrained TorchScript file is not available:
`build_random_i3d(seed)` makes a randomly initialised copy (deterministic for a seed).
Features from it are NOT Kinetics features; callers must label them `weights="random"`.

One deliberate difference from the original: the classifier's average-pool window is
clipped to the feature map (min(2, t), min(7, h), min(7, w)), which is identical at the
protocol's 224x224 x 16 frames and lets smaller inputs (e.g. in tests) run at all.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_KINETICS_CLASSES = 400

# (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 pool->1x1)
# output channels of each Mixed block, as in the kinetics-i3d RGB model.
_MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

Triple = tuple[int, int, int]


def _same_pad_amounts(sizes: Triple, kernel: Triple, stride: Triple) -> list[int]:
    """TensorFlow 'SAME' padding for (T, H, W) as F.pad's (w0, w1, h0, h1, t0, t1) list."""
    pads: list[int] = []
    for size, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3d(nn.Module):
    """Conv3d with TF 'SAME' padding, then optional BatchNorm (eps 1e-3) and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad_amounts(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF 'SAME' padding.

    Zero padding equals TF's ignore-the-padding here because every pool in I3D follows a
    ReLU, so its inputs are >= 0.
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad_amounts(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock3d(nn.Module):
    """One Mixed block: four parallel branches concatenated along channels."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.branch0 = Unit3d(in_channels, c0)
        self.branch1 = nn.Sequential(Unit3d(in_channels, c1a), Unit3d(c1a, c1b, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3d(in_channels, c2a), Unit3d(c2a, c2b, (3, 3, 3)))
        self.branch3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3d(in_channels, c3))
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class InceptionI3d(nn.Module):
    """I3D RGB network: videos [B, 3, T, H, W] in [-1, 1] -> class logits [B, num_classes]."""

    def __init__(self, num_classes: int = NUM_KINETICS_CLASSES, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3d(in_channels, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3d(64, 64),
            "Conv3d_2c_3x3": Unit3d(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        channels = 192
        for name, mixed in _MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock3d(channels, mixed)
            layers[name] = block
            channels = block.out_channels
        self.features = nn.Sequential(*layers.values())
        self.feature_names = list(layers)
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3d(channels, num_classes, batch_norm=False, relu=False)
        self.num_classes = num_classes

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"I3D expects videos [B, 3, T, H, W], got shape {tuple(videos.shape)}")
        x = self.features(videos)
        t, h, w = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), stride=1)
        x = self.logits(self.dropout(x))  # [B, classes, t', h', w']
        return x.mean(dim=(3, 4)).mean(dim=2)  # spatial squeeze, then average over time


@torch.no_grad()
def build_random_i3d(seed: int = 0, num_classes: int = NUM_KINETICS_CLASSES) -> InceptionI3d:
    """A randomly initialised I3D in eval mode, identical for equal seeds.

    He-normal convolutions and identity BatchNorm keep activations at a stable scale through
    the 60-odd layers, so the random features still respond to the input.
    """
    generator = torch.Generator().manual_seed(seed)
    model = InceptionI3d(num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm3d):
            module.weight.fill_(1.0)
            module.bias.zero_()
    return model.eval()
