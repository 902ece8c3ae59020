"""loss=sampled_softmax: hand-computed values, the target never its own negative, the logQ correction against a
loop reference, and the three shared samplers."""
from __future__ import annotations

import math

import pytest
import torch

from recforge.errors import RecforgeError
from recforge.models.decoders import Decoder, DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.losses import SampledSoftmax
from recforge.models.samplers import InBatchNegatives, SharedPopularity, SharedUniform


def tiny_decoder() -> DotProduct:
    """5 items with 2-d embeddings e1..e5 = (1,0), (0,1), (1,1), (-1,0), (0,-1); row 0 is padding."""
    decoder = DotProduct(IdEmbedding(num_items=5, hidden_size=2))
    with torch.no_grad():
        decoder.item_embedder.table.weight[:6] = torch.tensor(
            [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    return decoder


def test_a_hand_computed_case() -> None:
    loss = SampledSoftmax(SharedUniform(2))
    hidden = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # row 0 scores e1..e5: 2, 0, 2, -2, 0; row 1: 0, 1, 1, 0, -1
    targets = torch.tensor([1, 2])
    value = loss.loss_against(hidden, targets, torch.tensor([3, 4]), tiny_decoder())
    # row 0: logits (target 2, negatives 2, -2): -log(e^2 / (e^2 + e^2 + e^-2))
    # row 1: logits (target 1, negatives 1, 0): -log(e^1 / (e^1 + e^1 + e^0))
    row0 = -math.log(math.exp(2) / (2 * math.exp(2) + math.exp(-2)))
    row1 = -math.log(math.e / (2 * math.e + 1))
    assert float(value.detach()) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_the_target_is_never_its_own_negative() -> None:
    loss = SampledSoftmax(SharedUniform(3))
    hidden = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 2])
    with_hit = loss.loss_against(hidden, targets, torch.tensor([1, 3, 4]), tiny_decoder())  # id 1 is row 0's target
    # row 0 keeps negatives 3, 4 only; row 1 keeps all three (1, 3, 4 score 0, 1, 0)
    row0 = -math.log(math.exp(2) / (2 * math.exp(2) + math.exp(-2)))
    row1 = -math.log(math.e / (math.e + 1 + math.e + 1))
    assert float(with_hit.detach()) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def reference_corrected(hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                        log_q: dict[int, float], decoder: Decoder) -> float:
    """TensorFlow's sampled_softmax_loss with subtract_log_q and remove_accidental_hits, one row at a time."""
    total = 0.0
    for h, t in zip(hidden, targets.tolist()):
        score = {i: float((h @ decoder.item_embedder.table.weight[i]).detach()) - log_q[i] for i in range(1, 6)}
        denominator = math.exp(score[t]) + sum(math.exp(score[n]) for n in negatives.tolist() if n != t)
        total += -(score[t] - math.log(denominator))
    return total / len(targets)


@pytest.mark.parametrize("sampler", [SharedPopularity(3), InBatchNegatives()])
def test_log_q_correction_against_a_reference(sampler) -> None:
    counts = torch.tensor([0, 4, 1, 2, 2, 1])  # popularity q = 4/10, 1/10, 2/10, 2/10, 1/10
    loss = SampledSoftmax(sampler)
    loss.fit_data(type("Data", (), {"item_counts": counts})())
    log_q = {i: math.log(int(counts[i]) / 10) for i in range(1, 6)}
    assert sampler.log_q(torch.tensor([1, 5]), 5).tolist() == pytest.approx([log_q[1], log_q[5]])
    decoder, hidden = tiny_decoder(), torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, -1.0]])
    targets, negatives = torch.tensor([1, 2, 5]), torch.tensor([1, 3, 4, 5])
    value = float(loss.loss_against(hidden, targets, negatives, decoder).detach())
    assert value == pytest.approx(reference_corrected(hidden, targets, negatives, log_q, decoder), rel=1e-6)
    uncorrected = float(SampledSoftmax(sampler, log_q_correction=False).loss_against(hidden, targets, negatives,
                                                                                    decoder).detach())
    assert uncorrected == pytest.approx(reference_corrected(hidden, targets, negatives, dict.fromkeys(log_q, 0.0),
                                                            decoder), rel=1e-6)
    assert value != pytest.approx(uncorrected)


def test_uniform_draws_distinct_allowed_ids_and_refuses_more_than_the_catalogue() -> None:
    sampler = SharedUniform(4)
    excluded = torch.zeros(7, dtype=torch.bool)
    excluded[[2, 5]] = True
    sampler.exclude_items(excluded)
    torch.manual_seed(0)
    for _ in range(20):
        drawn = sampler.draw(torch.tensor([1]), 6).tolist()
        assert sorted(drawn) == [1, 3, 4, 6]  # 4 of the 4 allowed ids, each once
    with pytest.raises(RecforgeError, match=r"loss.sampler.num_negatives=5 is larger than the 4 items"):
        SharedUniform(5).fit_counts(torch.ones(5))  # ids 1..4
    assert sampler.log_q(torch.tensor([1, 6]), 6).tolist() == [0.0, 0.0]


def test_popularity_draws_follow_the_counts() -> None:
    sampler = SharedPopularity(200_000)
    sampler.fit_counts(torch.tensor([9, 6, 0, 3, 1]))  # padding's count is ignored: q = 0.6, 0, 0.3, 0.1
    torch.manual_seed(0)
    freq = torch.bincount(sampler.draw(torch.tensor([1]), 4), minlength=5).double() / 200_000
    assert freq[0] == 0 and freq[2] == 0
    assert freq[[1, 3, 4]].tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.005)  # binomial sd < 0.0011


def test_in_batch_negatives_are_the_distinct_targets() -> None:
    assert InBatchNegatives().draw(torch.tensor([4, 2, 4, 7]), 9).tolist() == [2, 4, 7]


def test_shared_scores_equal_per_row_scores() -> None:
    decoder, hidden, items = tiny_decoder(), torch.randn(3, 2), torch.tensor([5, 1, 3])
    expected = decoder.score_items(hidden, items.expand(3, -1))
    torch.testing.assert_close(decoder.score_shared(hidden, items), expected)
    torch.testing.assert_close(Decoder.score_shared(decoder, hidden, items), expected)  # the role's default
