"""Item embedders shared by a sequence encoder's input and the decoder's output (weight tying)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class IdEmbedding(nn.Module):
    """One learned vector per item id. Row 0 is padding; row num_items + 1 is the [MASK] token (BERT4Rec).

    Initialised from normal(0, 0.02) as in the reference SASRec/BERT4Rec code.
    """

    def __init__(self, num_items: int, hidden_size: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_items, self.hidden_size = num_items, hidden_size
        self.table = nn.Embedding(num_items + 2, hidden_size, padding_idx=0)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            self.table.weight[0].zero_()

    @property
    def mask_token(self) -> int:
        return self.num_items + 1

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        return self.table(items)

    def output_weights(self) -> Tensor:
        """Embeddings of ids 0..num_items, used to score every item. (N+1, H)."""
        return self.table.weight[: self.num_items + 1]
