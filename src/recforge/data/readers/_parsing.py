"""Shared reader helpers: file checks, message formatting and strict delimited-line parsing."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.errors import RecforgeError

COLUMNS = ["user", "item", "timestamp", "rating"]

# Field kinds for headerless integer files: "id" = digits kept as str, "int", "float".
_Fields = list[tuple[str, str]]


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
