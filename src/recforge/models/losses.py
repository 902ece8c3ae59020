"""Next-item losses. Each takes hidden states at the positions that have a target, the targets and the
decoder, so a sampled loss scores only the items it needs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recforge.models.encoders.base import FitsData
from recforge.models.samplers import SharedNegatives, UniformNegatives
from recforge.rules import BOOLEAN, DROPOUT, check_arguments, rule_table

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData


class Decoder(Protocol):
    num_items: int
    def __call__(self, hidden: Tensor) -> Tensor: ...
    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor: ...
    def score_shared(self, hidden: Tensor, items: Tensor) -> Tensor: ...


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


class SampledSoftmax(NextItemLoss, FitsData):
    """Softmax cross-entropy of each target against K negatives shared by the whole batch (``sampler``: uniform,
    popularity or in-batch), so a step costs targets x K scores instead of targets x items.

    ``log_q_correction``: every logit, the target's included, minus the log probability with which its item is
    sampled (Yi et al., RecSys 2019; TensorFlow's ``sampled_softmax_loss`` with ``subtract_log_q``), which undoes
    the bias of popularity-drawn negatives. A negative equal to the row's own target is removed (logit -inf).
    """

    argument_rules = rule_table(log_q_correction=BOOLEAN)  # recforge.rules: checked in the config and here

    def __init__(self, sampler: SharedNegatives, log_q_correction: bool = True) -> None:
        super().__init__()
        check_arguments(SampledSoftmax, "loss", log_q_correction=log_q_correction)
        self.sampler, self.log_q_correction = sampler, log_q_correction

    def fit_data(self, data: TrainingData) -> None:
        self.sampler.fit_counts(data.item_counts)

    def exclude_items(self, excluded: Tensor) -> None:
        self.sampler.exclude_items(excluded)

    def forward(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        negatives = self.sampler.draw(targets, decoder.num_items)  # (K,)
        return self.loss_against(hidden, targets, negatives, decoder)

    def loss_against(self, hidden: Tensor, targets: Tensor, negatives: Tensor, decoder: Decoder) -> Tensor:
        """The loss for given shared ``negatives`` (K,): hidden (M, H), targets (M,) -> a scalar."""
        pos = decoder.score_items(hidden, targets.unsqueeze(1)).float()  # (M, 1)
        neg = decoder.score_shared(hidden, negatives).float()  # (M, K)
        if self.log_q_correction:
            pos = pos - self.sampler.log_q(targets, decoder.num_items).unsqueeze(1)  # (M, 1)
            neg = neg - self.sampler.log_q(negatives, decoder.num_items).unsqueeze(0)  # (M, K)
        neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # accidental hits
        logits = torch.cat([pos, neg], dim=1)  # (M, 1 + K): the target in column 0
        return F.cross_entropy(logits, torch.zeros_like(targets))
