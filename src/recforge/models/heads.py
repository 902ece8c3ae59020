"""Pointwise heads for the intent and value tasks: (user state, user, target item) -> one number per sample.

``BiasedDot`` is the form of biased matrix factorisation and SVD++ (Koren, KDD 2008):
    y = mu + b_user + b_item + <state + p_user, q_item>
where ``state`` is what the sequence encoder made of the user's history (SVD++: the mean of the history's item
vectors) and ``q_item`` comes from the shared item embedder. For the value task y is the rating; for the intent
task y is the logit of "yes".
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recforge.models.embedders import ItemEmbedder


class PointwiseHead(nn.Module):
    """Role: the output layer of a pointwise task (one rating or logit per sample). ``init_global_bias`` sets the
    head's starting bias from the training data (the mean rating, the log-odds of yes); a head without one keeps
    the default no-op."""

    def init_global_bias(self, value: float) -> None:
        """Start the global bias at ``value`` (before training)."""


class BiasedDot(PointwiseHead):
    """mu + b_user + b_item + <state + p_user, q_item>; ``user_embedding`` False drops p_user (history only)."""

    def __init__(self, item_embedder: ItemEmbedder, num_users: int, user_embedding: bool = True,
                 user_bias: bool = True, dropout: float = 0.0, init_std: float = 0.02) -> None:
        super().__init__()
        hidden = item_embedder.hidden_size
        self.item_embedder = item_embedder
        self.global_bias = nn.Parameter(torch.zeros(()))
        self.item_bias = nn.Embedding(item_embedder.num_items + 2, 1)
        self.user_bias = nn.Embedding(num_users, 1) if user_bias else None
        self.user_vectors = nn.Embedding(num_users, hidden) if user_embedding else None
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.item_bias.weight)
        if self.user_bias is not None:
            nn.init.zeros_(self.user_bias.weight)
        if self.user_vectors is not None:
            nn.init.normal_(self.user_vectors.weight, std=init_std)

    def init_global_bias(self, value: float) -> None:
        """Start mu at the training mean of the target (the rating, or the logit of the positive rate)."""
        with torch.no_grad():
            self.global_bias.fill_(value)

    def forward(self, state: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """state: (B, H), users: (B,), items: (B,) -> (B,)."""
        user = state if self.user_vectors is None else state + self.user_vectors(users)  # (B, H)
        item = self.item_embedder(items)  # (B, H)
        y = self.global_bias + self.item_bias(items)[:, 0] + (self.dropout(user) * item).sum(-1)  # (B,)
        if self.user_bias is not None:
            y = y + self.user_bias(users)[:, 0]
        return y
