"""Negative samplers: pure functions of (targets, number of items, generator)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from recforge.errors import RecforgeError
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


# ----------------------------------------------------------------------------- negatives shared by a batch


class SharedNegatives:
    """Role: K item ids shared by every target of a batch (a sampled softmax scores them with one matmul), and the
    log of the probability q with which each id is drawn (for the logQ correction of Yi et al., RecSys 2019).

    ``fit_counts`` receives the training interactions per item id (popularity); ``exclude_items`` the ids never to
    draw (cold items). ``draw(targets, num_items)`` -> (K,) ids; ``log_q(items)`` -> log q of any ids, same shape.
    """

    def __init__(self) -> None:
        self.counts: Tensor | None = None  # (N+1,) training interactions per id, set by fit_counts
        self.excluded: Tensor | None = None  # (N+1,) bool, set by exclude_items

    def fit_counts(self, counts: Tensor) -> None:
        self.counts = counts.double()

    def exclude_items(self, excluded: Tensor) -> None:
        self.excluded = excluded.bool()

    def allowed(self, num_items: int, device: torch.device) -> Tensor:
        """(N+1,) bool: ids that may be drawn (never padding 0, never an excluded id)."""
        keep = torch.ones(num_items + 1, dtype=torch.bool, device=device)
        keep[0] = False
        if self.excluded is not None:
            keep &= ~self.excluded.to(device)
        return keep

    def popularity(self, num_items: int, device: torch.device) -> Tensor:
        """(N+1,) float64 probabilities proportional to the training counts over the allowed ids."""
        if self.counts is None:
            raise RuntimeError(f"{type(self).__name__} needs fit_counts() before sampling")
        weights = self.counts.to(device) * self.allowed(num_items, device)  # (N+1,)
        return weights / weights.sum()

    def draw(self, targets: Tensor, num_items: int) -> Tensor:
        raise NotImplementedError

    def log_q(self, items: Tensor, num_items: int) -> Tensor:
        raise NotImplementedError


class SharedUniform(SharedNegatives):
    """``num_negatives`` distinct ids drawn uniformly without replacement from the allowed ids; log q is the same
    for every id (so the logQ correction changes nothing)."""

    argument_rules = rule_table(num_negatives=int_at_least(1))  # recforge.rules: checked in the config and here

    def __init__(self, num_negatives: int = 256) -> None:
        super().__init__()
        check_arguments(SharedUniform, "loss.sampler", num_negatives=num_negatives)
        self.num_negatives = num_negatives

    def fit_counts(self, counts: Tensor) -> None:
        """Also the first moment the catalogue is known: K must not exceed it (checked before any step)."""
        super().fit_counts(counts)
        self._check_size(len(counts) - 1)

    def _check_size(self, available: int) -> None:
        if self.num_negatives > available:
            raise RecforgeError(
                f"loss.sampler.num_negatives={self.num_negatives} is larger than the {available} items that can be "
                "drawn; uniform sampling without replacement needs at most that many.")

    def draw(self, targets: Tensor, num_items: int) -> Tensor:
        candidates = self.allowed(num_items, targets.device).nonzero()[:, 0]  # (C,)
        self._check_size(len(candidates))
        order = torch.randperm(len(candidates), device=targets.device)[: self.num_negatives]  # (K,)
        return candidates[order]  # (K,)

    def log_q(self, items: Tensor, num_items: int) -> Tensor:
        return torch.zeros(items.shape, dtype=torch.float32, device=items.device)  # a constant cancels out


class SharedPopularity(SharedNegatives):
    """``num_negatives`` ids drawn with replacement with probability proportional to their training counts
    (items never seen in training are never drawn); log q = log of that probability."""

    argument_rules = rule_table(num_negatives=int_at_least(1))  # recforge.rules: checked in the config and here

    def __init__(self, num_negatives: int = 256) -> None:
        super().__init__()
        check_arguments(SharedPopularity, "loss.sampler", num_negatives=num_negatives)
        self.num_negatives = num_negatives

    def draw(self, targets: Tensor, num_items: int) -> Tensor:
        probs = self.popularity(num_items, targets.device)  # (N+1,)
        return torch.multinomial(probs.float(), self.num_negatives, replacement=True)  # (K,)

    def log_q(self, items: Tensor, num_items: int) -> Tensor:
        return self.popularity(num_items, items.device)[items].log().float()  # same shape as items


class InBatchNegatives(SharedNegatives):
    """The batch's distinct targets are the negatives of every target (Yi et al., RecSys 2019). They arrive with
    probability proportional to popularity, so log q = log of the training-count share of each id."""

    def draw(self, targets: Tensor, num_items: int) -> Tensor:
        return torch.unique(targets)  # (K,) sorted distinct targets

    def log_q(self, items: Tensor, num_items: int) -> Tensor:
        return self.popularity(num_items, items.device)[items].log().float()
