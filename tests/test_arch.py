"""A peer's model is sized from its config alone, without torch: the counts must be torch's, exactly.

The node refuses a factory or expert whose parameters exceed its limits before anything is built, in a process
that imports no torch (ffnode/factory/config.py, ffnode/expert/config.py); here every count is checked against
the model torch builds on the meta device, over random configs and the profiles' own.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest
import torch

from ffnode.expert.config import ExpertConfig, expert_size
from ffnode.expert.resnet import build_expert
from ffnode.factory.config import FactoryConfig, unet_size
from ffnode.factory.model import build_unet
from ffnode.profiles import PROFILES


def torch_size(model: torch.nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    return params, sum(t.numel() * t.element_size() for t in model.state_dict().values())


def random_factories(n: int, seed: int = 0) -> list[FactoryConfig]:
    rng, out = random.Random(seed), []
    while len(out) < n:
        levels, groups = rng.randint(1, 4), rng.choice([1, 2, 4, 8, 16])
        try:
            out.append(
                FactoryConfig(
                    image_size=2**levels,
                    channels=rng.randint(1, 4),
                    block_out_channels=tuple(groups * rng.randint(1, 6) for _ in range(levels)),
                    layers_per_block=rng.randint(1, 3),
                    norm_num_groups=groups,
                    attention=rng.random() < 0.5,
                )
            )
        except ValueError:  # widths the groups do not divide
            continue
    return out


@pytest.mark.parametrize("cfg", [p.factory for p in PROFILES.values()] + random_factories(30), ids=str)
def test_unet_size_is_torchs(cfg: FactoryConfig) -> None:
    with torch.device("meta"):
        model = build_unet(cfg)
    assert unet_size(cfg) == torch_size(model)


def random_experts(n: int, seed: int = 0) -> list[tuple[ExpertConfig, int, tuple[int, int, int]]]:
    rng = random.Random(seed)
    return [
        (
            ExpertConfig(width=rng.randint(1, 40), blocks=tuple(rng.randint(0, 3) for _ in range(rng.randint(1, 4)))),
            rng.randint(1, 20),
            (16, 16, rng.randint(1, 4)),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "cfg, num_classes, shape",
    [(p.expert, 10, (8, 8, 1)) for p in PROFILES.values()] + random_experts(20),
    ids=lambda v: str(v)[:60],
)
def test_expert_size_is_torchs(cfg: ExpertConfig, num_classes: int, shape: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        model = build_expert(dataclasses.replace(cfg), num_classes, shape)
    assert expert_size(cfg, num_classes, shape) == torch_size(model)


def test_the_configs_import_no_torch() -> None:
    code = "import sys, ffnode.factory.config, ffnode.expert.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
