"""One text per internal item id, from a reader's ``item_text()`` frame and an optional template.

A template is Python ``str.format`` over the frame's columns, e.g. ``"{title} ({year}). Genres: {genres}"`` for
MovieLens or ``"{attributes}"`` for S3-Rec files. Every field is inserted as text: a missing value (NaN, None)
becomes ``""``, an integral float ``1995.0`` becomes ``"1995"``, and a list of ids (S3-Rec ``attributes``) becomes
attribute tokens ``"attr_12 attr_97"``. Without a template the reader's own ``text`` column is used.

Items of the catalogue that the frame does not list get the placeholder ``missing`` (default ``""``, an empty
text: the encoder gives every such item the same vector, so a text-only model cannot tell them apart; a hybrid
embedder still can). Their number is logged. Rows listing the same item twice (one row per review, say) are
joined with ``" | "`` in frame order.
"""
from __future__ import annotations

import logging
import math
import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recforge.errors import RecforgeError

log = logging.getLogger(__name__)
MISSING_TEXT = ""
ATTRIBUTE_PREFIX = "attr_"
ROW_SEPARATOR = " | "


def attribute_tokens(values: Iterable[Any], prefix: str = ATTRIBUTE_PREFIX) -> str:
    """Attribute ids as space-separated tokens: [12, 97] -> 'attr_12 attr_97'."""
    return " ".join(f"{prefix}{value}" for value in values)


def template_fields(template: str) -> list[str]:
    """The column names a template uses, in order of first use: '{title} ({year})' -> ['title', 'year']."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise RecforgeError(f"item_text.template={template!r} is not a valid format string ({exc}).") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = name.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise RecforgeError(
                f"item_text.template={template!r} has a positional field '{{{name}}}'; name a column, e.g. '{{title}}'."
            )
        if base not in fields:
            fields.append(base)
    return fields


def field_text(value: Any, prefix: str = ATTRIBUTE_PREFIX) -> str:
    """One field value as text: missing -> '', 1995.0 -> '1995', [12, 97] -> 'attr_12 attr_97'."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return attribute_tokens(value, prefix)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def render_texts(frame: pd.DataFrame, template: str | None = None, attribute_prefix: str = ATTRIBUTE_PREFIX,
                 source: str = "the item text table") -> dict[str, str]:
    """Raw item id -> text: the template over each row (the ``text`` column without one); repeated ids joined."""
    fields = ["text"] if template is None else template_fields(template)
    absent = [name for name in fields if name not in frame.columns]
    if absent:
        have = ", ".join(map(str, frame.columns))
        if template is None:
            raise RecforgeError(f"{source} has no 'text' column (fields: {have}); set item_text.template.")
        raise RecforgeError(
            f"item_text.template={template!r} uses field '{absent[0]}', which {source} does not have (fields: {have})."
        )
    columns = [[field_text(v, attribute_prefix) for v in frame[name].tolist()] for name in fields]
    texts: dict[str, list[str]] = {}
    for raw, values in zip(frame["item"].astype(str).tolist(), zip(*columns)):
        row = dict(zip(fields, values))
        texts.setdefault(raw, []).append(row["text"] if template is None else _format(template, row))
    return {raw: ROW_SEPARATOR.join(parts) for raw, parts in texts.items()}


def _format(template: str, row: dict[str, str]) -> str:
    try:
        return template.format(**row)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise RecforgeError(
            f"item_text.template={template!r} cannot be applied to the item fields ({type(exc).__name__}: {exc}); "
            "fields are inserted as text, so use only text format specs."
        ) from None


def item_texts(frame: pd.DataFrame | None, item_ids: Sequence[str], template: str | None = None,
               missing: str = MISSING_TEXT, attribute_prefix: str = ATTRIBUTE_PREFIX,
               source: str = "the item text table") -> list[str]:
    """Texts of internal ids 1..N in order; ``item_ids[i]`` is the raw id of internal id i (entry 0 padding)."""
    if frame is None:
        raise RecforgeError(
            f"{source} is absent (the dataset's reader has no item text); configure the dataset's item text file "
            "or use item_embedder=id."
        )
    by_raw = render_texts(frame, template, attribute_prefix, source)
    raw_ids = [str(raw) for raw in list(item_ids)[1:]]
    texts = [by_raw.get(raw) for raw in raw_ids]
    absent = sum(text is None for text in texts)
    if absent:
        log.info("%d of %d items have no row in %s; they get the text %r", absent, len(texts), source, missing)
    return [missing if text is None else text for text in texts]


def dataset_item_texts(datamodule: Any, template: str | None = None, missing: str = MISSING_TEXT,
                       attribute_prefix: str = ATTRIBUTE_PREFIX) -> list[str]:
    """Texts of a SequenceDataModule's internal ids 1..N from its reader's ``item_text()``."""
    seqs = datamodule.load_sequences()
    frame = datamodule.reader.item_text()
    source = f"dataset '{datamodule.name}' item text"
    return item_texts(frame, seqs.item_ids, template, missing, attribute_prefix, source)
