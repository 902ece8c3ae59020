"""Attribute bags from an item table and item vectors from .npy / .parquet files: hand-made cases and every error."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recforge.data.item_attributes import attribute_bags, field_attributes
from recforge.data.item_vectors import map_item_vectors, read_item_vectors
from recforge.errors import RecforgeError

ITEMS = ["", "20", "10", "30"]  # internal ids 1, 2, 3 are raw items 20, 10, 30 (entry 0 padding)


# ------------------------------------------------------------------------------------------- attributes


def test_attribute_bags_of_id_lists_follow_the_internal_ids(caplog):
    frame = pd.DataFrame({"item": ["10", "20", "40"], "attributes": [[7, 3], [3], [9]]})
    with caplog.at_level(logging.INFO):
        bags = attribute_bags(frame, "attributes", ITEMS)
    # vocabulary of the catalogue's items only (item 40 is not one): 3 -> 1, 7 -> 2; item 30 has none
    assert bags.vocabulary == [3, 7] and bags.missing == 1
    assert bags.bags.tolist() == [[1, 0], [2, 1], [0, 0]]
    assert "1 items have none" in caplog.text


def test_attribute_bags_of_names_join_repeated_rows():
    frame = pd.DataFrame({"item": ["20", "10", "20", "30"],
                          "genres": ["Drama|Action", "", "Comedy|Drama", None]})
    bags = attribute_bags(frame, "genres", ITEMS)
    assert bags.vocabulary == ["Action", "Comedy", "Drama"]
    assert bags.bags.tolist() == [[3, 1, 2], [0, 0, 0], [0, 0, 0]] and bags.missing == 2


def test_field_attributes_forms():
    assert field_attributes([12, np.int64(97)], "1", "attributes", "t") == [12, 97]
    assert field_attributes("A| B |", "1", "genres", "t") == ["A", "B"]
    assert field_attributes(float("nan"), "1", "genres", "t") == []
    assert field_attributes(5, "1", "category", "t") == [5]


def test_non_integer_attributes_are_one_line_naming_the_item():
    frame = pd.DataFrame({"item": ["10"], "attributes": [[1, "x"]]})
    with pytest.raises(RecforgeError, match=r"^my table: item '10' has the attribute 'x' in column 'attributes', "
                                            r"expected a list of integer attribute ids\.$"):
        attribute_bags(frame, "attributes", ITEMS, "my table")
    with pytest.raises(RecforgeError, match="item '10' has the attribute 1.5"):
        attribute_bags(pd.DataFrame({"item": ["10"], "attributes": [[1.5]]}), "attributes", ITEMS)


def test_absent_column_and_no_attributes_are_errors():
    frame = pd.DataFrame({"item": ["10"], "genres": [""]})
    with pytest.raises(RecforgeError, match=r"has no column 'brand' \(columns: item, genres\)"):
        attribute_bags(frame, "brand", ITEMS)
    with pytest.raises(RecforgeError, match="no item of the catalogue has a value in column 'genres'"):
        attribute_bags(frame, "genres", ITEMS)


# ------------------------------------------------------------------------------------------- vectors


def write_npy(tmp_path: Path, array: np.ndarray, ids: list[str]) -> tuple[Path, Path]:
    path, ids_path = tmp_path / "v.npy", tmp_path / "v.ids"
    np.save(path, array)
    ids_path.write_text("\n".join(ids) + "\n")
    return path, ids_path


def write_parquet(tmp_path: Path, ids: list[str], vectors: list[list[float] | None]) -> Path:
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"item": ids, "vector": pa.array(vectors, pa.list_(pa.float32()))}), path)
    return path


def test_npy_vectors_map_raw_ids_to_internal_rows(tmp_path, caplog):
    path, ids_path = write_npy(tmp_path, np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), ["10", "99", "20"])
    ids, vectors = read_item_vectors(path, ids_path)
    assert ids == ["10", "99", "20"] and vectors.dtype == np.float32
    with caplog.at_level(logging.INFO):
        matrix, present = map_item_vectors(ids, vectors, ITEMS, "f")
    # internal 1 = raw 20 (file row 2), internal 2 = raw 10 (row 0), internal 3 = raw 30 (absent: zero)
    assert matrix.tolist() == [[5.0, 6.0], [1.0, 2.0], [0.0, 0.0]] and present.tolist() == [True, True, False]
    assert "2 of 3 vectors match an item (1 ids match none); 1 of 3 items have no vector" in caplog.text


def test_parquet_vectors_read_like_npy(tmp_path):
    path = write_parquet(tmp_path, ["30", "10"], [[0.5, 1.5, 2.5], [1.0, 0.0, -1.0]])
    ids, vectors = read_item_vectors(path)
    matrix, present = map_item_vectors(ids, vectors, ITEMS)
    torch.testing.assert_close(torch.from_numpy(matrix),
                               torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [0.5, 1.5, 2.5]]))
    assert present.tolist() == [False, True, True]


def test_rows_of_different_dimension_name_the_row(tmp_path):
    path = write_parquet(tmp_path, ["10", "20", "30"], [[1.0, 2.0], [1.0, 2.0], [1.0]])
    with pytest.raises(RecforgeError, match=rf"^item vector file {path}: row 2 \(item '30'\) has dimension 1, "
                                            r"row 0 has 2; every vector needs the same one\.$"):
        read_item_vectors(path)


def test_ragged_npy_is_an_error(tmp_path):
    path, ids_path = tmp_path / "v.npy", tmp_path / "v.ids"
    np.save(path, np.array([np.zeros(2), np.zeros(3)], dtype=object), allow_pickle=True)
    ids_path.write_text("10\n20\n")
    with pytest.raises(RecforgeError, match=f"^item vector file {path} is not a 2-D numeric array"):
        read_item_vectors(path, ids_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_values_name_the_row(tmp_path, bad):
    path, ids_path = write_npy(tmp_path, np.array([[1.0, 2.0], [3.0, bad], [bad, 1.0]]), ["10", "20", "30"])
    with pytest.raises(RecforgeError, match=rf"^item vector file {path}: row 1 \(item '20'\) has a NaN or infinite "
                                            r"value \(2 such rows\)\.$"):
        read_item_vectors(path, ids_path)


def test_all_ids_unmatched_is_an_error(tmp_path):
    path, ids_path = write_npy(tmp_path, np.ones((2, 2)), ["a", "b"])
    ids, vectors = read_item_vectors(path, ids_path)
    with pytest.raises(RecforgeError, match=r"^f: none of its 2 item ids matches an item of the dataset \(e\.g\. 'a' "
                                            r"against '20'\)"):
        map_item_vectors(ids, vectors, ITEMS, "f")


def test_file_shape_problems(tmp_path):
    path, ids_path = write_npy(tmp_path, np.ones((3, 2)), ["10", "20"])
    with pytest.raises(RecforgeError, match=rf"^item id file {ids_path} lists 2 ids but {path} has 3 rows"):
        read_item_vectors(path, ids_path)
    with pytest.raises(RecforgeError, match="set item_vectors.ids_path"):
        read_item_vectors(path)
    path, ids_path = write_npy(tmp_path, np.ones((2, 2)), ["10", "10"])
    with pytest.raises(RecforgeError, match=r"row 1 repeats item '10' of row 0"):
        read_item_vectors(path, ids_path)
    np.save(tmp_path / "flat.npy", np.ones(4))
    with pytest.raises(RecforgeError, match="holds a 1-D float64 array, expected a 2-D float array"):
        read_item_vectors(tmp_path / "flat.npy", ids_path)
    with pytest.raises(RecforgeError, match=r"has the suffix '\.csv', expected \.npy or \.parquet"):
        (tmp_path / "v.csv").write_text("1,2\n")
        read_item_vectors(tmp_path / "v.csv")
    with pytest.raises(RecforgeError, match="does not exist"):
        read_item_vectors(tmp_path / "absent.parquet")
    missing = write_parquet(tmp_path, ["10", "20"], [[1.0], None])
    with pytest.raises(RecforgeError, match=r"row 1 \(item '20'\) has no vector"):
        read_item_vectors(missing)
    with pytest.raises(RecforgeError, match=r"has no column 'emb' \(columns: item, vector\)"):
        read_item_vectors(missing, vector_column="emb")
