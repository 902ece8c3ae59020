"""Pure split functions over CSR sequences.

A split yields, per user, how many leading items are training items, and a list of evaluation samples
(user row, position of the target in the user's sequence) for validation and for test. The input of an
evaluation sample is everything before the target position, so validation and test targets never appear in
training inputs or targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recforge.errors import RecforgeError
from recforge.rules import ABSENT, UNIT_OPEN, Arguments, rule_table


@dataclass
class Split:
    """train_lengths: (U,) items used for training per user; val/test: (S, 2) rows of (user, target position)."""

    train_lengths: np.ndarray
    val: np.ndarray
    test: np.ndarray


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


def split_leaves_test(args: Arguments) -> str | None:
    """A ratio split keeps a share of each sequence for test targets."""
    train, val = args["train"], args["val"]
    if train is ABSENT or val is ABSENT or train + val < 1:
        return None
    return (f"{args.key('train')}={train} + {args.key('val')}={val} must be < 1 (the rest of each sequence is the "
            "test part)")


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
    """Whether each evaluation sample's target occurs earlier in its user's sequence (a repeat consumption).

    items: (n,) CSR item ids; indptr: (U+1,); samples: (S, 2) rows of (user, target position). (S,) bool.
    """
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # (n,) user of each position
    keys = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items  # (n,) one key per (user, item)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)  # first position of each key
    flat = indptr[samples[:, 0]] + samples[:, 1]  # (S,) the targets' positions
    return first[inverse[flat]] < flat
