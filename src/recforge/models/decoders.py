"""Decoders: hidden states -> scores over every item id (column 0, padding, is -inf)."""
from __future__ import annotations

from torch import Tensor, nn

from recforge.models.embedders import IdEmbedding


class DotProduct(nn.Module):
    """Score = <hidden, item embedding>, with the embedding table tied to the encoder's input."""

    def __init__(self, item_embedder: IdEmbedding) -> None:
        super().__init__()
        self.item_embedder = item_embedder

    @property
    def num_items(self) -> int:
        return self.item_embedder.num_items

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, H) -> scores (M, N+1)."""
        scores = hidden @ self.item_embedder.output_weights().T  # (M, N+1)
        scores[:, 0] = float("-inf")
        return scores

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items only. hidden: (M, H), items: (M, K) -> (M, K)."""
        return (hidden.unsqueeze(1) * self.item_embedder(items)).sum(-1)  # (M, K)
