"""S3-Rec sequence files (``user item1 item2 ...``) and their item2attributes JSON."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.data.readers._parsing import _abs, _check_file, _clip, _frame
from recforge.errors import RecforgeError

# ------------------------------------------------------------------------------ S3Rec


class S3RecSequences:
    """S3-Rec sequence files: one line ``user item1 item2 ...`` per user, time-ordered.

    ``timestamp`` is the position within the user's line (0, 1, ...); ``rating`` is NaN.
    ``attributes_path`` optionally names the ``<name>_item2attributes.json`` file
    (item id -> list of attribute ids) used by :meth:`item_text`.

    Decisions on messy input: blank lines are skipped (the format has one user per non-blank line, so
    nothing can shift); ids must be integers; a user on two lines is an error (positions would restart and
    interleave two histories). The attributes file is optional for id-only models, but when it exists
    :meth:`read` validates it, so a broken file fails before training rather than at export.
    """

    has_timestamps = False  # the timestamp column is only each item's position in its line
    attribute_column = "attributes"  # item_embedder=attributes: the item2attributes ids of item_text()

    def __init__(self, path: str, attributes_path: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.attributes_path = Path(attributes_path).expanduser() if attributes_path else None

    def read(self) -> pd.DataFrame:
        """All interactions, user by user, in file order."""
        path = _check_file(self.path, self.path.stem)
        users, items, counts = _parse_sequences(path)
        if self.attributes_path is not None and self.attributes_path.is_file():
            _load_attributes(_abs(self.attributes_path))
        total = len(items)
        offsets = np.repeat(np.cumsum(counts) - counts, counts)
        positions = np.arange(total, dtype=np.int64) - offsets
        return _frame(np.repeat(np.array(users, dtype=object), counts), items, positions, np.nan)

    def item_text(self) -> pd.DataFrame | None:
        """Items with text 'attributes: a12 a5' and the ``attributes`` list; None without a file."""
        if self.attributes_path is None:
            return None
        path = _check_file(self.attributes_path, self.path.stem)
        mapping = _load_attributes(path)
        items = list(mapping)
        attrs = [mapping[item] for item in items]
        text = ["attributes: " + " ".join(f"a{a}" for a in values) for values in attrs]
        frame = pd.DataFrame({"item": items, "text": text, "attributes": attrs})
        return frame.astype({"item": "str", "text": "str"})

    def source_files(self) -> list[Path]:
        """The sequence file, plus the attributes file when configured."""
        files = [_abs(self.path)]
        return files + ([_abs(self.attributes_path)] if self.attributes_path is not None else [])


def _parse_sequences(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """One pass over an S3-Rec file: users, flattened items and items per user."""
    users: list[str] = []
    items: list[str] = []
    counts: list[int] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens:
                continue
            joined = "".join(tokens)
            if len(tokens) < 2 or not (joined.isascii() and joined.isdigit()):
                _bad_sequence_line(path, lineno, line, tokens)
            first = seen.setdefault(tokens[0], lineno)
            if first != lineno:
                raise RecforgeError(
                    f"{path}: line {lineno} repeats user {tokens[0]} of line {first} "
                    "(expected one line 'user item1 item2 ...' per user)"
                )
            users.append(tokens[0])
            items.extend(tokens[1:])
            counts.append(len(tokens) - 1)
    if not users:
        raise RecforgeError(
            f"{path} is empty (expected lines 'user item1 item2 ...' of integer ids)"
        )
    return users, items, np.asarray(counts, dtype=np.int64)


def _bad_sequence_line(path: Path, lineno: int, line: str, tokens: list[str]) -> None:
    """Raise the RecforgeError describing one malformed S3-Rec line."""
    if len(tokens) < 2:
        reason = "has a user but no items"
    else:
        token = next(t for t in tokens if not (t.isascii() and t.isdigit()))
        reason = f"has the non-integer token {_clip(token, 20)!r}"
    raise RecforgeError(
        f"{path}: line {lineno} {reason} (expected 'user item1 item2 ...' of integer ids): "
        f"{_clip(line)!r}"
    )


def _load_attributes(path: Path) -> dict[str, list[int]]:
    """Load and validate an item2attributes JSON object (item id -> list of int attribute ids)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecforgeError(
            f"{path} is not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise RecforgeError(f"{path} is not valid UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise RecforgeError(
            f"{path} holds a JSON {type(data).__name__}, expected an object mapping "
            "item id to a list of attribute ids"
        )
    for item, values in data.items():
        if not (item.isascii() and item.isdigit()):
            raise RecforgeError(
                f"{path}:{_key_line(text, item)} key {_clip(item, 20)!r} is not an integer item id, expected an "
                "object mapping item id to a list of attribute ids"
            )
        if not isinstance(values, list) or not all(type(v) is int for v in values):
            shown = _clip(json.dumps(values), 40)
            raise RecforgeError(
                f"{path}:{_key_line(text, item)} item {item!r} maps to {shown}, expected a list of integer "
                "attribute ids"
            )
    return data


def _key_line(text: str, key: str) -> str:
    """' line N' of the first place ``key`` appears as an object key in JSON ``text`` ('' if not found)."""
    match = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    return f" line {text.count(chr(10), 0, match.start()) + 1}" if match else ""
