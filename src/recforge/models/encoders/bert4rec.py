"""BERT4Rec: sequential recommendation with bidirectional transformers (Sun et al., CIKM 2019).

Training is a cloze task: random items are replaced by [MASK] and predicted from both sides. At inference a
[MASK] is appended after the most recent items and its hidden state scores the next item.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import (
    TRANSFORMER_RULES,
    AttentionEncoder,
    TransformerStack,
    key_padding_allowed,
)
from recforge.rules import UNIT_CLOSED, UNIT_OPEN, check_arguments, rule_table

# the argument rules of encoders trained with the cloze task (BERT4Rec, HFBidirectionalEncoder)
CLOZE_RULES = rule_table(mask_prob=UNIT_OPEN, last_mask_prob=UNIT_CLOSED)


class BERT4Rec(AttentionEncoder):
    """Bidirectional transformer encoder trained with cloze masking."""

    next_item_states = False  # bidirectional: the state at a [MASK] reads later items

    argument_rules = rule_table(**TRANSFORMER_RULES, **CLOZE_RULES)  # recforge.rules: checked in the config and here

    def __init__(self, item_embedder: ItemEmbedder, max_len: int = 50, num_layers: int = 2, num_heads: int = 2,
                 dropout: float = 0.2, mask_prob: float = 0.2, last_mask_prob: float = 0.1,
                 inner_size: int | None = None, activation: str = "gelu",
                 norm_first: bool = True, inner_dropout: float | None = None,
                 qkv_init_normal: bool = False) -> None:
        super().__init__()
        check_arguments(BERT4Rec, "encoder", max_len=max_len, num_layers=num_layers, num_heads=num_heads,
                        dropout=dropout, mask_prob=mask_prob, last_mask_prob=last_mask_prob, inner_size=inner_size,
                        activation=activation, norm_first=norm_first, inner_dropout=inner_dropout,
                        qkv_init_normal=qkv_init_normal)
        self.item_embedder, self.mask_prob, self.last_mask_prob = item_embedder, mask_prob, last_mask_prob
        self.stack = TransformerStack(item_embedder, max_len, num_layers, num_heads, dropout, inner_size, activation,
                                      norm_first, inner_dropout, qkv_init_normal)

    def training_pairs(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """Cloze pairs (see :func:`cloze_pairs`). window: (B, L+1) -> inputs (B, <= L), targets (B, <= L)."""
        return cloze_pairs(window, self.stack.max_len, self.mask_prob, self.last_mask_prob,
                           self.item_embedder.mask_token)

    def inference_input(self, recent: Tensor) -> Tensor:
        """recent: (B, T) -> (B, <= max_len) with [MASK] appended (see :func:`append_mask`)."""
        return append_mask(recent, self.item_embedder.mask_token, self.stack.max_len)

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids, possibly [MASK] -> (B, T, H)."""
        return self.stack(items, key_padding_allowed(items, causal=False))

    def final_state(self, items: Tensor) -> Tensor:
        """``forward(items)[:, -1]``, the last layer for the last position only. items: (B, T) -> (B, H)."""
        return self.stack.final_state(items, key_padding_allowed(items, causal=False))

    def final_attention(self, items: Tensor) -> Tensor:
        """The last layer's head-averaged attention of the last position over ``items``: (B, T) -> (B, T)."""
        return self.stack.final_attention(items, key_padding_allowed(items, causal=False))


def cloze_pairs(window: Tensor, max_len: int, mask_prob: float, last_mask_prob: float,
                mask_token: int) -> tuple[Tensor, Tensor]:
    """Cloze: mask each item with mask_prob (and the last one with last_mask_prob as well, to match
    inference); every row gets at least one mask. window: (B, L+1) -> inputs (B, <= L), targets (B, <= L)."""
    # a full window's first item is the last of the previous window (already a target there); a batch
    # trimmed to fewer than max_len + 1 columns holds only users' earliest windows, so keep every column
    seq = window[:, 1:] if window.shape[1] > max_len else window  # (B, <= L)
    real = seq > 0
    masked = (torch.rand(seq.shape, device=seq.device) < mask_prob) & real  # (B, L)
    masked[:, -1] |= torch.rand(seq.shape[0], device=seq.device) < last_mask_prob
    masked[:, -1] |= ~masked.any(dim=1)  # at least one target per row
    masked &= real
    return torch.where(masked, mask_token, seq), torch.where(masked, seq, 0)


def append_mask(recent: Tensor, mask_token: int, max_len: int) -> Tensor:
    """Append [MASK], dropping the oldest column if that exceeds max_len. recent: (B, T) -> (B, <= max_len)."""
    mask = torch.full_like(recent[:, :1], mask_token)  # (B, 1)
    return torch.cat([recent, mask], dim=1)[:, -max_len:]
