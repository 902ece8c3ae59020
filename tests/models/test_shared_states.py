"""One state per window (encoder=mf, lightgcn: ``state_per_window``): full-softmax CE scores each distinct state
once for all its targets (``CrossEntropy.shared_states``). Checked on a hand-computed case, against
F.cross_entropy on the expanded states (loss and gradients, with label smoothing and chunks), for the default of
the other losses, and through a LightGCN training step."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.losses import BPR, CrossEntropy
from recforge.models.samplers import UniformNegatives
from recforge.run.build import build

TINY = ["dataset.reader.num_users=150", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "hidden_size=16", "logger=none", "callbacks=none"]


class LinearDecoder:
    """scores = hidden @ weights.T with column 0 (padding) at -inf, as DotProduct."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights, self.num_items = weights, weights.shape[0] - 1  # (N+1, H)

    def linear_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        bias = torch.zeros(self.weights.shape[0])
        bias[0] = float("-inf")
        return self.weights, bias

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        weights, bias = self.linear_scores()
        return torch.addmm(bias, hidden, weights.T)  # (M, N+1)


def test_hand_computed_case():
    # states g0 = (1, 0), g1 = (0, 1); items 1 = (1, 0), 2 = (0, 1): g0 scores (1, 0), g1 (0, 1).
    # targets: g0 -> 1 (log(1 + e^-1)), g0 -> 2 (log(1 + e)), g1 -> 2 (log(1 + e^-1))
    decoder = LinearDecoder(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    states, rows, targets = torch.eye(2), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 3  # 0.6466
    assert float(CrossEntropy().shared_states(states, rows, targets, decoder)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("label_smoothing", "chunk_rows"), [(0.0, None), (0.1, None), (0.0, 2), (0.0, 64)])
def test_equals_cross_entropy_on_the_expanded_states(label_smoothing, chunk_rows):
    """Loss and gradients (states and item table) equal F.cross_entropy's on states[rows]; chunk_rows 2 < R falls
    back to the chunked loss on the expanded states, 64 > R scores each state once."""
    generator = torch.Generator().manual_seed(0)
    states0 = torch.randn(5, 8, generator=generator)  # (R, H)
    weights0 = torch.randn(31, 8, generator=generator)  # (N+1, H)
    rows = torch.randint(0, 5, (40,), generator=generator)  # (M,)
    targets = torch.randint(1, 31, (40,), generator=generator)  # (M,)
    loss = CrossEntropy(label_smoothing=label_smoothing, chunk_rows=chunk_rows)

    states, weights = states0.clone().requires_grad_(), weights0.clone().requires_grad_()
    got = loss.shared_states(states, rows, targets, LinearDecoder(weights))
    got.backward()

    ref_states, ref_weights = states0.clone().requires_grad_(), weights0.clone().requires_grad_()
    logits = LinearDecoder(ref_weights)(ref_states[rows])  # (M, N+1)
    if label_smoothing:
        want = F.cross_entropy(logits[:, 1:], targets - 1, label_smoothing=label_smoothing)
    else:
        want = F.cross_entropy(logits, targets)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(states.grad, ref_states.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.grad, ref_weights.grad, rtol=1e-5, atol=1e-6)


def test_other_losses_score_the_expanded_states():
    """The default of NextItemLoss: forward on states[rows] (BPR draws the same negatives from the same seed)."""
    decoder_weights = torch.randn(21, 4, generator=torch.Generator().manual_seed(1))
    states, rows, targets = torch.randn(3, 4), torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([1, 5, 3, 2, 9, 20])
    embedder = IdEmbedding(20, 4)
    with torch.no_grad():
        embedder.table.weight[:21] = decoder_weights
    decoder, bpr = DotProduct(embedder), BPR(UniformNegatives())
    torch.manual_seed(3)
    got = bpr.shared_states(states, rows, targets, decoder)
    torch.manual_seed(3)
    assert float(got.detach()) == float(bpr(states[rows], targets, decoder).detach())


def test_lightgcn_training_step_gives_the_expanded_loss_and_gradients(compose_train):
    """A LightGCN CE step through shared_states: the same loss and ego-vector gradients as scoring every target's
    copy of its user's state."""
    datamodule, module = build(compose_train("encoder=lightgcn", "loss=ce", *TINY))
    datamodule.setup("fit")
    module.fit_parts(datamodule)
    assert module.encoder.state_per_window
    batch = next(iter(datamodule.train_dataloader()))
    results = []
    for shared in (True, False):
        module.encoder.state_per_window = shared  # the instance attribute hides the class's
        module.zero_grad()
        module.on_train_epoch_start()
        loss = module.training_step(batch, 0)
        loss.backward()
        embedder = module.encoder.item_embedder
        results.append((loss.detach(), embedder.users.weight.grad.clone(), embedder.ids.table.weight.grad.clone()))
    for got, want in zip(results[0], results[1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert batch["items"].shape[0] < int((batch["items"] > 0).sum())  # fewer states than targets: work saved
