"""Cold-start split in the model: samplers never draw excluded items, a full-softmax training loss sees cold
logits at -inf, and validation/test log warm and cold slices (hand-computed values; a real short run)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from recforge.data.cold import choose_cold_items
from recforge.evaluation.ranking import RankAccumulator
from recforge.models.decoders import DotProduct
from recforge.models.embedders import HybridEmbedding, IdEmbedding
from recforge.models.module import NextItemModule, WithoutItems, target_slices
from recforge.models.samplers import ExcludesItems, UniformNegatives
from recforge.train import train

TINY = [
    "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null", "logger=csv",
]


# ------------------------------------------------------------------------------------------- sampler


def test_sampler_with_excluded_items_draws_uniformly_from_the_rest():
    sampler = UniformNegatives(4)
    assert isinstance(sampler, ExcludesItems)
    excluded = torch.zeros(11, dtype=torch.bool)
    excluded[[2, 5, 6]] = True
    sampler.exclude_items(excluded)
    torch.manual_seed(0)
    targets = torch.tensor([1, 3, 10] * 4000)  # warm targets
    negatives = sampler(targets, 10)  # (M, 4)
    assert negatives.shape == (12000, 4)
    assert not excluded[negatives].any() and (negatives >= 1).all() and (negatives <= 10).all()
    assert not (negatives == targets.unsqueeze(1)).any()
    # for target 1 the allowed ids are 3 4 7 8 9 10, each 1/6 of the draws
    counts = torch.bincount(negatives[targets == 1].flatten(), minlength=11).double() / 16000
    torch.testing.assert_close(counts[[3, 4, 7, 8, 9, 10]], torch.full((6,), 1 / 6, dtype=torch.float64),
                               atol=0.015, rtol=0)
    # a target that is itself excluded is simply never drawn either
    assert not (sampler(torch.tensor([2] * 100), 10) == 2).any()


def test_sampler_without_exclusion_draws_as_before():
    sampler = UniformNegatives(3)
    torch.manual_seed(1)
    before = sampler(torch.tensor([1, 4, 7, 7]), 9)
    sampler.exclude_items(torch.zeros(10, dtype=torch.bool))  # nothing excluded: the plain draw
    assert sampler.candidates is None
    torch.manual_seed(1)
    assert torch.equal(sampler(torch.tensor([1, 4, 7, 7]), 9), before)


# ------------------------------------------------------------------------------------------- training loss


def test_without_items_puts_excluded_logits_at_minus_inf_only():
    emb = IdEmbedding(5, 4)
    decoder = DotProduct(emb)
    excluded = torch.tensor([False, False, True, False, True, False])
    wrapped = WithoutItems(decoder, excluded)
    hidden = torch.randn(3, 4)
    scores, plain = wrapped(hidden), decoder(hidden)
    assert wrapped.num_items == 5
    assert torch.isneginf(scores[:, [0, 2, 4]]).all()
    torch.testing.assert_close(scores[:, [1, 3, 5]], plain[:, [1, 3, 5]])
    items = torch.tensor([[2, 3], [1, 4], [5, 5]])
    torch.testing.assert_close(wrapped.score_items(hidden, items), decoder.score_items(hidden, items))
    # the excluded rows get no gradient from a cross-entropy over warm targets
    nn.functional.cross_entropy(scores, torch.tensor([1, 3, 5])).backward()
    grad = emb.table.weight.grad
    assert torch.equal(grad[[2, 4]], torch.zeros(2, 4)) and grad[[1, 3, 5]].abs().sum() > 0


# ------------------------------------------------------------------------------------------- slice metrics


def test_target_slices():
    cold = torch.tensor([True, False, True])
    slices = target_slices(cold)
    assert list(slices) == ["warm", "cold"]
    assert slices["warm"].tolist() == [False, True, False] and slices["cold"].tolist() == [True, False, True]


def test_slice_accumulators_on_a_hand_computed_case(monkeypatch):
    module = NextItemModule(encoder=nn.Identity(), decoder=nn.Identity(), loss=nn.Identity(), optimizer=None,
                            ks=(1, 10))
    module.cold_items = torch.tensor([False, False, False, False, False, True, False, True])  # items 5 and 7
    batches = [  # (index, target, rank): sample 3 is repeated as DistributedSampler padding would
        (torch.tensor([0, 1, 2]), torch.tensor([5, 2, 7]), torch.tensor([1, 3, 12])),
        (torch.tensor([3, 3]), torch.tensor([4, 4]), torch.tensor([2, 2])),
    ]
    for index, target, ranks in batches:
        monkeypatch.setattr(module, "rank", lambda batch, ranks=ranks: ranks)
        module.validation_step({"index": index, "target": target}, 0)
    warm, cold, overall = (module.val_slices["warm"].compute(), module.val_slices["cold"].compute(),
                           module.val_ranks.compute())
    # warm: ranks 3, 2 -> HR@1 0, HR@10 1, NDCG@10 (1/2 + 1/log2 3) / 2; cold: ranks 1, 12 -> HR@1 = HR@10 = 1/2
    assert (module.val_slices["warm"].num_samples, module.val_slices["cold"].num_samples) == (2, 2)
    assert warm["hr@1"] == 0 and warm["hr@10"] == 1
    assert warm["ndcg@10"] == pytest.approx((0.5 + 1 / math.log2(3)) / 2)
    assert cold["hr@1"] == 0.5 and cold["hr@10"] == 0.5 and cold["ndcg@10"] == 0.5 and cold["mrr@10"] == 0.5
    assert module.val_ranks.num_samples == 4 and overall["hr@10"] == 0.75
    assert overall["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(3)) / 4)


def test_no_slices_without_cold_items(monkeypatch):
    module = NextItemModule(encoder=nn.Identity(), decoder=nn.Identity(), loss=nn.Identity(), optimizer=None,
                            ks=(10,))
    monkeypatch.setattr(module, "rank", lambda batch: torch.tensor([1, 2]))
    module.validation_step({"index": torch.tensor([0, 1]), "target": torch.tensor([1, 2])}, 0)
    assert module.val_ranks.compute()["hr@10"] == 1
    assert all(isinstance(acc, RankAccumulator) and acc.compute()["hr@10"] != acc.compute()["hr@10"]  # NaN: empty
               for acc in module.val_slices.values())


# ------------------------------------------------------------------------------------------- a real run


def test_short_cold_run_with_hybrid_items_logs_slices_and_masks_cold_logits(compose_train, monkeypatch):
    cfg = compose_train("item_embedder=hybrid", "dataset.cold_items=0.25", "trainer.max_epochs=2", *TINY)
    seen: list[torch.Tensor] = []
    forward = NextItemModule.training_step

    def spy(self, batch, batch_idx):  # the scores the loss sees, through the decoder it is given
        loss_forward = self.loss.forward

        def record(hidden, targets, decoder):
            seen.append(decoder(hidden).detach())
            assert not self.cold_items[targets].any()  # cold items are never training targets
            return loss_forward(hidden, targets, decoder)

        self.loss.forward = record
        try:
            return forward(self, batch, batch_idx)
        finally:
            del self.loss.forward

    monkeypatch.setattr(NextItemModule, "training_step", spy)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats["cold_items"] == round(0.25 * stats["items"])
    assert stats["val_cold_samples"] > 0 and stats["test_cold_samples"] > 0
    assert stats["test_warm_samples"] + stats["test_cold_samples"] == stats["test_samples"]
    # the training loss saw every cold logit at -inf, and only those (and padding)
    assert seen
    scores = torch.cat(seen)  # (M, N+1)
    assert scores.shape[1] == stats["items"] + 1
    neg_inf = torch.isneginf(scores).all(dim=0)  # (N+1,)
    cold = torch.from_numpy(choose_cold_items(stats["items"], 0.25, seed=0))  # dataset.cold_seed=0
    assert torch.equal(neg_inf[1:], cold[1:]) and neg_inf[0]  # exactly the cold items (and padding)
    assert not torch.isneginf(scores[:, ~neg_inf]).any()
    for stage in ("val", "test"):
        for name in ("hr@10", "ndcg@10", "warm/hr@10", "warm/ndcg@10", "cold/hr@10", "cold/ndcg@10", "cold/mrr@20"):
            assert 0 <= metrics[stage][name] <= 1, (stage, name)
    written = json.loads((out / "metrics.json").read_text())
    assert written["test"]["cold/ndcg@10"] == metrics["test"]["cold/ndcg@10"]
    assert written["dataset"]["test_cold_samples"] == stats["test_cold_samples"]
    # overall = sample-weighted mean of the two slices
    n_warm, n_cold = stats["test_warm_samples"], stats["test_cold_samples"]
    mixed = (n_warm * metrics["test"]["warm/ndcg@10"] + n_cold * metrics["test"]["cold/ndcg@10"]) / (n_warm + n_cold)
    assert metrics["test"]["ndcg@10"] == pytest.approx(mixed)
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/warm/hr@10", "val/cold/ndcg@10", "test/cold/hr@10", "test/warm/ndcg@20"} <= set(header)


def test_cold_id_rows_become_their_text_neighbours_before_evaluation():
    emb = HybridEmbedding(num_items=5, hidden_size=2, text_dim=2)
    emb.text.attach_text_embeddings(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [1.0, 1.0]]))
    module = NextItemModule(encoder=nn.Identity(), decoder=DotProduct(emb), loss=nn.Identity(), optimizer=None,
                            cold_id_neighbours=1)
    before = emb.ids.table.weight.detach().clone()  # (N+2, H)
    module.on_test_epoch_start()  # no cold items: nothing changes
    assert torch.equal(emb.ids.table.weight, before)
    module.cold_items = torch.tensor([False, False, False, True, True, False])
    module.on_test_epoch_start()
    after = emb.ids.table.weight.detach()
    assert torch.equal(after[3], before[1]) and torch.equal(after[4], before[2])  # nearest warm text: 1 and 2
    assert torch.equal(after[[0, 1, 2, 5, 6]], before[[0, 1, 2, 5, 6]])  # warm, padding and [MASK] rows kept
    assert NextItemModule(encoder=nn.Identity(), decoder=nn.Identity(), loss=nn.Identity(),
                          optimizer=None).cold_id_neighbours == 0  # off by default
