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


def causal_mean(vectors: Tensor, valid: Tensor) -> Tensor:
    """Mean over the valid positions up to each t. vectors: (B, T, H), valid: (B, T) -> (B, T, H);
    zero where no position up to t is valid."""
    weights = valid.unsqueeze(-1).to(vectors.dtype)  # (B, T, 1)
    sums = torch.cumsum(vectors * weights, dim=1)  # (B, T, H)
    counts = torch.cumsum(weights, dim=1).clamp(min=1)  # (B, T, 1)
    return sums / counts


class ContentEncoder(SequenceEncoder):
    """Hidden state at t = mean item embedding of the items up to t (padding ignored), optionally projected."""

    def __init__(self, item_embedder: nn.Module, projection: bool = False) -> None:
        super().__init__()
        self.item_embedder = item_embedder
        hidden = item_embedder.hidden_size
        self.projection: nn.Linear | None = None
        if projection:
            self.projection = nn.Linear(hidden, hidden)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(hidden))
                self.projection.bias.zero_()

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids -> (B, T, H)."""
        profile = causal_mean(self.item_embedder(items), items > 0)  # (B, T, H)
        return profile if self.projection is None else self.projection(profile)
