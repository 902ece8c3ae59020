"""Full ranking over all items with history masking, and a DDP-safe accumulator of target ranks.

Ranking can run over all item columns at once (:func:`rank_targets`, memory O(B x N)) or over column chunks
(:func:`chunked_target_ranks`, memory O(B x chunk)) with identical results for identical scores;
:func:`topk_chunked` selects the top k the same way.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor
from torchmetrics import Metric

from recforge.evaluation.metrics import ranking_metrics, target_ranks

HistoryMask = Union[bool, str]
"""``evaluation.mask_history``: ``true`` (every earlier item of the user at -inf, a repeated target too),
``false`` (nothing masked: repeat consumption allowed) or ``"s3rec"`` (every earlier item's score set to 0, as the
S3-Rec code does, so its published table can be reproduced)."""

S3REC = "s3rec"


def history_fill(rule: HistoryMask) -> float | None:
    """The score a masked history item gets under ``rule``: -inf (``true``), 0.0 (``"s3rec"``) or None (``false``:
    no mask). The mask is a function of the history alone, never of the target."""
    if rule is True:
        return float("-inf")
    if rule is False:
        return None
    if rule == S3REC:
        return 0.0
    raise ValueError(f"mask_history={rule!r} must be true, false or {S3REC!r}")


def repeated_targets(history: Tensor, targets: Tensor) -> Tensor:
    """Whether each target occurs in its own history. history: (B, P) ids, 0 = padding; targets: (B,) ids >= 1.
    (B,) bool."""
    return (history == targets.unsqueeze(1)).any(dim=1)


def mask_history(scores: Tensor, history: Tensor, fill: float = float("-inf")) -> Tensor:
    """A copy of the scores with every history item (the target too, when it repeats one) set to ``fill`` and
    padding id 0 at -inf. scores: (B, N+1) over ids 0..N; history: (B, P) item ids, 0 = padding."""
    masked = scores.scatter(1, history, fill)  # (B, N+1), the one copy of the scores
    masked[:, 0] = float("-inf")
    return masked


class RankAccumulator(Metric):
    """Collects (sample index, rank, unreachable) triples; computes metrics over unique samples.

    Keeping the sample index makes the result identical under DDP, where DistributedSampler pads the last
    batch by repeating samples: duplicates are dropped before averaging. ``unreachable`` marks targets the
    history mask put at -inf (a repeated item under ``mask_history=true``); their fraction is reported as
    ``unreachable`` next to the metrics.
    """

    full_state_update = False

    def __init__(self, ks: list[int]) -> None:
        super().__init__()
        self.ks = list(ks)
        self.num_samples = 0  # unique samples behind the last compute()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("unreachable", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, ranks: Tensor, unreachable: Tensor | None = None) -> None:  # type: ignore[override]
        self.index.append(index.long())
        self.ranks.append(ranks.long())
        self.unreachable.append(torch.zeros_like(ranks, dtype=torch.long) if unreachable is None
                                else unreachable.long())

    def unique(self) -> tuple[Tensor, Tensor]:
        """(ranks, unreachable) of each sample once, ordered by sample index. (S,) int64 each."""
        index, ranks = _as_tensor(self.index), _as_tensor(self.ranks)  # lists before a DDP sync, tensors after
        unreachable = _as_tensor(self.unreachable)
        order = torch.argsort(index, stable=True)
        index, ranks, unreachable = index[order], ranks[order], unreachable[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return ranks[first], unreachable[first]

    def unique_ranks(self) -> Tensor:
        """Ranks of each sample once, ordered by sample index."""
        return self.unique()[0]

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        ranks, unreachable = self.unique()  # of every process: torchmetrics syncs the states around compute()
        self.num_samples = int(ranks.numel())
        fraction = unreachable.double().mean().item() if ranks.numel() else math.nan
        return {**ranking_metrics(ranks, self.ks), "unreachable": fraction}


def _as_tensor(state: list[Tensor] | Tensor) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.empty(0, dtype=torch.long)


def rank_targets(scores: Tensor, targets: Tensor, history: Tensor | None, fill: float = float("-inf")) -> Tensor:
    """Ranks of the targets after setting history items (when given) to ``fill`` and padding id 0 to -inf.
    (B,) int64.

    ``target_ranks(mask_history(scores, history, fill), targets)``: a target that repeats a history item is masked
    like any other (with fill -inf it ranks last: unreachable). Computed the cheaper of two equal ways: a short
    history (fewer ids than an eighth of the items) is corrected for (:func:`ranks_by_correction`, no copy of the
    scores), a long one masked in a copy (:func:`ranks_by_masked_copy`, no sort of the history).
    scores: (B, N+1) over ids 0..N; targets: (B,) ids >= 1; history: (B, P) ids, 0 = padding, or None.
    """
    if history is not None and 8 * history.shape[1] >= scores.shape[1]:
        return ranks_by_masked_copy(scores, targets, history, fill)
    return ranks_by_correction(scores, targets, history, fill)


def ranks_by_masked_copy(scores: Tensor, targets: Tensor, history: Tensor | None,
                         fill: float = float("-inf")) -> Tensor:
    """:func:`rank_targets` on a copy of the scores with the masked ids at ``fill`` (padding at -inf). (B,) int64."""
    if history is not None:
        scores = mask_history(scores, history, fill)
    else:
        scores = scores.clone()
        scores[:, 0] = float("-inf")
    return target_ranks(scores.float(), targets)


def ranks_by_correction(scores: Tensor, targets: Tensor, history: Tensor | None,
                        fill: float = float("-inf")) -> Tensor:
    """:func:`rank_targets` without a masked copy of the scores (ties and NaN alike): the items below the target's
    masked score are counted on the scores as they are, then each masked id (padding 0 and every distinct history
    id, the target's own column included when it repeats) is corrected to where its masked value lies. (B,) int64."""
    scores = scores.float()
    target = scores.gather(1, targets.unsqueeze(1))  # (B, 1) as scored
    masked = targets.new_zeros(targets.shape[0], 1)  # (B, 1): padding id 0
    if history is not None:
        target = torch.where(repeated_targets(history, targets).unsqueeze(1), fill, target)  # (B, 1) after masking
        masked = torch.cat([masked, history], dim=1).sort(dim=1).values  # (B, P+1), padding zeros first
    distinct = torch.ones_like(masked, dtype=torch.bool)  # (B, P+1): each masked id counted once
    distinct[:, 1:] = masked[:, 1:] != masked[:, :-1]
    now = torch.where(masked == 0, float("-inf"), fill)  # (B, P+1): each masked id's value after masking
    lower = (scores < target).sum(dim=1, dtype=torch.int32).long()  # (B,) before masking
    was_lower = scores.gather(1, masked) < target  # (B, P+1)
    lower += (((now < target).long() - was_lower.long()) * distinct).sum(dim=1)  # (B,)
    return (scores.shape[1] - lower).clamp(min=1)  # not lower, the target included


# ------------------------------------------------------------------------------------------- chunked ranking

ScoreColumns = Callable[[int, int], Tensor]
"""``(start, end) -> (B, end - start)`` scores of item ids ``start .. end - 1`` for every row of a batch."""


def chunked_target_ranks(score_columns: ScoreColumns, target_scores: Tensor, targets: Tensor,
                         history: Tensor | None, num_columns: int, chunk_size: int,
                         fill: float = float("-inf")) -> Tensor:
    """:func:`rank_targets` computed over ``chunk_size`` item columns at a time: memory O(B x chunk_size).

    ``target_scores`` (B,) are the targets' scores, computed once; every chunk adds, per row, its items not
    strictly below the target's score after masking (history ids inside the chunk at ``fill``, padding id 0 at
    -inf; the target keeps ``target_scores``, or ``fill`` when it repeats a history item). Ties count against the target and a NaN target ranks last, as in
    :func:`~recforge.evaluation.metrics.target_ranks`. The target score is rounded to each chunk's dtype
    first, so a target scored in float32 is never ahead of items tied with it in a bf16/fp16 chunk.
    Equal to ``rank_targets(scores, targets, history, fill)`` when ``score_columns(s, e) == scores[:, s:e]`` and
    ``target_scores == scores.gather(1, targets[:, None])[:, 0]``. Targets are item ids >= 1. (B,) int64.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if history is not None:  # a repeated target is masked like every history item
        target_scores = torch.where(repeated_targets(history, targets), fill, target_scores)  # (B,)
    ahead = torch.zeros(targets.shape[0], dtype=torch.long, device=targets.device)  # (B,)
    for start in range(0, num_columns, chunk_size):
        chunk = score_columns(start, min(start + chunk_size, num_columns))  # (B, C)
        target = target_scores.to(chunk.dtype).float().unsqueeze(1)  # (B, 1) rounded like the chunk
        masked = mask_chunk(chunk.float(), start, history, targets, target, fill)  # (B, C)
        ahead += masked.shape[1] - (masked < target).sum(dim=1, dtype=torch.int32).long()  # not lower
    return ahead.clamp(min=1)


def mask_chunk(chunk: Tensor, start: int, history: Tensor | None, targets: Tensor, target: Tensor,
               fill: float = float("-inf")) -> Tensor:
    """:func:`mask_history` for item columns ``start .. start + C - 1``: history ids in that range at ``fill``
    and padding id 0 at -inf, then each row's target column (if inside) set to ``target`` (its masked score).
    A new tensor; ``chunk`` is kept.

    chunk: (B, C); history: (B, P) or None; targets: (B,); target: (B, 1).
    """
    B, C = chunk.shape
    masked = chunk.clone()  # (B, C)
    if history is not None:
        local = history - start  # (B, P)
        inside = (local >= 0) & (local < C)
        sink = torch.where(inside, local, C)  # ids outside the chunk land in an extra column, then dropped
        hit = torch.zeros(B, C + 1, dtype=torch.bool, device=chunk.device).scatter_(1, sink, True)  # (B, C+1)
        masked.masked_fill_(hit[:, :C], fill)
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
