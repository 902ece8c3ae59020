"""Negative samplers: pure functions of (targets, number of items, generator)."""
from __future__ import annotations

import torch
from torch import Tensor


class UniformNegatives:
    """``num_negatives`` item ids per target, uniform over 1..N and never equal to the target."""

    def __init__(self, num_negatives: int = 1) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives={num_negatives} must be at least 1")
        self.num_negatives = num_negatives

    def __call__(self, targets: Tensor, num_items: int) -> Tensor:
        """targets: (M,) ids in 1..N -> (M, K) negatives."""
        draws = torch.randint(1, num_items, (targets.shape[0], self.num_negatives), device=targets.device)  # 1..N-1
        return draws + (draws >= targets.unsqueeze(1)).long()  # skip the target: (M, K) in 1..N
