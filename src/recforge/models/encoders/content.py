"""Content-based recommendation (Lops, de Gemmis & Semeraro, Recommender Systems Handbook 2011): a user profile is
the mean of the item embeddings of the history, and an item's score is its similarity with the profile.

With ``item_embedder=text`` (projection off) the items are their text embeddings and the decoder's dot product is
the cosine similarity with every item (L2-normalised text embeddings; the profile's norm is one factor per user,
so the ranking is the cosine ranking). Nothing is trained unless ``projection`` (a Linear H -> H on the profile,
initialised to the identity) is on.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recforge.models.encoders.base import SequenceEncoder
from recforge.rules import UNIT_CLOSED, check_arguments, rule_table


def causal_mean(vectors: Tensor, valid: Tensor, length_power: float = 1.0) -> Tensor:
    """Sum over the valid positions up to each t divided by (their count) ** length_power: 1 is the mean, 0.5 the
    |N(u)|^-1/2 scaling of SVD++'s implicit-feedback term. vectors: (B, T, H), valid: (B, T) -> (B, T, H);
    zero where no position up to t is valid."""
    weights = valid.unsqueeze(-1).to(vectors.dtype)  # (B, T, 1)
    sums = torch.cumsum(vectors * weights, dim=1)  # (B, T, H)
    counts = torch.cumsum(weights, dim=1).clamp(min=1)  # (B, T, 1)
    return sums / (counts if length_power == 1.0 else counts ** length_power)


class ContentEncoder(SequenceEncoder):
    """Hidden state at t = mean item embedding of the items up to t (padding ignored), optionally projected.

    ``length_power`` < 1 divides the sum by count ** length_power instead of the count: with 0.5 and id item
    embeddings the state is SVD++'s implicit-feedback term (Koren, KDD 2008) for the value and intent tasks."""

    argument_rules = rule_table(length_power=UNIT_CLOSED)  # recforge.rules: checked in the config and here

    def __init__(self, item_embedder: nn.Module, projection: bool = False, length_power: float = 1.0) -> None:
        super().__init__()
        check_arguments(ContentEncoder, "encoder", length_power=length_power)
        self.item_embedder, self.length_power = item_embedder, length_power
        hidden = item_embedder.hidden_size
        self.projection: nn.Linear | None = None
        if projection:
            self.projection = nn.Linear(hidden, hidden)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(hidden))
                self.projection.bias.zero_()

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids -> (B, T, H)."""
        profile = causal_mean(self.item_embedder(items), items > 0, self.length_power)  # (B, T, H)
        return profile if self.projection is None else self.projection(profile)

    def final_state(self, items: Tensor) -> Tensor:
        """``forward(items)[:, -1]`` without the other positions' prefix sums. items: (B, T) -> (B, H)."""
        valid = (items > 0).unsqueeze(-1)  # (B, T, 1)
        total = (self.item_embedder(items) * valid).sum(dim=1)  # (B, H)
        count = valid.sum(dim=1).clamp(min=1).to(total.dtype)  # (B, 1)
        profile = total / (count if self.length_power == 1.0 else count ** self.length_power)  # (B, H)
        return profile if self.projection is None else self.projection(profile)
