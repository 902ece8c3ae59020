"""Tests for recforge.data.preprocess: rating filter, de-duplication, iterative k-core, id remapping, CSR."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge.data.preprocess import (
    Sequences,
    _grouped_order,
    deduplicate,
    filter_min_rating,
    k_core,
    statistics,
    time_order,
    to_sequences,
)
from recforge.data.synthetic import SyntheticSequences


def frame(rows: list[tuple]) -> pd.DataFrame:
    """(user, item, timestamp, rating) tuples -> the reader contract's frame."""
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    df["timestamp"] = df["timestamp"].astype(np.int64)
    df["rating"] = df["rating"].astype(np.float64)
    return df


def pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["user"], df["item"]))


# ------------------------------------------------------------------------- filter_min_rating, deduplicate


def test_filter_min_rating_keeps_threshold_and_missing():
    df = frame([("u", "a", 1, 1.0), ("u", "b", 2, 3.0), ("u", "c", 3, 4.0), ("u", "d", 4, np.nan), ("u", "e", 5, 2.99)])
    out = filter_min_rating(df, 3.0)
    # 3.0 (equal) and 4.0 pass, NaN (unknown) passes, 1.0 and 2.99 are dropped
    assert out["item"].tolist() == ["b", "c", "d"]
    assert filter_min_rating(df, None) is df


def test_deduplicate_exact_repeats_only():
    df = frame([
        ("u", "a", 1, 5.0),
        ("u", "a", 1, 2.0),  # same (user, item, timestamp): dropped, first row (rating 5) kept
        ("u", "a", 2, 4.0),  # same item, other time: kept (a re-consumption)
        ("v", "a", 1, 3.0),  # other user: kept
    ])
    out = deduplicate(df)
    assert list(zip(out["user"], out["item"], out["timestamp"], out["rating"])) == [
        ("u", "a", 1, 5.0), ("u", "a", 2, 4.0), ("v", "a", 1, 3.0)
    ]


# ------------------------------------------------------------------------- k_core


def test_k_core_cascade_can_empty_the_frame():
    # k = 2 for users and items.
    # Pass 1 counts: users u1=3, u2=2, u3=1; items a=2, b=2, c=1, d=1.
    #   dropped: u3 (1 < 2), item c (1), item d (1). u3's only row is (u3, b).
    # Pass 2 (after dropping rows (u1,c), (u2,d), (u3,b)): users u1=2 (a, b), u2=1 (a); items a=2, b=1.
    #   dropped: u2 and item b -> only (u1, a) left.
    # Pass 3: u1=1, a=1 -> both dropped -> empty.
    df = frame([
        ("u1", "a", 1, 1), ("u1", "b", 2, 1), ("u1", "c", 3, 1),
        ("u2", "a", 1, 1), ("u2", "d", 2, 1),
        ("u3", "b", 1, 1),
    ])
    assert len(k_core(df, 2, 2)) == 0


def test_k_core_removing_user_pushes_item_below_k():
    # k = 2 for users and items.
    df = frame([
        ("u1", "x", 1, 1), ("u1", "y", 2, 1),
        ("u2", "y", 1, 1), ("u2", "z", 2, 1),
        ("u3", "x", 1, 1),
        ("u4", "y", 1, 1), ("u4", "z", 2, 1),
    ])
    # Hand trace:
    # pass 1: users u1=2, u2=2, u3=1, u4=2; items x=2, y=3, z=2 -> only u3 fails: drop (u3, x)
    # pass 2: item x now has 1 row -> drop (u1, x); y=3, z=2 fine
    # pass 3: u1 now has 1 row -> drop (u1, y); y drops to 2 (u2, u4), z=2
    # pass 4: u2=2, u4=2, y=2, z=2 -> stable
    out = k_core(df, 2, 2)
    assert pairs(out) == {("u2", "y"), ("u2", "z"), ("u4", "y"), ("u4", "z")}
    counts_u = out["user"].value_counts()
    counts_i = out["item"].value_counts()
    assert (counts_u >= 2).all() and (counts_i >= 2).all()
    # a single (non-iterated) filter would have kept (u1, x) and (u1, y)
    assert ("u1", "y") not in pairs(out)


def test_k_core_separate_thresholds_and_noop():
    df = frame([("u1", "a", 1, 1), ("u1", "b", 2, 1), ("u2", "a", 1, 1)])
    # user_k=1, item_k=1: nothing to drop, same frame back
    assert k_core(df, 1, 1) is df
    # user_k=2, item_k=1: u2 (1 row) dropped; then a=1, b=1 still >= 1 -> u1's two rows remain
    assert pairs(k_core(df, 2, 1)) == {("u1", "a"), ("u1", "b")}
    # user_k=1, item_k=2: b (1 row) dropped; u1 keeps a, u2 keeps a
    assert pairs(k_core(df, 1, 2)) == {("u1", "a"), ("u2", "a")}


# ------------------------------------------------------------------------- to_sequences


def test_to_sequences_ids_csr_ratings():
    # rows out of time order; users "b" and "a" (sorted by user -> "a" first)
    df = frame([
        ("b", "x", 30, 1.0),
        ("a", "y", 20, 2.0),
        ("b", "z", 10, 3.0),
        ("a", "x", 10, np.nan),
        ("a", "w", 40, 5.0),
    ])
    seqs = to_sequences(df)
    # time order: user a: x(10), y(20), w(40); user b: z(10), x(30)
    # first appearance: x=1, y=2, w=3, z=4
    assert seqs.user_ids.tolist() == ["a", "b"]
    assert seqs.item_ids.tolist() == ["", "x", "y", "w", "z"]
    assert seqs.items.dtype == np.int64 and seqs.indptr.dtype == np.int64
    assert seqs.items.tolist() == [1, 2, 3, 4, 1]
    assert seqs.indptr.tolist() == [0, 3, 5]
    assert seqs.ratings.dtype == np.float32
    np.testing.assert_array_equal(seqs.ratings, np.array([np.nan, 2.0, 5.0, 3.0, 1.0], dtype=np.float32))
    assert seqs.num_users == 2 and seqs.num_items == 4
    assert seqs.lengths.tolist() == [3, 2]
    assert seqs.timestamps.dtype == np.float64 and seqs.timestamps.tolist() == [10, 20, 40, 10, 30]  # time order
    assert seqs.has_timestamps
    # a source whose timestamp column is only an order (S3-Rec positions): the same order, NaN times
    order_only = to_sequences(df, timestamps=False)
    assert order_only.items.tolist() == seqs.items.tolist()
    assert np.isnan(order_only.timestamps).all() and not order_only.has_timestamps


def test_to_sequences_equal_timestamps_keep_file_order():
    # all timestamps equal within each user: the file order must be kept (stable sort)
    df = frame([
        ("u2", "p", 5, 1.0),
        ("u1", "c", 7, 1.0),
        ("u2", "q", 5, 1.0),
        ("u1", "a", 7, 1.0),
        ("u2", "r", 5, 1.0),
        ("u1", "b", 7, 1.0),
        ("u1", "d", 1, 1.0),  # earlier than the others: first for u1
    ])
    seqs = to_sequences(df)
    # u1: d(1), then c, a, b (ts 7, file order); u2: p, q, r
    assert seqs.user_ids.tolist() == ["u1", "u2"]
    assert seqs.item_ids[seqs.items].tolist() == ["d", "c", "a", "b", "p", "q", "r"]
    assert seqs.items.tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_to_sequences_stable_on_larger_random_frame():
    rng = np.random.default_rng(0)
    n = 2000
    df = frame(list(zip(
        rng.integers(0, 30, n).astype(str), rng.integers(0, 200, n).astype(str), rng.integers(0, 5, n), np.ones(n)
    )))
    df["row"] = np.arange(n)
    seqs = to_sequences(df)
    # reference: python sort by (user, timestamp, file row)
    ref = sorted(zip(df["user"], df["timestamp"], df["row"], df["item"]))
    assert seqs.item_ids[seqs.items].tolist() == [r[3] for r in ref]
    # ids are contiguous 1..N in order of first appearance
    first_seen = list(dict.fromkeys(r[3] for r in ref))
    assert seqs.item_ids[1:].tolist() == first_seen
    assert sorted(set(seqs.items.tolist())) == list(range(1, len(first_seen) + 1))


def test_time_order_sorts_user_then_time():
    df = frame([("b", "x", 2, 1), ("a", "y", 9, 1), ("b", "z", 1, 1), ("a", "w", 3, 1)])
    out = time_order(df)
    assert list(zip(out["user"], out["timestamp"])) == [("a", 3), ("a", 9), ("b", 1), ("b", 2)]


# ------------------------------------------------------------------------- statistics


def test_statistics_values():
    seqs = Sequences(
        items=np.array([1, 2, 3, 1, 4, 2], dtype=np.int64),
        indptr=np.array([0, 3, 4, 6], dtype=np.int64),
        ratings=np.full(6, np.nan, dtype=np.float32),
        user_ids=np.array(["a", "b", "c"], dtype=object),
        item_ids=np.array(["", "i1", "i2", "i3", "i4"], dtype=object),
    )
    stats = statistics(seqs)
    # 3 users, 4 items, 6 interactions; density 6 / (3 * 4) = 0.5; lengths [3, 1, 2]: mean 2, max 3
    assert stats == {"users": 3, "items": 4, "interactions": 6, "density": 0.5, "mean_length": 2.0, "max_length": 3}


def test_statistics_empty():
    seqs = Sequences(items=np.zeros(0, np.int64), indptr=np.zeros(1, np.int64), ratings=np.zeros(0, np.float32),
                     user_ids=np.zeros(0, object), item_ids=np.array([""], dtype=object))
    # no users: density uses max(1, 0) -> 0 / 1 = 0; mean/max fall back to 0
    assert statistics(seqs) == {"users": 0, "items": 0, "interactions": 0, "density": 0.0,
                                "mean_length": 0.0, "max_length": 0}


# ------------------------------------------------------------------------- fast paths against the reference


def _reference_deduplicate(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop_duplicates(subset=["user", "item", "timestamp"], keep="first")


def _reference_k_core(df: pd.DataFrame, user_k: int, item_k: int) -> pd.DataFrame:
    while True:
        keep = (df["user"].map(df["user"].value_counts()) >= user_k) & (df["item"].map(df["item"].value_counts()) >= item_k)
        if keep.all():
            return df
        df = df[keep]


def _reference_to_sequences(df: pd.DataFrame) -> Sequences:
    df = df.sort_values(["user", "timestamp"], kind="stable")
    item_codes, item_uniques = pd.factorize(df["item"], sort=False)
    user_codes, user_uniques = pd.factorize(df["user"], sort=False)
    indptr = np.zeros(len(user_uniques) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_codes, minlength=len(user_uniques)), out=indptr[1:])
    return Sequences(items=(item_codes + 1).astype(np.int64), indptr=indptr,
                     ratings=df["rating"].to_numpy(dtype=np.float32, na_value=np.nan),
                     user_ids=np.asarray(user_uniques, dtype=object),
                     item_ids=np.concatenate([np.array([""], dtype=object), np.asarray(item_uniques, dtype=object)]))


# ids whose sort order differs from their numeric order, case and non-ASCII characters
NAMES = np.array(["1", "10", "2", "100", "9", "a", "A", "ab", "b", "é", "z", "Z", "user 7", "ü", "0", "01"], dtype=object)


def random_frame(seed: int, n: int, layout: str) -> pd.DataFrame:
    """n interactions over tricky ids; layout "shuffled" (rows in random order) or "grouped" (each user's rows
    one contiguous, time-ordered block, users in random order: the layout files written user by user have)."""
    rng = np.random.default_rng(seed)
    df = frame(list(zip(NAMES[rng.integers(0, len(NAMES), n)], NAMES[rng.integers(0, 8, n)],
                        rng.integers(0, 6, n), np.where(rng.random(n) < 0.2, np.nan, rng.integers(1, 6, n)))))
    if layout == "grouped":
        rank = {u: i for i, u in enumerate(rng.permutation(df["user"].unique()))}
        df = df.iloc[np.lexsort((df["timestamp"], df["user"].map(rank)))].reset_index(drop=True)
    return df


def assert_same_sequences(a: Sequences, b: Sequences) -> None:
    for name in ("items", "indptr", "ratings", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.items.dtype == b.items.dtype == np.int64 and a.ratings.dtype == np.float32


@pytest.mark.parametrize("layout", ["shuffled", "grouped"])
@pytest.mark.parametrize("seed", range(6))
def test_pipeline_equals_reference(seed, layout):
    df = random_frame(seed, 400, layout)
    unique = deduplicate(df)
    pd.testing.assert_frame_equal(unique, _reference_deduplicate(df))
    for user_k, item_k in [(1, 1), (3, 2), (5, 30), (0, 0)]:
        pd.testing.assert_frame_equal(k_core(unique, user_k, item_k), _reference_k_core(unique, user_k, item_k))
    pd.testing.assert_frame_equal(time_order(unique), unique.sort_values(["user", "timestamp"], kind="stable"))
    assert_same_sequences(to_sequences(unique), _reference_to_sequences(unique))
    assert_same_sequences(to_sequences(df), _reference_to_sequences(df))  # repeats kept


def test_pipeline_equals_reference_on_synthetic_data():
    df = SyntheticSequences(num_users=300, num_items=50, min_length=2, max_length=30).read()
    assert_same_sequences(to_sequences(k_core(deduplicate(df), 5, 5)),
                          _reference_to_sequences(_reference_k_core(_reference_deduplicate(df), 5, 5)))


def test_deduplicate_without_repeats_returns_the_frame_and_counts_missing_values_as_equal():
    df = frame([("u", "a", 1, 1.0), ("u", "b", 1, 1.0)])
    assert deduplicate(df) is df
    missing = pd.DataFrame({"user": pd.Series(["u", None, None], dtype="str"), "item": ["a", "a", "a"],
                            "timestamp": np.array([1, 1, 1]), "rating": np.nan})
    assert len(deduplicate(missing)) == 2


def test_k_core_drops_rows_with_a_missing_user_or_item_like_the_reference():
    df = pd.DataFrame({"user": pd.Series(["u", None, "u", "v"], dtype="str"),
                       "item": pd.Series(["a", "a", None, "a"], dtype="str"),
                       "timestamp": np.arange(4), "rating": np.nan})
    out = k_core(df, 1, 1)
    pd.testing.assert_frame_equal(out, _reference_k_core(df, 1, 1))
    assert out.index.tolist() == [0, 3]


@pytest.mark.parametrize(("users", "stamps", "expected"), [
    ([5, 5, 1, 1, 1, 3], [1, 2, 0, 0, 7, 4], [2, 3, 4, 5, 0, 1]),  # blocks put in user order
    ([5, 1, 5], [1, 2, 3], None),  # user 5 in two blocks
    ([1, 1, 2], [3, 2, 1], None),  # time goes back inside user 1's block
    ([0], [9], [0]),
])
def test_grouped_order(users, stamps, expected):
    users, stamps = np.array(users), np.array(stamps)
    order = _grouped_order(users, stamps, len(np.unique(users)))
    assert (order is None and expected is None) or order.tolist() == expected
    if order is not None:
        np.testing.assert_array_equal(order, np.lexsort((stamps, users)))


def test_empty_frame_gives_empty_sequences():
    df = frame([("u", "a", 1, 1.0)]).iloc[:0]
    seqs = to_sequences(k_core(deduplicate(df), 2, 2))
    assert seqs.indptr.tolist() == [0] and seqs.items.tolist() == [] and seqs.item_ids.tolist() == [""]
    assert_same_sequences(seqs, _reference_to_sequences(df))
