"""Pure beyond-accuracy metrics of top-k recommendation lists: item coverage, average popularity, novelty and the
Gini index of how often each item is recommended.

Every function takes ``top`` (S, k): each evaluated sample's k recommended item ids (1..N), best first, after the
history mask (see :func:`recforge.evaluation.ranking.top_items`), and returns one float64 number over all
samples. ``item_counts`` (N+1,) are the training interactions of each item id (entry 0, padding, unused).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def item_coverage(top: Tensor, num_items: int) -> float:
    """Distinct recommended items / N (RecBole ItemCoverage; RecBole's N also counts its padding id, ours does
    not; Elliot's ItemCoverage is the count itself)."""
    return torch.unique(top).numel() / num_items


def average_popularity(top: Tensor, item_counts: Tensor) -> float:
    """Mean over samples of the mean training interaction count of their recommended items (RecBole
    AveragePopularity; Elliot ARP)."""
    return item_counts.to(top.device)[top].double().mean(dim=1).mean().item()


def self_information(item_counts: Tensor) -> Tensor:
    """-log2 p(i) with p(i) = the item's share of all training interactions, in bits (N+1,) float64. An item never
    seen in training gets the value of the rarest seen item, as Elliot's EFD does (its ``max_nov``)."""
    counts = item_counts.double()
    counts[0] = 0.0  # padding never counts
    seen = counts > 0
    info = -torch.log2(counts / counts.sum())  # (N+1,) inf where unseen
    rarest = info[seen].max() if bool(seen.any()) else torch.tensor(math.inf, dtype=torch.float64)
    return torch.where(seen, info, rarest)


def novelty(top: Tensor, item_counts: Tensor) -> float:
    """Mean over samples of the mean self-information of their recommended items (Zhou et al., PNAS 2010;
    Elliot's EFD item novelty -log2 p(i) without its relevance and rank discount). Bits."""
    return self_information(item_counts).to(top.device)[top].mean(dim=1).mean().item()


def gini_index(top: Tensor, num_items: int) -> float:
    """The Gini index of the recommendation counts of all N items (never-recommended ones count 0), as RecBole's
    GiniIndex: sum_j (2j - N - 1) c_(j) / (N sum_j c_(j)), c_(1) <= ... <= c_(N). 0 when every item is
    recommended equally often, 1 - 1/N when one item fills every list. (Elliot's Gini is 1 minus a variant.)"""
    counts = torch.bincount(top.reshape(-1), minlength=num_items + 1)[1:].double().sort().values  # (N,) ascending
    j = torch.arange(1, num_items + 1, dtype=torch.float64, device=counts.device)  # (N,)
    return ((2 * j - num_items - 1) * counts).sum().item() / (num_items * counts.sum().item())


BEYOND_METRICS = ("coverage", "avg_popularity", "novelty", "gini")


def beyond_accuracy_metrics(top: Tensor, ks: list[int], num_items: int,
                            item_counts: Tensor | None) -> dict[str, float]:
    """Every beyond-accuracy metric at every k over the lists ``top`` (S, K >= max k, or all N items when N < k),
    keyed ``metric@k``; the popularity-based ones only with ``item_counts``. NaN without lists."""
    names = BEYOND_METRICS if item_counts is not None else ("coverage", "gini")
    if top.shape[0] == 0:
        return {f"{name}@{k}": math.nan for name in names for k in ks}
    out: dict[str, float] = {}
    for k in ks:
        lists = top[:, :k]  # (S, k)
        out[f"coverage@{k}"] = item_coverage(lists, num_items)
        if item_counts is not None:
            out[f"avg_popularity@{k}"] = average_popularity(lists, item_counts)
            out[f"novelty@{k}"] = novelty(lists, item_counts)
        out[f"gini@{k}"] = gini_index(lists, num_items)
    return out
