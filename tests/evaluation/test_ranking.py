"""Tests for recforge.evaluation.ranking: history masking, batch-size invariance, the DDP-safe accumulator."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from recforge.evaluation.metrics import ranking_metrics, target_ranks
from recforge.evaluation.ranking import (
    RankAccumulator,
    history_fill,
    mask_history,
    rank_targets,
    ranks_by_correction,
    ranks_by_masked_copy,
    repeated_targets,
)

NEG_INF = float("-inf")


def loop_mask_history(scores: torch.Tensor, history: torch.Tensor, fill: float = NEG_INF) -> torch.Tensor:
    """Reference: copy, set every history id to ``fill`` (the target too when it is one of them), id 0 to -inf."""
    out = scores.clone()
    for b in range(scores.shape[0]):
        for h in history[b].tolist():
            out[b, h] = fill
        out[b, 0] = NEG_INF
    return out


# ------------------------------------------------------------------------- mask_history


def test_mask_history_hand_case():
    # ids 0..5; row 0: history {2, 4} (+ padding 0), target 3; row 1: history {1, 3}: the target 3 repeats
    scores = torch.tensor([
        [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    ])
    history = torch.tensor([[2, 4, 0], [1, 3, 3]])
    masked = mask_history(scores, history)
    expected = torch.tensor([
        [NEG_INF, 1.0, NEG_INF, 3.0, NEG_INF, 5.0],  # 0, 2, 4 masked
        [NEG_INF, NEG_INF, 2.0, NEG_INF, 4.0, 5.0],  # 0, 1 and 3 masked: the history decides, not the target
    ])
    torch.testing.assert_close(masked, expected)
    # the S3-Rec rule: seen items at 0, padding still -inf
    s3rec = torch.tensor([[NEG_INF, 0.0, 2.0, 0.0, 4.0, 5.0]])
    torch.testing.assert_close(mask_history(scores[1:], history[1:], 0.0), s3rec)
    # the input is not modified
    assert scores[0, 0] == 9.0 and scores[0, 2] == 2.0


def test_history_fill_of_each_rule_and_a_bad_rule():
    assert history_fill(True) == NEG_INF and history_fill(False) is None and history_fill("s3rec") == 0.0
    with pytest.raises(ValueError, match="must be true, false or 's3rec'"):
        history_fill("yes")


def test_mask_history_zero_padding_masked_even_without_history():
    # history of only padding: only column 0 changes
    scores = torch.tensor([[7.0, 1.0, 2.0]])
    masked = mask_history(scores, torch.zeros(1, 4, dtype=torch.long))
    torch.testing.assert_close(masked, torch.tensor([[NEG_INF, 1.0, 2.0]]))


@pytest.mark.parametrize("fill", [NEG_INF, 0.0])
def test_mask_history_parity_with_loop(fill):
    g = torch.Generator().manual_seed(0)
    B, N, P = 32, 20, 12
    scores = torch.randn(B, N + 1, generator=g)
    history = torch.randint(0, N + 1, (B, P), generator=g)  # includes padding 0 and repeats
    torch.testing.assert_close(mask_history(scores, history, fill), loop_mask_history(scores, history, fill))


def test_repeated_targets_hand_case():
    history = torch.tensor([[2, 4, 0], [1, 3, 3], [0, 0, 0]])
    assert repeated_targets(history, torch.tensor([3, 3, 1])).tolist() == [False, True, False]


def test_every_target_repeating_an_earlier_item_is_never_a_hit_with_masking_on():
    """The label leak of the old rule: with every target one of the user's earlier items, a model that scores
    the history highest got HR@10 = 1 because the one unmasked history item was the answer. Masking decides
    from the history alone, so every such target is unreachable: HR@10 = 0."""
    g = torch.Generator().manual_seed(5)
    B, N, P = 40, 30, 6
    history = torch.randint(1, N + 1, (B, P), generator=g)
    targets = history[torch.arange(B), torch.randint(0, P, (B,), generator=g)]  # (B,) each repeats its history
    scores = torch.randn(B, N + 1, generator=g)
    scores.scatter_(1, history, 100.0)  # the history scored far above everything else
    ranks = rank_targets(scores, targets, history)
    assert ranking_metrics(ranks, [10])["hr@10"] == 0.0
    assert ranks.tolist() == [N + 1] * B  # last: at -inf, tied with every masked id


def test_last_history_item_first_is_a_hit_at_one_with_masking_off():
    """Repeat consumption with masking off: a model that always scores the last history item highest hits
    every target that repeats it."""
    history = torch.tensor([[3, 5, 2], [1, 4, 4], [6, 2, 1]])
    targets = history[:, -1]  # the user consumes the last item again
    scores = torch.zeros(3, 7)
    scores[torch.arange(3), history[:, -1]] = 1.0
    ranks = rank_targets(scores, targets, None)  # evaluation.mask_history=false: no history mask
    assert ranking_metrics(ranks, [1])["hr@1"] == 1.0


def test_the_s3rec_rule_puts_seen_items_at_zero_so_a_seen_item_can_outrank_negative_scores():
    # ids 0..5, scores [9, 2, -1, -3, -2, -4]; history {1, 2}; target 3 (score -3)
    scores = torch.tensor([[9.0, 2.0, -1.0, -3.0, -2.0, -4.0]])
    history = torch.tensor([[1, 2]])
    # -inf rule: ids 1, 2 gone; ahead of -3: id 4 (-2) -> rank 2
    assert rank_targets(scores, torch.tensor([3]), history).tolist() == [2]
    # S3-Rec rule: ids 1, 2 at 0 are still ahead, and id 4 -> rank 4
    assert rank_targets(scores, torch.tensor([3]), history, 0.0).tolist() == [4]
    # a repeated target (id 2) under the S3-Rec rule is scored 0 like its history: id 1 ties with it -> rank 2
    assert rank_targets(scores, torch.tensor([2]), history, 0.0).tolist() == [2]


def test_rank_targets_with_and_without_history():
    # ids 0..4, scores [10, 4, 3, 2, 1], target 3 (score 2)
    scores = torch.tensor([[10.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([3])
    # no history: only column 0 is masked; 4 and 3 are higher -> rank 3
    assert rank_targets(scores, target, None).tolist() == [3]
    # history {1}: 1 is masked; only 3.0 (id 2) is higher -> rank 2
    assert rank_targets(scores, target, torch.tensor([[1, 0]])).tolist() == [2]
    # history {1, 3}: the target repeats an earlier item and is masked with it: last of 5 columns
    assert rank_targets(scores, target, torch.tensor([[1, 3]])).tolist() == [5]
    # padding column 0 with the highest score never counts, and the input is unchanged
    assert scores[0, 0] == 10.0


def test_rank_targets_with_ties_infinities_and_nan_hand_case():
    # ids 0..5: scores [9, 5, 5, -inf, nan, 5]; target 2 (score 5)
    scores = torch.tensor([[9.0, 5.0, 5.0, NEG_INF, math.nan, 5.0]] * 3)
    targets = torch.tensor([2, 2, 3])
    history = torch.tensor([[0, 0, 0], [1, 4, 1], [1, 2, 0]])
    # row 0, nothing masked but id 0: ids 1 and 5 tie (count against), NaN id 4 counts against -> rank 4
    # row 1, ids 1 and 4 masked (1 listed twice): only id 5 ties -> rank 2
    # row 2, target id 3 at -inf: masked ids 1, 2 and 0 are -inf too, tie with it; 4 (NaN) and 5 -> rank 6
    assert rank_targets(scores, targets, history).tolist() == [4, 2, 6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_ways_of_ranking_equal_the_rank_on_a_masked_copy(dtype):
    """The count corrected for masked ids, the masked copy, and rank_targets (which picks one by the history's
    width) == target_ranks over loop_mask_history's copy, on scores with many ties, -inf (cold items), NaN,
    duplicate history ids, the target in its own history and padding; short and long histories."""
    g = torch.Generator().manual_seed(11)
    for trial in range(60):
        B, N, P = 16, int(torch.randint(2, 60, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
        scores = torch.randint(-3, 4, (B, N + 1), generator=g).float()  # few distinct values: ties everywhere
        special = torch.rand(B, N + 1, generator=g)
        scores[special < 0.1] = NEG_INF
        scores[special > 0.95] = math.nan
        scores = scores.to(dtype)
        targets = torch.randint(1, N + 1, (B,), generator=g)
        history = torch.randint(0, N + 1, (B, P), generator=g)
        history[::2, 0] = targets[::2]  # every other target among its own earlier items (a repeat)
        history[:, -1] = history[:, min(1, P - 1)]  # a duplicate id
        no_history = scores.float().clone()
        no_history[:, 0] = NEG_INF
        expected_no_history = target_ranks(no_history, targets)
        for fill in (NEG_INF, 0.0):  # mask_history=true and the S3-Rec rule
            expected = target_ranks(loop_mask_history(scores.float(), history, fill), targets)
            for rank in (ranks_by_correction, ranks_by_masked_copy, rank_targets):
                assert torch.equal(rank(scores, targets, history, fill), expected), (trial, fill, rank.__name__)
                assert torch.equal(rank(scores, targets, None, fill), expected_no_history), (trial, rank.__name__)


def test_rank_targets_masks_a_copy_only_for_histories_of_an_eighth_of_the_items_or_more(monkeypatch):
    import recforge.evaluation.ranking as ranking

    used = []
    monkeypatch.setattr(ranking, "ranks_by_masked_copy", lambda *a: used.append("copy"))
    monkeypatch.setattr(ranking, "ranks_by_correction", lambda *a: used.append("correction"))
    scores, targets = torch.zeros(2, 81), torch.tensor([1, 2])
    for width in (9, 10, 11):  # 81 columns: 8 x 10 < 81 <= 8 x 11
        ranking.rank_targets(scores, targets, torch.zeros(2, width, dtype=torch.long))
    ranking.rank_targets(scores, targets, None)
    assert used == ["correction", "correction", "copy", "correction"]


def test_rank_targets_invariant_to_batch_size():
    g = torch.Generator().manual_seed(3)
    B, N, P = 50, 40, 8
    scores = torch.randn(B, N + 1, generator=g)
    history = torch.randint(0, N + 1, (B, P), generator=g)
    targets = torch.randint(1, N + 1, (B,), generator=g)
    ks = [1, 5, 10]
    reference = None
    for batch in (1, 7, B):
        ranks = torch.cat([
            rank_targets(scores[i:i + batch], targets[i:i + batch], history[i:i + batch]) for i in range(0, B, batch)
        ])
        metrics = ranking_metrics(ranks, ks)
        if reference is None:
            reference = (ranks, metrics)
        else:
            torch.testing.assert_close(ranks, reference[0])
            assert metrics == reference[1]


# ------------------------------------------------------------------------- RankAccumulator


def test_accumulator_drops_duplicate_indices():
    # 5 samples with ranks 1, 2, 3, 11, 4 split over 2 "processes"; DistributedSampler pads the second
    # by repeating sample 0 -> index 0 appears twice.
    index = torch.tensor([0, 1, 2, 3, 4])
    ranks = torch.tensor([1, 2, 3, 11, 4])
    one_pass = RankAccumulator([1, 10])
    one_pass.update(index, ranks)

    padded = RankAccumulator([1, 10])
    padded.update(torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4]))
    padded.update(torch.tensor([1, 3, 0]), torch.tensor([2, 11, 1]))  # 0 repeated as padding
    assert padded.unique_ranks().tolist() == [1, 2, 3, 11, 4]  # ordered by sample index, once each

    expected = one_pass.compute()
    # hand: HR@10 = 4/5, HR@1 = 1/5, MRR@10 = (1 + 1/2 + 1/3 + 0 + 1/4) / 5
    assert expected["hr@10"] == pytest.approx(0.8)
    assert expected["hr@1"] == pytest.approx(0.2)
    assert expected["mrr@10"] == pytest.approx((1 + 0.5 + 1 / 3 + 0.25) / 5)
    assert expected["unreachable"] == 0.0  # no flags given: nothing unreachable
    assert padded.compute() == expected


def test_accumulator_unreachable_fraction_over_unique_samples():
    # 4 samples; samples 1 and 3 unreachable; sample 1 repeated as DDP padding must count once: 2/4
    acc = RankAccumulator([10])
    acc.update(torch.tensor([0, 1]), torch.tensor([1, 50]), torch.tensor([False, True]))
    acc.update(torch.tensor([2, 3, 1]), torch.tensor([3, 50, 50]), torch.tensor([False, True, True]))
    metrics = acc.compute()
    assert metrics["unreachable"] == 0.5
    assert metrics["hr@10"] == 0.5


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_accumulator_empty_and_reset():
    acc = RankAccumulator([10])
    assert acc.unique_ranks().numel() == 0
    assert math.isnan(acc.compute()["ndcg@10"])
    acc.update(torch.tensor([0]), torch.tensor([1]))
    acc.reset()
    acc.update(torch.tensor([0]), torch.tensor([2]))  # only the post-reset rank counts: MRR = 1/2
    assert acc.compute()["mrr@10"] == pytest.approx(0.5)


def test_accumulator_state_as_tensor_after_sync():
    # After a DDP sync torchmetrics replaces list states (dist_reduce_fx="cat") by one concatenated tensor.
    # unique_ranks must handle that form: indices [0, 1, 1] with ranks [1, 2, 2] -> unique ranks [1, 2].
    acc = RankAccumulator([10])
    acc.index = torch.tensor([0, 1, 1])
    acc.slot = torch.tensor([0, 0, 0])  # one target per sample: slot 0
    acc.ranks = torch.tensor([1, 2, 2])
    acc.unreachable = torch.tensor([0, 1, 1])
    assert acc.unique_ranks().tolist() == [1, 2]
    assert acc.unique()[1].tolist() == [0, 1]
    # a single synced sample with index 0 must still be counted (rank 1 -> HR@10 = 1, not NaN)
    acc.index = torch.tensor([0])
    acc.slot = torch.tensor([0])
    acc.ranks = torch.tensor([1])
    acc.unreachable = torch.tensor([0])
    assert acc.unique_ranks().tolist() == [1]
    assert acc.compute()["hr@10"] == 1.0


@pytest.fixture
def single_process_group(tmp_path):
    """A real gloo process group of world size 1, so Metric.compute() goes through the DDP sync path."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_accumulator_compute_under_process_group(single_process_group):
    # Same data as test_accumulator_drops_duplicate_indices, computed with torch.distributed initialised.
    acc = RankAccumulator([1, 10])
    acc.update(torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4]))
    acc.update(torch.tensor([1, 3, 0]), torch.tensor([2, 11, 1]))
    m = acc.compute()
    assert m["hr@10"] == pytest.approx(0.8)  # 4 of 5 unique samples have rank <= 10
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 1 / 3 + 0.25) / 5)


@pytest.mark.parametrize("rule,hr1,unreachable", [(True, 0.0, 1.0), (False, 1.0, 0.0)])
def test_module_with_a_last_item_model_on_repeats(rule, hr1, unreachable, monkeypatch):
    """A model that always puts the last history item first, on samples whose target repeats that item: the
    corrected mask (on) makes every target unreachable, no mask (off) gives HR@1 = 1 (repeat consumption).
    The old target-sparing mask gave HR@1 = 1 with masking on: the label leak."""
    from torch import nn

    from recforge.models.module import NextItemModule

    module = NextItemModule(encoder=nn.Identity(), decoder=nn.Identity(), loss=nn.Identity(), optimizer=None,
                            ks=(1, 10), mask_history=rule)
    history = torch.tensor([[4, 2, 7, 0], [1, 3, 3, 5], [6, 9, 0, 0]])  # right-padded
    last = torch.tensor([7, 5, 9])  # each user's last item
    scores = torch.zeros(3, 12).scatter_(1, last.unsqueeze(1), 1.0)  # (B, N+1): the last item first
    monkeypatch.setattr(module, "score", lambda recent, users=None: scores)
    batch = {"input": history, "target": last, "history": history, "index": torch.arange(3)}
    module.test_step(batch, 0)
    metrics = module.test_ranks.compute()
    assert metrics["hr@1"] == hr1 and metrics["unreachable"] == unreachable
    assert metrics["hr@10"] == hr1  # the masked target is last of 12, never in the top 10
