"""Dense item vectors computed elsewhere (image, audio, text embeddings), read from a file and mapped to item ids.

Two formats: ``.npy`` (a 2-D float array, one row per item) with an id file of one raw item id per line, in row
order; or ``.parquet`` with a raw item id column and a list column holding each item's vector. Every problem is
one sentence naming the file and, where there is one, the row: rows of different dimension, NaN or infinite
values, an id file whose length differs from the array's, a repeated id, no id matching an item of the dataset.
Ids that match no item are counted and logged; items without a vector are counted and logged (the embedder gives
them a learned default vector).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recforge.errors import RecforgeError

log = logging.getLogger(__name__)


def read_item_vectors(path: str | Path, ids_path: str | Path | None = None, id_column: str = "item",
                      vector_column: str = "vector") -> tuple[list[str], np.ndarray]:
    """Raw item ids and their vectors (V, D) float32, validated."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise RecforgeError(f"item vector file {path} does not exist.")
    if path.suffix == ".npy":
        if ids_path is None:
            raise RecforgeError(f"item vector file {path} is a .npy array; set item_vectors.ids_path to a file of "
                                "one raw item id per line, in row order.")
        vectors = _read_npy(path)
        ids = _read_ids(Path(ids_path).expanduser().resolve(), len(vectors), path)
    elif path.suffix == ".parquet":
        ids, vectors = _read_parquet(path, id_column, vector_column)
    else:
        raise RecforgeError(f"item vector file {path} has the suffix '{path.suffix}', expected .npy or .parquet.")
    _check_values(path, ids, vectors)
    return ids, vectors


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays (rows of different lengths) need pickle, which is never loaded
        raise RecforgeError(f"item vector file {path} is not a 2-D numeric array ({exc}); rows of different "
                            "dimension cannot be stored in one .npy array.") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise RecforgeError(f"item vector file {path} holds a {array.ndim}-D {array.dtype} array, expected a 2-D "
                            "float array (one row per item).")
    return array.astype(np.float32)


def _read_ids(ids_path: Path, rows: int, path: Path) -> list[str]:
    if not ids_path.is_file():
        raise RecforgeError(f"item id file {ids_path} of {path} does not exist.")
    ids = [line.strip() for line in ids_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(ids) != rows:
        raise RecforgeError(f"item id file {ids_path} lists {len(ids)} ids but {path} has {rows} rows "
                            "(expected one id per row).")
    return ids


def _read_parquet(path: Path, id_column: str, vector_column: str) -> tuple[list[str], np.ndarray]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    absent = [name for name in (id_column, vector_column) if name not in table.column_names]
    if absent:
        raise RecforgeError(f"item vector file {path} has no column '{absent[0]}' (columns: "
                            f"{', '.join(table.column_names)}); set item_vectors.id_column / vector_column.")
    column = table[vector_column].combine_chunks()
    if not hasattr(column, "flatten"):
        raise RecforgeError(f"item vector file {path}: column '{vector_column}' is {column.type}, expected a list "
                            "of floats per row.")
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)  # (V,)
    ids = [str(v) for v in table[id_column].to_pylist()]
    nulls = np.flatnonzero(lengths < 0)
    if len(nulls):
        raise RecforgeError(f"item vector file {path}: row {nulls[0]} (item {ids[nulls[0]]!r}) has no vector.")
    if len(lengths) == 0:
        raise RecforgeError(f"item vector file {path} has no rows.")
    differ = np.flatnonzero(lengths != lengths[0])
    if len(differ):
        row = int(differ[0])
        raise RecforgeError(f"item vector file {path}: row {row} (item {ids[row]!r}) has dimension "
                            f"{int(lengths[row])}, row 0 has {int(lengths[0])}; every vector needs the same one.")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return ids, values.reshape(len(ids), int(lengths[0]))


def _check_values(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        row = int(bad[0])
        raise RecforgeError(f"item vector file {path}: row {row} (item {ids[row]!r}) has a NaN or infinite value "
                            f"({len(bad)} such rows).")
    seen: dict[str, int] = {}
    for row, raw in enumerate(ids):
        first = seen.setdefault(raw, row)
        if first != row:
            raise RecforgeError(f"item vector file {path}: row {row} repeats item {raw!r} of row {first}.")


def map_item_vectors(ids: Sequence[str], vectors: np.ndarray, item_ids: Sequence[Any],
                     source: str = "the item vector file") -> tuple[np.ndarray, np.ndarray]:
    """Vectors of internal ids 1..N (N, D) and which of them the file has (N,) bool; ``item_ids[i]`` is the raw id
    of internal id i (entry 0 padding). Rows absent from the file are zero."""
    internal = {str(raw): i for i, raw in enumerate(list(item_ids)[1:])}
    rows = np.array([internal.get(str(raw), -1) for raw in ids], dtype=np.int64)  # (V,) internal index or -1
    matched = rows >= 0
    if not matched.any():
        raise RecforgeError(f"{source}: none of its {len(ids)} item ids matches an item of the dataset "
                            f"(e.g. {ids[0]!r} against {str(item_ids[1])!r}); are they raw dataset ids?")
    out = np.zeros((len(internal), vectors.shape[1]), dtype=np.float32)  # (N, D)
    out[rows[matched]] = vectors[matched]
    present = np.zeros(len(internal), dtype=bool)
    present[rows[matched]] = True
    log.info("%s: %d of %d vectors match an item (%d ids match none); %d of %d items have no vector (a learned "
             "default vector)", source, int(matched.sum()), len(ids), int((~matched).sum()),
             int((~present).sum()), len(internal))
    return out, present
