"""Pure preprocessing steps: rating threshold, de-duplication, iterative k-core, time order, id remapping."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def filter_min_rating(df: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    """Keep interactions rated at least ``min_rating`` (all when None or when ratings are missing)."""
    if min_rating is None:
        return df
    return df[df["rating"].isna() | (df["rating"] >= min_rating)]


def deduplicate(df: pd.DataFrame) -> pd.DataFrame:
    """Drop exact repeats of (user, item, timestamp), keeping the first (the frame itself when there are none)."""
    repeated = df.duplicated(subset=["user", "item", "timestamp"], keep="first").to_numpy()  # (n,)
    return df[~repeated] if repeated.any() else df


def k_core(df: pd.DataFrame, user_k: int, item_k: int) -> pd.DataFrame:
    """Iteratively drop users with < user_k and items with < item_k interactions until both hold.

    Rows with a missing user or item never count and are dropped. Counting runs on integer codes (one
    ``bincount`` per pass); the frame is filtered once at the end, and returned as is when nothing is dropped.
    """
    users, user_ids = pd.factorize(df["user"])  # (n,) -1 where missing
    items, item_ids = pd.factorize(df["item"])  # (n,)
    keep = (users >= 0) & (items >= 0)  # (n,)
    while True:
        user_counts = np.bincount(users[keep], minlength=len(user_ids))  # (U,)
        item_counts = np.bincount(items[keep], minlength=len(item_ids))  # (I,)
        still = keep & (user_counts[users] >= user_k) & (item_counts[items] >= item_k)  # code -1: keep is False
        if np.array_equal(still, keep):
            return df if keep.all() else df[keep]
        keep = still


def time_order(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by user, then timestamp; ties keep file order (stable sort)."""
    return df.iloc[_time_order(df)[0]]


def _time_order(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Row order by user (sorted raw id, missing last), then timestamp, ties in file order, with the sorted user
    codes (n,) of the rows in that order and the sorted raw user ids."""
    users, user_ids = pd.factorize(df["user"], sort=True)  # (n,) codes in sorted-id order, -1 where missing
    missing = users < 0
    users = np.where(missing, len(user_ids), users)  # missing users sort last, as sort_values puts them
    stamps = df["timestamp"].to_numpy()  # (n,)
    order = _grouped_order(users, stamps, len(user_ids) + int(missing.any()))
    if order is None:
        order = np.lexsort((stamps, users))  # lexsort is stable
    return order, users[order], user_ids


def _grouped_order(users: np.ndarray, stamps: np.ndarray, num_users: int) -> np.ndarray | None:
    """The stable (user, timestamp) order without sorting rows when each user's rows already form one
    contiguous, time-ordered block (files written user by user): the blocks are put in user order.
    None when the rows are not laid out that way."""
    if len(users) == 0:
        return None
    starts = np.flatnonzero(np.concatenate([[True], users[1:] != users[:-1]]))  # (G,) first row of each block
    if len(starts) != num_users:  # some user's rows form more than one block
        return None
    block_users = users[starts]  # (G,) distinct
    new_block = np.zeros(len(users), dtype=bool)
    new_block[starts] = True
    if ((np.diff(stamps) < 0) & ~new_block[1:]).any():  # time goes back inside a block
        return None
    lengths = np.diff(np.append(starts, len(users)))  # (G,)
    by_user = np.argsort(block_users)  # (G,) users are distinct: no ties
    lengths, firsts = lengths[by_user], starts[by_user]
    return np.repeat(firsts - np.cumsum(lengths) + lengths, lengths) + np.arange(len(users))  # (n,)


@dataclass
class Sequences:
    """All users' time-ordered item sequences in CSR form; item ids are contiguous from 1 (0 = padding).

    ``timestamps`` are the interactions' times in seconds, NaN where the source gives only an order (S3-Rec
    sequence files, a table without a time column); None when built means none known (all NaN).
    """

    items: np.ndarray  # (n_interactions,) int64
    indptr: np.ndarray  # (n_users + 1,) int64
    ratings: np.ndarray  # (n_interactions,) float32, NaN where unknown
    user_ids: np.ndarray  # (n_users,) raw user id of each row
    item_ids: np.ndarray  # (n_items + 1,) raw item id of each internal id; entry 0 is "" (padding)
    timestamps: np.ndarray | None = None  # (n_interactions,) float64 seconds, NaN where unknown

    def __post_init__(self) -> None:
        if self.timestamps is None:
            self.timestamps = np.full(len(self.items), np.nan)

    @property
    def has_timestamps(self) -> bool:
        """Whether every interaction has a time (a global time split needs them)."""
        return bool(len(self.items)) and not np.isnan(self.timestamps).any()

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def to_sequences(df: pd.DataFrame, timestamps: bool = True) -> Sequences:
    """Remap raw ids to contiguous integers (items from 1, in order of first appearance) and build CSR.

    ``timestamps``: whether the ``timestamp`` column holds times in seconds (kept as ``Sequences.timestamps``)
    rather than only an order (positions, row numbers: the timestamps are then NaN)."""
    order, user_codes, user_uniques = _time_order(df)  # rows grouped by user in sorted raw-id order
    item_codes, item_uniques = _codes_by_first_appearance(df["item"], order)
    counts = np.bincount(user_codes, minlength=len(user_uniques))
    indptr = np.zeros(len(user_uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    item_ids = np.concatenate([np.array([""], dtype=object), np.asarray(item_uniques, dtype=object)])
    return Sequences(
        items=(item_codes + 1).astype(np.int64),
        indptr=indptr,
        ratings=df["rating"].to_numpy(dtype=np.float32, na_value=np.nan)[order],
        user_ids=np.asarray(user_uniques, dtype=object),
        item_ids=item_ids,
        timestamps=df["timestamp"].to_numpy(dtype=np.float64)[order] if timestamps else None,
    )


def _codes_by_first_appearance(values: pd.Series, order: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values.take(order))``, i.e. codes numbered by first appearance in ``order``, without
    hashing the raw values twice: the raw values are coded once, then the (cheaper) integer codes reordered."""
    codes, uniques = pd.factorize(values)  # (n,) -1 where missing
    if (codes < 0).any():  # missing values keep code -1: the plain way
        return pd.factorize(values.take(order))
    reordered, first = pd.factorize(codes[order])  # (n,), (N,) raw code of each new code
    return reordered, uniques.take(first)


def statistics(seqs: Sequences) -> dict[str, float]:
    """Users, items, interactions, density and mean/max sequence length."""
    n = int(seqs.items.shape[0])
    lengths = seqs.lengths
    return {
        "users": seqs.num_users,
        "items": seqs.num_items,
        "interactions": n,
        "density": n / max(1, seqs.num_users * seqs.num_items),
        "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
        "max_length": int(lengths.max()) if len(lengths) else 0,
    }
