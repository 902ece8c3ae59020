"""Next-item losses. Each takes hidden states at the positions that have a target, the targets and the
decoder, so a sampled loss scores only the items it needs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.models.encoders.base import FitsData
from recforge.models.samplers import SharedNegatives, UniformNegatives
from recforge.rules import (
    BOOLEAN,
    DROPOUT,
    check_arguments,
    int_at_least,
    optional,
    rule_table,
)

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData


class Decoder(Protocol):
    num_items: int
    def __call__(self, hidden: Tensor) -> Tensor: ...
    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor: ...
    def score_shared(self, hidden: Tensor, items: Tensor) -> Tensor: ...
    def linear_scores(self) -> tuple[Tensor, Tensor] | None: ...


class NextItemLoss(nn.Module):
    """Role: (hidden states at target positions (M, H), targets (M,), decoder) -> a scalar loss.
    ``exclude_items`` tells it which ids are never candidates (the cold items of a cold-start split)."""

    def exclude_items(self, excluded: Tensor) -> None:
        """Never draw the ids where ``excluded`` (N+1,) is True as negatives (full softmax: nothing to do, the
        module puts their logits at -inf)."""

    def shared_states(self, states: Tensor, rows: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        """The loss of targets (M,) whose hidden states are ``states[rows]``: states (R, H), rows (M,) in 0..R-1
        (an encoder with ``state_per_window`` gives every target of a window its window's one state). This default
        expands the states and calls ``forward``; a loss that can score each distinct state once overrides it."""
        return self(states[rows], targets, decoder)  # states[rows]: (M, H)


class CrossEntropy(NextItemLoss):
    """Full softmax cross-entropy over all items.

    ``chunk_rows``: None builds the (M, N+1) logits of every target at once (and autograd keeps several copies of
    them for the backward pass). An integer scores that many targets at a time and computes their gradient on the
    spot (:func:`linear_cross_entropy`): the same loss and gradients up to float rounding, memory O(chunk_rows x N)
    instead of O(M x N), the same three products. It needs a decoder whose scores are an affine map of the hidden
    state (``linear_scores``: DotProduct, every trained decoder here); any other decoder is an error."""

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(label_smoothing=DROPOUT, chunk_rows=optional(int_at_least(1)))

    def __init__(self, label_smoothing: float = 0.0, chunk_rows: int | None = None) -> None:
        super().__init__()
        check_arguments(CrossEntropy, "loss", label_smoothing=label_smoothing, chunk_rows=chunk_rows)
        if chunk_rows is not None and label_smoothing:
            raise RecforgeError(f"loss.chunk_rows={chunk_rows} works without label smoothing only "
                                f"(loss.label_smoothing={label_smoothing}): set one of them to its default.")
        self.label_smoothing, self.chunk_rows = label_smoothing, chunk_rows

    def forward(self, hidden: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        if self.chunk_rows is not None:
            parts = decoder.linear_scores()
            if parts is None:
                raise RecforgeError(f"loss.chunk_rows needs a decoder whose scores are linear in the hidden state; "
                                    f"{type(decoder).__name__} is not: set loss.chunk_rows=null.")
            return linear_cross_entropy(hidden, *parts, targets, self.chunk_rows)
        logits = decoder(hidden)  # (M, N+1)
        if self.label_smoothing:
            logits = logits[:, 1:]  # smoothing must not put mass on padding
            return F.cross_entropy(logits.float(), targets - 1, label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits.float(), targets)

    def shared_states(self, states: Tensor, rows: Tensor, targets: Tensor, decoder: Decoder) -> Tensor:
        """``forward(states[rows], targets, decoder)`` with each distinct state scored once: the softmax of a
        state is the same for all its targets, so R rows of logits serve M targets (LightGCN on ML-100K: about
        40 windows for 2,048 targets). The same loss and gradients up to float rounding. With ``chunk_rows`` and
        more states than that, the chunked path on the expanded states bounds memory instead."""
        if self.chunk_rows is not None and states.shape[0] > self.chunk_rows:
            return super().shared_states(states, rows, targets, decoder)
        logits = decoder(states).float()  # (R, N+1)
        if self.label_smoothing:  # (1 - e) * nll + e * mean over the N items of -log p, as F.cross_entropy
            log_probs = torch.log_softmax(logits[:, 1:], dim=1)  # (R, N): no mass on padding
            nll = -log_probs[rows, targets - 1]  # (M,)
            uniform = -log_probs.mean(dim=1)[rows]  # (M,)
            return ((1 - self.label_smoothing) * nll + self.label_smoothing * uniform).mean()
        return -torch.log_softmax(logits, dim=1)[rows, targets].mean()


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of ``hidden @ weights.T + bias`` against ``targets``, ``rows`` targets at a
    time; the gradients are computed in the forward pass, block by block, so no (M, N+1) matrix is ever kept."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, hidden: Tensor, weights: Tensor, bias: Tensor,
                targets: Tensor, rows: int) -> Tensor:
        # hidden (M, H), weights (N+1, H), bias (N+1,), targets (M,)
        m = hidden.shape[0]
        grads = any(ctx.needs_input_grad[:3])  # False under torch.no_grad
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None  # (M, H)
        grad_weights = torch.zeros_like(weights, dtype=torch.float32) if ctx.needs_input_grad[1] else None  # (N+1, H)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if ctx.needs_input_grad[2] else None  # (N+1,)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, m, rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]  # (C, H), (C,)
            # (C, N+1) log-probabilities: one fused pass over the logits (a block of C rows stays in cache)
            log_probs = torch.log_softmax(torch.addmm(bias, h, weights.T).float(), dim=1)
            total -= log_probs.gather(1, t[:, None]).sum()
            if not grads:
                continue
            probs = log_probs.exp_()  # (C, N+1) softmax, in the same memory
            probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0  # d loss_i / d logits_i (before the mean)
            if grad_hidden is not None:
                grad_hidden[start:start + rows] = (probs @ weights.to(probs.dtype)).to(hidden.dtype)  # (C, H)
            if grad_weights is not None:
                grad_weights.addmm_(probs.T, h.to(probs.dtype))  # (N+1, H), accumulated in place
            if grad_bias is not None:
                grad_bias += probs.sum(0)  # (N+1,)
        ctx.grads = (grad_hidden, grad_weights, grad_bias)  # not inputs of any later op: no version check needed
        ctx.m = m
        ctx.dtypes = (weights.dtype, bias.dtype)
        return total / m

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        grad_hidden, grad_weights, grad_bias = ctx.grads
        scale = grad_out / ctx.m  # the mean over the M targets
        needs = ctx.needs_input_grad
        return ((grad_hidden * scale).to(grad_hidden.dtype) if needs[0] else None,
                (grad_weights * scale).to(ctx.dtypes[0]) if needs[1] else None,
                (grad_bias * scale).to(ctx.dtypes[1]) if needs[2] else None, None, None)


def linear_cross_entropy(hidden: Tensor, weights: Tensor, bias: Tensor, targets: Tensor, rows: int) -> Tensor:
    """``F.cross_entropy((hidden @ weights.T + bias).float(), targets)`` (mean over the M rows) scoring ``rows``
    targets at a time: hidden (M, H), weights (N+1, H), bias (N+1,) (-inf at ids that are never candidates),
    targets (M,) -> a scalar. Peak memory O(rows x N) in place of O(M x N); the gradients of hidden, weights and
    bias are the same products autograd would compute, made in the forward pass block by block."""
    return _LinearCrossEntropy.apply(hidden, weights, bias, targets, rows)


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
