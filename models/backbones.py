"""Small convolutional backbones that train from scratch on CPU in the demo profile."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    # GroupNorm rather than BatchNorm: detection batches are a handful of images per worker.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.ReLU(inplace=True),
    )


class SmallConvNet(nn.Module):
    """A VGG-like stack of 3x3 conv blocks; each stage halves the resolution.

    `stages` controls the output stride (2**stages). `out_channels` is what torchvision's
    detection heads read to size themselves.
    """

    def __init__(self, width: int = 32, stages: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(stages):
            out = width * min(2**i, 4)
            layers += [conv_block(ch, out, stride=2), conv_block(out, out, stride=1)]
            ch = out
        self.body = nn.Sequential(*layers)
        self.out_channels = ch
        self.stride = 2**stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
