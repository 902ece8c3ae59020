"""Pointwise (intent/value) data: splits partition the ratings, histories hold only earlier training items."""
import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.ratings import (
    RandomHoldout,
    RandomKFold,
    RatingDataModule,
    history_csr,
    recent_history,
)
from recforge.errors import RecforgeError


def test_kfold_partitions_all_ratings_and_folds_cover_everything() -> None:
    tests = []
    for fold in range(5):
        s = RandomKFold(5, fold, seed=3, val_fraction=0.1)(103)
        parts = np.concatenate([s.train, s.val, s.test])
        assert sorted(parts.tolist()) == list(range(103))  # disjoint and complete
        assert len(s.test) in (20, 21) and len(s.val) == round((103 - len(s.test)) * 0.1)
        tests.append(s.test)
    assert sorted(np.concatenate(tests).tolist()) == list(range(103))  # every rating is tested exactly once
    assert np.array_equal(RandomKFold(5, 2, seed=3)(103).test, RandomKFold(5, 2, seed=3)(103).test)


def test_holdout_sizes() -> None:
    s = RandomHoldout(test_fraction=0.2, val_fraction=0.25, seed=0)(100)
    assert (len(s.train), len(s.val), len(s.test)) == (60, 20, 20)
    assert sorted(np.concatenate([s.train, s.val, s.test]).tolist()) == list(range(100))


@pytest.mark.parametrize("bad", [dict(num_folds=1), dict(fold=5), dict(val_fraction=0.0)])
def test_kfold_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(RecforgeError, match="split"):
        RandomKFold(**bad)


def test_recent_history_drops_the_target_and_keeps_time_order() -> None:
    # user 0 trained on items 5 (t=3), 7 (t=1), 9 (t=2); user 1 on item 4
    hist, indptr = history_csr(np.array([0, 0, 0, 1]), np.array([5, 7, 9, 4]), np.array([3, 1, 2, 0]), 2)
    assert hist.tolist() == [7, 9, 5, 4] and indptr.tolist() == [0, 3, 4]
    h = recent_history(hist, indptr, torch.tensor([0, 0, 1, 0]), torch.tensor([9, 8, 4, 5]), max_len=2)
    assert h.tolist() == [[7, 5],   # target 9 removed, the two most recent others
                          [9, 5],   # target not in history: the two most recent
                          [0, 0],   # user 1's only item is the target
                          [7, 9]]   # target 5 (the latest) removed


class _Table:
    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
    def read(self) -> pd.DataFrame:
        return self.df.copy()
    def item_text(self) -> None:
        return None
    def source_files(self) -> list:
        return []


def test_datamodule_labels_and_no_leakage() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 20, 400), "item": rng.integers(0, 30, 400),
                       "rating": rng.integers(1, 6, 400).astype(float), "timestamp": np.arange(400)})
    df = df.drop_duplicates(["user", "item", "timestamp"])
    dm = RatingDataModule("t", _Table(df), RandomKFold(4, 1, seed=0), max_len=100, threshold=4)
    dm.setup()
    test = dm.parts["test"]
    batch = test.__getitems__(list(range(len(test))))
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    train = dm.parts["train"]
    train_pairs = set(zip(train.users.tolist(), train.items.tolist()))
    for u, i, h in zip(batch["user"].tolist(), batch["item"].tolist(), batch["history"].tolist()):
        assert i not in h  # the target never in its own history
        assert all((u, j) in train_pairs for j in h if j)  # only training items of that user
    assert dm.stats["train_samples"] + dm.stats["val_samples"] + dm.stats["test_samples"] == len(df)
