"""Product of Experts: the combination rule against hand-computed numbers, and end-to-end prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from ffnode.poe import poe_combine, poe_predict


def test_combine_matches_hand_computation() -> None:
    p1 = torch.tensor([[0.7, 0.2, 0.1]])
    p2 = torch.tensor([[0.2, 0.5, 0.3]])
    out = poe_combine(torch.stack([p1.log(), p2.log()]))  # (2, 1, 3) -> (1, 3)
    product = torch.tensor([0.14, 0.10, 0.03])
    assert torch.allclose(out.exp()[0], product / product.sum(), atol=1e-6)


def test_clamp_keeps_one_expert_from_vetoing() -> None:
    certain_no = torch.tensor([[[0.0, -math.inf]]])  # expert 1: class 1 is impossible
    others = torch.tensor([[[-20.0, 0.0]], [[-10.0, 0.0]]])  # experts 2 and 3: class 1, confidently
    out = poe_combine(torch.cat([certain_no, others]))  # clamped sums: class 0: -30, class 1: log 1e-12 = -27.6
    assert out.argmax(1).item() == 1
    assert torch.allclose(out.exp()[0, 1], torch.tensor(1 / (1 + math.exp(-30 - math.log(1e-12)))))
    assert torch.isfinite(out).all()


def test_combine_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(K, B, C\)"):
        poe_combine(torch.zeros(3, 4))


class Fixed(nn.Module):
    """An 'expert' that returns fixed logits, so PoE's output can be worked out by hand."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1)


def test_predict_combines_models() -> None:
    models = [Fixed([2.0, 0.0, 0.0]), Fixed([0.0, 3.0, 0.0])]
    preds, probs = poe_predict(models, np.zeros((5, 4, 4, 1), np.uint8))
    expected = torch.softmax(torch.tensor([2.0, 3.0, 0.0]), 0).numpy()  # log_softmax sums = logit sums + const
    assert preds.tolist() == [1] * 5 and np.allclose(probs[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one expert"):
        poe_predict([], np.zeros((1, 4, 4, 1), np.uint8))
