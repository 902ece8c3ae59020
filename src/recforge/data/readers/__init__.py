"""Dataset readers: turn raw interaction files into one standard DataFrame.

Every reader is a small class built by Hydra from YAML (``_target_``), so its
constructor takes only plain values.  Each offers:

* ``read()`` -> DataFrame with exactly the columns ``user`` (str), ``item`` (str),
  ``timestamp`` (int64) and ``rating`` (float64, NaN when the source has none),
  rows in file order, nothing filtered or deduplicated;
* ``item_text()`` -> DataFrame with ``item``, ``text`` and raw extra fields, or None;
* ``source_files()`` -> the files read, for the caller's cache key;
* ``has_timestamps`` -> whether ``timestamp`` holds times in seconds (MovieLens, a table with ``time_col``) or
  only an order (S3-Rec positions, a table's row numbers); a global time split needs times.

Every problem a user can cause (missing folder or file, malformed line,
non-numeric id, wrong delimiter, missing column, empty file, broken JSON) is
raised as a one-sentence :class:`~recforge.errors.RecforgeError` naming the file
and line, row or column.  Bulk parsing is done by pandas/pyarrow and validated
vectorised; the raw file is re-scanned line by line only to describe an error.

Blank lines (empty or whitespace only) are skipped by every reader: no format here
gives them a meaning, and skipping them never moves a value into another field.
Line numbers in messages count every physical line, blank ones included.
Duplicate rows are kept here; the datamodule removes exact repeats and counts them
(``duplicates_removed`` in the dataset statistics).
"""
from __future__ import annotations

import urllib.request  # noqa: F401  (kept: readers.urllib.request.urlopen is patched in tests)

from recforge.data.readers._parsing import COLUMNS, check_files
from recforge.data.readers.clothing import ClothingReviews
from recforge.data.readers.download import MOVIELENS_SHA256, download_movielens
from recforge.data.readers.movielens import (
    ML100K_GENRES,
    MovieLens1M,
    MovieLens20M,
    MovieLens100K,
)
from recforge.data.readers.s3rec import S3RecSequences
from recforge.data.readers.table import InteractionTable

__all__ = [
    "COLUMNS",
    "ClothingReviews",
    "ML100K_GENRES",
    "MOVIELENS_SHA256",
    "InteractionTable",
    "MovieLens1M",
    "MovieLens20M",
    "MovieLens100K",
    "S3RecSequences",
    "check_files",
    "download_movielens",
]
