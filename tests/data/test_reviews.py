"""The clothing-review reader and the review datamodule: texts, labels, split, token batches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.ratings import RandomHoldout
from recforge.data.readers import ClothingReviews
from recforge.data.reviews import ReviewDataModule, Tokens, tokenize_texts
from recforge.errors import RecforgeError
from recforge.models.text_encoder import TextEncoder

PROJECT = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("RECFORGE_DATA", PROJECT.parent / "shared" / "data")) / "clothing-reviews" / "reviews.csv"

HEADER = "Clothing ID,Age,Title,Review Text,Rating,Recommended IND,Positive Feedback Count\n"


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    encoder = TextEncoder()
    encoder.load()
    return encoder


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    rows = [
        '1,30,Great dress,"Fits well, love it",5,1,0',
        "2,41,,No title here,4,1,2",  # missing title
        "3,52,Only a title,,1,0,0",  # no review text: dropped
        '4,28,Meh,"   ",2,0,1',  # whitespace-only text: dropped
        "5,33,  Spaced  ,  padded text  ,3,0,0",
    ]
    return write_csv(tmp_path / "reviews.csv", rows)


def test_reader_renders_template_drops_empty_texts_and_keeps_labels(small_csv):
    df = ClothingReviews(str(small_csv)).read()
    assert df["text"].tolist() == ["Great dress. Fits well, love it", "No title here", "Spaced. padded text"]
    assert df["row"].tolist() == [0, 1, 4]
    assert df["Rating"].tolist() == [5.0, 4.0, 3.0] and df["Recommended IND"].tolist() == [1.0, 1.0, 0.0]


def test_reader_custom_templates(small_csv):
    reader = ClothingReviews(str(small_csv), template="Title: {title}\nReview: {text}", untitled_template="Review: {text}")
    assert reader.read()["text"].tolist()[:2] == ["Title: Great dress\nReview: Fits well, love it",
                                                  "Review: No title here"]
    with pytest.raises(RecforgeError, match=r"dataset.reader.template='\{titel\}' is not a template"):
        ClothingReviews(str(small_csv), template="{titel}")


def test_reader_errors_name_file_and_column(tmp_path, small_csv):
    with pytest.raises(RecforgeError, match=r"has no column 'Rating' \(its columns are Clothing ID, Age"):
        ClothingReviews(str(write_csv(tmp_path / "bad.csv", ["1,30,T,text,1,5,0"], header=HEADER.replace("Rating", "Stars"))
                            )).read()
    with pytest.raises(RecforgeError, match=f"clothing reviews file {tmp_path / 'missing.csv'} does not exist"):
        ClothingReviews(str(tmp_path / "missing.csv")).read()
    bad = write_csv(tmp_path / "nan.csv", ["1,30,T,text,five,1,0"])
    with pytest.raises(RecforgeError, match=r"column 'Rating' holds 'five' at data row 1, expected a number"):
        ClothingReviews(str(bad)).read()
    with pytest.raises(RecforgeError, match=r"dataset.label_column='Stars' is not a label column"):
        ReviewDataModule("c", ClothingReviews(str(small_csv)), "Stars").setup()


def test_holdout_split_is_deterministic_disjoint_80_20_with_a_tenth_validating():
    a, b = RandomHoldout(0.2, 0.1, seed=0)(22641), RandomHoldout(0.2, 0.1, seed=0)(22641)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert (len(a.train), len(a.val), len(a.test)) == (16302, 1811, 4528)
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(22641))
    assert len(a.val) == round(0.1 * (len(a.train) + len(a.val)))
    assert not np.array_equal(RandomHoldout(0.2, 0.1, seed=1)(22641).test, a.test)


def test_datamodule_batches_without_tokenizer_carry_rows_and_labels(small_csv):
    dm = ReviewDataModule("c", ClothingReviews(str(small_csv)), "Rating",
                          split=RandomHoldout(test_fraction=1 / 3, val_fraction=0.5, seed=0))
    dm.setup()
    assert dm.stats["texts"] == 3 and dm.stats["train_samples"] + dm.stats["val_samples"] + dm.stats["test_samples"] == 3
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"index", "label"}
    assert batch["label"].tolist() == dm.labels[batch["index"]].tolist()


def test_tokens_pad_like_the_tokenizer_and_count_truncation(minilm):
    texts = ["short one", "a somewhat longer review text about a dress that fits", "x"]
    ids, truncated = tokenize_texts(minilm.tokenizer, texts, max_tokens=6)
    assert truncated == 1 and [len(i) for i in ids] == [4, 6, 3]
    assert ids[1][0] == minilm.tokenizer.cls_token_id and ids[1][-1] == minilm.tokenizer.sep_token_id
    tokens = Tokens(ids, minilm.tokenizer.pad_token_id)
    batch = tokens.batch(torch.tensor([2, 0, 1]))
    expected = minilm.tokenizer([texts[2], texts[0], texts[1]], padding=True, truncation=True, max_length=6,
                                return_tensors="pt")
    torch.testing.assert_close(batch["input_ids"], expected["input_ids"])
    torch.testing.assert_close(batch["attention_mask"], expected["attention_mask"])


def test_real_file_rows_split_and_bucketed_token_batches(minilm):
    if not REAL.exists():
        pytest.skip(f"{REAL} not found")
    reader = ClothingReviews(str(REAL))
    assert len(reader.read()) == 22641  # 23,486 rows, 845 without review text
    dm = ReviewDataModule("clothing-reviews", reader, "Recommended IND", batch_size=32, max_tokens=128)
    dm.setup()
    assert (dm.stats["train_samples"], dm.stats["val_samples"], dm.stats["test_samples"]) == (16302, 1811, 4528)
    raw = pd.read_csv(REAL)
    assert dm.stats["mean_train_label"] == pytest.approx(19314 / 23486, abs=0.01)
    kept = raw[raw["Review Text"].notna()].reset_index(drop=True)
    assert dm.labels.tolist() == kept["Recommended IND"].astype(float).tolist()
    # token batches on a subsample (tokenising all 22,641 texts takes seconds): 300 rows
    small = ReviewDataModule("c", reader, "Rating", batch_size=16, max_tokens=32,
                             split=RandomHoldout(0.2, 0.1, seed=0))
    small.prepare()
    small.texts, small.labels = small.texts[:300], small.labels[:300]
    small.split = RandomHoldout(0.2, 0.1, seed=0)(300)
    small.use_tokenizer(minilm.tokenizer)
    seen, pads = [], []
    for batch in small.train_dataloader():
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max()) <= 32  # padded to the batch's longest text
        seen += batch["index"].tolist()
        pads.append(float((1 - batch["attention_mask"].float()).mean()))
    assert sorted(seen) == sorted(small.split.train.tolist())  # every training row once per epoch
    assert 0 < small.stats["truncated_texts"] <= int((small.tokens.lengths == 32).sum())
    assert np.mean(pads) < 0.15  # length buckets: little padding
    ordered = next(iter(small.val_dataloader()))["attention_mask"].sum(1)
    assert ordered.tolist() == sorted(ordered.tolist(), reverse=True)  # evaluation: longest first
