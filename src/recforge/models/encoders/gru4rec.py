"""GRU4Rec: session-based recommendations with recurrent neural networks (Hidasi et al., ICLR 2016).

Item embeddings -> dropout -> multi-layer GRU -> linear projection back to the embedding size.
"""
from __future__ import annotations

from torch import Tensor, nn

from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import SequenceEncoder
from recforge.rules import DROPOUT, check_arguments, int_at_least, rule_table


class GRU4Rec(SequenceEncoder):
    """Recurrent encoder; causal by construction, so left padding never leaks the future."""

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(gru_size=int_at_least(1), num_layers=int_at_least(1), dropout=DROPOUT)

    def __init__(self, item_embedder: ItemEmbedder, gru_size: int = 64, num_layers: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        check_arguments(GRU4Rec, "encoder", gru_size=gru_size, num_layers=num_layers, dropout=dropout)
        hidden = item_embedder.hidden_size
        self.item_embedder = item_embedder
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, gru_size, num_layers=num_layers, batch_first=True, bias=False)
        self.project = nn.Linear(gru_size, hidden)
        for name, weight in self.gru.named_parameters():
            nn.init.xavier_uniform_(weight) if "ih" in name else nn.init.orthogonal_(weight)
        nn.init.xavier_normal_(self.project.weight)

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids -> (B, T, H)."""
        x = self.dropout(self.item_embedder(items))  # (B, T, H)
        out, _ = self.gru(x)  # (B, T, G)
        return self.project(out)  # (B, T, H)
