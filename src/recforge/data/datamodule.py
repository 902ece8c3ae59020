"""LightningDataModule for next-item prediction: read -> preprocess -> cache -> split -> padded tensors.

Tensors are built once per dataset; batches are dicts of tensors fetched with one vectorised gather per batch
(``__getitems__``), so there is no per-sample Python in the training loop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from recforge.data.cold import choose_cold_items, cold_target_counts, hold_out_items
from recforge.data.online import (
    events_before,
    extend_item_map,
    keep_prefixes,
    windows_since,
)
from recforge.data.preprocess import (
    Sequences,
    deduplicate,
    filter_min_rating,
    k_core,
    statistics,
    to_sequences,
)
from recforge.data.splits import (
    LeaveOneOut,
    NoTimestamps,
    SequencesSplit,
    Split,
    repeated_targets,
    target_sets,
    training_windows,
    window_new_targets,
)
from recforge.errors import RecforgeError
from recforge.rules import (
    ABSENT,
    BOOLEAN,
    NUMBER,
    Arguments,
    check_arguments,
    int_at_least,
    number_in,
    optional,
    part_class,
    rule_table,
)

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # 2: duplicates_removed stored with the sequences; 3: timestamps


class Reader(Protocol):
    has_timestamps: bool  # the timestamp column holds times in seconds, not only an order (recforge.data.readers)

    def read(self) -> pd.DataFrame: ...
    def item_text(self) -> pd.DataFrame | None: ...
    def source_files(self) -> list[Path]: ...


def _identity(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return batch


def trim_left_padding(items: Tensor, keep: int = 1) -> Tensor:
    """Drop leading columns that are padding in every row (at least ``keep`` columns stay). (B, T) -> (B, T')."""
    longest = int((items > 0).sum(dim=1).max()) if items.numel() else 0
    return items[:, items.shape[1] - max(longest, keep):]


@dataclass(frozen=True)
class TrainingData:
    """The training interactions, for parts fitted from data rather than by gradients (``FitsData``).

    item_counts: (N+1,) training interactions per item id; indptr (U+1,) and items (n_train,): the training part of
    every user's sequence as CSR, user u's items ``items[indptr[u]:indptr[u + 1]]`` in time order (all int64).
    """

    item_counts: Tensor
    indptr: Tensor
    items: Tensor

    @property
    def num_users(self) -> int:
        return self.indptr.shape[0] - 1

    @classmethod
    def from_sequences(cls, items: np.ndarray, indptr: np.ndarray, train_lengths: np.ndarray,
                       num_items: int) -> TrainingData:
        """The first ``train_lengths[u]`` items of each user's sequence (CSR ``items``/``indptr``)."""
        lengths = np.diff(indptr)  # (U,)
        position = np.arange(len(items)) - np.repeat(indptr[:-1], lengths)  # (n,) index inside its sequence
        train = items[position < np.repeat(train_lengths, lengths)]  # (n_train,)
        train_indptr = np.concatenate([[0], np.cumsum(train_lengths)]).astype(np.int64)  # (U+1,)
        counts = np.bincount(train, minlength=num_items + 1)  # (N+1,)
        return cls(torch.from_numpy(counts), torch.from_numpy(train_indptr), torch.from_numpy(train.astype(np.int64)))

    @classmethod
    def from_counts(cls, item_counts: Tensor) -> TrainingData:
        """Item counts without per-user interactions (enough for popularity; tests, hand-made counts)."""
        return cls(item_counts, torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long))


class TrainWindows(Dataset):
    """Training windows of max_len + 1 item ids, left-padded with 0, and the user row of each window (batch key
    ``user``, read by encoders with ``uses_users``; without ``users`` batches have no ``user`` key). Overlapping
    windows (``dataset.train_stride``) also carry ``new_targets``: how many of the window's last targets it owns
    (batch key ``new_targets``; the training step counts only those)."""

    def __init__(self, windows: Tensor, users: Tensor | None = None, new_targets: Tensor | None = None) -> None:
        self.windows = windows  # (W, L+1)
        self.users = users  # (W,) or None
        self.new_targets = new_targets  # (W,) or None

    def __len__(self) -> int:
        return self.windows.shape[0]

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(index)
        batch = {"items": trim_left_padding(self.windows[idx], keep=2)}  # (B, <= L+1)
        if self.users is not None:
            batch["user"] = self.users[idx]  # (B,)
        if self.new_targets is not None:
            batch["new_targets"] = self.new_targets[idx]  # (B,)
        return batch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])


class LengthBucketBatchSampler(BatchSampler):
    """Batches of similar length: indices from ``sampler`` are taken ``bucket_batches`` batches at a time,
    sorted by length inside that pool, cut into batches, and the batches shuffled.

    Trimmed batches then carry little padding (a large saving on short-sequence data such as Amazon Beauty)
    while the order stays random. Lightning swaps ``sampler`` for a DistributedSampler under DDP.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, lengths: Tensor,
                 bucket_batches: int = 50) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.bucket_batches = lengths, bucket_batches

    def __iter__(self):  # type: ignore[override]
        pool_size = self.batch_size * self.bucket_batches
        pool: list[int] = []
        for index in self.sampler:
            pool.append(index)
            if len(pool) == pool_size:
                yield from self._batches(pool)
                pool = []
        if pool:
            yield from self._batches(pool)

    def _batches(self, pool: list[int]) -> list[list[int]]:
        order = torch.as_tensor(pool)[torch.argsort(self.lengths[pool], stable=True)].tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        return [batches[i] for i in torch.randperm(len(batches)).tolist()]


class TargetBudgetBatchSampler(BatchSampler):
    """Batches holding about ``budget`` training targets each instead of a fixed number of windows.

    Short windows carry few targets, so a fixed number of windows makes the step size follow the sequence lengths
    (Beauty: 256 windows hold about 1,700 targets); a target budget gives every optimiser step the same amount of
    signal, as a batch of ``budget`` samples does in frameworks that train on one target per sample (RecBole),
    without encoding every prefix separately. The epoch's windows (with ``lengths``: sorted by length inside pools of
    ``bucket_batches`` batches, alternately up and down) are cut at equal shares of their cumulative target count into exactly ``len(self)``
    non-empty batches, which are then shuffled. The batch count depends only on ``len(sampler)``, so under DDP
    (Lightning swaps ``sampler`` for a DistributedSampler) every process makes the same number of steps.
    """

    def __init__(self, sampler: Sampler[int], budget: int, targets: Tensor, lengths: Tensor | None = None,
                 bucket_batches: int = 50) -> None:
        self.sampler, self.budget, self.bucket_batches = sampler, budget, bucket_batches
        self.targets = targets  # (W,) training targets of each window
        self.lengths = lengths  # (W,) or None: no length bucketing
        self.batch_size, self.drop_last = None, False  # variable batch sizes (read by Lightning as "none fixed")

    def __len__(self) -> int:
        expected = len(self.sampler) * float(self.targets.float().mean())  # this process's share of the targets
        return max(1, min(len(self.sampler), math.ceil(expected / self.budget)))

    def __iter__(self):  # type: ignore[override]
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)  # (W',)
        if self.lengths is not None:
            pool = self.budget * self.bucket_batches // max(1, int(self.targets.float().mean().ceil()))
            # pools sorted up, down, up, ...: a batch cut across two pools joins their longest (or shortest) windows
            pools = [chunk[torch.argsort(self.lengths[chunk], stable=True, descending=bool(i % 2))]
                     for i, chunk in enumerate(order.split(max(1, pool)))]
            order = torch.cat(pools) if pools else order
        batches = budget_cuts(self.targets[order], len(self))
        chunks = order.tensor_split(batches)
        yield from (chunks[i].tolist() for i in torch.randperm(len(chunks)).tolist())


def budget_cuts(targets: Tensor, num_batches: int) -> Tensor:
    """Where to cut a sequence of windows with ``targets`` (W,) targets each into ``num_batches`` non-empty runs of
    about equal target counts: the (num_batches - 1,) start indices of runs 2 .. num_batches, strictly increasing.
    A window goes to the run that holds the middle of its targets."""
    count = len(targets)
    num_batches = max(1, min(num_batches, count))
    middle = targets.double().cumsum(0) - targets.double() / 2  # (W,) cumulative position of each window's middle
    share = float(targets.sum()) / num_batches
    cuts = torch.searchsorted(middle, torch.arange(1, num_batches, dtype=torch.double) * share)  # (n-1,)
    # every run non-empty: cut k at least k and at most count - (n - k)
    k = torch.arange(1, num_batches)
    cuts = torch.minimum(torch.maximum(cuts, k), count - num_batches + k)
    # strictly increasing: cuts - k non-decreasing (stays within [0, count - num_batches])
    return torch.cummax(cuts - k, 0).values + k if len(cuts) else cuts


class LengthSortedSampler(Sampler[int]):
    """Every index once, shortest first (a stable sort: equal lengths keep index order), the same every epoch.

    For evaluation: consecutive samples have similar lengths, so trimmed batches carry little padding. Under DDP
    Lightning wraps it in a DistributedSamplerWrapper (without shuffling), so each process reads an interleaved
    slice of this order.
    """

    def __init__(self, lengths: Tensor) -> None:
        self.order = torch.argsort(lengths, stable=True)  # (S,)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):  # type: ignore[override]
        return iter(self.order.tolist())


class EvalSamples(Dataset):
    """(user, target position) samples: input = the max_len items before the target, history = all of them,
    user = the sample's user row; batch key ``target`` (B,).

    (user, cut position, end position) samples (a :class:`~recforge.data.splits.SequencesSplit`) have the
    distinct items in [cut, end) as targets, batch key ``targets`` (B, T) right-padded with 0 (and no ``target``);
    input and history end at the cut."""

    def __init__(self, items: Tensor, indptr: Tensor, samples: Tensor, max_len: int) -> None:
        self.items, self.indptr, self.max_len = items, indptr, max_len  # (n,), (U+1,)
        self.users, self.positions = samples[:, 0], samples[:, 1]  # (S,), (S,)
        self.target_indptr: Tensor | None = None  # (S+1,) CSR of the target sets, None: one target per sample
        if samples.shape[1] == 3:
            sets_indptr, sets = target_sets(items.numpy(), indptr.numpy(), samples.numpy())
            self.target_indptr, self.target_items = torch.from_numpy(sets_indptr), torch.from_numpy(sets)

    @property
    def num_targets(self) -> int:
        """Targets over all samples (distinct per sample)."""
        return len(self) if self.target_indptr is None else int(self.target_indptr[-1])

    def __len__(self) -> int:
        return self.users.shape[0]

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(index)
        start = self.indptr[self.users[idx]]  # (B,)
        pos = self.positions[idx]  # (B,)
        target = self.items[start + pos]  # (B,)
        flat = start[:, None] + pos[:, None] + torch.arange(-self.max_len, 0)[None, :]  # (B, L)
        inputs = torch.where(flat >= start[:, None], self.items[flat.clamp(min=0)], 0)  # (B, L) left-padded
        steps = torch.arange(max(int(pos.max()), 1))[None, :]  # (1, P), P = longest history in the batch
        hflat = (start[:, None] + steps).clamp(max=len(self.items) - 1)  # (B, P)
        history = torch.where(steps < pos[:, None], self.items[hflat], 0)  # (B, P) right-padded
        batch = {"input": trim_left_padding(inputs), "history": history, "index": idx, "user": self.users[idx]}
        if self.target_indptr is None:
            return {**batch, "target": target}
        return {**batch, "targets": self._target_sets(idx)}

    def _target_sets(self, idx: Tensor) -> Tensor:
        """(B, T) the samples' target sets, right-padded with 0 (T = the largest set in the batch)."""
        assert self.target_indptr is not None
        first = self.target_indptr[idx]  # (B,)
        counts = self.target_indptr[idx + 1] - first  # (B,) >= 1
        steps = torch.arange(int(counts.max()))[None, :]  # (1, T)
        flat = (first[:, None] + steps).clamp(max=len(self.target_items) - 1)  # (B, T)
        return torch.where(steps < counts[:, None], self.target_items[flat], 0)  # (B, T)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])


# the argument rules of every datamodule's loaders (recforge.rules)
LOADER_RULES = rule_table(batch_size=int_at_least(1), eval_batch_size=int_at_least(1), num_workers=int_at_least(0))


def stride_within_window(args: Arguments) -> str | None:
    """Overlapping training windows end at most one window length apart (a larger stride would skip targets)."""
    stride, max_len = args["train_stride"], args["max_len"]
    if stride is ABSENT or stride is None or max_len is ABSENT or stride <= max_len:
        return None
    return (f"{args.key('train_stride')}={stride} must be <= {args.key('max_len')}={max_len} "
            "(windows further apart would leave targets out of training)")


def budget_holds_a_window(args: Arguments) -> str | None:
    """A target budget holds at least one whole window's targets (up to max_len), or a batch could not be cut."""
    budget, max_len = args["batch_targets"], args["max_len"]
    if budget is ABSENT or budget is None or max_len is ABSENT or budget >= max_len:
        return None
    return (f"{args.key('batch_targets')}={budget} must be >= {args.key('max_len')}={max_len}: one training window "
            "holds up to max_len targets (or null: batches of dataset.batch_size windows)")


def cold_items_need_leave_one_out(args: Arguments) -> str | None:
    """A cold-start split holds cold items out as leave-one-out validation and test targets only."""
    cold, split = args["cold_items"], part_class(args["split"])
    if cold is ABSENT or cold == 0 or split is None or issubclass(split, LeaveOneOut):
        return None
    return (f"{args.key('cold_items')}={cold} needs dataset/split=leave_one_out (cold items are held out as "
            f"validation and test targets only), not {split.__name__}")


class SequenceDataModule(L.LightningDataModule):
    """Next-item data: one reader, preprocessing options, a split and the window length."""

    sample_kind = "sequences"  # what it makes; its task declares the same (checked by recforge.run.validate)
    # recforge.rules: checked in the config and here
    argument_rules = rule_table(
        max_len=int_at_least(2), **LOADER_RULES, min_rating=optional(NUMBER), user_k=int_at_least(0),
        item_k=int_at_least(0), bucket_by_length=BOOLEAN, cold_items=number_in(0, 1), cold_seed=int_at_least(0),
        train_stride=optional(int_at_least(1)), since=optional(NUMBER), until=optional(NUMBER),
        batch_targets=optional(int_at_least(1)),
    )
    argument_checks = (stride_within_window, budget_holds_a_window, cold_items_need_leave_one_out)

    def __init__(
        self,
        name: str,
        reader: Reader,
        split: Callable[[np.ndarray], Split] | SequencesSplit,
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        min_rating: float | None = None,
        user_k: int = 0,
        item_k: int = 0,
        cache_dir: str | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        root: str | None = None,
        cold_items: float = 0.0,
        cold_seed: int = 0,
        train_stride: int | None = None,
        since: float | None = None,
        until: float | None = None,
        batch_targets: int | None = None,
    ) -> None:
        super().__init__()
        # train_stride and cold_items keep their own wording here (pinned by tests/data), checked first
        if train_stride is not None and not 1 <= train_stride <= max_len:
            raise RecforgeError(f"dataset.train_stride={train_stride} must be between 1 and dataset.max_len={max_len} "
                                "(or null: windows end every max_len items and do not overlap).")
        # overlapping training windows: one ends every train_stride items (None = max_len, no overlap)
        self.train_stride = None if train_stride == max_len else train_stride
        if not 0 <= cold_items < 1:
            raise RecforgeError(f"dataset.cold_items={cold_items} must be a fraction in [0, 1).")
        check_arguments(SequenceDataModule, "dataset", max_len=max_len, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, num_workers=num_workers, min_rating=min_rating,
                        user_k=user_k, item_k=item_k, bucket_by_length=bucket_by_length, cold_items=cold_items,
                        cold_seed=cold_seed, train_stride=train_stride, split=split, batch_targets=batch_targets)
        self.name, self.reader, self.split_fn, self.max_len = name, reader, split, max_len
        self.root = root  # the data root the reader's path came from (named in error messages)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.bucket_by_length = bucket_by_length
        # training batches of about this many targets instead of batch_size windows (None: batch_size windows)
        self.batch_targets = batch_targets
        self.min_rating, self.user_k, self.item_k = min_rating, user_k, item_k
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.sequences: Sequences | None = None
        self.stats: dict[str, float] = {}
        # cold-start split (recforge.data.cold): this fraction of the items is held out of training, with its
        # own seed so every model and training seed sees the same cold set; 0 = off
        self.cold_fraction, self.cold_seed = cold_items, cold_seed
        self.cold_items = torch.zeros(0, dtype=torch.bool)  # (N+1,) True = cold item, set by setup()
        # learning from new events (recforge.data.online): only events before ``until`` are read; only events
        # from ``since`` on are training targets; base_item_ids (set by init_from) = the item map to extend
        self.since, self.until = since, until
        self.base_item_ids: list[str] | None = None

    # ---- building and caching -------------------------------------------------------------------------
    def _cache_key(self) -> str:
        files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.reader.source_files() if Path(p).exists()]
        params = [type(self.reader).__qualname__, sorted((k, repr(v)) for k, v in vars(self.reader).items()),
                  files, self.min_rating, self.user_k, self.item_k, CACHE_VERSION]
        return hashlib.sha256(json.dumps(params, default=str).encode()).hexdigest()[:16]

    def cache_path(self) -> Path | None:
        """The cache file of these sequences (reader, its parameters and files, filters), or None without cache_dir."""
        return self.cache_dir / f"{self.name}-{self._cache_key()}.npz" if self.cache_dir else None

    def _source(self) -> str:
        """Where the interactions came from, for messages: the reader's first file, or its class."""
        files = self.reader.source_files()
        return str(files[0]) if files else type(self.reader).__name__

    def _build(self) -> tuple[Sequences, int]:
        """Read, filter and remap; returns the sequences and how many duplicate rows were removed."""
        return self.preprocess(self.reader.read())

    def preprocess(self, df: pd.DataFrame) -> tuple[Sequences, int]:
        """Filter and remap the reader's interactions; returns the sequences and how many duplicate rows were
        removed. (``load_sequences`` calls it on ``reader.read()``; a benchmark can time the two apart.)"""
        read = len(df)
        df = filter_min_rating(df, self.min_rating)
        if len(df) == 0:
            raise RecforgeError(
                f"dataset '{self.name}': none of the {read} interactions read from {self._source()} has a rating "
                f">= dataset.min_rating={self.min_rating}; lower dataset.min_rating or set it to null."
            )
        unique = deduplicate(df)
        removed = len(df) - len(unique)
        if removed:
            log.info("dataset %s: removed %d duplicate interactions (same user, item and timestamp)",
                     self.name, removed)
        df = k_core(unique, max(self.user_k, 1), max(self.item_k, 1))
        if len(df) == 0:
            raise RecforgeError(
                f"dataset '{self.name}': filtering removed all {len(unique)} interactions read from {self._source()} "
                f"(dataset.min_rating={self.min_rating}, dataset.user_k={self.user_k}, dataset.item_k={self.item_k}: "
                f"every user needs at least {max(self.user_k, 1)} and every item at least {max(self.item_k, 1)} "
                "interactions); lower these values."
            )
        return to_sequences(df, timestamps=self.reader.has_timestamps), removed

    def load_sequences(self) -> Sequences:
        """Build the CSR sequences once, reusing the on-disk cache when its key matches."""
        if self.sequences is not None:
            return self.sequences
        path = self.cache_path()
        cached = _load_cache(path) if path is not None else None
        if cached is None:
            cached = self._build()
            if path is not None:
                _save_cache(path, *cached)
        seqs, removed = cached
        seqs, online_stats = self._online(seqs)
        self.sequences = seqs
        self.stats = {**statistics(seqs), "duplicates_removed": removed, **online_stats}
        return seqs

    def _online(self, seqs: Sequences) -> tuple[Sequences, dict[str, int]]:
        """``until``: the events before the cut only; ``base_item_ids``: the item map extended."""
        stats: dict[str, int] = {}
        if self.until is not None:
            seqs = keep_prefixes(seqs, events_before(seqs, self.until, "dataset.until"))
            if len(seqs.items) == 0:
                raise RecforgeError(f"dataset.until={self.until}: dataset '{self.name}' has no event before the cut.")
        if self.base_item_ids is not None:
            seqs, new = extend_item_map(seqs, self.base_item_ids)
            stats = {"items_before_update": len(self.base_item_ids) - 1, "new_items": new}
        return seqs, stats

    def prepare_data(self) -> None:
        self.load_sequences()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        seqs = self._hold_out_cold(self.load_sequences())
        split = self._split(seqs)
        items = torch.from_numpy(seqs.items)
        indptr = torch.from_numpy(seqs.indptr)
        idx = training_windows(seqs.indptr, split.train_lengths, self.max_len, self.train_stride)  # (W, L+1)
        window_users = np.searchsorted(seqs.indptr, idx[:, -1], side="right") - 1  # (W,) user of each last item
        owned = None if self.train_stride is None else window_new_targets(split.train_lengths, self.train_stride)
        if self.since is not None:  # only targets from the cut on: windows without one go, the rest count fewer
            owned_all = np.full(len(idx), self.max_len) if owned is None else owned  # (W,)
            end = idx[:, -1] - seqs.indptr[window_users]  # (W,) position of each window's last item
            keep, owned = windows_since(events_before(seqs, self.since), end, owned_all, window_users)
            idx, window_users, owned = idx[keep], window_users[keep], owned[keep]
            if len(idx) == 0:
                raise RecforgeError(f"dataset.since={self.since}: dataset '{self.name}' has no training event from the "
                                    "cut on (the training part ends at the validation cut); move the cut earlier.")
            self.stats["training_targets_since"] = int(owned.sum())
        windows = np.where(idx >= 0, seqs.items[np.maximum(idx, 0)], 0)
        new_targets = None if owned is None else torch.from_numpy(owned)  # (W,)
        self.train_set = TrainWindows(torch.from_numpy(windows), torch.from_numpy(window_users), new_targets)
        self.val_set = EvalSamples(items, indptr, torch.from_numpy(split.val), self.max_len)
        self.test_set = EvalSamples(items, indptr, torch.from_numpy(split.test), self.max_len)
        self.training_data = TrainingData.from_sequences(seqs.items, seqs.indptr, split.train_lengths, seqs.num_items)
        self.item_counts = self.training_data.item_counts  # (N+1,)
        self.stats.update({"train_windows": int(windows.shape[0]), "val_samples": len(self.val_set), "test_samples": len(self.test_set)})
        if split.val.shape[1] == 3:  # target sets: how many targets in all
            self.stats.update({"val_targets": self.val_set.num_targets, "test_targets": self.test_set.num_targets})
        self.stats.update(split.stats)  # e.g. users a global time split does not evaluate
        for stage, samples in (("val", split.val), ("test", split.test)):  # unreachable under mask_history=true
            self.stats[f"{stage}_repeated_targets"] = int(repeated_targets(seqs.items, seqs.indptr, samples).sum())
        if self.cold_fraction > 0:
            self.stats.update(self._cold_stats(seqs, split))
        log.info("dataset %s: %s", self.name, self.stats)

    def _hold_out_cold(self, seqs: Sequences) -> Sequences:
        """With ``cold_items`` > 0: the sequences without cold items before each user's last two (leave-one-out
        targets), and ``self.cold_items`` set; otherwise ``seqs`` itself (all items warm)."""
        self.cold_items = torch.from_numpy(choose_cold_items(seqs.num_items, self.cold_fraction, self.cold_seed))
        if self.cold_fraction == 0:
            return seqs
        # the split is leave-one-out: the constructor checks it (cold_items_need_leave_one_out)
        return hold_out_items(seqs, self.cold_items.numpy(), keep_last=2)

    def _cold_stats(self, seqs: Sequences, split: Split) -> dict[str, int]:
        """Cold items, interactions removed from training, and warm/cold target counts of validation and test."""
        stats = {"cold_items": int(self.cold_items.sum()),
                 "cold_interactions_removed": int(self.stats["interactions"]) - len(seqs.items)}
        for stage, samples in (("val", split.val), ("test", split.test)):
            warm, cold = cold_target_counts(seqs.items, seqs.indptr, samples, self.cold_items.numpy())
            stats.update({f"{stage}_warm_samples": warm, f"{stage}_cold_samples": cold})
        return stats

    def _split(self, seqs: Sequences) -> Split:
        """The configured split; a split that leaves nothing to validate or test names the dataset."""
        shape = f"{seqs.num_users} users, the longest with {int(seqs.lengths.max())} interactions"
        try:
            split = self.split_fn(seqs) if isinstance(self.split_fn, SequencesSplit) else self.split_fn(seqs.lengths)
        except NoTimestamps as exc:
            raise RecforgeError(f"{exc}; dataset '{self.name}' ({self._source()}) has none.") from None
        except RecforgeError as exc:
            raise RecforgeError(f"dataset '{self.name}' ({shape}): {exc}") from None
        empty = [name for name, rows in (("validation", split.val), ("test", split.test)) if len(rows) == 0]
        if empty:
            raise RecforgeError(
                f"dataset '{self.name}' ({shape}): the split leaves no {' and no '.join(empty)} sample; "
                "no user has enough interactions for a training, a validation and a test part."
            )
        return split

    @property
    def num_users(self) -> int:
        """User rows of the sequences (the ``user`` of every batch is one of 0 .. num_users - 1)."""
        return self.load_sequences().num_users

    @property
    def num_items(self) -> int:
        return self.load_sequences().num_items

    # ---- loaders --------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=_identity,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self.batch_targets is not None:
            windows = self.train_set.windows
            targets = ((windows > 0).sum(dim=1) - 1 if self.train_set.new_targets is None
                       else self.train_set.new_targets)  # (W,) targets each window trains
            lengths = (windows > 0).sum(dim=1) if self.bucket_by_length else None  # (W,)
            sampler = TargetBudgetBatchSampler(RandomSampler(self.train_set), self.batch_targets, targets, lengths)
            return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=_identity,
                              num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        if not self.bucket_by_length:
            return self._loader(self.train_set, self.batch_size, shuffle=True)
        lengths = (self.train_set.windows > 0).sum(dim=1)  # (W,)
        sampler = LengthBucketBatchSampler(RandomSampler(self.train_set), self.batch_size, False, lengths)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=_identity,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, samples: EvalSamples) -> DataLoader:
        """Evaluation batches; with ``bucket_by_length`` the samples run shortest history first (a fixed order),
        so each batch is trimmed to little padding. Ranks are kept by sample index, so the order does not matter
        beyond float rounding (a trimmed batch sums in another order, which can flip an exact near-tie)."""
        if not self.bucket_by_length:
            return self._loader(samples, self.eval_batch_size, shuffle=False)
        return DataLoader(samples, batch_size=self.eval_batch_size, sampler=LengthSortedSampler(samples.positions),
                          collate_fn=_identity, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)


def _save_cache(path: Path, seqs: Sequences, duplicates_removed: int) -> None:
    """Write the cache atomically: a temp file in the same folder, renamed over ``path`` only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, items=seqs.items, indptr=seqs.indptr, ratings=seqs.ratings, timestamps=seqs.timestamps,
                     user_ids=seqs.user_ids.astype(str), item_ids=seqs.item_ids.astype(str),
                     duplicates_removed=np.int64(duplicates_removed))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cache(path: Path) -> tuple[Sequences, int] | None:
    """Load a cache file (sequences, duplicates removed), or None when it is absent or damaged (it is then
    rebuilt). Every array is read in full and checked before anything is used: a damaged file never loads
    half-way."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            seqs = Sequences(items=z["items"], indptr=z["indptr"], ratings=z["ratings"],
                             user_ids=z["user_ids"].astype(object), item_ids=z["item_ids"].astype(object),
                             timestamps=z["timestamps"])
            removed = z["duplicates_removed"]
        problem = _cache_problem(seqs, removed)
        if problem is not None:
            raise ValueError(problem)
        return seqs, int(removed)
    except Exception as exc:  # noqa: BLE001 - any failure to read a cache means: rebuild it
        log.warning("dataset cache %s is damaged (%s: %s); rebuilding it", path, type(exc).__name__, exc)
        return None


def _cache_problem(seqs: Sequences, removed: np.ndarray) -> str | None:
    """What is inconsistent in loaded cache arrays, or None when they form valid CSR sequences."""
    if seqs.items.dtype != np.int64 or seqs.indptr.dtype != np.int64 or seqs.items.ndim != 1 or seqs.indptr.ndim != 1:
        return "items and indptr must be 1-D int64 arrays"
    if removed.shape != () or removed.dtype.kind not in "iu" or int(removed) < 0:
        return "duplicates_removed must be a count"
    if len(seqs.indptr) != len(seqs.user_ids) + 1 or seqs.indptr[0] != 0 or seqs.indptr[-1] != len(seqs.items):
        return (f"indptr of length {len(seqs.indptr)} does not index {len(seqs.user_ids)} users and "
                f"{len(seqs.items)} items")
    if (np.diff(seqs.indptr) < 0).any():
        return "indptr is not non-decreasing"
    if len(seqs.ratings) != len(seqs.items) or len(seqs.item_ids) < 1 or seqs.item_ids[0] != "":
        return "ratings or item ids do not match the items"
    if seqs.timestamps is None or seqs.timestamps.shape != seqs.items.shape or seqs.timestamps.dtype != np.float64:
        return "timestamps do not match the items"
    if len(seqs.items) and (seqs.items.min() < 1 or seqs.items.max() > seqs.num_items):
        return f"item ids outside 1..{seqs.num_items}"
    return None
