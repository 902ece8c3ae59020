"""loss=ce with ``chunk_rows``: a hand-computed case, equality with the full-logits loss and its gradients for every
chunk size, excluded items, no_grad, bf16 autocast, and the two configurations it refuses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.popularity import PopularityScores
from recforge.models.losses import CrossEntropy, linear_cross_entropy
from recforge.models.module import WithoutItems


def test_a_hand_computed_case() -> None:
    # items 1, 2 = (1, 0), (0, 1); row 0 = (1, 0) scores 1, 0 and wants item 1; row 1 = (0, 1) scores 0, 1, wants 2
    weights = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    bias = torch.tensor([float("-inf"), 0.0, 0.0])
    loss = linear_cross_entropy(hidden, weights, bias, torch.tensor([1, 2]), rows=1)
    assert float(loss.detach()) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)  # both rows: log(e + 1) - 1
    loss.backward()
    s = 1 / (1 + math.e)  # the wrong item's probability in each row
    # d loss / d logits, row 0: (0, -s, s) / 2; row 1: (0, s, -s) / 2 (mean over 2 rows)
    # d / d hidden = those rows @ weights; d / d weights = their transpose @ hidden
    assert torch.allclose(hidden.grad, torch.tensor([[-s, s], [s, -s]]) / 2, atol=1e-6)
    assert torch.allclose(weights.grad, torch.tensor([[0.0, 0.0], [-s, s], [s, -s]]) / 2, atol=1e-6)


def full_logits_reference(hidden: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor,
                          targets: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    h, w = hidden.detach().clone().requires_grad_(), weights.detach().clone().requires_grad_()
    loss = F.cross_entropy(torch.addmm(bias, h, w.T).float(), targets)
    loss.backward()
    return float(loss.detach()), h.grad, w.grad


@pytest.mark.parametrize("rows", [1, 3, 7, 8, 100])
def test_equal_to_the_full_logits_loss_for_every_chunk_size(rows: int) -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(8, 5, generator=gen, requires_grad=True)  # (M, H)
    weights = torch.randn(12, 5, generator=gen, requires_grad=True)  # (N+1, H)
    bias = torch.zeros(12)
    bias[[0, 4, 9]] = float("-inf")  # padding and two excluded items
    targets = torch.tensor([1, 2, 3, 5, 11, 1, 8, 10])
    ref_loss, ref_hidden, ref_weights = full_logits_reference(hidden, weights, bias, targets)
    loss = linear_cross_entropy(hidden, weights, bias, targets, rows)
    (3 * loss).backward()  # an upstream gradient other than 1
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-6)
    assert torch.allclose(hidden.grad, 3 * ref_hidden, atol=1e-6)
    assert torch.allclose(weights.grad, 3 * ref_weights, atol=1e-6)
    assert torch.all(weights.grad[[4, 9]] == 0)  # excluded items get no gradient


def test_no_grad_gives_the_value_only() -> None:
    gen = torch.Generator().manual_seed(1)
    hidden, weights = torch.randn(6, 4, generator=gen), torch.randn(9, 4, generator=gen)
    bias = torch.zeros(9)
    bias[0] = float("-inf")
    targets = torch.tensor([1, 2, 3, 4, 5, 8])
    with torch.no_grad():
        value = linear_cross_entropy(hidden, weights, bias, targets, rows=4)
    assert float(value) == pytest.approx(float(F.cross_entropy(torch.addmm(bias, hidden, weights.T), targets)),
                                         rel=1e-6)


def decoder_with(num_items: int, hidden_size: int, seed: int) -> DotProduct:
    torch.manual_seed(seed)
    return DotProduct(IdEmbedding(num_items=num_items, hidden_size=hidden_size))


def test_the_loss_module_matches_plain_ce_through_the_decoder_and_its_cold_item_wrapper() -> None:
    hidden = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 1, 2, 3, 6])
    excluded = torch.zeros(8, dtype=torch.bool)
    excluded[7] = True  # item 7 is cold: no candidate
    for wrap in (lambda d: d, lambda d: WithoutItems(d, excluded)):
        grads = []
        for loss in (CrossEntropy(), CrossEntropy(chunk_rows=3)):
            decoder = decoder_with(7, 4, seed=3)
            value = loss(hidden, targets, wrap(decoder))
            value.backward()
            grads.append((float(value.detach()), decoder.item_embedder.table.weight.grad.clone()))
        assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-6)
        assert torch.allclose(grads[1][1], grads[0][1], atol=1e-6)


def test_bf16_autocast_stays_close_to_the_plain_loss() -> None:
    hidden = torch.randn(16, 8, generator=torch.Generator().manual_seed(4))
    targets = torch.randint(1, 30, (16,), generator=torch.Generator().manual_seed(5))
    values, grads = [], []
    for loss in (CrossEntropy(), CrossEntropy(chunk_rows=5)):
        decoder = decoder_with(30, 8, seed=6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(hidden, targets, decoder)
        value.backward()
        values.append(float(value))
        grads.append(decoder.item_embedder.table.weight.grad.clone())
    assert values[1] == pytest.approx(values[0], rel=1e-2)
    assert grads[1].dtype == torch.float32
    assert torch.allclose(grads[1], grads[0], atol=2e-3)


def test_refused_with_label_smoothing_and_with_a_decoder_that_is_not_linear() -> None:
    with pytest.raises(RecforgeError, match="loss.chunk_rows=4 works without label smoothing"):
        CrossEntropy(label_smoothing=0.1, chunk_rows=4)
    popularity = PopularityScores(IdEmbedding(5, 2))
    with pytest.raises(RecforgeError, match="PopularityScores is not: set loss.chunk_rows=null"):
        CrossEntropy(chunk_rows=4)(torch.zeros(2, 2), torch.tensor([1, 2]), popularity)
    with pytest.raises(RecforgeError, match="loss.chunk_rows"):
        CrossEntropy(chunk_rows=0)
