"""Generic CSV/TSV/Parquet interaction tables with configurable columns."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recforge.data.readers._parsing import (
    _abs,
    _check_file,
    _clip,
    _first_bad,
    _frame,
    _show_sep,
)
from recforge.errors import RecforgeError


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
