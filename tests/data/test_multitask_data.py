"""task=multi data (recforge.data.multitask): next-item sequences from the fold's training ratings only, their two
held-out items per user out of every pointwise training sample and history; checked by hand and on ML-100K."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.multitask import MultiTaskDataModule, held_out_rows, user_sequences
from recforge.data.ratings import RandomKFold, SampleSplit
from recforge.data.readers import MovieLens100K
from recforge.errors import RecforgeError


class FrameReader:
    """A reader over a DataFrame (user, item, timestamp, rating)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df

    def read(self) -> pd.DataFrame:
        return self.df

    def item_text(self) -> None:
        return None

    def source_files(self) -> list[Path]:
        return []


class FixedSplit:
    """The given row indices, whatever the number of ratings."""

    def __init__(self, train: list[int], val: list[int], test: list[int]) -> None:
        self.split = SampleSplit(np.array(train), np.array(val), np.array(test))

    def __call__(self, num_samples: int) -> SampleSplit:
        return self.split


def hand_table() -> pd.DataFrame:
    # rows 0-5: user u1 rates i1..i6 at times 1..6; rows 6-9: user u2 rates i1..i4 at times 1..4
    return pd.DataFrame({"user": ["u1"] * 6 + ["u2"] * 4,
                         "item": ["i1", "i2", "i3", "i4", "i5", "i6", "i1", "i2", "i3", "i4"],
                         "timestamp": [1, 2, 3, 4, 5, 6, 1, 2, 3, 4],
                         "rating": [5.0, 4, 3, 2, 1, 5, 4, 4, 2, 5]})


def test_user_sequences_and_held_out_rows_by_hand():
    users, items = np.array([0, 0, 1, 0, 1]), np.array([1, 2, 3, 4, 5])
    times = np.array([3, 1, 2, 2, 1])
    seq, indptr, order = user_sequences(users, items, times, np.array([0, 1, 2, 3, 4]), num_users=3)
    assert seq.tolist() == [2, 4, 1, 5, 3] and indptr.tolist() == [0, 3, 5, 5] and order.tolist() == [1, 3, 0, 4, 2]
    # user 0 keeps its first item, user 1 none: the rest are held out (rows of the rating table)
    assert sorted(held_out_rows(indptr, order, np.array([1, 0, 0])).tolist()) == [0, 2, 3, 4]


def test_hand_made_split_feeds_each_task_only_the_shared_training_events():
    # test rows 2 (u1 i3) and 7 (u2 i2), validation row 4 (u1 i5), training rows 0 1 3 5 6 8 9. Training sequences:
    # u1 = i1 i2 i4 i6 (next-item validation target i4, test target i6), u2 = i1 i3 i4 (targets i3, i4); shared
    # training events: u1 i1 i2, u2 i1. Only u1 has a transition (i1 -> i2): one window, whose one target is the
    # one pointwise training sample (u1, i2, rating 4)
    dm = MultiTaskDataModule("hand", FrameReader(hand_table()), FixedSplit([0, 1, 3, 5, 6, 8, 9], [4], [2, 7]),
                             max_len=4, threshold=4)
    dm.setup()
    test = dm.parts["test"].__getitems__([0, 1])  # (u1, i3, 3), (u2, i2, 4)
    assert test["user"].tolist() == [0, 1] and test["item"].tolist() == [3, 2]
    assert test["history"].tolist() == [[1, 2], [0, 1]]  # shared events only: no i4/i6 of u1, no i3/i4 of u2
    assert test["rating"].tolist() == [3.0, 4.0] and test["intent"].tolist() == [0.0, 1.0]
    train = dm.parts["train"]
    assert train.windows.tolist() == [[0, 0, 0, 1, 2]]  # u2 has one event: no transition
    batch = train.__getitems__([0])  # left padding trimmed to two columns, ratings alike
    assert batch["items"].tolist() == [[1, 2]] and batch["user"].tolist() == [0]
    assert batch["rating"].tolist() == [[5.0, 4.0]] and batch["intent"].tolist() == [[1.0, 1.0]]
    val, nxt = dm.parts["next_val"].__getitems__([0, 1]), dm.parts["next_test"].__getitems__([0, 1])
    assert val["target"].tolist() == [4, 3] and val["input"].tolist() == [[1, 2], [0, 1]]
    assert nxt["target"].tolist() == [6, 4] and nxt["input"].tolist() == [[1, 2, 4], [0, 1, 3]]
    assert dm.train_means == pytest.approx({"rating": 4.0, "intent": 1.0})  # the one target's rating
    assert (dm.stats["next_item_held_out"], dm.stats["train_events"], dm.stats["train_samples"],
            dm.stats["train_windows"]) == (4, 3, 1, 1)


def test_a_split_without_any_transition_is_refused():
    # every user keeps one shared event at most: no window has a target
    with pytest.raises(RecforgeError, match="dataset 'hand': no user has two training ratings left"):
        MultiTaskDataModule("hand", FrameReader(hand_table()), FixedSplit([0, 1, 2, 6, 7, 8], [4], [3]),
                            max_len=4).setup()


def test_ml100k_fold_has_no_held_out_label_in_any_training_input(data_root: Path):
    dm = MultiTaskDataModule("ml-100k-multi", MovieLens100K(str(data_root / "ml-100k")), RandomKFold(5, 0, seed=0),
                             max_len=50)
    dm.setup()
    assert (dm.stats["ratings"], dm.stats["test_samples"], dm.stats["val_samples"]) == (100000, 20000, 4000)
    assert dm.stats["next_item_val_samples"] == dm.stats["next_item_test_samples"] == 943
    windows = dm.parts["train"]
    items, ratings = windows.windows, windows.ratings  # (W, 51)
    users = windows.users[:, None].expand_as(items)
    targets_mask = (items[:, :-1] > 0) & (items[:, 1:] > 0)  # (W, 50): the pointwise training samples
    train = set(zip(users[:, 1:][targets_mask].tolist(), items[:, 1:][targets_mask].tolist()))
    assert len(train) == dm.stats["train_samples"] == 80000 - 4000 - 2 * 943 - 943  # less each user's first event
    pairs = {part: set(zip(dm.parts[part].users.tolist(), dm.parts[part].items.tolist())) for part in ("val", "test")}
    targets = set()
    for part in ("next_val", "next_test"):
        samples = dm.parts[part]
        batch = samples.__getitems__(list(range(len(samples))))
        targets |= set(zip(batch["user"].tolist(), batch["target"].tolist()))
    assert len(targets) == 2 * 943
    assert not targets & train and not pairs["test"] & train and not pairs["val"] & train
    # the item-id CSR every pointwise history comes from holds exactly the shared events, the windows' items too
    hist, indptr = dm.training_data.items, dm.training_data.indptr
    hist_users = torch.repeat_interleave(torch.arange(943), indptr.diff())
    shared = set(zip(hist_users.tolist(), hist.tolist()))
    assert len(shared) == dm.stats["train_events"] == 80000 - 4000 - 2 * 943
    assert train < shared and set(zip(users[items > 0].tolist(), items[items > 0].tolist())) == shared
    # every window item carries its own rating from u.data
    table = MovieLens100K(str(data_root / "ml-100k")).read()  # raw ids; rows are users and items sorted by id
    rating_of = dict(zip(zip(table["user"], table["item"]), table["rating"].astype(float)))
    user_ids = np.sort(table["user"].unique())
    real = items > 0
    assert all(rating_of[(user_ids[u], dm.item_ids[i - 1])] == r
               for u, i, r in zip(users[real].tolist(), items[real].tolist(), ratings[real].tolist()))
