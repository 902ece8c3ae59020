"""Pure split functions over CSR sequences.

A split yields, per user, how many leading items are training items, and a list of evaluation samples for
validation and for test: (user row, position of the target in the user's sequence), or, for a split whose
samples have a set of targets (:class:`SequencesSplit`), (user row, cut position, end position) with the targets
``items[cut:end]``. The input of an evaluation sample is everything before the target (cut) position, so
validation and test targets never appear in training inputs or targets.

Splits are called with the sequence lengths (``split(lengths)``); a :class:`SequencesSplit` reads the sequences
themselves (their timestamps: ``split(seqs)``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recforge.data.preprocess import Sequences
from recforge.errors import RecforgeError
from recforge.rules import ABSENT, UNIT_OPEN, Arguments, check_arguments, rule_table


@dataclass
class Split:
    """train_lengths: (U,) items used for training per user; val/test: (S, 2) rows of (user, target position),
    or (S, 3) rows of (user, cut position, end position) for samples with a set of targets; stats: counts the
    split reports (dataset_stats.json), e.g. users it does not evaluate."""

    train_lengths: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)


class SequencesSplit(ABC):
    """A split that reads the sequences (their timestamps), not only their lengths: ``split(seqs) -> Split``.
    Its samples are (user, cut position, end position) rows: the targets are the set of items in [cut, end)."""

    @abstractmethod
    def __call__(self, seqs: Sequences) -> Split: ...


class NoTimestamps(RecforgeError):
    """A split needs interaction times and the sequences have none (the datamodule names the dataset)."""


class LeaveOneOut:
    """Last item of each user is the test target, the second to last the validation target."""

    def __call__(self, lengths: np.ndarray) -> Split:
        users = np.nonzero(lengths >= 3)[0]
        if users.size == 0:
            raise RecforgeError("split.leave_one_out: no user has the 3 interactions it needs (train, validation, test).")
        val = np.stack([users, lengths[users] - 2], axis=1)
        test = np.stack([users, lengths[users] - 1], axis=1)
        train_lengths = np.where(lengths >= 3, lengths - 2, 0)
        return Split(train_lengths=train_lengths.astype(np.int64), val=val.astype(np.int64), test=test.astype(np.int64))


def shares_below_one(first: str, second: str, why: str) -> Callable[[Arguments], str | None]:
    """An argument check (recforge.rules): two shares of the data, together, must leave some of it for a third
    part; ``why`` says which."""

    def check(args: Arguments) -> str | None:
        a, b = args[first], args[second]
        if a is ABSENT or b is ABSENT or a + b < 1:
            return None
        return f"{args.key(first)}={a} + {args.key(second)}={b} must be < 1 ({why})"

    return check


# a ratio split keeps a share of each sequence for test targets
split_leaves_test = shares_below_one("train", "val", "the rest of each sequence is the test part")


class TemporalRatio:
    """Per user in time order: the first ``train`` share trains, the next ``val`` share are validation
    targets and the rest are test targets (each user keeps at least one item in each part, or is dropped)."""

    # recforge.rules: checked in the config; the constructor says the same in one sentence (pinned by tests/data)
    argument_rules = rule_table(train=UNIT_OPEN, val=UNIT_OPEN)
    argument_checks = (split_leaves_test,)

    def __init__(self, train: float = 0.8, val: float = 0.1) -> None:
        if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
            raise RecforgeError(
                f"split: train={train} and val={val} must be in (0, 1) with train + val < 1."
            )
        self.train, self.val = train, val

    def __call__(self, lengths: np.ndarray) -> Split:
        n_train = np.maximum(1, np.floor(lengths * self.train + 1e-9)).astype(np.int64)  # 1e-9: 0.57 * 100 is 56.99...
        n_val = np.maximum(1, np.floor(lengths * self.val + 1e-9)).astype(np.int64)
        ok = lengths - n_train - n_val >= 1
        n_train, n_val = np.where(ok, n_train, 0), np.where(ok, n_val, 0)
        val = _ranges(n_train, n_train + n_val)
        test = _ranges(n_train + n_val, np.where(ok, lengths, 0))
        return Split(train_lengths=n_train, val=val, test=test)


# a global time split keeps the time before its validation cut for training
quantiles_leave_training = shares_below_one("val", "test", "the interactions before the validation cut are the "
                                            "training data")


class GlobalTemporal(SequencesSplit):
    """One global time line for all users (Ji et al., "A Critical Study on Data Leakage in Recommender System
    Offline Evaluation", TOIS 2023): nothing after a cut time is seen before that cut.

    The test cut is the ``1 - test`` quantile of all interaction timestamps, the validation cut the
    ``1 - val - test`` quantile (numpy's linear interpolation). Training data: each user's items before the
    validation cut. Validation sample of a user: input = items before the validation cut, targets = the set of
    items between the two cuts; test sample: input = items before the test cut (the validation period included),
    targets = the set of items from the test cut on. A user with no target after a cut, or no input before it,
    is not evaluated there (counted in ``stats``). A target that repeats an input item stays a target; under
    ``evaluation.mask_history=true`` it is unreachable (counted as ``unreachable``, as in leave-one-out).
    """

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(val=UNIT_OPEN, test=UNIT_OPEN)
    argument_checks = (quantiles_leave_training,)

    def __init__(self, val: float = 0.1, test: float = 0.1) -> None:
        check_arguments(GlobalTemporal, "dataset.split", val=val, test=test)
        self.val, self.test = val, test

    def cut_times(self, timestamps: np.ndarray) -> tuple[float, float]:
        """(validation cut, test cut): quantiles of all timestamps (n,)."""
        val_cut, test_cut = np.quantile(timestamps, [1 - self.val - self.test, 1 - self.test])
        return float(val_cut), float(test_cut)

    def __call__(self, seqs: Sequences) -> Split:
        if not seqs.has_timestamps:
            raise NoTimestamps("dataset.split=global_temporal needs timestamps")
        stamps = seqs.timestamps  # (n,) time-ordered inside each user
        val_cut, test_cut = self.cut_times(stamps)
        users = np.repeat(np.arange(seqs.num_users), seqs.lengths)  # (n,)
        before_val = np.bincount(users[stamps < val_cut], minlength=seqs.num_users)  # (U,) a prefix of each user
        before_test = np.bincount(users[stamps < test_cut], minlength=seqs.num_users)  # (U,)
        if before_val.sum() == 0:
            raise RecforgeError(
                f"dataset.split.val={self.val} + dataset.split.test={self.test} put the validation cut at time "
                f"{val_cut:.0f}, not after the first interaction (time {stamps.min():.0f}): no training interaction "
                "is left; lower them."
            )
        val, val_stats = _cut_samples(before_val, before_test, "val")
        test, test_stats = _cut_samples(before_test, seqs.lengths, "test")
        stats = {"val_cut_time": val_cut, "test_cut_time": test_cut, **val_stats, **test_stats}
        return Split(train_lengths=before_val.astype(np.int64), val=val, test=test, stats=stats)


def _cut_samples(cut: np.ndarray, end: np.ndarray, stage: str) -> tuple[np.ndarray, dict[str, int]]:
    """(S, 3) rows (user, cut, end) of the users with input (cut >= 1) and targets (end > cut), and how many
    users are left out for lack of either."""
    has_input, has_target = cut >= 1, end > cut  # (U,)
    users = np.flatnonzero(has_input & has_target)
    rows = np.stack([users, cut[users], end[users]], axis=1).astype(np.int64)
    stats = {f"{stage}_users_without_target": int((has_input & ~has_target).sum()),
             f"{stage}_users_without_input": int((~has_input & has_target).sum())}
    return rows, stats


def target_sets(items: np.ndarray, indptr: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct targets of (user, cut, end) samples (S, 3): items[cut:end] of each user without repeats, in
    order of first occurrence, as CSR (indptr (S+1,), items (R,)), int64."""
    counts = samples[:, 2] - samples[:, 1]  # (S,)
    sample = np.repeat(np.arange(len(samples)), counts)  # (R0,) sample of each target occurrence
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # (R0,)
    found = items[np.repeat(indptr[samples[:, 0]] + samples[:, 1], counts) + offsets]  # (R0,)
    _, first = np.unique(sample * (int(items.max(initial=0)) + 1) + found, return_index=True)
    keep = np.zeros(len(found), dtype=bool)
    keep[first] = True
    sets_indptr = np.concatenate([[0], np.cumsum(np.bincount(sample[keep], minlength=len(samples)))])
    return sets_indptr.astype(np.int64), found[keep].astype(np.int64)


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """(S, 2) rows (user, position) for every position in [starts[u], stops[u])."""
    counts = np.maximum(stops - starts, 0)
    users = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([users, np.repeat(starts, counts) + offsets], axis=1).astype(np.int64)


def _window_positions(train_lengths: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: transitions (U,) and windows (U,) ending every ``stride`` items; per window: its index j (W,)
    counted from the user's last window (0 = the window ending at the last training item)."""
    transitions = np.maximum(train_lengths - 1, 0)  # (U,)
    n_windows = -(-transitions // stride)  # (U,) ceil
    j = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # (W,)
    return transitions, n_windows, j


def training_windows(indptr: np.ndarray, train_lengths: np.ndarray, max_len: int,
                     stride: int | None = None) -> np.ndarray:
    """Flat indices of training windows of max_len + 1 items, cut from the end of each training sequence.

    Windows end every ``stride`` items (default ``max_len``: consecutive windows share one item, so every
    transition (i -> i+1) is a training target exactly once). A smaller stride makes windows overlap; each
    window then owns only its last targets (:func:`window_new_targets`), so each transition is still counted
    once, predicted from at least ``max_len - stride`` earlier items when the user has them.
    Returns (W, max_len + 1) indices into the flat item array, -1 for left padding.
    """
    stride = max_len if stride is None else stride
    _, n_windows, j = _window_positions(train_lengths, stride)
    users = np.repeat(np.arange(len(train_lengths)), n_windows)  # (W,)
    last = indptr[users] + train_lengths[users] - 1 - j * stride  # (W,) flat index of last item
    idx = last[:, None] - np.arange(max_len, -1, -1)[None, :]  # (W, L+1)
    return np.where(idx >= indptr[users][:, None], idx, -1)


def window_new_targets(train_lengths: np.ndarray, stride: int) -> np.ndarray:
    """For the windows of :func:`training_windows` with this ``stride``: how many targets, counted from the
    window's end, the window owns. Every transition belongs to the window that ends nearest after it, where it
    has the longest context; the window's earlier targets are owned by earlier windows. (W,)"""
    transitions, n_windows, j = _window_positions(train_lengths, stride)
    return np.minimum(stride, np.repeat(transitions, n_windows) - j * stride)


def repeated_targets(items: np.ndarray, indptr: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Whether each evaluation target occurs earlier in its user's sequence (a repeat consumption), i.e. in the
    sample's input.

    items: (n,) CSR item ids; indptr: (U+1,); samples: (S, 2) rows of (user, target position): (S,) bool; or
    (S, 3) rows of (user, cut, end): (R,) bool over the distinct targets of :func:`target_sets`.
    """
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # (n,) user of each position
    width = int(items.max(initial=0)) + 1
    keys = users.astype(np.int64) * width + items  # (n,) one key per (user, item)
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)  # first position of each key
    if samples.shape[1] == 2:
        flat = indptr[samples[:, 0]] + samples[:, 1]  # (S,) the targets' positions
        return first[inverse[flat]] < flat
    sets_indptr, targets = target_sets(items, indptr, samples)
    sample = np.repeat(np.arange(len(samples)), np.diff(sets_indptr))  # (R,)
    key = np.searchsorted(unique, samples[sample, 0] * width + targets)  # (R,) every target is a (user, item) key
    return first[key] < indptr[samples[sample, 0]] + samples[sample, 1]
