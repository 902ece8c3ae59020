"""Set-based ranking metrics (several targets per sample), beyond-accuracy metrics of top-k lists, the ranking of
target sets and top lists (full and item-chunked), and the accumulator over them (batching, DDP duplicates)."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import Tensor

from recforge.evaluation.beyond import (
    average_popularity,
    beyond_accuracy_metrics,
    gini_index,
    item_coverage,
    novelty,
    self_information,
)
from recforge.evaluation.metrics import (
    METRICS,
    SET_METRICS,
    average_precision,
    set_hit_rate,
    set_mrr,
    set_ndcg,
    set_precision,
    set_ranking_metrics,
    set_recall,
)
from recforge.evaluation.ranking import (
    RankAccumulator,
    RunningTop,
    best_columns,
    chunked_target_ranks,
    history_contains,
    masked_scores,
    rank_target_sets,
    rank_targets,
    ranks_and_top,
    top_items,
)
from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.sasrec import SASRec
from recforge.models.losses import CrossEntropy
from recforge.models.module import NextItemModule

# ------------------------------------------------------------------------------------------- set metrics

# sample A: three targets at ranks 1, 3, 7; sample B: one target at rank 2 (0 = padding)
RANKS = torch.tensor([[1, 3, 7], [2, 0, 0]])
LOG3 = math.log2(3)


def test_set_metrics_hand_case_at_3():
    # A: ranks 1 and 3 in the top 3 -> 2 hits; B: rank 2 -> 1 hit
    assert set_precision(RANKS, 3).tolist() == pytest.approx([2 / 3, 1 / 3])  # hits / k
    assert set_recall(RANKS, 3).tolist() == pytest.approx([2 / 3, 1.0])  # hits / targets (3 and 1)
    assert set_hit_rate(RANKS, 3).tolist() == [1.0, 1.0]
    assert set_mrr(RANKS, 3).tolist() == pytest.approx([1.0, 0.5])  # 1 / best rank
    # NDCG: A dcg = 1/log2(2) + 1/log2(4) = 1.5, ideal of min(3, 3) = 3 targets = 1 + 1/log2(3) + 1/2;
    #       B dcg = 1/log2(3), ideal of 1 target = 1
    assert set_ndcg(RANKS, 3).tolist() == pytest.approx([1.5 / (1.5 + 1 / LOG3), 1 / LOG3])
    # AP: A precision@1 = 1/1, precision@3 = 2/3 -> (1 + 2/3) / min(3, 3) = 5/9; B precision@2 = 1/2 -> 1/2 / 1
    assert average_precision(RANKS, 3).tolist() == pytest.approx([5 / 9, 0.5])
    means = set_ranking_metrics(RANKS, [3])
    assert means["precision@3"] == pytest.approx(0.5) and means["recall@3"] == pytest.approx(5 / 6)
    assert means["map@3"] == pytest.approx((5 / 9 + 0.5) / 2)
    assert set(means) == {f"{name}@3" for name in SET_METRICS}


def test_set_metrics_hand_case_at_1():
    # A: only rank 1 counts: precision 1/1, recall 1/3, NDCG 1 / ideal of min(3, 1) = 1 target -> 1,
    #    AP precision@1 / min(3, 1) = 1; B: nothing in the top 1
    assert set_precision(RANKS, 1).tolist() == [1.0, 0.0]
    assert set_recall(RANKS, 1).tolist() == pytest.approx([1 / 3, 0.0])
    assert set_ndcg(RANKS, 1).tolist() == [1.0, 0.0]
    assert average_precision(RANKS, 1).tolist() == [1.0, 0.0]
    assert set_mrr(RANKS, 1).tolist() == [1.0, 0.0]


def test_targets_tied_with_each_other_count_against_both():
    # two targets with equal scores and nothing above: ties count against each, both rank 2
    tied = torch.tensor([[2, 2]])
    assert set_precision(tied, 1).item() == 0.0 and set_precision(tied, 2).item() == 1.0
    assert average_precision(tied, 2).item() == 1.0  # precision@2 = 2/2 for each, (1 + 1) / min(2, 2)
    assert set_ndcg(tied, 2).item() == pytest.approx((2 / LOG3) / (1 + 1 / LOG3))  # both at 2, ideal at 1 and 2


def test_one_target_per_sample_equals_the_one_target_metrics():
    ranks = torch.randint(1, 60, (500,), generator=torch.Generator().manual_seed(0))  # (S,)
    sets = ranks.unsqueeze(1)  # (S, 1)
    for k in (1, 5, 10, 20):
        assert torch.equal(set_hit_rate(sets, k), METRICS["hr"](ranks, k))
        assert torch.equal(set_recall(sets, k), METRICS["hr"](ranks, k))  # recall = hr
        assert torch.equal(set_ndcg(sets, k), METRICS["ndcg"](ranks, k))
        assert torch.equal(set_mrr(sets, k), METRICS["mrr"](ranks, k))
        assert torch.equal(average_precision(sets, k), METRICS["mrr"](ranks, k))  # map = mrr
        assert torch.equal(set_precision(sets, k), METRICS["hr"](ranks, k) / k)  # precision = hr / k


# ------------------------------------------------------------------------------------------- beyond accuracy

# N = 5 items; training counts 8, 4, 2, 2, 0 (16 in all: p = 1/2, 1/4, 1/8, 1/8 -> 1, 2, 3, 3 bits; item 5 never
# seen: 3 bits, the rarest seen item's); three lists of 2
COUNTS = torch.tensor([0, 8, 4, 2, 2, 0])
TOP = torch.tensor([[1, 2], [1, 3], [1, 5]])


def test_beyond_accuracy_hand_case():
    assert item_coverage(TOP, 5) == 4 / 5  # items 1, 2, 3, 5
    assert item_coverage(TOP[:, :1], 5) == 1 / 5
    assert average_popularity(TOP, COUNTS) == 5.0  # mean of (8+4)/2, (8+2)/2, (8+0)/2
    assert self_information(COUNTS)[1:].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert novelty(TOP, COUNTS) == pytest.approx((1.5 + 2 + 2) / 3)  # (1+2)/2, (1+3)/2, (1+3)/2
    # recommendation counts of items 1..5: 3, 1, 1, 0, 1 -> ascending 0, 1, 1, 1, 3 with weights 2j - N - 1 =
    # -4, -2, 0, 2, 4: (0 - 2 + 0 + 2 + 12) / (5 * 6) = 0.4 (RecBole's formula gives 12 / 6 / 5 as well)
    assert gini_index(TOP, 5) == pytest.approx(0.4)
    assert gini_index(TOP[:, :1], 5) == pytest.approx(1 - 1 / 5)  # one item fills every list
    assert gini_index(torch.tensor([[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]]), 5) == 0.0  # all equally often
    metrics = beyond_accuracy_metrics(TOP, [1, 2], 5, COUNTS)
    assert metrics["coverage@2"] == 0.8 and metrics["avg_popularity@1"] == 8.0 and metrics["novelty@1"] == 1.0
    assert set(beyond_accuracy_metrics(TOP, [2], 5, None)) == {"coverage@2", "gini@2"}  # no popularity known


# ------------------------------------------------------------------------------------------- ranking

def random_sets(B: int, T: int, num_items: int, seed: int) -> Tensor:
    """(B, T) target sets, right-padded with 0, each row with 1..T distinct ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(B):
        n = int(torch.randint(1, T + 1, (1,), generator=g))
        ids = torch.randperm(num_items, generator=g)[:n] + 1
        rows.append(torch.cat([ids, torch.zeros(T - n, dtype=torch.long)]))
    return torch.stack(rows)


def tied_scores(B: int, num_items: int, seed: int) -> Tensor:
    """(B, N+1) scores from a few levels: many exact ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (B, num_items + 1), generator=g).float()


@pytest.mark.parametrize("fill", [float("-inf"), 0.0])
def test_set_ranks_equal_one_target_ranks_column_by_column(fill):
    scores, targets = tied_scores(30, 25, seed=1), random_sets(30, 6, 25, seed=2)
    history = torch.randint(0, 26, (30, 8), generator=torch.Generator().manual_seed(3))
    for hist in (history, None):
        got = rank_target_sets(scores, targets, hist, fill)  # (B, T)
        for t in range(targets.shape[1]):
            real = targets[:, t] > 0
            want = rank_targets(scores[real], targets[real, t], None if hist is None else hist[real], fill)
            assert torch.equal(got[real, t], want)
            assert (got[~real, t] == 0).all()


def test_history_contains_matches_a_loop():
    history = torch.tensor([[4, 2, 7, 0], [1, 3, 3, 5]])
    targets = torch.tensor([[7, 9, 0], [3, 0, 0]])
    assert history_contains(history, targets).tolist() == [[True, False, False], [True, False, False]]


def test_top_items_is_the_stable_sort_order_and_never_padding_or_masked():
    scores = tied_scores(40, 30, seed=4)
    history = torch.randint(0, 31, (40, 5), generator=torch.Generator().manual_seed(5))
    masked = masked_scores(scores, history)
    got = top_items(masked, 10)  # (B, 10)
    want = torch.sort(masked[:, 1:], dim=1, descending=True, stable=True).indices[:, :10] + 1
    assert torch.equal(got, want)
    assert not history_contains(history, got).any() and (got >= 1).all()  # mask_history=true: never recommended
    assert top_items(masked, 50).shape == (40, 30)  # k above the catalogue: every item


@pytest.mark.parametrize("k", [1, 3, 10, 29, 30])
def test_best_columns_on_distinct_and_tied_rows_is_the_stable_sort_order(k):
    # rows 0-19 distinct floats (one top-(k+1) decides them), rows 20-39 a few levels (ties settled by column),
    # row 40 distinct except a tie just past the k-th value, row 41 distinct except a tie inside the top k
    g = torch.Generator().manual_seed(11)
    values = torch.cat([torch.rand(20, 30, generator=g), tied_scores(20, 29, seed=12),
                        torch.rand(2, 30, generator=g)])  # (42, 30)
    order = values[40].argsort(descending=True)
    values[40, order[min(k, 29)]] = values[40, order[k - 1]]  # the k-th and (k+1)-th best now equal
    order = values[41].argsort(descending=True)
    values[41, order[0]] = values[41, order[1]]  # the best two now equal
    want = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]  # (42, k)
    assert torch.equal(best_columns(values, k), want)
    assert torch.equal(best_columns(values[:20], k), want[:20])  # every row on the top-(k+1) path


@pytest.mark.parametrize("fill", [float("-inf"), 0.0])
def test_ranks_and_top_in_place_equal_the_separate_functions_and_spare_views(fill):
    scores, targets = tied_scores(30, 25, seed=13), torch.randint(1, 26, (30,), generator=torch.Generator().manual_seed(14))
    history = torch.randint(0, 26, (30, 6), generator=torch.Generator().manual_seed(15))
    want_ranks, want_top = rank_targets(scores, targets, history, fill), top_items(masked_scores(scores, history, fill), 5)
    kept = scores.clone()
    ranks, top = ranks_and_top(scores, targets, history, 5, fill)  # a copy: the scores stay as they were
    assert torch.equal(ranks, want_ranks) and torch.equal(top, want_top) and torch.equal(scores, kept)
    view = kept[:, :]  # a view, e.g. of a decoder's own state: never written
    ranks, top = ranks_and_top(view, targets, history, 5, fill, overwrite=True)
    assert torch.equal(ranks, want_ranks) and torch.equal(top, want_top) and torch.equal(kept, scores)
    ranks, top = ranks_and_top(scores, targets, history, 5, fill, overwrite=True)  # masked in place
    assert torch.equal(ranks, want_ranks) and torch.equal(top, want_top)
    assert torch.equal(scores, masked_scores(kept, history, fill))


@pytest.mark.parametrize("chunk", [1, 4, 7, 31, 50])
def test_chunked_set_ranks_and_top_lists_equal_full(chunk):
    scores, targets = tied_scores(20, 30, seed=6), random_sets(20, 5, 30, seed=7)
    history = torch.randint(0, 31, (20, 6), generator=torch.Generator().manual_seed(8))
    top = RunningTop(8)
    got = chunked_target_ranks(lambda s, e: scores[:, s:e], scores.gather(1, targets), targets, history, 31, chunk,
                               on_chunk=top.add)
    assert torch.equal(got, rank_target_sets(scores, targets, history))
    assert torch.equal(top.ids, top_items(masked_scores(scores, history), 8))


def set_module(chunk: int | None, encoder: SASRec, decoder: DotProduct) -> NextItemModule:
    return NextItemModule(encoder=encoder, decoder=decoder, loss=CrossEntropy(),
                          optimizer=partial(torch.optim.Adam, lr=1e-3), ks=(1, 5), item_chunk_size=chunk).eval()


@pytest.mark.parametrize("chunk", [1, 7, 61])
def test_module_chunked_target_sets_equal_full(chunk):
    torch.manual_seed(0)
    embedder = IdEmbedding(60, 16)
    g = torch.Generator().manual_seed(9)
    recent = torch.randint(1, 61, (24, 6), generator=g)
    batch = {"input": recent, "history": recent, "targets": random_sets(24, 4, 60, seed=10),
             "index": torch.arange(24)}
    with torch.no_grad():
        encoder, decoder = SASRec(embedder, max_len=6, num_layers=1), DotProduct(embedder)
        full, chunked = set_module(None, encoder, decoder), set_module(chunk, encoder, decoder)
        want, got = full.rank(batch), chunked.rank(batch)
    assert want.shape == (24, 4) and torch.equal(got, want)
    assert torch.equal(chunked._batch_top, full._batch_top) and full._batch_top.shape == (24, 5)


# ------------------------------------------------------------------------------------------- accumulator

def test_accumulator_hand_case_with_sets_and_a_ddp_duplicate():
    acc = RankAccumulator([3])
    acc.update(torch.tensor([0]), torch.tensor([[1, 3, 7]]))
    acc.update(torch.tensor([1, 0]), torch.tensor([[2, 0, 0], [1, 3, 7]]))  # sample 0 again (DDP padding)
    metrics = acc.compute()
    assert acc.num_samples == 2
    assert metrics["precision@3"] == pytest.approx(0.5) and metrics["map@3"] == pytest.approx((5 / 9 + 0.5) / 2)
    assert metrics["unreachable"] == 0.0


def test_accumulator_unreachable_fraction_is_over_targets():
    # 4 targets (3 + 1), one unreachable: 1/4
    acc = RankAccumulator([3])
    acc.update(torch.tensor([0, 1]), torch.tensor([[1, 3, 7], [2, 0, 0]]),
               torch.tensor([[False, False, True], [False, False, False]]))
    assert acc.compute()["unreachable"] == 0.25


def feed(acc: RankAccumulator, index: Tensor, ranks: Tensor, top: Tensor, size: int, order: Tensor) -> None:
    """Feed samples in ``order`` in batches of ``size``, each batch padded only to its own largest set."""
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        width = int((ranks[rows] > 0).sum(dim=1).max())
        acc.update(index[rows], ranks[rows, :width], None, top[rows])


def test_accumulator_is_independent_of_batching_order_and_ddp_duplicates():
    S, N = 57, 40
    index = torch.arange(S)
    ranks = torch.sort(torch.randint(1, N + 1, (S, 6), generator=torch.Generator().manual_seed(11)), dim=1).values
    sizes = torch.randint(1, 7, (S,), generator=torch.Generator().manual_seed(12))
    ranks = torch.where(torch.arange(6) < sizes[:, None], ranks, 0)  # sets of 1..6 targets, right-padded
    top = torch.randint(1, N + 1, (S, 5), generator=torch.Generator().manual_seed(13))
    results = []
    for size, seed, padding in ((S, 0, 0), (1, 1, 0), (8, 2, 5), (13, 3, 9)):
        acc = RankAccumulator([1, 5], num_items=N)
        acc.item_counts = torch.arange(N + 1)
        order = torch.randperm(S, generator=torch.Generator().manual_seed(seed))
        order = torch.cat([order, order[:padding]])  # DistributedSampler repeats samples to even out the last batch
        feed(acc, index, ranks, top, size, order)
        results.append(acc.compute())
        assert acc.num_samples == S
    assert all(result == results[0] for result in results[1:])
    assert results[0]["recall@5"] == pytest.approx(set_recall(ranks, 5).mean().item())
    assert results[0]["coverage@5"] == item_coverage(top, N)


def test_accumulator_metrics_for_one_target_per_sample_are_the_usual_ones():
    ranks = torch.randint(1, 50, (200,), generator=torch.Generator().manual_seed(14))
    acc = RankAccumulator([5, 10])
    acc.update(torch.arange(100), ranks[:100])
    acc.update(torch.arange(100, 200), ranks[100:])
    metrics = acc.compute()
    for k in (5, 10):
        for name in ("hr", "recall", "ndcg", "mrr"):
            assert metrics[f"{name}@{k}"] == METRICS[name](ranks, k).mean().item()  # exactly
        assert metrics[f"map@{k}"] == metrics[f"mrr@{k}"]
        assert metrics[f"precision@{k}"] == pytest.approx(metrics[f"hr@{k}"] / k)


def test_module_test_step_with_target_sets_hand_case(monkeypatch):
    """Item scores 6..1 (row 0, item 1 best) and 1..6 (row 1, item 6 best) over items 1..6; mask_history=true.
    Row 0: history {1}, targets {2, 1}: 1 is masked (unreachable: rank 7 of 7 columns), 2 ranks first.
    Row 1: history {6, 2}, targets {5}: 5 ranks first. Top 2 after the mask: [2, 3] and [5, 4]."""
    embedder = IdEmbedding(6, 4)
    module = NextItemModule(encoder=SASRec(embedder, max_len=6, num_layers=1), decoder=DotProduct(embedder),
                            loss=CrossEntropy(), optimizer=None, ks=(1, 2)).eval()
    module.set_item_popularity(torch.tensor([0, 5, 4, 3, 2, 1, 1]))
    scores = torch.tensor([[0.0, 6, 5, 4, 3, 2, 1], [0.0, 1, 2, 3, 4, 5, 6]])
    monkeypatch.setattr(module, "score", lambda recent, users=None: scores)
    batch = {"input": torch.tensor([[1, 0], [6, 2]]), "history": torch.tensor([[1, 0], [6, 2]]),
             "targets": torch.tensor([[2, 1], [5, 0]]), "index": torch.arange(2)}
    module.test_step(batch, 0)
    assert module._batch_top.tolist() == [[2, 3], [5, 4]]
    metrics = module.test_ranks.compute()
    assert metrics["precision@1"] == 1.0 and metrics["recall@1"] == 0.75  # (1/2 + 1/1) / 2
    assert metrics["ndcg@2"] == pytest.approx((1 / (1 + 1 / LOG3) + 1) / 2)  # row 0: ideal of 2 targets
    assert metrics["unreachable"] == pytest.approx(1 / 3)  # 1 of 3 targets
    assert metrics["coverage@2"] == 4 / 6 and metrics["coverage@1"] == 2 / 6  # {2, 3, 4, 5}; {2, 5}
    assert metrics["avg_popularity@1"] == 2.5  # items 2 (4) and 5 (1)
    assert metrics["avg_popularity@2"] == 2.5  # mean of (4 + 3) / 2 = 3.5 and (1 + 2) / 2 = 1.5
    # @1: recommendation counts of items 1..6: 0 1 0 0 1 0 -> ascending 0 0 0 0 1 1, weights 2j - 7 = 3, 5
    assert metrics["gini@1"] == pytest.approx((3 + 5) / (6 * 2))
