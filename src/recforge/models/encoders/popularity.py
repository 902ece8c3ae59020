"""Popularity baseline: every user gets items ranked by their training interaction count. No training."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from recforge.models.decoders import Decoder
from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import FitsData, SequenceEncoder

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData


class ConstantEncoder(SequenceEncoder):
    """Ignores the history: a single constant hidden unit per position. Holds no parameters."""

    def __init__(self, item_embedder: ItemEmbedder) -> None:
        super().__init__()  # the embedder is not kept: nothing here is trained

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) -> (B, T, 1) of ones."""
        return torch.ones(*items.shape, 1, device=items.device)


class PopularityScores(Decoder, FitsData):
    """Decoder whose score for an item is its training count, whatever the hidden state."""

    def __init__(self, item_embedder: ItemEmbedder) -> None:
        super().__init__()
        self.num_items = item_embedder.num_items
        self.register_buffer("counts", torch.zeros(self.num_items + 1))

    def fit_data(self, data: TrainingData) -> None:
        self.counts = data.item_counts.to(self.counts)  # (N+1,)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, 1) -> (M, N+1): counts, padding at -inf."""
        scores = self.counts.unsqueeze(0).expand(hidden.shape[0], -1).clone()
        scores[:, 0] = float("-inf")
        return scores

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        return self.counts[items]
