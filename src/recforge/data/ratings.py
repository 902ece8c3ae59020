"""Data for the intent and value tasks: (user, target item, label) samples with the user's history.

Every interaction with a rating is one sample. A split assigns samples to train, validation and test (random
k-fold as in Surprise's cross-validation, or a random hold-out). A sample's history is the user's *training*
items in time order, without the target itself, the most recent ``max_len`` of them (left-padded with 0), so no
validation or test label ever leaks into an input. Labels: the rating (value) or ``rating >= threshold`` (intent).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recforge.data.datamodule import LOADER_RULES, Reader, _identity
from recforge.data.preprocess import deduplicate
from recforge.errors import RecforgeError
from recforge.rules import check_arguments, int_at_least, rule_table

log = logging.getLogger(__name__)


@dataclass
class SampleSplit:
    """Row indices of the rating table for each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _carve_validation(train: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``val_fraction`` of the training rows becomes validation (for early stopping)."""
    shuffled = rng.permutation(train)
    n_val = int(round(len(train) * val_fraction))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def split_stats(split: SampleSplit, mean_train_label: float) -> dict[str, float]:
    """Samples per part and the mean training label (a value head starts its bias there), for dataset stats."""
    return {"train_samples": len(split.train), "val_samples": len(split.val), "test_samples": len(split.test),
            "mean_train_label": mean_train_label}


class RandomKFold:
    """Surprise's protocol: shuffle all ratings once (``seed``), cut them into ``num_folds`` equal folds; fold
    ``fold`` is the test set, the others train. ``val_fraction`` of the training rows validate (early stopping)."""

    def __init__(self, num_folds: int = 5, fold: int = 0, seed: int = 0, val_fraction: float = 0.05) -> None:
        if num_folds < 2 or not 0 <= fold < num_folds:
            raise RecforgeError(f"split: fold={fold} must be in [0, num_folds={num_folds}) and num_folds >= 2.")
        if not 0 < val_fraction < 1:
            raise RecforgeError(f"split.val_fraction={val_fraction} must be in (0, 1).")
        self.num_folds, self.fold, self.seed, self.val_fraction = num_folds, fold, seed, val_fraction

    def __call__(self, num_samples: int) -> SampleSplit:
        rng = np.random.default_rng(self.seed)
        folds = np.array_split(rng.permutation(num_samples), self.num_folds)
        test = np.sort(folds[self.fold])
        train = np.concatenate([f for k, f in enumerate(folds) if k != self.fold])
        train, val = _carve_validation(train, self.val_fraction, rng)
        return SampleSplit(train=train, val=val, test=test)


class RandomHoldout:
    """A random ``test_fraction`` of the rows is the test set; ``val_fraction`` of the rest validates."""

    def __init__(self, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> None:
        if not (0 < test_fraction < 1 and 0 < val_fraction < 1):
            raise RecforgeError(
                f"split: test_fraction={test_fraction} and val_fraction={val_fraction} must be in (0, 1)."
            )
        self.test_fraction, self.val_fraction, self.seed = test_fraction, val_fraction, seed

    def __call__(self, num_samples: int) -> SampleSplit:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(num_samples)
        n_test = int(round(num_samples * self.test_fraction))
        train, val = _carve_validation(order[n_test:], self.val_fraction, rng)
        return SampleSplit(train=train, val=val, test=np.sort(order[:n_test]))


def history_csr(users: np.ndarray, items: np.ndarray, times: np.ndarray, num_users: int) -> tuple[Tensor, Tensor]:
    """Training items per user in time order (ties: input order) as CSR: items (n,), indptr (U+1,)."""
    order = np.lexsort((np.arange(len(users)), times, users))
    counts = np.bincount(users, minlength=num_users)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return torch.as_tensor(items[order], dtype=torch.long), torch.as_tensor(indptr, dtype=torch.long)


def recent_history(hist: Tensor, indptr: Tensor, users: Tensor, targets: Tensor, max_len: int) -> Tensor:
    """The last ``max_len`` training items of each user other than the target, left-padded. (B, max_len)."""
    start, end = indptr[users], indptr[users + 1]  # (B,), (B,)
    flat = end[:, None] + torch.arange(-(max_len + 1), 0)[None, :]  # (B, L+1): one spare slot for the target
    window = torch.where(flat >= start[:, None], hist[flat.clamp(min=0)], 0)  # (B, L+1)
    window = torch.where(window == targets[:, None], 0, window)  # the target never sees itself
    keep = (window > 0).long()  # (B, L+1)
    order = torch.argsort(keep, dim=1, stable=True)  # padding first, items keep their time order
    return torch.gather(window, 1, order)[:, 1:]  # (B, L)


class PointwiseSamples(Dataset):
    """(user, item, label) samples; batches carry the user's recent training history."""

    def __init__(self, users: Tensor, items: Tensor, labels: Tensor, hist: Tensor, indptr: Tensor,
                 max_len: int) -> None:
        self.users, self.items, self.labels = users, items, labels  # (S,), (S,), (S,)
        self.hist, self.indptr, self.max_len = hist, indptr, max_len

    def __len__(self) -> int:
        return self.users.shape[0]

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(index)
        users, items = self.users[idx], self.items[idx]
        history = recent_history(self.hist, self.indptr, users, items, self.max_len)  # (B, L)
        longest = max(int((history > 0).sum(dim=1).max()), 1)
        return {"user": users, "item": items, "label": self.labels[idx], "history": history[:, -longest:],
                "index": idx}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])


def rated_table(reader: Reader, name: str) -> pd.DataFrame:
    """The reader's interactions, deduplicated, that have a rating (a dataset without any is a user error)."""
    df = deduplicate(reader.read())
    if df["rating"].isna().all():
        raise RecforgeError(f"dataset '{name}': the intent and value tasks need ratings, and "
                            f"{reader.source_files()[0] if reader.source_files() else 'the data'} has none.")
    return df[df["rating"].notna()].reset_index(drop=True)


class LabelledDataModule(L.LightningDataModule):
    """Samples with a label (a rating, a yes/no, a review's score): everything is built once in ``prepare()``,
    whose ``stats`` include the mean training label (a value or intent head starts its bias from it)."""

    stats: dict[str, float]

    def prepare(self) -> None:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def train_mean(self) -> float:
        return self.stats["mean_train_label"]


class RatingDataModule(LabelledDataModule):
    """Rated interactions as pointwise samples. ``threshold`` None: the label is the rating (value task);
    a number: the label is 1 when rating >= threshold, else 0 (intent task)."""

    sample_kind = "ratings"  # what it makes; its task declares the same (checked by recforge.run.validate)
    argument_rules = rule_table(max_len=int_at_least(2), **LOADER_RULES)  # recforge.rules: checked in the config and here

    def __init__(self, name: str, reader: Reader, split: RandomKFold | RandomHoldout, max_len: int = 50,
                 batch_size: int = 256, eval_batch_size: int = 1024, threshold: float | None = None,
                 num_workers: int = 0, root: str | None = None) -> None:
        super().__init__()
        check_arguments(RatingDataModule, "dataset", max_len=max_len, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.name, self.reader, self.split_fn, self.max_len = name, reader, split, max_len
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.threshold, self.root = threshold, root
        self.parts: dict[str, PointwiseSamples] = {}
        self.stats: dict[str, float] = {}
        self.item_ids: np.ndarray | None = None  # raw item id of internal id i at index i - 1
        self.num_users = self.num_items = 0

    def _table(self) -> pd.DataFrame:
        return rated_table(self.reader, self.name)

    def prepare(self) -> None:
        """Read, map ids, split and build the sample tensors (once)."""
        if self.parts:
            return
        df = self._table()
        users, user_ids = pd.factorize(df["user"], sort=True)
        items, item_ids = pd.factorize(df["item"], sort=True)
        items = items + 1  # 0 is padding
        self.num_users, self.num_items, self.item_ids = len(user_ids), len(item_ids), np.asarray(item_ids)
        ratings = df["rating"].to_numpy(np.float32)
        labels = ratings if self.threshold is None else (ratings >= self.threshold).astype(np.float32)
        split = self.split_fn(len(df))
        times = df["timestamp"].to_numpy()
        hist, indptr = history_csr(users[split.train], items[split.train], times[split.train], self.num_users)
        for part, rows in (("train", split.train), ("val", split.val), ("test", split.test)):
            self.parts[part] = PointwiseSamples(torch.as_tensor(users[rows], dtype=torch.long),
                                                torch.as_tensor(items[rows], dtype=torch.long),
                                                torch.as_tensor(labels[rows]), hist, indptr, self.max_len)
        self.stats = {"users": self.num_users, "items": self.num_items, "ratings": len(df),
                      **split_stats(split, float(labels[split.train].mean()))}
        log.info("dataset %s: %s", self.name, self.stats)

    def _loader(self, part: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(self.parts[part], batch_size=batch_size, shuffle=shuffle, collate_fn=_identity,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
