"""MovieLens 100K / 1M / 20M readers and their item text (title, year, genres) parsers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from recforge.data.readers._parsing import (
    _abs,
    _check_header,
    _clip,
    _Fields,
    _first_bad,
    _frame,
    _locate_row,
    _parse_rows,
    check_files,
)
from recforge.data.readers.download import download_movielens
from recforge.errors import RecforgeError
from recforge.rules import BOOLEAN, check_arguments, rule_table

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]

_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


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
    """Shared by the MovieLens readers: the folder, its files, optional download of the official zip."""

    DATASET: str
    FILES: list[str]
    has_timestamps = True  # the timestamp column holds epoch seconds
    attribute_column = "genres"  # item_embedder=attributes: the genres of item_text() ('Action|Drama')
    argument_rules = rule_table(download=BOOLEAN)  # recforge.rules: checked in the config and here

    def __init__(self, path: str, download: bool = False) -> None:
        check_arguments(_GroupLens, "dataset.reader", download=download)
        self.path, self.download = Path(path).expanduser(), download

    def source_files(self) -> list[Path]:
        """The ratings file, plus the movies file when present."""
        return _existing(self.path, self.FILES)

    def _fetch_if_asked(self) -> None:
        if not self.download:
            return
        if self.path.name != self.DATASET:
            raise RecforgeError(
                f"dataset.reader.download=true needs a folder named {self.DATASET}, got {_abs(self.path)}"
            )
        download_movielens(self.DATASET, str(self.path.parent))


class _HeaderlessRatings(_GroupLens):
    """MovieLens 100K and 1M: a headerless ratings file of user, item, rating, timestamp.

    Ids and timestamps must be integers (the first bad line is named); blank lines are skipped.
    """

    SEP: str
    _FIELDS: _Fields

    def read(self) -> pd.DataFrame:
        """All ratings in file order."""
        self._fetch_if_asked()
        ratings = self.FILES[0]
        check_files(self.path, self.FILES, self.DATASET, required=[ratings])
        df = _parse_rows(_abs(self.path / ratings), self.SEP, self._FIELDS)
        user, item, rating, timestamp = (df[name] for name, _ in self._FIELDS)
        return _frame(user, item, timestamp, rating)


class MovieLens100K(_HeaderlessRatings):
    """MovieLens 100K: ``u.data`` (user, item, rating, timestamp; tabs) and ``u.item``."""

    DATASET = "ml-100k"
    FILES = ["u.data", "u.item"]
    SEP = "\t"
    _FIELDS: _Fields = [("user", "id"), ("item", "id"), ("rating", "int"), ("timestamp", "int")]

    def item_text(self) -> pd.DataFrame:
        """Movies with text 'Toy Story (1995). Genres: Animation, ...', title, year, genres."""
        check_files(self.path, self.FILES, self.DATASET, required=["u.item"])
        return _read_100k_items(_abs(self.path / "u.item"))


class MovieLens1M(_HeaderlessRatings):
    """MovieLens 1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``."""

    DATASET = "ml-1m"
    FILES = ["ratings.dat", "movies.dat"]
    SEP = "::"
    _FIELDS: _Fields = [
        ("UserID", "id"), ("MovieID", "id"), ("Rating", "int"), ("Timestamp", "int")
    ]

    def item_text(self) -> pd.DataFrame:
        """Movies with text 'Title (year). Genres: A, B', title, year, genres ('A|B')."""
        check_files(self.path, self.FILES, self.DATASET, required=["movies.dat"])
        return _read_dat_movies(_abs(self.path / "movies.dat"))


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
