"""Tests for recforge.data.readers: exact frames, error messages, real data, download."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recforge.data import readers
from recforge.data.readers import (
    InteractionTable,
    MovieLens1M,
    MovieLens20M,
    MovieLens100K,
    S3RecSequences,
    check_files,
    download_movielens,
)
from recforge.errors import RecforgeError

# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Shared real datasets: $RECFORGE_DATA or <workspace>/shared/data."""
    env = os.environ.get("RECFORGE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not root.is_dir():
        pytest.skip(
            f"real datasets not found at {root} "
            "(set RECFORGE_DATA to the folder holding ml-100k/ and s3rec/)"
        )
    return root


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def assert_standard(df: pd.DataFrame) -> None:
    """The contract's columns and dtypes."""
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert pd.api.types.is_string_dtype(df["user"]) and pd.api.types.is_string_dtype(df["item"])
    assert df["timestamp"].dtype == np.int64
    assert df["rating"].dtype == np.float64
    assert all(isinstance(v, str) for v in df["user"]) and all(isinstance(v, str) for v in df["item"])


def records(df: pd.DataFrame) -> list[tuple]:
    """Rows as plain tuples with NaN ratings mapped to None for exact comparison."""
    return [
        (u, i, int(t), None if np.isnan(r) else float(r))
        for u, i, t, r in df[["user", "item", "timestamp", "rating"]].itertuples(index=False)
    ]


def raises(match: str):
    """pytest.raises for RecforgeError with a literal (not regex) substring."""
    import re

    return pytest.raises(RecforgeError, match=re.escape(match))


U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x/1|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Untitled|01-Jan-1997||http://x/2|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "3|Caf\xe9 Noir (1951)|||http://x/3|0|0|0|0|0|0|1|0|1|0|1|0|0|0|0|0|1|0|0\n"
)


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    """A tiny ML-100K folder (blank line and trailing newline included)."""
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n22\t377\t1\t878887116\n")
    write(folder / "u.item", U_ITEM, encoding="latin-1")
    return folder


# ------------------------------------------------------------------------ check_files


def test_check_files_missing_directory_names_absolute_path_and_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ml-100k"
    with pytest.raises(RecforgeError) as info:
        check_files(missing, ["u.data", "u.item"], "ml-100k")
    msg = str(info.value)
    assert msg.startswith(f"dataset 'ml-100k': no such directory {missing.resolve()} ")
    assert "expected files u.data, u.item" in msg
    assert "RECFORGE_DATA" in msg and "dataset.root" in msg and "holds ml-100k/" in msg


def test_check_files_missing_file_and_relative_path_resolved(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "ds" / "u.data", "1\t1\t1\t1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecforgeError) as info:
        check_files(Path("ds"), ["u.data", "u.item"], "ml-100k")
    msg = str(info.value)
    assert f"{(tmp_path / 'ds' / 'u.item').resolve()} is missing" in msg
    assert "expected files u.data, u.item" in msg
    check_files(Path("ds"), ["u.data", "u.item"], "ml-100k", required=["u.data"])  # no error


# ---------------------------------------------------------------------------- ML-100K


def test_ml100k_read_exact(ml100k: Path) -> None:
    df = MovieLens100K(str(ml100k)).read()
    assert_standard(df)
    assert records(df) == [
        ("196", "242", 881250949, 3.0),
        ("186", "302", 891717742, 3.0),
        ("22", "377", 878887116, 1.0),
    ]


def test_ml100k_item_text_exact(ml100k: Path) -> None:
    items = MovieLens100K(str(ml100k)).item_text()
    assert list(items.columns) == ["item", "text", "title", "year", "genres"]
    assert items["item"].tolist() == ["1", "2", "3"]
    assert items["text"].tolist() == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy",
        "Untitled",
        "Caf\xe9 Noir (1951). Genres: Crime, Drama, Film-Noir, Thriller",
    ]
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "", "Crime|Drama|Film-Noir|Thriller"]
    assert items["year"].tolist() == [1995, 1997, 1951]  # 1997 from the release date
    assert str(items["year"].dtype) == "Int64"


def test_ml100k_item_file_optional_for_read(ml100k: Path) -> None:
    (ml100k / "u.item").unlink()
    reader = MovieLens100K(str(ml100k))
    assert len(reader.read()) == 3
    assert reader.source_files() == [(ml100k / "u.data").resolve()]
    with raises(f"{(ml100k / 'u.item').resolve()} is missing"):
        reader.item_text()


def test_ml100k_source_files(ml100k: Path) -> None:
    assert MovieLens100K(str(ml100k)).source_files() == [
        (ml100k / "u.data").resolve(),
        (ml100k / "u.item").resolve(),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1\t2\t3\t4\n\n5\t6\t7\n", "line 3 has 3 fields, expected 4"),
        ("1\t2\t3\t4\n\n5\t6\t7\t8\t9\n", "line 3 has 5 fields, expected 4"),
        ("1\t2\t3\t4\t5\n1\t2\t3\t4\n", "line 1 has 5 fields, expected 4"),
        ("1\t2\t3\t4\n5\tabc\t3\t4\n", "line 2 has item 'abc', expected an integer id"),
        ("1\t2\t3\t4\n5\t6\t3.5\t4\n", "line 2 has rating '3.5', expected an integer"),
        ("1\t2\t3\t4\n5\t6\t3\t\n", "line 2 has timestamp '', expected an integer"),
        ("1,2,3,4\n", "line 1 has 1 field, expected 4 (user, item, rating, timestamp) separated by '\\t'"),
    ],
)
def test_ml100k_malformed_lines(tmp_path: Path, content: str, expected: str) -> None:
    data = write(tmp_path / "ml-100k" / "u.data", content)
    with pytest.raises(RecforgeError) as info:
        MovieLens100K(str(tmp_path / "ml-100k")).read()
    msg = str(info.value)
    assert msg.startswith(f"{data.resolve()}: ")
    assert expected in msg


def test_ml100k_malformed_line_is_shown_truncated(tmp_path: Path) -> None:
    write(tmp_path / "d" / "u.data", "1\t2\t3\t4\n" + "x" * 100 + "\t2\t3\t4\n")
    with pytest.raises(RecforgeError) as info:
        MovieLens100K(str(tmp_path / "d")).read()
    msg = str(info.value)
    assert "line 2 has user 'xxx" in msg
    assert "'" + "x" * 57 + "...'" in msg
    assert "x" * 80 not in msg.split(": ")[-1]


def test_ml100k_empty_and_missing(tmp_path: Path) -> None:
    data = write(tmp_path / "d" / "u.data", "")
    with raises(f"{data.resolve()} is empty"):
        MovieLens100K(str(tmp_path / "d")).read()
    with raises(f"no such directory {(tmp_path / 'absent').resolve()}"):
        MovieLens100K(str(tmp_path / "absent")).read()


def test_ml100k_bad_item_lines(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "u.data", "1\t1\t1\t1\n")
    write(folder / "u.item", U_ITEM + "4|X (1990)|||u|0|2|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    with raises(f"{(folder / 'u.item').resolve()}: line 4 has a genre flag other than 0 or 1"):
        MovieLens100K(str(folder)).item_text()
    write(folder / "u.item", U_ITEM + "5|Short|||u|0|1\n")
    with raises("line 4 has 7 fields, expected 24 separated by '|'"):
        MovieLens100K(str(folder)).item_text()


# ------------------------------------------------------------------------------ ML-1M


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n\n2::3408::4::978300275\n")
    write(
        folder / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "3::Caf\xe9 au lait (1993)::Comedy\n",
        encoding="latin-1",
    )
    return folder


def test_ml1m_read_exact(ml1m: Path) -> None:
    df = MovieLens1M(str(ml1m)).read()
    assert_standard(df)
    assert records(df) == [
        ("1", "1193", 978300760, 5.0),
        ("1", "661", 978302109, 3.0),
        ("2", "3408", 978300275, 4.0),
    ]


def test_ml1m_item_text_exact(ml1m: Path) -> None:
    items = MovieLens1M(str(ml1m)).item_text()
    assert items.to_dict("records") == [
        {"item": "1", "text": "Toy Story (1995). Genres: Animation, Children's, Comedy",
         "title": "Toy Story (1995)", "year": 1995, "genres": "Animation|Children's|Comedy"},
        {"item": "260",
         "text": "Star Wars: Episode IV - A New Hope (1977). Genres: Action, Adventure, Fantasy, Sci-Fi",
         "title": "Star Wars: Episode IV - A New Hope (1977)", "year": 1977,
         "genres": "Action|Adventure|Fantasy|Sci-Fi"},
        {"item": "3", "text": "Caf\xe9 au lait (1993). Genres: Comedy", "title": "Caf\xe9 au lait (1993)",
         "year": 1993, "genres": "Comedy"},
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "1::2::3::4\n1::2::3\n",
            "line 2 has 3 fields, expected 4 (UserID, MovieID, Rating, Timestamp) separated by '::'",
        ),
        ("1::2::3::4\n\n1::2::3::4::5\n", "line 3 has 5 fields, expected 4"),
        ("1::2::3::4\n1:2::3::4\n", "line 2 has 3 fields, expected 4"),
        ("1::2::3::4\n1::2::x::4\n", "line 2 has Rating 'x', expected an integer"),
        ("1,2,3,4\n", "line 1 has 1 field, expected 4"),
    ],
)
def test_ml1m_malformed_lines(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "m" / "ratings.dat", content)
    with pytest.raises(RecforgeError) as info:
        MovieLens1M(str(tmp_path / "m")).read()
    assert str(info.value).startswith(f"{path.resolve()}: ")
    assert expected in str(info.value)


def test_ml1m_bad_movie_line(ml1m: Path) -> None:
    write(ml1m / "movies.dat", "1::Toy Story (1995)::Comedy\nabc::Bad::Drama\n")
    with raises(f"{(ml1m / 'movies.dat').resolve()}: line 2 is not 'MovieID::Title::Genres'"):
        MovieLens1M(str(ml1m)).item_text()


# ----------------------------------------------------------------------------- ML-20M


@pytest.fixture
def ml20m(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-20m"
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n7,2,0.5,1094785740\n",
    )
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "131262,Innocence (2014),(no genres listed)\n",
    )
    return folder


def test_ml20m_read_exact(ml20m: Path) -> None:
    df = MovieLens20M(str(ml20m)).read()
    assert_standard(df)
    assert records(df) == [("1", "2", 1112486027, 3.5), ("1", "29", 1112484676, 4.0), ("7", "2", 1094785740, 0.5)]


def test_ml20m_item_text_exact(ml20m: Path) -> None:
    items = MovieLens20M(str(ml20m)).item_text()
    assert items["item"].tolist() == ["1", "11", "131262"]
    assert items["text"].tolist() == [
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy",
        "American President, The (1995). Genres: Comedy, Drama, Romance",
        "Innocence (2014)",
    ]
    assert items["year"].tolist() == [1995, 1995, 2014]
    assert items["genres"].tolist()[2] == ""


def test_ml20m_blank_lines_fall_back_to_strict_parse(ml20m: Path) -> None:
    write(ml20m / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,10\n   \n\n3,4,5.0,20\n")
    assert records(MovieLens20M(str(ml20m)).read()) == [("1", "2", 10, 3.5), ("3", "4", 20, 5.0)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("userId,movieId,rating,timestamp\n1,2,3.5,10\n\n1,2,abc,11\n", "line 4 has rating 'abc', expected a number"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,10\nu1,2,3.0,11\n", "line 3 has userId 'u1', expected an integer id"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,10\n1,2,3.0\n", "line 3 has 3 fields, expected 4"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,10\n1,2,3.0,11,12\n", "line 3 has 5 fields, expected 4"),
        ("userId,movieId,rating,timestamp\n", "has no data lines"),
        ("", "is empty"),
        (
            "user,movie,rating,timestamp\n1,2,3,4\n",
            "header has columns user, movie, rating, timestamp, expected userId, movieId, rating, timestamp",
        ),
    ],
)
def test_ml20m_errors(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "m" / "ratings.csv", content)
    with pytest.raises(RecforgeError) as info:
        MovieLens20M(str(tmp_path / "m")).read()
    assert str(info.value).startswith(str(path.resolve()))
    assert expected in str(info.value)


def test_ml20m_fast_path_matches_large_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 50_000
    src = pd.DataFrame({
        "userId": rng.integers(1, 1000, n), "movieId": rng.integers(1, 5000, n),
        "rating": rng.integers(1, 11, n) / 2, "timestamp": rng.integers(800_000_000, 1_400_000_000, n),
    })
    write(tmp_path / "m" / "ratings.csv", "")
    src.to_csv(tmp_path / "m" / "ratings.csv", index=False)
    df = MovieLens20M(str(tmp_path / "m")).read()
    assert_standard(df)
    assert df["user"].tolist() == src["userId"].astype(str).tolist()
    assert df["item"].tolist() == src["movieId"].astype(str).tolist()
    np.testing.assert_array_equal(df["rating"].to_numpy(), src["rating"].to_numpy())
    np.testing.assert_array_equal(df["timestamp"].to_numpy(), src["timestamp"].to_numpy())


# ------------------------------------------------------------------------------ S3Rec


def test_s3rec_read_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", "1 10 11 12\n\n2 11\n3 12 10\n")
    df = S3RecSequences(str(path)).read()
    assert_standard(df)
    assert records(df) == [
        ("1", "10", 0, None), ("1", "11", 1, None), ("1", "12", 2, None),
        ("2", "11", 0, None),
        ("3", "12", 0, None), ("3", "10", 1, None),
    ]
    assert df["rating"].isna().all()


def test_s3rec_no_attributes_means_no_item_text(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", "1 10\n")
    reader = S3RecSequences(str(path))
    assert reader.item_text() is None
    assert reader.source_files() == [path.resolve()]


def test_s3rec_item_text_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", "1 10 11\n")
    attrs = write(tmp_path / "Tiny_item2attributes.json", json.dumps({"10": [12, 5, 7], "11": []}))
    reader = S3RecSequences(str(path), str(attrs))
    items = reader.item_text()
    assert items["item"].tolist() == ["10", "11"]
    assert items["text"].tolist() == ["attributes: a12 a5 a7", "attributes: "]
    assert items["attributes"].tolist() == [[12, 5, 7], []]
    assert reader.source_files() == [path.resolve(), attrs.resolve()]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1 10 11\n2 10 x7 11\n", "line 2 has the non-integer token 'x7'"),
        ("1 10 11\n\n7\n", "line 3 has a user but no items"),
        ("u1 10 11\n", "line 1 has the non-integer token 'u1'"),
        ("\n\n", "is empty"),
    ],
)
def test_s3rec_malformed(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "Bad.txt", content)
    with pytest.raises(RecforgeError) as info:
        S3RecSequences(str(path)).read()
    assert str(info.value).startswith(str(path.resolve()))
    assert expected in str(info.value)


def test_s3rec_malformed_line_truncated(tmp_path: Path) -> None:
    long_line = "5 " + " ".join(str(i) for i in range(100)) + " oops"
    path = write(tmp_path / "Bad.txt", "1 2\n" + long_line + "\n")
    with pytest.raises(RecforgeError) as info:
        S3RecSequences(str(path)).read()
    msg = str(info.value)
    assert "line 2 has the non-integer token 'oops'" in msg
    assert msg.endswith("'" + long_line[:57] + "...'")


def test_s3rec_missing_file(tmp_path: Path) -> None:
    with raises(f"{(tmp_path / 'Nope.txt').resolve()} is missing"):
        S3RecSequences(str(tmp_path / "Nope.txt")).read()


def test_s3rec_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path / "T.txt", "1 2\n")
    attrs = write(tmp_path / "T_item2attributes.json", '{"1": [1, 2],\n "2": [3,, 4]}')
    with raises(f"{attrs.resolve()} is not valid JSON at line 2 column 10 (Expecting value)"):
        S3RecSequences(str(path), str(attrs)).item_text()
    write(attrs, '{"1": [1, "a"]}')
    with raises("item '1' maps to [1, \"a\"], expected a list of integer attribute ids"):
        S3RecSequences(str(path), str(attrs)).item_text()
    write(attrs, "[1, 2]")
    with raises("holds a JSON list, expected an object"):
        S3RecSequences(str(path), str(attrs)).item_text()


# ------------------------------------------------------------------- InteractionTable


def test_table_csv_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp,stars\nu1,i9,100,4.5\n\nu2,i8,50,3\n")
    reader = InteractionTable(str(path), rating_col="stars")
    df = reader.read()
    assert_standard(df)
    assert records(df) == [("u1", "i9", 100, 4.5), ("u2", "i8", 50, 3.0)]
    assert reader.item_text() is None
    assert reader.source_files() == [path.resolve()]


def test_table_tsv_no_rating_no_time(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "u\ti\textra\na\tx\t1\nb\ty\t2\nc\tx\t3\n")
    df = InteractionTable(str(path), user_col="u", item_col="i", time_col=None, sep="\t").read()
    assert records(df) == [("a", "x", 0, None), ("b", "y", 1, None), ("c", "x", 2, None)]


def test_table_iso_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.csv",
        "user_id,item_id,when\n1,2,2020-01-01\n1,3,2020-01-01T00:00:30Z\n2,2,1970-01-02 00:00:00\n",
    )
    df = InteractionTable(str(path), time_col="when").read()
    assert df["timestamp"].tolist() == [1577836800, 1577836830, 86400]
    assert df["timestamp"].dtype == np.int64


def test_table_numeric_epochs_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n1,2,1.9\n1,3,7\n")
    assert InteractionTable(str(path)).read()["timestamp"].tolist() == [1, 7]  # floored
    big = 1_700_000_000_123_456_789  # int64 beyond 2**53 stays exact
    pd.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [big]}).to_parquet(tmp_path / "b.parquet")
    assert InteractionTable(str(tmp_path / "b.parquet")).read()["timestamp"].tolist() == [big]


def test_table_missing_column_lists_found(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user,item_id,timestamp\n1,2,3\n")
    with raises(
        f"{path.resolve()} has no column 'user_id' (expected user_col 'user_id', item_col 'item_id', time_col "
        "'timestamp'; found columns 'user', 'item_id', 'timestamp'); set dataset.reader.user_col to the file's "
        "column names"
    ):
        InteractionTable(str(path)).read()


@pytest.mark.parametrize(
    ("content", "guess"), [("user_id\titem_id\n1\t2\n", "'\\t'"), ("user_id;item_id\n1;2\n", "';'")]
)
def test_table_wrong_delimiter_hint(tmp_path: Path, content: str, guess: str) -> None:
    path = write(tmp_path / "t.csv", content)
    with pytest.raises(RecforgeError) as info:
        InteractionTable(str(path), time_col=None).read()
    header = content.splitlines()[0]
    assert str(info.value) == (
        f"{path.resolve()} has only 1 column {header!r} when split with sep ',', expected columns user_col "
        f"'user_id', item_col 'item_id'; it looks {guess}-separated, so set dataset.reader.sep={guess}"
    )


def test_table_bad_timestamp_names_column_value_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n1,2,2020-01-01\n1,3,yesterday\n")
    with raises(f"{path.resolve()}: line 3 has 'yesterday' in column 'timestamp', expected integer epoch seconds"):
        InteractionTable(str(path)).read()


def test_table_bad_rating_and_empty_id(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp,r\n1,2,3,4\n1,2,3,five\n")
    with raises(f"{path.resolve()}: line 3 has 'five' in column 'r', expected a number"):
        InteractionTable(str(path), rating_col="r").read()
    write(path, "user_id,item_id,timestamp\n1,2,3\n,2,3\n")
    with raises(f"{path.resolve()}: line 3 has an empty value in column 'user_id', expected an id"):
        InteractionTable(str(path)).read()


def test_table_row_with_extra_field(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n1,2,3\n\n1,2,3,4\n")
    with raises(f"{path.resolve()}: line 4 has 4 fields, expected 3 like the header, separated by ','"):
        InteractionTable(str(path)).read()


def test_table_empty_and_header_only(tmp_path: Path) -> None:
    empty = write(tmp_path / "e.csv", "")
    with raises(f"{empty.resolve()} is empty"):
        InteractionTable(str(empty)).read()
    header = write(tmp_path / "h.csv", "user_id,item_id,timestamp\n\n")
    with raises(f"{header.resolve()} has a header but no data rows"):
        InteractionTable(str(header)).read()
    with raises(f"{(tmp_path / 'missing.csv').resolve()} is missing"):
        InteractionTable(str(tmp_path / "missing.csv")).read()


def test_table_parquet_round_trip(tmp_path: Path) -> None:
    src = pd.DataFrame({
        "uid": [10, 11, 10], "iid": ["a", "b", "c"],
        "ts": pd.to_datetime(["2021-05-01 00:00:00", "2021-05-01 00:01:00", "1970-01-01 00:00:07"]),
        "score": [1.0, 2.5, 5.0],
    })
    path = tmp_path / "t.parquet"
    src.to_parquet(path)
    df = InteractionTable(str(path), user_col="uid", item_col="iid", time_col="ts", rating_col="score").read()
    assert_standard(df)
    assert records(df) == [("10", "a", 1619827200, 1.0), ("11", "b", 1619827260, 2.5), ("10", "c", 7, 5.0)]
    epoch = src.assign(ts=[5, 6, 7])
    epoch.to_parquet(tmp_path / "e.pq")
    df = InteractionTable(str(tmp_path / "e.pq"), user_col="uid", item_col="iid", time_col="ts").read()
    assert records(df) == [("10", "a", 5, None), ("11", "b", 6, None), ("10", "c", 7, None)]
    found = "found columns 'uid', 'iid', 'ts', 'score'"
    with raises(f"has no columns 'user_id', 'item_id', 'timestamp' (expected user_col 'user_id', item_col 'item_id', "
                f"time_col 'timestamp'; {found}); set dataset.reader.user_col, dataset.reader.item_col, "
                "dataset.reader.time_col to the file's column names"):
        InteractionTable(str(path)).read()


def test_table_item_text(tmp_path: Path) -> None:
    inter = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n1,2,3\n")
    meta = write(tmp_path / "items.csv", "item_id,title,brand\n2,Red shoe,Acme\n3,Blue hat,\n")
    reader = InteractionTable(str(inter), item_text_path=str(meta))
    items = reader.item_text()
    assert items.to_dict("records") == [
        {"item": "2", "text": "title: Red shoe. brand: Acme", "title": "Red shoe", "brand": "Acme"},
        {"item": "3", "text": "title: Blue hat", "title": "Blue hat", "brand": ""},
    ]
    only_title = InteractionTable(str(inter), item_text_path=str(meta), item_text_cols=["title"]).item_text()
    assert only_title["text"].tolist() == ["Red shoe", "Blue hat"]
    assert reader.source_files() == [inter.resolve(), meta.resolve()]
    with raises("has no column 'colour' (expected item_col 'item_id', item_text_cols 'colour'; found columns "
                "'item_id', 'title', 'brand'); set dataset.reader.item_text_cols to the file's column names"):
        InteractionTable(str(inter), item_text_path=str(meta), item_text_cols=["colour"]).item_text()


# --------------------------------------------------------------------------- download


def make_zip(path: Path, name: str, files: dict[str, str]) -> str:
    """Write a zip with ``name/<file>`` members and return its sha256."""
    with zipfile.ZipFile(path, "w") as zipped:
        for member, text in files.items():
            zipped.writestr(f"{name}/{member}", text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_delay(monkeypatch) -> None:
    monkeypatch.setattr(readers.download, "_RETRY_DELAY_S", 0.0)


def test_download_extracts_verified_zip(tmp_path: Path, no_delay: None) -> None:
    archive = tmp_path / "src.zip"
    digest = make_zip(archive, "ml-100k", {"u.data": "1\t2\t3\t4\n", "u.item": U_ITEM, "README": "hi"})
    root = tmp_path / "root"
    target = download_movielens("ml-100k", str(root), url=archive.as_uri(), sha256=digest)
    assert target == (root / "ml-100k").resolve()
    assert (target / "u.data").read_text() == "1\t2\t3\t4\n"
    assert sorted(p.name for p in root.iterdir()) == ["ml-100k"]  # no temp leftovers
    assert records(MovieLens100K(str(target)).read()) == [("1", "2", 4, 3.0)]
    # already present: returns without fetching (the URL no longer exists)
    archive.unlink()
    assert download_movielens("ml-100k", str(root), url=archive.as_uri(), sha256=digest) == target


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, no_delay: None) -> None:
    archive = tmp_path / "src.zip"
    digest = make_zip(archive, "ml-1m", {"ratings.dat": "1::2::3::4\n", "movies.dat": "1::A (1990)::Drama\n"})
    root = tmp_path / "root"
    with pytest.raises(RecforgeError) as info:
        download_movielens("ml-1m", str(root), url=archive.as_uri())  # official checksum
    msg = str(info.value)
    assert f"has sha256 {digest}, expected {readers.MOVIELENS_SHA256['ml-1m']}" in msg
    assert f"place the files ratings.dat, movies.dat in {(root / 'ml-1m').resolve()} instead" in msg
    assert list(root.iterdir()) == []


def test_download_no_network_message_and_retries(tmp_path: Path, monkeypatch, no_delay: None) -> None:
    calls: list[str] = []
    real_urlopen = readers.urllib.request.urlopen

    def counting_urlopen(url: str, timeout: float):
        calls.append(url)
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(readers.urllib.request, "urlopen", counting_urlopen)
    url = (tmp_path / "absent.zip").as_uri()
    root = tmp_path / "root"
    with raises(f"could not download {url} after 4 attempts"):
        download_movielens("ml-20m", str(root), url=url, sha256="0" * 64)
    assert len(calls) == 4
    assert list(root.iterdir()) == []


def test_download_unknown_checksum_unknown_name_bad_archive(
    tmp_path: Path, monkeypatch, no_delay: None
) -> None:
    monkeypatch.setitem(readers.MOVIELENS_SHA256, "ml-100k", None)
    with raises("the sha256 of https://files.grouplens.org/datasets/movielens/ml-100k.zip is unknown"):
        download_movielens("ml-100k", str(tmp_path / "root"))
    with raises("unknown MovieLens dataset 'ml-7m', expected one of ml-100k, ml-1m, ml-20m"):
        download_movielens("ml-7m", str(tmp_path))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    digest = hashlib.sha256(b"not a zip").hexdigest()
    with raises("the downloaded file is not a valid zip archive"):
        download_movielens("ml-100k", str(tmp_path / "r1"), url=bad.as_uri(), sha256=digest)
    partial = tmp_path / "partial.zip"
    digest = make_zip(partial, "ml-100k", {"u.data": "1\t2\t3\t4\n"})
    with raises("the archive has no ml-100k/u.item"):
        download_movielens("ml-100k", str(tmp_path / "r2"), url=partial.as_uri(), sha256=digest)
    assert list((tmp_path / "r2").iterdir()) == []
    write(tmp_path / "r3" / "ml-100k" / "u.data", "1\t2\t3\t4\n")
    with raises(f"{(tmp_path / 'r3' / 'ml-100k').resolve()} exists but lacks u.item"):
        download_movielens("ml-100k", str(tmp_path / "r3"), url=partial.as_uri(), sha256=digest)


def test_download_rejects_non_url(tmp_path: Path) -> None:
    with raises("cannot download 'not-a-url' (unknown url type"):
        download_movielens("ml-1m", str(tmp_path), url="not-a-url", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_checksums_are_sha256_hex() -> None:
    for name in ("ml-100k", "ml-1m", "ml-20m"):
        value = readers.MOVIELENS_SHA256[name]
        assert value is None or (len(value) == 64 and int(value, 16) >= 0)


# -------------------------------------------------------------------------- real data


def test_real_ml100k(data_root: Path) -> None:
    folder = data_root / "ml-100k"
    if not (folder / "u.data").is_file():
        pytest.skip(f"{folder} has no u.data")
    reader = MovieLens100K(str(folder))
    df = reader.read()
    assert_standard(df)
    assert len(df) == 100_000
    assert df["user"].nunique() == 943 and df["item"].nunique() == 1682
    assert records(df.head(1)) == [("196", "242", 881250949, 3.0)]
    assert set(df["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    items = reader.item_text()
    assert len(items) == 1682
    assert set(items["item"]) == set(df["item"])
    assert "Toy Story" in items.loc[items["item"] == "1", "text"].item()


def test_real_beauty(data_root: Path) -> None:
    path = data_root / "s3rec" / "Beauty.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    attrs = data_root / "s3rec" / "Beauty_item2attributes.json"
    reader = S3RecSequences(str(path), str(attrs) if attrs.is_file() else None)
    df = reader.read()
    assert_standard(df)
    assert len(df) == 198_502
    assert df["user"].nunique() == 22_363 and df["item"].nunique() == 12_101
    assert records(df.head(2)) == [("1", "1", 0, None), ("1", "2", 1, None)]
    first_pos = df.groupby("user", sort=False)["timestamp"].min()
    assert (first_pos == 0).all()
    if attrs.is_file():
        items = reader.item_text()
        assert len(items) == 12_101 and set(items["item"]) == set(df["item"])
        assert all(t.startswith("attributes:") for t in items["text"].head(100))


# ------------------------------------------------- InteractionTable: lines, field counts, kinds


def test_table_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    # physical lines: 1 header, 2 ok, 3 blank, 4 whitespace only, 5-6 one record with a quoted newline, 7 bad
    path = write(tmp_path / "t.csv", 'user_id,item_id,timestamp\n1,2,3\n\n   \n1,"a\nb",4\n1,2,later\n')
    with pytest.raises(RecforgeError) as info:
        InteractionTable(str(path)).read()
    assert str(info.value) == (
        f"{path.resolve()}: line 7 has 'later' in column 'timestamp', expected integer epoch seconds or an ISO date "
        "such as 2020-01-31T12:00:00"
    )
    write(path, 'user_id,item_id,timestamp\n1,2,3\n\n   \n1,"a\nb",4\n')
    assert records(InteractionTable(str(path)).read()) == [("1", "2", 3, None), ("1", "a\nb", 4, None)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # pandas would pad the short line with an empty timestamp
        ("user_id,item_id,timestamp\n1,2,3\n\n1,2\n",
         "line 4 has 2 fields, expected 3 like the header, separated by ','"),
        # every data line one field longer: pandas would take the first field as an index and shift the columns
        ("user_id,item_id,timestamp\n9,1,2,3\n9,1,2,4\n",
         "line 2 has 4 fields, expected 3 like the header, separated by ','"),
        ("user_id,item_id,timestamp\n1,2,3\n1,\"2,3\n1,2,4\n", "line 3 opens a quoted field that is never closed"),
    ],
)
def test_table_field_count_and_quotes(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "t.csv", content)
    with raises(f"{path.resolve()}: {expected}"):
        InteractionTable(str(path)).read()


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["100", "2020-01-01"], ("line 3 has a date '2020-01-01' in column 'timestamp' while line 2 has epoch "
                                 "seconds '100', expected one kind throughout (all epoch seconds or all ISO dates)")),
        (["2020-01-01", "100"], ("line 3 has epoch seconds '100' in column 'timestamp' while line 2 has a date "
                                 "'2020-01-01', expected one kind throughout")),
        (["100", "1e30"], "line 3 has '1e30' in column 'timestamp', expected epoch seconds that fit in 64 bits"),
        (["100", "nan"], "line 3 has 'nan' in column 'timestamp', expected integer epoch seconds or an ISO date"),
    ],
)
def test_table_timestamp_kinds(tmp_path: Path, stamps: list[str], expected: str) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n" + "".join(f"1,2,{s}\n" for s in stamps))
    with raises(f"{path.resolve()}: {expected}"):
        InteractionTable(str(path)).read()


def test_table_parquet_messages_name_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", None, "c"], "timestamp": [1.0, 2.0, None]}).to_parquet(path)
    with raises(f"{path.resolve()}: row 2 has an empty value in column 'item_id', expected an id"):
        InteractionTable(str(path)).read()
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", "b", "c"], "timestamp": [1.0, 2.0, None]}).to_parquet(path)
    with raises(f"{path.resolve()}: row 3 has an empty value in column 'timestamp', expected integer epoch seconds"):
        InteractionTable(str(path)).read()


def test_table_encoding_is_strict_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("user_id,item_id,timestamp\n1,caf\xe9,3\n1,cafe,4\n".encode("latin-1"))
    with raises(
        f"{path.resolve()}: line 2 column 6 is not valid utf-8 text (byte 0xe9); save the file as utf-8 or name its "
        "encoding, e.g. ++dataset.reader.encoding=latin-1"
    ):
        InteractionTable(str(path)).read()
    df = InteractionTable(str(path), encoding="latin-1").read()
    assert df["item"].tolist() == ["caf\xe9", "cafe"]  # two items, never merged by a replacement character


def test_table_tab_typed_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "user_id\titem_id\ttimestamp\n1\t2\t3\n")
    reader = InteractionTable(str(path), sep="\\t")  # Hydra keeps dataset.reader.sep='\t' as backslash + t
    assert reader.sep == "\t"
    assert records(reader.read()) == [("1", "2", 3, None)]


def test_table_item_text_problems(tmp_path: Path, caplog) -> None:
    inter = write(tmp_path / "t.csv", "user_id,item_id,timestamp\n1,2,3\n")
    meta = write(tmp_path / "items.csv", "item_id,title,brand\n2,Red shoe,\n3,,\n")
    reader = InteractionTable(str(inter), item_text_path=str(meta))
    with raises(f"{meta.resolve()}: text column 'brand' is blank in every row, expected item text"):
        reader.read()  # read() checks a configured item table too
    write(meta, "item_id,title,brand\n2,Red shoe,Acme\n\n3,,\n")
    with caplog.at_level("WARNING", logger="recforge.data.readers.table"):
        assert reader.item_text()["text"].tolist() == ["title: Red shoe. brand: Acme", ""]
    expected = f"{meta.resolve()}: 1 of 2 items have no text in title, brand (first at line 4); their text is empty"
    assert expected in caplog.messages
    write(meta, "item_id,title\n2,Red shoe\n3,Hat\n2,Blue shoe\n")
    with raises(f"{meta.resolve()}: line 4 repeats item_id '2' of line 2, expected one row per item"):
        reader.item_text()
    write(meta, "item_id\n2\n")
    with raises(f"{meta.resolve()} has no column besides item_col 'item_id', expected item text columns"):
        reader.item_text()


# ------------------------------------------------------------------ S3Rec: users, attributes


def test_s3rec_user_on_two_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "T.txt", "1 10 11\n2 11 12\n\n1 12\n")
    with raises(f"{path.resolve()}: line 4 repeats user 1 of line 1 (expected one line 'user item1 item2 ...' "
                "per user)"):
        S3RecSequences(str(path)).read()


def test_s3rec_attributes_checked_on_read_when_present(tmp_path: Path) -> None:
    path = write(tmp_path / "T.txt", "1 10 11\n")
    attrs = tmp_path / "T_item2attributes.json"
    assert len(S3RecSequences(str(path), str(attrs)).read()) == 2  # absent: fine for an id-only model
    write(attrs, '{"10": [1],\n "11": [2]\n')
    with raises(f"{attrs.resolve()} is not valid JSON at line 3 column 1 (Expecting ',' delimiter)"):
        S3RecSequences(str(path), str(attrs)).read()
    write(attrs, '{"10": [1],\n "x11": [2]}')
    with raises(f"{attrs.resolve()}: line 2 key 'x11' is not an integer item id"):
        S3RecSequences(str(path), str(attrs)).read()
    write(attrs, '{"10": [1],\n "11": 2}')
    with raises(f"{attrs.resolve()}: line 2 item '11' maps to 2, expected a list of integer attribute ids"):
        S3RecSequences(str(path), str(attrs)).read()
