"""Top-K from a faiss inner-product index over the item table, for large catalogues (``--index``).

A dot-product decoder scores item i as <hidden, e_i>, so its top-K is a maximum-inner-product search over the
item vectors e_1..e_N. ``exact`` (the default) scores every item with the model as before; ``flat`` is faiss'
exhaustive ``IndexFlatIP`` (exact, for checking); ``hnsw`` (``IndexHNSWFlat``, M=32, efConstruction 128) and ``ivf``
(``IndexIVFFlat`` over round(sqrt(N)) k-means lists) are approximate and faster on large catalogues, tuned by
``ef_search`` and ``nprobe``. Their scores are exact inner products of the items they return.

History masking: an index cannot leave items out, so each query asks for K + (its distinct excluded history
items) candidates and drops the excluded ones; at least K remain whenever the catalogue has them, as on the exact
path (fewer when fewer are left).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct

IndexKind = Literal["exact", "flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[IndexKind, ...] = ("exact", "flat", "hnsw", "ivf")
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 128


@dataclass(frozen=True)
class IndexSpec:
    """Which top-K path to use and its search-time knobs (``ef_search`` for hnsw, ``nprobe`` for ivf)."""

    kind: IndexKind = "exact"
    ef_search: int = 128
    nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise RecforgeError(f"index {self.kind!r} is unknown; expected one of {', '.join(INDEX_KINDS)}.")
        if self.ef_search < 1 or self.nprobe < 1:
            raise RecforgeError(f"--index-ef-search ({self.ef_search}) and --index-nprobe ({self.nprobe}) must be at least 1.")


class ItemIndex:
    """A faiss index over item vectors (N, H): row r is item r + 1."""

    def __init__(self, vectors: Tensor, spec: IndexSpec) -> None:
        data = np.ascontiguousarray(vectors.detach().float().numpy())  # (N, H)
        self.spec, self.num_items = spec, data.shape[0]
        self.index = build_faiss(data, spec)

    def search(self, hidden: Tensor, count: int) -> tuple[Tensor, Tensor]:
        """The ``count`` best items of each row: (scores (B, C) float32, item ids (B, C) int64, 0 where the index
        found fewer)."""
        query = np.ascontiguousarray(hidden.detach().float().numpy())  # (B, H)
        count = min(count, self.num_items)
        params = None
        if self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.spec.ef_search, count))
        elif self.spec.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.spec.nprobe)
        scores, rows = self.index.search(query, count, params=params)  # (B, C), (B, C)
        return torch.from_numpy(scores), torch.from_numpy(rows).long() + 1  # -1 (not found) -> 0


def build_faiss(data: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """The faiss index of ``spec.kind`` holding ``data`` (N, H) float32."""
    n, h = data.shape
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(h)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(h, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif spec.kind == "ivf":
        nlist = max(1, min(n, round(math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(h), h, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(data)
    else:
        raise ValueError(f"no faiss index for kind {spec.kind!r}")
    index.add(data)
    return index


def item_vectors(decoder: torch.nn.Module) -> Tensor:
    """Item vectors e_1..e_N (N, H) of a dot-product decoder; other decoders cannot be searched by inner product."""
    if not isinstance(decoder, DotProduct):
        raise RecforgeError(f"--index needs a dot-product decoder (decoder=dot) but this run's decoder is "
                            f"{type(decoder).__name__}; use --index exact.")
    with torch.inference_mode():
        return decoder.item_embedder.output_weights()[1:].clone()  # (N, H)


def build_index(decoder: torch.nn.Module, spec: IndexSpec) -> ItemIndex | None:
    """The index ``spec`` asks for over the decoder's items, or None for exact scoring."""
    return None if spec.kind == "exact" else ItemIndex(item_vectors(decoder), spec)


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """The --index options shared by recforge-recommend and recforge-serve."""
    parser.add_argument("--index", choices=INDEX_KINDS, default="exact",
                        help="top-K by scoring every item (exact, default) or by a faiss inner-product index: "
                             "flat (exact), hnsw or ivf (approximate, for large catalogues)")
    parser.add_argument("--index-ef-search", type=int, default=IndexSpec.ef_search,
                        help=f"hnsw: candidates kept while searching, more is slower and closer to exact (default {IndexSpec.ef_search})")
    parser.add_argument("--index-nprobe", type=int, default=IndexSpec.nprobe,
                        help=f"ivf: lists searched, more is slower and closer to exact (default {IndexSpec.nprobe})")


def index_spec(args: argparse.Namespace) -> IndexSpec:
    return IndexSpec(kind=args.index, ef_search=args.index_ef_search, nprobe=args.index_nprobe)
