"""Dataset readers: turn raw interaction files into one standard DataFrame.

Every reader is a small class built by Hydra from YAML (``_target_``), so its
constructor takes only plain values.  Each offers:

* ``read()`` -> DataFrame with exactly the columns ``user`` (str), ``item`` (str),
  ``timestamp`` (int64) and ``rating`` (float64, NaN when the source has none),
  rows in file order, nothing filtered or deduplicated;
* ``item_text()`` -> DataFrame with ``item``, ``text`` and raw extra fields, or None;
* ``source_files()`` -> the files read, for the caller's cache key.

Every problem a user can cause (missing folder or file, malformed line,
non-numeric id, wrong delimiter, missing column, empty file, broken JSON) is
raised as a one-sentence :class:`~recforge.errors.RecforgeError` naming the file
and line, row or column.  Bulk parsing is done by pandas/pyarrow and validated
vectorised; the raw file is re-scanned line by line only to describe an error.
"""
from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from recforge.errors import RecforgeError

__all__ = [
    "COLUMNS",
    "ML100K_GENRES",
    "MOVIELENS_SHA256",
    "InteractionTable",
    "MovieLens100K",
    "MovieLens1M",
    "MovieLens20M",
    "S3RecSequences",
    "check_files",
    "download_movielens",
]

COLUMNS = ["user", "item", "timestamp", "rating"]

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]

# sha256 of the official GroupLens zips, as registered (and verified on every
# download) by tensorflow_datasets in tensorflow_datasets/url_checksums/movielens.txt.
# A None entry means "unknown": download_movielens then refuses to fetch it.
MOVIELENS_SHA256: dict[str, str | None] = {
    "ml-100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    "ml-1m": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    "ml-20m": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
}
_MOVIELENS_FILES = {
    "ml-100k": ["u.data", "u.item"],
    "ml-1m": ["ratings.dat", "movies.dat"],
    "ml-20m": ["ratings.csv", "movies.csv"],
}
_MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
_RETRIES = 3
_RETRY_DELAY_S = 2.0
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)

# Field kinds for headerless integer files: "id" = digits kept as str, "int", "float".
_Fields = list[tuple[str, str]]
_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


# --------------------------------------------------------------------------- helpers


def _abs(path: Path) -> Path:
    """Absolute, resolved form of a path for messages (works for missing paths)."""
    return Path(path).expanduser().resolve()


def _clip(text: str, width: int = 60) -> str:
    """Strip the newline and cut a line to about ``width`` characters for a message."""
    text = text.rstrip("\r\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def _count(n: int, noun: str) -> str:
    """'1 field' / '3 fields'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show_sep(sep: str) -> str:
    """A delimiter as the user would type it in YAML ('\\t' rather than a raw tab)."""
    return "'" + sep.replace("\t", "\\t") + "'"


def check_files(
    directory: Path, names: list[str], dataset: str, required: list[str] | None = None
) -> None:
    """Raise RecforgeError unless ``directory`` exists and holds the ``required`` files.

    ``names`` are all files of the dataset (listed in the message); ``required``
    (default: all of ``names``) are those that must exist for this operation.
    """
    directory = _abs(Path(directory))
    expected = f"expected files {', '.join(names)}"
    if not directory.is_dir():
        raise RecforgeError(
            f"dataset '{dataset}': no such directory {directory} ({expected}; set dataset.root "
            f"or the RECFORGE_DATA environment variable to the folder that holds {directory.name}/)"
        )
    for name in names if required is None else required:
        path = directory / name
        if not path.is_file():
            state = "is not a regular file" if path.exists() else "is missing"
            raise RecforgeError(f"dataset '{dataset}': {path} {state} ({expected} in {directory})")


def _check_file(path: Path, dataset: str) -> Path:
    """Check that a single-file dataset exists; return its absolute path."""
    path = _abs(path)
    check_files(path.parent, [path.name], dataset)
    return path


def _frame(user: object, item: object, timestamp: object, rating: object) -> pd.DataFrame:
    """Assemble the standard interaction frame with the contract's dtypes."""
    frame = pd.DataFrame({"user": user, "item": item, "timestamp": timestamp, "rating": rating})
    return frame.astype({"user": "str", "item": "str", "timestamp": "int64", "rating": "float64"})


def _is_blank(line: str, sep: str) -> bool:
    """Whether pandas' ``skip_blank_lines`` drops this line (whitespace other than ``sep``)."""
    return line.strip(" \t\f\v\r\n".replace(sep, "")) == ""


def _locate_row(path: Path, row: int, sep: str, header: bool, encoding: str) -> tuple[int, str]:
    """1-based line number and text of 0-based data ``row`` (blank lines skipped as pandas does)."""
    seen = -1 if header else 0
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        for lineno, line in enumerate(handle, 1):
            if _is_blank(line, sep[0]):
                continue
            if seen == row:
                return lineno, line
            seen += 1
    return 0, ""


def _first_bad(mask: pd.Series | np.ndarray) -> int | None:
    """Position of the first True in a boolean mask, or None."""
    values = np.asarray(mask, dtype=bool)
    return int(values.argmax()) if values.any() else None


# ----------------------------------------------------------- headerless integer files


class _LineError(Exception):
    """Internal: pandas rejected a physical line (too many fields); carries its number."""

    def __init__(self, lineno: int) -> None:
        super().__init__(lineno)
        self.lineno = lineno


def _read_str_frame(path: Path, sep: str, n: int, encoding: str, header: bool) -> pd.DataFrame:
    """Read a delimited file as str columns; raise _LineError for a line with extra fields."""
    try:
        return pd.read_csv(
            path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL if header else csv.QUOTE_NONE, encoding=encoding,
            skip_blank_lines=True, engine="c",
        )
    except pd.errors.EmptyDataError:
        raise RecforgeError(f"{path} is empty (expected {n} fields per line)") from None
    except pd.errors.ParserError as exc:
        match = re.search(r"in line (\d+)", str(exc))
        if match is None:
            raise RecforgeError(f"{path} could not be parsed ({_clip(str(exc), 100)})") from None
        raise _LineError(int(match.group(1))) from None
    except UnicodeDecodeError as exc:
        raise RecforgeError(f"{path} is not valid {encoding} text ({exc.reason})") from None


def _logical_fields(raw: pd.DataFrame, n: int, multichar: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Pick the ``n`` fields from the parsed columns; flag rows with a wrong field layout.

    A '::' file is read with sep ':' so fields sit at even positions with empty
    columns between them; columns past the last field must be empty too.
    """
    positions = list(range(0, 2 * n - 1, 2)) if multichar else list(range(n))
    width = positions[-1] + 1
    raw = raw.set_axis(range(raw.shape[1]), axis=1)
    if raw.shape[1] < width:
        wrong = np.ones(len(raw), dtype=bool)
        raw = raw.reindex(columns=range(width), fill_value="")
    else:
        fillers = [c for c in range(raw.shape[1]) if c not in positions]
        wrong = (raw.iloc[:, fillers] != "").any(axis=1).to_numpy(dtype=bool)
    fields = raw.iloc[:, positions]
    return fields.set_axis(range(n), axis=1), wrong


def _convert(raw: pd.DataFrame, fields: _Fields) -> tuple[dict[str, pd.Series], np.ndarray]:
    """Convert str columns to their kinds vectorised; return columns and a bad-row mask."""
    out: dict[str, pd.Series] = {}
    bad = np.zeros(len(raw), dtype=bool)
    for pos, (name, kind) in enumerate(fields):
        col = raw.iloc[:, pos]
        if kind in ("id", "str"):
            if kind == "id":
                bad |= ~col.str.fullmatch(r"[0-9]+").fillna(False).to_numpy(dtype=bool)
            out[name] = col
            continue
        num = pd.to_numeric(col, errors="coerce").astype("float64")
        wrong = ~np.isfinite(num.to_numpy())
        if kind == "int":
            wrong |= (num.to_numpy() % 1) != 0
        bad |= wrong
        out[name] = num.fillna(0).astype("int64") if kind == "int" else num
    return out, bad


def _describe_line(line: str, sep: str, fields: _Fields) -> str:
    """Explain why one raw line does not match ``fields`` (field count or a bad value)."""
    parts = line.rstrip("\r\n").split(sep)
    if len(parts) != len(fields):
        names = f" ({', '.join(name for name, _ in fields)})" if len(fields) <= 6 else ""
        found = _count(len(parts), "field")
        return f"has {found}, expected {len(fields)}{names} separated by {_show_sep(sep)}"
    for value, (name, kind) in zip(parts, fields):
        if kind == "id" and not re.fullmatch(r"[0-9]+", value):
            return f"has {name} {value!r}, expected an integer id"
        if kind in ("int", "float") and not _is_number(value, kind == "int"):
            return f"has {name} {value!r}, expected {'an integer' if kind == 'int' else 'a number'}"
    return "is malformed"


def _is_number(value: str, integer: bool) -> bool:
    """Whether a raw field parses as a finite number (a whole one if ``integer``)."""
    try:
        number = float(value)
    except ValueError:
        return False
    return bool(np.isfinite(number)) and (not integer or number.is_integer())


def _line_error(path: Path, lineno: int, line: str, sep: str, fields: _Fields) -> RecforgeError:
    """The RecforgeError for one bad physical line."""
    reason = _describe_line(line, sep, fields)
    return RecforgeError(f"{path}: line {lineno} {reason}: {_clip(line)!r}")


def _line_text(path: Path, lineno: int, encoding: str) -> str:
    """Text of 1-based physical line ``lineno`` (only used to describe an error)."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        for number, line in enumerate(handle, 1):
            if number == lineno:
                return line
    return ""


def _parse_rows(
    path: Path, sep: str, fields: _Fields, *, header: bool = False, encoding: str = "latin-1"
) -> pd.DataFrame:
    """Parse a delimited file of ``fields`` strictly; the first bad line raises RecforgeError."""
    try:
        raw = _read_str_frame(path, sep[0], len(fields), encoding, header)
    except _LineError as err:
        line = _line_text(path, err.lineno, encoding)
        raise _line_error(path, err.lineno, line, sep, fields) from None
    if len(raw) == 0:
        raise RecforgeError(f"{path} has no data lines (expected {len(fields)} fields per line)")
    raw, wrong = _logical_fields(raw, len(fields), multichar=len(sep) > 1)
    out, bad = _convert(raw, fields)
    row = _first_bad(bad | wrong)
    if row is not None:
        lineno, line = _locate_row(path, row, sep, header, encoding)
        raise _line_error(path, lineno, line, sep, fields)
    return pd.DataFrame(out)


def _check_header(path: Path, expected: list[str], sep: str = ",") -> None:
    """Raise unless the CSV header starts with exactly the ``expected`` column names."""
    try:
        head = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8", encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise RecforgeError(f"{path} is empty (expected a header {sep.join(expected)})") from None
    found = [str(c) for c in head.columns]
    if found[: len(expected)] != expected:
        raise RecforgeError(
            f"{path}: header has columns {', '.join(found)}, expected {', '.join(expected)}"
        )


# ---------------------------------------------------------------- MovieLens item text


def _movie_text(
    ids: pd.Series, titles: pd.Series, genres: pd.Series, year_hint: pd.Series | None = None
) -> pd.DataFrame:
    """Item text frame for MovieLens: 'Title (1995). Genres: A, B' plus raw columns."""
    genres = genres.where(genres != "(no genres listed)", "")
    listed = titles + ". Genres: " + genres.str.replace("|", ", ", regex=False)
    text = listed.where(genres != "", titles)
    year = pd.to_numeric(titles.str.extract(_YEAR_IN_TITLE, expand=False), errors="coerce")
    if year_hint is not None:
        hint = year_hint.str.extract(r"(\d{4})\s*$", expand=False)
        year = year.fillna(pd.to_numeric(hint, errors="coerce"))
    return pd.DataFrame(
        {"item": ids, "text": text, "title": titles, "year": year.astype("Int64"), "genres": genres}
    ).astype({"item": "str", "text": "str", "title": "str", "genres": "str"})


def _read_100k_items(path: Path) -> pd.DataFrame:
    """Parse u.item (pipe-separated, latin-1, 19 genre flags) into the item text frame."""
    fields: _Fields = [("movie id", "id")]
    fields += [(name, "str") for name in ("title", "release date", "video", "url")]
    fields += [(genre, "int") for genre in ML100K_GENRES]
    df = _parse_rows(path, "|", fields)
    flags = df[ML100K_GENRES].to_numpy()
    row = _first_bad(~np.isin(flags, (0, 1)).all(axis=1))
    if row is not None:
        lineno, line = _locate_row(path, row, "|", False, "latin-1")
        raise RecforgeError(
            f"{path}: line {lineno} has a genre flag other than 0 or 1: {_clip(line)!r}"
        )
    names = np.array(ML100K_GENRES, dtype=object)
    genres = pd.Series(["|".join(names[mask]) for mask in flags == 1], dtype="str")
    return _movie_text(df["movie id"], df["title"], genres, year_hint=df["release date"])


def _read_dat_movies(path: Path) -> pd.DataFrame:
    """Parse ML-1M movies.dat (``MovieID::Title::Genres``, latin-1) into the item text frame."""
    ids, titles, genres = [], [], []
    with open(path, encoding="latin-1") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            head, _, rest = line.rstrip("\r\n").partition("::")
            title, sep, genre = rest.rpartition("::")
            if not sep or not head.isdigit() or not title:
                raise RecforgeError(
                    f"{path}: line {lineno} is not 'MovieID::Title::Genres' with an integer "
                    f"MovieID: {_clip(line)!r}"
                )
            ids.append(head)
            titles.append(title)
            genres.append(genre)
    if not ids:
        raise RecforgeError(f"{path} is empty (expected lines 'MovieID::Title::Genres')")
    ids_s, titles_s, genres_s = (pd.Series(v, dtype="str") for v in (ids, titles, genres))
    return _movie_text(ids_s, titles_s, genres_s)


# --------------------------------------------------------------------------- MovieLens


class _GroupLens:
    """Shared by the MovieLens readers: optional download of the official zip (sha256-verified)."""

    DATASET: str
    path: Path
    download: bool

    def _fetch_if_asked(self) -> None:
        if not self.download:
            return
        if self.path.name != self.DATASET:
            raise RecforgeError(
                f"dataset.reader.download=true needs a folder named {self.DATASET}, got {_abs(self.path)}"
            )
        download_movielens(self.DATASET, str(self.path.parent))


class MovieLens100K(_GroupLens):
    """MovieLens 100K: ``u.data`` (user, item, rating, timestamp; tabs) and ``u.item``."""

    DATASET = "ml-100k"
    FILES = ["u.data", "u.item"]
    _FIELDS: _Fields = [("user", "id"), ("item", "id"), ("rating", "int"), ("timestamp", "int")]

    def __init__(self, path: str, download: bool = False) -> None:
        self.path, self.download = Path(path).expanduser(), download

    def read(self) -> pd.DataFrame:
        """All ratings in file order."""
        self._fetch_if_asked()
        check_files(self.path, self.FILES, self.DATASET, required=["u.data"])
        df = _parse_rows(_abs(self.path / "u.data"), "\t", self._FIELDS)
        return _frame(df["user"], df["item"], df["timestamp"], df["rating"])

    def item_text(self) -> pd.DataFrame:
        """Movies with text 'Toy Story (1995). Genres: Animation, ...', title, year, genres."""
        check_files(self.path, self.FILES, self.DATASET, required=["u.item"])
        return _read_100k_items(_abs(self.path / "u.item"))

    def source_files(self) -> list[Path]:
        """u.data, plus u.item when present."""
        return _existing(self.path, self.FILES)


class MovieLens1M(_GroupLens):
    """MovieLens 1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``."""

    DATASET = "ml-1m"
    FILES = ["ratings.dat", "movies.dat"]
    _FIELDS: _Fields = [
        ("UserID", "id"), ("MovieID", "id"), ("Rating", "int"), ("Timestamp", "int")
    ]

    def __init__(self, path: str, download: bool = False) -> None:
        self.path, self.download = Path(path).expanduser(), download

    def read(self) -> pd.DataFrame:
        """All ratings in file order."""
        self._fetch_if_asked()
        check_files(self.path, self.FILES, self.DATASET, required=["ratings.dat"])
        df = _parse_rows(_abs(self.path / "ratings.dat"), "::", self._FIELDS)
        return _frame(df["UserID"], df["MovieID"], df["Timestamp"], df["Rating"])

    def item_text(self) -> pd.DataFrame:
        """Movies with text 'Title (year). Genres: A, B', title, year, genres ('A|B')."""
        check_files(self.path, self.FILES, self.DATASET, required=["movies.dat"])
        return _read_dat_movies(_abs(self.path / "movies.dat"))

    def source_files(self) -> list[Path]:
        """ratings.dat, plus movies.dat when present."""
        return _existing(self.path, self.FILES)


class MovieLens20M(_GroupLens):
    """MovieLens 20M: ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``.

    Parsed with pyarrow using explicit types (seconds for 20M rows); if that
    fails, a strict str parse finds and reports the first bad line.
    """

    DATASET = "ml-20m"
    FILES = ["ratings.csv", "movies.csv"]
    _HEADER = ["userId", "movieId", "rating", "timestamp"]
    _FIELDS: _Fields = [
        ("userId", "id"), ("movieId", "id"), ("rating", "float"), ("timestamp", "int")
    ]

    def __init__(self, path: str, download: bool = False) -> None:
        self.path, self.download = Path(path).expanduser(), download

    def read(self) -> pd.DataFrame:
        """All ratings in file order."""
        self._fetch_if_asked()
        check_files(self.path, self.FILES, self.DATASET, required=["ratings.csv"])
        path = _abs(self.path / "ratings.csv")
        _check_header(path, self._HEADER)
        table = _fast_ratings(path, self._HEADER)
        if table is None:
            df = _parse_rows(path, ",", self._FIELDS, header=True, encoding="utf-8")
            return _frame(df["userId"], df["movieId"], df["timestamp"], df["rating"])
        user, item = (
            pd.Series(pc.cast(table[col], pa.string()), dtype="str") for col in self._HEADER[:2]
        )
        return _frame(user, item, table["timestamp"].to_numpy(), table["rating"].to_numpy())

    def item_text(self) -> pd.DataFrame:
        """Movies with text 'Title (year). Genres: A, B', title, year, genres ('A|B')."""
        check_files(self.path, self.FILES, self.DATASET, required=["movies.csv"])
        path = _abs(self.path / "movies.csv")
        _check_header(path, ["movieId", "title", "genres"])
        raw = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace"
        )
        row = _first_bad(~raw["movieId"].str.fullmatch(r"[0-9]+").to_numpy(dtype=bool))
        if row is not None:
            value = raw["movieId"].iloc[row]
            raise RecforgeError(
                f"{path}: data row {row + 1} has movieId {value!r}, expected an integer"
            )
        return _movie_text(raw["movieId"], raw["title"], raw["genres"])

    def source_files(self) -> list[Path]:
        """ratings.csv, plus movies.csv when present."""
        return _existing(self.path, self.FILES)


def _fast_ratings(path: Path, header: list[str]) -> pa.Table | None:
    """Typed pyarrow parse of ratings.csv; None if anything is off (caller re-parses strictly)."""
    types = dict(zip(header, (pa.int64(), pa.int64(), pa.float64(), pa.int64())))
    options = pacsv.ConvertOptions(column_types=types, include_columns=header)
    try:
        table = pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError):
        return None
    if table.num_rows == 0 or any(table[c].null_count for c in header):
        return None
    ids_ok = all(pc.min(table[c]).as_py() >= 0 for c in header[:2])
    finite = pc.all(pc.is_finite(table["rating"])).as_py()
    return table if ids_ok and finite else None


def _existing(directory: Path, names: list[str]) -> list[Path]:
    """Absolute paths of the first (required) file and of the others that exist."""
    paths = [_abs(directory / name) for name in names]
    return [paths[0]] + [p for p in paths[1:] if p.is_file()]


# ------------------------------------------------------------------------------ S3Rec


class S3RecSequences:
    """S3-Rec sequence files: one line ``user item1 item2 ...`` per user, time-ordered.

    ``timestamp`` is the position within the user's line (0, 1, ...); ``rating`` is NaN.
    ``attributes_path`` optionally names the ``<name>_item2attributes.json`` file
    (item id -> list of attribute ids) used by :meth:`item_text`.
    """

    def __init__(self, path: str, attributes_path: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.attributes_path = Path(attributes_path).expanduser() if attributes_path else None

    def read(self) -> pd.DataFrame:
        """All interactions, user by user, in file order."""
        path = _check_file(self.path, self.path.stem)
        users, items, counts = _parse_sequences(path)
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
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens:
                continue
            joined = "".join(tokens)
            if len(tokens) < 2 or not (joined.isascii() and joined.isdigit()):
                _bad_sequence_line(path, lineno, line, tokens)
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
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
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
        if not isinstance(values, list) or not all(type(v) is int for v in values):
            shown = _clip(json.dumps(values), 40)
            raise RecforgeError(
                f"{path}: item {item!r} maps to {shown}, expected a list of integer attribute ids"
            )
    return data


# --------------------------------------------------------------------- generic tables


class InteractionTable:
    """A generic interaction table: CSV/TSV (``sep``) or Parquet (suffix .parquet/.pq).

    ``time_col`` may hold integer epoch seconds or ISO dates (converted to epoch
    seconds); None uses the row order.  ``rating_col`` None gives NaN ratings.
    ``item_text_path`` optionally names an item table (read like ``path``: Parquet
    by suffix, else delimited by ``sep``) keyed by ``item_col`` whose
    ``item_text_cols`` (default: all other columns) form the text.
    """

    def __init__(
        self,
        path: str,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = "timestamp",
        rating_col: str | None = None,
        sep: str = ",",
        item_text_path: str | None = None,
        item_text_cols: list[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.user_col, self.item_col = user_col, item_col
        self.time_col, self.rating_col, self.sep = time_col, rating_col, sep
        self.item_text_path = Path(item_text_path).expanduser() if item_text_path else None
        self.item_text_cols = list(item_text_cols) if item_text_cols is not None else None

    def read(self) -> pd.DataFrame:
        """All interactions in file order."""
        path = _check_file(self.path, self.path.stem)
        wanted = [c for c in (self.user_col, self.item_col, self.time_col, self.rating_col) if c]
        df = _read_table(path, wanted, self.sep)
        user = _id_column(df[self.user_col], path, self.user_col)
        item = _id_column(df[self.item_col], path, self.item_col)
        if self.time_col is None:
            stamps = np.arange(len(df), dtype=np.int64)
        else:
            stamps = _epoch_seconds(df[self.time_col], path, self.time_col)
        rating: float | np.ndarray = np.nan
        if self.rating_col is not None:
            rating = _rating_column(df[self.rating_col], path, self.rating_col)
        return _frame(user.to_numpy(), item.to_numpy(), stamps, rating)

    def item_text(self) -> pd.DataFrame | None:
        """Items with text 'col: value. col2: value' from ``item_text_path``; None without it."""
        if self.item_text_path is None:
            return None
        path = _check_file(self.item_text_path, self.item_text_path.stem)
        cols = self.item_text_cols
        if cols is None:
            cols = [c for c in _table_columns(path, self.sep) if c != self.item_col]
        df = _read_table(path, [self.item_col, *cols], self.sep)
        out = pd.DataFrame({"item": _id_column(df[self.item_col], path, self.item_col).to_numpy()})
        values = {c: df[c].astype("str").fillna("").to_numpy() for c in cols}
        out["text"] = _join_text(values)
        for col in cols:
            if col not in ("item", "text"):
                out[col] = values[col]
        return out.astype("str")

    def source_files(self) -> list[Path]:
        """The interaction table, plus the item text table when configured."""
        files = [_abs(self.path)]
        return files + ([_abs(self.item_text_path)] if self.item_text_path is not None else [])


def _is_parquet(path: Path) -> bool:
    """Parquet is chosen by suffix; anything else is delimited text."""
    return path.suffix.lower() in (".parquet", ".pq")


def _table_columns(path: Path, sep: str) -> list[str]:
    """Column names of a CSV/Parquet table, with delimiter hints on mismatch."""
    if _is_parquet(path):
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            reason = _clip(str(exc), 80)
            raise RecforgeError(f"{path} is not a readable Parquet file ({reason})") from None
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, dtype=str, encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise RecforgeError(f"{path} is empty (expected a header row and data rows)") from None
    except pd.errors.ParserError as exc:
        raise _unparsed(path, sep, exc) from None
    return [str(c) for c in header.columns]


def _unparsed(path: Path, sep: str, exc: Exception) -> RecforgeError:
    """RecforgeError for a delimited file pandas cannot tokenize (line number when known)."""
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if match is None:
        reason = _clip(str(exc), 80)
        return RecforgeError(f"{path} could not be parsed with sep {_show_sep(sep)} ({reason})")
    expected, lineno, saw = match.groups()
    return RecforgeError(
        f"{path}: line {lineno} has {saw} fields, expected {expected} separated by {_show_sep(sep)}"
    )


def _require_columns(path: Path, found: list[str], wanted: list[str], sep: str) -> None:
    """Raise listing the columns found (and a delimiter hint) unless all ``wanted`` exist."""
    missing = [c for c in wanted if c not in found]
    if not missing:
        return
    hint = ""
    if len(found) == 1 and not _is_parquet(path):
        guess = next((d for d in ("\t", ";", ",", "|") if d != sep and d in found[0]), None)
        if guess is not None:
            hint = f"; looks like the delimiter is {_show_sep(guess)}, set sep"
    shown = ", ".join(repr(c) for c in found)
    noun = "column" if len(missing) == 1 else "columns"
    raise RecforgeError(
        f"{path} has no {noun} {', '.join(repr(c) for c in missing)} (found columns {shown}{hint})"
    )


def _read_table(path: Path, wanted: list[str], sep: str) -> pd.DataFrame:
    """Read the ``wanted`` columns (CSV as str, Parquet as stored); error on no rows."""
    _require_columns(path, _table_columns(path, sep), wanted, sep)
    try:
        if _is_parquet(path):
            df = pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))
        else:
            df = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True,
                encoding_errors="replace",
            )
    except pd.errors.ParserError as exc:
        raise _unparsed(path, sep, exc) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise RecforgeError(f"{path} could not be read ({_clip(str(exc), 100)})") from None
    if len(df) == 0:
        raise RecforgeError(f"{path} has a header but no data rows")
    return df


def _id_column(col: pd.Series, path: Path, name: str) -> pd.Series:
    """Raw ids as str (whole floats written as ints); empty or null ids raise."""
    if pd.api.types.is_float_dtype(col) and col.notna().all() and (col % 1 == 0).all():
        col = col.astype("int64")
    text = col.astype("str")
    row = _first_bad(col.isna().to_numpy() | (text.str.strip() == "").to_numpy(dtype=bool))
    if row is not None:
        raise RecforgeError(
            f"{path}: column '{name}' is empty at data row {row + 1}, expected an id"
        )
    return text


def _rating_column(col: pd.Series, path: Path, name: str) -> np.ndarray:
    """Ratings as float64; a non-numeric value raises naming column, value and row."""
    if pd.api.types.is_bool_dtype(col):
        col = col.astype("float64")
    values = pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()
    row = _first_bad(~np.isfinite(values))
    if row is not None:
        raise RecforgeError(
            f"{path}: column '{name}' has {col.iloc[row]!r} at data row {row + 1}, "
            "expected a number"
        )
    return values


def _epoch_seconds(col: pd.Series, path: Path, name: str) -> np.ndarray:
    """Timestamps as int64 epoch seconds from numbers, datetimes or ISO date strings."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return _datetime_seconds(col)
    num = col if pd.api.types.is_numeric_dtype(col) else pd.to_numeric(col, errors="coerce")
    if not pd.api.types.is_bool_dtype(num) and np.isfinite(num.astype("float64").to_numpy()).all():
        if pd.api.types.is_integer_dtype(num):
            return num.to_numpy(dtype=np.int64)  # exact, even beyond 2**53
        return np.floor(num.to_numpy(dtype=np.float64)).astype(np.int64)
    text = col.astype("str").str.strip()
    dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    row = _first_bad(dates.isna().to_numpy())
    if row is not None:
        raise RecforgeError(
            f"{path}: column '{name}' has {col.iloc[row]!r} at data row {row + 1}, "
            "expected integer epoch seconds or an ISO date such as 2020-01-31T12:00:00"
        )
    return _datetime_seconds(dates)


def _datetime_seconds(dates: pd.Series) -> np.ndarray:
    """Whole epoch seconds of a datetime Series (naive values are taken as UTC)."""
    if dates.dt.tz is None:
        dates = dates.dt.tz_localize("UTC")
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def _join_text(values: dict[str, np.ndarray]) -> list[str]:
    """Per item: the single column's value, or 'col: value. col2: value' skipping empties."""
    cols = list(values)
    if len(cols) == 1:
        return [str(v) for v in values[cols[0]]]
    rows = zip(*(values[c] for c in cols))
    return [". ".join(f"{c}: {v}" for c, v in zip(cols, row) if str(v).strip()) for row in rows]


# --------------------------------------------------------------------------- download


def download_movielens(
    name: str, root: str, url: str | None = None, sha256: str | None = None
) -> Path:
    """Download, verify (sha256) and extract a GroupLens MovieLens zip into ``root/name``.

    Returns ``root/name``; does nothing when its files are already there.  ``url``
    and ``sha256`` override the official address and checksum (used by tests).
    Extraction happens in a temporary folder inside ``root`` that is renamed
    into place, so a failure never leaves a half-written dataset behind.
    """
    files = _MOVIELENS_FILES.get(name)
    if files is None:
        known = ", ".join(_MOVIELENS_FILES)
        raise RecforgeError(f"unknown MovieLens dataset '{name}', expected one of {known}")
    target = _abs(Path(root)) / name
    if _already_there(name, target, files):
        return target
    url = url or _MOVIELENS_URL.format(name=name)
    expected = sha256 or MOVIELENS_SHA256.get(name)
    if expected is None:
        raise RecforgeError(
            f"dataset '{name}': the sha256 of {url} is unknown, so it cannot be verified; "
            f"download it yourself and place the files {', '.join(files)} in {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _download_into(name, url, expected.lower(), target, files)
    return target


def _already_there(name: str, target: Path, files: list[str]) -> bool:
    """True if ``target`` holds all files; raise if it exists without them (never overwrite)."""
    missing = [f for f in files if not (target / f).is_file()]
    if missing and target.exists():
        raise RecforgeError(
            f"dataset '{name}': {target} exists but lacks {', '.join(missing)}; "
            "remove it to download again or add the files by hand"
        )
    return not missing


def _download_into(name: str, url: str, expected: str, target: Path, files: list[str]) -> None:
    """Fetch, verify and extract in a temp folder next to ``target``, then rename it in."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=target.parent))
    manual = f"place the files {', '.join(files)} in {target} instead"
    try:
        archive = tmp / f"{name}.zip"
        digest = _fetch(url, archive, manual)
        if digest != expected:
            raise RecforgeError(
                f"dataset '{name}': {url} has sha256 {digest}, expected {expected} "
                f"(corrupt or changed download); {manual}"
            )
        extracted = _extract(archive, tmp / "extract", name, files, manual)
        try:
            os.replace(extracted, target)
        except OSError as exc:
            if not all((target / f).is_file() for f in files):
                raise RecforgeError(
                    f"dataset '{name}': could not move the files into {target} ({exc.strerror})"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(url: str, dest: Path, manual: str) -> str:
    """Download ``url`` to ``dest`` with retries on network errors; return its sha256."""
    last: BaseException | None = None
    for attempt in range(_RETRIES + 1):
        try:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest()
        except ValueError as exc:  # not a URL at all: retrying cannot help
            raise RecforgeError(f"cannot download {url!r} ({exc}); {manual}") from None
        except _NETWORK_ERRORS as exc:
            last = exc
            if attempt < _RETRIES:
                time.sleep(_RETRY_DELAY_S * (attempt + 1))
    reason = getattr(last, "reason", None) or last
    raise RecforgeError(
        f"could not download {url} after {_RETRIES + 1} attempts ({reason}; no network?); {manual}"
    )


def _extract(archive: Path, dest: Path, name: str, files: list[str], manual: str) -> Path:
    """Extract the zip into ``dest`` and return its ``name/`` folder holding ``files``."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(dest)
    except zipfile.BadZipFile:
        raise RecforgeError(
            f"dataset '{name}': the downloaded file is not a valid zip archive; {manual}"
        ) from None
    folder = dest / name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise RecforgeError(f"dataset '{name}': the archive has no {name}/{missing[0]}; {manual}")
    return folder
