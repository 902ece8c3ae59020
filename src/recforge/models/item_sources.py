"""Item side features as item embedders, and the fusion of any set of them.

- :class:`AttributeEmbedding`: a bag of learned attribute vectors per item (mean or sum), e.g. the S3-Rec
  category/brand ids of an Amazon item or the genres of a film; an item without attributes gets a learned vector.
- :class:`VectorEmbedding`: dense vectors computed elsewhere (image, audio, text), read from a file
  (:mod:`recforge.data.item_vectors`) and projected to H; an item without a vector gets a learned vector.
- :class:`MultiEmbedding`: several item embedders (the *sources*: id, text, attributes, vectors, each giving
  (..., H)) fused by a :class:`SourceFusion`: the sum, W [x_1; ...; x_S] + b, or a softmax gate over the sources.
  ``item_embedder=multi item_source=[id,text,attributes]`` is a config, not a class.

Attributes and vectors are known once the data is read: :func:`recforge.run.item_features.attach_item_features`
gives them to every part with the role :class:`UsesItemAttributes` or :class:`UsesItemIds`. Their tables are sized
then (A attributes, D dimensions), and resized to a checkpoint's shapes when one is loaded into an unattached part.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from recforge.data.item_attributes import AttributeBags
from recforge.errors import RecforgeError
from recforge.models.embedders import (
    EMBEDDER_RULES,
    HasIdAndContent,
    IdEmbedding,
    ItemEmbedder,
    _linear,
    _zero_padding_row,
)
from recforge.rules import check_arguments


class UsesItemAttributes:
    """Role: a part that needs every item's attribute bag (internal ids 1..N) once the data is read."""

    def attach_item_attributes(self, bags: AttributeBags) -> None:
        raise NotImplementedError


class UsesItemIds:
    """Role: a part that needs the raw dataset id of every internal id (entry 0 padding) once the data is read."""

    def attach_item_ids(self, item_ids: Sequence[Any]) -> None:
        raise NotImplementedError


def _resize(module: nn.Module, name: str, shape: torch.Size) -> None:
    """Replace buffer ``name`` by zeros of ``shape`` (same dtype) when it differs (loading into a fresh part)."""
    old = getattr(module, name)
    if old.shape != shape:
        setattr(module, name, torch.zeros(shape, dtype=old.dtype, device=old.device))


class AttributeEmbedding(ItemEmbedder, UsesItemAttributes):
    """An item is the mean (``mean=False``: the sum) of its attributes' learned vectors (A+1, H), row 0 padding.

    Items without attributes get the learned ``default`` vector, the [MASK] token (id N+1) the learned
    ``mask_vector``; padding is zero. All vectors start from normal(0, init_std).
    """

    argument_rules = EMBEDDER_RULES

    def __init__(self, num_items: int, hidden_size: int, mean: bool = True, init_std: float = 0.02) -> None:
        super().__init__()
        check_arguments(AttributeEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        self.num_items, self.hidden_size, self.mean, self.init_std = num_items, hidden_size, mean, init_std
        self.register_buffer("bags", torch.zeros(num_items + 2, 0, dtype=torch.long))  # (N+2, L)
        self.table = nn.Embedding(1, hidden_size, padding_idx=0)  # (A+1, H), sized by attach_item_attributes
        self.default = nn.Parameter(torch.randn(hidden_size) * init_std)
        self.mask_vector = nn.Parameter(torch.randn(hidden_size) * init_std)
        self.ready = False

    def _size(self, num_attributes: int) -> None:
        self.table = nn.Embedding(num_attributes + 1, self.hidden_size, padding_idx=0,
                                  device=self.default.device)
        nn.init.normal_(self.table.weight, std=self.init_std)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def attach_item_attributes(self, bags: AttributeBags) -> None:
        """bags.bags: (N, L) attribute indices 1..A of ids 1..N (0 padding)."""
        if bags.bags.shape[0] != self.num_items:
            raise ValueError(f"attribute bags of {bags.bags.shape[0]} items given for {self.num_items} items")
        self._size(bags.num_attributes)
        empty = torch.zeros(1, bags.bags.shape[1], dtype=torch.long)
        self.bags = torch.cat([empty, bags.bags, empty]).to(self.default.device)  # (N+2, L)
        self.ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        if prefix + "table.weight" in state_dict:  # a checkpoint sized by its data: take its shapes
            self._size(state_dict[prefix + "table.weight"].shape[0] - 1)
            _resize(self, "bags", state_dict[prefix + "bags"].shape)
            self.ready = True
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        if not self.ready:
            raise RuntimeError("item attributes were never attached; call attach_item_attributes first")
        bag = self.bags[items]  # (..., L)
        x = self.table(bag).sum(dim=-2)  # (..., H), padding rows are zero
        count = (bag > 0).sum(dim=-1, keepdim=True)  # (..., 1)
        if self.mean:
            x = x / count.clamp(min=1).to(x.dtype)
        x = torch.where(count == 0, self.default, x)  # (..., H)
        x = torch.where((items == self.mask_token).unsqueeze(-1), self.mask_vector, x)
        return x * (items > 0).unsqueeze(-1).to(x.dtype)

    def output_weights(self) -> Tensor:
        """(N+1, H): vectors of ids 0..N, row 0 zero."""
        return self(torch.arange(self.num_items + 1, device=self.default.device))


class VectorEmbedding(ItemEmbedder, UsesItemIds):
    """Fixed item vectors from a file (``.npy`` + ``ids_path``, or ``.parquet`` with ``id_column`` and
    ``vector_column``) projected to H by a trained Linear; items the file lacks get the learned ``default``.

    The vectors (N+2, D) are a buffer saved in checkpoints, so a loaded model needs no file.
    """

    argument_rules = EMBEDDER_RULES

    def __init__(self, num_items: int, hidden_size: int, path: str, ids_path: str | None = None,
                 id_column: str = "item", vector_column: str = "vector", init_std: float = 0.02) -> None:
        super().__init__()
        check_arguments(VectorEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        self.num_items, self.hidden_size, self.init_std = num_items, hidden_size, init_std
        self.path, self.ids_path, self.id_column, self.vector_column = path, ids_path, id_column, vector_column
        self.register_buffer("vectors", torch.zeros(num_items + 2, 0))  # (N+2, D), sized by attach_item_ids
        self.register_buffer("present", torch.zeros(num_items + 2, dtype=torch.bool))  # (N+2,)
        with warnings.catch_warnings():  # a (H, 0) placeholder until the file's dimension is known
            warnings.simplefilter("ignore", UserWarning)
            self.project = _linear(0, hidden_size, init_std)
        self.default = nn.Parameter(torch.randn(hidden_size) * init_std)
        self.mask_vector = nn.Parameter(torch.randn(hidden_size) * init_std)
        self.ready = False

    def attach_item_ids(self, item_ids: Sequence[Any]) -> None:
        """Read the vector file and keep the vectors of internal ids 1..N (``item_ids[i]``: raw id of id i)."""
        from recforge.data.item_vectors import map_item_vectors, read_item_vectors

        ids, vectors = read_item_vectors(self.path, self.ids_path, self.id_column, self.vector_column)
        matrix, present = map_item_vectors(ids, vectors, item_ids, f"item vector file {self.path}")
        self.attach_vectors(torch.from_numpy(matrix), torch.from_numpy(present))

    def attach_vectors(self, vectors: Tensor, present: Tensor) -> None:
        """vectors: (N, D) of ids 1..N; present: (N,) bool, False where the item has no vector."""
        device = self.default.device
        self.project = _linear(vectors.shape[1], self.hidden_size, self.init_std).to(device)
        pad = torch.zeros(1, vectors.shape[1])
        self.vectors = torch.cat([pad, vectors.float(), pad]).to(device)  # (N+2, D)
        self.present = torch.cat([torch.zeros(1, dtype=torch.bool), present, torch.zeros(1, dtype=torch.bool)]).to(device)
        self.ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        if prefix + "vectors" in state_dict:  # a checkpoint sized by its file: take its shapes
            dim = state_dict[prefix + "vectors"].shape[1]
            self.project = _linear(dim, self.hidden_size, self.init_std).to(self.default.device)
            _resize(self, "vectors", state_dict[prefix + "vectors"].shape)
            self.ready = True
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        if not self.ready:
            raise RuntimeError("item vectors were never attached; call attach_item_ids first")
        x = self.project(self.vectors[items])  # (..., H)
        x = torch.where(self.present[items].unsqueeze(-1), x, self.default)
        x = torch.where((items == self.mask_token).unsqueeze(-1), self.mask_vector, x)
        return x * (items > 0).unsqueeze(-1).to(x.dtype)

    def output_weights(self) -> Tensor:
        """(N+1, H): vectors of ids 0..N, row 0 zero."""
        return self(torch.arange(self.num_items + 1, device=self.default.device))


# ------------------------------------------------------------------------------------------- fusion of sources


class SourceFusion(nn.Module):
    """Role: S vectors (..., H) of one item, one per source -> (..., H). Built by :class:`MultiEmbedding` with
    (num_sources, hidden_size, init_std); the ``source_fusion`` group chooses the class (sum, concat, gate)."""

    def forward(self, sources: list[Tensor]) -> Tensor:
        raise NotImplementedError


class SumSources(SourceFusion):
    """x_1 + ... + x_S (nothing trained: with id and text it is today's hybrid sum, id + W text)."""

    def __init__(self, num_sources: int, hidden_size: int, init_std: float = 0.02) -> None:
        super().__init__()

    def forward(self, sources: list[Tensor]) -> Tensor:
        return torch.stack(sources).sum(dim=0)  # (..., H)


class ConcatSources(SourceFusion):
    """W [x_1; ...; x_S] + b."""

    def __init__(self, num_sources: int, hidden_size: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.project = _linear(num_sources * hidden_size, hidden_size, init_std)

    def forward(self, sources: list[Tensor]) -> Tensor:
        return self.project(torch.cat(sources, dim=-1))  # (..., H)


class GateSources(SourceFusion):
    """sum_s g_s * x_s with g = softmax over the sources of W_g [x_1; ...; x_S] + b_g, per dimension (two sources:
    g_1 = sigmoid of a difference, the hybrid gate)."""

    def __init__(self, num_sources: int, hidden_size: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_sources = num_sources
        self.gate = _linear(num_sources * hidden_size, num_sources * hidden_size, init_std)

    def forward(self, sources: list[Tensor]) -> Tensor:
        x = torch.stack(sources, dim=-2)  # (..., S, H)
        logits = self.gate(torch.cat(sources, dim=-1)).unflatten(-1, (self.num_sources, -1))  # (..., S, H)
        return (torch.softmax(logits, dim=-2) * x).sum(dim=-2)  # (..., H)


class MultiEmbedding(ItemEmbedder, HasIdAndContent):
    """Several item embedders (``sources``: name -> a callable building one from num_items, e.g. a partial of
    IdEmbedding, TextEmbedding, AttributeEmbedding or VectorEmbedding) fused into H by ``fusion``.

    Sources are fused in the order given; each keeps its own padding and [MASK] handling; padding is zero.
    """

    argument_rules = EMBEDDER_RULES

    def __init__(self, num_items: int, hidden_size: int, sources: Mapping[str, Callable[[int], ItemEmbedder]],
                 fusion: Callable[[int, int, float], SourceFusion] = SumSources, init_std: float = 0.02) -> None:
        super().__init__()
        check_arguments(MultiEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        if not sources:
            raise RecforgeError("item_embedder=multi has no source; choose them with item_source, e.g. "
                                "item_source=[id,text,attributes].")
        self.sources = nn.ModuleDict({name: build(num_items) for name, build in sources.items()})
        for name, source in self.sources.items():
            if source.hidden_size != hidden_size:
                raise RecforgeError(f"item_source.{name}.hidden_size={source.hidden_size} differs from "
                                    f"item_embedder.hidden_size={hidden_size}.")
        self.fusion = fusion(len(self.sources), hidden_size, init_std)
        self.num_items, self.hidden_size = num_items, hidden_size

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        x = self.fusion([source(items) for source in self.sources.values()])  # (..., H)
        return x * (items > 0).unsqueeze(-1).to(x.dtype)

    def output_weights(self) -> Tensor:
        """(N+1, H): fused vectors of ids 0..N, row 0 zero."""
        return _zero_padding_row(self.fusion([source.output_weights() for source in self.sources.values()]))

    def id_and_content(self) -> tuple[IdEmbedding, Tensor] | None:
        """The ``id`` source and the other sources' vectors of ids 0..N side by side (N+1, (S-1) H), or None."""
        ids = next((source for name, source in self.sources.items() if name == "id"), None)
        others = [source for name, source in self.sources.items() if name != "id"]
        if not isinstance(ids, IdEmbedding) or not others:
            return None
        return ids, torch.cat([source.output_weights() for source in others], dim=-1).detach()
