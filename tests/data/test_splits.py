"""Tests for recforge.data.splits: leave-one-out, temporal ratio, global temporal, training windows and leakage."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recforge.data.preprocess import Sequences
from recforge.data.splits import (
    GlobalTemporal,
    LeaveOneOut,
    NoTimestamps,
    TemporalRatio,
    _ranges,
    repeated_targets,
    target_sets,
    training_windows,
    window_new_targets,
)
from recforge.errors import RecforgeError


def indptr_of(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def loop_training_windows(indptr: np.ndarray, train_lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Reference: per user, windows of max_len + 1 flat indices ending at the last training item and stepping
    back by max_len, left-padded with -1."""
    rows = []
    for u, n in enumerate(train_lengths.tolist()):
        start = int(indptr[u])
        last = start + n - 1
        while last - start >= 1:  # at least one transition left in this window
            rows.append([i if i >= start else -1 for i in range(last - max_len, last + 1)])
            last -= max_len
    return np.array(rows, dtype=np.int64).reshape(-1, max_len + 1)


def window_transitions(windows: np.ndarray) -> list[tuple[int, int]]:
    """(input flat index, target flat index) for every consecutive pair of real items in every window."""
    out = []
    for row in windows.tolist():
        for a, b in zip(row[:-1], row[1:]):
            if a >= 0:
                out.append((a, b))
    return out


# ------------------------------------------------------------------------- LeaveOneOut


def test_leave_one_out_hand_case():
    split = LeaveOneOut()(np.array([5, 2, 3]))
    # user 0 (5 items): train 0..2, val pos 3, test pos 4
    # user 1 (2 items): cannot have train + val + test -> dropped, train length 0
    # user 2 (3 items): train pos 0, val pos 1, test pos 2
    assert split.train_lengths.tolist() == [3, 0, 1]
    assert split.val.tolist() == [[0, 3], [2, 1]]
    assert split.test.tolist() == [[0, 4], [2, 2]]
    assert split.train_lengths.dtype == np.int64 and split.val.dtype == np.int64 and split.test.dtype == np.int64


def test_leave_one_out_no_eligible_user():
    with pytest.raises(RecforgeError, match="leave_one_out"):
        LeaveOneOut()(np.array([1, 2, 2]))


# ------------------------------------------------------------------------- TemporalRatio


def test_temporal_ratio_length_10():
    split = TemporalRatio(0.8, 0.1)(np.array([10]))
    # floor(10 * 0.8) = 8 train, floor(10 * 0.1) = 1 val, 10 - 8 - 1 = 1 test
    assert split.train_lengths.tolist() == [8]
    assert split.val.tolist() == [[0, 8]]
    assert split.test.tolist() == [[0, 9]]


def test_temporal_ratio_per_user_positions():
    split = TemporalRatio(0.6, 0.2)(np.array([10, 2, 5]))
    # user 0: train floor(6.0) = 6, val floor(2.0) = 2 (pos 6, 7), test pos 8, 9
    # user 1: train max(1, floor(1.2)) = 1, val max(1, floor(0.4)) = 1, 2 - 1 - 1 = 0 test -> dropped
    # user 2: train floor(3.0) = 3, val max(1, floor(1.0)) = 1 (pos 3), test pos 4
    assert split.train_lengths.tolist() == [6, 0, 3]
    assert split.val.tolist() == [[0, 6], [0, 7], [2, 3]]
    assert split.test.tolist() == [[0, 8], [0, 9], [2, 4]]


@pytest.mark.parametrize("train,val", [(0.0, 0.1), (1.0, 0.1), (0.8, 0.0), (0.8, 0.2), (0.5, 0.6)])
def test_temporal_ratio_rejects_bad_shares(train, val):
    with pytest.raises(RecforgeError, match="train"):
        TemporalRatio(train, val)


def test_ranges_hand_case():
    # user 0: [2, 4) -> 2, 3; user 1: empty; user 2: [0, 1) -> 0
    assert _ranges(np.array([2, 5, 0]), np.array([4, 5, 1])).tolist() == [[0, 2], [0, 3], [2, 0]]


# ------------------------------------------------------------------------- training_windows


def test_training_windows_length_7_max_len_3():
    # one user, 7 training items at flat 0..6: 6 transitions, 2 windows of 4 indices sharing one item
    w = training_windows(indptr_of([7]), np.array([7]), 3)
    assert w.tolist() == [[3, 4, 5, 6], [0, 1, 2, 3]]
    # transitions 0->1, 1->2, ..., 5->6 each exactly once
    assert Counter(window_transitions(w)) == Counter((i, i + 1) for i in range(6))


def test_training_windows_left_padding():
    # users with train lengths 6, 2, 1, 0 (sequence lengths 6, 3, 1, 2; flat starts 0, 6, 9, 10), max_len 3
    w = training_windows(indptr_of([6, 3, 1, 2]), np.array([6, 2, 1, 0]), 3)
    assert w.tolist() == [
        [2, 3, 4, 5],  # user 0: last window ends at the last training item (flat 5)
        [-1, 0, 1, 2],  # user 0: shares flat 2; one left pad
        [-1, -1, 6, 7],  # user 1: 1 transition (6 -> 7), two pads; flat 8 (not training) never used
        # user 2 (1 item, no transition) and user 3 (no training items) have no window
    ]


def test_training_windows_parity_with_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 25, 60)
    train_lengths = np.maximum(lengths - rng.integers(0, 3, 60), 0)
    for max_len in (1, 2, 5, 50):
        np.testing.assert_array_equal(
            training_windows(indptr_of(lengths), train_lengths, max_len),
            loop_training_windows(indptr_of(lengths), train_lengths, max_len),
        )


def owned_transitions(windows: np.ndarray, new_targets: np.ndarray) -> list[tuple[int, int, int]]:
    """(input, target, context) for the last ``new`` transitions of every window; context = real items up to and
    including the input."""
    out = []
    for row, new in zip(windows.tolist(), new_targets.tolist()):
        pairs = list(zip(row[:-1], row[1:]))
        for position in range(len(pairs) - new, len(pairs)):
            a, b = pairs[position]
            assert a >= 0  # an owned target always has a real input
            out.append((a, b, sum(1 for i in row[:position + 1] if i >= 0)))
    return out


def test_training_windows_stride_2_length_7_max_len_3():
    # one user, 7 training items at flat 0..6: windows of 4 indices end every 2 items (flat 6, 4, 2)
    w = training_windows(indptr_of([7]), np.array([7]), 3, stride=2)
    assert w.tolist() == [[3, 4, 5, 6], [1, 2, 3, 4], [-1, 0, 1, 2]]
    new = window_new_targets(np.array([7]), 2)
    assert new.tolist() == [2, 2, 2]  # each window owns its last 2 transitions: 4->5 5->6 | 2->3 3->4 | 0->1 1->2
    assert owned_transitions(w, new) == [(4, 5, 2), (5, 6, 3), (2, 3, 2), (3, 4, 3), (0, 1, 1), (1, 2, 2)]
    # the earliest window owns what is left: 5 transitions, stride 2 -> 2, 2, 1
    assert window_new_targets(np.array([6]), 2).tolist() == [2, 2, 1]


def test_stride_equal_to_max_len_is_the_default_and_owns_every_target():
    lengths = np.array([7, 3, 1, 0, 12])
    train_lengths = np.maximum(lengths - 1, 0)
    w = training_windows(indptr_of(lengths), train_lengths, 3)
    np.testing.assert_array_equal(training_windows(indptr_of(lengths), train_lengths, 3, stride=3), w)
    new = window_new_targets(train_lengths, 3)
    assert new.tolist() == [sum(1 for a in row[:-1] if a >= 0) for row in w.tolist()]  # all real transitions


@pytest.mark.parametrize("stride", [1, 2, 7, 10])
def test_strided_windows_own_every_transition_once_with_the_longest_context(stride):
    rng = np.random.default_rng(stride)
    lengths = rng.integers(0, 40, 80)
    train_lengths = np.maximum(lengths - rng.integers(0, 3, 80), 0)
    indptr, max_len = indptr_of(lengths), 10
    w = training_windows(indptr, train_lengths, max_len, stride=stride)
    new = window_new_targets(train_lengths, stride)
    assert new.shape == (w.shape[0],) and (new >= 1).all() and (new <= stride).all()
    owned = owned_transitions(w, new)
    expected = [(s + i, s + i + 1) for s, n in zip(indptr[:-1].tolist(), train_lengths.tolist()) for i in range(n - 1)]
    assert Counter((a, b) for a, b, _ in owned) == Counter(expected)  # every transition exactly once
    user_of = np.searchsorted(indptr, np.arange(indptr[-1]), side="right") - 1
    for a, _, context in owned:  # as many items as the window allows: all the user's so far, at least L - stride + 1
        available = a - indptr[user_of[a]] + 1
        assert context >= min(available, max_len - stride + 1)


@pytest.mark.parametrize("split_fn", [LeaveOneOut(), TemporalRatio(0.7, 0.15)], ids=["loo", "ratio"])
def test_windows_cover_training_transitions_without_leakage(split_fn):
    rng = np.random.default_rng(42)
    lengths = rng.integers(1, 40, 300)
    indptr = indptr_of(lengths)
    split = split_fn(lengths)
    for max_len in (3, 8, 50):
        w = training_windows(indptr, split.train_lengths, max_len)
        assert w.shape[1] == max_len + 1
        # padding only on the left: once a row has a real index, the rest are real and consecutive
        for row in w.tolist():
            real = [i for i in row if i >= 0]
            assert row[len(row) - len(real):] == real and real == list(range(real[0], real[0] + len(real)))
        got = Counter(window_transitions(w))
        # expected: every consecutive pair inside each user's training part, exactly once
        want = Counter(
            (int(indptr[u]) + p, int(indptr[u]) + p + 1)
            for u in range(len(lengths)) for p in range(int(split.train_lengths[u]) - 1)
        )
        assert got == want
        # leakage: no window index (input or target) is a validation or test target, or beyond train part
        held_out = {int(indptr[u]) + int(p) for u, p in np.concatenate([split.val, split.test])}
        used = set(w[w >= 0].tolist())
        assert not used & held_out
        user_of = np.repeat(np.arange(len(lengths)), lengths)
        pos_of = np.arange(indptr[-1]) - indptr[user_of]
        assert all(pos_of[i] < split.train_lengths[user_of[i]] for i in used)
        # validation/test targets come strictly after every training position of the same user
        for u, p in np.concatenate([split.val, split.test]).tolist():
            assert p >= split.train_lengths[u] and p < lengths[u]


def test_repeated_targets_hand_case():
    # user 0: 5 3 5 7 (target at 2 repeats 5, target at 3 does not); user 1: 4 4 (target at 1 repeats 4);
    # user 2: 7 8 (item 7 of user 0 is not user 2's own history)
    items = np.array([5, 3, 5, 7, 4, 4, 7, 8])
    indptr = np.array([0, 4, 6, 8])
    samples = np.array([[0, 2], [0, 3], [1, 1], [2, 1], [0, 1], [1, 0]])
    assert repeated_targets(items, indptr, samples).tolist() == [True, False, True, False, False, False]


def test_repeated_targets_parity_with_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=40)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 15, size=int(indptr[-1]))
    samples = np.array([[u, p] for u in range(40) for p in range(lengths[u])])
    expected = [int(items[indptr[u] + p]) in items[indptr[u]: indptr[u] + p].tolist() for u, p in samples]
    assert repeated_targets(items, indptr, samples).tolist() == expected


# ------------------------------------------------------------------------- GlobalTemporal

# 16 interactions at times 1..16 (one each); val = test = 0.25: the validation cut is the 0.5 quantile of the times,
# 1 + 15 * 0.5 = 8.5, the test cut the 0.75 quantile, 1 + 15 * 0.75 = 12.25. Training: t <= 8; validation
# period: 9..12; test period: 13..16. Item ids by first appearance in (user, time) order: a=1 b=2 c=3 d=4 e=5 f=6
# g=7 h=8.
#   u0: a@1 b@3 | c@9 | a@13 d@14 d@15  -> train [a b]; val targets {c}; test input [a b c], targets {a d}
#                                          (d once; a repeats an input item)
#   u1: d@2 e@4 f@5 g@6                 -> train all 4; no target after either cut: not evaluated
#   u2: h@10 b@11 | e@16                -> no input before the validation cut: not validated; test input [h b],
#                                          targets {e}
#   u3: c@7 e@8 | f@12                  -> train [c e]; val targets {f}; nothing after the test cut: not tested
GLOBAL_ITEMS = np.array([1, 2, 3, 1, 4, 4, 4, 5, 6, 7, 8, 2, 5, 3, 5, 6])
GLOBAL_TIMES = np.array([1, 3, 9, 13, 14, 15, 2, 4, 5, 6, 10, 11, 16, 7, 8, 12], dtype=np.float64)
GLOBAL_INDPTR = np.array([0, 6, 10, 13, 16])


def global_sequences(times: np.ndarray = GLOBAL_TIMES) -> Sequences:
    return Sequences(items=GLOBAL_ITEMS, indptr=GLOBAL_INDPTR, ratings=np.full(16, np.nan, dtype=np.float32),
                     user_ids=np.array(["u0", "u1", "u2", "u3"], dtype=object),
                     item_ids=np.array(["", *"abcdefgh"], dtype=object), timestamps=times)


def test_global_temporal_hand_case():
    split = GlobalTemporal(val=0.25, test=0.25)(global_sequences())
    assert split.train_lengths.tolist() == [2, 4, 0, 2]
    assert split.val.tolist() == [[0, 2, 3], [3, 2, 3]]  # (user, cut, end): targets items[cut:end]
    assert split.test.tolist() == [[0, 3, 6], [2, 2, 3]]
    assert split.stats == {"val_cut_time": 8.5, "test_cut_time": 12.25,
                           "val_users_without_target": 1, "val_users_without_input": 1,  # u1; u2
                           "test_users_without_target": 2, "test_users_without_input": 0}  # u1 and u3
    # training interactions all lie before the validation cut, every target at or after its cut
    train = np.concatenate([GLOBAL_TIMES[GLOBAL_INDPTR[u]: GLOBAL_INDPTR[u] + n]
                            for u, n in enumerate(split.train_lengths)])
    assert train.max() < 8.5 and len(train) == 8
    for rows, cut in ((split.val, 8.5), (split.test, 12.25)):
        for u, c, e in rows.tolist():
            start = GLOBAL_INDPTR[u]
            assert (GLOBAL_TIMES[start: start + c] < cut).all() and (GLOBAL_TIMES[start + c: start + e] >= cut).all()


def test_global_temporal_target_sets_and_repeats():
    split = GlobalTemporal(val=0.25, test=0.25)(global_sequences())
    indptr, items = target_sets(GLOBAL_ITEMS, GLOBAL_INDPTR, split.test)
    assert indptr.tolist() == [0, 2, 3] and items.tolist() == [1, 4, 5]  # u0 {a, d} (d once), u2 {e}
    assert repeated_targets(GLOBAL_ITEMS, GLOBAL_INDPTR, split.test).tolist() == [True, False, False]  # a
    assert repeated_targets(GLOBAL_ITEMS, GLOBAL_INDPTR, split.val).tolist() == [False, False]


def test_global_temporal_default_quantiles_on_ten_times():
    # times 1..10 in one user: cuts at 1 + 9 * 0.8 = 8.2 and 1 + 9 * 0.9 = 9.1: train 1..8, val {9}, test {10}
    seqs = Sequences(items=np.arange(1, 11), indptr=np.array([0, 10]), ratings=np.full(10, np.nan, np.float32),
                     user_ids=np.array(["u"], dtype=object), item_ids=np.array(["", *"abcdefghij"], dtype=object),
                     timestamps=np.arange(1, 11, dtype=np.float64))
    split = GlobalTemporal()(seqs)
    assert split.train_lengths.tolist() == [8]
    assert split.val.tolist() == [[0, 8, 9]] and split.test.tolist() == [[0, 9, 10]]
    assert split.stats["val_cut_time"] == pytest.approx(8.2) and split.stats["test_cut_time"] == pytest.approx(9.1)


def test_global_temporal_needs_timestamps():
    with pytest.raises(NoTimestamps, match=r"^dataset\.split=global_temporal needs timestamps$"):
        GlobalTemporal()(global_sequences(np.full(16, np.nan)))


def test_global_temporal_cut_that_leaves_no_training_interaction():
    # every interaction at the same time: both cuts fall on it, nothing lies before the validation cut
    with pytest.raises(RecforgeError) as err:
        GlobalTemporal()(global_sequences(np.full(16, 5.0)))
    assert str(err.value) == ("dataset.split.val=0.1 + dataset.split.test=0.1 put the validation cut at time 5, not "
                              "after the first interaction (time 5): no training interaction is left; lower them.")


@pytest.mark.parametrize(("val", "test", "message"), [
    (0.0, 0.1, "dataset.split.val=0.0 must be a number in (0, 1)."),
    (0.1, 1.5, "dataset.split.test=1.5 must be a number in (0, 1)."),
    (0.6, 0.4, "dataset.split.val=0.6 + dataset.split.test=0.4 must be < 1 (the interactions before the validation "
               "cut are the training data)."),
])
def test_global_temporal_rejects_bad_quantiles(val, test, message):
    with pytest.raises(RecforgeError) as err:
        GlobalTemporal(val=val, test=test)
    assert str(err.value) == message
