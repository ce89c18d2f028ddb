"""An expert's config: what a peer needs to rebuild and size the classifier, without torch.

`expert_size` counts the parameters and state-dict bytes of the ResNet it describes (`build_expert` in
resnet.py) from the config alone, so a node refuses an oversized peer expert before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ffnode.plainconfig import from_plain, to_plain


@dataclass(frozen=True)
class ExpertConfig:
    # model
    width: int = 16  # channels of the first stage; each later stage doubles it
    blocks: tuple[int, ...] = (1, 1)  # residual blocks per stage; stages after the first halve the size
    # training: small batches, because a site's set is small and steps matter more than batch size
    # (digits, real data: batch 32 x 4 epochs 0.98 accuracy, batch 128 x 4 epochs 0.86)
    epochs: int = 8
    max_images: int = 0  # images seen in all, epochs x training set, at most (fewer epochs, never under one); 0: no cap
    batch_size: int = 32
    lr: float = 0.05  # SGD with Nesterov momentum; peak lr after a one-epoch warmup, cosine to zero
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1  # softens over-confident experts, whose log-probs PoE adds up
    shift: int = 1  # random translation by up to this many pixels (reflect-padded), the cheapest augmentation
    hflip: bool = False  # random horizontal flips: right for cells and photos, wrong for digits
    bf16: bool = False  # off by default: fp32 keeps retraining bitwise repeatable across torch builds

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpertConfig:
        return from_plain(cls, d)


def expert_size(cfg: ExpertConfig, num_classes: int, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, bytes of the state dict) of `build_expert(cfg, num_classes, image_shape)`, without building
    it: bias-free convolutions, a BatchNorm after each (2 float parameters and 2 float buffers per channel, and
    an int64 batch counter), and the linear head. tests/test_arch.py checks the count against torch."""
    bn_channels = n_bn = 0

    def conv_bn(c_in: int, c_out: int, k: int) -> int:
        nonlocal bn_channels, n_bn
        bn_channels, n_bn = bn_channels + c_out, n_bn + 1
        return k * k * c_in * c_out + 2 * c_out

    params = conv_bn(image_shape[2], cfg.width, 3)  # the stem
    c_in = cfg.width
    for stage, n_blocks in enumerate(cfg.blocks):
        c_out = cfg.width * 2**stage
        for i in range(n_blocks):
            params += conv_bn(c_in, c_out, 3) + conv_bn(c_out, c_out, 3)
            if (stage > 0 and i == 0) or c_in != c_out:  # the projected shortcut
                params += conv_bn(c_in, c_out, 1)
            c_in = c_out
    params += c_in * num_classes + num_classes  # the head
    return params, 4 * (params + 2 * bn_channels) + 8 * n_bn
