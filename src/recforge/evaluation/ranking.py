"""Full ranking over all items with history masking, and a DDP-safe accumulator of target ranks.

Ranking can run over all item columns at once (:func:`rank_targets`, memory O(B x N)) or over column chunks
(:func:`chunked_target_ranks`, memory O(B x chunk)) with identical results for identical scores;
:func:`topk_chunked` selects the top k the same way. A sample may have a set of targets
(:func:`rank_target_sets`: each target's rank among all items), and its recommendation list is the top k after
masking (:func:`top_items`, or :class:`RunningTop` over chunks: the same ids).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor
from torchmetrics import Metric

from recforge.evaluation.beyond import beyond_accuracy_metrics
from recforge.evaluation.metrics import (
    set_metric_values,
    set_ranking_metrics,
    target_ranks,
)

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


def history_contains(history: Tensor, targets: Tensor) -> Tensor:
    """Whether each target occurs in its row's history: :func:`repeated_targets` for sets of targets, without a
    (B, P, T) comparison. history: (B, P) ids, 0 = padding; targets: (B, T) ids, 0 = padding (never found).
    (B, T) bool."""
    if history.shape[1] == 0:
        return torch.zeros_like(targets, dtype=torch.bool)
    ordered = history.sort(dim=1).values  # (B, P)
    at = torch.searchsorted(ordered, targets.contiguous()).clamp(max=ordered.shape[1] - 1)  # (B, T)
    return (ordered.gather(1, at) == targets) & (targets > 0)


def mask_history(scores: Tensor, history: Tensor, fill: float = float("-inf")) -> Tensor:
    """A copy of the scores with every history item (the target too, when it repeats one) set to ``fill`` and
    padding id 0 at -inf. scores: (B, N+1) over ids 0..N; history: (B, P) item ids, 0 = padding."""
    masked = scores.scatter(1, history, fill)  # (B, N+1), the one copy of the scores
    masked[:, 0] = float("-inf")
    return masked


def masked_scores(scores: Tensor, history: Tensor | None, fill: float = float("-inf"),
                  overwrite: bool = False) -> Tensor:
    """A float32 copy of the scores as ranking sees them: history ids (when given) at ``fill``, padding id 0 at
    -inf. (B, N+1). ``overwrite``: float32 scores that are not a view (of a decoder's own state, e.g. popularity
    counts) are masked in place: one (B, N+1) buffer less per batch, for a caller that no longer needs them."""
    if overwrite and scores._base is None:
        masked = scores.float()  # the scores themselves when they are float32
        if history is not None:
            masked.scatter_(1, history, fill)
        masked[:, 0] = float("-inf")
        return masked
    if history is not None:
        return mask_history(scores.float(), history, fill)
    masked = scores.float().clone()
    masked[:, 0] = float("-inf")
    return masked


def ranks_in(masked: Tensor, targets: Tensor) -> Tensor:
    """Ranks of sets of targets in already masked scores (:func:`masked_scores`): for each target, the items not
    strictly below its score (itself included; ties against it), as :func:`target_ranks`, counted by a binary
    search in each sorted row (one sort for all of a row's targets). masked: (B, N+1) without NaN;
    targets: (B, T) ids, 0 = padding. (B, T) int64, 0 where padding."""
    target = masked.gather(1, targets)  # (B, T)
    lower = torch.searchsorted(masked.sort(dim=1).values, target.contiguous())  # (B, T) items strictly below
    ranks = (masked.shape[1] - lower).clamp(min=1)
    return torch.where(targets > 0, ranks, torch.zeros_like(ranks))


def rank_target_sets(scores: Tensor, targets: Tensor, history: Tensor | None,
                     fill: float = float("-inf")) -> Tensor:
    """:func:`rank_targets` for sets of targets: the rank of every target (B, T), 0 = padding, after masking
    (a target that repeats a history item is masked like it). (B, T) int64, 0 where padding."""
    return ranks_in(masked_scores(scores, history, fill), targets)


def best_columns(values: Tensor, k: int) -> Tensor:
    """Columns of the k highest values of each row, highest first, equal values by lower column first: as
    ``torch.sort(values, descending=True, stable=True).indices[:, :k]`` without sorting whole rows. values: (B, C)
    without NaN; 1 <= k <= C. (B, k) int64.

    One top-(k+1) per row decides it when its k+1 values are all distinct (no order among equals to settle: the
    common case for a trained model's float scores); only the rows with a tie among them take the exact path
    (:func:`_best_columns_with_ties`)."""
    if k >= values.shape[1]:
        return _best_columns_with_ties(values, k)
    top_values, top_columns = values.topk(k + 1, dim=1)  # (B, k+1) highest first
    clear = (top_values[:, :-1] > top_values[:, 1:]).all(dim=1)  # (B,) strictly decreasing: no tie to settle
    if bool(clear.all()):
        return top_columns[:, :k]
    columns = top_columns[:, :k].clone()  # (B, k)
    tied = (~clear).nonzero().squeeze(1)  # (T,) rows with a tie among their k+1 best values
    columns[tied] = _best_columns_with_ties(values[tied], k)
    return columns


def _best_columns_with_ties(values: Tensor, k: int) -> Tensor:
    """:func:`best_columns` for any rows: a top-k, then ties at the k-th value settled by column. (B, k) int64."""
    kth = values.topk(k, dim=1).values[:, -1:]  # (B, 1) the k-th highest value
    above, tied = values > kth, values == kth  # (B, C)
    room = k - above.sum(dim=1, keepdim=True)  # (B, 1) how many tied columns fit, lowest first
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))  # (B, C) exactly k per row
    columns = chosen.nonzero()[:, 1].view(values.shape[0], k)  # (B, k) ascending
    order = values.gather(1, columns).sort(dim=1, descending=True, stable=True).indices  # (B, k)
    return columns.gather(1, order)


def top_items(masked: Tensor, k: int) -> Tensor:
    """The k recommended item ids (>= 1) of each row of masked scores (:func:`masked_scores`), best first, equal
    scores by lower id first; padding id 0 is never recommended. (B, min(k, N)) int64."""
    return best_columns(masked[:, 1:], min(k, masked.shape[1] - 1)) + 1


def ranks_and_top(scores: Tensor, targets: Tensor, history: Tensor | None, k: int,
                  fill: float = float("-inf"), overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """Full ranking's two results from one masked copy of the scores (the scores themselves with ``overwrite``):
    the targets' ranks (:func:`rank_targets`, (B,), or :func:`ranks_in` for target sets (B, T), 0 = padding) and
    the top-k lists (:func:`top_items`, (B, min(k, N)))."""
    masked = masked_scores(scores, history, fill, overwrite)  # (B, N+1) as ranked
    ranks = ranks_in(masked, targets) if targets.dim() == 2 else target_ranks(masked, targets)
    return ranks, top_items(masked, k)


class RunningTop:
    """:func:`top_items` over column chunks fed in id order (``add``): the same ids, memory O(B x (chunk + k))."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: Tensor | None = None  # (B, <= k) best values so far, best first
        self.ids: Tensor | None = None  # (B, <= k) their item ids

    def add(self, masked: Tensor, start: int) -> None:
        """masked: (B, C) masked scores of item ids start .. start + C - 1 (a NaN counts as +inf here: the
        caller stops on NaN scores after all chunks)."""
        if start == 0:  # padding id 0 is never recommended
            masked, start = masked[:, 1:], 1
        if masked.shape[1] == 0:
            return
        masked = torch.nan_to_num(masked, nan=math.inf, posinf=math.inf, neginf=-math.inf)
        local = best_columns(masked, min(self.k, masked.shape[1]))  # (B, <= k)
        values, ids = masked.gather(1, local), local + start
        if self.values is not None and self.ids is not None:
            # the kept ids are all lower: a stable sort keeps them first on ties
            values, ids = torch.cat([self.values, values], dim=1), torch.cat([self.ids, ids], dim=1)
            keep = values.sort(dim=1, descending=True, stable=True).indices[:, : self.k]  # (B, <= k)
            values, ids = values.gather(1, keep), ids.gather(1, keep)
        self.values, self.ids = values, ids


class RankAccumulator(Metric):
    """Collects, per target, (sample index, slot of the target in its sample's set, rank, unreachable) and, when
    given, each sample's top-k list; computes metrics over unique samples.

    Keeping the sample index makes the result identical under DDP, where DistributedSampler pads the last
    batch by repeating samples: duplicates are dropped before averaging, and the result does not depend on how
    samples were batched. ``unreachable`` marks targets the history mask put at -inf (a repeated item under
    ``mask_history=true``); their fraction of all targets is reported as ``unreachable`` next to the metrics.
    Ranking metrics are the set metrics of :mod:`recforge.evaluation.metrics` (with one target per sample: hr,
    recall, ndcg, mrr as before, precision = hr / k, map = mrr); with ``num_items`` and top lists also the
    beyond-accuracy metrics of :mod:`recforge.evaluation.beyond` (popularity ones with ``item_counts`` set).
    """

    full_state_update = False
    chunk_samples = 4096  # set metrics are computed this many samples at a time (memory O(chunk x largest set))

    def __init__(self, ks: list[int], num_items: int | None = None) -> None:
        super().__init__()
        self.ks, self.num_items = list(ks), num_items
        self.item_counts: Tensor | None = None  # (N+1,) training interactions per item, set by the module
        self.num_samples = 0  # unique samples behind the last compute()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("slot", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("unreachable", default=[], dist_reduce_fx="cat")
        self.add_state("top_index", default=[], dist_reduce_fx="cat")
        self.add_state("top", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, ranks: Tensor, unreachable: Tensor | None = None,  # type: ignore[override]
               top: Tensor | None = None) -> None:
        """index: (B,) sample indices; ranks: (B,) one target each, or (B, T) a set each with 0 = padding;
        unreachable: like ranks (bool) or None; top: (B, K) each sample's recommended item ids, or None."""
        unreachable = torch.zeros_like(ranks, dtype=torch.bool) if unreachable is None else unreachable
        if ranks.dim() == 1:
            rows, slots = index, torch.zeros_like(index)
        else:
            valid = ranks > 0  # (B, T)
            rows, slots = index.unsqueeze(1).expand_as(ranks)[valid], valid.nonzero()[:, 1]  # (R,), (R,)
            ranks, unreachable = ranks[valid], unreachable[valid]
        self.index.append(rows.long())
        self.slot.append(slots.long())
        self.ranks.append(ranks.long())
        self.unreachable.append(unreachable.long())
        if top is not None:
            self.top_index.append(index.long())
            self.top.append(top.long())

    def unique_targets(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(sample index, slot, rank, unreachable) of each target once, ordered by sample index, then slot.
        (R,) int64 each."""
        index, slot = _as_tensor(self.index), _as_tensor(self.slot)  # lists before a DDP sync, tensors after
        ranks, unreachable = _as_tensor(self.ranks), _as_tensor(self.unreachable)
        key = index * (int(slot.max()) + 1 if slot.numel() else 1) + slot  # (R,) one per (sample, slot)
        order = torch.argsort(key, stable=True)
        key = key[order]
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        keep = order[first]
        return index[keep], slot[keep], ranks[keep], unreachable[keep]

    def unique(self) -> tuple[Tensor, Tensor]:
        """(ranks, unreachable) of each target once, ordered by sample index (then slot). (R,) int64 each; with
        one target per sample, one per sample."""
        _, _, ranks, unreachable = self.unique_targets()
        return ranks, unreachable

    def unique_ranks(self) -> Tensor:
        """Ranks of each target once, ordered by sample index (then slot)."""
        return self.unique()[0]

    def unique_top(self) -> Tensor:
        """Each sample's top list once, ordered by sample index. (S', K) int64."""
        index, top = _as_tensor(self.top_index), _as_tensor(self.top)
        if index.numel() == 0:
            return torch.zeros(0, 0, dtype=torch.long)
        order = torch.argsort(index, stable=True)
        index = index[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return top[order][first]

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        index, slot, ranks, unreachable = self.unique_targets()  # of every process: torchmetrics syncs the states
        _, sample = torch.unique_consecutive(index, return_inverse=True)  # (R,) 0 .. S-1
        self.num_samples = int(sample.max()) + 1 if sample.numel() else 0
        fraction = unreachable.double().mean().item() if ranks.numel() else math.nan
        metrics = {**self._set_metrics(sample, slot, ranks), "unreachable": fraction}
        top = self.unique_top()
        if self.num_items is not None and top.shape[0]:
            metrics.update(beyond_accuracy_metrics(top, self.ks, self.num_items, self.item_counts))
        return metrics

    def _set_metrics(self, sample: Tensor, slot: Tensor, ranks: Tensor) -> dict[str, float]:
        """Means over samples of the set metrics, the (S, T) rank matrix built ``chunk_samples`` rows at a time."""
        if ranks.numel() == 0:
            return set_ranking_metrics(torch.zeros(0, 1, dtype=torch.long), self.ks)
        bounds = torch.searchsorted(sample, torch.arange(0, self.num_samples + self.chunk_samples,
                                                         self.chunk_samples)).tolist()  # row bounds of each chunk
        values: dict[str, list[Tensor]] = {}
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo == hi:
                continue
            rows = sample[lo:hi] - sample[lo]  # (r,)
            sets = torch.zeros(int(rows.max()) + 1, int(slot[lo:hi].max()) + 1, dtype=torch.long,
                               device=ranks.device)  # (s, T)
            sets[rows, slot[lo:hi]] = ranks[lo:hi]
            for name, value in set_metric_values(sets, self.ks).items():
                values.setdefault(name, []).append(value)
        return {name: torch.cat(parts).mean().item() for name, parts in values.items()}


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
                         fill: float = float("-inf"),
                         on_chunk: Callable[[Tensor, int], None] | None = None) -> Tensor:
    """:func:`rank_targets` computed over ``chunk_size`` item columns at a time: memory O(B x chunk_size).

    ``target_scores`` (B,) are the targets' scores, computed once; every chunk adds, per row, its items not
    strictly below the target's score after masking (history ids inside the chunk at ``fill``, padding id 0 at
    -inf; the target keeps ``target_scores``, or ``fill`` when it repeats a history item). Ties count against the target and a NaN target ranks last, as in
    :func:`~recforge.evaluation.metrics.target_ranks`. The target score is rounded to each chunk's dtype
    first, so a target scored in float32 is never ahead of items tied with it in a bf16/fp16 chunk.
    Equal to ``rank_targets(scores, targets, history, fill)`` when ``score_columns(s, e) == scores[:, s:e]`` and
    ``target_scores == scores.gather(1, targets[:, None])[:, 0]``. Targets are item ids >= 1: (B,) -> (B,) int64;
    or sets of targets (B, T), 0 = padding, with their scores (B, T) -> (B, T) int64 as :func:`rank_target_sets`,
    0 where padding. ``on_chunk(masked, start)``, when given, sees every chunk after masking (history ids at
    ``fill``, padding at -inf), e.g. :meth:`RunningTop.add`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    single = targets.dim() == 1
    sets = targets.unsqueeze(1) if single else targets  # (B, T)
    set_scores = target_scores.unsqueeze(1) if single else target_scores  # (B, T)
    if history is not None:  # a repeated target is masked like every history item
        repeated = repeated_targets(history, targets).unsqueeze(1) if single else history_contains(history, sets)
        set_scores = torch.where(repeated, fill, set_scores)  # (B, T)
    ahead = torch.zeros(sets.shape, dtype=torch.long, device=targets.device)  # (B, T)
    for start in range(0, num_columns, chunk_size):
        chunk = score_columns(start, min(start + chunk_size, num_columns))  # (B, C)
        target = set_scores.to(chunk.dtype).float()  # (B, T) rounded like the chunk
        masked = mask_columns(chunk.float(), start, history, fill)  # (B, C)
        if on_chunk is not None:
            on_chunk(masked, start)
        columns = torch.arange(start, start + masked.shape[1], device=chunk.device)  # (C,)
        for t in range(sets.shape[1]):  # each target's own column at its masked score, then the items not lower
            counted = torch.where(columns.unsqueeze(0) == sets[:, t:t + 1], target[:, t:t + 1], masked)  # (B, C)
            ahead[:, t] += masked.shape[1] - (counted < target[:, t:t + 1]).sum(dim=1, dtype=torch.int32).long()
    ranks = ahead.clamp(min=1)
    return ranks[:, 0] if single else torch.where(sets > 0, ranks, torch.zeros_like(ranks))


def mask_chunk(chunk: Tensor, start: int, history: Tensor | None, targets: Tensor, target: Tensor,
               fill: float = float("-inf")) -> Tensor:
    """:func:`mask_history` for item columns ``start .. start + C - 1``: history ids in that range at ``fill``
    and padding id 0 at -inf, then each row's target column (if inside) set to ``target`` (its masked score).
    A new tensor; ``chunk`` is kept.

    chunk: (B, C); history: (B, P) or None; targets: (B,); target: (B, 1).
    """
    masked = mask_columns(chunk, start, history, fill)  # (B, C)
    columns = torch.arange(start, start + chunk.shape[1], device=chunk.device)  # (C,)
    return torch.where(columns.unsqueeze(0) == targets.unsqueeze(1), target, masked)  # (B, C)


def mask_columns(chunk: Tensor, start: int, history: Tensor | None, fill: float = float("-inf")) -> Tensor:
    """:func:`mask_history` for item columns ``start .. start + C - 1``: history ids in that range at ``fill``
    and padding id 0 at -inf. A new tensor; ``chunk`` is kept. chunk: (B, C); history: (B, P) or None."""
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
    return masked


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
