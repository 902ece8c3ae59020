"""Categorical attributes of every internal item id, from a column of a reader's ``item_text()`` frame.

A field is either a list of integer attribute ids (S3-Rec ``attributes`` from ``*_item2attributes.json``), a text
of ``|``-separated category names (MovieLens ``genres`` "Animation|Comedy") or one value (synthetic ``category``).
A missing value (NaN, None, "") means no attributes. The distinct values of the catalogue are numbered 1..A in
sorted order (0 is padding); an item listed on several rows gets the union of its rows' attributes, in order.
A list holding anything but integers is an error naming the item and the value.
"""
from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from recforge.errors import RecforgeError

log = logging.getLogger(__name__)
SEPARATOR = "|"


@dataclass(frozen=True)
class AttributeBags:
    """bags: (N, L) attribute indices 1..A of internal ids 1..N, padded with 0; vocabulary[a - 1] is the raw value
    of index a; missing: how many items have no attribute."""

    bags: Tensor
    vocabulary: list[Any]
    missing: int

    @property
    def num_attributes(self) -> int:
        return len(self.vocabulary)


def field_attributes(value: Any, item: str, column: str, source: str) -> list[Any]:
    """One field as a list of raw attribute values: [12, 97] -> [12, 97]; 'Action|Drama' -> ['Action', 'Drama']."""
    if isinstance(value, (list, tuple, np.ndarray)):
        bad = [v for v in value if not isinstance(v, numbers.Integral) or isinstance(v, bool)]
        if bad:
            raise RecforgeError(
                f"{source}: item {item!r} has the attribute {bad[0]!r} in column '{column}', expected a list of "
                "integer attribute ids."
            )
        return [int(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return []
    if isinstance(value, str):
        return [name.strip() for name in value.split(SEPARATOR) if name.strip()]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [int(value)]
    raise RecforgeError(
        f"{source}: item {item!r} has {value!r} in column '{column}', expected integer attribute ids or "
        f"'{SEPARATOR}'-separated names."
    )


def attribute_bags(frame: pd.DataFrame | None, column: str, item_ids: Sequence[Any],
                   source: str = "the item table") -> AttributeBags:
    """Attribute bags of internal ids 1..N; ``item_ids[i]`` is the raw id of internal id i (entry 0 padding)."""
    if frame is None:
        raise RecforgeError(f"{source} is absent (the dataset's reader has no item table); use another item_embedder.")
    if column not in frame.columns:
        have = ", ".join(map(str, frame.columns))
        raise RecforgeError(f"{source} has no column '{column}' (columns: {have}); set item_attributes.column.")
    by_raw: dict[str, list[Any]] = {}
    for raw, value in zip(frame["item"].astype(str).tolist(), frame[column].tolist()):
        values = by_raw.setdefault(raw, [])
        values.extend(v for v in field_attributes(value, raw, column, source) if v not in values)
    raw_ids = [str(raw) for raw in list(item_ids)[1:]]
    lists = [by_raw.get(raw, []) for raw in raw_ids]
    vocabulary = sorted({v for values in lists for v in values}, key=lambda v: (isinstance(v, str), v))
    if not vocabulary:
        raise RecforgeError(f"{source}: no item of the catalogue has a value in column '{column}'.")
    index = {value: i + 1 for i, value in enumerate(vocabulary)}
    width = max(len(values) for values in lists)
    bags = torch.zeros(len(lists), width, dtype=torch.long)  # (N, L)
    for row, values in enumerate(lists):
        bags[row, : len(values)] = torch.tensor([index[v] for v in values], dtype=torch.long)
    missing = sum(not values for values in lists)
    log.info("%d attributes over %d items from column '%s' of %s; %d items have none (a learned default vector)",
             len(vocabulary), len(lists), column, source, missing)
    return AttributeBags(bags, vocabulary, missing)
