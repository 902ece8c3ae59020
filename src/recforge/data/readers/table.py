"""Generic CSV/TSV/Parquet interaction tables with configurable columns.

Delimited files are parsed by pandas (all columns as text) and validated vectorised; only when something is
wrong is the file re-scanned with the csv module to name the physical line (quoted fields may span lines,
blank lines are counted as an editor counts them). Parquet files have no lines: messages name the 1-based row.
"""
from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recforge.data.readers._parsing import (
    _abs,
    _check_file,
    _clip,
    _count,
    _first_bad,
    _frame,
    _show_sep,
)
from recforge.errors import RecforgeError

log = logging.getLogger(__name__)

_TIME_EXPECTED = "expected integer epoch seconds or an ISO date such as 2020-01-31T12:00:00"
_INT64_LIMIT = 2.0**63  # epoch seconds beyond this do not fit the int64 timestamp column


# --------------------------------------------------------------------- generic tables


class InteractionTable:
    """A generic interaction table: CSV/TSV (``sep``) or Parquet (suffix .parquet/.pq).

    ``time_col`` may hold integer epoch seconds or ISO dates (converted to epoch seconds), but one kind
    throughout; None uses the row order. ``rating_col`` None gives NaN ratings. ``item_text_path``
    optionally names an item table (read like ``path``: Parquet by suffix, else delimited by ``sep``) keyed
    by ``item_col`` whose ``item_text_cols`` (default: all other columns) form the text; when set,
    :meth:`read` validates it too, so a broken item table fails before training rather than at export.

    Decisions on messy input:

    * blank lines (empty or whitespace only) are skipped: they hold no interaction, and skipping them never
      moves a value into another column; line numbers in messages still count them;
    * every data line must have as many fields as the header: pandas would pad a short line with empty
      values, or silently take an extra leading field as the index and shift every column;
    * text must decode with ``encoding``: undecodable bytes are an error naming the line, never replaced
      (two ids differing only in such a byte would otherwise merge).
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
        encoding: str = "utf-8",
    ) -> None:
        self.path = Path(path).expanduser()
        self.user_col, self.item_col = user_col, item_col
        self.time_col, self.rating_col, self.sep = time_col, rating_col, _unescape(sep)
        self.item_text_path = Path(item_text_path).expanduser() if item_text_path else None
        self.item_text_cols = list(item_text_cols) if item_text_cols is not None else None
        self.encoding = encoding

    @property
    def has_timestamps(self) -> bool:
        """Whether the timestamp column holds times (``time_col`` set) rather than the row order."""
        return self.time_col is not None

    def read(self) -> pd.DataFrame:
        """All interactions in file order (and the item text table checked, when one is configured)."""
        path = _check_file(self.path, self.path.stem)
        keys = {"user_col": self.user_col, "item_col": self.item_col, "time_col": self.time_col,
                "rating_col": self.rating_col}
        df, rows = _read_table(path, [(key, col) for key, col in keys.items() if col], self.sep, self.encoding)
        user = _id_column(df[self.user_col], self.user_col, rows)
        item = _id_column(df[self.item_col], self.item_col, rows)
        if self.time_col is None:
            stamps = np.arange(len(df), dtype=np.int64)
        else:
            stamps = _epoch_seconds(df[self.time_col], self.time_col, rows)
        rating: float | np.ndarray = np.nan
        if self.rating_col is not None:
            rating = _rating_column(df[self.rating_col], self.rating_col, rows)
        if self.item_text_path is not None:
            self.item_text()
        return _frame(user.to_numpy(), item.to_numpy(), stamps, rating)

    def item_text(self) -> pd.DataFrame | None:
        """Items with text 'col: value. col2: value' from ``item_text_path``; None without it.

        A text column that is blank in every row, or an item listed twice, is an error; single items whose
        text columns are all blank keep an empty text (logged with their count).
        """
        if self.item_text_path is None:
            return None
        path = _check_file(self.item_text_path, self.item_text_path.stem)
        cols = self.item_text_cols
        if cols is None:
            cols = [c for c in _table_columns(path, self.sep, self.encoding) if c != self.item_col]
        if not cols:
            raise RecforgeError(
                f"{path} has no column besides item_col '{self.item_col}', expected item text columns "
                "(set dataset.reader.item_text_cols)"
            )
        wanted = [("item_col", self.item_col), *(("item_text_cols", c) for c in cols)]
        df, rows = _read_table(path, wanted, self.sep, self.encoding)
        ids = _id_column(df[self.item_col], self.item_col, rows)
        _check_unique(ids, self.item_col, rows)
        values = {c: _text_values(df[c], c, path) for c in cols}
        text = _join_text(values)
        _log_missing_text(text, cols, rows)
        out = pd.DataFrame({"item": ids.to_numpy(), "text": text})
        for col in cols:
            if col not in ("item", "text"):
                out[col] = values[col]
        return out.astype("str")

    def source_files(self) -> list[Path]:
        """The interaction table, plus the item text table when configured."""
        files = [_abs(self.path)]
        return files + ([_abs(self.item_text_path)] if self.item_text_path is not None else [])


def _unescape(sep: str) -> str:
    """A separator typed on the command line as '\\t' (Hydra keeps the backslash) means a tab."""
    return "\t" if sep == "\\t" else sep


# ------------------------------------------------------------------ locating rows for messages


@dataclass(frozen=True)
class _Rows:
    """Turns a 0-based data row of a read table into 'line N' (delimited) or 'row N' (Parquet) for messages."""

    path: Path
    sep: str
    encoding: str
    parquet: bool
    width: int  # fields in the header

    def where(self, row: int) -> str:
        if self.parquet:
            return f"row {row + 1}"
        return f"line {_record(self.path, self.sep, self.encoding, row)[0]}"

    def error(self, row: int, reason: str) -> RecforgeError:
        """'<path>: line N <reason>', or the field count of that line when it differs from the header's."""
        if self.parquet:
            return RecforgeError(f"{self.path}: row {row + 1} {reason}")
        lineno, fields = _record(self.path, self.sep, self.encoding, row)
        if len(fields) != self.width:
            return _width_error(self.path, lineno, len(fields), self.width, self.sep)
        return RecforgeError(f"{self.path}: line {lineno} {reason}")


def _records(path: Path, sep: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) of every non-blank record, the header first, as pandas splits them."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        if len(sep) != 1:  # multi-character separators have no quoting (pandas' python engine splits plainly)
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    yield lineno, line.rstrip("\r\n").split(sep)
            return
        reader = csv.reader(handle, delimiter=sep)
        start = 1
        for fields in reader:
            if fields and not (len(fields) == 1 and not fields[0].strip()):
                yield start, fields
            start = reader.line_num + 1


def _record(path: Path, sep: str, encoding: str, row: int) -> tuple[int, list[str]]:
    """First line number and fields of 0-based data ``row`` (the header is not a data row)."""
    for index, (lineno, fields) in enumerate(_records(path, sep, encoding)):
        if index == row + 1:
            return lineno, fields
    return 0, []


def _width_error(path: Path, lineno: int, found: int, width: int, sep: str) -> RecforgeError:
    return RecforgeError(
        f"{path}: line {lineno} has {_count(found, 'field')}, expected {width} like the header, "
        f"separated by {_show_sep(sep)}"
    )


def _first_wrong_width(path: Path, sep: str, encoding: str) -> RecforgeError | None:
    """The error for the first record whose field count differs from the header's, if any."""
    width = None
    for lineno, fields in _records(path, sep, encoding):
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            return _width_error(path, lineno, len(fields), width, sep)
    return None


def _unparsed(path: Path, sep: str, encoding: str, exc: Exception) -> RecforgeError:
    """RecforgeError for a delimited file pandas cannot tokenize, naming the first bad line."""
    if "EOF inside string" in str(exc):
        last = 0
        for last, _ in _records(path, sep, encoding):  # an unclosed quote swallows the rest: the last record
            pass
        return RecforgeError(
            f"{path}: line {last} opens a quoted field that is never closed, expected a closing '\"' "
            "(or remove the stray quote)"
        )
    wrong = _first_wrong_width(path, sep, encoding)
    if wrong is not None:
        return wrong
    return RecforgeError(f"{path} could not be parsed with sep {_show_sep(sep)} ({_clip(str(exc), 80)})")


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> RecforgeError:
    """RecforgeError naming the first line (and column) that is not valid text in ``encoding``."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as bad:
                return RecforgeError(
                    f"{path}: line {lineno} column {bad.start + 1} is not valid {encoding} text (byte "
                    f"0x{raw[bad.start]:02x}); save the file as {encoding} or name its encoding, e.g. "
                    "++dataset.reader.encoding=latin-1"
                )
    return RecforgeError(
        f"{path} is not valid {encoding} text ({exc.reason}); name its encoding with ++dataset.reader.encoding=..."
    )


# ------------------------------------------------------------------------- reading tables


def _is_parquet(path: Path) -> bool:
    """Parquet is chosen by suffix; anything else is delimited text."""
    return path.suffix.lower() in (".parquet", ".pq")


def _table_columns(path: Path, sep: str, encoding: str) -> list[str]:
    """Column names of a CSV/Parquet table."""
    if _is_parquet(path):
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            reason = _clip(str(exc), 80)
            raise RecforgeError(f"{path} is not a readable Parquet file ({reason})") from None
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, dtype=str, encoding=encoding,
                             engine="c" if len(sep) == 1 else "python")
    except pd.errors.EmptyDataError:
        raise RecforgeError(f"{path} is empty (expected a header row and data rows)") from None
    except pd.errors.ParserError as exc:
        raise _unparsed(path, sep, encoding, exc) from None
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None
    return [str(c) for c in header.columns]


def _require_columns(path: Path, found: list[str], wanted: list[tuple[str, str]], sep: str) -> None:
    """Raise naming the expected columns (by config key), those found and a delimiter hint, unless all exist."""
    missing = [col for _, col in wanted if col not in found]
    if not missing:
        return
    noun = "column" if len(missing) == 1 else "columns"
    shown = ", ".join(repr(c) for c in found)
    expected = ", ".join(f"{key} {col!r}" for key, col in wanted)
    if len(found) == 1 and not _is_parquet(path):
        guess = next((d for d in ("\t", ";", ",", "|", " ") if d != sep and d in found[0]), None)
        hint = f"it looks {_show_sep(guess)}-separated, so set dataset.reader.sep={_show_sep(guess)}" if guess \
            else "check dataset.reader.sep"
        raise RecforgeError(
            f"{path} has only 1 column {shown} when split with sep {_show_sep(sep)}, expected columns "
            f"{expected}; {hint}"
        )
    keys = ", ".join(dict.fromkeys(f"dataset.reader.{key}" for key, col in wanted if col in missing))
    raise RecforgeError(
        f"{path} has no {noun} {', '.join(repr(c) for c in missing)} (expected {expected}; found columns "
        f"{shown}); set {keys} to the file's column names"
    )


def _read_table(path: Path, wanted: list[tuple[str, str]], sep: str, encoding: str) -> tuple[pd.DataFrame, _Rows]:
    """The ``wanted`` columns (CSV as str, Parquet as stored) and a row locator; errors on no rows."""
    found = _table_columns(path, sep, encoding)
    _require_columns(path, found, wanted, sep)
    parquet = _is_parquet(path)
    if parquet:
        try:
            df = pd.read_parquet(path, columns=list(dict.fromkeys(col for _, col in wanted)))
        except (pa.ArrowInvalid, OSError) as exc:
            raise RecforgeError(f"{path} could not be read ({_clip(str(exc), 100)})") from None
    else:
        df = _read_delimited(path, sep, encoding)
    if len(df) == 0:
        raise RecforgeError(f"{path} has a header but no data rows")
    return df, _Rows(path, sep, encoding, parquet, len(found))


def _read_delimited(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    """All columns as str; a line with more or fewer fields than the header raises, naming it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True, index_col=False,
                encoding=encoding, engine="c" if len(sep) == 1 else "python",
            )
        except pd.errors.ParserError as exc:
            raise _unparsed(path, sep, encoding, exc) from None
        except UnicodeDecodeError as exc:
            raise _undecodable(path, encoding, exc) from None
    if any("does not match length of data" in str(w.message) for w in caught):
        raise _first_wrong_width(path, sep, encoding) or RecforgeError(
            f"{path}: some line has more fields than the header, separated by {_show_sep(sep)}"
        )
    return df


# ----------------------------------------------------------------------- column conversion


def _show(value: object) -> str:
    """A cell value for a message: strings quoted, numbers plain, missing values as 'an empty value'."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "an empty value"
    if isinstance(value, np.generic):
        value = value.item()
    return repr(_clip(value, 40) if isinstance(value, str) else value)


def _id_column(col: pd.Series, name: str, rows: _Rows) -> pd.Series:
    """Raw ids as str (whole floats written as ints); empty or null ids raise."""
    if pd.api.types.is_float_dtype(col) and col.notna().all() and (col % 1 == 0).all():
        col = col.astype("int64")
    text = col.astype("str")
    row = _first_bad(col.isna().to_numpy() | (text.str.strip() == "").to_numpy(dtype=bool))
    if row is not None:
        raise rows.error(row, f"has an empty value in column '{name}', expected an id")
    return text


def _check_unique(ids: pd.Series, name: str, rows: _Rows) -> None:
    """Raise naming the first id listed a second time (an item table has one row per item)."""
    row = _first_bad(ids.duplicated().to_numpy())
    if row is not None:
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise rows.error(row, f"repeats {name} {ids.iloc[row]!r} of {rows.where(first)}, expected one row per item")


def _rating_column(col: pd.Series, name: str, rows: _Rows) -> np.ndarray:
    """Ratings as float64; a non-numeric value raises naming the line, column and value."""
    if pd.api.types.is_bool_dtype(col):
        col = col.astype("float64")
    values = pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()
    row = _first_bad(~np.isfinite(values))
    if row is not None:
        raise rows.error(row, f"has {_show(col.iloc[row])} in column '{name}', expected a number")
    return values


def _epoch_seconds(col: pd.Series, name: str, rows: _Rows) -> np.ndarray:
    """Timestamps as int64 epoch seconds from numbers, datetimes or ISO date strings (one kind throughout)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        row = _first_bad(col.isna().to_numpy())
        if row is not None:
            raise rows.error(row, f"has an empty value in column '{name}', expected a date")
        return _datetime_seconds(col)
    if pd.api.types.is_bool_dtype(col):
        raise rows.error(0, f"has {_show(col.iloc[0])} in column '{name}', {_TIME_EXPECTED}")
    if pd.api.types.is_numeric_dtype(col):
        row = _first_bad(~np.isfinite(col.astype("float64").to_numpy()))
        if row is not None:
            raise rows.error(row, f"has {_show(col.iloc[row])} in column '{name}', {_TIME_EXPECTED}")
        return _whole_seconds(col, col, name, rows)
    return _text_seconds(col, name, rows)


def _text_seconds(col: pd.Series, name: str, rows: _Rows) -> np.ndarray:
    """Text timestamps: all numbers (epoch seconds) or all ISO dates; the first value of neither kind, or of
    the other kind than the first row's, raises naming its line."""
    text = col.astype("str").str.strip()
    num = pd.to_numeric(text, errors="coerce")
    is_num = np.isfinite(num.astype("float64").to_numpy())
    if is_num.all():
        return _whole_seconds(num, col, name, rows)
    dates = pd.to_datetime(text.where(~is_num), errors="coerce", utc=True, format="ISO8601")
    is_date = dates.notna().to_numpy() & ~is_num
    row = _first_bad(~(is_num | is_date))
    if row is not None:
        raise rows.error(row, f"has {_show(col.iloc[row])} in column '{name}', {_TIME_EXPECTED}")
    if is_num.any():
        row = int(_first_bad(is_num != is_num[0]))
        kinds = ("epoch seconds", "a date") if is_num[0] else ("a date", "epoch seconds")
        raise rows.error(
            row, f"has {kinds[1]} {_show(col.iloc[row])} in column '{name}' while {rows.where(0)} has "
                 f"{kinds[0]} {_show(col.iloc[0])}, expected one kind throughout (all epoch seconds or all ISO dates)"
        )
    return _datetime_seconds(dates)


def _whole_seconds(num: pd.Series, col: pd.Series, name: str, rows: _Rows) -> np.ndarray:
    """Numeric timestamps as int64 (floats floored); values that do not fit in int64 raise."""
    if num.dtype.kind == "i":
        return num.to_numpy(dtype=np.int64)  # exact, even beyond 2**53
    values = num.to_numpy(dtype=np.float64)
    too_big = num.to_numpy() > np.iinfo(np.int64).max if num.dtype.kind == "u" else np.abs(values) >= _INT64_LIMIT
    row = _first_bad(too_big)
    if row is not None:
        raise rows.error(row, f"has {_show(col.iloc[row])} in column '{name}', expected epoch seconds that fit "
                              "in 64 bits (|value| < 9.2e18)")
    return num.to_numpy(dtype=np.int64) if num.dtype.kind == "u" else np.floor(values).astype(np.int64)


def _datetime_seconds(dates: pd.Series) -> np.ndarray:
    """Whole epoch seconds of a datetime Series (naive values are taken as UTC)."""
    if dates.dt.tz is None:
        dates = dates.dt.tz_localize("UTC")
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


# ------------------------------------------------------------------------------ item text


def _text_values(col: pd.Series, name: str, path: Path) -> np.ndarray:
    """A text column as str (missing values as ''); a column blank in every row raises."""
    text = col.where(col.notna(), "").astype("str")
    if (text.str.strip() == "").all():
        raise RecforgeError(
            f"{path}: text column '{name}' is blank in every row, expected item text (set "
            "dataset.reader.item_text_cols to the columns that hold it)"
        )
    return text.to_numpy()


def _log_missing_text(text: list[str], cols: list[str], rows: _Rows) -> None:
    """Warn (once, with a count and the first place) about items whose text columns are all blank."""
    blank = np.array([not t.strip() for t in text], dtype=bool)
    row = _first_bad(blank)
    if row is not None:
        log.warning("%s: %d of %d items have no text in %s (first at %s); their text is empty",
                    rows.path, int(blank.sum()), len(text), ", ".join(cols), rows.where(row))


def _join_text(values: dict[str, np.ndarray]) -> list[str]:
    """Per item: the single column's value, or 'col: value. col2: value' skipping empties."""
    cols = list(values)
    if len(cols) == 1:
        return [str(v) for v in values[cols[0]]]
    rows = zip(*(values[c] for c in cols))
    return [". ".join(f"{c}: {v}" for c, v in zip(cols, row) if str(v).strip()) for row in rows]
