"""Next-item losses. Each takes hidden states at the positions that have a target, the targets and the
decoder, so a sampled loss scores only the items it needs."""
from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from recforge.models.samplers import UniformNegatives
from recforge.rules import DROPOUT, check_arguments, rule_table


class Decoder(Protocol):
    num_items: int
    def __call__(self, hidden: Tensor) -> Tensor: ...
    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor: ...


class NextItemLoss(nn.Module):
    """Role: (hidden states at target positions (M, H), targets (M,), decoder) -> a scalar loss.
    ``exclude_items`` tells it which ids are never candidates (the cold items of a cold-start split)."""

    def exclude_items(self, excluded: Tensor) -> None:
        """Never draw the ids where ``excluded`` (N+1,) is True as negatives (full softmax: nothing to do, the
        module puts their logits at -inf)."""


class CrossEntropy(NextItemLoss):
    """Full softmax cross-entropy over all items."""

    argument_rules = rule_table(label_smoothing=DROPOUT)  # recforge.rules: checked in the config and here

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_arguments(CrossEntropy, "loss", label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        logits = decoder(hidden)  # (M, N+1)
        if self.label_smoothing:
            logits = logits[:, 1:]  # smoothing must not put mass on padding
            return F.cross_entropy(logits.float(), targets - 1, label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits.float(), targets)


class _SampledLoss(NextItemLoss):
    """Scores of each target and of ``sampler``'s negatives for it."""

    def __init__(self, sampler: UniformNegatives) -> None:
        super().__init__()
        self.sampler = sampler

    def exclude_items(self, excluded: Tensor) -> None:
        self.sampler.exclude_items(excluded)

    def scores(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> tuple[Tensor, Tensor]:
        negatives = self.sampler(targets, decoder.num_items)  # (M, K)
        pos = decoder.score_items(hidden, targets.unsqueeze(1)).float()  # (M, 1)
        neg = decoder.score_items(hidden, negatives).float()  # (M, K)
        return pos, neg


class SampledBCE(_SampledLoss):
    """Binary cross-entropy of the target against sampled negatives (the original SASRec loss)."""

    def forward(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        pos, neg = self.scores(hidden, targets, decoder)
        return F.softplus(-pos).mean() + F.softplus(neg).mean(dim=1).mean()


class BPR(_SampledLoss):
    """Bayesian personalised ranking: -log sigmoid(pos - neg), averaged over sampled negatives."""

    def forward(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        pos, neg = self.scores(hidden, targets, decoder)
        return -F.logsigmoid(pos - neg).mean()
