"""Item embedders shared by a sequence encoder's input and the decoder's output (weight tying).

Every embedder has ``num_items``, ``hidden_size``, ``mask_token`` (id N+1), ``forward(items) -> (..., H)`` with
padding (id 0) at zero, and ``output_weights() -> (N+1, H)`` for scoring every item id.

- :class:`IdEmbedding`: one learned vector per item id.
- :class:`TextEmbedding`: the item's text embedding, projected to H (Hou et al., UniSRec, KDD 2022, without the
  whitening adaptor).
- :class:`HybridEmbedding`: id and text vectors fused by a sum, a concatenation + projection or a learned gate.

Text embedders hold an :class:`ItemTextTable` whose vectors are attached once the data is read
(:class:`UsesItemText`; :func:`recforge.run.item_text.attach_item_text` does it for a whole model).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.rules import (
    Expect,
    check_arguments,
    int_at_least,
    number_at_least,
    rule_table,
)

if TYPE_CHECKING:
    from recforge.models.text_cache import EmbeddingCache
    from recforge.models.text_encoder import TextEncoder


class ItemEmbedder(nn.Module):
    """Role: item ids -> vectors, shared by an encoder's input and a decoder's output (weight tying).

    Subclasses set ``num_items`` and ``hidden_size`` and implement ``forward(items) -> (..., H)`` (padding id 0 at
    zero) and ``output_weights() -> (N+1, H)``; id N+1 is the [MASK] token (BERT4Rec).
    """

    num_items: int
    hidden_size: int

    @property
    def mask_token(self) -> int:
        return self.num_items + 1

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        raise NotImplementedError

    def output_weights(self) -> Tensor:
        """Vectors of ids 0..num_items, used to score every item. (N+1, H)."""
        raise NotImplementedError


# the argument rules of the item embedders (recforge.rules: checked in the config and by their constructors)
EMBEDDER_RULES = rule_table(hidden_size=int_at_least(1), init_std=number_at_least(0))


class IdEmbedding(ItemEmbedder):
    """One learned vector per item id. Row 0 is padding; row num_items + 1 is the [MASK] token (BERT4Rec).

    Initialised from normal(0, 0.02) as in the reference SASRec/BERT4Rec code. ``init_from``: a finished run whose
    item vectors replace the rows of the items both know (matched by raw id; done by
    :func:`recforge.run.item_init.init_item_tables` once the data is read), e.g. LightGCN's for a SASRec.
    """

    argument_rules = EMBEDDER_RULES

    def __init__(self, num_items: int, hidden_size: int, init_std: float = 0.02, init_from: str | None = None) -> None:
        super().__init__()
        check_arguments(IdEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        self.num_items, self.hidden_size, self.init_from = num_items, hidden_size, init_from
        self.table = nn.Embedding(num_items + 2, hidden_size, padding_idx=0)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        return self.table(items)

    def output_weights(self) -> Tensor:
        """Embeddings of ids 0..num_items, used to score every item. (N+1, H)."""
        return self.table.weight[: self.num_items + 1]


# ------------------------------------------------------------------------------------------- item text


class UsesItemText:
    """Role: a part that needs every item's text, given in internal-id order (ids 1..N) once the data is read."""

    def attach_item_text(self, texts: Sequence[str], cache: EmbeddingCache | None = None) -> None:
        raise NotImplementedError


class ItemTextTable(nn.Module, UsesItemText):
    """Every item's text embedding, a (N+2, D) buffer saved in checkpoints (rows 0 and N+1 stay zero).

    Frozen encoder: the table is filled once (through the on-disk cache) and never changes. Fine-tuned encoder
    (LoRA): in training, the items of each batch are re-encoded with gradient (and their rows updated); before
    the next evaluation the whole table is re-encoded. Built with ``text_dim`` only, it is filled by
    :meth:`attach_text_embeddings`.
    """

    def __init__(self, num_items: int, text_encoder: TextEncoder | None = None, text_dim: int | None = None) -> None:
        super().__init__()
        if text_encoder is None and text_dim is None:
            raise ValueError("an item text table needs a text_encoder or a text_dim")
        dim = text_encoder.dim if text_encoder is not None else int(text_dim)  # type: ignore[arg-type]
        if text_dim is not None and text_dim != dim:
            raise RecforgeError(f"item_embedder.text_dim={text_dim} differs from the text encoder's size {dim}.")
        self.num_items, self.dim = num_items, dim
        self.fine_tunes = text_encoder is not None and text_encoder.trainable
        self.register_buffer("table", torch.zeros(num_items + 2, dim))  # (N+2, D)
        self.register_buffer("input_ids", torch.zeros(0, 0, dtype=torch.long), persistent=False)  # (N+2, T)
        self.register_buffer("attention_mask", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        if self.fine_tunes:
            self.encoder = text_encoder  # trained: its LoRA weights are parameters of the model
        else:  # used once to fill the table; not a submodule, so never moved, trained or saved
            object.__setattr__(self, "frozen_encoder", text_encoder)
        self.ready = False  # True once attached or loaded from a checkpoint
        self._fresh: tuple[Tensor, Tensor] | None = None  # (ids, embeddings with gradient) of the last batch
        self._stale = False  # the encoder changed since the table was last encoded in full
        self.register_load_state_dict_post_hook(_mark_ready)

    @property
    def text_encoder(self) -> TextEncoder | None:
        return self.encoder if self.fine_tunes else self.frozen_encoder

    def attach_item_text(self, texts: Sequence[str], cache: EmbeddingCache | None = None) -> None:
        """Encode ``texts`` of ids 1..N (a frozen encoder through ``cache``) and fill the table."""
        from recforge.models.text_cache import cached_encode

        encoder = self.text_encoder
        if encoder is None:
            raise ValueError("this item text table was built with text_dim only; use attach_text_embeddings")
        if len(texts) != self.num_items:
            raise ValueError(f"{len(texts)} item texts given for {self.num_items} items")
        self.attach_text_embeddings(cached_encode(encoder, texts, cache))  # LoRA starts as the base model
        if self.fine_tunes:
            tokens = encoder.tokenize(texts)  # (N, T) each
            empty = torch.zeros_like(tokens["input_ids"][:1])  # (1, T): padding and [MASK] rows
            self.input_ids = torch.cat([empty, tokens["input_ids"], empty]).to(self.table.device)
            self.attention_mask = torch.cat([empty, tokens["attention_mask"], empty]).to(self.table.device)

    def attach_text_embeddings(self, embeddings: Tensor) -> None:
        """embeddings: (N, D) of item ids 1..N."""
        if tuple(embeddings.shape) != (self.num_items, self.dim):
            expected = (self.num_items, self.dim)
            raise ValueError(f"item text embeddings of shape {tuple(embeddings.shape)}, expected {expected}")
        with torch.no_grad():
            self.table.zero_()
            self.table[1:self.num_items + 1] = embeddings.to(self.table)
        self.ready, self._stale, self._fresh = True, False, None

    def _training_rows(self) -> bool:
        return self.fine_tunes and self.training and torch.is_grad_enabled()

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> text embeddings (..., D); ids 0 and N+1 give zeros."""
        if self.training and not self.ready:
            raise RuntimeError("item text embeddings were never attached; call attach_item_text before training")
        if not self._training_rows():
            return self.table[items]  # (..., D)
        ids, inverse = torch.unique(items, return_inverse=True)  # (K,) sorted
        real = (ids > 0) & (ids <= self.num_items)  # (K,)
        fresh = self._encode(ids[real])  # (K', D) with gradient
        with torch.no_grad():
            self.table[ids[real]] = fresh.detach()
        self._fresh, self._stale = (ids[real], fresh), True
        rows = self.table[ids].index_put((real.nonzero()[:, 0],), fresh)  # (K, D)
        return rows[inverse]  # (..., D)

    def all_rows(self) -> Tensor:
        """Text embeddings of ids 0..N (N+1, D); in fine-tuning, the last batch's rows carry gradient."""
        table = self.table[: self.num_items + 1]
        if self._training_rows() and self._fresh is not None:
            ids, fresh = self._fresh
            return table.index_put((ids,), fresh)  # (N+1, D), out of place
        if self.fine_tunes and not self.training and self._stale:
            self.refresh()
        return table

    def refresh(self) -> None:
        """Re-encode every item with the current (fine-tuned) encoder."""
        assert self.fine_tunes and self.input_ids.numel(), "refresh needs a fine-tuned encoder and attached texts"
        rows = slice(1, self.num_items + 1)
        embeddings = self.encoder.embed_tokens(self.input_ids[rows], self.attention_mask[rows])  # (N, D)
        with torch.no_grad():
            self.table[rows] = embeddings.to(self.table)
        self._stale, self._fresh = False, None

    def freeze(self) -> None:
        """Keep the current table and drop the fine-tuned encoder (an export needs only the table)."""
        if self.fine_tunes:
            if self._stale and self.input_ids.numel():
                self.refresh()
            del self.encoder
            self.fine_tunes, self._fresh, self._stale = False, None, False
            object.__setattr__(self, "frozen_encoder", None)

    def _encode(self, ids: Tensor) -> Tensor:
        """Differentiable embeddings (K, D) of item ids (K,) from their stored tokens."""
        if ids.numel() == 0:
            return self.table[:0]
        mask = self.attention_mask[ids]  # (K, T)
        width = int(mask.sum(1).max())
        return self.encoder(self.input_ids[ids, :width], mask[:, :width])  # (K, D)


def _mark_ready(module: ItemTextTable, incompatible_keys: Any) -> None:
    module.ready, module._stale, module._fresh = True, False, None


def _linear(in_size: int, out_size: int, init_std: float, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_size, out_size, bias=bias)
    nn.init.normal_(layer.weight, std=init_std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _zero_padding_row(weights: Tensor) -> Tensor:
    """(N+1, H) with row 0 set to zero, out of place (gradient flows to the other rows)."""
    keep = torch.ones(weights.shape[0], 1, device=weights.device, dtype=weights.dtype)
    keep[0] = 0
    return weights * keep


class TextEmbedding(ItemEmbedder):
    """Items as their text embeddings projected to H: a Linear (or, with ``mlp_hidden``, a two-layer MLP).

    ``projection=False`` uses the text embeddings as they are (H = D, nothing trained: the content-based model).
    Padding is zero; the [MASK] token is a learned vector (zero without projection).
    """

    argument_rules = EMBEDDER_RULES

    def __init__(self, num_items: int, hidden_size: int, text_encoder: TextEncoder | None = None,
                 text_dim: int | None = None, projection: bool = True, mlp_hidden: int | None = None,
                 init_std: float = 0.02) -> None:
        super().__init__()
        check_arguments(TextEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        self.text = ItemTextTable(num_items, text_encoder, text_dim)
        self.num_items, self.hidden_size = num_items, hidden_size
        dim = self.text.dim
        if not projection:
            if hidden_size != dim:
                raise RecforgeError(
                    f"item_embedder.hidden_size={hidden_size} must equal the text embedding size {dim} with "
                    "item_embedder.projection=false; set it to that size or turn the projection on."
                )
            self.project: nn.Module = nn.Identity()
            self.register_buffer("mask_vector", torch.zeros(hidden_size))
        else:
            self.project = (_linear(dim, hidden_size, init_std) if mlp_hidden is None else nn.Sequential(
                _linear(dim, mlp_hidden, init_std), nn.GELU(), _linear(mlp_hidden, hidden_size, init_std)))
            self.mask_vector = nn.Parameter(torch.randn(hidden_size) * init_std)

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        x = self.project(self.text(items))  # (..., H)
        x = torch.where((items == self.mask_token).unsqueeze(-1), self.mask_vector, x)  # (..., H)
        return x * (items > 0).unsqueeze(-1).to(x.dtype)

    def output_weights(self) -> Tensor:
        """(N+1, H): projected text embeddings of ids 0..N, row 0 zero."""
        return _zero_padding_row(self.project(self.text.all_rows()))


# ------------------------------------------------------------------------------------------- id + text


class Fusion(nn.Module):
    """Role: an item's id vector (..., H) and text embedding (..., D) -> one vector (..., H). Built by
    :class:`HybridEmbedding` with (hidden_size, text_dim, init_std); the config chooses the class by ``_target_``
    (the ``fusion`` group: sum, concat, gate)."""

    def forward(self, ids: Tensor, text: Tensor) -> Tensor:
        raise NotImplementedError


class SumFusion(Fusion):
    """id + W text."""

    def __init__(self, hidden_size: int, text_dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.project = _linear(text_dim, hidden_size, init_std, bias=False)

    def forward(self, ids: Tensor, text: Tensor) -> Tensor:
        """ids: (..., H), text: (..., D) -> (..., H)."""
        return ids + self.project(text)


class ConcatFusion(Fusion):
    """W [id; text] + b."""

    def __init__(self, hidden_size: int, text_dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.project = _linear(hidden_size + text_dim, hidden_size, init_std)

    def forward(self, ids: Tensor, text: Tensor) -> Tensor:
        return self.project(torch.cat([ids, text], dim=-1))  # (..., H)


class GateFusion(Fusion):
    """g * id + (1 - g) * t with t = W text and g = sigmoid(W_g [id; t] + b_g) per dimension."""

    def __init__(self, hidden_size: int, text_dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.project = _linear(text_dim, hidden_size, init_std, bias=False)
        self.gate = _linear(2 * hidden_size, hidden_size, init_std)

    def forward(self, ids: Tensor, text: Tensor) -> Tensor:
        t = self.project(text)  # (..., H)
        g = torch.sigmoid(self.gate(torch.cat([ids, t], dim=-1)))  # (..., H)
        return g * ids + (1 - g) * t


class HasIdAndContent:
    """Role: an embedder with a learned id table and content vectors per item (text, attributes, ...), so a cold
    item's never-trained id row can be imputed from its content neighbours (``NextItemModule.cold_id_neighbours``)."""

    def id_and_content(self) -> tuple[IdEmbedding, Tensor] | None:
        """The id embedder and content vectors (N+1, D) of ids 0..N; None when there is no id or no content."""
        raise NotImplementedError


class HybridEmbedding(ItemEmbedder, HasIdAndContent):
    """An id vector and a text embedding per item, fused into H by ``fusion`` (a :class:`Fusion` class or a
    partial of one, called with (hidden_size, text_dim, init_std)).

    Padding is zero; the [MASK] token is the id table's learned row fused with a zero text.
    """

    # the fusion is a config node chosen by the fusion group, never a name (item_embedder.fusion=gate was the old way)
    argument_rules = rule_table(**EMBEDDER_RULES, fusion=Expect(
        "a fusion chosen with the fusion group (fusion=sum, concat or gate)", lambda v: not isinstance(v, str)))

    def __init__(self, num_items: int, hidden_size: int, text_encoder: TextEncoder | None = None,
                 text_dim: int | None = None, fusion: Callable[[int, int, float], Fusion] = SumFusion,
                 init_std: float = 0.02) -> None:
        super().__init__()
        check_arguments(HybridEmbedding, "item_embedder", hidden_size=hidden_size, init_std=init_std)
        self.ids = IdEmbedding(num_items, hidden_size, init_std)
        self.text = ItemTextTable(num_items, text_encoder, text_dim)
        self.fusion = fusion(hidden_size, self.text.dim, init_std)
        self.num_items, self.hidden_size = num_items, hidden_size

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        x = self.fusion(self.ids(items), self.text(items))  # (..., H)
        return x * (items > 0).unsqueeze(-1).to(x.dtype)

    def output_weights(self) -> Tensor:
        """(N+1, H): fused vectors of ids 0..N, row 0 zero."""
        return _zero_padding_row(self.fusion(self.ids.output_weights(), self.text.all_rows()))

    def id_and_content(self) -> tuple[IdEmbedding, Tensor]:
        """The id table and the text embeddings (N+1, D)."""
        return self.ids, self.text.table[: self.num_items + 1]


def text_neighbour_rows(rows: Tensor, text: Tensor, cold: Tensor, k: int) -> Tensor:
    """For every cold item, the mean of ``rows`` of the ``k`` warm items whose text embedding is the most
    cosine-similar to its own: a never-trained id row replaced by what its nearest warm items learned.

    rows: (N+1, H) id rows of ids 0..N; text: (N+1, D) text embeddings; cold: (N+1,) bool. Returns (C, H) in the
    order of ``cold.nonzero()``. Padding (id 0) and cold items are never neighbours.
    """
    unit = torch.nn.functional.normalize(text.float(), dim=1)  # (N+1, D)
    sim = unit[cold] @ unit.T  # (C, N+1)
    excluded = cold.clone()
    excluded[0] = True
    sim[:, excluded] = float("-inf")
    neighbours = sim.topk(min(k, int((~excluded).sum())), dim=1).indices  # (C, k)
    return rows[neighbours].mean(dim=1)  # (C, H)
