"""Data for ``task=multi``: next-item windows and (history, user, item, rating) samples from one rating table.

Decision. One k-fold split of the ratings (Surprise's protocol, :class:`recforge.data.ratings.RandomKFold`) decides
everything: the fold's test ratings are the pointwise test samples, its validation part (``val_fraction`` of the
training ratings) the pointwise validation samples. The next-item task sees only the fold's *training* ratings:
each user's training ratings in time order form their sequence, split leave-one-out (last item: next-item test
target, second to last: validation target). Those two held-out items per user are removed from every training
window and every pointwise history, so what remains, the "shared training events", is the only thing either task
trains on or reads as input:

- training: windows of the shared events (``max_len + 1`` items, as the next-item task cuts them). Every target of
  a window is also a pointwise training sample: the encoder's state before it (the same state that predicts it as
  the next item) scores its rating and intent. A user's first event is never a target, so it is no pointwise
  training sample (it has no history);
- validation/test: pointwise samples are fold ratings outside the shared events, each with the user's shared events
  before it in time as its history (the ``max_len`` most recent); next-item targets are the two held-out events.

Leakage. A pointwise test rating is in no training window and no history (only its item may be a next-item
candidate, like every item). A next-item validation/test target is in no window and no history: were it a pointwise
training sample (u, i, r), the shared item table would be pulled towards user u's state for item i, teaching the
ranking the held-out answer. The next-item test input adds the validation target to the training events, as
leave-one-out does. The ranking masks the user's earlier items (history = the input), never their pointwise
validation/test items (the history mask depends on the history only), so those stay candidates: next-item numbers
are lower than a leave-one-out run on all ratings (experiment=ml100k_sasrec).

Batches. Training: ``batch_size`` windows per step with the user of each window and the rating of every window item
(``items``, ``user``, ``rating``, ``intent`` = rating >= ``threshold``; one encoder pass serves every head). An epoch
is one pass over the windows. Validation and test: two loaders, dataloader 0 next-item samples, dataloader 1
pointwise samples (``history``, ``user``, ``item``, ``rating``, ``intent``); each head is scored on its own samples.

Earlier setup (until 2026-12-04): each step also drew 512 pointwise samples and encoded each one's own history, so
an epoch (one pass over those samples) cost about 46 next-item epochs of encoder work.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recforge.data.datamodule import (
    LOADER_RULES,
    EvalSamples,
    Reader,
    TrainingData,
    TrainWindows,
    _identity,
)
from recforge.data.ratings import (
    LabelledDataModule,
    PointwiseSamples,
    RandomHoldout,
    RandomKFold,
    rated_table,
)
from recforge.data.splits import LeaveOneOut, training_windows
from recforge.errors import RecforgeError
from recforge.rules import check_arguments, int_at_least, rule_table

log = logging.getLogger(__name__)


def user_sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray,
                   num_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ratings ``rows`` as per-user sequences in time order (ties: row order): CSR items (n,), indptr (U+1,),
    and the rating row behind each item (n,)."""
    order = rows[np.lexsort((rows, times[rows], users[rows]))]  # (n,)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users[order], minlength=num_users))]).astype(np.int64)
    return items[order].astype(np.int64), indptr, order


def held_out_rows(indptr: np.ndarray, order: np.ndarray, train_lengths: np.ndarray) -> np.ndarray:
    """Rating rows past each user's first ``train_lengths[u]`` sequence items (the next-item val/test targets)."""
    lengths = np.diff(indptr)  # (U,)
    position = np.arange(len(order)) - np.repeat(indptr[:-1], lengths)  # (n,)
    return order[position >= np.repeat(train_lengths, lengths)]


class TwoLabelSamples(PointwiseSamples):
    """Pointwise samples labelled with the rating (``rating``) and the intent (``intent``: rating >= threshold)."""

    def __init__(self, *args: object, threshold: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.threshold = threshold

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        batch = super().__getitems__(index)
        rating = batch.pop("label")  # (B,)
        return {**batch, "rating": rating, "intent": (rating >= self.threshold).float()}


class RatedWindows(TrainWindows):
    """Training windows with the user of each window (``user``) and the rating of every window item: batch keys
    ``rating`` and ``intent`` (rating >= threshold), (B, <= L+1) aligned with ``items`` (0 at padding)."""

    def __init__(self, windows: Tensor, users: Tensor, ratings: Tensor, threshold: float) -> None:
        super().__init__(windows, users)
        self.ratings, self.threshold = ratings, threshold  # (W, L+1)

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        batch = super().__getitems__(index)
        rating = self.ratings[torch.as_tensor(index)][:, -batch["items"].shape[1]:]  # (B, <= L+1), trimmed alike
        return {**batch, "rating": rating, "intent": (rating >= self.threshold).float()}


class MultiTaskDataModule(LabelledDataModule):
    """Next-item windows and rated samples of one rating table, split as the module docstring describes."""

    sample_kind = "multi"  # what it makes; its task declares the same (checked by recforge.run.validate)
    argument_rules = rule_table(max_len=int_at_least(2), **LOADER_RULES)

    def __init__(self, name: str, reader: Reader, split: RandomKFold | RandomHoldout, max_len: int = 50,
                 batch_size: int = 256, eval_batch_size: int = 1024, threshold: float = 4, num_workers: int = 0,
                 root: str | None = None) -> None:
        super().__init__()
        check_arguments(MultiTaskDataModule, "dataset", max_len=max_len, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.name, self.reader, self.split_fn, self.max_len = name, reader, split, max_len
        self.batch_size = batch_size  # training windows per step
        self.eval_batch_size, self.num_workers, self.threshold, self.root = eval_batch_size, num_workers, threshold, root
        self.parts: dict[str, Dataset] = {}
        self.stats: dict[str, float] = {}
        self.train_means: dict[str, float] = {}  # mean training label per label key (heads start their bias there)
        self.item_ids: np.ndarray | None = None
        self.num_users = self.num_items = 0

    def prepare(self) -> None:
        """Read, map ids, split and build both tasks' samples (once)."""
        if self.parts:
            return
        df = rated_table(self.reader, self.name)  # deduplicated rows with a rating
        users, user_ids = pd.factorize(df["user"], sort=True)
        items, item_ids = pd.factorize(df["item"], sort=True)
        items = items + 1  # 0 is padding
        self.num_users, self.num_items, self.item_ids = len(user_ids), len(item_ids), np.asarray(item_ids)
        ratings, times = df["rating"].to_numpy(np.float32), df["timestamp"].to_numpy()
        split = self.split_fn(len(df))
        seq_items, indptr, order = user_sequences(users, items, times, split.train, self.num_users)
        loo = LeaveOneOut()(np.diff(indptr))
        held = held_out_rows(indptr, order, loo.train_lengths)
        shared = np.setdiff1d(split.train, held)  # the shared training events (rating rows)
        self.training_data = TrainingData.from_sequences(seq_items, indptr, loo.train_lengths, self.num_items)
        hist, hist_indptr = self.training_data.items, self.training_data.indptr  # shared events per user, in time order
        for part, rows in (("val", split.val), ("test", split.test)):
            self.parts[part] = TwoLabelSamples(torch.as_tensor(users[rows], dtype=torch.long),
                                               torch.as_tensor(items[rows], dtype=torch.long),
                                               torch.as_tensor(ratings[rows]), hist, hist_indptr, self.max_len,
                                               threshold=self.threshold)
        windows = training_windows(indptr, loo.train_lengths, self.max_len)  # (W, L+1) flat indices, -1 = padding
        window_users = np.searchsorted(indptr, windows[:, -1], side="right") - 1  # (W,)
        window_ratings = np.where(windows >= 0, ratings[order[np.maximum(windows, 0)]], 0)  # (W, L+1)
        target_ratings = window_ratings[:, 1:][(windows[:, :-1] >= 0) & (windows[:, 1:] >= 0)]  # (T,) trained on
        self.parts["train"] = RatedWindows(torch.from_numpy(np.where(windows >= 0, seq_items[np.maximum(windows, 0)], 0)),
                                           torch.from_numpy(window_users), torch.from_numpy(window_ratings),
                                           self.threshold)
        seq, ptr = torch.from_numpy(seq_items), torch.from_numpy(indptr)
        self.parts["next_val"] = EvalSamples(seq, ptr, torch.from_numpy(loo.val), self.max_len)
        self.parts["next_test"] = EvalSamples(seq, ptr, torch.from_numpy(loo.test), self.max_len)
        if len(target_ratings) == 0:
            raise RecforgeError(f"dataset '{self.name}': no user has two training ratings left after the split, so "
                                "there is nothing to train on.")
        self.train_means = {"rating": float(target_ratings.mean()),
                            "intent": float((target_ratings >= self.threshold).mean())}
        self.stats = {"users": self.num_users, "items": self.num_items, "ratings": len(df),
                      "train_events": len(shared), "train_samples": len(target_ratings),
                      "val_samples": len(split.val), "test_samples": len(split.test),
                      "next_item_held_out": len(held), "train_windows": len(windows),
                      "next_item_val_samples": len(loo.val), "next_item_test_samples": len(loo.test),
                      "mean_train_label": self.train_means["rating"], "mean_train_intent": self.train_means["intent"]}
        log.info("dataset %s: %s", self.name, self.stats)

    def _loader(self, part: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.parts[part], batch_size=batch_size, shuffle=shuffle, collate_fn=_identity,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("next_val", self.eval_batch_size), self._loader("val", self.eval_batch_size)]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader("next_test", self.eval_batch_size), self._loader("test", self.eval_batch_size)]
