"""The sequence-encoder role and the transformer stack SASRec and BERT4Rec share."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from recforge.models.embedders import ItemEmbedder
from recforge.rules import BOOLEAN, DROPOUT, int_at_least, one_of, optional, rule_table

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData


class SequenceEncoder(nn.Module):
    """Role: item ids (B, T) -> hidden states (B, T, H).

    ``training_pairs`` turns a window of max_len + 1 items into (inputs, targets) with a target at every
    position (0 = no target); ``inference_input`` turns the most recent items into the input whose last
    position predicts the next item. The defaults are next-item shifts (causal models).

    ``uses_users``: an encoder that also reads the user row of each sample (matrix factorisation) sets it to True
    and takes ``forward(items, users)``; the module passes ``users`` (B,) to such encoders only.

    ``next_item_states``: the state at position t reads the inputs at positions <= t only, and ``training_pairs``
    is the next-item shift, so the states of a training window also serve as the user's state just before each
    target (task=multi scores its pointwise heads on them). Encoders that see later positions (cloze training) or
    that train on other pairs set it to False.

    ``state_per_window``: every position of a window holds the same state (the user's vector: encoder=mf,
    lightgcn), so the training step hands the loss one state per window (``NextItemLoss.shared_states``) and
    full-softmax CE scores it once for all the window's targets.
    """

    item_embedder: ItemEmbedder
    uses_users: bool = False
    next_item_states: bool = True
    state_per_window: bool = False

    def training_pairs(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """window: (B, L+1) -> inputs (B, L), targets (B, L)."""
        inputs, targets = window[:, :-1], window[:, 1:]
        return inputs, torch.where(inputs > 0, targets, 0)

    def inference_input(self, recent: Tensor) -> Tensor:
        """recent: (B, L) most recent items, left-padded -> (B, L)."""
        return recent

    def final_state(self, items: Tensor) -> Tensor:
        """The state after the last position only: items (B, T) -> (B, H). An encoder that can skip the other
        positions overrides it (the pooled encoders do)."""
        return self(items)[:, -1]


class AttentionEncoder(SequenceEncoder):
    """Role: a transformer encoder that can show where its last layer's last query looks.

    ``final_attention(items) -> (B, T)``: head-averaged attention weights over the positions of ``items`` (the
    encoder's input, after ``inference_input``) for the query whose state ``final_state`` returns."""

    def final_attention(self, items: Tensor) -> Tensor:
        raise NotImplementedError


class FitsData:
    """Role: a part whose state comes from the training data rather than from gradients (popularity, ItemKNN).
    ``NextItemModule.setup`` calls ``fit_data`` with the datamodule's ``training_data``."""

    def fit_data(self, data: TrainingData) -> None:
        """data: the training interactions (item counts and each user's training items)."""
        raise NotImplementedError


# the argument rules of encoders built on a TransformerStack (SASRec, BERT4Rec; see recforge.rules)
TRANSFORMER_RULES = rule_table(max_len=int_at_least(2), num_layers=int_at_least(1), num_heads=int_at_least(1),
                               dropout=DROPOUT, inner_size=optional(int_at_least(1)), activation=one_of("relu", "gelu"),
                               norm_first=BOOLEAN, inner_dropout=optional(DROPOUT), qkv_init_normal=BOOLEAN)


class TransformerStack(nn.Module):
    """Item + learned position embeddings -> LayerNorm -> dropout -> transformer layers.

    ``norm_first=True`` (default): pre-LN layers and a final LayerNorm. ``norm_first=False``: post-LN layers (each
    sublayer's residual sum is normalised, as in BERT and in the S3-Rec code's SASRec) and no final LayerNorm.
    ``inner_dropout``: the dropout between the two linear layers of each feed-forward block (None: ``dropout``,
    as nn.TransformerEncoderLayer has it; the S3-Rec code's SASRec has none there, 0.0).
    ``qkv_init_normal``: the attention's query, key and value projections from normal(0, 0.02) like every other
    weight, as the reference SASRec/BERT4Rec code draws them (default False: nn.MultiheadAttention's own Xavier
    uniform, std about 0.09 at hidden 64).
    """

    def __init__(self, item_embedder: ItemEmbedder, max_len: int, num_layers: int, num_heads: int,
                 dropout: float, inner_size: int | None = None, activation: str = "gelu",
                 norm_first: bool = True, inner_dropout: float | None = None,
                 qkv_init_normal: bool = False) -> None:
        super().__init__()
        hidden = item_embedder.hidden_size
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads={num_heads}")
        self.item_embedder, self.num_heads, self.max_len = item_embedder, num_heads, max_len
        self.positions = nn.Embedding(max_len, hidden)
        self.norm_first = norm_first
        self.norm_in = nn.LayerNorm(hidden)
        self.norm_out: nn.Module = nn.LayerNorm(hidden) if norm_first else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, num_heads, inner_size or 4 * hidden, dropout,
                                           activation=activation, batch_first=True, norm_first=norm_first)
        if inner_dropout is not None:
            layer.dropout = nn.Dropout(inner_dropout)  # the feed-forward block's inner dropout
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.apply(_init_weights)
        if qkv_init_normal:
            for block in self.layers.layers:
                nn.init.normal_(block.self_attn.in_proj_weight, std=0.02)  # (3H, H); its bias is already 0

    def forward(self, items: Tensor, allowed: Tensor) -> Tensor:
        """items: (B, T); allowed: (B, T, T) True where a query may attend to a key -> (B, T, H)."""
        x, mask = self._embed(items), self._blocked(allowed)  # (B, T, H), (B*heads, T, T)
        x = self.layers(x, mask=mask)  # (B, T, H)
        return self.norm_out(x)

    def final_state(self, items: Tensor, allowed: Tensor) -> Tensor:
        """``forward(items, allowed)[:, -1]`` computing the last layer for the last query only (its keys and
        values still come from every position): items (B, T), allowed (B, T, T) -> (B, H)."""
        if not self.norm_first:  # post-LN: the short path below is written for pre-LN layers
            return self(items, allowed)[:, -1]
        x, mask = self._embed(items), self._blocked(allowed)  # (B, T, H), (B*heads, T, T)
        *inner, last = self.layers.layers
        for layer in inner:
            x = layer(x, src_mask=mask)  # (B, T, H)
        # the pre-LN layer of nn.TransformerEncoderLayer (norm_first=True) for one query
        keys = last.norm1(x)  # (B, T, H)
        query = x[:, -1:]  # (B, 1, H)
        attended = last.self_attn(keys[:, -1:], keys, keys, attn_mask=mask[:, -1:], need_weights=False)[0]
        query = query + last.dropout1(attended)  # (B, 1, H)
        inner_state = last.dropout(last.activation(last.linear1(last.norm2(query))))  # (B, 1, inner)
        query = query + last.dropout2(last.linear2(inner_state))  # (B, 1, H)
        return self.norm_out(query[:, 0])  # (B, H)

    def final_attention(self, items: Tensor, allowed: Tensor) -> Tensor:
        """The last layer's attention weights for the last query, averaged over heads: items (B, T), allowed
        (B, T, T) -> (B, T), each row summing to 1 over the keys it may attend to (eval mode: no dropout)."""
        x, mask = self._embed(items), self._blocked(allowed)  # (B, T, H), (B*heads, T, T)
        *inner, last = self.layers.layers
        for layer in inner:
            x = layer(x, src_mask=mask)  # (B, T, H)
        keys = last.norm1(x) if self.norm_first else x  # post-LN layers attend over their input itself
        weights = last.self_attn(keys[:, -1:], keys, keys, attn_mask=mask[:, -1:], need_weights=True,
                                 average_attn_weights=True)[1]  # (B, 1, T)
        return weights[:, 0]  # (B, T)

    def _blocked(self, allowed: Tensor) -> Tensor:
        """allowed: (B, T, T) -> the per-head attention mask nn.MultiheadAttention takes (B*heads, T, T), True =
        blocked."""
        return ~allowed.repeat_interleave(self.num_heads, dim=0)

    def _embed(self, items: Tensor) -> Tensor:
        """items: (B, T) -> item + position embeddings, normalised, dropout (B, T, H)."""
        B, T = items.shape
        # positions count from the left of a max_len window, so a batch whose all-padding leading columns
        # were trimmed (T < max_len) gets exactly the embeddings it would have had untrimmed
        pos = torch.arange(self.max_len - T, self.max_len, device=items.device)  # (T,)
        return self.dropout(self.norm_in(self.item_embedder(items) + self.positions(pos)))  # (B, T, H)


def key_padding_allowed(items: Tensor, causal: bool) -> Tensor:
    """(B, T, T) attention permission: real keys only (causal: and not in the future); always self."""
    B, T = items.shape
    allowed = (items > 0).unsqueeze(1).expand(B, T, T)  # (B, T, T) keys that are items
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=items.device).tril()
    return allowed | torch.eye(T, dtype=torch.bool, device=items.device)


def _init_weights(module: nn.Module) -> None:
    """normal(0, 0.02) for linear and position weights, zeros for biases (reference SASRec/BERT4Rec)."""
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        return  # the item table is initialised by its embedder
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
