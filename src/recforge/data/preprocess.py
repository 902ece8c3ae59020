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
    """Drop exact repeats of (user, item, timestamp), keeping the first."""
    return df.drop_duplicates(subset=["user", "item", "timestamp"], keep="first")


def k_core(df: pd.DataFrame, user_k: int, item_k: int) -> pd.DataFrame:
    """Iteratively drop users with < user_k and items with < item_k interactions until both hold."""
    while True:
        user_counts = df["user"].map(df["user"].value_counts())
        item_counts = df["item"].map(df["item"].value_counts())
        keep = (user_counts >= user_k) & (item_counts >= item_k)
        if keep.all():
            return df
        df = df[keep]


def time_order(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by user, then timestamp; ties keep file order (stable sort)."""
    return df.sort_values(["user", "timestamp"], kind="stable")


@dataclass
class Sequences:
    """All users' time-ordered item sequences in CSR form; item ids are contiguous from 1 (0 = padding)."""

    items: np.ndarray  # (n_interactions,) int64
    indptr: np.ndarray  # (n_users + 1,) int64
    ratings: np.ndarray  # (n_interactions,) float32, NaN where unknown
    user_ids: np.ndarray  # (n_users,) raw user id of each row
    item_ids: np.ndarray  # (n_items + 1,) raw item id of each internal id; entry 0 is "" (padding)

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def to_sequences(df: pd.DataFrame) -> Sequences:
    """Remap raw ids to contiguous integers (items from 1, in order of first appearance) and build CSR."""
    df = time_order(df)
    item_codes, item_uniques = pd.factorize(df["item"], sort=False)
    user_codes, user_uniques = pd.factorize(df["user"], sort=False)
    # rows are grouped by user (sorted), so user order in the CSR is sorted raw-id order
    counts = np.bincount(user_codes, minlength=len(user_uniques))
    indptr = np.zeros(len(user_uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    item_ids = np.concatenate([np.array([""], dtype=object), np.asarray(item_uniques, dtype=object)])
    return Sequences(
        items=(item_codes + 1).astype(np.int64),
        indptr=indptr,
        ratings=df["rating"].to_numpy(dtype=np.float32, na_value=np.nan),
        user_ids=np.asarray(user_uniques, dtype=object),
        item_ids=item_ids,
    )


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
