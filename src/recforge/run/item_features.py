"""Give every model part that uses item attributes (:class:`~recforge.models.item_sources.UsesItemAttributes`)
its attribute bags, and every part that reads item vectors by raw id (:class:`~recforge.models.item_sources.UsesItemIds`)
the raw id of every internal id."""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from recforge.data.item_attributes import attribute_bags
from recforge.errors import RecforgeError
from recforge.models.item_sources import UsesItemAttributes, UsesItemIds

log = logging.getLogger(__name__)


def attach_item_features(module: nn.Module, datamodule: Any, column: str | None = None) -> int:
    """Attach attributes (from ``column`` of the reader's item table; None: the reader's ``attribute_column``)
    and raw item ids to the parts that use them; returns how many parts. Nothing is read when none does."""
    attribute_parts = [part for part in module.modules() if isinstance(part, UsesItemAttributes)]
    id_parts = [part for part in module.modules() if isinstance(part, UsesItemIds)]
    if not attribute_parts and not id_parts:
        return 0
    item_ids = datamodule.load_sequences().item_ids  # entry 0 is padding
    if attribute_parts:
        reader = datamodule.reader
        column = column or getattr(reader, "attribute_column", None)
        if column is None:
            raise RecforgeError(f"dataset '{datamodule.name}' names no attribute column; set item_attributes.column "
                                "to a column of its item table.")
        bags = attribute_bags(reader.item_text(), column, item_ids, f"dataset '{datamodule.name}' item table")
        for part in attribute_parts:
            part.attach_item_attributes(bags)
    for part in id_parts:
        part.attach_item_ids(item_ids)
    log.info("item attributes attached to %d part(s), item vectors to %d", len(attribute_parts), len(id_parts))
    return len(attribute_parts) + len(id_parts)
