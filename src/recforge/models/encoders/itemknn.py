"""ItemKNN (Sarwar et al. 2001; Deshpande & Karypis 2004; RecBole's ``ItemKNN``): item-item cosine similarity of the
binary user x item training matrix, top-k neighbours per item; the score of item i for a history is the sum of
sim(i, j) over the history items j that are among i's neighbours. Nothing is trained: the similarity is computed
from the datamodule's training data at setup (``FitsData``) and is not part of checkpoints.

sim(i, j) = |users of i and j| / (sqrt(|users of i|) sqrt(|users of j|) + shrink), 0 on the diagonal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recforge.errors import RecforgeError
from recforge.models.decoders import Decoder
from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import FitsData, SequenceEncoder
from recforge.rules import (
    check_arguments,
    int_at_least,
    number_at_least,
    optional,
    rule_table,
)

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData

BLOCK_ELEMENTS = 1 << 22  # dense similarity block while fitting: (N+1) x block floats (32 MB in float64)


def cosine_neighbours(indptr: np.ndarray, items: np.ndarray, num_items: int, k: int | None,
                      shrink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every item id 0..N from users' items (CSR ``indptr`` (U+1,), ``items``).

    Returns CSR (indptr (N+2,), neighbours (nnz,), weights (nnz,) float64): row i holds i's neighbours j (sorted by
    id) and sim(i, j). Only positive similarities are kept; among equal ones at the k-th place, smaller ids win.
    ``k=None`` keeps all. Memory O(nnz + (N+1) x block), never (N+1)^2.
    """
    n = num_items + 1
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # (n_int,)
    matrix = sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(indptr) - 1, n))  # (U, N+1)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # binary: a repeated interaction counts once
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())  # (N+1,) sqrt(users per item)
    by_item = matrix.T.tocsr()  # (N+1, U)
    block = max(1, BLOCK_ELEMENTS // n)
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        end = min(start + block, n)
        co = (by_item[start:end] @ matrix).toarray()  # (b, N+1) users of both; row r = item start + r
        denom = norms[start:end, None] * norms[None, :] + shrink  # (b, N+1)
        sim = np.divide(co, denom, out=np.zeros_like(co), where=co > 0)  # (b, N+1)
        sim[np.arange(end - start), np.arange(start, end)] = 0.0  # an item is not its own neighbour
        r, c = _top_k(sim, k)
        rows.append(r + start), cols.append(c), vals.append(sim[r, c])
    rows_all, cols_all, vals_all = (np.concatenate(x) for x in (rows, cols, vals))
    out_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows_all, minlength=n))]).astype(np.int64)  # (N+2,)
    return out_indptr, cols_all.astype(np.int64), vals_all.astype(np.float64)


def _top_k(sim: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each row's ``k`` largest positive entries (ties: smaller column first), sorted by (row, col)."""
    candidates = sim > 0  # (b, N+1)
    if k is not None and k < sim.shape[1]:
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]  # (b,) each row's k-th largest value
        candidates &= sim >= kth[:, None]  # at least k per row, more only with ties at the k-th value
    r, c = np.nonzero(candidates)  # sorted by (row, col)
    if k is None:
        return r, c
    order = np.lexsort((c, -sim[r, c], r))  # by row, then value descending, then id
    r, c = r[order], c[order]
    first = np.searchsorted(r, r, side="left")  # (m,) index of each row's first candidate
    keep = np.arange(len(r)) - first < k
    r, c = r[keep], c[keep]
    order = np.lexsort((c, r))
    return r[order], c[order]


class MultiHot(SequenceEncoder):
    """The input window as a binary multi-hot vector over item ids, at the last position only: (B, 1, N+1).

    Holds no parameters (nothing is trained). The whole history counts only if the input window covers it:
    set ``dataset.max_len`` to at least the longest sequence for RecBole's ItemKNN.
    """

    next_item_states = False  # one state per window, at its last position

    def __init__(self, item_embedder: ItemEmbedder) -> None:
        super().__init__()  # the embedder is not kept: nothing here is trained
        self.num_items = item_embedder.num_items

    def training_pairs(self, window: Tensor) -> tuple[Tensor, Tensor]:
        raise RecforgeError("encoder=itemknn has nothing to train (its similarities are computed from the training "
                            "data at setup); evaluate it with trainer.test, as recforge-train does.")

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) item ids, 0 = padding -> (B, 1, N+1): 1.0 at every item id in the row."""
        hot = torch.zeros(items.shape[0], self.num_items + 1, device=items.device)  # (B, N+1)
        hot.scatter_(1, items, 1.0)
        hot[:, 0] = 0.0  # padding is no item
        return hot.unsqueeze(1)  # (B, 1, N+1)


class ItemKNNScores(Decoder, FitsData):
    """Decoder: scores (M, N+1) = multi-hot history (M, N+1) @ S, S[j, i] = sim(i, j) if j is among i's top ``k``
    neighbours (``k=None``: all), with ``shrink`` in the cosine denominator. S is kept as CSR (row i = item i's
    neighbours) in non-persistent buffers, summed in float64 so every scoring path gives the same float32 scores."""

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(k=optional(int_at_least(1)), shrink=number_at_least(0))

    def __init__(self, item_embedder: ItemEmbedder, k: int | None = 100, shrink: float = 0.0) -> None:
        super().__init__()
        check_arguments(ItemKNNScores, "decoder", k=k, shrink=shrink)
        self.num_items, self.k, self.shrink = item_embedder.num_items, k, shrink
        self.register_buffer("indptr", torch.zeros(self.num_items + 2, dtype=torch.long), persistent=False)
        self.register_buffer("neighbours", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("weights", torch.zeros(0, dtype=torch.float64), persistent=False)

    def fit_data(self, data: TrainingData) -> None:
        indptr, neighbours, weights = cosine_neighbours(data.indptr.numpy(), data.items.numpy(), self.num_items,
                                                        self.k, self.shrink)
        device = self.indptr.device
        self.indptr = torch.from_numpy(indptr).to(device)  # (N+2,)
        self.neighbours = torch.from_numpy(neighbours).to(device)  # (nnz,)
        self.weights = torch.from_numpy(weights).to(device)  # (nnz,) float64

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, N+1) multi-hot histories -> (M, N+1) scores, padding at -inf."""
        scores = self.score_range(hidden, 0, self.num_items + 1)  # (M, N+1)
        scores[:, 0] = float("-inf")
        return scores

    def score_range(self, hidden: Tensor, start: int, end: int) -> Tensor:
        """Scores of item ids start..end-1 (id 0 scores 0 here). hidden: (M, N+1) -> (M, end - start)."""
        p0, p1 = int(self.indptr[start]), int(self.indptr[end])
        per_row = self.indptr[start + 1:end + 1] - self.indptr[start:end]  # (C,)
        rows = torch.repeat_interleave(torch.arange(end - start, device=hidden.device), per_row)  # (P,)
        block = torch.sparse_coo_tensor(torch.stack([rows, self.neighbours[p0:p1]]), self.weights[p0:p1],
                                        (end - start, self.num_items + 1), is_coalesced=True,
                                        check_invariants=False)  # (C, N+1): built sorted and unique
        return torch.sparse.mm(block, hidden.T.double()).T.float()  # (M, C)

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items. hidden: (M, N+1), items: (M, K) -> (M, K)."""
        M, K = items.shape
        flat = items.reshape(-1)  # (M*K,)
        starts, counts = self.indptr[flat], self.indptr[flat + 1] - self.indptr[flat]  # (M*K,)
        owner = torch.repeat_interleave(torch.arange(M * K, device=items.device), counts)  # (P,) which (m, k)
        offset = torch.arange(len(owner), device=items.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        position = torch.repeat_interleave(starts, counts) + offset  # (P,) index into neighbours/weights
        terms = hidden[owner // K, self.neighbours[position]].double() * self.weights[position]  # (P,)
        scores = torch.zeros(M * K, dtype=torch.float64, device=items.device).index_add_(0, owner, terms)
        return scores.view(M, K).float()
