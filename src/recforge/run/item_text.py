"""Give every model part that uses item texts (:class:`~recforge.models.embedders.UsesItemText`) its texts."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from recforge.data.item_text import ATTRIBUTE_PREFIX, MISSING_TEXT, dataset_item_texts
from recforge.models.embedders import UsesItemText
from recforge.models.text_cache import EmbeddingCache

log = logging.getLogger(__name__)
CACHE_SUBDIR = "text_embeddings"


def text_parts(module: nn.Module) -> list[UsesItemText]:
    """The parts of ``module`` that need item texts (each once, however often it is shared)."""
    return [part for part in module.modules() if isinstance(part, UsesItemText)]


def attach_item_text(module: nn.Module, datamodule: Any, template: str | None = None, missing: str = MISSING_TEXT,
                     attribute_prefix: str = ATTRIBUTE_PREFIX, cache_dir: str | Path | None = None) -> int:
    """Read the datamodule's item texts and attach them to every part that uses them; returns how many parts.

    Nothing is read or loaded when no part uses item texts. Frozen embeddings are cached in
    ``<cache_dir>/text_embeddings`` (no cache without ``cache_dir``).
    """
    parts = text_parts(module)
    if not parts:
        return 0
    texts = dataset_item_texts(datamodule, template, missing, attribute_prefix)
    cache = EmbeddingCache(Path(cache_dir) / CACHE_SUBDIR) if cache_dir else None
    for part in parts:
        part.attach_item_text(texts, cache)
    log.info("item texts of %d items attached to %d part(s)", len(texts), len(parts))
    return len(parts)
