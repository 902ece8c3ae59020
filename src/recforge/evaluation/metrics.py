"""Pure ranking metrics for one target per sample.

Every function takes 1-based ranks (1 = the target scored highest) and returns per-sample values, so averaging
over any batching gives the same result. Ranks come from :func:`target_ranks`, which counts ties against the
target: a model that scores every item equally ranks the target last, not first.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """1-based rank of each target among all scored items; ties count against the target.

    scores: (B, N) with excluded items at -inf; targets: (B,) column indices. Returns (B,) int64.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    # every other item not strictly below the target is ahead of it: ties count against the target, and a NaN
    # score (a diverged model) never helps it: rank = N for a NaN target, never 0
    # (an int32 count of the lower ones is ~5x faster on CPU than summing a negated bool tensor into int64)
    lower = (scores < target_scores).sum(dim=1, dtype=torch.int32)  # (B,)
    not_lower = scores.shape[1] - lower.long()  # (B,) includes the target itself
    return not_lower.clamp(min=1)


def hit_rate(ranks: Tensor, k: int) -> Tensor:
    """HR@k: 1 when the target is in the top k. (B,) float64."""
    return (ranks <= k).double()


def recall(ranks: Tensor, k: int) -> Tensor:
    """Recall@k with one relevant item per sample: identical to HR@k. (B,) float64."""
    return hit_rate(ranks, k)


def ndcg(ranks: Tensor, k: int) -> Tensor:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) inside the top k, else 0. (B,) float64."""
    gain = 1.0 / torch.log2(ranks.double() + 1.0)
    return torch.where(ranks <= k, gain, torch.zeros_like(gain))


def mrr(ranks: Tensor, k: int) -> Tensor:
    """MRR@k: 1 / rank inside the top k, else 0. (B,) float64."""
    rr = 1.0 / ranks.double()
    return torch.where(ranks <= k, rr, torch.zeros_like(rr))


METRICS = {"hr": hit_rate, "recall": recall, "ndcg": ndcg, "mrr": mrr}


def ranking_metrics(ranks: Tensor, ks: list[int]) -> dict[str, float]:
    """Means of every metric at every k, keyed ``metric@k`` (e.g. ``ndcg@10``)."""
    if ranks.numel() == 0:
        return {f"{name}@{k}": math.nan for name in METRICS for k in ks}
    return {f"{name}@{k}": fn(ranks, k).mean().item() for name, fn in METRICS.items() for k in ks}
