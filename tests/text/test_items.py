"""Item texts: templates over reader fields, attribute tokens, placeholders, internal-id order."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recforge.data.datamodule import SequenceDataModule
from recforge.data.item_text import (
    attribute_tokens,
    dataset_item_texts,
    field_text,
    item_texts,
    render_texts,
    template_fields,
)
from recforge.data.readers import MovieLens100K, S3RecSequences
from recforge.data.splits import LeaveOneOut
from recforge.data.synthetic import SyntheticSequences
from recforge.errors import RecforgeError

FRAME = pd.DataFrame({
    "item": ["10", "20", "30"],
    "text": ["Heat (1995). Genres: Action", "Up (2009). Genres: Animation, Family", "Nameless"],
    "title": ["Heat", "Up", "Nameless"],
    "year": pd.array([1995, 2009, None], dtype="Int64"),
    "genres": ["Action", "Animation|Family", ""],
})


def test_attribute_tokens():
    assert attribute_tokens([12, 97]) == "attr_12 attr_97"
    assert attribute_tokens(np.array([3]), prefix="a") == "a3"
    assert attribute_tokens([]) == ""


def test_template_fields_in_order_of_first_use():
    assert template_fields("{title} ({year}). Genres: {genres}") == ["title", "year", "genres"]
    assert template_fields("{title}: {title!r} {year:>6}") == ["title", "year"]
    assert template_fields("no fields") == []


@pytest.mark.parametrize("template", ["{} and {}", "{0}", "{title"])
def test_bad_templates_are_user_errors(template):
    with pytest.raises(RecforgeError, match="item_text.template"):
        template_fields(template)


@pytest.mark.parametrize(("value", "text"), [
    (None, ""), (float("nan"), ""), (pd.NA, ""), (1995.0, "1995"), (3.5, "3.5"), (np.int64(7), "7"),
    ("Heat", "Heat"), ([12, 97], "attr_12 attr_97"), (np.array([5, 6]), "attr_5 attr_6"), (math.inf, "inf"),
])
def test_field_text(value, text):
    assert field_text(value) == text


def test_template_over_rows_with_missing_values():
    texts = render_texts(FRAME, "{title} ({year}). Genres: {genres}")
    assert texts == {
        "10": "Heat (1995). Genres: Action",
        "20": "Up (2009). Genres: Animation|Family",
        "30": "Nameless (). Genres: ",  # a missing year and empty genres are inserted as ''
    }


def test_without_template_the_readers_text_is_used():
    assert render_texts(FRAME, None)["20"] == "Up (2009). Genres: Animation, Family"


def test_rows_of_one_item_are_joined_in_order():
    reviews = pd.DataFrame({"item": ["7", "8", "7"], "title": ["Soft", "Ok", "Itchy"], "body": ["love it", "", "no"]})
    texts = render_texts(reviews, "{title}: {body}")
    assert texts == {"7": "Soft: love it | Itchy: no", "8": "Ok: "}


def test_item_texts_follow_internal_ids_and_fill_missing_items():
    # internal ids 1, 2, 3 are raw 20, 10 and 99 (99 has no row)
    texts = item_texts(FRAME, ["", "20", "10", "99"], "{title} ({year})", missing="<none>")
    assert texts == ["Up (2009)", "Heat (1995)", "<none>"]
    assert item_texts(FRAME, np.array(["", "30"], dtype=object)) == ["Nameless"]  # default: reader text
    assert item_texts(FRAME, ["", "99"]) == [""]  # default placeholder: the empty text


def test_unknown_field_and_absent_text_are_user_errors():
    with pytest.raises(RecforgeError, match=r"uses field 'titel'.*fields: item, text, title, year, genres"):
        item_texts(FRAME, ["", "10"], "{titel}")
    with pytest.raises(RecforgeError, match="has no 'text' column"):
        item_texts(FRAME.drop(columns="text"), ["", "10"])
    with pytest.raises(RecforgeError, match=r"is absent.*item_embedder=id"):
        item_texts(None, ["", "10"], source="dataset 'x' item text")
    with pytest.raises(RecforgeError, match="text format specs"):
        item_texts(FRAME, ["", "10"], "{year:04d}")  # fields are text: a numeric spec cannot apply


def test_s3rec_attribute_tokens(tmp_path):
    seq = tmp_path / "Tiny.txt"
    seq.write_text("1 4 83 165\n2 83 4\n")
    attrs = tmp_path / "Tiny_item2attributes.json"
    attrs.write_text(json.dumps({"4": [1, 2, 3], "83": [4, 5, 6], "165": [7]}))
    reader = S3RecSequences(str(seq), str(attrs))
    dm = SequenceDataModule("tiny", reader, LeaveOneOut(), max_len=5)
    texts = dataset_item_texts(dm, "{attributes}")
    assert dm.load_sequences().item_ids.tolist() == ["", "4", "83", "165"]
    assert texts == ["attr_1 attr_2 attr_3", "attr_4 attr_5 attr_6", "attr_7"]
    assert dataset_item_texts(dm, "{attributes}", attribute_prefix="a")[2] == "a7"


def test_synthetic_texts_in_internal_order():
    reader = SyntheticSequences(num_users=30, num_items=20, max_length=12)
    dm = SequenceDataModule("synthetic", reader, LeaveOneOut(), max_len=5)
    texts = dataset_item_texts(dm)
    raw = dm.load_sequences().item_ids
    frame = reader.item_text().set_index("item")
    assert len(texts) == dm.num_items
    assert texts == [frame.loc[raw[i], "text"] for i in range(1, dm.num_items + 1)]
    assert dataset_item_texts(dm, "{category}")[0] == frame.loc[raw[1], "category"]


def test_ml100k_template_values(data_root):
    dm = SequenceDataModule("ml-100k", MovieLens100K(str(data_root / "ml-100k")), LeaveOneOut(), max_len=5)
    raw = dm.load_sequences().item_ids.tolist()
    texts = dataset_item_texts(dm, "{title} | {year} | {genres}")
    assert len(texts) == dm.num_items == 1682
    assert texts[raw.index("1") - 1] == "Toy Story (1995) | 1995 | Animation|Children's|Comedy"
    assert texts[raw.index("127") - 1] == "Godfather, The (1972) | 1972 | Action|Crime|Drama"
    # without a template: the reader's text
    assert dataset_item_texts(dm)[raw.index("1") - 1] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
