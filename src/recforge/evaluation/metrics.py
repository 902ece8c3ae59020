"""Pure ranking metrics for one target per sample, and for a set of targets per sample.

Every function takes 1-based ranks (1 = the target scored highest) and returns per-sample values, so averaging
over any batching gives the same result. Ranks come from :func:`target_ranks`, which counts ties against the
target: a model that scores every item equally ranks the target last, not first.

Set metrics take (S, T) ranks: the rank of each of a sample's targets among all items, 0 where the sample has
fewer than T targets (padding). With one target per sample they equal the one-target metrics: recall = hr,
ndcg = ndcg, map = mrr, precision = hr / k.
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


# ------------------------------------------------------------------------------------------- target sets
# Definitions as RecBole gives them (recbole/evaluator/metrics.py: Hit, MRR, Precision, Recall, NDCG, MAP), with a
# target's position in the top-k list read from its rank (ties against the target, as above).


def set_hits(ranks: Tensor, k: int) -> Tensor:
    """Targets of each sample inside the top k. ranks: (S, T), 0 = padding. (S,) float64."""
    return ((ranks >= 1) & (ranks <= k)).sum(dim=1).double()


def set_sizes(ranks: Tensor) -> Tensor:
    """Targets of each sample (its non-padding ranks). (S,) float64."""
    return (ranks >= 1).sum(dim=1).double()


def set_hit_rate(ranks: Tensor, k: int) -> Tensor:
    """HR@k (RecBole Hit): 1 when any target is in the top k. (S,) float64."""
    return (set_hits(ranks, k) > 0).double()


def set_recall(ranks: Tensor, k: int) -> Tensor:
    """Recall@k (RecBole Recall): targets in the top k / targets. (S,) float64."""
    return set_hits(ranks, k) / set_sizes(ranks)


def set_precision(ranks: Tensor, k: int) -> Tensor:
    """Precision@k (RecBole Precision): targets in the top k / k. (S,) float64."""
    return set_hits(ranks, k) / k


def _inside(ranks: Tensor, k: int) -> Tensor:
    return (ranks >= 1) & (ranks <= k)  # (S, T)


def set_ndcg(ranks: Tensor, k: int) -> Tensor:
    """NDCG@k (RecBole NDCG), binary relevance: sum of 1 / log2(rank + 1) over the targets in the top k, divided
    by the ideal DCG of min(targets, k) targets at ranks 1, 2, ... (S,) float64."""
    gain = 1.0 / torch.log2(ranks.double() + 1.0)  # (S, T)
    dcg = torch.where(_inside(ranks, k), gain, torch.zeros_like(gain)).sum(dim=1)  # (S,)
    ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64)), dim=0)  # (k,) IDCG of 1..k
    count = set_sizes(ranks).long().clamp(min=1, max=k)  # (S,)
    return dcg / ideal[count - 1]


def set_mrr(ranks: Tensor, k: int) -> Tensor:
    """MRR@k (RecBole MRR): 1 / the best rank of a target when it is inside the top k, else 0. (S,) float64."""
    best = torch.where(ranks >= 1, ranks, torch.iinfo(ranks.dtype).max).min(dim=1).values  # (S,)
    rr = 1.0 / best.double()
    return torch.where(best <= k, rr, torch.zeros_like(rr))


def average_precision(ranks: Tensor, k: int) -> Tensor:
    """AP@k (RecBole MAP): the sum of precision@r over the ranks r <= k that hold a target, divided by
    min(targets, k); precision@r = targets with rank <= r, over r. (S,) float64."""
    inside = _inside(ranks, k)  # (S, T)
    ordered = torch.where(ranks >= 1, ranks, torch.iinfo(ranks.dtype).max).sort(dim=1).values  # (S, T)
    at_or_above = torch.searchsorted(ordered, ranks, right=True)  # (S, T) targets with rank <= each rank
    precision = at_or_above.double() / ranks.double().clamp(min=1)  # (S, T)
    total = torch.where(inside, precision, torch.zeros_like(precision)).sum(dim=1)  # (S,)
    return total / set_sizes(ranks).clamp(max=k)


SET_METRICS = {"hr": set_hit_rate, "recall": set_recall, "ndcg": set_ndcg, "mrr": set_mrr,
               "precision": set_precision, "map": average_precision}


def set_metric_values(ranks: Tensor, ks: list[int]) -> dict[str, Tensor]:
    """Per-sample values (S,) float64 of every set metric at every k, keyed ``metric@k``. ranks: (S, T)."""
    ranks = ranks.contiguous()
    return {f"{name}@{k}": fn(ranks, k) for name, fn in SET_METRICS.items() for k in ks}


def set_ranking_metrics(ranks: Tensor, ks: list[int]) -> dict[str, float]:
    """Means over samples of every set metric at every k, keyed ``metric@k``. ranks: (S, T), 0 = padding."""
    if ranks.shape[0] == 0:
        return {f"{name}@{k}": math.nan for name in SET_METRICS for k in ks}
    return {name: value.mean().item() for name, value in set_metric_values(ranks, ks).items()}
