"""Full ranking over all items with history masking, and a DDP-safe accumulator of target ranks.

Ranking can run over all item columns at once (:func:`rank_targets`, memory O(B x N)) or over column chunks
(:func:`chunked_target_ranks`, memory O(B x chunk)) with identical results for identical scores;
:func:`topk_chunked` selects the top k the same way.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from recforge.evaluation.metrics import ranking_metrics, target_ranks


def mask_history(scores: Tensor, history: Tensor, targets: Tensor) -> Tensor:
    """Set the scores of items seen before the target (and of padding id 0) to -inf, never the target's.

    scores: (B, N+1) over ids 0..N; history: (B, P) item ids, 0 = padding; targets: (B,).
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    masked = scores.scatter(1, history, float("-inf"))  # (B, N+1), the one copy of the scores
    masked[:, 0] = float("-inf")
    return masked.scatter_(1, targets.unsqueeze(1), target_scores)


class RankAccumulator(Metric):
    """Collects (sample index, rank) pairs; computes metrics over unique samples.

    Keeping the sample index makes the result identical under DDP, where DistributedSampler pads the last
    batch by repeating samples: duplicates are dropped before averaging.
    """

    full_state_update = False

    def __init__(self, ks: list[int]) -> None:
        super().__init__()
        self.ks = list(ks)
        self.num_samples = 0  # unique samples behind the last compute()
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
        ranks = self.unique_ranks()  # of every process: torchmetrics syncs the states around compute()
        self.num_samples = int(ranks.numel())
        return ranking_metrics(ranks, self.ks)


def _as_tensor(state: list[Tensor] | Tensor) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.empty(0, dtype=torch.long)


def rank_targets(scores: Tensor, targets: Tensor, history: Tensor | None) -> Tensor:
    """Ranks of the targets after masking history (when given) and padding id 0. (B,) int64.

    ``target_ranks(mask_history(scores, history, targets), targets)``, computed the cheaper of two equal ways: a
    short history (fewer ids than an eighth of the items) is corrected for (:func:`ranks_by_correction`, no copy
    of the scores), a long one masked in a copy (:func:`ranks_by_masked_copy`, no sort of the history).
    scores: (B, N+1) over ids 0..N; targets: (B,) ids >= 1; history: (B, P) ids, 0 = padding, or None.
    """
    if history is not None and 8 * history.shape[1] >= scores.shape[1]:
        return ranks_by_masked_copy(scores, targets, history)
    return ranks_by_correction(scores, targets, history)


def ranks_by_masked_copy(scores: Tensor, targets: Tensor, history: Tensor | None) -> Tensor:
    """:func:`rank_targets` on a copy of the scores with the masked ids at -inf. (B,) int64."""
    if history is not None:
        scores = mask_history(scores, history, targets)
    else:
        scores = scores.clone()
        scores[:, 0] = float("-inf")
    return target_ranks(scores.float(), targets)


def ranks_by_correction(scores: Tensor, targets: Tensor, history: Tensor | None) -> Tensor:
    """:func:`rank_targets` without a masked copy of the scores (ties and NaN alike): the items below the target
    are counted on the scores as they are, then each masked id (padding 0 and every distinct history id other
    than the target) is corrected, because at -inf it is below the target exactly when the target is above -inf.
    (B,) int64."""
    scores = scores.float()
    target = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    lower = (scores < target).sum(dim=1, dtype=torch.int32).long()  # (B,) before masking
    masked = targets.new_zeros(targets.shape[0], 1)  # (B, 1): padding id 0
    if history is not None:
        masked = torch.cat([masked, history], dim=1)  # (B, P+1)
    masked = torch.where(masked == targets.unsqueeze(1), 0, masked).sort(dim=1).values  # the target stays
    distinct = torch.ones_like(masked, dtype=torch.bool)  # (B, P+1): each masked id counted once
    distinct[:, 1:] = masked[:, 1:] != masked[:, :-1]
    was_lower = scores.gather(1, masked) < target  # (B, P+1)
    is_lower = target > float("-inf")  # (B, 1): where a masked id is now
    lower += ((is_lower.long() - was_lower.long()) * distinct).sum(dim=1)  # (B,)
    return (scores.shape[1] - lower).clamp(min=1)  # not lower, the target included


# ------------------------------------------------------------------------------------------- chunked ranking

ScoreColumns = Callable[[int, int], Tensor]
"""``(start, end) -> (B, end - start)`` scores of item ids ``start .. end - 1`` for every row of a batch."""


def chunked_target_ranks(score_columns: ScoreColumns, target_scores: Tensor, targets: Tensor,
                         history: Tensor | None, num_columns: int, chunk_size: int) -> Tensor:
    """:func:`rank_targets` computed over ``chunk_size`` item columns at a time: memory O(B x chunk_size).

    ``target_scores`` (B,) are the targets' scores, computed once; every chunk adds, per row, its items not
    strictly below the target's score after masking (history ids inside the chunk, padding id 0; the target
    keeps ``target_scores``). Ties count against the target and a NaN target ranks last, as in
    :func:`~recforge.evaluation.metrics.target_ranks`. The target score is rounded to each chunk's dtype
    first, so a target scored in float32 is never ahead of items tied with it in a bf16/fp16 chunk.
    Equal to ``rank_targets(scores, targets, history)`` when ``score_columns(s, e) == scores[:, s:e]`` and
    ``target_scores == scores.gather(1, targets[:, None])[:, 0]``. Targets are item ids >= 1. (B,) int64.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    ahead = torch.zeros(targets.shape[0], dtype=torch.long, device=targets.device)  # (B,)
    for start in range(0, num_columns, chunk_size):
        chunk = score_columns(start, min(start + chunk_size, num_columns))  # (B, C)
        target = target_scores.to(chunk.dtype).float().unsqueeze(1)  # (B, 1) rounded like the chunk
        masked = mask_chunk(chunk.float(), start, history, targets, target)  # (B, C)
        ahead += masked.shape[1] - (masked < target).sum(dim=1, dtype=torch.int32).long()  # not lower
    return ahead.clamp(min=1)


def mask_chunk(chunk: Tensor, start: int, history: Tensor | None, targets: Tensor, target: Tensor) -> Tensor:
    """:func:`mask_history` for item columns ``start .. start + C - 1``: history ids in that range and padding
    id 0 at -inf, then each row's target column (if inside) set to ``target``. A new tensor; ``chunk`` is kept.

    chunk: (B, C); history: (B, P) or None; targets: (B,); target: (B, 1).
    """
    B, C = chunk.shape
    masked = chunk.clone()  # (B, C)
    if history is not None:
        local = history - start  # (B, P)
        inside = (local >= 0) & (local < C)
        sink = torch.where(inside, local, C)  # ids outside the chunk land in an extra column, then dropped
        hit = torch.zeros(B, C + 1, dtype=torch.bool, device=chunk.device).scatter_(1, sink, True)  # (B, C+1)
        masked.masked_fill_(hit[:, :C], float("-inf"))
    if start == 0:
        masked[:, 0] = float("-inf")
    columns = torch.arange(start, start + C, device=chunk.device)  # (C,)
    return torch.where(columns.unsqueeze(0) == targets.unsqueeze(1), target, masked)  # (B, C)


def topk_chunked(score_columns: ScoreColumns, num_columns: int, k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` (values, item ids) of each row, scoring ``chunk_size`` columns at a time: memory O(B x chunk).

    Order: values descending, NaN above every number (as ``torch.topk``/``torch.sort``), equal values by lower
    item id first; i.e. exactly ``torch.sort(scores, descending=True, stable=True)`` cut to k. The values
    always equal ``torch.topk``'s; the ids too wherever the row has no tie that straddles the cut or that
    torch.topk orders otherwise (its order of ties is unspecified). (B, k) each.
    """
    if not 0 <= k <= num_columns or num_columns < 1:
        raise ValueError(f"k={k} must be in [0, num_columns={num_columns}] and num_columns >= 1")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    values: Tensor | None = None
    ids: Tensor | None = None
    for start in range(0, num_columns, chunk_size):
        chunk = score_columns(start, min(start + chunk_size, num_columns))  # (B, C)
        top, order = torch.sort(chunk, dim=1, descending=True, stable=True)  # (B, C)
        top, top_ids = top[:, :k], order[:, :k] + start  # (B, <= k)
        if values is None or ids is None:
            values, ids = top, top_ids
            continue
        # the kept ids are all below this chunk's: a stable sort of [kept, new] keeps lower ids first on ties
        merged, merged_ids = torch.cat([values, top], dim=1), torch.cat([ids, top_ids], dim=1)  # (B, <= 2k)
        keep = torch.sort(merged, dim=1, descending=True, stable=True).indices[:, :k]  # (B, k)
        values, ids = merged.gather(1, keep), merged_ids.gather(1, keep)
    assert values is not None and ids is not None  # num_columns >= 1: at least one chunk
    return values, ids
