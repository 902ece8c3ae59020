"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR
2020; RecBole's ``LightGCN``): matrix factorisation whose user and item vectors are the mean of K + 1 layers of
propagation over the normalised user-item graph of the training interactions,

    E^(k+1) = D^-1/2 A D^-1/2 E^(k),    final = (E^(0) + ... + E^(K)) / (K + 1),

where A is the binary bipartite adjacency (user u -- item i iff i is among u's training items) and E^(0) the
learned ("ego") user and item vectors, the model's only parameters.

The propagation yields users and items together, so it lives in the item embedder (:class:`GraphEmbedding`, the
table the dot-product decoder scores with: training and ranking both use the propagated item vectors); the
encoder (:class:`LightGCN`) returns the user's propagated vector at every position, as ``encoder=mf`` does.
``encoder=lightgcn`` selects both. The graph is built from the datamodule's training data at setup (``FitsData``:
never validation or test targets) and is not part of checkpoints.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.models.embedders import EMBEDDER_RULES, IdEmbedding, ItemEmbedder
from recforge.models.encoders.base import FitsData, SequenceEncoder
from recforge.models.encoders.mf import MatrixFactorization
from recforge.rules import check_arguments, int_at_least, rule_table

if TYPE_CHECKING:
    from recforge.data.datamodule import TrainingData


def normalized_adjacency(indptr: np.ndarray, items: np.ndarray, num_users: int, num_nodes: int) -> Tensor:
    """The symmetric normalised adjacency D^-1/2 A D^-1/2 of the user-item graph, as a coalesced sparse COO
    (num_nodes, num_nodes) float32 tensor. Nodes: users 0..U-1, then item id i as node U + i.

    ``indptr`` (U+1,), ``items``: each user's training items (CSR). A is binary (a repeated interaction is one
    edge); a node without edges (padding, an item never trained on) has an empty row and column."""
    users = np.repeat(np.arange(num_users), np.diff(indptr))  # (n,)
    pairs = np.unique(np.stack([users, items.astype(np.int64) + num_users]), axis=1)  # (2, E) unique edges
    rows = np.concatenate([pairs[0], pairs[1]])  # (2E,) both directions
    cols = np.concatenate([pairs[1], pairs[0]])  # (2E,)
    degree = np.bincount(rows, minlength=num_nodes).astype(np.float64)  # (num_nodes,)
    scale = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=scale, where=degree > 0)  # (num_nodes,) D^-1/2, 0 for isolated nodes
    values = scale[rows] * scale[cols]  # (2E,)
    indices = torch.from_numpy(np.stack([rows, cols]))  # (2, 2E)
    return torch.sparse_coo_tensor(indices, torch.from_numpy(values).float(), (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()  # (V, V)


class _SymmetricSparseMM(torch.autograd.Function):
    """``adjacency @ x`` for a symmetric sparse ``adjacency``: its gradient is ``adjacency @ grad`` (A^T = A), so
    the backward pass is one more sparse product instead of torch.sparse.mm's transpose and coalesce of A (on
    ML-100K's graph, 203,714 entries, CSR forward and backward take 1/7 of COO's time: experiments/results/lightgcn.md)."""

    @staticmethod
    def forward(ctx, adjacency: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency
        return adjacency @ x  # (V, H)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        with torch.autocast(device_type=grad.device.type, enabled=False):  # backward may run under autocast
            return None, ctx.adjacency @ grad.to(ctx.adjacency.dtype)  # (V, H); the graph gets no gradient


def propagate(adjacency: Tensor, ego: Tensor, num_layers: int) -> Tensor:
    """The mean of layers 0..K of ``E^(k+1) = adjacency @ E^(k)``: adjacency (V, V) sparse and symmetric (COO or
    CSR), ego (V, H) -> (V, H). Always in the dtype of ``ego`` (autocast off: CPU has no bf16 sparse product, and
    the sums over many neighbours keep fp32's precision)."""
    layer, total = ego, ego
    with torch.autocast(device_type=ego.device.type, enabled=False):
        for _ in range(num_layers):
            layer = _SymmetricSparseMM.apply(adjacency, layer)  # (V, H)
            total = total + layer
    return total / (num_layers + 1)  # (V, H)


class GraphEmbedding(ItemEmbedder, FitsData):
    """Item embedder of LightGCN: learned user (U, H) and item (N+2, H) ego vectors, propagated ``num_layers``
    times over the training graph. ``forward(items)`` and ``output_weights()`` give propagated item vectors,
    ``user_vectors(users)`` propagated user vectors.

    ``num_users`` is filled in from the data. The propagation is computed once per weight update and shared by
    every call until then: with gradients (one training step's user vectors, target and negative vectors and
    scores all reach the ego vectors through one propagation, which the backward pass then releases) and without
    (evaluation batches). The graph is kept in CSR form, whose product is the fastest on CPU.
    """

    argument_rules = rule_table(**EMBEDDER_RULES, num_layers=int_at_least(0))  # recforge.rules

    def __init__(self, num_items: int, hidden_size: int, num_users: int, num_layers: int = 3,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if num_users is None or num_users < 0:
            raise ValueError(f"num_users={num_users} must be the number of users of the data (filled in by build_module)")
        check_arguments(GraphEmbedding, "item_embedder", hidden_size=hidden_size, num_layers=num_layers,
                        init_std=init_std)
        self.num_items, self.hidden_size, self.num_users, self.num_layers = num_items, hidden_size, num_users, num_layers
        self.ids = IdEmbedding(num_items, hidden_size, init_std)  # item ego vectors (N+2, H), row 0 zero
        self.users = nn.Embedding(num_users, hidden_size)  # user ego vectors (U, H)
        nn.init.normal_(self.users.weight, std=init_std)
        # the normalised adjacency in CSR form (from fit_data): row pointers (V+1,), columns and values (nnz,)
        self.register_buffer("crow", torch.zeros(1, dtype=torch.long), persistent=False)
        self.register_buffer("cols", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("values", torch.zeros(0), persistent=False)
        self.fitted = False
        self._cached: tuple[tuple, Tensor] | None = None  # (weight versions and grad mode, propagated)

    def fit_data(self, data: TrainingData) -> None:
        """The training graph (users' training items only)."""
        if data.num_users != self.num_users:
            raise RecforgeError(f"the training data has {data.num_users} users but item_embedder.num_users is "
                                f"{self.num_users}; leave item_embedder.num_users at null (filled in from the data).")
        adjacency = normalized_adjacency(data.indptr.numpy(), data.items.numpy(), self.num_users,
                                         self.num_users + self.num_items + 2)
        device = self.users.weight.device
        with warnings.catch_warnings():  # torch marks CSR "beta"; the product used here is tested (tests/models)
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            csr = adjacency.to_sparse_csr()
        self.crow, self.cols = csr.crow_indices().to(device), csr.col_indices().to(device)
        self.values = csr.values().to(device)
        self.fitted, self._cached = True, None

    def propagated(self) -> Tensor:
        """Propagated vectors of every node: users 0..U-1, then item ids 0..N+1 -> (U + N + 2, H)."""
        if not self.fitted:
            raise RuntimeError("GraphEmbedding used before fit_data gave it the training graph")
        users, items = self.users.weight, self.ids.table.weight
        grad = torch.is_grad_enabled()
        key = (users._version, items._version, users.data_ptr(), items.data_ptr(), grad)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        num_nodes = self.num_users + self.num_items + 2
        adjacency = torch.sparse_csr_tensor(self.crow, self.cols, self.values.to(users.dtype),
                                            (num_nodes, num_nodes), check_invariants=False)  # (V, V)
        out = propagate(adjacency, torch.cat([users, items]), self.num_layers)  # (U + N + 2, H)
        self._cached = (key, out)
        if out.requires_grad:  # the backward pass frees this graph: the next call must propagate afresh
            out.register_hook(self._forget)
        return out

    def _forget(self, grad: Tensor) -> None:
        """Backward hook of a propagation with gradients: drop it from the cache once its gradient is computed."""
        self._cached = None

    def user_vectors(self, users: Tensor) -> Tensor:
        """users: (...,) user rows -> (..., H) propagated."""
        return self.propagated()[users]

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H) propagated (padding, id 0, has no edges and a zero ego row: zero)."""
        return self.propagated()[items + self.num_users]

    def output_weights(self) -> Tensor:
        """Propagated vectors of ids 0..num_items. (N+1, H)."""
        return self.propagated()[self.num_users: self.num_users + self.num_items + 1]


class LightGCN(SequenceEncoder):
    """The user's propagated vector (from its :class:`GraphEmbedding`) at every position: ``forward(items,
    users)`` -> (B, T, H). Training pairs as ``encoder=mf``: every training item of a window is a target."""

    uses_users = True
    next_item_states = False  # every position holds the user's vector; targets are not the shift
    state_per_window = True
    argument_rules = rule_table(max_len=int_at_least(2))  # recforge.rules: checked in the config and here
    training_pairs = MatrixFactorization.training_pairs

    def __init__(self, item_embedder: ItemEmbedder, max_len: int) -> None:
        super().__init__()
        if not isinstance(item_embedder, GraphEmbedding):
            raise RecforgeError(f"encoder=lightgcn needs item_embedder GraphEmbedding, not "
                                f"{type(item_embedder).__qualname__}; pass encoder=lightgcn, which selects both.")
        check_arguments(LightGCN, "encoder", max_len=max_len)
        self.item_embedder, self.max_len = item_embedder, max_len

    def forward(self, items: Tensor, users: Tensor | None = None) -> Tensor:
        """items: (B, T) (shape only), users: (B,) user rows -> (B, T, H).

        ``users=None`` gives the mean propagated user vector in evaluation and is refused in training."""
        B, T = items.shape
        if users is not None:
            vectors = self.item_embedder.user_vectors(users)  # (B, H)
        elif self.training:
            raise RecforgeError("encoder=lightgcn needs the user of every training window (batch key 'user'), "
                                "which recforge's SequenceDataModule provides.")
        else:
            vectors = self.item_embedder.user_vectors(torch.arange(self.item_embedder.num_users,
                                                                   device=items.device)).mean(dim=0).expand(B, -1)
        return vectors.unsqueeze(1).expand(B, T, -1)  # (B, T, H)
