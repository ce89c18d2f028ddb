"""The expert: a small pre-activation-free ResNet (He et al. 2016, arXiv 1512.03385), written out here.

Same shape as the paper's classifier at small resolution (3x3 stem, no max-pool), just narrower and
shallower so it trains in seconds on a CPU core. The model takes raw images, (B, H, W, C) with values in
0..255 (uint8 or float), and normalises them itself, so a peer can run a downloaded expert on a query
image without knowing any preprocessing convention.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffnode.expert.config import ExpertConfig


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; a 1x1 conv projects the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, cfg: ExpertConfig, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)  # (H, W, C), checked on every forward
        channels = image_shape[2]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, cfg.width, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = cfg.width
        for stage, n_blocks in enumerate(cfg.blocks):
            c_out = cfg.width * 2**stage
            for i in range(n_blocks):
                layers.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) pixel values 0..255 -> (B, num_classes) logits."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"expert expects images of shape (B, {self.image_shape}), got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, C, H, W) in [-1, 1]
        x = self.layers(self.stem(x))
        x = x.mean(dim=(2, 3))  # (B, C') global average pool
        return self.head(x)


def build_expert(cfg: ExpertConfig, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """A freshly initialised expert (seed the global RNG first for repeatable weights)."""
    return ResNet(cfg, num_classes, image_shape)


def expert_from_weights(
    weights: dict[str, torch.Tensor], cfg: ExpertConfig, num_classes: int, image_shape: tuple[int, int, int]
) -> nn.Module:
    """Rebuild a published expert in eval mode (strict load: weights and config must match).

    Built on the meta device and given the weights as they are: no initialisation, so no draw from torch's
    global RNG, which a training in another thread of the process may be using (an expert loaded for a query
    mid-training would otherwise change that training's weights, and the unlearning proof with them)."""
    with torch.device("meta"):
        model = build_expert(cfg, num_classes, image_shape)
    expected = model.state_dict()
    for name, tensor in weights.items():  # assign keeps a tensor's dtype: a peer's fp16 file would break queries
        if name in expected and tensor.dtype != expected[name].dtype:
            raise ValueError(f"tensor {name!r} is {tensor.dtype}, not {expected[name].dtype}")
    model.load_state_dict(weights, assign=True)  # strict: every name, every shape
    return model.eval()
