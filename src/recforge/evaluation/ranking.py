"""Full ranking over all items with history masking, and a DDP-safe accumulator of target ranks."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from recforge.evaluation.metrics import ranking_metrics, target_ranks


def mask_history(scores: Tensor, history: Tensor, targets: Tensor) -> Tensor:
    """Set the scores of items seen before the target (and of padding id 0) to -inf, never the target's.

    scores: (B, N+1) over ids 0..N; history: (B, P) item ids, 0 = padding; targets: (B,).
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    masked = scores.scatter(1, history, float("-inf"))  # (B, N+1)
    masked[:, 0] = float("-inf")
    return masked.scatter(1, targets.unsqueeze(1), target_scores)


class RankAccumulator(Metric):
    """Collects (sample index, rank) pairs; computes metrics over unique samples.

    Keeping the sample index makes the result identical under DDP, where DistributedSampler pads the last
    batch by repeating samples: duplicates are dropped before averaging.
    """

    full_state_update = False

    def __init__(self, ks: list[int]) -> None:
        super().__init__()
        self.ks = list(ks)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, ranks: Tensor) -> None:  # type: ignore[override]
        self.index.append(index.long())
        self.ranks.append(ranks.long())

    def unique_ranks(self) -> Tensor:
        """Ranks of each sample once, ordered by sample index."""
        index, ranks = _as_tensor(self.index), _as_tensor(self.ranks)  # lists before a DDP sync, tensors after
        order = torch.argsort(index, stable=True)
        index, ranks = index[order], ranks[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return ranks[first]

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        return ranking_metrics(self.unique_ranks(), self.ks)


def _as_tensor(state: list[Tensor] | Tensor) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.empty(0, dtype=torch.long)


def rank_targets(scores: Tensor, targets: Tensor, history: Tensor | None) -> Tensor:
    """Ranks of the targets after masking history (when given). (B,) int64."""
    if history is not None:
        scores = mask_history(scores, history, targets)
    else:
        scores = scores.clone()
        scores[:, 0] = float("-inf")
    return target_ranks(scores.float(), targets)
