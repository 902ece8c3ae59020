"""Negative samplers: pure functions of (targets, number of items, generator)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from recforge.rules import check_arguments, int_at_least, rule_table


@runtime_checkable
class ExcludesItems(Protocol):
    """Role: a sampler that can be told never to draw some item ids (cold items in training)."""

    def exclude_items(self, excluded: Tensor) -> None: ...


class UniformNegatives:
    """``num_negatives`` item ids per target, uniform over 1..N and never equal to the target.

    After :meth:`exclude_items` (the cold items of a cold-start split), uniform over the other ids only.
    """

    argument_rules = rule_table(num_negatives=int_at_least(1))  # recforge.rules: checked in the config and here

    def __init__(self, num_negatives: int = 1) -> None:
        check_arguments(UniformNegatives, "loss.sampler", num_negatives=num_negatives)
        self.num_negatives = num_negatives
        self.candidates: Tensor | None = None  # (C,) sorted ids that may be drawn; None: all of 1..N

    def exclude_items(self, excluded: Tensor) -> None:
        """Never draw the ids where ``excluded`` (N+1,) bool is True (id 0 is never drawn anyway)."""
        keep = ~excluded.bool()
        keep[0] = False
        self.candidates = keep.nonzero()[:, 0] if bool(excluded[1:].any()) else None  # (C,)

    def __call__(self, targets: Tensor, num_items: int) -> Tensor:
        """targets: (M,) ids in 1..N -> (M, K) negatives."""
        if self.candidates is not None:
            return self._draw_from(self.candidates.to(targets.device), targets)
        draws = torch.randint(1, num_items, (targets.shape[0], self.num_negatives), device=targets.device)  # 1..N-1
        return draws + (draws >= targets.unsqueeze(1)).long()  # skip the target: (M, K) in 1..N

    def _draw_from(self, candidates: Tensor, targets: Tensor) -> Tensor:
        """Uniform over ``candidates`` (C,) sorted, skipping each target's own id when it is a candidate."""
        position = torch.searchsorted(candidates, targets)  # (M,) where the target is or would be
        present = candidates[position.clamp(max=len(candidates) - 1)] == targets  # (M,)
        high = len(candidates) - present.long()  # (M,) how many ids may be drawn for each target
        draws = (torch.rand(targets.shape[0], self.num_negatives, device=targets.device) * high.unsqueeze(1)).long()
        draws = draws.minimum(high.unsqueeze(1) - 1)  # (M, K) in 0..high-1 (rand < 1, but float rounding)
        draws = draws + (present.unsqueeze(1) & (draws >= position.unsqueeze(1))).long()  # skip the target
        return candidates[draws]  # (M, K)
