"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Causal self-attention over the item sequence; the hidden state at position t predicts the item at t + 1.
"""
from __future__ import annotations

from torch import Tensor

from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import (
    TRANSFORMER_RULES,
    AttentionEncoder,
    TransformerStack,
    key_padding_allowed,
)
from recforge.rules import check_arguments


class SASRec(AttentionEncoder):
    """Causal transformer encoder over item ids."""

    argument_rules = TRANSFORMER_RULES  # recforge.rules: checked in the config and here

    def __init__(self, item_embedder: ItemEmbedder, max_len: int = 50, num_layers: int = 2, num_heads: int = 2,
                 dropout: float = 0.2, inner_size: int | None = None, activation: str = "gelu",
                 norm_first: bool = True, inner_dropout: float | None = None,
                 qkv_init_normal: bool = False) -> None:
        super().__init__()
        check_arguments(SASRec, "encoder", max_len=max_len, num_layers=num_layers, num_heads=num_heads,
                        dropout=dropout, inner_size=inner_size, activation=activation,
                        norm_first=norm_first, inner_dropout=inner_dropout,
                        qkv_init_normal=qkv_init_normal)
        self.item_embedder = item_embedder
        self.stack = TransformerStack(item_embedder, max_len, num_layers, num_heads, dropout, inner_size, activation,
                                      norm_first, inner_dropout, qkv_init_normal)

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids -> (B, T, H)."""
        return self.stack(items, key_padding_allowed(items, causal=True))

    def final_state(self, items: Tensor) -> Tensor:
        """``forward(items)[:, -1]``, the last layer for the last position only. items: (B, T) -> (B, H)."""
        return self.stack.final_state(items, key_padding_allowed(items, causal=True))

    def final_attention(self, items: Tensor) -> Tensor:
        """The last layer's head-averaged attention of the last position over ``items``: (B, T) -> (B, T)."""
        return self.stack.final_attention(items, key_padding_allowed(items, causal=True))
