"""Tests for recforge.evaluation.metrics: tie handling, hand-computed metric values, key names, empty input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recforge.evaluation.metrics import (
    METRICS,
    hit_rate,
    mrr,
    ndcg,
    ranking_metrics,
    recall,
    target_ranks,
)


def loop_target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference: 1 + number of other items whose score is >= the target's score."""
    out = []
    for row, t in zip(scores.tolist(), targets.tolist()):
        s = row[t]
        out.append(1 + sum(1 for j, v in enumerate(row) if j != t and v >= s))
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------------- target_ranks


def test_target_ranks_hand_case():
    scores = torch.tensor([
        [0.1, 0.9, 0.5, 0.3],  # target 2 (0.5): only 0.9 is higher -> rank 2
        [0.4, 0.4, 0.4, 0.1],  # target 1 (0.4): two other items tie -> 0 higher + 2 ties + 1 = 3
        [0.0, 0.2, 0.3, 0.7],  # target 3 (0.7): highest -> rank 1
    ])
    targets = torch.tensor([2, 1, 3])
    ranks = target_ranks(scores, targets)
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [2, 3, 1]


def test_all_equal_scores_rank_target_last():
    # N = 6 items all scored 0: the 5 other items tie with the target -> rank 0 + 5 + 1 = 6 = N.
    n = 6
    scores = torch.zeros(3, n)
    targets = torch.tensor([0, 3, 5])
    ranks = target_ranks(scores, targets)
    assert ranks.tolist() == [n, n, n]
    # HR@k = 0 for every k < N, and 1 only at k = N
    for k in range(1, n):
        assert hit_rate(ranks, k).tolist() == [0.0, 0.0, 0.0]
        assert ranking_metrics(ranks, [k])[f"hr@{k}"] == 0.0
    assert hit_rate(ranks, n).tolist() == [1.0, 1.0, 1.0]


def test_minus_inf_items_rank_below_target():
    # masked items at -inf never beat (or tie with) a finite target: target 1.0 vs [-inf, 2.0, -inf, 1.0(target)]
    scores = torch.tensor([[float("-inf"), 2.0, float("-inf"), 1.0]])
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]  # only 2.0 is higher


def test_target_ranks_parity_with_loop():
    g = torch.Generator().manual_seed(0)
    # integer-valued scores in a small range to force many ties
    scores = torch.randint(0, 5, (64, 30), generator=g).float()
    targets = torch.randint(0, 30, (64,), generator=g)
    torch.testing.assert_close(target_ranks(scores, targets), loop_target_ranks(scores, targets))


# ------------------------------------------------------------------------- metric values


def test_metrics_hand_case_at_10():
    ranks = torch.tensor([1, 2, 3, 11])
    # HR@10: ranks 1, 2, 3 are <= 10, 11 is not -> (1 + 1 + 1 + 0) / 4 = 0.75
    hr = hit_rate(ranks, 10)
    assert hr.dtype == torch.float64
    assert hr.tolist() == [1.0, 1.0, 1.0, 0.0]
    # recall with one relevant item equals HR
    assert recall(ranks, 10).tolist() == [1.0, 1.0, 1.0, 0.0]
    # NDCG@10: 1/log2(1+1) = 1, 1/log2(3), 1/log2(4) = 1/2, 0 (outside top 10)
    expected_ndcg = [1.0, 1.0 / math.log2(3), 0.5, 0.0]
    np.testing.assert_allclose(ndcg(ranks, 10).numpy(), expected_ndcg, rtol=0, atol=1e-12)
    # MRR@10: 1/1, 1/2, 1/3, 0
    np.testing.assert_allclose(mrr(ranks, 10).numpy(), [1.0, 0.5, 1.0 / 3.0, 0.0], rtol=0, atol=1e-12)

    m = ranking_metrics(ranks, [10])
    assert m["hr@10"] == pytest.approx(0.75, abs=1e-12)
    assert m["recall@10"] == pytest.approx(0.75, abs=1e-12)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 0.5 + 0) / 4, abs=1e-12)
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 1 / 3 + 0) / 4, abs=1e-12)


def test_metrics_cutoff_is_inclusive():
    ranks = torch.tensor([5, 6])
    # k = 5: rank 5 is in (HR 1, NDCG 1/log2(6), MRR 1/5), rank 6 is out (all 0)
    assert hit_rate(ranks, 5).tolist() == [1.0, 0.0]
    np.testing.assert_allclose(ndcg(ranks, 5).numpy(), [1 / math.log2(6), 0.0], atol=1e-12)
    np.testing.assert_allclose(mrr(ranks, 5).numpy(), [0.2, 0.0], atol=1e-12)


def test_ranking_metrics_keys_and_several_ks():
    ranks = torch.tensor([1, 4, 7, 30])
    m = ranking_metrics(ranks, [5, 10, 20])
    assert set(m) == {f"{name}@{k}" for name in ("hr", "recall", "ndcg", "mrr") for k in (5, 10, 20)}
    assert set(METRICS) == {"hr", "recall", "ndcg", "mrr"}
    # HR@5: ranks 1, 4 -> 2/4; HR@10: 1, 4, 7 -> 3/4; HR@20: same 3/4 (30 > 20)
    assert m["hr@5"] == pytest.approx(0.5)
    assert m["hr@10"] == pytest.approx(0.75)
    assert m["hr@20"] == pytest.approx(0.75)
    # MRR@5 = (1 + 1/4) / 4 = 0.3125; MRR@10 = (1 + 1/4 + 1/7) / 4
    assert m["mrr@5"] == pytest.approx(0.3125)
    assert m["mrr@10"] == pytest.approx((1 + 0.25 + 1 / 7) / 4)
    # NDCG@10 = (1 + 1/log2(5) + 1/log2(8)) / 4 = (1 + 1/log2(5) + 1/3) / 4
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / 3) / 4)
    assert all(isinstance(v, float) for v in m.values())


def test_ranking_metrics_empty_is_nan():
    m = ranking_metrics(torch.empty(0, dtype=torch.long), [5, 10])
    assert set(m) == {f"{name}@{k}" for name in ("hr", "recall", "ndcg", "mrr") for k in (5, 10)}
    assert all(math.isnan(v) for v in m.values())


def test_metrics_mean_invariant_to_batching():
    # per-sample values: the mean over the whole equals the size-weighted mean of batch means
    g = torch.Generator().manual_seed(1)
    ranks = torch.randint(1, 50, (100,), generator=g)
    whole = ranking_metrics(ranks, [10])
    parts = [ranks[:13], ranks[13:60], ranks[60:]]
    for key in whole:
        weighted = sum(ranking_metrics(p, [10])[key] * len(p) for p in parts) / len(ranks)
        assert weighted == pytest.approx(whole[key], abs=1e-12)
