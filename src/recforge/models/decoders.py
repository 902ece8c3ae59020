"""Decoders: hidden states -> scores over every item id (column 0, padding, is -inf).

Every ranking decoder is a :class:`Decoder`: ``forward(hidden)`` scores every item id, ``score_items(hidden,
items)`` chosen ones and ``score_range(hidden, start, end)`` a block of consecutive ids (by default through
``score_items``; DotProduct overrides it with one matmul against a slice of the table), so chunked evaluation
(:func:`score_columns`) works with every decoder without building the (M, N+1) matrix.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recforge.models.embedders import ItemEmbedder


class Decoder(nn.Module):
    """Role: hidden states (M, H) -> scores over item ids 0..num_items."""

    num_items: int

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, H) -> scores (M, N+1), column 0 at -inf."""
        raise NotImplementedError

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items only. hidden: (M, H), items: (M, K) -> (M, K)."""
        raise NotImplementedError

    def score_range(self, hidden: Tensor, start: int, end: int) -> Tensor:
        """Scores of item ids start..end-1 (column 0 as the decoder scores it). hidden: (M, H) -> (M, end - start)."""
        ids = torch.arange(start, end, device=hidden.device).expand(hidden.shape[0], -1)  # (M, C)
        return self.score_items(hidden, ids)  # (M, C)

    def score_shared(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of the same items for every row (a sampled softmax's shared negatives). hidden: (M, H), items:
        (K,) -> (M, K)."""
        return self.score_items(hidden, items.expand(hidden.shape[0], -1))  # (M, K)

    def linear_scores(self) -> tuple[Tensor, Tensor] | None:
        """``(weights (N+1, H), bias (N+1,))`` with ``forward(hidden) == hidden @ weights.T + bias``, for a loss
        that scores the items a block of rows at a time (``loss.chunk_rows``); None: the scores are not linear."""
        return None


class DotProduct(Decoder):
    """Score = <hidden, item embedding>, with the embedding table tied to the encoder's input."""

    def __init__(self, item_embedder: ItemEmbedder) -> None:
        super().__init__()
        self.item_embedder = item_embedder

    @property
    def num_items(self) -> int:
        return self.item_embedder.num_items

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, H) -> scores (M, N+1)."""
        weights = self.item_embedder.output_weights()  # (N+1, H)
        # padding at -inf through the matmul's bias (0 elsewhere leaves the products as they are), not by an
        # in-place write into the scores, whose backward (CopySlices) clones the (M, N+1) gradient every step
        return torch.addmm(padding_bias(weights), hidden, weights.T)  # (M, N+1)

    def linear_scores(self) -> tuple[Tensor, Tensor]:
        """The item table (N+1, H) and the padding bias (N+1,): ``forward`` is their affine map."""
        weights = self.item_embedder.output_weights()  # (N+1, H)
        return weights, padding_bias(weights)

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items only. hidden: (M, H), items: (M, K) -> (M, K)."""
        return (hidden.unsqueeze(1) * self.item_embedder(items)).sum(-1)  # (M, K)

    def score_shared(self, hidden: Tensor, items: Tensor) -> Tensor:
        """One matmul against the K shared items' embeddings. hidden: (M, H), items: (K,) -> (M, K)."""
        return hidden @ self.item_embedder(items).T  # (M, K)

    def score_range(self, hidden: Tensor, start: int, end: int) -> Tensor:
        """Scores of item ids start..end-1: ``forward(hidden)[:, start:end]`` up to float rounding (the matmul
        kernel may sum in another order for another width). hidden: (M, H) -> (M, end - start)."""
        return hidden @ self.item_embedder.output_weights()[start:end].T  # (M, end - start)


def padding_bias(weights: Tensor) -> Tensor:
    """(N+1,) zeros with -inf at id 0, in the dtype and on the device of ``weights`` (N+1, H)."""
    bias = weights.new_zeros(weights.shape[0])  # (N+1,)
    bias[0] = float("-inf")
    return bias


def score_columns(decoder: Decoder, hidden: Tensor, start: int, end: int) -> Tensor:
    """Scores of item ids start..end-1 for every row, id 0 (padding) at -inf, like ``decoder(hidden)[:, start:end]``
    but scoring only those ids (the decoder's ``score_range``). hidden: (M, H) -> (M, end - start)."""
    scores = decoder.score_range(hidden, start, end)  # (M, C)
    if start == 0 and end > 0:
        scores = scores.clone()  # a decoder may return a view of its own state (popularity counts)
        scores[:, 0] = float("-inf")
    return scores
